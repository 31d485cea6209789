/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/session.h — a worker's sessions: the glue between its TCP engine, the
 * SMTP engine of each connection, the policy, and the rings to the control
 * plane.
 *
 * Everything here runs on the worker's lcore: no locks, no system calls,
 * no allocation (sessions, bodies and records come from pools sized at
 * start). A session waits for the control plane by parking its pending SMTP
 * reply under a token, never by blocking.
 */
#ifndef SMTPEDGE_DATAPLANE_SESSION_H
#define SMTPEDGE_DATAPLANE_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/rules.h"

#include "dataplane/smtp.h"
#include "dataplane/tcp.h"

struct rte_mempool;
struct rte_ring;
struct sess_layer;
struct tls_slot;

/* What the sessions take from the configuration, built by whoever reads it;
 * shared by every worker, read-only. */
struct sess_params {
	uint32_t flows;           /* session slots per worker */
	uint32_t session_buffers; /* per worker, for sessions with bytes in
				     flight (0: flows) */
	const uint16_t *smtp_ports;
	uint32_t n_smtp_ports;
	uint32_t mtu;
	uint32_t idle_timeout_s, lifetime_s;
	uint32_t idle_pressure_pct;   /* slots in use where the idle timeout starts
					  to fall (100: never) */
	uint32_t idle_timeout_min_s;  /* the idle timeout with every slot in use */
	uint32_t delivery_timeout_s;  /* the end of DATA waits this long */
	uint32_t body_budget_mb;      /* per worker */
	uint32_t fault_spf_lost_from; /* test shim: 0, or the Nth MAIL on */
	struct smtp_params smtp;      /* hostname, limits, our domains */
	uint32_t tls_max_sessions;    /* sessions in TLS per worker */
	bool tls_refuse_early;        /* a known refusal answers STARTTLS */
	/* A snapshot of the live rules, taken as a session opens. */
	void (*rules_get)(struct policy *out);
	/* Set by the control plane while its SPF checks are at their bound:
	 * MAIL gets 451 4.7.26 then. NULL: never. */
	const volatile uint8_t *spf_full;
};

/* A TCP segment out; false when it could not be sent (counted by emit). */
typedef bool (*sess_emit_fn)(void *arg, const struct tcp_out *o);

struct sess_layer_params {
	const struct sess_params *sess;
	sess_emit_fn emit; /* where TCP output goes */
	void *emit_arg;
	uint32_t worker_id; /* index of this worker's rings */
	unsigned lcore;
	struct rte_ring *req, *ver; /* to and from the control plane */
	struct rte_mempool *txrecs; /* shared with the control plane */
	uint64_t wall0_us;          /* wall clock at tsc0 */
	uint64_t tsc0, tsc_hz;
	uint64_t secret_seed;
	struct tls_slot *tls_slot; /* NULL: STARTTLS is not offered */
};

struct sess_layer *sess_layer_create(const struct sess_layer_params *p);
void sess_layer_destroy(struct sess_layer *sl);

/* A TCP segment for us, already validated. */
void sess_layer_input(struct sess_layer *sl, const struct tcp_pkt *pkt, uint64_t now_us);
/* Verdicts from the control plane, and timers. Returns work done. */
unsigned sess_layer_poll(struct sess_layer *sl, uint64_t now_us);
uint64_t sess_layer_now_us(const struct sess_layer *sl, uint64_t tsc);
/* TLS handshake steps waiting for the CPU, oldest first, until about
 * budget_us of it is spent (one step at least). Called after the replies
 * of the burst have gone out, so a handshake never holds them back.
 * Returns the steps run. */
unsigned sess_layer_handshakes(struct sess_layer *sl, uint32_t budget_us);

/* The idle timeout of a session waiting between commands with in_use of
 * p->flows slots taken: idle_timeout_s up to idle_pressure_pct of the flows,
 * then linearly down to idle_timeout_min_s with every slot in use. */
uint32_t sess_idle_timeout_ms(const struct sess_params *p, uint32_t in_use);

/* The sessions holding a session buffer, in the order of their latest
 * input (or of when they began to qualify, if later): the head has held
 * its buffer longest without a byte in. One node per slot, linked by slot
 * index; every change is O(1). */
struct sess_hold {
	uint32_t prev, next;
	uint64_t since_us;
	bool listed;
};

struct sess_holders {
	struct sess_hold *node; /* one per slot */
	uint32_t head, tail;
};

#define SESS_HOLD_NONE UINT32_MAX

void sess_hold_init(struct sess_holders *h, struct sess_hold *nodes, uint32_t n);
/* Input: to the tail, its time now. */
void sess_hold_touch(struct sess_holders *h, uint32_t idx, uint64_t now_us);
/* On the list (at the tail, its time now) unless it is already. */
void sess_hold_add(struct sess_holders *h, uint32_t idx, uint64_t now_us);
void sess_hold_remove(struct sess_holders *h, uint32_t idx);
/* The holder to close for a session that waits for a buffer: the head,
 * once it has held without input for floor_us at least and may_close()
 * says it may go. Heads that may not are taken off the list (they come
 * back with their next change), a few per call. SESS_HOLD_NONE: none now
 * (the newest input behind the head is newer still). */
uint32_t sess_hold_pick(struct sess_holders *h, uint64_t now_us, uint64_t floor_us,
			bool (*may_close)(void *arg, uint32_t idx), void *arg);

/* For telemetry (read from another thread; counters only). */
const struct tcp_engine *sess_layer_tcp(const struct sess_layer *sl);
uint32_t sess_layer_active(const struct sess_layer *sl);
/* Body chunks free and in all. */
void sess_layer_chunks(const struct sess_layer *sl, uint32_t *free_n, uint32_t *total);
/* Session buffers free and in all. */
void sess_layer_buffers(const struct sess_layer *sl, uint32_t *free_n, uint32_t *total);
/* Bytes of memory one session slot takes (TCB, SMTP session, glue). */
size_t sess_layer_slot_bytes(void);
/* Bytes one session buffer takes (lent while a session has bytes in
 * flight), with its free-list entry. */
size_t sess_layer_buffer_bytes(void);

#endif
