/*
 * worker.h - the run-to-completion loop of a worker lcore: burst RX,
 * classify, answer or hand to TCP, verdicts from the control plane, timers,
 * burst TX. Each worker owns its queue pair and everything behind it;
 * nothing is shared with other workers.
 */
#ifndef SMTPEDGE_WORKER_H
#define SMTPEDGE_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "dataplane/pkt.h"
#include "dataplane/port.h"
#include "dataplane/tcp.h"

struct edge_config;
struct rte_mempool;
struct rte_ring;

struct worker_params {
	const struct edge_config *cfg;
	const struct port_state *port;
	uint16_t queue;          /* also the worker's index */
	unsigned lcore;
	struct pkt_local local;
	struct rte_ring *req, *ver;
	struct rte_mempool *txrecs;
	uint64_t wall0_us, tsc0, tsc_hz;
	uint64_t secret_seed;
};

struct worker;

/* Built on the main lcore before launch; NULL + rte_errno on failure. */
struct worker *worker_create(const struct worker_params *p);
void worker_destroy(struct worker *w);
/* The lcore entry point (rte_eal_remote_launch). */
int worker_main(void *w);
/* Ask every worker to leave its loop. */
void worker_stop_all(void);
/* A TCP segment out: Ethernet and IP around it, checksums, onto the TX
 * burst. false when no mbuf was free (counted). */
bool worker_emit_tcp(struct worker *w, const struct tcp_out *o);
/* For telemetry. */
const struct tcp_engine *worker_tcp(const struct worker *w);
uint32_t worker_sessions(const struct worker *w);
const struct sess_layer *worker_sessions_layer(const struct worker *w);

#endif
