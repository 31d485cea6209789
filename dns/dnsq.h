/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/dnsq.h — one DNS query at a time, asynchronously, on the shared
 * libunbound context, driven by the owner thread's event loop.
 *
 * The control plane's dispatcher keeps thousands of checks in flight
 * without a thread each, so a query is issued with a deadline and a
 * callback, the loop polls dnsq_fd() and calls dnsq_process(), and the
 * callback gets libunbound's answer, or DNSQ_TIMEOUT when the deadline
 * passed first. A query can be withdrawn (dnsq_cancel); its callback is
 * then never called. One struct dnsq belongs to one thread; the ub_ctx
 * under it is shared with other threads, which may call ub_process() on
 * it (answers of ours that they take out are handed back to us).
 *
 * The pool of queries is split into lanes, each with slots of its own,
 * so that one kind of query (an SPF flood) cannot take every slot from
 * another (the PTR lookups), nor the other way round: a lane refuses a
 * query only when its own slots are out. Every lane shares the one
 * deadline heap, the one fd and the one dnsq_process().
 */
#ifndef SMTPEDGE_DNS_DNSQ_H
#define SMTPEDGE_DNS_DNSQ_H

#include <stdint.h>

struct ub_ctx;
struct ub_result;
struct dnsq;

/* The err of a query whose deadline passed (res is NULL). libunbound's
 * own errors are small negative numbers. */
#define DNSQ_TIMEOUT (-1000)

#define DNSQ_LANES 2

struct dnsq_params {
	struct ub_ctx *ub;     /* dns_resolver_create(); not owned */
	uint32_t max_inflight; /* lane 0's queries at once (fixed pool), >= 1 */
	/* lane 1's and on (fixed pools of their own); 0: the lane is unused */
	uint32_t lane_max[DNSQ_LANES - 1];
};

/* NULL and errno: EINVAL, ENOMEM, or what eventfd/epoll said. */
struct dnsq *dnsq_create(const struct dnsq_params *p);

/* Withdraws what is in flight (no callback for it), waits for the answers
 * other threads may be handing us this very moment, and frees. Tolerates
 * NULL; returns NULL. Not from inside a callback. */
struct dnsq *dnsq_destroy(struct dnsq *q);

/* err: 0, a libunbound error (UB_NOMEM, ...), or DNSQ_TIMEOUT. res, when
 * not NULL, is the callback's to free (ub_resolve_free). */
typedef void (*dnsq_done_fn)(void *arg, int err, struct ub_result *res);

/*
 * Issues name/type (class IN) in lane 0 with a deadline timeout_ms after
 * now_us. Returns a handle (never 0) for dnsq_cancel(); done() is called
 * later from dnsq_process(), exactly once unless cancelled. Returns 0
 * without calling done() when the lane's queries are all out (errno
 * EBUSY) or libunbound refused the query (EIO). done() may issue and
 * cancel queries but must not call dnsq_process() or dnsq_destroy().
 */
uint64_t dnsq_issue(struct dnsq *q, const char *name, int type, uint32_t timeout_ms,
		    dnsq_done_fn done, void *arg, uint64_t now_us);

/* dnsq_issue() in the given lane (EINVAL for a lane out of range). */
uint64_t dnsq_issue_lane(struct dnsq *q, unsigned lane, const char *name, int type,
			 uint32_t timeout_ms, dnsq_done_fn done, void *arg, uint64_t now_us);

/* Withdraws a query: its done() will not be called. A handle whose query
 * has already been answered (or cancelled) is ignored. */
void dnsq_cancel(struct dnsq *q, uint64_t handle);

/* Readable when dnsq_process() has answers to deliver. Stays the same for
 * the life of q. */
int dnsq_fd(const struct dnsq *q);

/* Delivers the answers that arrived and the deadlines that passed, by the
 * caller's monotonic clock (the same as given to dnsq_issue()). */
void dnsq_process(struct dnsq *q, uint64_t now_us);

/* The clock given to the dnsq_process() call running (the latest one
 * outside it): for a done() that needs the time of its answer. */
uint64_t dnsq_now(const struct dnsq *q);

/* Milliseconds until the next deadline (rounded up; 0 when one has
 * passed), or -1 when nothing is in flight: a poll() timeout. */
int dnsq_timeout_ms(const struct dnsq *q, uint64_t now_us);

/* Queries issued and not yet answered, timed out or cancelled, in every
 * lane. */
uint32_t dnsq_inflight(const struct dnsq *q);

/* Counters, for telemetry, over every lane: any thread may read them
 * while the owner works. */
enum dnsq_counter_id {
	DNSQ_C_ISSUED,
	DNSQ_C_ANSWERED,
	DNSQ_C_TIMEOUTS,
	DNSQ_C_CANCELLED,
	DNSQ_C_BUSY,    /* refused: the lane's queries were all out */
	DNSQ_C_REFUSED, /* refused by libunbound at once */
	DNSQ_C__COUNT
};

/* "issued", "answered", ...; NULL for an id out of range. */
const char *dnsq_counter_name(unsigned id);
uint64_t dnsq_counter(const struct dnsq *q, unsigned id);

#endif
