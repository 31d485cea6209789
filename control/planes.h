/*
 * planes.h - where the planes meet: per worker a request ring (the worker is
 * the only producer, the dispatcher the only consumer) and a verdict ring
 * (control threads produce, preemptible, so HTS; the worker consumes), and
 * the pool of transaction records. A verdict ring has room for every
 * session's outstanding answers, so the control plane never waits on a full
 * one. The daemon and the in-process benchmark make them the same way.
 */
#ifndef SMTPEDGE_PLANES_H
#define SMTPEDGE_PLANES_H

#include <rte_lcore.h>

struct edge_config;
struct rte_mempool;
struct rte_ring;

struct planes {
	unsigned n;
	struct rte_ring *req[RTE_MAX_LCORE];
	struct rte_ring *ver[RTE_MAX_LCORE];
	struct rte_mempool *txrecs;
};

/* For n workers; 0, or -1 with one line on stderr. Free with planes_free
 * even after a failure. */
int planes_create(const struct edge_config *cfg, unsigned n, struct planes *pl);
void planes_free(struct planes *pl);

#endif
