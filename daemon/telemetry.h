/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon/telemetry.h — smtpedge's commands on DPDK's telemetry socket
 * (/smtpedge/...). Handlers run on telemetry's threads (one per client):
 * they read the per-lcore counters and immutable configuration, never a
 * worker's state, and change the rules only through policy_live_change.
 *
 * Who may use it: /smtpedge/policy/set changes what the edge does, so the
 * socket is its owner's alone (mode 0600): the EAL creates it under a umask
 * of 077 and telemetry_secure_socket() sets the mode whatever the EAL did.
 */
#ifndef SMTPEDGE_DAEMON_TELEMETRY_H
#define SMTPEDGE_DAEMON_TELEMETRY_H

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
/* Mode 0600 for the sockets under the EAL runtime directory. -1 with errno
 * when one exists and cannot be set so. */
int telemetry_secure_socket(void);

#endif
