/*
 * telemetry.h - smtpedge's commands on DPDK's telemetry socket
 * (/smtpedge/...). Handlers run on telemetry's own thread: they read the
 * per-lcore counters and immutable configuration, never a worker's state.
 */
#ifndef SMTPEDGE_TELEMETRY_H
#define SMTPEDGE_TELEMETRY_H

struct edge_config;
struct port_state;
struct worker;
struct rte_mempool;
struct rte_ring;

struct telemetry_sources {
	const struct edge_config *cfg;
	const struct port_state *port;
	struct worker *const *workers;
	unsigned n_workers;
	struct rte_mempool *txrecs;
	struct rte_ring *const *req, *const *ver;
};

int telemetry_register(const struct telemetry_sources *src);

#endif
