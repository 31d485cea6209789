/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/worker.h — the run-to-completion loop of a worker lcore: burst RX,
 * classify, answer or hand to TCP, verdicts from the control plane, timers,
 * burst TX. Each worker owns its queue pair and everything behind it;
 * nothing is shared with other workers.
 */
#ifndef SMTPEDGE_DATAPLANE_WORKER_H
#define SMTPEDGE_DATAPLANE_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "dataplane/pkt.h"
#include "dataplane/port.h"
#include "dataplane/tcp.h"

struct rte_mempool;
struct rte_ring;
struct sess_params;

/* The seeded fault shim around RX and TX, for tests: per mille of frames
 * dropped, duplicated, reordered; all 0 in production. */
struct worker_faults {
	uint32_t rx_drop, rx_dup, rx_reorder;
	uint32_t tx_drop, tx_dup, tx_reorder;
	uint32_t seed;
};
struct tls_slot;

struct worker_params {
	const struct sess_params *sess;
	struct worker_faults faults;
	const struct port_state *port;
	uint16_t queue; /* also the worker's index */
	unsigned lcore;
	struct pkt_local local;
	struct rte_ring *req, *ver;
	struct rte_mempool *txrecs;
	uint64_t wall0_us, tsc0, tsc_hz;
	uint64_t secret_seed;
	struct tls_slot *tls_slot; /* NULL: no STARTTLS */
};

struct worker;

/* Built on the main lcore before launch; NULL + rte_errno on failure. */
struct worker *worker_create(const struct worker_params *p);
void worker_destroy(struct worker *w);
/* The lcore entry point (rte_eal_remote_launch). */
int worker_main(void *w);
/* Ask every worker to leave its loop. */
void worker_stop_all(void);
/* For telemetry. */
const struct tcp_engine *worker_tcp(const struct worker *w);
uint32_t worker_sessions(const struct worker *w);
const struct sess_layer *worker_sessions_layer(const struct worker *w);

#endif
