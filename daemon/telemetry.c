/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon/telemetry.c — /smtpedge/stats, /smtpedge/config, /smtpedge/version.
 *
 * /smtpedge/stats gives the totals of every counter at the top level
 * (dataplane, TCP engine as tcp_*, control plane), the DNS latency
 * histogram under "dns_latency", and under "lcores" each worker's non-zero
 * counters. /smtpedge/policy shows the rules; /smtpedge/policy/set changes
 * one live, for new sessions, and logs the change.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_telemetry.h>

#include "control/config.h"
#include "control/ctlplane.h"
#include "control/policy.h"
#include "control/tlsctl.h"
#include "daemon/telemetry.h"
#include "dataplane/port.h"
#include "dataplane/session.h"
#include "dataplane/stats.h"
#include "dataplane/tcp.h"
#include "dataplane/worker.h"
#include "smtpedge_version.h"

/*
 * DPDK 22.11's telemetry server splits each request with strtok(), whose
 * state glibc keeps in one static for the whole process, and it serves
 * every client on a thread of its own: two operators' commands at the same
 * moment could take each other's parameters, or none ("(none): no such
 * rule"). The executable's own strtok() comes first in the dynamic
 * linker's lookup, ahead of libc's, and keeps that state per thread.
 * Nothing of ours calls strtok().
 */
char *strtok(char *s, const char *delim);

char *
strtok(char *s, const char *delim)
{
	static __thread char *save;

	return strtok_r(s, delim, &save);
}

static struct telemetry_sources src;
#define the_cfg       (src.cfg)
#define the_port      (src.port)
#define the_workers   (src.workers)
#define n_the_workers (src.n_workers)
static unsigned worker_lcore[RTE_MAX_LCORE];

extern int smtpedge_logtype;

/* Room for the TCP engine's counters when they are summed over the workers:
 * the engine has fewer (tcp_counter_count), and /smtpedge/stats fails rather
 * than overrun if it ever has more. */
#define TCP_COUNTERS_MAX 64

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

static void
put_tcp(struct rte_tel_data *d, const uint64_t *c, bool skip_zero)
{
	char name[64];
	uint32_t i;

	for (i = 0; i < tcp_counter_count; i++)
		if (!skip_zero || c[i]) {
			snprintf(name, sizeof(name), "tcp_%s", tcp_counter_names[i]);
			rte_tel_data_add_dict_u64(d, name, c[i]);
		}
}

static void
put_control(struct rte_tel_data *d)
{
	struct rte_tel_data *lat = rte_tel_data_alloc();
	struct ctl_stats t;
	unsigned i;

	ctl_stats_total(&t);
	for (i = 0; i < CTL__COUNT; i++)
		rte_tel_data_add_dict_u64(d, ctl_counter_name(i), t.c[i]);
	if (!lat)
		return;
	rte_tel_data_start_dict(lat);
	for (i = 0; i < DNS_LATENCY_BUCKETS; i++)
		rte_tel_data_add_dict_u64(lat, dns_latency_bucket_name(i), t.dns_latency[i]);
	rte_tel_data_add_dict_container(d, "dns_latency", lat, 0);
}

/* What the pools and rings hold now: after a load they must come back to
 * where they started, or something leaked. */
static void
put_pools(struct rte_tel_data *d)
{
	struct rte_tel_data *p = rte_tel_data_alloc();
	uint64_t cf = 0, ct = 0, req = 0, ver = 0;
	uint32_t f, t;
	unsigned q;

	if (!p)
		return;
	for (q = 0; q < n_the_workers; q++) {
		sess_layer_chunks(worker_sessions_layer(the_workers[q]), &f, &t);
		cf += f;
		ct += t;
		req += rte_ring_count(src.req[q]);
		ver += rte_ring_count(src.ver[q]);
	}
	rte_tel_data_start_dict(p);
	rte_tel_data_add_dict_u64(p, "mbufs_free", rte_mempool_avail_count(the_port->pool));
	rte_tel_data_add_dict_u64(p, "mbufs_total", the_port->pool->size);
	rte_tel_data_add_dict_u64(p, "txrecs_free", rte_mempool_avail_count(src.txrecs));
	rte_tel_data_add_dict_u64(p, "txrecs_total", src.txrecs->size);
	rte_tel_data_add_dict_u64(p, "body_chunks_free", cf);
	rte_tel_data_add_dict_u64(p, "body_chunks_total", ct);
	rte_tel_data_add_dict_u64(p, "request_ring_used", req);
	rte_tel_data_add_dict_u64(p, "verdict_ring_used", ver);
	rte_tel_data_add_dict_container(d, "pools", p, 0);
}

static int
cmd_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct dp_stats total;
	struct rte_tel_data *lcores = rte_tel_data_alloc();
	uint64_t tcp_total[TCP_COUNTERS_MAX] = { 0 };
	uint64_t active = 0;
	unsigned q, i;

	(void)cmd;
	(void)params;
	if (!lcores || tcp_counter_count > TCP_COUNTERS_MAX)
		return -1;
	rte_tel_data_start_dict(d);
	dp_stats_total(&total);
	put_block(d, &total, false);
	for (q = 0; q < n_the_workers; q++) {
		const uint64_t *c = (const uint64_t *)tcp_engine_counters(
			worker_tcp(the_workers[q]));

		for (i = 0; i < tcp_counter_count; i++)
			tcp_total[i] += c[i];
		active += worker_sessions(the_workers[q]);
	}
	rte_tel_data_add_dict_u64(d, "sessions_active", active);
	put_tcp(d, tcp_total, false);
	put_control(d);
	put_pools(d);
	rte_tel_data_start_dict(lcores);
	for (q = 0; q < n_the_workers; q++) {
		struct rte_tel_data *one = rte_tel_data_alloc();
		char key[16];

		if (!one)
			break;
		rte_tel_data_start_dict(one);
		put_block(one, &dp_stats[worker_lcore[q]], true);
		rte_tel_data_add_dict_u64(one, "sessions_active", worker_sessions(the_workers[q]));
		put_tcp(one, (const uint64_t *)tcp_engine_counters(worker_tcp(the_workers[q])),
			true);
		snprintf(key, sizeof(key), "%u", worker_lcore[q]);
		rte_tel_data_add_dict_container(lcores, key, one, 0);
	}
	rte_tel_data_add_dict_container(d, "lcores", lcores, 0);
	return 0;
}

static void
put_setting(void *arg, const char *key, const char *val)
{
	rte_tel_data_add_dict_string(arg, key, val);
}

static int
cmd_policy(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct policy p;
	int i;

	(void)cmd;
	(void)params;
	policy_live_get(&p);
	rte_tel_data_start_dict(d);
	for (i = 0; i < POLICY__RULES; i++) {
		struct rte_tel_data *r = rte_tel_data_alloc();

		if (!r)
			return -1;
		char key[32], *c;

		rte_tel_data_start_dict(r);
		policy_rule_each(i, &p.rule[i], put_setting, r);
		/* Telemetry keys allow no '-': ipv6-ptr is ipv6_ptr here, and
		 * smtpedgectl spells it ipv6-ptr again. */
		snprintf(key, sizeof(key), "%s", policy_rule_name(i));
		for (c = key; *c; c++)
			if (*c == '-')
				*c = '_';
		rte_tel_data_add_dict_container(d, key, r, 0);
	}
	return 0;
}

/* params: "RULE KEY=VALUE [KEY=VALUE...]"; all or nothing, and one change
 * however many clients change rules at once. */
static int
cmd_policy_set(const char *cmd, const char *params, struct rte_tel_data *d)
{
	char buf[256], why[160], *save = NULL, *rule, *kv, *eq;
	const char *keys[64], *values[64];
	struct policy before, after;
	char was[128], now[128];
	unsigned n = 0;
	int id;

	(void)cmd;
	rte_tel_data_start_dict(d);
	snprintf(buf, sizeof(buf), "%s", params ? params : "");
	rule = strtok_r(buf, " ", &save);
	if (!rule || (id = policy_rule_find(rule)) < 0) {
		snprintf(why, sizeof(why),
			 "%s: no such rule (rules: ipv6-ptr ipv4-ptr ipv6-auth ipv4-auth)",
			 rule ? rule : "(none)");
		rte_tel_data_add_dict_string(d, "error", why);
		return 0;
	}
	for (kv = strtok_r(NULL, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
		eq = strchr(kv, '=');
		if (!eq) {
			snprintf(why, sizeof(why), "%.60s: not KEY=VALUE", kv);
			rte_tel_data_add_dict_string(d, "error", why);
			return 0;
		}
		if (n == sizeof(keys) / sizeof(keys[0])) {
			rte_tel_data_add_dict_string(d, "error", "too many settings");
			return 0;
		}
		*eq = '\0';
		keys[n] = kv;
		values[n++] = eq + 1;
	}
	if (n == 0) {
		rte_tel_data_add_dict_string(d, "error", "give KEY=VALUE");
		return 0;
	}
	if (policy_live_change(rule, keys, values, n, why, sizeof(why), &before, &after) < 0) {
		rte_tel_data_add_dict_string(d, "error", why);
		return 0;
	}
	policy_rule_format(id, &before.rule[id], was, sizeof(was));
	policy_rule_format(id, &after.rule[id], now, sizeof(now));
	rte_log(RTE_LOG_NOTICE, smtpedge_logtype,
		"smtpedge: policy rule=%s was=\"%s\" now=\"%s\"\n", rule, was, now);
	rte_tel_data_add_dict_string(d, "rule", rule);
	rte_tel_data_add_dict_string(d, "now", now);
	return 0;
}

/* New certificates for new STARTTLS sessions; those in TLS keep theirs. */
static int
cmd_tls_reload(const char *cmd, const char *params, struct rte_tel_data *d)
{
	char why[384];

	(void)cmd, (void)params;
	rte_tel_data_start_dict(d);
	if (tlsctl_reload(why, sizeof(why)) < 0) {
		rte_tel_data_add_dict_string(d, "error", why);
		return 0;
	}
	rte_tel_data_add_dict_string(d, "tls", "reloaded");
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
		rte_tel_data_add_dict_string(
			d, "address6", inet_ntop(AF_INET6, c->addr6, buf, sizeof(buf)));
	if (c->has_addr4)
		rte_tel_data_add_dict_string(
			d, "address4", inet_ntop(AF_INET, c->addr4, buf, sizeof(buf)));
	rte_tel_data_start_array(ports, RTE_TEL_INT_VAL);
	for (i = 0; i < c->n_smtp_ports; i++)
		rte_tel_data_add_array_int(ports, c->smtp_ports[i]);
	rte_tel_data_add_dict_container(d, "smtp_ports", ports, 0);
	rte_tel_data_add_dict_int(d, "domains", (int)c->n_domains);
	rte_tel_data_add_dict_int(d, "workers", (int)rte_lcore_count() - 1);
	rte_tel_data_add_dict_string(d, "driver", the_port->driver);
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
		 m[5]);
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
telemetry_register(const struct telemetry_sources *s)
{
	unsigned l, q = 0;

	src = *s;
	RTE_LCORE_FOREACH_WORKER (l)
		if (q < src.n_workers)
			worker_lcore[q++] = l;
	if (rte_telemetry_register_cmd("/smtpedge/stats", cmd_stats,
				       "Counters: totals, then per worker lcore. No parameters") ||
	    rte_telemetry_register_cmd(
		    "/smtpedge/config", cmd_config, "The configuration in effect. No parameters") ||
	    rte_telemetry_register_cmd(
		    "/smtpedge/version", cmd_version, "smtpedge's version. No parameters") ||
	    rte_telemetry_register_cmd("/smtpedge/policy", cmd_policy,
				       "The rules and their settings. No parameters") ||
	    rte_telemetry_register_cmd("/smtpedge/tls/reload", cmd_tls_reload,
				       "Load the [tls] certificates again") < 0 ||
	    rte_telemetry_register_cmd(
		    "/smtpedge/policy/set", cmd_policy_set,
		    "Change a rule for new sessions. Parameters: RULE KEY=VALUE..."))
		return -1;
	return 0;
}

int
telemetry_secure_socket(void)
{
	char path[PATH_MAX];
	int rc = 0;

	/* the v2 socket (ours and smtpedgectl's), and the legacy one; none
	 * at all when the EAL was told --no-telemetry */
	snprintf(path, sizeof(path), "%s/dpdk_telemetry.v2", rte_eal_get_runtime_dir());
	if (chmod(path, 0600) < 0 && errno != ENOENT)
		rc = -1;
	snprintf(path, sizeof(path), "%s/telemetry", rte_eal_get_runtime_dir());
	if (chmod(path, 0600) < 0 && errno != ENOENT)
		rc = -1;
	return rc;
}
