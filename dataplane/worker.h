/*
 * worker.h - the run-to-completion loop of a worker lcore: burst RX,
 * classify, answer or hand to TCP, burst TX, timers. Each worker owns its
 * queue pair and everything behind it; nothing is shared with other workers.
 */
#ifndef SMTPEDGE_WORKER_H
#define SMTPEDGE_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "dataplane/pkt.h"
#include "dataplane/port.h"

struct worker_params {
	const struct port_state *port;
	uint16_t queue;
	struct pkt_local local;
};

struct worker;

/* Built on the main lcore before launch; NULL + rte_errno on failure. */
struct worker *worker_create(const struct worker_params *p);
void worker_destroy(struct worker *w);
/* The lcore entry point (rte_eal_remote_launch). */
int worker_main(void *w);
/* Ask every worker to leave its loop. */
void worker_stop_all(void);

#endif
