/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/tcp.c — smtpedge's compact server-side TCP engine.
 *
 * Why it exists: the workers terminate TCP for the SMTP ports themselves, at
 * very high connection rates, against real Linux clients, lossy links and
 * hostile packets, without a kernel stack. It is pure C over byte buffers
 * (segment + time in; segments and events out) so it is unit-tested and
 * fuzzed alone; the worker's tcp_ops.output copies each struct tcp_out into
 * an mbuf.
 *
 * Design choices:
 *
 * - Memory: everything is sized from tcp_params and allocated in create.
 *   TCBs are fixed-size (<= 256 bytes, asserted) on a free list. The flow
 *   table is our own chained hash over the TCB array, keyed with a secret so
 *   that peers cannot aim collisions: rte_hash would need EAL memory and this
 *   engine must run without EAL. Send buffers and out-of-order data live in
 *   2 KiB chunks from two engine-wide pools; a connection holds chunks only
 *   while it has data queued. The out-of-order bound is counted in chunks
 *   (memory held), not payload bytes.
 *
 * - SYN floods: a small half-open table (params.halfopen_max TCBs in
 *   SYN_RCVD) while it has room, SYN cookies beyond it or when no TCB is
 *   free. SMTP is server-speaks-first, so a lost final ACK on a cookie
 *   connection would leave the client waiting for a greeting forever; the
 *   half-open table retransmits its SYN-ACK, which makes the client resend
 *   the ACK, so under normal load a lost ACK recovers. Under a flood
 *   (cookies) that case is not recoverable, as on every cookie stack, until
 *   the client sends something (an ACK with data validates the cookie too).
 *   A connection established from a cookie calls open() at once, so the
 *   greeting leaves with the first segment. A half-open ISN is made by the
 *   same function with one bit flipped, so it is unpredictable but never a
 *   valid cookie: an ACK arriving after its half-open TCB timed out gets a
 *   RST instead of a connection with options we did not record.
 *   Cookie = 29-bit SipHash-2-4 (our own code) of the 4-tuple, the peer ISN,
 *   the time slot and the MSS index | 3-bit MSS index. Slots last 64 s; the
 *   key rotates every slot (new key = SipHash of the seed keyed by the old
 *   key, the time and traffic counters) and the previous key is kept; the
 *   slot is not in the cookie, so an ACK is checked against both keys and a
 *   cookie is good for 64..128 s. A blind guess succeeds with chance 2^-28.
 *   Window scale and SACK-permitted ride in the low 5 bits of our TSval when
 *   the peer uses timestamps; without timestamps a cookie SYN-ACK offers
 *   only MSS (as Linux does), so nothing is lost that the peer believes was
 *   agreed.
 *   A cookie ACK is honoured only while the edge is sending cookies: the
 *   latest cookie SYN-ACK left within COOKIE_ACTIVE_MS (8 s: a slow RTT and
 *   a client's SYN retransmissions, each of which refreshes it). At other
 *   times an ACK without a TCB is a stray (RST, cookies_inactive), so a
 *   forger cannot grind at the hash while the edge is not under a flood.
 *   Nothing but the handshake is taken from a cookie ACK: a source address
 *   is not trusted until the connection is established, so the payload and
 *   FIN of that segment are left unACKed (cookie_data_dropped) and the peer
 *   sends them again after the greeting, on an established connection.
 *   SMTP clients wait for the greeting, so a real third ACK carries none.
 *
 * - No TIME_WAIT: the server may close first (after 221). FIN_WAIT_1 ->
 *   FIN_WAIT_2 (bounded by fin_wait2_ms) -> on the peer's FIN we ACK it and
 *   free the TCB at once. A late retransmitted FIN finds no TCB and is
 *   answered statelessly with an ACK; any other late segment gets a RST.
 *   Both are rate-limited by the RST token bucket.
 *
 * - Timers: per-class FIFO lists where the timeout is the same for every
 *   member, so the list is sorted by deadline for free (handshake, idle,
 *   FIN_WAIT_2, lifetime): moving to the tail on activity is O(1) and the
 *   tick looks only at expired heads. Variable timers (RTO with backoff,
 *   zero-window persist) go on a hashed wheel of 4096 x 1 ms slots, one
 *   entry per TCB;
 *   entries further than 4 s away stay in their slot until due. A tick costs
 *   O(expired timers + slots passed), never O(flows). rte_timer would cost
 *   120 bytes per timer and needs EAL. A connection that found the send
 *   pool empty waits on a list and gets sent() on a tick once chunks are
 *   free again, so a shortage never wedges a session.
 *
 * - Sending: RFC 6298 RTO (SRTT/RTTVAR from one timed segment at a time,
 *   Karn, exponential backoff, rto_min/max), retry cap aborts. Congestion
 *   control is minimal: initial window 10 MSS (RFC 6928), slow start and
 *   congestion avoidance, on RTO cwnd = 1 MSS and go-back-N from snd_una, on
 *   three duplicate ACKs one fast retransmit and cwnd = ssthresh = flight/2
 *   (Reno without window inflation). SACK blocks from the peer are parsed
 *   away and ignored. Zero windows are probed (persist) with an ACK at
 *   snd_una - 1 and RTO backoff. The MSS counts no TCP options (RFC 6691):
 *   each segment's payload is the MSS less the options it carries
 *   (timestamps, SACK blocks), so the IP packet fits the MTU.
 *
 * - SACK as a receiver: when the peer offers SACK-permitted we accept it and
 *   our ACKs carry SACK blocks built from the out-of-order list (the block
 *   with the latest segment first). Offering SACK without sending blocks
 *   would be worse than not offering it: Linux then waits for its RTO
 *   instead of fast-retransmitting. Out-of-order data is never discarded
 *   while the connection lives, so we never renege.
 *
 * - Receiving: every data segment is ACKed at once (no delayed ACK), but
 *   the ACK is sent when the engine unwinds, so data the app writes during
 *   recv() leaves with it. Idle time is reset by segments that carry data
 *   or FIN, not by pure ACKs.
 *   The ACK and the window: recv() returns how many bytes the app took, and
 *   rcv_nxt (so the ACK) moves over those and no further. The rest of an
 *   in-order segment is dropped and the peer sends it again; an
 *   out-of-order chunk the app took part of stays held and the next drain
 *   starts inside it. So no byte is ever ACKed that the app did not take.
 *   The window says what the app can take: the SYN-ACK offers
 *   params.synack_window (at most what recv() takes at once), later windows
 *   are rcv_space() scaled by 2^7 and rounded down. The right edge never
 *   moves left (RFC 9293): when the space shrinks the window keeps the old
 *   edge, rounded up to the scale; bytes the peer sends up to it and the
 *   app cannot take are simply not ACKed.
 *
 * - Injection (RFC 5961): RST must hit rcv_nxt exactly, an in-window RST
 *   or any SYN on a synchronized connection gets a challenge ACK; ACKs
 *   beyond snd_max or older than the send window are dropped; PAWS when
 *   timestamps were negotiated. Challenge ACKs and the ACKs that answer
 *   out-of-window or PAWS-failed segments share a budget of 10 per second
 *   per connection: a per-connection limit leaks nothing about other
 *   connections (unlike the global one of CVE-2016-5696) and stops ACK
 *   reflection by a forger who knows the 4-tuple.
 *
 * - Lifetime of a TCB: a callback may call any tcp_* function, including
 *   tcp_abort. A TCB is marked dead (unhashed, timers stopped, closed()
 *   called) and returned to the free list only when the last engine frame
 *   that touches it unwinds (busy count), and output the app asked for inside
 *   callbacks is flushed at that same point.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/tcp.h"
#include "dataplane/tcp_wire.h"

#define NIL               UINT32_MAX
#define TCP_CHUNK         2048u  /* pool chunk; an MSS never exceeds it */
#define TCP_RCV_WSCALE    7      /* our window shift (max window 8 MiB) */
#define TCP_SYNACK_WIN    14600u /* SYN-ACK window when params give none */
#define TCP_DEFAULT_SPACE 65536u /* rcv_space when the app gives none */
#define TCP_INIT_RTO_MS   1000u  /* RFC 6298 2.1 */
#define TCP_CHAL_PER_S    10u    /* challenge ACKs per connection per second */
#define WHEEL_BITS        12
#define WHEEL_SLOTS       (1u << WHEEL_BITS)
#define WHEEL_NONE        UINT32_MAX
#define WHEEL_EXPIRED     (UINT32_MAX - 1)
#define COOKIE_SLOT_MS    64000u
#define COOKIE_ACTIVE_MS  8000u /* cookie ACKs honoured this long after a cookie SYN-ACK */
#define COOKIE_HASH_BITS  29

#define SEQ_LT(a, b)      ((int32_t)((uint32_t)(a) - (uint32_t)(b)) < 0)
#define SEQ_LEQ(a, b)     ((int32_t)((uint32_t)(a) - (uint32_t)(b)) <= 0)
#define SEQ_GT(a, b)      SEQ_LT(b, a)
#define SEQ_GEQ(a, b)     SEQ_LEQ(b, a)
#define TIME_DUE(at, now) ((int32_t)((uint32_t)(now) - (uint32_t)(at)) >= 0)

enum tcp_state {
	ST_CLOSED,
	ST_SYN_RCVD,
	ST_ESTABLISHED,
	ST_FIN_WAIT_1,
	ST_FIN_WAIT_2,
	ST_CLOSING,
	ST_CLOSE_WAIT,
	ST_LAST_ACK,
	ST_COUNT
};

/* Timer classes: FIFO lists with one timeout each (see header comment). */
enum { L_NONE, L_HANDSHAKE, L_IDLE, L_FIN_WAIT2, L_CLASSES, L_LIFETIME = L_CLASSES, L_COUNT };
enum { LK_CLASS, LK_LIFE, LK_WHEEL, LK_SPACE, LK_COUNT };

/* The state machine in one table: what each event leads to, which timer
 * class watches the state, and whether payload is still taken. */
static const struct tcp_state_row {
	const char *name;
	uint8_t timer;        /* class list */
	uint8_t on_close;     /* the app called tcp_close */
	uint8_t on_fin_in;    /* the peer's FIN arrived in order */
	uint8_t on_fin_acked; /* our FIN was acknowledged */
	uint8_t rx_data;      /* payload is delivered upward */
	uint8_t can_send;     /* tcp_send accepted */
} tcp_states[ST_COUNT] = {
	[ST_CLOSED] = { "CLOSED", L_NONE, ST_CLOSED, ST_CLOSED, ST_CLOSED, 0, 0 },
	[ST_SYN_RCVD] = { "SYN_RCVD", L_HANDSHAKE, ST_SYN_RCVD, ST_SYN_RCVD, ST_SYN_RCVD, 0, 0 },
	[ST_ESTABLISHED] = { "ESTABLISHED", L_IDLE, ST_FIN_WAIT_1, ST_CLOSE_WAIT, ST_ESTABLISHED, 1,
			     1 },
	[ST_FIN_WAIT_1] = { "FIN_WAIT_1", L_IDLE, ST_FIN_WAIT_1, ST_CLOSING, ST_FIN_WAIT_2, 1, 0 },
	[ST_FIN_WAIT_2] = { "FIN_WAIT_2", L_FIN_WAIT2, ST_FIN_WAIT_2, ST_CLOSED, ST_FIN_WAIT_2, 1,
			    0 },
	[ST_CLOSING] = { "CLOSING", L_IDLE, ST_CLOSING, ST_CLOSING, ST_CLOSED, 0, 0 },
	[ST_CLOSE_WAIT] = { "CLOSE_WAIT", L_IDLE, ST_LAST_ACK, ST_CLOSE_WAIT, ST_CLOSE_WAIT, 0, 1 },
	[ST_LAST_ACK] = { "LAST_ACK", L_IDLE, ST_LAST_ACK, ST_LAST_ACK, ST_CLOSED, 0, 0 },
};

/* conn flags */
#define F_TS         0x0001 /* timestamps negotiated */
#define F_SACK       0x0002 /* SACK-permitted (parsed, blocks ignored) */
#define F_WS         0x0004 /* window scaling negotiated */
#define F_CLOSE      0x0008 /* app asked for FIN */
#define F_FIN_SENT   0x0010
#define F_ACK_NOW    0x0020 /* an ACK is owed */
#define F_OUTPUT     0x0040 /* output pending (app wrote) */
#define F_DEAD       0x0080 /* terminated; free when not busy */
#define F_PERSIST    0x0100 /* wheel timer is a zero-window probe */
#define F_WANT_SPACE 0x0200 /* on the send-space waiters list */
#define F_COOKIE     0x0400
#define F_RTT        0x0800 /* a segment is being timed */
#define F_RTO        0x1000 /* wheel timer is the retransmission timer */
#define F_FIN_ACKED  0x2000

struct tcp_link {
	uint32_t prev, next;
};
struct tcp_list {
	uint32_t head, tail;
};

struct tcp_conn {
	struct tcp_engine *eng;
	void *app;
	uint8_t peer[16], local[16];
	uint16_t pport, lport;
	uint8_t family, state, snd_ws, rcv_ws;
	uint16_t flags, mss;
	uint8_t list_id, retries, dupacks, busy;
	uint32_t hnext;
	uint32_t wslot;
	struct tcp_link lk[LK_COUNT];
	uint32_t rto_at, created_ms, list_ms;
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2;
	uint32_t cwnd, ssthresh;
	uint32_t irs, rcv_nxt, rcv_adv;
	uint32_t ts_recent;
	uint32_t srtt_ms, rttvar_ms, rto_ms;
	uint32_t rtt_seq, rtt_ms;
	uint32_t sb_head, sb_tail, sb_off, sb_len;
	uint32_t ooo_head, ooo_chunks;
	uint32_t sack_last; /* seq of the latest out-of-order segment kept */
	uint32_t chal_ms;
	uint8_t chal_cnt;
	uint64_t link; /* the link of the peer's latest segment */
};
_Static_assert(sizeof(struct tcp_conn) <= 256, "TCB must stay within 256 bytes");

struct tcp_pool { /* chunks of TCP_CHUNK bytes */
	uint8_t *data;
	uint32_t *next;
	uint32_t *seq; /* out-of-order pool only */
	uint16_t *len;
	uint32_t n, n_free, free_head;
};

struct tcp_engine {
	struct tcp_params p;
	struct tcp_ops ops;
	void *ctx;
	uint16_t ports[64];
	uint64_t start_us, now_us;
	uint32_t now_ms;
	struct tcp_conn *tcbs;
	uint32_t free_head, n_active, n_halfopen;
	uint32_t *buckets;
	uint32_t bucket_mask;
	uint64_t hkey;
	struct tcp_pool snd, ooo;
	uint32_t ooo_max_chunks;
	struct tcp_list lists[L_COUNT];
	struct tcp_list *wheel;
	struct tcp_list expired;
	struct tcp_list space_wait; /* conns refused by an empty send pool */
	uint32_t wheel_ms;
	uint64_t master[2], ck_cur[2], ck_prev[2];
	uint64_t ck_slot;
	uint64_t ck_sent_us; /* when the latest cookie SYN-ACK left */
	bool ck_sent;        /* one has left since create */
	uint64_t rst_tokens, rst_last_us;
	uint8_t hdr[64];
	struct tcp_counters cnt;
};

/* A parsed segment. */
struct tcp_seg {
	const struct tcp_pkt *pkt;
	uint16_t sport, dport, win;
	uint8_t flags, ws; /* ws 0xff: absent */
	uint32_t seq, ack;
	const uint8_t *data;
	uint32_t len;
	uint16_t mss; /* 0: absent */
	bool sack_ok, has_ts;
	uint32_t tsval, tsecr;
};

const char *const tcp_counter_names[] = {
#define TCP_X_NAME(n) #n,
	TCP_COUNTERS(TCP_X_NAME)
#undef TCP_X_NAME
};
const uint32_t tcp_counter_count = sizeof(tcp_counter_names) / sizeof(tcp_counter_names[0]);
_Static_assert(sizeof(tcp_counter_names) / sizeof(tcp_counter_names[0]) * sizeof(uint64_t) ==
		       sizeof(struct tcp_counters),
	       "counter names match fields");

const char *const tcp_disposition_names[] = {
#define TCP_X_DNAME(n) #n,
	TCP_DISPOSITIONS(TCP_X_DNAME)
#undef TCP_X_DNAME
};

/* Cookie MSS values: common MTUs for v4 and v6 paths. */
static const uint16_t cookie_mss[8] = { 256, 536, 1200, 1220, 1380, 1400, 1440, 1460 };

static void conn_output(struct tcp_conn *c);

/* ---------------------------------------------------------------- util */

/* Network-order fields, each one load or store (and a byte swap on a
 * little-endian host). */
static inline uint16_t
rd16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap16(v);
#endif
	return v;
}
static inline uint32_t
rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}
static inline void
wr16(uint8_t *p, uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap16(v);
#endif
	memcpy(p, &v, 2);
}
static inline void
wr32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	memcpy(p, &v, 4);
}
static inline uint32_t
min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}
static inline uint32_t
max32(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}
static inline uint32_t
conn_idx(const struct tcp_conn *c)
{
	return (uint32_t)(c - c->eng->tcbs);
}

/* SipHash-2-4, written from the paper's description. */
static inline uint64_t
rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}
#define SIPROUND                     \
	do {                         \
		v0 += v1;            \
		v1 = rotl64(v1, 13); \
		v1 ^= v0;            \
		v0 = rotl64(v0, 32); \
		v2 += v3;            \
		v3 = rotl64(v3, 16); \
		v3 ^= v2;            \
		v0 += v3;            \
		v3 = rotl64(v3, 21); \
		v3 ^= v0;            \
		v2 += v1;            \
		v1 = rotl64(v1, 17); \
		v1 ^= v2;            \
		v2 = rotl64(v2, 32); \
	} while (0)

static uint64_t
siphash24(const uint64_t k[2], const uint8_t *in, size_t n)
{
	uint64_t v0 = k[0] ^ 0x736f6d6570736575ULL, v1 = k[1] ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k[0] ^ 0x6c7967656e657261ULL, v3 = k[1] ^ 0x7465646279746573ULL;
	uint64_t b = (uint64_t)n << 56, m;
	size_t i, full = n & ~(size_t)7;

	for (i = 0; i < full; i += 8) {
		/* The little-endian word SipHash reads, in one load. */
		memcpy(&m, in + i, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		m = __builtin_bswap64(m);
#endif
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; j < (n & 7); j++)
		b |= (uint64_t)in[full + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* -------------------------------------------------------------- clock */

static void
clock_set(struct tcp_engine *e, uint64_t now_us)
{
	if (now_us > e->now_us) /* time never runs backwards here */
		e->now_us = now_us;
	e->now_ms = (uint32_t)((e->now_us - e->start_us) / 1000);
}

static uint64_t
now_slot(const struct tcp_engine *e)
{
	return (e->now_us - e->start_us) / 1000 / COOKIE_SLOT_MS;
}

static void
key_derive(struct tcp_engine *e, uint64_t out[2], uint64_t salt)
{
	uint8_t buf[40];
	uint64_t w[5] = { e->ck_cur[0], e->ck_cur[1], e->now_us, salt,
			  e->cnt.cookies_sent ^ e->cnt.opened ^ e->cnt.drop_malformed };

	memcpy(buf, w, sizeof(buf));
	out[0] = siphash24(e->master, buf, sizeof(buf));
	buf[0] ^= 0x5a;
	out[1] = siphash24(e->master, buf, sizeof(buf));
}

/* Rotate the cookie key when the slot changes; only the previous slot's key
 * survives, so cookies expire after at most two slots. */
static void
cookie_rotate(struct tcp_engine *e)
{
	uint64_t slot = now_slot(e), fresh[2];

	if (slot == e->ck_slot)
		return;
	key_derive(e, fresh, slot);
	if (slot == e->ck_slot + 1) {
		memcpy(e->ck_prev, e->ck_cur, sizeof(e->ck_prev));
	} else {
		key_derive(e, e->ck_prev, slot ^ 0xfeedULL);
	}
	memcpy(e->ck_cur, fresh, sizeof(e->ck_cur));
	e->ck_slot = slot;
}

/* ------------------------------------------------------------- lists */

static struct tcp_link *
lnk(struct tcp_engine *e, uint32_t i, int which)
{
	return &e->tcbs[i].lk[which];
}

static void
list_push(struct tcp_engine *e, struct tcp_list *l, int which, uint32_t i)
{
	struct tcp_link *k = lnk(e, i, which);

	k->next = NIL;
	k->prev = l->tail;
	if (l->tail != NIL)
		lnk(e, l->tail, which)->next = i;
	else
		l->head = i;
	l->tail = i;
}

static void
list_unlink(struct tcp_engine *e, struct tcp_list *l, int which, uint32_t i)
{
	struct tcp_link *k = lnk(e, i, which);

	if (k->prev != NIL)
		lnk(e, k->prev, which)->next = k->next;
	else
		l->head = k->next;
	if (k->next != NIL)
		lnk(e, k->next, which)->prev = k->prev;
	else
		l->tail = k->prev;
	k->prev = k->next = NIL;
}

static void
class_set(struct tcp_conn *c, uint8_t list)
{
	struct tcp_engine *e = c->eng;

	if (c->list_id != L_NONE)
		list_unlink(e, &e->lists[c->list_id], LK_CLASS, conn_idx(c));
	c->list_id = list;
	c->list_ms = e->now_ms;
	if (list != L_NONE)
		list_push(e, &e->lists[list], LK_CLASS, conn_idx(c));
}

/* Activity: the idle class restarts its clock (move to the tail). */
static void
conn_touch(struct tcp_conn *c)
{
	if (c->list_id == L_IDLE)
		class_set(c, L_IDLE);
}

static struct tcp_list *
wheel_list(struct tcp_engine *e, uint32_t slot)
{
	return slot == WHEEL_EXPIRED ? &e->expired : &e->wheel[slot];
}

static void
timer_unlink(struct tcp_conn *c)
{
	if (c->wslot == WHEEL_NONE)
		return;
	list_unlink(c->eng, wheel_list(c->eng, c->wslot), LK_WHEEL, conn_idx(c));
	c->wslot = WHEEL_NONE;
}

static void
timer_stop(struct tcp_conn *c)
{
	timer_unlink(c);
	c->flags &= (uint16_t) ~(F_RTO | F_PERSIST);
}

/* One wheel timer per TCB; kind is F_RTO or F_PERSIST. */
static void
timer_arm(struct tcp_conn *c, uint32_t ms, uint16_t kind)
{
	struct tcp_engine *e = c->eng;

	timer_stop(c);
	c->flags |= kind;
	c->rto_at = e->now_ms + max32(ms, 1);
	c->wslot = c->rto_at & (WHEEL_SLOTS - 1);
	list_push(e, &e->wheel[c->wslot], LK_WHEEL, conn_idx(c));
}

/* ------------------------------------------------------------- pools */

static int
pool_init(struct tcp_pool *pl, uint32_t bytes, bool meta)
{
	pl->n = bytes / TCP_CHUNK;
	pl->free_head = NIL;
	if (pl->n == 0)
		return 0;
	pl->data = malloc((size_t)pl->n * TCP_CHUNK);
	pl->next = malloc((size_t)pl->n * sizeof(uint32_t));
	if (!pl->data || !pl->next)
		return -1;
	if (meta) {
		pl->seq = malloc((size_t)pl->n * sizeof(uint32_t));
		pl->len = malloc((size_t)pl->n * sizeof(uint16_t));
		if (!pl->seq || !pl->len)
			return -1;
	}
	for (uint32_t i = pl->n; i-- > 0;) {
		pl->next[i] = pl->free_head;
		pl->free_head = i;
	}
	pl->n_free = pl->n;
	return 0;
}

static void
pool_fini(struct tcp_pool *pl)
{
	free(pl->data);
	free(pl->next);
	free(pl->seq);
	free(pl->len);
}

static uint32_t
pool_get(struct tcp_pool *pl)
{
	uint32_t k = pl->free_head;

	if (k == NIL)
		return NIL;
	pl->free_head = pl->next[k];
	pl->next[k] = NIL;
	pl->n_free--;
	return k;
}

static void
pool_put(struct tcp_pool *pl, uint32_t k)
{
	pl->next[k] = pl->free_head;
	pl->free_head = k;
	pl->n_free++;
}

static void
pool_put_chain(struct tcp_pool *pl, uint32_t k)
{
	while (k != NIL) {
		uint32_t nx = pl->next[k];
		pool_put(pl, k);
		k = nx;
	}
}

/* -------------------------------------------------------- flow table */

static uint32_t
flow_hash(const struct tcp_engine *e, uint8_t fam, const uint8_t *peer, const uint8_t *local,
	  uint16_t pport, uint16_t lport)
{
	uint64_t h = e->hkey ^ fam, w;

	for (int i = 0; i < 16; i += 8) {
		memcpy(&w, peer + i, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
		memcpy(&w, local + i, 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 31;
	}
	h = (h ^ ((uint64_t)pport << 16 | lport)) * 0x94d049bb133111ebULL;
	h ^= h >> 32;
	return (uint32_t)h & e->bucket_mask;
}

static struct tcp_conn *
flow_find(struct tcp_engine *e, uint8_t fam, const uint8_t *peer, const uint8_t *local,
	  uint16_t pport, uint16_t lport)
{
	uint32_t i = e->buckets[flow_hash(e, fam, peer, local, pport, lport)];

	for (; i != NIL; i = e->tcbs[i].hnext) {
		struct tcp_conn *c = &e->tcbs[i];
		if (c->pport == pport && c->lport == lport && c->family == fam &&
		    !memcmp(c->peer, peer, 16) && !memcmp(c->local, local, 16))
			return c;
	}
	return NULL;
}

static void
flow_insert(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t b = flow_hash(e, c->family, c->peer, c->local, c->pport, c->lport);

	c->hnext = e->buckets[b];
	e->buckets[b] = conn_idx(c);
}

static void
flow_remove(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t *pp = &e->buckets[flow_hash(e, c->family, c->peer, c->local, c->pport, c->lport)];

	while (*pp != NIL) {
		if (*pp == conn_idx(c)) {
			*pp = c->hnext;
			break;
		}
		pp = &e->tcbs[*pp].hnext;
	}
	c->hnext = NIL;
}

/* ------------------------------------------------------ TCB lifetime */

static struct tcp_conn *
tcb_alloc(struct tcp_engine *e, const struct tcp_seg *s)
{
	uint32_t i = e->free_head;
	struct tcp_conn *c;

	if (i == NIL)
		return NULL;
	c = &e->tcbs[i];
	e->free_head = c->hnext;
	memset(c, 0, sizeof(*c));
	c->eng = e;
	c->hnext = NIL;
	c->wslot = WHEEL_NONE;
	for (int k = 0; k < LK_COUNT; k++)
		c->lk[k].prev = c->lk[k].next = NIL;
	c->sb_head = c->sb_tail = c->ooo_head = NIL;
	c->family = s->pkt->family;
	c->link = s->pkt->link;
	memcpy(c->peer, s->pkt->saddr, 16);
	memcpy(c->local, s->pkt->daddr, 16);
	c->pport = s->sport;
	c->lport = s->dport;
	c->created_ms = e->now_ms;
	c->rto_ms = TCP_INIT_RTO_MS;
	c->state = ST_CLOSED;
	flow_insert(c);
	list_push(e, &e->lists[L_LIFETIME], LK_LIFE, i);
	e->n_active++;
	return c;
}

static void
tcb_free(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;

	c->hnext = e->free_head;
	e->free_head = conn_idx(c);
	e->n_active--;
}

/* The one place that changes state: moves the TCB to its timer class. */
static void
set_state(struct tcp_conn *c, uint8_t st)
{
	if (st == c->state)
		return;
	if (c->state == ST_SYN_RCVD)
		c->eng->n_halfopen--;
	if (st == ST_SYN_RCVD)
		c->eng->n_halfopen++;
	c->state = st;
	if (tcp_states[st].timer != c->list_id)
		class_set(c, tcp_states[st].timer);
}

static void
conn_enter(struct tcp_conn *c)
{
	c->busy++;
}

static void
conn_leave(struct tcp_conn *c)
{
	if (--c->busy)
		return;
	if (c->flags & F_DEAD) {
		tcb_free(c);
		return;
	}
	if (c->flags & (F_OUTPUT | F_ACK_NOW)) {
		c->busy++; /* output does not call the app, but stay safe */
		conn_output(c);
		c->busy--;
	}
}

static void
count_reason(struct tcp_engine *e, int reason)
{
	switch (reason) {
	case TCP_CLOSE_NORMAL: e->cnt.closed++; break;
	case TCP_CLOSE_RESET: e->cnt.reset_by_peer++; break;
	case TCP_CLOSE_TIMEOUT_RTO:
		e->cnt.timeout_rto++;
		e->cnt.aborted++;
		break;
	case TCP_CLOSE_TIMEOUT_IDLE:
		e->cnt.timeout_idle++;
		e->cnt.aborted++;
		break;
	case TCP_CLOSE_TIMEOUT_LIFETIME:
		e->cnt.timeout_lifetime++;
		e->cnt.aborted++;
		break;
	case TCP_CLOSE_TIMEOUT_FIN_WAIT2:
		e->cnt.timeout_fin_wait2++;
		e->cnt.aborted++;
		break;
	default: e->cnt.aborted++; break;
	}
}

static void xmit_rst(struct tcp_conn *c);

/* End a connection: unhash it, stop its timers, give back its chunks, tell
 * the app. The TCB itself is freed when the stack unwinds (conn_leave). */
static void
terminate(struct tcp_conn *c, int reason, bool send_rst)
{
	struct tcp_engine *e = c->eng;
	void *app = c->app;

	if (c->flags & F_DEAD)
		return;
	if (send_rst)
		xmit_rst(c);
	flow_remove(c);
	timer_stop(c);
	list_unlink(e, &e->lists[L_LIFETIME], LK_LIFE, conn_idx(c));
	if (c->flags & F_WANT_SPACE)
		list_unlink(e, &e->space_wait, LK_SPACE, conn_idx(c));
	set_state(c, ST_CLOSED);
	pool_put_chain(&e->snd, c->sb_head);
	pool_put_chain(&e->ooo, c->ooo_head);
	c->sb_head = c->sb_tail = c->ooo_head = NIL;
	c->sb_len = c->ooo_chunks = 0;
	c->flags |= F_DEAD;
	c->flags &= (uint16_t) ~(F_OUTPUT | F_ACK_NOW);
	c->app = NULL;
	if (app) {
		count_reason(e, reason);
		e->ops.closed(app, reason);
	}
}

/* ------------------------------------------------------------ output */

static uint32_t
opt_ts(uint8_t *o, uint32_t tsval, uint32_t tsecr)
{
	o[0] = 1;
	o[1] = 1;
	o[2] = 8;
	o[3] = 10;
	wr32(o + 4, tsval);
	wr32(o + 8, tsecr);
	return 12;
}

static uint32_t
hdr_build(uint8_t *h, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
	  uint16_t win, uint32_t optlen)
{
	uint32_t len = 20 + optlen;

	wr16(h, sport);
	wr16(h + 2, dport);
	wr32(h + 4, seq);
	wr32(h + 8, ack);
	h[12] = (uint8_t)((len / 4) << 4);
	h[13] = flags;
	wr16(h + 14, win);
	wr16(h + 16, 0);
	wr16(h + 18, 0);
	return len;
}

static void
emit(struct tcp_engine *e, uint64_t link, uint8_t fam, const uint8_t *local, const uint8_t *peer,
     uint32_t hlen, const uint8_t *d0, uint32_t n0, const uint8_t *d1, uint32_t n1)
{
	struct tcp_out o;

	/* Every field is set below: no memset per segment. */
	o.link = link;
	o.family = fam;
	memcpy(o.saddr, local, 16);
	memcpy(o.daddr, peer, 16);
	o.hdr = e->hdr;
	o.hdr_len = hlen;
	o.data[0] = d0;
	o.data_len[0] = n0;
	o.data[1] = d1;
	o.data_len[1] = n1;
	if (!e->ops.output(e->ctx, &o))
		e->cnt.output_failed++;
}

/* The window to advertise: the app's space, scaled and rounded down, so
 * that it never offers more than the app takes. The right edge never moves
 * left: when the space shrank below the edge already announced, the window
 * keeps that edge (rounded up to the scale, as Linux does); the peer may
 * then send bytes the app cannot take, and those are not ACKed. */
static uint16_t
rcv_window(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t space = TCP_DEFAULT_SPACE, cap = 65535u << c->rcv_ws, field;

	if (c->app && e->ops.rcv_space)
		space = e->ops.rcv_space(c->app);
	space = min32(space, cap);
	field = space >> c->rcv_ws;
	if (SEQ_LT(c->rcv_nxt + (field << c->rcv_ws), c->rcv_adv)) {
		uint32_t keep = c->rcv_adv - c->rcv_nxt;
		field = min32((keep + (1u << c->rcv_ws) - 1) >> c->rcv_ws, 65535);
	}
	if (SEQ_GT(c->rcv_nxt + (field << c->rcv_ws), c->rcv_adv))
		c->rcv_adv = c->rcv_nxt + (field << c->rcv_ws);
	return (uint16_t)field;
}

/* Locate byte `off` (from snd_una) of the send buffer. */
static const uint8_t *
sb_at(struct tcp_conn *c, uint32_t off, uint32_t *contig)
{
	struct tcp_pool *pl = &c->eng->snd;
	uint32_t pos = c->sb_off + off, k = c->sb_head;

	while (pos >= TCP_CHUNK) {
		k = pl->next[k];
		pos -= TCP_CHUNK;
	}
	*contig = TCP_CHUNK - pos;
	return pl->data + (size_t)k * TCP_CHUNK + pos;
}

/* SACK blocks (RFC 2018) from the out-of-order list: the block holding the
 * latest segment first, then the others in sequence order. */
static uint32_t
opt_sack(const struct tcp_conn *c, uint8_t *o, uint32_t room)
{
	const struct tcp_pool *pl = &c->eng->ooo;
	uint32_t max = room >= 12 ? (room - 4) / 8 : 0, nb = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t k = c->ooo_head; k != NIL && nb < max; k = pl->next[k]) {
			uint32_t a = pl->seq[k], b = a + pl->len[k];
			bool latest;
			while (pl->next[k] != NIL && pl->seq[pl->next[k]] == b) {
				k = pl->next[k];
				b += pl->len[k];
			}
			latest = SEQ_GEQ(c->sack_last, a) && SEQ_LT(c->sack_last, b);
			if (latest != (pass == 0))
				continue;
			wr32(o + 4 + 8 * nb, a);
			wr32(o + 8 + 8 * nb, b);
			nb++;
		}
	}
	if (nb == 0)
		return 0;
	o[0] = 1;
	o[1] = 1;
	o[2] = 5;
	o[3] = (uint8_t)(2 + 8 * nb);
	return 4 + 8 * nb;
}

/* Payload that fits one segment: the MSS counts no TCP options (RFC 6691),
 * so the options this segment will carry (timestamps, SACK blocks, exactly
 * as xmit builds them) come out of it, and the IP packet stays within the
 * MTU the MSS was derived from. */
static uint32_t
seg_room(const struct tcp_conn *c)
{
	uint8_t scratch[40];
	uint32_t optlen = (c->flags & F_TS) ? 12 : 0;

	if ((c->flags & F_SACK) && c->ooo_head != NIL)
		optlen += opt_sack(c, scratch, 40 - optlen);
	return c->mss - optlen;
}

static void
xmit(struct tcp_conn *c, uint32_t seq, uint8_t flags, uint32_t off, uint32_t n)
{
	struct tcp_engine *e = c->eng;
	uint8_t *h = e->hdr;
	uint32_t optlen = 0, hlen, c0 = 0, n0 = 0;
	const uint8_t *d0 = NULL, *d1 = NULL;
	uint16_t win = rcv_window(c);

	if (c->flags & F_TS)
		optlen = opt_ts(h + 20, e->now_ms, c->ts_recent);
	if ((c->flags & F_SACK) && c->ooo_head != NIL && (flags & TH_ACK))
		optlen += opt_sack(c, h + 20 + optlen, 40 - optlen);
	hlen = hdr_build(h, c->lport, c->pport, seq, c->rcv_nxt, flags, win, optlen);
	if (n) {
		d0 = sb_at(c, off, &c0);
		n0 = min32(c0, n);
		if (n0 < n) {
			uint32_t c1;
			d1 = sb_at(c, off + n0, &c1);
		}
	}
	if (flags & TH_ACK)
		c->flags &= (uint16_t)~F_ACK_NOW;
	emit(e, c->link, c->family, c->local, c->peer, hlen, d0, n0, d1, n - n0);
}

static void
xmit_ack(struct tcp_conn *c)
{
	xmit(c, c->snd_nxt, TH_ACK, 0, 0);
}

static void
xmit_rst(struct tcp_conn *c)
{
	if (c->state == ST_CLOSED)
		return;
	xmit(c, c->snd_nxt, TH_RST | TH_ACK, 0, 0);
	c->eng->cnt.rst_sent++;
}

static void
xmit_synack(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint8_t *h = e->hdr, *o = h + 20;
	uint32_t ol = 0;

	o[0] = 2;
	o[1] = 4;
	wr16(o + 2, c->family == 4 ? e->p.mss4 : e->p.mss6);
	ol = 4;
	if (c->flags & F_TS) {
		if (c->flags & F_SACK) {
			o[ol] = 4;
			o[ol + 1] = 2;
			o[ol + 2] = 8;
			o[ol + 3] = 10;
			wr32(o + ol + 4, e->now_ms);
			wr32(o + ol + 8, c->ts_recent);
			ol += 12;
		} else {
			ol += opt_ts(o + ol, e->now_ms, c->ts_recent);
		}
	} else if (c->flags & F_SACK) {
		o[ol] = 1;
		o[ol + 1] = 1;
		o[ol + 2] = 4;
		o[ol + 3] = 2;
		ol += 4;
	}
	if (c->flags & F_WS) {
		o[ol] = 1;
		o[ol + 1] = 3;
		o[ol + 2] = 3;
		o[ol + 3] = c->rcv_ws;
		ol += 4;
	}
	c->rcv_adv = c->rcv_nxt + e->p.synack_window;
	emit(e, c->link, c->family, c->local, c->peer,
	     hdr_build(h, c->lport, c->pport, c->iss, c->rcv_nxt, TH_SYN | TH_ACK,
		       (uint16_t)e->p.synack_window, ol),
	     NULL, 0, NULL, 0);
}

/* RST / ACK without a TCB, rate-limited by a token bucket. */
static bool
rst_token(struct tcp_engine *e)
{
	uint64_t rate = max32(e->p.rst_rate_per_s, 1), cap = rate * 1000000ULL;
	uint64_t dt = e->now_us - e->rst_last_us;

	e->rst_last_us = e->now_us;
	e->rst_tokens = (dt > cap / rate || e->rst_tokens + dt * rate > cap) ?
				cap :
				e->rst_tokens + dt * rate;
	if (e->rst_tokens < 1000000ULL) {
		e->cnt.rst_rate_limited++;
		return false;
	}
	e->rst_tokens -= 1000000ULL;
	return true;
}

static void
xmit_stateless(struct tcp_engine *e, const struct tcp_seg *s, bool ack_fin)
{
	const struct tcp_pkt *pk = s->pkt;
	uint32_t seglen = s->len + !!(s->flags & TH_SYN) + !!(s->flags & TH_FIN);
	uint32_t hl;

	if (s->flags & TH_RST || !rst_token(e))
		return;
	if (ack_fin) {
		hl = hdr_build(e->hdr, s->dport, s->sport, s->ack, s->seq + seglen, TH_ACK, 0, 0);
		e->cnt.stray_fin_acked++;
	} else if (s->flags & TH_ACK) {
		hl = hdr_build(e->hdr, s->dport, s->sport, s->ack, 0, TH_RST, 0, 0);
		e->cnt.rst_sent++;
	} else {
		hl = hdr_build(e->hdr, s->dport, s->sport, 0, s->seq + seglen, TH_RST | TH_ACK, 0,
			       0);
		e->cnt.rst_sent++;
	}
	emit(e, pk->link, pk->family, pk->daddr, pk->saddr, hl, NULL, 0, NULL, 0);
}

/* Per-connection budget for ACKs that answer suspicious segments
 * (challenge ACKs, out-of-window and PAWS duplicates), so that a forger who
 * knows the 4-tuple cannot make us reflect ACKs at line rate. */
static bool
ack_budget(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;

	if (e->now_ms - c->chal_ms >= 1000) {
		c->chal_ms = e->now_ms;
		c->chal_cnt = 0;
	}
	if (c->chal_cnt >= TCP_CHAL_PER_S) {
		e->cnt.challenge_acks_limited++;
		return false;
	}
	c->chal_cnt++;
	return true;
}

static void
challenge_ack(struct tcp_conn *c)
{
	if (!ack_budget(c))
		return;
	c->eng->cnt.challenge_acks++;
	xmit_ack(c);
}

/* Send what the windows allow, FIN when the queue is drained, else the ACK
 * that is owed. Called when the engine unwinds from a connection. */
static void
conn_output(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	bool sent = false;

	c->flags &= (uint16_t)~F_OUTPUT;
	if (c->state == ST_CLOSED || c->state == ST_SYN_RCVD)
		return;
	for (;;) {
		uint32_t off = c->snd_nxt - c->snd_una, flight = off;
		uint32_t avail = off < c->sb_len ? c->sb_len - off : 0;
		uint32_t wnd = min32(c->snd_wnd, c->cwnd);
		uint32_t n = min32(min32(avail, wnd > flight ? wnd - flight : 0), seg_room(c));
		bool fin = (c->flags & (F_CLOSE | F_FIN_ACKED)) == F_CLOSE &&
			   off + n == c->sb_len && off <= c->sb_len &&
			   tcp_states[c->state].can_send == 0;
		uint8_t fl = TH_ACK;

		if (fin && (c->flags & F_FIN_SENT) && c->snd_nxt == c->snd_max)
			fin = false; /* already sent and not being resent */
		if (n == 0 && !fin)
			break;
		if (n)
			fl |= TH_PSH;
		if (fin)
			fl |= TH_FIN;
		if (!(c->flags & F_RTT) && c->snd_nxt == c->snd_max) {
			c->flags |= F_RTT;
			c->rtt_seq = c->snd_nxt;
			c->rtt_ms = e->now_ms;
		}
		xmit(c, c->snd_nxt, fl, off, n);
		sent = true;
		c->snd_nxt += n + fin;
		if (fin)
			c->flags |= F_FIN_SENT;
		if (SEQ_GT(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		if (!(c->flags & F_RTO))
			timer_arm(c, c->rto_ms, F_RTO);
	}
	if (!sent && (c->flags & F_ACK_NOW))
		xmit_ack(c);
	if (c->snd_wnd == 0 && c->snd_una == c->snd_max && c->sb_len > 0 &&
	    !(c->flags & (F_RTO | F_PERSIST)))
		timer_arm(c, c->rto_ms, F_PERSIST);
}

/* ----------------------------------------------------------- receive */

/* Hand bytes at rcv_nxt to the app; rcv_nxt moves over what it took and
 * no further, so an ACK never covers a byte the app did not take. */
static uint32_t
deliver(struct tcp_conn *c, const uint8_t *p, uint32_t n)
{
	uint32_t took;

	if (!c->app) { /* the app is gone: nothing waits for the bytes */
		c->rcv_nxt += n;
		return n;
	}
	if (!n)
		return 0;
	took = min32(c->eng->ops.recv(c->app, p, n), n);
	c->rcv_nxt += took;
	if (took < n)
		c->eng->cnt.drop_app_full++;
	return took;
}

/* Keep an out-of-order segment, trimmed against what is already held so the
 * list stays sorted and disjoint; a part that would need a split is dropped
 * (the peer retransmits it). */
static void
ooo_insert(struct tcp_conn *c, uint32_t seq, const uint8_t *p, uint32_t len)
{
	struct tcp_engine *e = c->eng;
	struct tcp_pool *pl = &e->ooo;
	uint32_t s = seq, end = seq + min32(len, TCP_CHUNK), prev = NIL, cur = c->ooo_head, k;

	e->cnt.ooo_segments++;
	while (cur != NIL) {
		uint32_t a = pl->seq[cur], b = a + pl->len[cur];
		if (SEQ_LEQ(b, s) || SEQ_LEQ(a, s)) {
			if (SEQ_GT(b, s))
				s = b;
			prev = cur;
			cur = pl->next[cur];
			continue;
		}
		break;
	}
	if (cur != NIL && SEQ_LT(pl->seq[cur], end))
		end = pl->seq[cur];
	if (!SEQ_LT(s, end)) {
		e->cnt.dup_segments++;
		return;
	}
	if (c->ooo_chunks >= e->ooo_max_chunks) {
		e->cnt.drop_ooo_limit++;
		return;
	}
	k = pool_get(pl);
	if (k == NIL) {
		e->cnt.drop_ooo_pool++;
		return;
	}
	memcpy(pl->data + (size_t)k * TCP_CHUNK, p + (s - seq), end - s);
	pl->seq[k] = s;
	pl->len[k] = (uint16_t)(end - s);
	c->sack_last = s;
	pl->next[k] = cur;
	if (prev == NIL)
		c->ooo_head = k;
	else
		pl->next[prev] = k;
	c->ooo_chunks++;
}

/* The gap filled: hand up what the out-of-order list now continues. A
 * chunk the app took only part of stays at the head; the next drain starts
 * inside it. */
static void
ooo_drain(struct tcp_conn *c)
{
	struct tcp_pool *pl = &c->eng->ooo;

	while (c->ooo_head != NIL && !(c->flags & F_DEAD)) {
		uint32_t k = c->ooo_head, a = pl->seq[k], b = a + pl->len[k];
		if (SEQ_GT(a, c->rcv_nxt))
			break;
		if (SEQ_GT(b, c->rcv_nxt)) {
			uint32_t skip = c->rcv_nxt - a, n = b - a - skip;
			if (deliver(c, pl->data + (size_t)k * TCP_CHUNK + skip, n) < n)
				break;
			if (c->flags & F_DEAD)
				break; /* terminate() gave the chunks back */
		}
		c->ooo_head = pl->next[k];
		c->ooo_chunks--;
		pool_put(pl, k);
	}
}

static void
rx_data(struct tcp_conn *c, const struct tcp_seg *s)
{
	uint32_t seq = s->seq, len = s->len;
	const uint8_t *p = s->data;

	c->flags |= F_ACK_NOW;
	if (SEQ_LT(seq, c->rcv_nxt)) { /* old part: trim */
		uint32_t cut = c->rcv_nxt - seq;
		if (cut >= len) {
			c->eng->cnt.dup_segments++;
			return;
		}
		seq += cut;
		p += cut;
		len -= cut;
	}
	if (SEQ_GT(seq + len, c->rcv_adv)) { /* beyond the window: trim */
		if (!SEQ_LT(seq, c->rcv_adv))
			return;
		len = c->rcv_adv - seq;
	}
	if (seq != c->rcv_nxt) {
		ooo_insert(c, seq, p, len);
		return;
	}
	if (deliver(c, p, len) < len)
		return; /* the rest is not ACKed: the peer sends it again */
	ooo_drain(c);
}

/* Advance snd_una: free the acknowledged bytes, sample RTT, grow cwnd. */
static void
sb_release(struct tcp_conn *c, uint32_t n)
{
	struct tcp_pool *pl = &c->eng->snd;

	c->sb_len -= n;
	c->sb_off += n;
	while (c->sb_off >= TCP_CHUNK && c->sb_head != NIL) {
		uint32_t nx = pl->next[c->sb_head];
		pool_put(pl, c->sb_head);
		c->sb_head = nx;
		c->sb_off -= TCP_CHUNK;
	}
	if (c->sb_len == 0) { /* detach: no chunk held while idle */
		pool_put_chain(pl, c->sb_head);
		c->sb_head = c->sb_tail = NIL;
		c->sb_off = 0;
	}
}

static void
rtt_sample(struct tcp_conn *c, uint32_t r)
{
	struct tcp_engine *e = c->eng;

	if (c->srtt_ms == 0) {
		c->srtt_ms = max32(r, 1);
		c->rttvar_ms = r / 2;
	} else {
		uint32_t d = r > c->srtt_ms ? r - c->srtt_ms : c->srtt_ms - r;
		c->rttvar_ms = (3 * c->rttvar_ms + d) / 4;
		c->srtt_ms = max32((7 * c->srtt_ms + r) / 8, 1);
	}
	c->rto_ms = c->srtt_ms + max32(1, 4 * c->rttvar_ms);
	c->rto_ms = min32(max32(c->rto_ms, e->p.rto_min_ms), e->p.rto_max_ms);
}

static void
ack_advance(struct tcp_conn *c, uint32_t ack)
{
	struct tcp_engine *e = c->eng;
	uint32_t acked = ack - c->snd_una, data = min32(acked, c->sb_len);
	bool fin_acked = (c->flags & F_FIN_SENT) && acked > c->sb_len;

	if ((c->flags & F_RTT) && SEQ_GT(ack, c->rtt_seq)) {
		c->flags &= (uint16_t)~F_RTT;
		rtt_sample(c, e->now_ms - c->rtt_ms);
	}
	if (data)
		sb_release(c, data);
	c->snd_una = ack;
	if (SEQ_LT(c->snd_nxt, c->snd_una))
		c->snd_nxt = c->snd_una;
	c->retries = 0;
	c->dupacks = 0;
	if (c->cwnd < c->ssthresh)
		c->cwnd += min32(acked, c->mss);
	else
		c->cwnd += max32(c->mss * c->mss / max32(c->cwnd, 1), 1);
	c->cwnd = min32(c->cwnd, 1u << 30);
	if (c->snd_una == c->snd_max)
		timer_stop(c);
	else
		timer_arm(c, c->rto_ms, F_RTO);
	if (data && (c->flags & F_WANT_SPACE)) {
		list_unlink(e, &e->space_wait, LK_SPACE, conn_idx(c));
		c->flags &= (uint16_t)~F_WANT_SPACE;
	}
	if (data && c->app && e->ops.sent)
		e->ops.sent(c->app);
	if (fin_acked)
		c->flags |= F_FIN_ACKED;
	if (fin_acked && !(c->flags & F_DEAD)) {
		uint8_t next = tcp_states[c->state].on_fin_acked;
		if (next == ST_CLOSED)
			terminate(c, TCP_CLOSE_NORMAL, false);
		else
			set_state(c, next);
	}
}

static void
fast_retransmit(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t flight = c->snd_max - c->snd_una, n = min32(min32(seg_room(c), c->sb_len), flight);

	c->ssthresh = max32(flight / 2, 2u * c->mss);
	c->cwnd = c->ssthresh;
	c->flags &= (uint16_t)~F_RTT; /* Karn */
	e->cnt.fast_retransmits++;
	e->cnt.retransmits++;
	if (n)
		xmit(c, c->snd_una, TH_ACK | TH_PSH, 0, n);
}

static bool
ack_input(struct tcp_conn *c, const struct tcp_seg *s)
{
	struct tcp_engine *e = c->eng;
	uint32_t maxwnd = max32(c->snd_wnd, 65535u);
	uint32_t wnd = (uint32_t)s->win << c->snd_ws;

	if (SEQ_GT(s->ack, c->snd_max)) { /* acks what we never sent */
		e->cnt.drop_bad_ack++;
		c->flags |= F_ACK_NOW;
		return false;
	}
	if (SEQ_LT(s->ack, c->snd_una - maxwnd)) { /* RFC 5961 5.2 */
		e->cnt.drop_old_ack++;
		challenge_ack(c);
		return false;
	}
	if (c->flags & F_PERSIST)
		c->retries = 0; /* the peer answers probes: it is alive */
	if (SEQ_GT(s->ack, c->snd_una)) {
		ack_advance(c, s->ack);
		if (c->flags & F_DEAD)
			return false;
	} else if (s->ack == c->snd_una && s->len == 0 && !(s->flags & TH_FIN) &&
		   c->snd_max != c->snd_una && wnd == c->snd_wnd) {
		if (++c->dupacks == 3)
			fast_retransmit(c);
	}
	if (SEQ_LT(c->snd_wl1, s->seq) || (c->snd_wl1 == s->seq && SEQ_LEQ(c->snd_wl2, s->ack))) {
		c->snd_wnd = wnd;
		c->snd_wl1 = s->seq;
		c->snd_wl2 = s->ack;
		if (wnd && (c->flags & F_PERSIST))
			timer_stop(c);
		if (wnd)
			c->flags |= F_OUTPUT;
	}
	return true;
}

static bool
seq_acceptable(const struct tcp_conn *c, const struct tcp_seg *s)
{
	uint32_t rwnd = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t seglen = s->len + !!(s->flags & TH_SYN) + !!(s->flags & TH_FIN);

	if (seglen == 0)
		return rwnd == 0 ? s->seq == c->rcv_nxt :
				   SEQ_GEQ(s->seq, c->rcv_nxt) && SEQ_LT(s->seq, c->rcv_adv);
	if (rwnd == 0)
		return false;
	return (SEQ_GEQ(s->seq, c->rcv_nxt) && SEQ_LT(s->seq, c->rcv_adv)) ||
	       (SEQ_GEQ(s->seq + seglen - 1, c->rcv_nxt) &&
		SEQ_LT(s->seq + seglen - 1, c->rcv_adv));
}

/* A retransmission of data (or a FIN) we already have: a duplicate on the
 * wire, or the peer resending because our ACK was lost. Only our ACK ends
 * its retransmissions, so it is always answered, outside the ACK budget; a
 * forger gains one ACK per segment it sends, no amplification and no ACK
 * loop (pure ACKs stay under the budget). Linux exempts data segments from
 * its out-of-window rate limit for the same reason. "Already have" means
 * within the largest window we can announce below rcv_nxt. */
static bool
old_data(const struct tcp_conn *c, const struct tcp_seg *s)
{
	uint32_t seglen = s->len + !!(s->flags & TH_FIN);

	return seglen && !(s->flags & (TH_SYN | TH_RST)) && SEQ_LEQ(s->seq + seglen, c->rcv_nxt) &&
	       SEQ_GEQ(s->seq, c->rcv_nxt - (65535u << TCP_RCV_WSCALE));
}

static void
fin_input(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint8_t next = tcp_states[c->state].on_fin_in;

	if (next == c->state) /* FIN already taken in this state */
		return;
	c->rcv_nxt++;
	if (SEQ_GT(c->rcv_nxt, c->rcv_adv)) /* a FIN right at the window edge */
		c->rcv_adv = c->rcv_nxt;
	c->flags |= F_ACK_NOW;
	if (next == ST_CLOSED) { /* FIN_WAIT_2: ACK it, no TIME_WAIT */
		xmit_ack(c);
		terminate(c, TCP_CLOSE_NORMAL, false);
		return;
	}
	set_state(c, next);
	if (c->app && e->ops.peer_fin)
		e->ops.peer_fin(c->app);
}

/* Replies go where the peer's frames now come from (l23.h), but only a
 * segment that passed the sequence, RST/SYN and ACK checks may move them:
 * else one blind frame from another MAC on the link, knowing only the
 * 4-tuple, would send our challenge ACKs (RFC 5961), which must reach the
 * real peer, and the session's next replies to itself. */
static void
link_follow(struct tcp_conn *c, const struct tcp_seg *s)
{
	c->link = s->pkt->link;
}

/* Segment processing for synchronized states (RFC 9293 3.10.7.4 order). */
static void
sync_input(struct tcp_conn *c, const struct tcp_seg *s)
{
	struct tcp_engine *e = c->eng;

	if ((c->flags & F_TS) && s->has_ts && !(s->flags & TH_RST) &&
	    SEQ_LT(s->tsval, c->ts_recent)) {
		e->cnt.drop_paws++;
		if (ack_budget(c))
			c->flags |= F_ACK_NOW;
		return;
	}
	if (!seq_acceptable(c, s)) {
		e->cnt.drop_out_of_window++;
		if (!(s->flags & TH_RST) && (old_data(c, s) || ack_budget(c)))
			c->flags |= F_ACK_NOW;
		return;
	}
	if (s->flags & TH_RST) {
		if (s->seq == c->rcv_nxt)
			terminate(c, TCP_CLOSE_RESET, false);
		else
			challenge_ack(c);
		return;
	}
	if (s->flags & TH_SYN) {
		challenge_ack(c);
		return;
	}
	if (!(s->flags & TH_ACK))
		return;
	if ((c->flags & F_TS) && s->has_ts && SEQ_LEQ(s->seq, c->rcv_nxt))
		c->ts_recent = s->tsval;
	if (!ack_input(c, s))
		return;
	link_follow(c, s);
	if (s->len || (s->flags & TH_FIN))
		conn_touch(c);
	if (s->len) {
		if (tcp_states[c->state].rx_data)
			rx_data(c, s);
		else
			c->flags |= F_ACK_NOW;
	}
	if ((s->flags & TH_FIN) && !(c->flags & F_DEAD) && s->seq + s->len == c->rcv_nxt)
		fin_input(c);
}

/* Handshake complete (half-open or cookie): the app gets the connection. */
static void
establish(struct tcp_conn *c, const struct tcp_seg *s)
{
	struct tcp_engine *e = c->eng;
	struct tcp_conn_info info;
	void *app;

	c->snd_una = c->snd_nxt = c->snd_max = s->ack;
	c->snd_wnd = (uint32_t)s->win << c->snd_ws;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->cwnd = 10u * c->mss;
	c->ssthresh = UINT32_MAX / 2;
	c->retries = 0;
	timer_stop(c);
	set_state(c, ST_ESTABLISHED);
	memset(&info, 0, sizeof(info));
	info.family = c->family;
	memcpy(info.peer, c->peer, 16);
	memcpy(info.local, c->local, 16);
	info.peer_port = c->pport;
	info.local_port = c->lport;
	info.from_cookie = !!(c->flags & F_COOKIE);
	info.irs = c->irs;
	app = e->ops.open(e->ctx, c, &info);
	if (!app) {
		e->cnt.refused++;
		terminate(c, TCP_CLOSE_ABORT, true);
		return;
	}
	e->cnt.opened++;
	if (c->flags & F_DEAD) { /* the app aborted from inside open() */
		count_reason(e, TCP_CLOSE_ABORT);
		e->ops.closed(app, TCP_CLOSE_ABORT);
		return;
	}
	c->app = app;
}

static void
synrcvd_input(struct tcp_conn *c, const struct tcp_seg *s)
{
	struct tcp_engine *e = c->eng;

	if (s->flags & TH_RST) {
		if (s->seq == c->rcv_nxt)
			terminate(c, TCP_CLOSE_RESET, false);
		else
			e->cnt.drop_stray_rst++;
		return;
	}
	if (s->flags & TH_SYN) {
		if (!(s->flags & TH_ACK) && s->seq == c->irs) {
			e->cnt.synack_retransmits++;
			xmit_synack(c);
		} else {
			e->cnt.drop_bad_flags++;
		}
		return;
	}
	if (!(s->flags & TH_ACK))
		return;
	if (s->ack != c->iss + 1) {
		e->cnt.drop_bad_ack++;
		xmit_stateless(e, s, false);
		return;
	}
	if (!seq_acceptable(c, s)) {
		e->cnt.drop_out_of_window++;
		xmit(c, c->iss + 1, TH_ACK, 0, 0);
		return;
	}
	if (c->retries == 0)
		rtt_sample(c, e->now_ms - c->rtt_ms);
	link_follow(c, s);
	establish(c, s);
	if (!(c->flags & F_DEAD))
		sync_input(c, s);
}

/* ------------------------------------------------------------ listen */

static uint32_t
cookie_hash(const uint64_t k[2], const struct tcp_seg *s, uint32_t peer_isn, uint64_t slot,
	    uint32_t mss_idx)
{
	uint8_t buf[56];
	const struct tcp_pkt *pk = s->pkt;
	uint64_t sl = slot;

	memset(buf, 0, sizeof(buf));
	buf[0] = pk->family;
	memcpy(buf + 1, pk->saddr, 16);
	memcpy(buf + 17, pk->daddr, 16);
	wr16(buf + 33, s->sport);
	wr16(buf + 35, s->dport);
	wr32(buf + 37, peer_isn);
	memcpy(buf + 41, &sl, 8);
	buf[49] = (uint8_t)mss_idx;
	return (uint32_t)(siphash24(k, buf, 50) >> (64 - COOKIE_HASH_BITS));
}

static uint32_t
peer_mss(const struct tcp_engine *e, const struct tcp_seg *s, uint8_t fam)
{
	uint32_t ours = fam == 4 ? e->p.mss4 : e->p.mss6;
	uint32_t theirs = s->mss ? s->mss : (fam == 4 ? 536u : 1220u);

	/* A tiny MSS would make us cut replies into a packet storm; 256 is also
	 * the smallest value a cookie can carry. */
	return min32(max32(theirs, 256), ours);
}

static uint32_t
cookie_make(struct tcp_engine *e, const struct tcp_seg *s, uint32_t *mss)
{
	uint32_t want = peer_mss(e, s, s->pkt->family), idx = 0;

	for (uint32_t i = 0; i < 8; i++)
		if (cookie_mss[i] <= want)
			idx = i;
	*mss = min32(cookie_mss[idx], want);
	return cookie_hash(e->ck_cur, s, s->seq, e->ck_slot, idx) << 3 | idx;
}

/* A cookie ACK: returns the MSS it carries, or 0 when forged/expired. The
 * slot is not in the cookie: the current key is tried, then the previous. */
static uint32_t
cookie_check(struct tcp_engine *e, const struct tcp_seg *s)
{
	uint32_t ck = s->ack - 1, idx = ck & 7, h = ck >> 3;

	if (cookie_hash(e->ck_cur, s, s->seq - 1, e->ck_slot, idx) != h &&
	    (e->ck_slot == 0 || cookie_hash(e->ck_prev, s, s->seq - 1, e->ck_slot - 1, idx) != h))
		return 0;
	return min32(cookie_mss[idx], s->pkt->family == 4 ? e->p.mss4 : e->p.mss6);
}

/* Cookies are honoured only while the edge hands them out: a cookie SYN-ACK
 * left within COOKIE_ACTIVE_MS. Otherwise every ACK without a TCB would be a
 * guess at the hash that costs the forger nothing. */
static bool
cookies_active(const struct tcp_engine *e)
{
	return e->ck_sent && e->now_us - e->ck_sent_us <= (uint64_t)COOKIE_ACTIVE_MS * 1000;
}

/* Options for a new connection: ws/sack only with timestamps in cookie mode. */
static void
conn_opts(struct tcp_conn *c, bool ts, bool sack, uint8_t ws, uint32_t tsval)
{
	c->flags |= (uint16_t)((ts ? F_TS : 0) | (sack ? F_SACK : 0));
	c->ts_recent = tsval;
	if (ws != 0xff) {
		c->flags |= F_WS;
		c->snd_ws = (uint8_t)min32(ws, 14);
		c->rcv_ws = TCP_RCV_WSCALE;
	}
}

/* Cookie SYN-ACK, built from a throwaway TCB image on the stack. */
static void
cookie_synack(struct tcp_engine *e, const struct tcp_seg *s, uint32_t isn)
{
	struct tcp_conn t;

	memset(&t, 0, sizeof(t));
	t.eng = e;
	t.link = s->pkt->link;
	t.family = s->pkt->family;
	memcpy(t.peer, s->pkt->saddr, 16);
	memcpy(t.local, s->pkt->daddr, 16);
	t.pport = s->sport;
	t.lport = s->dport;
	t.iss = isn;
	t.rcv_nxt = s->seq + 1;
	if (s->has_ts) {
		/* Our TSval carries ws and sack (xmit_synack sends now_ms);
		 * keep it <= now so that later TSvals never run backwards. */
		uint32_t enc = (s->ws == 0xff ? 0xfu : min32(s->ws, 14)) | (s->sack_ok ? 0x10u : 0);
		uint32_t saved = e->now_ms;

		conn_opts(&t, true, s->sack_ok, s->ws, s->tsval);
		e->now_ms = (saved & ~0x1fu) | enc;
		if (e->now_ms > saved)
			e->now_ms -= 32;
		xmit_synack(&t);
		e->now_ms = saved;
	} else {
		xmit_synack(&t);
	}
	e->cnt.cookies_sent++;
	e->ck_sent = true;
	e->ck_sent_us = e->now_us;
}

static void
halfopen_start(struct tcp_conn *c, const struct tcp_seg *s, uint32_t isn, uint32_t mss)
{
	struct tcp_engine *e = c->eng;

	conn_enter(c);
	c->iss = isn;
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->mss = (uint16_t)mss;
	c->snd_max = c->snd_nxt = isn + 1;
	c->snd_una = isn;
	conn_opts(c, s->has_ts, s->sack_ok, s->ws, s->tsval);
	set_state(c, ST_SYN_RCVD);
	c->rtt_ms = e->now_ms;
	xmit_synack(c);
	timer_arm(c, c->rto_ms, F_RTO);
	e->cnt.halfopen_created++;
	conn_leave(c);
}

static int
syn_input(struct tcp_engine *e, const struct tcp_seg *s)
{
	struct tcp_conn *c = NULL;
	uint32_t mss, isn = cookie_make(e, s, &mss);

	if (s->flags & (TH_FIN | TH_RST)) {
		e->cnt.drop_bad_flags++;
		return TCP_IN_MALFORMED;
	}
	if (e->n_halfopen < e->p.halfopen_max) {
		c = tcb_alloc(e, s);
		if (!c)
			e->cnt.tcb_exhausted++;
	} else {
		e->cnt.halfopen_full++;
	}
	if (!c) {
		cookie_synack(e, s, isn);
		return TCP_IN_SYN_COOKIE;
	}
	/* Not a valid cookie: a late ACK for an expired half-open TCB must not
	 * be taken for one (its options were not encoded). */
	halfopen_start(c, s, isn ^ (1u << 20), mss);
	return TCP_IN_SYN_HALFOPEN;
}

static int
cookie_ack_input(struct tcp_engine *e, const struct tcp_seg *s)
{
	uint32_t mss;
	struct tcp_conn *c;
	struct tcp_seg hs;

	if (!cookies_active(e)) {
		e->cnt.cookies_inactive++;
		xmit_stateless(e, s, (s->flags & TH_FIN) != 0);
		return TCP_IN_STRAY;
	}
	mss = cookie_check(e, s);
	if (!mss) {
		e->cnt.cookies_rejected++;
		xmit_stateless(e, s, (s->flags & TH_FIN) != 0);
		return TCP_IN_STRAY;
	}
	e->cnt.cookies_validated++;
	c = tcb_alloc(e, s);
	if (!c) {
		e->cnt.cookie_no_tcb++;
		xmit_stateless(e, s, false);
		return TCP_IN_COOKIE_NO_TCB;
	}
	conn_enter(c);
	c->flags |= F_COOKIE;
	c->iss = s->ack - 1;
	c->irs = s->seq - 1;
	c->rcv_nxt = s->seq;
	c->rcv_adv = s->seq + e->p.synack_window;
	c->mss = (uint16_t)mss;
	if (s->has_ts && e->now_ms - s->tsecr < 2 * COOKIE_SLOT_MS + 64) {
		uint32_t enc = s->tsecr & 0x1f;
		conn_opts(c, true, (enc & 0x10) != 0,
			  (enc & 0xf) == 0xf ? 0xff : (uint8_t)(enc & 0xf), s->tsval);
	}
	establish(c, s);
	/* Only the handshake is taken from this segment: its payload and FIN
	 * are left unACKed for the peer to send again (see the header). */
	hs = *s;
	if (hs.len || (hs.flags & TH_FIN))
		e->cnt.cookie_data_dropped++;
	hs.len = 0;
	hs.flags &= (uint8_t) ~(TH_FIN | TH_PSH);
	if (!(c->flags & F_DEAD))
		sync_input(c, &hs);
	conn_leave(c);
	return TCP_IN_COOKIE_OK;
}

static int
listen_input(struct tcp_engine *e, const struct tcp_seg *s)
{
	if (s->flags & TH_RST) {
		e->cnt.drop_stray_rst++;
		return TCP_IN_STRAY;
	}
	if ((s->flags & (TH_SYN | TH_ACK)) == TH_SYN)
		return syn_input(e, s);
	if ((s->flags & (TH_SYN | TH_ACK)) == TH_ACK)
		return cookie_ack_input(e, s);
	e->cnt.drop_bad_flags++;
	xmit_stateless(e, s, false);
	return TCP_IN_STRAY;
}

/* ------------------------------------------------------------- parse */

static void
parse_opts(struct tcp_seg *s, const uint8_t *o, uint32_t n)
{
	uint32_t i = 0;

	while (i < n) {
		uint8_t kind = o[i], l;
		if (kind == 0)
			break;
		if (kind == 1) {
			i++;
			continue;
		}
		if (i + 1 >= n)
			break;
		l = o[i + 1];
		if (l < 2 || i + l > n)
			break;
		if (kind == 2 && l == 4)
			s->mss = rd16(o + i + 2);
		else if (kind == 3 && l == 3)
			s->ws = o[i + 2];
		else if (kind == 4 && l == 2)
			s->sack_ok = true;
		else if (kind == 8 && l == 10) {
			s->has_ts = true;
			s->tsval = rd32(o + i + 2);
			s->tsecr = rd32(o + i + 6);
		}
		i += l;
	}
}

static bool
parse(const struct tcp_pkt *pk, struct tcp_seg *s)
{
	uint32_t off;

	memset(s, 0, sizeof(*s));
	s->pkt = pk;
	s->ws = 0xff;
	if (!pk->tcp || pk->len < 20 || (pk->family != 4 && pk->family != 6))
		return false;
	off = (uint32_t)(pk->tcp[12] >> 4) * 4;
	if (off < 20 || off > pk->len)
		return false;
	s->sport = rd16(pk->tcp);
	s->dport = rd16(pk->tcp + 2);
	s->seq = rd32(pk->tcp + 4);
	s->ack = rd32(pk->tcp + 8);
	s->flags = pk->tcp[13];
	s->win = rd16(pk->tcp + 14);
	s->data = pk->tcp + off;
	s->len = pk->len - off;
	parse_opts(s, pk->tcp + 20, off - 20);
	return s->sport != 0 && s->dport != 0;
}

static bool
port_listening(const struct tcp_engine *e, uint16_t port)
{
	for (uint32_t i = 0; i < e->p.n_ports; i++)
		if (e->ports[i] == port)
			return true;
	return false;
}

int
tcp_input(struct tcp_engine *e, const struct tcp_pkt *pkt, uint64_t now_us)
{
	struct tcp_seg s;
	struct tcp_conn *c;
	struct tcp_pkt np = *pkt;

	clock_set(e, now_us);
	if (np.family == 4) { /* IPv4: only the first 4 bytes are defined */
		memset(np.saddr + 4, 0, 12);
		memset(np.daddr + 4, 0, 12);
	}
	if (!parse(&np, &s)) {
		e->cnt.drop_malformed++;
		return TCP_IN_MALFORMED;
	}
	c = flow_find(e, np.family, np.saddr, np.daddr, s.sport, s.dport);
	if (!c) {
		if (!port_listening(e, s.dport)) {
			xmit_stateless(e, &s, false);
			return TCP_IN_CLOSED_PORT;
		}
		cookie_rotate(e);
		return listen_input(e, &s);
	}
	conn_enter(c);
	if (c->state == ST_SYN_RCVD)
		synrcvd_input(c, &s);
	else
		sync_input(c, &s);
	conn_leave(c);
	return TCP_IN_CONN;
}

/* ------------------------------------------------------------ timers */

static void
rto_fire(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t n;
	bool fin;

	if (++c->retries > e->p.max_retries) {
		if (c->state == ST_SYN_RCVD) {
			e->cnt.timeout_handshake++;
			terminate(c, TCP_CLOSE_TIMEOUT_RTO, false);
		} else {
			terminate(c, TCP_CLOSE_TIMEOUT_RTO, true);
		}
		return;
	}
	c->rto_ms = min32(c->rto_ms * 2, e->p.rto_max_ms);
	c->flags &= (uint16_t)~F_RTT; /* Karn: no sample from a resend */
	e->cnt.retransmits++;
	if (c->state == ST_SYN_RCVD) {
		/* The backoff is capped so that five SYN-ACKs fit in the
		 * handshake timeout. The client may be established already
		 * (its final ACK lost) and, SMTP being server-speaks-first, it
		 * says nothing more: each SYN-ACK is its only chance to resend
		 * that ACK, and when the half-open TCB gives up it waits for a
		 * greeting that never comes. 1, 2, 4 s gave three chances in
		 * 10 s: with 5% loss each way, one session in ~5,000 hung. */
		c->rto_ms = min32(c->rto_ms, max32(e->p.handshake_timeout_ms / 5, TCP_INIT_RTO_MS));
		e->cnt.synack_retransmits++;
		xmit_synack(c);
		timer_arm(c, c->rto_ms, F_RTO);
		return;
	}
	c->ssthresh = max32((c->snd_max - c->snd_una) / 2, 2u * c->mss);
	c->cwnd = c->mss;
	/* Go back N: resend the first segment now, whatever the peer's window
	 * (it doubles as a probe); the rest follows as ACKs return. */
	n = min32(seg_room(c), c->sb_len);
	fin = (c->flags & F_FIN_SENT) && n == c->sb_len;
	xmit(c, c->snd_una, (uint8_t)(TH_ACK | (n ? TH_PSH : 0) | (fin ? TH_FIN : 0)), 0, n);
	c->snd_nxt = c->snd_una + n + fin;
	timer_arm(c, c->rto_ms, F_RTO);
}

static void
wheel_fire(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint16_t kind = c->flags & (F_RTO | F_PERSIST);

	c->flags &= (uint16_t)~kind;
	if (c->state == ST_SYN_RCVD || (kind & F_RTO) || c->snd_max != c->snd_una) {
		rto_fire(c);
	} else if (kind & F_PERSIST) {
		if (++c->retries > e->p.max_retries) {
			terminate(c, TCP_CLOSE_TIMEOUT_RTO, true);
			return;
		}
		e->cnt.persist_probes++;
		xmit(c, c->snd_una - 1, TH_ACK, 0, 0);
		c->rto_ms = min32(c->rto_ms * 2, e->p.rto_max_ms);
		timer_arm(c, c->rto_ms, F_PERSIST);
	}
}

static void
wheel_run(struct tcp_engine *e)
{
	uint32_t steps = e->now_ms - e->wheel_ms;

	if (steps > WHEEL_SLOTS)
		steps = WHEEL_SLOTS;
	for (uint32_t t = 1; t <= steps; t++) {
		struct tcp_list *l = &e->wheel[(e->wheel_ms + t) & (WHEEL_SLOTS - 1)];
		uint32_t i = l->head;
		while (i != NIL) { /* move the due ones aside first */
			uint32_t nx = e->tcbs[i].lk[LK_WHEEL].next;
			if (TIME_DUE(e->tcbs[i].rto_at, e->now_ms)) {
				list_unlink(e, l, LK_WHEEL, i);
				list_push(e, &e->expired, LK_WHEEL, i);
				e->tcbs[i].wslot = WHEEL_EXPIRED;
			}
			i = nx;
		}
	}
	e->wheel_ms = e->now_ms;
	while (e->expired.head != NIL) { /* fire one at a time: callbacks may free others */
		struct tcp_conn *c = &e->tcbs[e->expired.head];
		timer_unlink(c);
		conn_enter(c);
		wheel_fire(c);
		conn_leave(c);
	}
}

static uint32_t
class_timeout(const struct tcp_engine *e, int l)
{
	switch (l) {
	case L_HANDSHAKE: return e->p.handshake_timeout_ms;
	case L_IDLE: return e->p.idle_timeout_ms;
	case L_FIN_WAIT2: return e->p.fin_wait2_ms;
	default: return e->p.lifetime_ms;
	}
}

static void
idle_fire(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint8_t st = c->state;

	if (tcp_states[st].can_send && c->app && e->ops.idle) {
		class_set(c, L_IDLE); /* a fresh period to say 421 and close */
		e->ops.idle(c->app);
		if (c->state != st || (c->flags & F_DEAD))
			return;
	}
	terminate(c, TCP_CLOSE_TIMEOUT_IDLE, true);
}

static void
class_fire(struct tcp_conn *c, int l)
{
	struct tcp_engine *e = c->eng;

	switch (l) {
	case L_HANDSHAKE:
		e->cnt.timeout_handshake++;
		terminate(c, TCP_CLOSE_TIMEOUT_RTO, false); /* no app yet */
		break;
	case L_IDLE: idle_fire(c); break;
	case L_FIN_WAIT2: terminate(c, TCP_CLOSE_TIMEOUT_FIN_WAIT2, true); break;
	default: terminate(c, TCP_CLOSE_TIMEOUT_LIFETIME, true); break;
	}
}

static void
lists_run(struct tcp_engine *e)
{
	for (int l = L_HANDSHAKE; l < L_COUNT; l++) {
		uint32_t to = class_timeout(e, l);
		for (;;) {
			uint32_t i = e->lists[l].head;
			struct tcp_conn *c;
			if (i == NIL)
				break;
			c = &e->tcbs[i];
			if (!TIME_DUE((l == L_LIFETIME ? c->created_ms : c->list_ms) + to,
				      e->now_ms))
				break;
			conn_enter(c);
			class_fire(c, l);
			if (!(c->flags & F_DEAD) && e->lists[l].head == i &&
			    TIME_DUE((l == L_LIFETIME ? c->created_ms : c->list_ms) + to,
				     e->now_ms)) {
				/* firing must move it; never spin on one TCB */
				if (l == L_LIFETIME)
					list_unlink(e, &e->lists[l], LK_LIFE, i);
				else
					class_set(c, L_NONE);
			}
			conn_leave(c);
		}
	}
}

/* Send-pool chunks are free again: tell the waiting apps, oldest first. */
static void
space_run(struct tcp_engine *e)
{
	while (e->space_wait.head != NIL && e->snd.n_free > 0) {
		struct tcp_conn *c = &e->tcbs[e->space_wait.head];
		list_unlink(e, &e->space_wait, LK_SPACE, conn_idx(c));
		c->flags &= (uint16_t)~F_WANT_SPACE;
		if (c->app && e->ops.sent) {
			conn_enter(c);
			e->ops.sent(c->app);
			conn_leave(c);
		}
	}
}

void
tcp_engine_tick(struct tcp_engine *e, uint64_t now_us)
{
	clock_set(e, now_us);
	cookie_rotate(e);
	wheel_run(e);
	lists_run(e);
	space_run(e);
}

/* --------------------------------------------------------------- API */

uint32_t
tcp_send_space(const struct tcp_conn *c)
{
	const struct tcp_engine *e = c->eng;
	uint32_t room, pool, tail_free = 0;

	if (!tcp_states[c->state].can_send || (c->flags & (F_CLOSE | F_DEAD)))
		return 0;
	room = e->p.sndbuf_bytes > c->sb_len ? e->p.sndbuf_bytes - c->sb_len : 0;
	if (c->sb_len && (c->sb_off + c->sb_len) % TCP_CHUNK)
		tail_free = TCP_CHUNK - (c->sb_off + c->sb_len) % TCP_CHUNK;
	pool = e->snd.n_free * TCP_CHUNK + tail_free;
	return min32(room, pool);
}

uint32_t
tcp_send(struct tcp_conn *c, const void *p, uint32_t n)
{
	struct tcp_engine *e = c->eng;
	struct tcp_pool *pl = &e->snd;
	const uint8_t *src = p;
	uint32_t done = 0, room;

	if (!tcp_states[c->state].can_send || (c->flags & (F_CLOSE | F_DEAD)) || n == 0)
		return 0;
	room = e->p.sndbuf_bytes > c->sb_len ? e->p.sndbuf_bytes - c->sb_len : 0;
	n = min32(n, room);
	while (done < n) {
		uint32_t pos = (c->sb_off + c->sb_len) % TCP_CHUNK, chunk;
		if (c->sb_head == NIL || (pos == 0 && c->sb_len + c->sb_off > 0)) {
			uint32_t k = pool_get(pl);
			if (k == NIL) {
				e->cnt.sndbuf_pool_empty++;
				if (!(c->flags & F_WANT_SPACE)) {
					c->flags |= F_WANT_SPACE;
					list_push(e, &e->space_wait, LK_SPACE, conn_idx(c));
				}
				break;
			}
			if (c->sb_head == NIL)
				c->sb_head = k;
			else
				pl->next[c->sb_tail] = k;
			c->sb_tail = k;
		}
		chunk = min32(TCP_CHUNK - pos, n - done);
		memcpy(pl->data + (size_t)c->sb_tail * TCP_CHUNK + pos, src + done, chunk);
		c->sb_len += chunk;
		done += chunk;
	}
	if (done) {
		conn_enter(c);
		c->flags |= F_OUTPUT;
		conn_leave(c);
	}
	return done;
}

void
tcp_close(struct tcp_conn *c)
{
	if (!tcp_states[c->state].can_send || (c->flags & (F_CLOSE | F_DEAD)))
		return;
	conn_enter(c);
	c->flags |= F_CLOSE | F_OUTPUT;
	set_state(c, tcp_states[c->state].on_close);
	conn_leave(c);
}

void
tcp_abort(struct tcp_conn *c)
{
	if (c->flags & F_DEAD || c->state == ST_CLOSED)
		return;
	conn_enter(c);
	terminate(c, TCP_CLOSE_ABORT, true);
	conn_leave(c);
}

void
tcp_rcv_window_update(struct tcp_conn *c)
{
	struct tcp_engine *e = c->eng;
	uint32_t space, grow;

	if (!tcp_states[c->state].rx_data || (c->flags & F_DEAD) || !c->app || !e->ops.rcv_space)
		return;
	space = min32(e->ops.rcv_space(c->app), 65535u << c->rcv_ws);
	if (!SEQ_GT(c->rcv_nxt + space, c->rcv_adv))
		return;
	grow = c->rcv_nxt + space - c->rcv_adv;
	if (grow >= c->mss || grow >= space / 2) {
		conn_enter(c);
		e->cnt.window_updates++;
		c->flags |= F_ACK_NOW;
		conn_leave(c);
	}
}

const char *
tcp_conn_state_name(const struct tcp_conn *c)
{
	return tcp_states[c->state < ST_COUNT ? c->state : ST_CLOSED].name;
}

uint32_t
tcp_conn_size(void)
{
	return (uint32_t)sizeof(struct tcp_conn);
}

uint32_t
tcp_engine_active(const struct tcp_engine *e)
{
	return e->n_active;
}

const struct tcp_counters *
tcp_engine_counters(const struct tcp_engine *e)
{
	return &e->cnt;
}

/* ----------------------------------------------------- create/destroy */

void
tcp_engine_destroy(struct tcp_engine *e)
{
	if (!e)
		return;
	free(e->tcbs);
	free(e->buckets);
	free(e->wheel);
	pool_fini(&e->snd);
	pool_fini(&e->ooo);
	free(e);
}

static bool
params_ok(const struct tcp_params *p, const struct tcp_ops *ops)
{
	return p && ops && ops->output && ops->open && ops->recv && ops->closed &&
	       p->max_flows > 0 && p->max_flows < (1u << 28) && p->ports && p->n_ports > 0 &&
	       p->n_ports <= 64 && p->sndbuf_bytes > 0 && p->max_retries > 0 &&
	       p->max_retries < 200 && p->rto_min_ms > 0 && p->rto_max_ms >= p->rto_min_ms &&
	       p->idle_timeout_ms > 0 && p->handshake_timeout_ms > 0 && p->lifetime_ms > 0;
}

struct tcp_engine *
tcp_engine_create(const struct tcp_params *p, const struct tcp_ops *ops, void *ctx, uint64_t now_us)
{
	struct tcp_engine *e;
	uint32_t nb = 1;

	if (!params_ok(p, ops)) {
		errno = EINVAL;
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		goto fail;
	e->p = *p;
	e->ops = *ops;
	e->ctx = ctx;
	memcpy(e->ports, p->ports, p->n_ports * sizeof(uint16_t));
	e->p.ports = e->ports;
	/* MSS: a chunk must hold a whole segment; IPv6 never below 1220. */
	e->p.mss4 = (uint16_t)min32(max32(p->mss4 ? p->mss4 : 1460, 536), TCP_CHUNK);
	e->p.mss6 = (uint16_t)min32(max32(p->mss6 ? p->mss6 : 1440, 1220), TCP_CHUNK);
	if (!e->p.fin_wait2_ms)
		e->p.fin_wait2_ms = 10000;
	e->p.synack_window = min32(p->synack_window ? p->synack_window : TCP_SYNACK_WIN, 65535);
	e->start_us = e->now_us = now_us;
	e->master[0] = p->secret_seed ^ 0x243f6a8885a308d3ULL;
	e->master[1] = (p->secret_seed * 0x9e3779b97f4a7c15ULL) ^ 0x13198a2e03707344ULL;
	key_derive(e, e->ck_cur, 1);
	key_derive(e, e->ck_prev, 2);
	e->hkey = siphash24(e->master, (const uint8_t *)"flowhash", 8);
	e->rst_last_us = now_us;
	e->rst_tokens = (uint64_t)max32(p->rst_rate_per_s, 1) * 1000000ULL;
	e->tcbs = calloc(p->max_flows, sizeof(struct tcp_conn));
	while (nb < 2 * p->max_flows)
		nb <<= 1;
	e->buckets = malloc(nb * sizeof(uint32_t));
	e->wheel = malloc(WHEEL_SLOTS * sizeof(struct tcp_list));
	if (!e->tcbs || !e->buckets || !e->wheel)
		goto fail;
	e->bucket_mask = nb - 1;
	memset(e->buckets, 0xff, nb * sizeof(uint32_t));
	memset(e->wheel, 0xff, WHEEL_SLOTS * sizeof(struct tcp_list));
	memset(e->lists, 0xff, sizeof(e->lists));
	e->expired.head = e->expired.tail = NIL;
	e->space_wait.head = e->space_wait.tail = NIL;
	e->free_head = NIL;
	for (uint32_t i = p->max_flows; i-- > 0;) {
		e->tcbs[i].eng = e;
		e->tcbs[i].hnext = e->free_head;
		e->free_head = i;
	}
	if (pool_init(&e->snd, p->sndbuf_pool_bytes, false) ||
	    pool_init(&e->ooo, p->ooo_pool_bytes, true))
		goto fail;
	e->ooo_max_chunks = p->ooo_max_bytes / TCP_CHUNK;
	return e;
fail:
	tcp_engine_destroy(e);
	errno = ENOMEM;
	return NULL;
}
