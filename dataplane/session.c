/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/session.c — a worker's sessions (see session.h).
 *
 * Lifetime. A slot is taken when TCP completes a handshake and given back
 * when TCP says the connection is gone, with one exception: while the spool
 * holds a pointer into the session's message body, the slot stays (a
 * "zombie", its TCP gone) until the spool's answer comes back. So the
 * control plane never reads freed memory, and a message the spool wrote is
 * never lost even when the sender hung up before its 250: it may arrive
 * twice (the sender retries), never not at all.
 *
 * The delivery deadline. A session whose message the control plane has
 * not answered within [control] delivery_timeout_s (300 s by default, under
 * the 10 minutes RFC 5321 §4.5.3.2.6 gives a client waiting for the reply
 * to the end of DATA) is answered 451 4.3.0 through the SMTP engine, like
 * any verdict (so in order, and inside TLS when the session is), with
 * keep_message: the spool still reads the body and recipients, so the
 * engine forgets those chunks instead of giving them back. The session
 * goes on; the record out there is an orphan, and the slot stays (as for a
 * zombie) until every orphan's answer has come and its chunks are back in
 * the budget. A message written after the 451 may arrive twice, never not
 * at all; its late answer is logged as a transaction line with its queue id
 * and flags=late_write. Sessions waiting for an answer are listed in the
 * order they began to wait, which is the order of their deadlines.
 *
 * Stale answers. Each slot has a generation, bumped when the slot is given
 * back; a control-plane answer carrying an older generation is for a session
 * that has gone, and is dropped and counted.
 *
 * TLS. After STARTTLS's 220 a session's TCP bytes go to its TLS layer
 * (tls.c) and the plaintext that comes out goes to the SMTP engine; its
 * replies go back through the TLS layer. The TLS state exists from the
 * STARTTLS accepted to the slot's release, at most tls_max per worker.
 * The handshake runs on the worker, in steps: ciphertext that arrives
 * before the handshake is done is only buffered, and the session joins a
 * FIFO; sess_layer_handshakes() runs the steps after the burst's replies
 * have gone out, within a CPU budget per loop, so a plain session's reply
 * never waits for more than about one handshake step (the private-key
 * work of one ClientHello). A close waits until the TLS records ahead of
 * it have all gone to TCP.
 *
 * Idle sessions under pressure. A session waiting for its client's next
 * command with nothing pending (no verdict, no spool write, no TLS
 * handshake step, no unsent reply) is on the idle list, ordered by when it
 * became idle; input moves it to the tail, so the head is the session idle
 * longest. When a new connection finds fewer than a reserve of slots free
 * (flows/64, at least 2), the head is closed with 421 4.7.0 before the new
 * one is taken, one per new connection: the slot comes back once the FIN
 * exchange is done, and the reserve covers that round trip. A session with a
 * verdict or a spool write pending is never on the list, so no message that
 * got (or may yet get) its 250 is lost. And past [smtp] idle_pressure_pct
 * of the slots in use, the idle timeout of the listed sessions falls
 * linearly with the fill, to idle_timeout_min_s when every slot is taken;
 * the list is in idle order, so the tick looks only at its head. Sessions
 * with work pending keep the TCP engine's full idle_timeout_s.
 * Memory follows activity. A slot is the glue, the TCB and the compact SMTP
 * session; what a session has in flight (queued replies, held input, the
 * command line, an open transaction's sender) is in a session buffer lent
 * from the worker's pool of [dataplane] session_buffers while there is any,
 * and the TCP send pool is sized with it. The pool is a LIFO free list,
 * not an rte_mempool: the worker alone takes and gives (no ring, no
 * per-lcore cache to size), and the buffer given back last, still warm in
 * the cache, is the next one lent. When it is empty the session that needs
 * a buffer waits in a FIFO: the SMTP engine takes no byte (TCP ACKs none)
 * and the session's receive window closes (tcp_rcv_space says 0); as
 * buffers come back, sess_layer_poll() wakes as many waiting sessions,
 * oldest first, which reopens their windows and resumes a greeting that
 * could not be written.
 *
 * Holders cannot pin the pool. A session keeps its buffer while it holds a
 * partial command line or an open transaction, so clients that send half a
 * line and go quiet could hold every buffer until their idle timeout. The
 * sessions holding a buffer are listed in the order of their latest input
 * (struct sess_holders); each session that asks for a buffer and finds
 * none is owed one eviction, and sess_layer_poll() pays it by closing the
 * head of that list with 421 4.7.0 (sess_buffer_evicted): the 421 is
 * written with the holder's own buffer, which comes back once the 421 is
 * handed to TCP, and the waiting sessions are woken oldest first. Never a
 * session with a verdict or a spool write pending, a TLS handshake or a
 * switch to TLS under way, or a reply not yet handed to TCP
 * (smtp_session_evictable()); never one whose latest input is less than
 * SESS_BUFFER_HOLD_MIN_US old: until the head is that old the waiting
 * session waits, and its eviction stays owed while it does. At most one
 * eviction per waiting session: what is owed never exceeds the sessions
 * still waiting.
 *
 * DKIM keys ahead. When the SMTP engine has a message's header block whole
 * it tells the session, which sends it to the control plane
 * (MSG_DKIM_HEADERS) so that the key records are fetched while the body
 * still arrives. The chain is lent from then on (common/msg.h): a
 * transaction that ends without its MSG_SPOOL answered hands the chain to
 * the dispatcher (MSG_BODY_RETURN), which frees it after reading. When the
 * ring is full the chain waits on the worker's list of chains to return,
 * tried again every poll: never freed here, so never under the reader.
 * While the body goes on arriving, each chunk that fills tells the
 * dispatcher how much of the chain is final (MSG_BODY_FINAL), so that a
 * signed message's body is hashed before the end of DATA.
 * The chunk pool takes puts from both threads for this.
 *
 * The PTR rule. A session snapshots the rule of its peer's family when it
 * opens, so a live change applies to new sessions and never half-way
 * through one. The lookup starts at open; the SMTP reply at the rule's
 * stage waits for it if it has not come yet.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "tls/tls.h"

#include "common/chunk.h"
#include "common/clock.h"
#include "common/msg.h"
#include "common/rules.h"
#include "common/sizing.h"
#include "common/txrec.h"

#include "dataplane/session.h"
#include "dataplane/smtp.h"
#include "dataplane/stats.h"

#define VERDICT_BURST    32
/* A session's id: the lcore in the top 16 bits and that lcore's count in the
 * rest, so ids are unique across workers without a shared counter. */
#define SESS_ID_SEQ_BITS 48
#define CHUNK_BYTES      8192
#define TICK_US          100

struct sess {
	struct sess_layer *sl;
	struct tcp_conn *tcp; /* NULL once TCP is gone */
	struct smtp_session *smtp;
	uint64_t id;
	uint32_t idx, gen;
	struct smtp_peer peer;
	struct policy_rule rule;      /* the PTR rule, as of the open */
	struct policy_rule auth_rule; /* the auth rule, as of the open */
	struct txrec *spf_rec;        /* MAIL's SPF request, held while the
					  PTR verdict is pending */
	uint32_t txn;                 /* the session's MAILs so far: names the
					  transaction its SPF result is for */
	uint32_t spf_txn;             /* the transaction whose SPF request
					  went out, or 0 */
	uint8_t ptr;                  /* enum ptr_result */
	uint8_t ptr_outcome;          /* enum policy_outcome, the latest */
	bool in_use;
	bool waiting_ptr;   /* an SMTP reply waits for the PTR */
	bool spool_pending; /* the spool reads our body */
	uint8_t wait_stage;
	uint32_t wait_token, spool_token;
	struct txrec *spool_rec; /* the record the pending answer is for */
	uint32_t orphans;        /* records answered 451 at the deadline,
					  still read by the spool */
	uint64_t spool_deadline_us;
	uint32_t dl_prev, dl_next; /* the list of sessions waiting */
	char queue_id[24];         /* the last message handed on, for the log */
	char spf[12], dkim[12];    /* its checks, for the log */
	uint8_t auth_outcome;
	bool auth_checked;
	struct tls_conn *tls;           /* from STARTTLS accepted to release */
	bool tls_on;                    /* TCP bytes are TLS now */
	bool close_pending;             /* close once the records have gone */
	uint64_t tls_t0_us;             /* the 220 to STARTTLS */
	uint64_t tls_cpu_cycles;        /* spent in the handshake so far */
	struct sess *hs_next, *hs_prev; /* the handshake FIFO */
	bool hs_queued;
	bool idle_listed;              /* on the idle list */
	uint32_t idle_prev, idle_next; /* the idle list, longest idle first */
	uint64_t idle_since_us;
	bool buf_held;    /* the SMTP engine holds a session buffer */
	bool bw_queued;   /* waits for one */
	bool bw_owed;     /* ...and asked for one: an eviction is owed */
	uint32_t bw_next; /* the list of sessions waiting for a buffer */
};

struct sess_layer {
	const struct sess_params *p;
	sess_emit_fn emit;
	void *emit_arg;
	struct dp_stats *st;
	struct tcp_engine *tcp;
	struct rte_ring *req, *ver;
	struct rte_mempool *txrecs, *chunks;
	uint32_t worker_id;
	unsigned lcore;
	uint32_t max_flows;
	struct sess *sess;
	uint8_t *smtp_mem;
	size_t smtp_size;
	uint32_t *free_stack;
	uint32_t n_free;
	uint64_t next_id;
	uint64_t wall0_us, tsc0, tsc_hz, us_mult;
	uint64_t last_tick_us;
	struct smtp_params smtp_params;
	uint32_t dl_head, dl_tail; /* sessions waiting, oldest first */
	struct policy_reply reply; /* the text of the verdict being given */
	char queued[256];
	struct tls_slot *tls_slot;    /* NULL: no certificate, no STARTTLS */
	struct tls_conn_stats tls_st; /* alerts, folded into st on ticks */
	uint32_t tls_active, tls_max;
	bool tls_refuse_early;          /* refused peers get no handshake */
	struct sess *hs_head, *hs_tail; /* handshake steps waiting */
	uint32_t idle_head, idle_tail;  /* sessions between commands, longest idle first */
	uint32_t evict_reserve;         /* fewer free slots than this: evict */
	uint32_t idle_fill;             /* slots in use when idle_ms was set */
	uint32_t idle_ms;               /* the idle timeout at that fill */
	uint64_t now_us;                /* the latest input's or poll's time */
	/* Session buffers: a LIFO free list (the most recently used buffer
	 * is the one still in cache) over one block; sessions that found it
	 * empty wait in a FIFO, oldest first. */
	uint8_t *buf_mem;
	void **buf_free;
	uint32_t buf_n, buf_nfree;
	size_t buf_size;
	uint32_t bw_head, bw_tail;
	uint32_t bw_owing;   /* waiting sessions that asked for a buffer */
	uint32_t evict_owed; /* evictions owed to them, at most bw_owing */
	struct sess_holders holders;
	struct sess_hold *hold_nodes;
	/* Lent bodies whose MSG_BODY_RETURN found the ring full: one chain,
	 * sent whole once there is room. */
	struct chunk *ret_head, *ret_tail;
};

static const struct smtp_ops smtp_ops;
static const struct tcp_ops tcp_ops;

uint64_t
sess_layer_now_us(const struct sess_layer *sl, uint64_t tsc)
{
	return clock_us(tsc - sl->tsc0, sl->us_mult);
}

static uint64_t
wall_us(const struct sess_layer *sl)
{
	return sl->wall0_us + sess_layer_now_us(sl, rte_rdtsc());
}

static bool
send_msg(struct sess_layer *sl, const struct ctl_msg *m)
{
	if (rte_ring_sp_enqueue_elem(sl->req, (void *)(uintptr_t)m, sizeof(*m)) == 0)
		return true;
	sl->st->c[DP_REQ_RING_FULL]++;
	return false;
}

static void
count_ptr_outcome(struct sess *s, enum policy_outcome o)
{
	static const enum dp_counter base[2] = { DP_IPV6_PTR_PASS, DP_IPV4_PTR_PASS };

	s->ptr_outcome = (uint8_t)o;
	s->sl->st->c[base[s->peer.family == 6 ? 0 : 1] + o]++;
}

/* The PTR rule's word on this session, now that the result is known. */
static void
ptr_decide(struct sess *s, struct smtp_verdict *v)
{
	struct sess_layer *sl = s->sl;
	enum policy_outcome o;

	o = policy_ptr(&s->rule, s->ptr, s->peer.family, s->peer.addr, &sl->reply);
	count_ptr_outcome(s, o);
	memset(v, 0, sizeof(*v));
	if (o == POLICY_REJECT || o == POLICY_DEFER) {
		v->code = sl->reply.code;
		memcpy(v->enh, sl->reply.enh, sizeof(v->enh));
		v->text = sl->reply.text;
	}
}

static const uint8_t stage_of[SMTP_STAGE_COUNT] = {
	[SMTP_STAGE_CONNECT] = POLICY_AT_CONNECT,
	[SMTP_STAGE_MAIL] = POLICY_AT_MAIL,
	[SMTP_STAGE_RCPT] = POLICY_AT_RCPT,
};

static struct txrec *
txrec_get(struct sess_layer *sl)
{
	void *obj;

	if (rte_mempool_get(sl->txrecs, &obj) != 0) {
		sl->st->c[DP_TXREC_EXHAUSTED]++;
		return NULL;
	}
	return obj;
}

static void
txrec_fill(struct sess *s, struct txrec *r, const char *helo, const char *mail_from,
	   const struct chunk *rcpts, uint32_t nrcpts)
{
	r->session_id = s->id;
	r->time_us = wall_us(s->sl);
	r->family = s->peer.family;
	memcpy(r->addr, s->peer.addr, 16);
	r->port = s->peer.port;
	r->worker = (uint16_t)s->sl->worker_id;
	r->txn = s->txn;
	r->ptr = s->ptr;
	r->ptr_outcome = s->ptr_outcome;
	r->smtp = (struct txrec_smtp){ .kind = TXREC_TRANSACTION, .nrcpts = nrcpts };
	r->queue_id[0] = '\0';
	r->ptr_name[0] = '\0';
	r->spool_errno = 0;
	r->body = NULL;
	r->rcpts = NULL;
	r->reply_code = 0;
	r->spf[0] = r->dkim[0] = '\0';
	r->auth_checked = false;
	r->auth_outcome = 0;
	r->tls_version[0] = r->tls_cipher[0] = '\0';
	r->tls_bits = r->tls_alg_bits = 0;
	if (s->tls_on && s->tls) {
		struct tls_conn_info ti;

		if (tls_conn_info(s->tls, &ti)) {
			memcpy(r->tls_version, ti.version, sizeof(r->tls_version));
			memcpy(r->tls_cipher, ti.cipher, sizeof(r->tls_cipher));
			r->tls_bits = (uint16_t)ti.bits;
			r->tls_alg_bits = (uint16_t)ti.alg_bits;
		}
	}
	snprintf(r->helo, sizeof(r->helo), "%s", helo ? helo : "");
	snprintf(r->mail_from, sizeof(r->mail_from), "%s", mail_from ? mail_from : "");
	snprintf(r->rcpt, sizeof(r->rcpt), "%s",
		 rcpts && rcpts->len ? (const char *)rcpts->data : "");
}

/* SPF starts at MAIL, on the control plane, once MAIL is to be accepted;
 * its result is needed only at the end of DATA. The request and the message
 * both carry the transaction's number, so the control plane uses an early
 * result only for the MAIL it was asked for: a request that is lost (ring
 * full, no record) leaves the check to the end of DATA, never to another
 * transaction's result. */
static void
spf_send(struct sess *s)
{
	struct ctl_msg m = { .kind = MSG_SPF, .idx = s->idx, .gen = s->gen };
	uint32_t lost_from = s->sl->p->fault_spf_lost_from;

	if (!s->spf_rec)
		return;
	m.u.rec = s->spf_rec;
	s->spf_rec = NULL;
	if (lost_from && s->txn >= lost_from) { /* the test shim: as if full */
		s->sl->st->c[DP_REQ_RING_FULL]++;
		rte_mempool_put(s->sl->txrecs, m.u.rec);
		return;
	}
	if (send_msg(s->sl, &m))
		s->spf_txn = s->txn;
	else
		rte_mempool_put(s->sl->txrecs, m.u.rec); /* it runs at DATA end */
}

/* A transaction ended without a message (RSET, HELO, the session's end):
 * the control plane lets go of its SPF check if it is still this one's. A
 * full ring loses the notice, counted; the check then simply runs out. */
static void
spf_cancel(struct sess *s)
{
	struct ctl_msg m = { .kind = MSG_SPF_CANCEL, .idx = s->idx, .gen = s->gen };

	if (s->spf_txn == 0 || s->spf_txn != s->txn)
		return;
	m.txn = s->spf_txn;
	s->spf_txn = 0;
	send_msg(s->sl, &m);
}

static void
spf_drop(struct sess *s)
{
	if (s->spf_rec) {
		rte_mempool_put(s->sl->txrecs, s->spf_rec);
		s->spf_rec = NULL;
	}
}

static void
spf_prepare(struct sess *s, const struct smtp_check *chk)
{
	spf_drop(s);
	s->txn++;
	s->spf_rec = txrec_get(s->sl);
	if (s->spf_rec)
		txrec_fill(s, s->spf_rec, chk->helo, chk->mail_from, NULL, 0);
}

static void tls_resume(struct sess *s);
static void idle_update(struct sess *s, bool touched);
static void hold_update(struct sess *s, bool touched);
static void slot_release(struct sess *s);

#define DL_NONE UINT32_MAX

static void
deadline_add(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	s->spool_deadline_us = sess_layer_now_us(sl, rte_rdtsc()) +
			       (uint64_t)sl->p->delivery_timeout_s * 1000000u;
	s->dl_next = DL_NONE;
	s->dl_prev = sl->dl_tail;
	if (sl->dl_tail != DL_NONE)
		sl->sess[sl->dl_tail].dl_next = s->idx;
	else
		sl->dl_head = s->idx;
	sl->dl_tail = s->idx;
}

static void
deadline_remove(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (s->dl_prev != DL_NONE)
		sl->sess[s->dl_prev].dl_next = s->dl_next;
	else
		sl->dl_head = s->dl_next;
	if (s->dl_next != DL_NONE)
		sl->sess[s->dl_next].dl_prev = s->dl_prev;
	else
		sl->dl_tail = s->dl_prev;
	s->dl_prev = s->dl_next = DL_NONE;
}

/* The deadline passed: the sender hears 451 now; the message's chunks stay
 * with the record the spool still reads (an orphan), and so does the slot. */
static void
deadline_expire(struct sess *s)
{
	struct smtp_verdict v = {
		.code = 451,
		.enh = "4.3.0",
		.keep_message = true,
		.text = "Requested action aborted: local problem in processing, message not queued in time, try again later",
	};

	deadline_remove(s);
	s->spool_pending = false;
	s->spool_rec = NULL;
	s->orphans++;
	s->sl->st->c[DP_SPOOL_TIMEOUTS]++;
	if (s->tcp) {
		smtp_session_verdict(s->smtp, s->spool_token, &v);
		tls_resume(s);
		idle_update(s, false);
	}
}

/* A chain the engine forgot at the deadline goes back to the budget. */
static void
chain_return(struct sess_layer *sl, const struct chunk *c)
{
	while (c != NULL) {
		const struct chunk *next = c->next;

		rte_mempool_put(sl->chunks, (void *)(uintptr_t)c);
		c = next;
	}
}

/* The answer for a record answered 451 at its deadline: its chunks go back,
 * its outcome is logged (flags=late_write, with the queue id of a copy the
 * spool wrote after all), and the slot goes once nothing else holds it. */
static void
orphan_done(struct sess *s, struct txrec *r)
{
	struct sess_layer *sl = s->sl;
	struct ctl_msg m = { .kind = MSG_LOG, .idx = s->idx, .gen = s->gen };

	chain_return(sl, r->body);
	chain_return(sl, r->rcpts);
	r->body = r->rcpts = NULL;
	s->orphans--;
	r->smtp.kind = TXREC_TRANSACTION;
	r->smtp.flags |= TXREC_F_LATE_WRITE;
	r->smtp.replies[0] = 451;
	r->smtp.nreplies = 1;
	if (r->reply_code / 100 != 2)
		r->queue_id[0] = '\0';
	m.u.rec = r;
	if (!send_msg(sl, &m)) {
		rte_mempool_put(sl->txrecs, r);
		sl->st->c[DP_LOG_DROPPED]++;
	}
	if (!s->tcp && !s->spool_pending && s->orphans == 0)
		slot_release(s);
}

static void
deadline_check(struct sess_layer *sl, uint64_t now_us)
{
	while (sl->dl_head != DL_NONE && sl->sess[sl->dl_head].spool_deadline_us <= now_us)
		deadline_expire(&sl->sess[sl->dl_head]);
}

/* ------------------------------------------------------ the idle list */

/* Fewer free slots than flows / SESS_EVICT_RESERVE_SHARE (and at least
 * SESS_EVICT_RESERVE_MIN) is "nearly full": a new connection closes the
 * longest idle session. The reserve holds the new connections that arrive
 * while an evicted session's FIN exchange runs (one round trip). */
#define SESS_EVICT_RESERVE_SHARE 64
#define SESS_EVICT_RESERVE_MIN   2
/* Stale heads (a session that stopped qualifying without passing through
 * idle_update) skipped per eviction: bounds the work of one open. */
#define SESS_EVICT_TRIES         4

uint32_t
sess_idle_timeout_ms(const struct sess_params *p, uint32_t in_use)
{
	uint64_t full_ms = (uint64_t)p->idle_timeout_s * 1000u;
	uint64_t min_ms = (uint64_t)p->idle_timeout_min_s * 1000u;
	uint64_t start = (uint64_t)p->flows * p->idle_pressure_pct / 100u;
	uint64_t span, over;

	if (p->idle_pressure_pct >= 100 || min_ms >= full_ms || in_use <= start ||
	    p->flows <= start)
		return (uint32_t)full_ms;
	span = p->flows - start;
	over = in_use - start < span ? in_use - start : span;
	return (uint32_t)(full_ms - (full_ms - min_ms) * over / span);
}

/* ---------------------------------------------------- buffer holders */

/* A holder closed for a waiting session has had no input for this long at
 * least. A constant, not a key: it only has to outlast a client's pause
 * between the pieces of one command (a round trip, a slow MTA's think
 * time), and the idle timeout already bounds the rest. */
#define SESS_BUFFER_HOLD_MIN_US (10u * 1000000u)
/* Heads that stopped qualifying skipped per pick: bounds one poll's work. */
#define SESS_HOLD_TRIES         4

void
sess_hold_init(struct sess_holders *h, struct sess_hold *nodes, uint32_t n)
{
	uint32_t i;

	h->node = nodes;
	h->head = h->tail = SESS_HOLD_NONE;
	for (i = 0; i < n; i++)
		nodes[i] = (struct sess_hold){ SESS_HOLD_NONE, SESS_HOLD_NONE, 0, false };
}

void
sess_hold_remove(struct sess_holders *h, uint32_t idx)
{
	struct sess_hold *x = &h->node[idx];

	if (!x->listed)
		return;
	if (x->prev != SESS_HOLD_NONE)
		h->node[x->prev].next = x->next;
	else
		h->head = x->next;
	if (x->next != SESS_HOLD_NONE)
		h->node[x->next].prev = x->prev;
	else
		h->tail = x->prev;
	x->prev = x->next = SESS_HOLD_NONE;
	x->listed = false;
}

void
sess_hold_add(struct sess_holders *h, uint32_t idx, uint64_t now_us)
{
	struct sess_hold *x = &h->node[idx];

	if (x->listed)
		return;
	x->since_us = now_us;
	x->next = SESS_HOLD_NONE;
	x->prev = h->tail;
	if (h->tail != SESS_HOLD_NONE)
		h->node[h->tail].next = idx;
	else
		h->head = idx;
	h->tail = idx;
	x->listed = true;
}

void
sess_hold_touch(struct sess_holders *h, uint32_t idx, uint64_t now_us)
{
	sess_hold_remove(h, idx);
	sess_hold_add(h, idx, now_us);
}

uint32_t
sess_hold_pick(struct sess_holders *h, uint64_t now_us, uint64_t floor_us,
	       bool (*may_close)(void *arg, uint32_t idx), void *arg)
{
	unsigned tries;

	for (tries = 0; tries < SESS_HOLD_TRIES && h->head != SESS_HOLD_NONE; tries++) {
		uint32_t idx = h->head;

		if (now_us - h->node[idx].since_us < floor_us)
			return SESS_HOLD_NONE;
		if (may_close(arg, idx))
			return idx;
		sess_hold_remove(h, idx);
	}
	return SESS_HOLD_NONE;
}

static bool
hold_qualifies(const struct sess *s)
{
	return s->in_use && s->tcp && s->buf_held && !s->waiting_ptr && !s->spool_pending &&
	       !s->hs_queued && !s->close_pending && (!s->tls_on || tls_conn_established(s->tls)) &&
	       smtp_session_evictable(s->smtp);
}

static bool
hold_may_close(void *arg, uint32_t idx)
{
	struct sess_layer *sl = arg;

	return hold_qualifies(&sl->sess[idx]);
}

/* On the holders' list if the session may be closed for its buffer, off it
 * if not; input (touched) restarts its time. */
static void
hold_update(struct sess *s, bool touched)
{
	struct sess_layer *sl = s->sl;

	if (!hold_qualifies(s))
		sess_hold_remove(&sl->holders, s->idx);
	else if (touched)
		sess_hold_touch(&sl->holders, s->idx, sl->now_us);
	else
		sess_hold_add(&sl->holders, s->idx, sl->now_us);
}

/* Pays the evictions owed to sessions waiting for a buffer, as far as
 * holders past the floor allow: each closes with 421 4.7.0, written with
 * its own buffer, which comes back once the 421 is with TCP. */
static void
hold_evict(struct sess_layer *sl, uint64_t now_us)
{
	while (sl->evict_owed > 0) {
		uint32_t idx = sess_hold_pick(
			&sl->holders, now_us, SESS_BUFFER_HOLD_MIN_US, hold_may_close, sl);
		struct sess *s;

		if (idx == SESS_HOLD_NONE)
			return;
		s = &sl->sess[idx];
		sess_hold_remove(&sl->holders, idx);
		sl->evict_owed--;
		sl->st->c[DP_SESS_BUFFER_EVICTED]++;
		smtp_session_evict(s->smtp);
		tls_resume(s);
		idle_update(s, false);
	}
}

static bool
idle_qualifies(const struct sess *s)
{
	return s->tcp && !s->waiting_ptr && !s->spool_pending && s->orphans == 0 && !s->hs_queued &&
	       !s->close_pending && (!s->tls_on || tls_conn_established(s->tls)) &&
	       smtp_session_awaits_command(s->smtp);
}

static void
idle_unlink(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (!s->idle_listed)
		return;
	if (s->idle_prev != DL_NONE)
		sl->sess[s->idle_prev].idle_next = s->idle_next;
	else
		sl->idle_head = s->idle_next;
	if (s->idle_next != DL_NONE)
		sl->sess[s->idle_next].idle_prev = s->idle_prev;
	else
		sl->idle_tail = s->idle_prev;
	s->idle_prev = s->idle_next = DL_NONE;
	s->idle_listed = false;
}

static void
idle_push(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	s->idle_since_us = sl->now_us;
	s->idle_next = DL_NONE;
	s->idle_prev = sl->idle_tail;
	if (sl->idle_tail != DL_NONE)
		sl->sess[sl->idle_tail].idle_next = s->idx;
	else
		sl->idle_head = s->idx;
	sl->idle_tail = s->idx;
	s->idle_listed = true;
}

/* After anything that may change whether the session waits idle: on the
 * list if it does, off it if not; input (touched) restarts its idle time.
 * The list of buffer holders follows the same changes. */
static void
idle_update(struct sess *s, bool touched)
{
	hold_update(s, touched);
	if (!idle_qualifies(s)) {
		idle_unlink(s);
		return;
	}
	if (s->idle_listed && !touched)
		return;
	idle_unlink(s);
	idle_push(s);
}

/* Closes the session idle longest with 421 4.7.0, so that a new
 * connection has a slot; false when none qualifies. */
static bool
idle_evict(struct sess_layer *sl)
{
	unsigned tries;

	for (tries = 0; tries < SESS_EVICT_TRIES && sl->idle_head != DL_NONE; tries++) {
		struct sess *s = &sl->sess[sl->idle_head];

		idle_unlink(s);
		if (!idle_qualifies(s))
			continue;
		sl->st->c[DP_SESS_IDLE_EVICTED]++;
		smtp_session_evict(s->smtp);
		tls_resume(s);
		return true;
	}
	return false;
}

/* The idle timeout follows the fill: the listed sessions idle longer than
 * it allows are closed as the idle timer closes them (421 4.4.2). */
static void
idle_pressure_check(struct sess_layer *sl, uint64_t now_us)
{
	uint32_t in_use = sl->max_flows - sl->n_free;

	if (in_use != sl->idle_fill) {
		sl->idle_fill = in_use;
		sl->idle_ms = sess_idle_timeout_ms(sl->p, in_use);
	}
	if (sl->idle_ms >= sl->p->idle_timeout_s * 1000u)
		return; /* no pressure: the TCP engine's idle timer rules */
	while (sl->idle_head != DL_NONE) {
		struct sess *s = &sl->sess[sl->idle_head];

		if (now_us - s->idle_since_us < (uint64_t)sl->idle_ms * 1000u)
			break;
		idle_unlink(s);
		if (!idle_qualifies(s))
			continue;
		sl->st->c[DP_SESS_IDLE_SHORTENED]++;
		smtp_session_idle(s->smtp);
		tls_resume(s);
	}
}

/* The end of DATA: the message goes to the control plane, the reply waits. */
static int
check_data_end(struct sess *s, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct sess_layer *sl = s->sl;
	struct txrec *r = txrec_get(sl);
	struct ctl_msg m = { .kind = MSG_SPOOL, .idx = s->idx, .gen = s->gen };

	if (r) {
		txrec_fill(s, r, chk->helo, chk->mail_from, chk->rcpts, chk->nrcpts);
		r->smtp.size = chk->body_size;
		r->body = chk->body;
		r->rcpts = chk->rcpts;
		r->auth_rule = s->auth_rule;
		r->body_8bit = chk->body_type == SMTP_BODY_8BITMIME;
		r->smtputf8 = chk->smtputf8;
		m.u.rec = r;
		if (send_msg(sl, &m)) {
			s->spool_pending = true;
			s->spool_rec = r;
			s->spool_token = chk->token;
			deadline_add(s);
			return SMTP_CHECK_PENDING;
		}
		rte_mempool_put(sl->txrecs, r);
	}
	v->code = 451;
	memcpy(v->enh, "4.3.0", 6);
	v->text = "Temporary local problem, message not queued, try again later";
	return SMTP_CHECK_DONE;
}

static int
smtp_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct sess *s = ctx;
	bool mail = chk->stage == SMTP_STAGE_MAIL;

	memset(v, 0, sizeof(*v));
	if (chk->stage == SMTP_STAGE_DATA_END)
		return check_data_end(s, chk, v);
	/* the control plane holds as many SPF checks as it may: try later */
	if (mail && s->sl->p->spf_full && *s->sl->p->spf_full) {
		s->sl->st->c[DP_MAIL_SPF_BUSY]++;
		v->code = 451;
		memcpy(v->enh, "4.7.26", 7);
		v->text = "Too many SPF checks in progress, try again later";
		return SMTP_CHECK_DONE;
	}
	if (mail)
		spf_prepare(s, chk);
	if (s->rule.action == POLICY_OFF || stage_of[chk->stage] != s->rule.stage) {
		if (mail)
			spf_send(s);
		return SMTP_CHECK_DONE;
	}
	if (s->ptr == PTR_UNKNOWN) {
		s->waiting_ptr = true;
		s->wait_stage = (uint8_t)chk->stage;
		s->wait_token = chk->token;
		return SMTP_CHECK_PENDING;
	}
	ptr_decide(s, v);
	if (mail && v->code == 0)
		spf_send(s);
	else
		spf_drop(s);
	return SMTP_CHECK_DONE;
}

static uint32_t
smtp_write(void *ctx, const void *p, uint32_t n)
{
	struct sess *s = ctx;

	if (!s->tcp)
		return n;
	if (s->tls_on)
		return tls_conn_write(s->tls, p, n);
	return tcp_send(s->tcp, p, n);
}

/* TCP's FIN follows the last TLS record, never overtakes it. */
static void
close_when_sent(struct sess *s)
{
	if (!s->tcp)
		return;
	if (s->tls_on && tls_conn_unsent(s->tls) > 0) {
		s->close_pending = true;
		return;
	}
	s->close_pending = false;
	tcp_close(s->tcp);
}

static void
smtp_close(void *ctx)
{
	struct sess *s = ctx;

	idle_unlink(s);
	if (s->tls_on)
		tls_conn_shutdown(s->tls); /* close_notify */
	close_when_sent(s);
}

/* The PTR rule's refusal, when it is already known, answers STARTTLS if
 * [tls] refuse_before_handshake says so: no handshake for a peer that will
 * be refused anyway. */
static bool
refused_early(struct sess *s, struct smtp_verdict *v)
{
	struct sess_layer *sl = s->sl;
	struct policy_reply r;
	enum policy_outcome o;

	if (!sl->tls_refuse_early || s->rule.action == POLICY_OFF || s->ptr == PTR_UNKNOWN)
		return false;
	o = policy_ptr(&s->rule, s->ptr, s->peer.family, s->peer.addr, &r);
	if (o != POLICY_REJECT && o != POLICY_DEFER)
		return false;
	sl->reply = r;
	v->code = sl->reply.code;
	memcpy(v->enh, sl->reply.enh, sizeof(v->enh));
	v->text = sl->reply.text;
	return true;
}

static const struct tls_conn_ops tls_ops;

static bool
smtp_starttls(void *ctx, struct smtp_verdict *v)
{
	struct sess *s = ctx;
	struct sess_layer *sl = s->sl;
	struct tls_ctx *tc;

	if (refused_early(s, v)) {
		sl->st->c[DP_TLS_REFUSED_RULE]++;
		return false;
	}
	if (sl->tls_active >= sl->tls_max) {
		sl->st->c[DP_TLS_REFUSED_FULL]++;
		return false;
	}
	tc = sl->tls_slot ? tls_slot_current(sl->tls_slot) : NULL;
	s->tls = tc ? tls_conn_new(tc, &tls_ops, s, &sl->tls_st) : NULL;
	if (!s->tls) {
		sl->st->c[DP_TLS_REFUSED_NOMEM]++;
		return false;
	}
	sl->tls_active++;
	sl->st->c[DP_TLS_SESSIONS] = sl->tls_active;
	return true;
}

static void
smtp_tls_begin(void *ctx)
{
	struct sess *s = ctx;

	s->tls_on = true;
	s->tls_t0_us = wall_us(s->sl);
	s->tls_cpu_cycles = 0;
	s->sl->st->c[DP_TLS_STARTTLS]++;
}

/* ---------------------------------------------------------------- TLS */

static uint32_t
tls_plain(void *arg, const uint8_t *p, uint32_t n)
{
	struct sess *s = arg;

	return smtp_session_feed(s->smtp, p, n);
}

static uint32_t
tls_cipher(void *arg, const uint8_t *p, uint32_t n)
{
	struct sess *s = arg;

	return s->tcp ? tcp_send(s->tcp, p, n) : n;
}

static void
tls_handshake_done(void *arg)
{
	static const uint32_t bound_ms[] = { 1, 5, 20, 100, 500 };
	struct sess *s = arg;
	struct dp_stats *st = s->sl->st;
	struct tls_conn_info info;
	uint64_t us = wall_us(s->sl) - s->tls_t0_us;
	unsigned i;

	tls_conn_info(s->tls, &info);
	st->c[info.resumed ? DP_TLS_HANDSHAKES_RESUMED : DP_TLS_HANDSHAKES_FULL]++;
	for (i = 0; i < RTE_DIM(bound_ms) && us > bound_ms[i] * 1000u; i++)
		;
	st->c[DP_TLS_HS_LE_1MS + i]++;
}

static void
tls_failed(void *arg, enum tls_fail why)
{
	struct sess *s = arg;

	s->sl->st->c[DP_TLS_FAIL_PROTOCOL + why]++;
	close_when_sent(s);
}

static void
tls_peer_closed(void *arg)
{
	struct sess *s = arg;

	smtp_session_peer_closed(s->smtp);
}

static const struct tls_conn_ops tls_ops = {
	.plain = tls_plain,
	.cipher = tls_cipher,
	.handshake_done = tls_handshake_done,
	.failed = tls_failed,
	.peer_closed = tls_peer_closed,
};

static void
hs_enqueue(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (s->hs_queued)
		return;
	s->hs_queued = true;
	s->hs_next = NULL;
	s->hs_prev = sl->hs_tail;
	if (sl->hs_tail)
		sl->hs_tail->hs_next = s;
	else
		sl->hs_head = s;
	sl->hs_tail = s;
}

static void
hs_remove(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (!s->hs_queued)
		return;
	if (s->hs_prev)
		s->hs_prev->hs_next = s->hs_next;
	else
		sl->hs_head = s->hs_next;
	if (s->hs_next)
		s->hs_next->hs_prev = s->hs_prev;
	else
		sl->hs_tail = s->hs_prev;
	s->hs_queued = false;
	s->hs_next = s->hs_prev = NULL;
}

/* Held plaintext may go on once the SMTP engine has moved (a verdict, room
 * for output); the window may open with it. */
static void
tls_resume(struct sess *s)
{
	if (!s->tls_on || !s->tcp)
		return;
	tls_conn_pump(s->tls);
	if (s->close_pending)
		close_when_sent(s);
	if (s->tcp)
		tcp_rcv_window_update(s->tcp);
}

static void *
chunk_get(void *ctx, uint32_t *cap)
{
	struct sess *s = ctx;
	void *obj;

	if (rte_mempool_get(s->sl->chunks, &obj) != 0) {
		s->sl->st->c[DP_BODY_BUDGET_EXHAUSTED]++;
		return NULL;
	}
	*cap = CHUNK_BYTES;
	return obj;
}

static void
chunk_put(void *ctx, void *chunk)
{
	struct sess *s = ctx;

	rte_mempool_put(s->sl->chunks, chunk);
}

#define BW_NONE UINT32_MAX

static void
bw_enqueue(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (s->bw_queued)
		return;
	s->bw_queued = true;
	s->bw_next = BW_NONE;
	if (sl->bw_tail != BW_NONE)
		sl->sess[sl->bw_tail].bw_next = s->idx;
	else
		sl->bw_head = s->idx;
	sl->bw_tail = s->idx;
}

/* The session no longer waits for a buffer (woken, served, gone): what
 * is owed never exceeds the sessions still waiting. */
static void
bw_owed_clear(struct sess *s)
{
	struct sess_layer *sl = s->sl;

	if (!s->bw_owed)
		return;
	s->bw_owed = false;
	sl->bw_owing--;
	if (sl->evict_owed > sl->bw_owing)
		sl->evict_owed = sl->bw_owing;
}

static struct sess *
bw_dequeue(struct sess_layer *sl)
{
	struct sess *s;

	if (sl->bw_head == BW_NONE)
		return NULL;
	s = &sl->sess[sl->bw_head];
	sl->bw_head = s->bw_next;
	if (sl->bw_head == BW_NONE)
		sl->bw_tail = BW_NONE;
	s->bw_queued = false;
	bw_owed_clear(s);
	return s;
}

/* A session buffer for what the session has in flight; none left, the
 * session waits in line and its window closes (tcp_rcv_space). */
static void *
buf_get(void *ctx)
{
	struct sess *s = ctx;
	struct sess_layer *sl = s->sl;

	if (sl->buf_nfree == 0) {
		sl->st->c[DP_SESSION_BUFFERS_EMPTY]++;
		bw_enqueue(s);
		if (!s->bw_owed) { /* a holder may be closed for it */
			s->bw_owed = true;
			sl->bw_owing++;
			sl->evict_owed++;
		}
		return NULL;
	}
	s->buf_held = true;
	bw_owed_clear(s);
	sl->st->c[DP_SESSION_BUFFERS_HELD]++;
	return sl->buf_free[--sl->buf_nfree];
}

static void
buf_put(void *ctx, void *buf)
{
	struct sess *s = ctx;
	struct sess_layer *sl = s->sl;

	s->buf_held = false;
	sess_hold_remove(&sl->holders, s->idx);
	sl->st->c[DP_SESSION_BUFFERS_HELD]--;
	sl->buf_free[sl->buf_nfree++] = buf;
}

/* Buffers are free again: as many waiting sessions as there are free
 * buffers go on, oldest first (the greeting, held plaintext, the window
 * that closed). A woken session that finds none again queues again. */
static void
buf_wake(struct sess_layer *sl)
{
	uint32_t n = sl->buf_nfree;
	struct sess *s;

	while (n-- > 0 && (s = bw_dequeue(sl)) != NULL) {
		if (!s->in_use || !s->tcp)
			continue;
		smtp_session_writable(s->smtp);
		tls_resume(s);
		if (s->tcp)
			tcp_rcv_window_update(s->tcp);
		idle_update(s, false);
	}
}

static void
smtp_record(void *ctx, const struct smtp_record *rec)
{
	struct sess *s = ctx;
	struct sess_layer *sl = s->sl;
	struct txrec *r = txrec_get(sl);
	struct ctl_msg m = { .kind = MSG_LOG, .idx = s->idx, .gen = s->gen };

	if (rec->smtp.kind == TXREC_TRANSACTION && (rec->smtp.flags & TXREC_F_ABORTED))
		spf_cancel(s);
	if (!r) {
		sl->st->c[DP_LOG_DROPPED]++;
		return;
	}
	txrec_fill(s, r, rec->helo, rec->mail_from, rec->rcpts, rec->smtp.nrcpts);
	r->smtp = rec->smtp;
	if (r->smtp.kind == TXREC_TRANSACTION && s->queue_id[0]) {
		memcpy(r->queue_id, s->queue_id, sizeof(r->queue_id));
		s->queue_id[0] = '\0';
	}
	if (r->smtp.kind == TXREC_TRANSACTION && s->auth_checked) {
		memcpy(r->spf, s->spf, sizeof(r->spf));
		memcpy(r->dkim, s->dkim, sizeof(r->dkim));
		r->auth_outcome = s->auth_outcome;
		r->auth_checked = true;
		s->auth_checked = false;
	}
	m.u.rec = r;
	if (!send_msg(sl, &m)) {
		rte_mempool_put(sl->txrecs, r);
		sl->st->c[DP_LOG_DROPPED]++;
	}
}

/* The header block is in: the control plane fetches the DKIM keys now. A
 * full ring leaves them to the delivery, and the chain stays ours. */
static bool
smtp_headers(void *ctx, const struct chunk *body, uint32_t len)
{
	struct sess *s = ctx;
	struct ctl_msg m = {
		.kind = MSG_DKIM_HEADERS, .idx = s->idx, .gen = s->gen, .txn = s->txn
	};

	m.u.hdrs.body = (struct chunk *)(uintptr_t)body;
	m.u.hdrs.len = len;
	return send_msg(s->sl, &m);
}

/* Another chunk of a lent body filled: the bytes before it may be hashed
 * now. A full ring loses this one; the next says more. */
static void
smtp_body_final(void *ctx, uint32_t final)
{
	struct sess *s = ctx;
	struct ctl_msg m = { .kind = MSG_BODY_FINAL, .idx = s->idx, .gen = s->gen, .txn = s->txn };

	m.u.hdrs.len = final;
	send_msg(s->sl, &m);
}

/* Sends the chains waiting to go back, if the ring has room. */
static void
body_return_flush(struct sess_layer *sl, uint32_t idx, uint32_t gen, uint32_t txn)
{
	struct ctl_msg m = { .kind = MSG_BODY_RETURN, .idx = idx, .gen = gen, .txn = txn };

	if (sl->ret_head == NULL)
		return;
	m.u.hdrs.body = sl->ret_head;
	if (!send_msg(sl, &m))
		return;
	sl->ret_head = sl->ret_tail = NULL;
}

/* A lent body's transaction ended without a delivery: the chain goes to
 * the dispatcher, which frees it behind its MSG_DKIM_HEADERS. The chunks
 * of the returns still waiting are linked ahead of it (only the tails'
 * `next`, which the reader never reads, change). */
static void
smtp_body_release(void *ctx, struct chunk *body)
{
	struct sess *s = ctx;
	struct sess_layer *sl = s->sl;
	struct chunk *tail = body;

	while (tail->next != NULL)
		tail = tail->next;
	if (sl->ret_tail != NULL)
		sl->ret_tail->next = body;
	else
		sl->ret_head = body;
	sl->ret_tail = tail;
	body_return_flush(sl, s->idx, s->gen, s->txn);
}

static const struct smtp_ops smtp_ops = {
	.write = smtp_write,
	.close = smtp_close,
	.check = smtp_check,
	.chunk_get = chunk_get,
	.chunk_put = chunk_put,
	.buf_get = buf_get,
	.buf_put = buf_put,
	.record = smtp_record,
	.starttls = smtp_starttls,
	.tls_begin = smtp_tls_begin,
	.headers = smtp_headers,
	.body_release = smtp_body_release,
	.body_final = smtp_body_final,
};

static void
slot_release(struct sess *s)
{
	struct sess_layer *sl = s->sl;
	struct smtp_session_stats ss;

	smtp_session_stats(s->smtp, &ss);
	sl->st->c[DP_TLS_DISCARDED_BYTES] += ss.tls_discarded;
	smtp_session_fini(s->smtp);
	hs_remove(s);
	if (s->tls) {
		tls_conn_free(s->tls);
		s->tls = NULL;
		sl->tls_active--;
		sl->st->c[DP_TLS_SESSIONS] = sl->tls_active;
	}
	s->tls_on = s->close_pending = false;
	idle_unlink(s);
	sess_hold_remove(&sl->holders, s->idx);
	bw_owed_clear(s); /* gone: nothing is owed to it any more */
	spf_drop(s);
	s->in_use = false;
	s->gen++;
	sl->free_stack[sl->n_free++] = s->idx;
	sl->st->c[DP_SESSIONS_CLOSED]++;
}

static void *
tcp_open(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *info)
{
	struct sess_layer *sl = ctx;
	struct ctl_msg m = { .kind = MSG_RDNS, .family = info->family };
	struct policy p;
	struct sess *s;

	if (sl->n_free <= sl->evict_reserve)
		idle_evict(sl);
	if (sl->n_free == 0) {
		sl->st->c[DP_SESSIONS_REFUSED]++;
		return NULL;
	}
	s = &sl->sess[sl->free_stack[--sl->n_free]];
	s->tcp = c;
	s->in_use = true;
	s->waiting_ptr = s->spool_pending = false;
	s->spool_rec = NULL;
	s->orphans = 0;
	s->queue_id[0] = '\0';
	s->idle_listed = false;
	s->id = ((uint64_t)sl->lcore << SESS_ID_SEQ_BITS) |
		(sl->next_id++ & ((1ull << SESS_ID_SEQ_BITS) - 1));
	s->peer.family = info->family;
	memcpy(s->peer.addr, info->peer, 16);
	s->peer.port = info->peer_port;
	s->ptr = PTR_UNKNOWN;
	s->ptr_outcome = POLICY_PASS;
	sl->p->rules_get(&p);
	s->rule = p.rule[info->family == 6 ? POLICY_IPV6_PTR : POLICY_IPV4_PTR];
	s->auth_rule = p.rule[info->family == 6 ? POLICY_IPV6_AUTH : POLICY_IPV4_AUTH];
	s->auth_checked = false;
	s->spf_rec = NULL;
	s->txn = 0;
	s->spf_txn = 0;
	s->smtp = smtp_session_init(sl->smtp_mem + (size_t)s->idx * sl->smtp_size, sl->smtp_size,
				    &sl->smtp_params, &smtp_ops, s, &s->peer);
	sl->st->c[DP_SESSIONS_OPENED]++;

	/* The lookup starts before the first command, so it is usually done
	 * by MAIL. A full ring is a temporary failure: 451, never 5xx. */
	m.idx = s->idx;
	m.gen = s->gen;
	memcpy(m.u.addr, info->peer, 16);
	if (!send_msg(sl, &m))
		s->ptr = PTR_TEMPERROR;
	smtp_session_start(s->smtp);
	idle_update(s, true);
	return s;
}

/* What the SMTP engine did not take (its held input is full while a
 * verdict is awaited) is left unACKed: the peer sends it again. */
static uint32_t
tcp_recv(void *app, const uint8_t *p, uint32_t n)
{
	struct sess *s = app;
	uint32_t k;

	if (!s->tls_on) {
		k = smtp_session_feed(s->smtp, p, n);
	} else if (tls_conn_established(s->tls)) {
		k = tls_conn_input(s->tls, p, n);
	} else {
		/* Mid-handshake: kept for sess_layer_handshakes(). */
		k = tls_conn_buffer(s->tls, p, n);
		if (k > 0)
			hs_enqueue(s);
	}
	idle_update(s, true);
	return k;
}

/* One handshake step, timed: the handshake's CPU is a reported figure. */
static void
hs_step(struct sess *s)
{
	uint64_t t0 = rte_rdtsc();

	tls_conn_pump(s->tls);
	if (!s->tls)
		return; /* the step ended the session */
	s->tls_cpu_cycles += rte_rdtsc() - t0;
	if (tls_conn_established(s->tls)) {
		s->sl->st->c[DP_TLS_HS_CPU_US] += clock_us(s->tls_cpu_cycles, s->sl->us_mult);
		s->tls_cpu_cycles = 0;
	}
	tls_resume(s);
	idle_update(s, false);
}

unsigned
sess_layer_handshakes(struct sess_layer *sl, uint32_t budget_us)
{
	uint64_t t0 = rte_rdtsc(), budget = sl->tsc_hz / 1000000u * budget_us;
	unsigned n = 0;
	struct sess *s;

	while ((s = sl->hs_head) != NULL && (n == 0 || rte_rdtsc() - t0 < budget)) {
		hs_remove(s);
		if (s->in_use && s->tls && s->tcp)
			hs_step(s);
		n++;
	}
	return n;
}

static uint32_t
tcp_rcv_space(void *app)
{
	struct sess *s = app;

	if (s->tls_on)
		return tls_conn_room(s->tls);
	/* No buffer held and none free: the window closes until one is. */
	if (!s->buf_held && s->sl->buf_nfree == 0) {
		bw_enqueue(s);
		return 0;
	}
	return smtp_session_rcv_space(s->smtp);
}

static void
tcp_sent(void *app)
{
	struct sess *s = app;

	if (s->tls_on) {
		tls_conn_pump(s->tls);
		if (s->close_pending)
			close_when_sent(s);
	}
	smtp_session_writable(s->smtp);
	tls_resume(s);
	idle_update(s, false);
}

/* A FIN (CLOSE_WAIT: we may still send) ends the peer's input only; the
 * engine answers what it has and then closes. A RST comes as tcp_closed. */
static void
tcp_peer_fin(void *app)
{
	struct sess *s = app;

	smtp_session_peer_closed(s->smtp);
	idle_update(s, false);
}

static void
tcp_idle(void *app)
{
	struct sess *s = app;

	/* Mid-handshake there is no channel for a 421: the TLS state and
	 * the connection go at once. */
	if (s->tls_on && !tls_conn_established(s->tls)) {
		s->sl->st->c[DP_TLS_FAIL_TIMEOUT]++;
		tcp_abort(s->tcp);
		return;
	}
	smtp_session_idle(s->smtp);
}

static void
tcp_closed(void *app, int reason)
{
	struct sess *s = app;

	(void)reason;
	s->tcp = NULL;
	idle_unlink(s);
	sess_hold_remove(&s->sl->holders, s->idx);
	if (s->spool_pending || s->orphans) {
		s->sl->st->c[DP_SPOOL_ZOMBIES]++;
		return; /* the spool's answer releases the slot */
	}
	slot_release(s);
}

static bool
tcp_output(void *ctx, const struct tcp_out *o)
{
	struct sess_layer *sl = ctx;

	return sl->emit(sl->emit_arg, o);
}

static const struct tcp_ops tcp_ops = {
	.output = tcp_output,
	.open = tcp_open,
	.recv = tcp_recv,
	.rcv_space = tcp_rcv_space,
	.sent = tcp_sent,
	.peer_fin = tcp_peer_fin,
	.idle = tcp_idle,
	.closed = tcp_closed,
};

static struct sess *
sess_of(struct sess_layer *sl, const struct ctl_msg *m)
{
	struct sess *s;

	if (m->idx >= sl->max_flows)
		return NULL;
	s = &sl->sess[m->idx];
	if (!s->in_use || s->gen != m->gen) {
		sl->st->c[DP_VERDICTS_STALE]++;
		return NULL;
	}
	return s;
}

static void
on_rdns_done(struct sess_layer *sl, const struct ctl_msg *m)
{
	struct sess *s = sess_of(sl, m);
	struct smtp_verdict v;

	if (!s)
		return;
	s->ptr = m->result < PTR__RESULTS ? m->result : PTR_TEMPERROR;
	if (s->waiting_ptr && s->tcp) {
		s->waiting_ptr = false;
		ptr_decide(s, &v);
		if (s->wait_stage == SMTP_STAGE_MAIL && v.code == 0)
			spf_send(s);
		else
			spf_drop(s);
		smtp_session_verdict(s->smtp, s->wait_token, &v);
		tls_resume(s);
		idle_update(s, false);
	}
}

static void
on_spool_done(struct sess_layer *sl, const struct ctl_msg *m)
{
	struct sess *s = sess_of(sl, m);
	struct txrec *r = m->u.rec;
	struct smtp_verdict v = { 0 };

	if (!s) {
		rte_mempool_put(sl->txrecs, r);
		return;
	}
	if (!s->spool_pending || r != s->spool_rec) {
		orphan_done(s, r);
		return;
	}
	s->spool_pending = false;
	s->spool_rec = NULL;
	v.code = r->reply_code ? r->reply_code : 451;
	memcpy(v.enh, r->reply_enh, sizeof(v.enh));
	snprintf(sl->queued, sizeof(sl->queued), "%s", r->reply_text);
	v.text = sl->queued;
	if (v.code / 100 == 2)
		memcpy(s->queue_id, r->queue_id, sizeof(s->queue_id));
	memcpy(s->spf, r->spf, sizeof(s->spf));
	memcpy(s->dkim, r->dkim, sizeof(s->dkim));
	s->auth_outcome = r->auth_outcome;
	s->auth_checked = r->auth_checked;
	rte_mempool_put(sl->txrecs, r);
	deadline_remove(s);
	if (!s->tcp) {
		if (s->orphans == 0)
			slot_release(s); /* the zombie: its TCP went while we wrote */
		return;
	}
	smtp_session_verdict(s->smtp, s->spool_token, &v);
	tls_resume(s);
	idle_update(s, false);
}

unsigned
sess_layer_poll(struct sess_layer *sl, uint64_t now_us)
{
	struct ctl_msg msgs[VERDICT_BURST];
	unsigned n, i;

	sl->now_us = now_us;
	n = rte_ring_sc_dequeue_burst_elem(sl->ver, msgs, sizeof(msgs[0]), VERDICT_BURST, NULL);
	for (i = 0; i < n; i++) {
		if (msgs[i].kind == MSG_RDNS_DONE)
			on_rdns_done(sl, &msgs[i]);
		else if (msgs[i].kind == MSG_SPOOL_DONE)
			on_spool_done(sl, &msgs[i]);
	}
	if (sl->evict_owed > 0)
		hold_evict(sl, now_us);
	if (sl->bw_head != BW_NONE && sl->buf_nfree > 0)
		buf_wake(sl);
	if (sl->ret_head != NULL) /* no session's fetch left to cancel */
		body_return_flush(sl, UINT32_MAX, 0, 0);
	if (now_us - sl->last_tick_us >= TICK_US) {
		sl->last_tick_us = now_us;
		tcp_engine_tick(sl->tcp, now_us);
		deadline_check(sl, now_us);
		idle_pressure_check(sl, now_us);
		sl->st->c[DP_TLS_ALERTS_SENT] = sl->tls_st.alerts_sent;
		sl->st->c[DP_TLS_ALERTS_RECEIVED] = sl->tls_st.alerts_received;
	}
	/* Handshake steps waiting count as work: the loop must not idle. */
	return n + (sl->hs_head != NULL);
}

void
sess_layer_input(struct sess_layer *sl, const struct tcp_pkt *pkt, uint64_t now_us)
{
	sl->now_us = now_us;
	tcp_input(sl->tcp, pkt, now_us);
}

size_t
sess_layer_slot_bytes(void)
{
	return sizeof(struct sess) + smtp_session_size() + tcp_conn_size() + sizeof(uint32_t) +
	       sizeof(struct sess_hold);
}

size_t
sess_layer_buffer_bytes(void)
{
	return RTE_ALIGN_CEIL(smtp_buf_size(), RTE_CACHE_LINE_SIZE) + sizeof(void *);
}

void
sess_layer_buffers(const struct sess_layer *sl, uint32_t *free_n, uint32_t *total)
{
	*free_n = sl->buf_nfree;
	*total = sl->buf_n;
}

const struct tcp_engine *
sess_layer_tcp(const struct sess_layer *sl)
{
	return sl->tcp;
}

uint32_t
sess_layer_active(const struct sess_layer *sl)
{
	return sl->max_flows - sl->n_free;
}

void
sess_layer_chunks(const struct sess_layer *sl, uint32_t *free_n, uint32_t *total)
{
	*free_n = rte_mempool_avail_count(sl->chunks);
	*total = sl->chunks->size;
}

/* The TCP engine's settings that the configuration does not give. */
#define SESS_TCP4_HDRS            40    /* IPv4 and TCP headers, no options: MTU - MSS */
#define SESS_TCP6_HDRS            60    /* IPv6 and TCP headers, no options */
#define SESS_TCP_SNDBUF_BYTES     16384 /* unacked replies: SMTP's are small, even pipelined */
#define SESS_TCP_SNDBUF_AVG_BYTES SIZING_SNDBUF_SHARE /* the send pool per session buffer */
#define SESS_TCP_OOO_MAX_BYTES    65536       /* a connection's out-of-order data: one window */
#define SESS_TCP_OOO_POOL_BYTES   (16u << 20) /* all connections' out-of-order data */
#define SESS_TCP_HANDSHAKE_MS     10000       /* SYN-ACK to ACK, SYN-ACK resends included */
#define SESS_TCP_RTO_MIN_MS       200         /* Linux's; RFC 6298 §2.4's 1 s is long for SMTP */
#define SESS_TCP_RTO_MAX_MS       60000       /* RFC 6298 §2.5: at least 60 s */
#define SESS_TCP_MAX_RETRIES      8           /* resends before the connection is aborted */
#define SESS_TCP_HALFOPEN_SHARE   4           /* half-open connections: a quarter of the flows */
#define SESS_TCP_HALFOPEN_MIN     16          /* and a few more, so that tiny configs accept */
#define SESS_TCP_RST_RATE_PER_S   1000 /* RSTs and ACKs to strays: bounds what a flood reflects */

/* Sessions with bytes in flight at once: the session buffers, and as
 * much of the TCP send pool (idle sessions hold neither). */
static uint32_t
sess_buffers(const struct sess_params *c)
{
	return c->session_buffers ? c->session_buffers : c->flows;
}

static struct tcp_engine *
make_tcp(struct sess_layer *sl, const struct sess_layer_params *p)
{
	const struct sess_params *c = p->sess;
	struct tcp_params tp = {
		.max_flows = c->flows,
		.ports = c->smtp_ports,
		.n_ports = c->n_smtp_ports,
		.mss4 = (uint16_t)(c->mtu - SESS_TCP4_HDRS),
		.mss6 = (uint16_t)(c->mtu - SESS_TCP6_HDRS),
		.sndbuf_bytes = SESS_TCP_SNDBUF_BYTES,
		.sndbuf_pool_bytes = sess_buffers(c) * SESS_TCP_SNDBUF_AVG_BYTES,
		.ooo_max_bytes = SESS_TCP_OOO_MAX_BYTES,
		.ooo_pool_bytes = SESS_TCP_OOO_POOL_BYTES,
		.handshake_timeout_ms = SESS_TCP_HANDSHAKE_MS,
		.idle_timeout_ms = c->idle_timeout_s * 1000u,
		.lifetime_ms = c->lifetime_s * 1000u,
		.rto_min_ms = SESS_TCP_RTO_MIN_MS,
		.rto_max_ms = SESS_TCP_RTO_MAX_MS,
		.max_retries = SESS_TCP_MAX_RETRIES,
		.halfopen_max = c->flows / SESS_TCP_HALFOPEN_SHARE + SESS_TCP_HALFOPEN_MIN,
		.rst_rate_per_s = SESS_TCP_RST_RATE_PER_S,
		.secret_seed = p->secret_seed,
	};

	/* The SYN-ACK offers what a new SMTP session surely takes: its
	 * held-input bound, which is what feed() keeps while a verdict is
	 * awaited. Later windows come from smtp_session_rcv_space(). */
	tp.synack_window = sl->smtp_params.max_pending_in &&
					   sl->smtp_params.max_pending_in < SMTP_PENDING_CAP ?
				   sl->smtp_params.max_pending_in :
				   SMTP_PENDING_CAP;
	return tcp_engine_create(&tp, &tcp_ops, sl, 0);
}

struct sess_layer *
sess_layer_create(const struct sess_layer_params *p)
{
	const struct sess_params *c = p->sess;
	struct sess_layer *sl;
	char name[RTE_MEMPOOL_NAMESIZE];
	uint32_t i, n_chunks;

	sl = rte_zmalloc("sess_layer", sizeof(*sl), RTE_CACHE_LINE_SIZE);
	if (!sl)
		goto nomem;
	sl->p = c;
	sl->emit = p->emit;
	sl->emit_arg = p->emit_arg;
	sl->st = &dp_stats[p->lcore];
	sl->req = p->req;
	sl->ver = p->ver;
	sl->txrecs = p->txrecs;
	sl->worker_id = p->worker_id;
	sl->lcore = p->lcore;
	sl->max_flows = c->flows;
	sl->wall0_us = p->wall0_us;
	sl->tsc0 = p->tsc0;
	sl->tsc_hz = p->tsc_hz;
	sl->us_mult = clock_mult(p->tsc_hz);
	sl->smtp_params = c->smtp;
	sl->smtp_params.tls_offer = p->tls_slot != NULL;
	sl->tls_slot = p->tls_slot;
	sl->tls_max = c->tls_max_sessions;
	sl->tls_refuse_early = c->tls_refuse_early;
	sl->smtp_size = RTE_ALIGN_CEIL(smtp_session_size(), RTE_CACHE_LINE_SIZE);
	sl->sess = rte_zmalloc("sessions", sizeof(*sl->sess) * c->flows, RTE_CACHE_LINE_SIZE);
	sl->smtp_mem = rte_malloc("smtp_sessions", sl->smtp_size * c->flows, RTE_CACHE_LINE_SIZE);
	sl->free_stack = rte_malloc("sess_free", sizeof(uint32_t) * c->flows, 0);
	if (!sl->sess || !sl->smtp_mem || !sl->free_stack)
		goto nomem;
	for (i = 0; i < c->flows; i++) {
		sl->sess[i].sl = sl;
		sl->sess[i].idx = i;
		sl->sess[i].idle_prev = sl->sess[i].idle_next = DL_NONE;
		sl->free_stack[i] = c->flows - 1 - i;
	}
	sl->n_free = c->flows;
	sl->dl_head = sl->dl_tail = DL_NONE;
	sl->idle_head = sl->idle_tail = DL_NONE;
	sl->evict_reserve = c->flows / SESS_EVICT_RESERVE_SHARE;
	if (sl->evict_reserve < SESS_EVICT_RESERVE_MIN)
		sl->evict_reserve = SESS_EVICT_RESERVE_MIN;
	sl->idle_fill = UINT32_MAX; /* the first tick sets idle_ms */
	sl->bw_head = sl->bw_tail = BW_NONE;

	sl->buf_n = sess_buffers(c);
	sl->buf_size = RTE_ALIGN_CEIL(smtp_buf_size(), RTE_CACHE_LINE_SIZE);
	sl->buf_mem = rte_malloc("sess_buffers", sl->buf_size * sl->buf_n, RTE_CACHE_LINE_SIZE);
	sl->buf_free = rte_malloc("sess_buf_free", sizeof(void *) * sl->buf_n, 0);
	sl->hold_nodes = rte_malloc("sess_holders", sizeof(*sl->hold_nodes) * c->flows, 0);
	if (!sl->buf_mem || !sl->buf_free || !sl->hold_nodes)
		goto nomem;
	sess_hold_init(&sl->holders, sl->hold_nodes, c->flows);
	for (i = 0; i < sl->buf_n; i++)
		sl->buf_free[i] = sl->buf_mem + (size_t)(sl->buf_n - 1 - i) * sl->buf_size;
	sl->buf_nfree = sl->buf_n;

	/* The body budget: chunks, so a message is kept as it arrives and the
	 * 452 comes when the budget, not the machine, runs out. */
	n_chunks = (uint32_t)(((uint64_t)c->body_budget_mb << 20) / CHUNK_BYTES);
	snprintf(name, sizeof(name), "body_%u", p->worker_id);
	sl->chunks = rte_mempool_create(
		name, n_chunks, CHUNK_BYTES, 0, 0, NULL, NULL, NULL, NULL, (int)rte_socket_id(),
		RTE_MEMPOOL_F_SC_GET); /* puts: the dispatcher frees returned bodies */
	if (!sl->chunks)
		goto nomem;
	sl->tcp = make_tcp(sl, p);
	if (!sl->tcp)
		goto nomem;
	return sl;
nomem:
	sess_layer_destroy(sl);
	rte_errno = ENOMEM;
	return NULL;
}

void
sess_layer_destroy(struct sess_layer *sl)
{
	uint32_t i;

	if (!sl)
		return;
	tcp_engine_destroy(sl->tcp);
	if (sl->sess && sl->smtp_mem)
		for (i = 0; i < sl->max_flows; i++)
			if (sl->sess[i].in_use) {
				smtp_session_fini(sl->sess[i].smtp);
				tls_conn_free(sl->sess[i].tls);
			}
	rte_mempool_free(sl->chunks);
	rte_free(sl->hold_nodes);
	rte_free(sl->buf_free);
	rte_free(sl->buf_mem);
	rte_free(sl->free_stack);
	rte_free(sl->smtp_mem);
	rte_free(sl->sess);
	rte_free(sl);
}
