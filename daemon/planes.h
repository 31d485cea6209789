/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon/planes.h — where the planes meet: per worker a request ring (the worker is
 * the only producer, the dispatcher the only consumer) and a verdict ring
 * (control threads produce, preemptible, so HTS; the worker consumes), and
 * the pool of transaction records. A verdict ring has room for every
 * session's outstanding answers, so the control plane never waits on a full
 * one. Here too the configuration becomes the dataplane's parameters
 * (the sessions' limits and timeouts, the fault shim). The daemon and the
 * in-process benchmark make them the same way.
 */
#ifndef SMTPEDGE_DAEMON_PLANES_H
#define SMTPEDGE_DAEMON_PLANES_H

#include <rte_lcore.h>

#include "dataplane/session.h"
#include "dataplane/worker.h"

struct edge_config;
struct rte_mempool;
struct rte_ring;

struct planes {
	unsigned n;
	struct rte_ring *req[RTE_MAX_LCORE];
	struct rte_ring *ver[RTE_MAX_LCORE];
	struct rte_mempool *txrecs;
	struct sess_params sess; /* every worker's sessions read it */
	struct worker_faults faults;
};

/* For n workers; cfg must outlive the planes (the sessions read its
 * hostname, ports and domains). 0, or -1 with one line on stderr. Free with planes_free
 * even after a failure. */
int planes_create(const struct edge_config *cfg, unsigned n, struct planes *pl);
void planes_free(struct planes *pl);

#endif
