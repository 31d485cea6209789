/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/ctlplane.h — the control plane: the dispatcher (the main lcore's thread)
 * and a pool of work threads, off the worker cores.
 *
 * The dispatcher drains every worker's request ring, runs the asynchronous
 * reverse-DNS lookups and SPF checks (thousands in flight on one thread),
 * writes the transaction log, and hands DKIM and our headers to the work
 * threads. A message for the spool is submitted to the spool's committer,
 * which answers the worker when the message's group is on disk; one for the
 * downstream to the relay's loop, which answers when the downstream has.
 * Verdicts go back on each worker's verdict ring. Neither side ever waits
 * for the other.
 */
#ifndef SMTPEDGE_CONTROL_CTLPLANE_H
#define SMTPEDGE_CONTROL_CTLPLANE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/msg.h"

struct edge_config;
struct rte_mempool;
struct rte_ring;

/* The dispatcher, up to 64 work threads and the spool's committer. */
#define CTLPLANE_MAX_THREADS 66
#define CTLPLANE_SPOOL_BLOCK (CTLPLANE_MAX_THREADS - 1) /* the committer's counters */
#define CTLPLANE_RELAY_BLOCK CTLPLANE_SPOOL_BLOCK       /* the relay's: only one of the two runs */
#define DNS_LATENCY_BUCKETS  11

/* Counters, one block per control thread (block 0: the dispatcher). The
 * SPF checks': spf_checks_inflight is a gauge (checks not done yet);
 * spf_checks_cancelled (a new MAIL, RSET or session let go of a check not done),
 * spf_checks_refused (max_spf_checks reached), spf_deliveries_parked (the
 * end of DATA came before the result), spf_lookups (distinct DNS queries of
 * the checks done), spf_passes (evaluator passes, all checks), its largest
 * for one check spf_passes_max, and checks by passes taken
 * (spf_passes_1 ... spf_passes_gt16). The relay's (its own thread):
 * connections made (relay_connections_opened), messages begun on a
 * connection kept open (relay_connections_reused), connections open now
 * (gauge), messages whose MAIL, RCPTs and DATA went in one write
 * (relay_pipelined), messages on a connection now (relay_inflight, gauge)
 * and the most at once (relay_inflight_max), messages waiting for a
 * connection (relay_queued, gauge). A work thread's: the times it came
 * back from sleeping for want of a job (work_wakeups; none while idle). */
#define CTL_COUNTERS(X)                                                     \
	X(RDNS_REQUESTS, "rdns_requests")                                   \
	X(RDNS_PASS, "rdns_pass")                                           \
	X(RDNS_NONE, "rdns_none")                                           \
	X(RDNS_MISMATCH, "rdns_mismatch")                                   \
	X(RDNS_TEMPERROR, "rdns_temperror")                                 \
	X(RDNS_CACHED, "rdns_cached")                                       \
	X(RDNS_BUSY, "rdns_busy") /* too many in flight: temperror */       \
	X(SPOOL_REQUESTS, "spool_requests")                                 \
	X(SPOOL_WRITTEN, "spool_written")                                   \
	X(SPOOL_FAILED, "spool_failed")                                     \
	X(SPOOL_BUSY, "spool_busy") /* too many wait: 451 */                \
	X(SPOOL_GROUPS, "spool_groups")                                     \
	X(SPOOL_FSYNCS, "spool_fsyncs")                                     \
	X(SPOOL_GROUP_1, "spool_group_1") /* messages per group */          \
	X(SPOOL_GROUP_2_4, "spool_group_2_4")                               \
	X(SPOOL_GROUP_5_16, "spool_group_5_16")                             \
	X(SPOOL_GROUP_17_64, "spool_group_17_64")                           \
	X(SPOOL_GROUP_65_UP, "spool_group_65_up")                           \
	X(RELAY_DELIVERED, "relay_delivered")                               \
	X(RELAY_FAILED, "relay_failed")                                     \
	X(RELAY_CONN_OPENED, "relay_connections_opened")                    \
	X(RELAY_CONN_REUSED, "relay_connections_reused")                    \
	X(RELAY_CONN_OPEN, "relay_connections_open")                        \
	X(RELAY_PIPELINED, "relay_pipelined")                               \
	X(RELAY_INFLIGHT, "relay_inflight")                                 \
	X(RELAY_INFLIGHT_MAX, "relay_inflight_max")                         \
	X(RELAY_QUEUED, "relay_queued")                                     \
	X(SPF_CHECKS, "spf_checks_early") /* SPF run ahead, from MAIL */    \
	X(SPF_LATE, "spf_checks_late")    /* no early check for the MAIL */ \
	X(AUTH_PASS, "auth_pass")         /* the auth rule's outcomes */    \
	X(AUTH_REJECT, "auth_reject")                                       \
	X(AUTH_DEFER, "auth_defer")                                         \
	X(AUTH_LOGGED, "auth_logged")                                       \
	X(LOG_LINES, "log_lines")                                           \
	X(LOG_FAILED, "log_failed")                                         \
	X(VERDICTS_SENT, "verdicts_sent")                                   \
	X(SPF_INFLIGHT, "spf_checks_inflight")                              \
	X(SPF_CANCELLED, "spf_checks_cancelled")                            \
	X(SPF_REFUSED, "spf_checks_refused")                                \
	X(SPF_PARKED, "spf_deliveries_parked")                              \
	X(SPF_LOOKUPS, "spf_lookups")                                       \
	X(SPF_PASSES, "spf_passes")                                         \
	X(SPF_PASSES_MAX, "spf_passes_max")                                 \
	X(SPF_PASSES_1, "spf_passes_1")                                     \
	X(SPF_PASSES_2, "spf_passes_2")                                     \
	X(SPF_PASSES_4, "spf_passes_3_4")                                   \
	X(SPF_PASSES_8, "spf_passes_5_8")                                   \
	X(SPF_PASSES_16, "spf_passes_9_16")                                 \
	X(SPF_PASSES_MORE, "spf_passes_gt16")                               \
	X(DKIM_KEY_QUERIES, "dkim_key_queries")                             \
	X(DKIM_PARKED, "dkim_deliveries_parked")                            \
	X(DKIM_KEYS_SERVED, "dkim_keys_served")                             \
	X(DKIM_KEYS_MISSING, "dkim_keys_missing")                           \
	X(DKIM_KEYS_EARLY, "dkim_keys_early")                               \
	X(DKIM_EARLY_USED, "dkim_keys_early_used")                          \
	X(DKIM_EARLY_SKIPPED, "dkim_keys_early_skipped")                    \
	X(DKIM_EARLY_DROPPED, "dkim_keys_early_dropped")                    \
	X(BODIES_RETURNED, "bodies_returned")                               \
	X(DKIM_HASH_JOBS, "dkim_hash_jobs")                                 \
	X(DKIM_BODY_EARLY, "dkim_body_bytes_early")                         \
	X(WORK_WAKEUPS, "work_wakeups")                                     \
	X(UNKNOWN_MSG, "unknown_messages")

enum ctl_counter {
#define CTL_ENUM(id, name) CTL_##id,
	CTL_COUNTERS(CTL_ENUM)
#undef CTL_ENUM
		CTL__COUNT
};

struct ctl_stats {
	uint64_t c[CTL__COUNT];
	uint64_t dns_latency[DNS_LATENCY_BUCKETS];
} __attribute__((aligned(64)));

extern struct ctl_stats ctl_stats[CTLPLANE_MAX_THREADS];
const char *ctl_counter_name(enum ctl_counter c);
/* "lt1ms", "lt2ms", ... "ge1000ms" */
const char *dns_latency_bucket_name(unsigned i);
void ctl_stats_total(struct ctl_stats *out);

struct ctlplane_params {
	const struct edge_config *cfg;
	unsigned n_workers;
	struct rte_ring *const *req;    /* per worker: worker -> dispatcher */
	struct rte_ring *const *ver;    /* per worker: control -> worker */
	struct rte_mempool *txrec_pool; /* where MSG_LOG records go back */
	uint32_t max_flows;             /* per worker: the session slots */
};

struct ctlplane;

/* Resolver, lookups, spool, log, work threads. NULL with one line in err. */
struct ctlplane *ctlplane_create(const struct ctlplane_params *p, char *err, size_t errlen);
/* The dispatcher's loop, on the calling thread, until *stop. */
void ctlplane_run(struct ctlplane *pl, volatile sig_atomic_t *stop);
/* Nonzero while the SPF checks in flight are at [control]
 * max_spf_checks: the workers read it at MAIL (sess_params.spf_full). */
const volatile uint8_t *ctlplane_spf_full(const struct ctlplane *pl);
/* Stops the work threads; tolerates NULL and half-built pools. */
void ctlplane_destroy(struct ctlplane *pl);

#endif
