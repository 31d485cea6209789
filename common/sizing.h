/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/sizing.h — what one worker's sessions cost in memory, so that the
 * configuration can size [dataplane] flows from the memory given and refuse
 * a value that memory cannot hold, before anything is allocated.
 *
 * Memory follows activity: every flow slot costs a small fixed amount (the
 * TCB, the compact SMTP session, the glue, the flow-table and ring entries,
 * the control plane's per-slot state), and only sessions with bytes in
 * flight hold a session buffer, its share of the TCP send pool and its
 * transaction records. So a worker's memory is
 *
 *   SIZING_WORKER_FIXED + flows * (SIZING_SLOT + SIZING_CTL_SLOT + ring
 *   entries + a sixteenth of a log record) + session_buffers * SIZING_ACTIVE
 *
 * The figures are ceilings, not measurements: the dataplane's own sizes
 * (sess_layer_slot_bytes(), sess_layer_buffer_bytes()) are checked against
 * them by tests/unit/test_dataplane.c, so the two cannot drift apart
 * unnoticed. The configuration lives in control/ and may not see the
 * dataplane's structures; both see this.
 */
#ifndef SMTPEDGE_COMMON_SIZING_H
#define SMTPEDGE_COMMON_SIZING_H

#include <stdint.h>

#include "common/msg.h"
#include "common/txrec.h"

/* A flow slot on the worker: glue, SMTP session, TCB, free-list and
 * flow-table entries (measured 1,124 to 1,140 bytes). */
#define SIZING_SLOT_BYTES        1280u
/* The control plane's state per slot (struct ctl_sess, 272 bytes). */
#define SIZING_CTL_SLOT_BYTES    288u
/* The TCP send pool per session buffer (dataplane/session.c). */
#define SIZING_SNDBUF_SHARE      4096u
/* A session buffer with its free-list entry (measured 10,824 bytes). */
#define SIZING_BUFFER_BYTES      11008u
/* Transaction records per session buffer (its SPF request, its message),
 * and one per SIZING_TXRECS_LOG_SHARE flows for the session records of a
 * burst of closes (daemon/planes.c sizes the pool so). */
#define SIZING_TXRECS_PER_BUFFER 2u
#define SIZING_TXRECS_LOG_SHARE  16u
/* What one session with bytes in flight adds. */
#define SIZING_ACTIVE_BYTES                          \
	(SIZING_BUFFER_BYTES + SIZING_SNDBUF_SHARE + \
	 SIZING_TXRECS_PER_BUFFER * sizeof(struct txrec))
/* Per worker whatever flows is: the TCP out-of-order pool (16 MiB), the
 * timer wheel, the records kept in caches, slack. */
#define SIZING_WORKER_FIXED_BYTES (20u << 20)
/* Session buffers by default: one for every SIZING_BUFFER_SHARE flows,
 * within [SIZING_BUFFERS_MIN, SIZING_BUFFERS_MAX] (never more than flows). */
#define SIZING_BUFFER_SHARE       16u
#define SIZING_BUFFERS_MIN        64u
#define SIZING_BUFFERS_MAX        8192u

static inline uint32_t
sizing_default_buffers(uint32_t flows)
{
	uint32_t b = flows / SIZING_BUFFER_SHARE;

	if (b < SIZING_BUFFERS_MIN)
		b = SIZING_BUFFERS_MIN;
	if (b > SIZING_BUFFERS_MAX)
		b = SIZING_BUFFERS_MAX;
	return b < flows ? b : flows;
}

/* The request and verdict rings: 4 entries per flow, a power of two. */
static inline uint64_t
sizing_ring_bytes(uint32_t flows)
{
	uint64_t n = 1;

	while (n < (uint64_t)flows * 4)
		n <<= 1;
	return 2 * n * sizeof(struct ctl_msg);
}

/* Bytes one worker needs for flows slots and buffers session buffers. */
static inline uint64_t
sizing_worker_bytes(uint32_t flows, uint32_t buffers)
{
	return SIZING_WORKER_FIXED_BYTES +
	       (uint64_t)flows * (SIZING_SLOT_BYTES + SIZING_CTL_SLOT_BYTES) +
	       (uint64_t)(flows / SIZING_TXRECS_LOG_SHARE) * sizeof(struct txrec) +
	       sizing_ring_bytes(flows) + (uint64_t)buffers * SIZING_ACTIVE_BYTES;
}

/* The most flows (with the default buffers) that bytes hold; 0 if none. */
static inline uint32_t
sizing_max_flows(uint64_t bytes)
{
	uint32_t lo = 0, hi = 1u << 24; /* the configuration's ceiling */

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;

		if (sizing_worker_bytes(mid, sizing_default_buffers(mid)) <= bytes)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

#endif
