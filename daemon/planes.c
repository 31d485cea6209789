/* SPDX-License-Identifier: BSD-3-Clause */
/* daemon/planes.c — the rings and the record pool between the planes, and the
 * dataplane's parameters from the configuration (planes.h). */
#include <stdio.h>

#include <rte_errno.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "common/msg.h"
#include "common/txrec.h"

#include "control/config.h"
#include "control/policy.h"
#include "daemon/planes.h"

static bool
domain_accepted(const void *arg, const char *domain, size_t len)
{
	return config_domain_accepted(arg, domain, len);
}

static void
sess_params_fill(const struct edge_config *c, struct sess_params *sp)
{
	*sp = (struct sess_params){
		.flows = c->flows,
		.smtp_ports = c->smtp_ports,
		.n_smtp_ports = c->n_smtp_ports,
		.mtu = c->mtu,
		.idle_timeout_s = c->idle_timeout_s,
		.lifetime_s = c->lifetime_s,
		.idle_pressure_pct = c->idle_pressure_pct,
		.idle_timeout_min_s = c->idle_timeout_min_s,
		.delivery_timeout_s = c->delivery_timeout_s,
		.body_budget_mb = c->body_budget_mb,
		.fault_spf_lost_from = c->fault_spf_lost_from,
		.tls_max_sessions = c->tls_max_sessions,
		.tls_refuse_early = c->tls_refuse_early,
		.smtp = {
			.hostname = c->hostname,
			.max_cmd_line = c->max_cmd_line,
			.max_text_line = c->max_text_line,
			.max_rcpts = c->max_rcpts,
			.max_msg_size = c->max_message_size,
			.max_errors = c->max_errors,
			.pregreet_reject = c->pregreet_reject,
			.domain_accepted = domain_accepted,
			.domain_arg = c,
		},
		.rules_get = policy_live_get,
	};
}

/* Transaction records a session holds at once: its early SPF request's and
 * its transaction's. */
#define TXRECS_PER_SESSION 2
/* Records each lcore keeps to itself, so that a worker's get and put rarely
 * touch the pool's shared ring. */
#define TXREC_CACHE        64
/* Slack for the records that sit in the lcores' caches (up to 1.5 times
 * TXREC_CACHE each), so that sessions within their share never find the pool
 * empty. */
#define TXRECS_CACHED      1023

int
planes_create(const struct edge_config *cfg, unsigned n, struct planes *pl)
{
	uint32_t size = rte_align32pow2(cfg->flows * 4);
	char name[RTE_RING_NAMESIZE];
	unsigned i;

	pl->n = n;
	sess_params_fill(cfg, &pl->sess);
	pl->faults = (struct worker_faults){
		.rx_drop = cfg->fault_rx_drop,
		.rx_dup = cfg->fault_rx_dup,
		.rx_reorder = cfg->fault_rx_reorder,
		.tx_drop = cfg->fault_tx_drop,
		.tx_dup = cfg->fault_tx_dup,
		.tx_reorder = cfg->fault_tx_reorder,
		.seed = cfg->fault_seed,
	};
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "req_%u", i);
		pl->req[i] = rte_ring_create_elem(
			name, sizeof(struct ctl_msg), size, (int)rte_socket_id(),
			RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "ver_%u", i);
		pl->ver[i] = rte_ring_create_elem(
			name, sizeof(struct ctl_msg), size, (int)rte_socket_id(),
			RING_F_MP_HTS_ENQ | RING_F_SC_DEQ);
		if (!pl->req[i] || !pl->ver[i]) {
			fprintf(stderr, "smtpedge: rings for worker %u: %s\n", i,
				rte_strerror(rte_errno));
			return -1;
		}
	}
	pl->txrecs = rte_mempool_create(
		"txrecs", n * cfg->flows * TXRECS_PER_SESSION + TXRECS_CACHED, sizeof(struct txrec),
		TXREC_CACHE, 0, NULL, NULL, NULL, NULL, (int)rte_socket_id(), 0);
	if (!pl->txrecs) {
		fprintf(stderr,
			"smtpedge: transaction records: %s (more memory with -m, or fewer [dataplane] flows)\n",
			rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

void
planes_free(struct planes *pl)
{
	unsigned i;

	for (i = 0; i < pl->n; i++) {
		rte_ring_free(pl->req[i]);
		rte_ring_free(pl->ver[i]);
	}
	rte_mempool_free(pl->txrecs);
}
