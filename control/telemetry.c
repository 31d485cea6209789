/*
 * telemetry.c - /smtpedge/stats, /smtpedge/config, /smtpedge/version.
 *
 * /smtpedge/stats gives the totals of every counter at the top level and,
 * under "lcores", each worker's non-zero counters: small enough for the
 * telemetry socket's output limit however many workers there are.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <rte_lcore.h>
#include <rte_telemetry.h>

#include "control/config.h"
#include "control/telemetry.h"
#include "dataplane/port.h"
#include "dataplane/stats.h"
#include "smtpedge_version.h"

static const struct edge_config *the_cfg;
static const struct port_state *the_port;

static void
put_block(struct rte_tel_data *d, const struct dp_stats *s, bool skip_zero)
{
	char name[64];
	unsigned i;

	for (i = 0; i < DP__COUNT; i++)
		if (!skip_zero || s->c[i])
			rte_tel_data_add_dict_u64(d, dp_counter_name(i), s->c[i]);
	for (i = 1; i < PKT_DROP__COUNT; i++)
		if (!skip_zero || s->drop[i]) {
			snprintf(name, sizeof(name), "drop_%s", pkt_drop_name(i));
			rte_tel_data_add_dict_u64(d, name, s->drop[i]);
		}
}

static int
cmd_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct dp_stats total;
	struct rte_tel_data *lcores = rte_tel_data_alloc();
	unsigned l;

	(void)cmd;
	(void)params;
	if (!lcores)
		return -1;
	rte_tel_data_start_dict(d);
	dp_stats_total(&total);
	put_block(d, &total, false);
	rte_tel_data_start_dict(lcores);
	RTE_LCORE_FOREACH_WORKER(l) {
		struct rte_tel_data *one = rte_tel_data_alloc();
		char key[16];

		if (!one)
			break;
		rte_tel_data_start_dict(one);
		put_block(one, &dp_stats[l], true);
		snprintf(key, sizeof(key), "%u", l);
		rte_tel_data_add_dict_container(lcores, key, one, 0);
	}
	rte_tel_data_add_dict_container(d, "lcores", lcores, 0);
	return 0;
}

static int
cmd_config(const char *cmd, const char *params, struct rte_tel_data *d)
{
	const struct edge_config *c = the_cfg;
	char buf[INET6_ADDRSTRLEN], mac[24];
	const uint8_t *m = the_port->mac;
	struct rte_tel_data *ports = rte_tel_data_alloc();
	uint32_t i;

	(void)cmd;
	(void)params;
	if (!ports)
		return -1;
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "file", c->path);
	rte_tel_data_add_dict_string(d, "hostname", c->hostname);
	if (c->has_addr6)
		rte_tel_data_add_dict_string(d, "address6",
			inet_ntop(AF_INET6, c->addr6, buf, sizeof(buf)));
	if (c->has_addr4)
		rte_tel_data_add_dict_string(d, "address4",
			inet_ntop(AF_INET, c->addr4, buf, sizeof(buf)));
	rte_tel_data_start_array(ports, RTE_TEL_INT_VAL);
	for (i = 0; i < c->n_smtp_ports; i++)
		rte_tel_data_add_array_int(ports, c->smtp_ports[i]);
	rte_tel_data_add_dict_container(d, "smtp_ports", ports, 0);
	rte_tel_data_add_dict_int(d, "domains", (int)c->n_domains);
	rte_tel_data_add_dict_int(d, "workers", (int)rte_lcore_count() - 1);
	rte_tel_data_add_dict_string(d, "driver", the_port->driver);
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1],
		 m[2], m[3], m[4], m[5]);
	rte_tel_data_add_dict_string(d, "mac", mac);
	rte_tel_data_add_dict_string(d, "rss", the_port->rss ? "yes" : "no");
	return 0;
}

static int
cmd_version(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	rte_tel_data_string(d, "smtpedge " SMTPEDGE_VERSION);
	return 0;
}

int
telemetry_register(const struct edge_config *cfg, const struct port_state *port)
{
	the_cfg = cfg;
	the_port = port;
	if (rte_telemetry_register_cmd("/smtpedge/stats", cmd_stats,
			"Counters: totals, then per worker lcore. No parameters") ||
	    rte_telemetry_register_cmd("/smtpedge/config", cmd_config,
			"The configuration in effect. No parameters") ||
	    rte_telemetry_register_cmd("/smtpedge/version", cmd_version,
			"smtpedge's version. No parameters"))
		return -1;
	return 0;
}
