/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_dataplane.c — the dataplane library links with common/ alone: the
 * worker loop and the session layer, with the TCP and SMTP engines behind
 * them, and no control plane. A call into control/ from dataplane/ fails
 * to link this test. Run without EAL: it checks what needs no memory from
 * it: that the dataplane's real sizes stay within the costs the
 * configuration sizes flows with (common/sizing.h), and the pure parts the
 * session layer decides idle pressure with: the idle timeout at each fill
 * level, and which SMTP sessions wait idle between commands and how one is
 * closed to make room; and, on a virtual clock, how sessions that pin the
 * session-buffer pool (a partial line, an open transaction) are closed,
 * oldest input first, for a session that waits for a buffer.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/sizing.h"

#include "dataplane/session.h"
#include "dataplane/smtp.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"
#include "tests/check.h"

static void
check_links(void)
{
	/* Taking their addresses makes the linker pull in the objects that
	 * hold them, with everything they call. */
	void *volatile entry[] = {
		(void *)worker_create,     (void *)worker_main,     (void *)worker_destroy,
		(void *)sess_layer_create, (void *)sess_layer_poll, (void *)dp_stats_total,
	};
	unsigned i;

	for (i = 0; i < sizeof(entry) / sizeof(entry[0]); i++)
		CHECK(entry[i] != NULL, "entry %u", i);
	CHECK(sess_layer_slot_bytes() > 0);
	/* A slot with its flow-table buckets (up to four 4-byte heads per
	 * flow: the table is the power of two at or above twice the flows). */
	CHECK(sess_layer_slot_bytes() + 16 <= SIZING_SLOT_BYTES,
	      "a slot is %zu bytes, sizing says %u", sess_layer_slot_bytes(), SIZING_SLOT_BYTES);
	CHECK(sess_layer_buffer_bytes() <= SIZING_BUFFER_BYTES,
	      "a session buffer is %zu bytes, sizing says %u", sess_layer_buffer_bytes(),
	      SIZING_BUFFER_BYTES);
	printf("dataplane: slot %zu bytes, session buffer %zu bytes\n", sess_layer_slot_bytes(),
	       sess_layer_buffer_bytes());
}

/* ------------------------------------------------ the idle timeout's fill */

struct timeout_row {
	uint32_t flows, pct, idle_s, min_s, in_use;
	uint32_t want_ms;
};

static const struct timeout_row timeout_rows[] = {
	/* 1,000 flows, shortening from 750 in use, 300 s down to 30 s */
	{ 1000, 75, 300, 30, 0, 300000 },
	{ 1000, 75, 300, 30, 750, 300000 },
	{ 1000, 75, 300, 30, 751, 298920 }, /* 270 s over 250 slots: 1,080 ms each */
	{ 1000, 75, 300, 30, 875, 165000 }, /* half way */
	{ 1000, 75, 300, 30, 999, 31080 },
	{ 1000, 75, 300, 30, 1000, 30000 },
	{ 1000, 75, 300, 30, 1200, 30000 }, /* never below the shortest */
	/* 100: never shortened; the shortest equal to the timeout: no change */
	{ 1000, 100, 300, 30, 1000, 300000 },
	{ 1000, 75, 60, 60, 1000, 60000 },
	/* 1%: from the first slot on */
	{ 64, 1, 300, 10, 0, 300000 },
	{ 64, 1, 300, 10, 32, 155000 },
	{ 64, 1, 300, 10, 64, 10000 },
	/* the largest values: no overflow */
	{ 16777216, 50, 3600, 1, 16777216, 1000 },
	{ 16777216, 50, 3600, 1, 12582912, 1800500 },
};

static void
check_idle_timeouts(void)
{
	unsigned i;

	for (i = 0; i < sizeof(timeout_rows) / sizeof(timeout_rows[0]); i++) {
		const struct timeout_row *r = &timeout_rows[i];
		struct sess_params p = {
			.flows = r->flows,
			.idle_timeout_s = r->idle_s,
			.idle_pressure_pct = r->pct,
			.idle_timeout_min_s = r->min_s,
		};
		uint32_t got = sess_idle_timeout_ms(&p, r->in_use);

		CHECK(got == r->want_ms, "row %u: %u in use of %u at %u%%: %u ms, want %u", i,
		      r->in_use, r->flows, r->pct, got, r->want_ms);
	}
}

/* ------------------------------------------- SMTP sessions waiting idle */

struct fake {
	char out[2048];
	size_t out_len;
	uint32_t room; /* write() takes at most this much; UINT32_MAX: all */
	unsigned closes;
	bool pend_mail; /* MAIL's check stays pending */
	uint32_t token;
};

static uint32_t
f_write(void *ctx, const void *p, uint32_t n)
{
	struct fake *f = ctx;

	if (n > f->room)
		n = f->room;
	if (n > sizeof(f->out) - 1 - f->out_len)
		n = (uint32_t)(sizeof(f->out) - 1 - f->out_len);
	memcpy(f->out + f->out_len, p, n);
	f->out_len += n;
	f->out[f->out_len] = '\0';
	return n;
}

static void
f_close(void *ctx)
{
	((struct fake *)ctx)->closes++;
}

static int
f_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct fake *f = ctx;

	(void)v;
	if (chk->stage == SMTP_STAGE_MAIL && f->pend_mail) {
		f->token = chk->token;
		return SMTP_CHECK_PENDING;
	}
	return SMTP_CHECK_DONE;
}

static void *
f_chunk_get(void *ctx, uint32_t *cap)
{
	static uint8_t chunk[4096];

	(void)ctx;
	*cap = sizeof(chunk);
	return chunk;
}

static void
f_chunk_put(void *ctx, void *chunk)
{
	(void)ctx;
	(void)chunk;
}

/* One session buffer, lent to whichever session asks: the tests below
 * hold one session at a time. */
static _Alignas(64) uint8_t buf_mem[65536];
static bool buf_lent;

static void *
f_buf_get(void *ctx)
{
	(void)ctx;
	if (buf_lent || smtp_buf_size() > sizeof(buf_mem))
		return NULL;
	buf_lent = true;
	return buf_mem;
}

static void
f_buf_put(void *ctx, void *buf)
{
	(void)ctx;
	CHECK(buf == buf_mem && buf_lent, "a buffer given back that was lent");
	buf_lent = false;
}

static bool
f_domain(const void *arg, const char *domain, size_t len)
{
	(void)arg;
	return len == 11 && memcmp(domain, "example.net", len) == 0;
}

static const struct smtp_ops f_ops = {
	.write = f_write,
	.close = f_close,
	.check = f_check,
	.chunk_get = f_chunk_get,
	.chunk_put = f_chunk_put,
	.buf_get = f_buf_get,
	.buf_put = f_buf_put,
};

static const struct smtp_params f_params = {
	.hostname = "mx.example.net",
	.domain_accepted = f_domain,
};

static const struct smtp_peer f_peer = { .family = 6, .addr = { 0x20, 0x01, 0x0d, 0xb8 } };

static _Alignas(64) uint8_t session_mem[65536];

static struct smtp_session *
open_session(struct fake *f)
{
	struct smtp_session *s;

	memset(f, 0, sizeof(*f));
	f->room = UINT32_MAX;
	if (!CHECK(smtp_session_size() <= sizeof(session_mem), "session of %zu bytes",
		   smtp_session_size()))
		return NULL;
	s = smtp_session_init(session_mem, sizeof(session_mem), &f_params, &f_ops, f, &f_peer);
	if (s)
		smtp_session_start(s);
	return s;
}

static void
feed(struct smtp_session *s, const char *text)
{
	smtp_session_feed(s, (const uint8_t *)text, (uint32_t)strlen(text));
}

static void
check_awaits_command(void)
{
	struct smtp_verdict pass = { 0 };
	struct smtp_session *s;
	struct fake f;

	s = open_session(&f);
	if (!CHECK(s != NULL))
		return;
	CHECK(smtp_session_awaits_command(s), "greeted: idle");
	feed(s, "EHL");
	CHECK(smtp_session_awaits_command(s), "a partial command line: idle");
	feed(s, "O client.example\r\n");
	CHECK(smtp_session_awaits_command(s), "after EHLO: idle");
	f.pend_mail = true;
	feed(s, "MAIL FROM:<a@example.org>\r\n");
	CHECK(!smtp_session_awaits_command(s), "MAIL's verdict pending: busy");
	smtp_session_verdict(s, f.token, &pass);
	CHECK(smtp_session_awaits_command(s), "MAIL answered: idle");
	feed(s, "RCPT TO:<b@example.net>\r\n");
	CHECK(smtp_session_awaits_command(s), "after RCPT: idle");
	feed(s, "DATA\r\nSubject: x\r\n");
	CHECK(!smtp_session_awaits_command(s), "inside a body: busy");
	smtp_session_fini(s);

	/* A reply not yet handed to the transport is something pending. */
	s = open_session(&f);
	if (!CHECK(s != NULL))
		return;
	f.room = 0;
	feed(s, "NOOP\r\n");
	CHECK(!smtp_session_awaits_command(s), "a reply unsent: busy");
	f.room = UINT32_MAX;
	smtp_session_writable(s);
	CHECK(smtp_session_awaits_command(s), "the reply sent: idle");
	smtp_session_peer_closed(s);
	CHECK(!smtp_session_awaits_command(s), "after the peer's FIN: not waiting");
	smtp_session_fini(s);
}

static void
check_evict(void)
{
	struct smtp_session *s;
	struct fake f;
	size_t before;

	s = open_session(&f);
	if (!CHECK(s != NULL))
		return;
	feed(s, "EHLO client.example\r\n");
	before = f.out_len;
	smtp_session_evict(s);
	CHECK(strcmp(f.out + before,
		     "421 4.7.0 mx.example.net Too many connections, closing idle session\r\n") ==
		      0,
	      "the eviction's reply: \"%s\"", f.out + before);
	CHECK(f.closes == 1, "closed %u times", f.closes);
	CHECK(!smtp_session_awaits_command(s), "closing: not waiting");
	before = f.out_len;
	smtp_session_evict(s);
	feed(s, "NOOP\r\n");
	CHECK(f.out_len == before && f.closes == 1, "nothing after the close");
	smtp_session_fini(s);
	/* An idle session holds no buffer; with the pool dry the 421 goes
	 * straight to the transport. */
	s = open_session(&f);
	if (!CHECK(s != NULL))
		return;
	feed(s, "EHLO client.example\r\n");
	CHECK(!buf_lent, "an idle session holds no buffer");
	buf_lent = true;
	before = f.out_len;
	smtp_session_evict(s);
	CHECK(strcmp(f.out + before,
		     "421 4.7.0 mx.example.net Too many connections, closing idle session\r\n") ==
		      0,
	      "the eviction's reply with the pool dry: \"%s\"", f.out + before);
	CHECK(f.closes == 1, "closed %u times with the pool dry", f.closes);
	buf_lent = false;
	smtp_session_fini(s);
}

/* ------------------------------------------ holders of session buffers */

#define HOLD_BUFS  3
#define HOLD_SESS  5
#define HOLD_FLOOR 10000000u /* µs, as the session layer's floor */

/* A session over a pool of HOLD_BUFS buffers, with the glue's holder list
 * kept as the session layer keeps it: input touches, a buffer given back
 * takes the session off. */
struct psess {
	struct fake f; /* first: the fake ops take it */
	struct smtp_session *s;
	uint32_t idx;
	_Alignas(64) uint8_t mem[8192];
};

static _Alignas(64) uint8_t hold_bufs[HOLD_BUFS][16384];
static void *hold_free[HOLD_BUFS];
static unsigned hold_nfree, hold_empty;
static struct sess_hold hold_nodes[HOLD_SESS];
static struct sess_holders holders;
static struct psess psess[HOLD_SESS];
static uint64_t hold_now;

static void *
h_buf_get(void *ctx)
{
	(void)ctx;
	if (hold_nfree == 0) {
		hold_empty++;
		return NULL;
	}
	return hold_free[--hold_nfree];
}

static void
h_buf_put(void *ctx, void *buf)
{
	struct psess *x = ctx;

	hold_free[hold_nfree++] = buf;
	sess_hold_remove(&holders, x->idx);
}

static const struct smtp_ops h_ops = {
	.write = f_write,
	.close = f_close,
	.check = f_check,
	.chunk_get = f_chunk_get,
	.chunk_put = f_chunk_put,
	.buf_get = h_buf_get,
	.buf_put = h_buf_put,
};

static bool
h_may_close(void *arg, uint32_t idx)
{
	(void)arg;
	return smtp_session_evictable(psess[idx].s);
}

static struct psess *
h_open(uint32_t idx)
{
	struct psess *x = &psess[idx];

	memset(&x->f, 0, sizeof(x->f));
	x->f.room = UINT32_MAX;
	x->idx = idx;
	x->s = smtp_session_init(x->mem, sizeof(x->mem), &f_params, &h_ops, x, &f_peer);
	if (x->s)
		smtp_session_start(x->s);
	return x;
}

static bool
h_held(const struct psess *x)
{
	struct smtp_session_stats st;

	smtp_session_stats(x->s, &st);
	return st.buf_held;
}

/* Input at hold_now: what the session layer's tcp_recv does. */
static void
h_feed(struct psess *x, const char *text)
{
	feed(x->s, text);
	if (h_held(x))
		sess_hold_touch(&holders, x->idx, hold_now);
}

/* The session layer's poll, for one waiting session: close the holder it
 * picks, if any. */
static uint32_t
h_evict(void)
{
	uint32_t idx = sess_hold_pick(&holders, hold_now, HOLD_FLOOR, h_may_close, NULL);

	if (idx != SESS_HOLD_NONE) {
		sess_hold_remove(&holders, idx);
		smtp_session_evict(psess[idx].s);
	}
	return idx;
}

static void
check_holders(void)
{
	static const char evicted[] =
		"421 4.7.0 mx.example.net Too many connections, closing idle session\r\n";
	struct psess *x, *late;
	uint32_t i, got;
	size_t before;

	sess_hold_init(&holders, hold_nodes, HOLD_SESS);
	for (i = 0; i < HOLD_BUFS; i++)
		hold_free[i] = hold_bufs[i];
	hold_nfree = HOLD_BUFS;
	if (!CHECK(smtp_buf_size() <= sizeof(hold_bufs[0])) ||
	    !CHECK(smtp_session_size() <= sizeof(psess[0].mem)))
		return;

	/* Three holders pin the pool: the oldest with MAIL's verdict pending,
	 * then a partial line, then an open transaction. */
	hold_now = 0;
	x = h_open(0);
	x->f.pend_mail = true;
	h_feed(x, "EHLO a.example\r\nMAIL FROM:<a@example.org>\r\n");
	CHECK(!smtp_session_evictable(x->s), "a verdict pending: not evictable");
	hold_now = 1000000;
	x = h_open(1);
	h_feed(x, "EHLO b.example\r\nMAIL FROM:<b@exa");
	CHECK(smtp_session_evictable(x->s), "a partial line: evictable");
	hold_now = 2000000;
	x = h_open(2);
	h_feed(x, "EHLO c.example\r\nMAIL FROM:<c@example.org>\r\n");
	CHECK(smtp_session_evictable(x->s), "an open transaction: evictable");
	CHECK(hold_nfree == 0, "%u buffers free, want the pool pinned", hold_nfree);

	/* A newcomer finds none; every holder is inside the floor: it waits. */
	hold_now = 5000000;
	late = h_open(3);
	CHECK(hold_empty == 1 && late->f.out_len == 0, "the newcomer waits for a buffer");
	CHECK(h_evict() == SESS_HOLD_NONE, "a holder inside the floor is not closed");
	CHECK(psess[1].f.closes == 0 && psess[2].f.closes == 0, "nobody closed inside the floor");

	/* Past the floor: the verdict-pending head is passed over, and the
	 * partial line, the oldest input, gets the 421, written with its own
	 * buffer, which comes back. */
	hold_now = 12000000;
	before = psess[1].f.out_len;
	got = h_evict();
	CHECK(got == 1, "evicted %u, want the partial line's session 1", got);
	CHECK(strcmp(psess[1].f.out + before, evicted) == 0, "the holder's 421: \"%s\"",
	      psess[1].f.out + before);
	CHECK(psess[1].f.closes == 1, "the holder closed %u times", psess[1].f.closes);
	CHECK(hold_empty == 1, "the 421 took a buffer from the pool (%u empty finds)", hold_empty);
	CHECK(hold_nfree == 1, "%u buffers free after the eviction, want 1", hold_nfree);
	CHECK(psess[0].f.closes == 0, "the session with a verdict pending was closed");

	/* The newcomer goes on with the buffer. */
	smtp_session_writable(late->s);
	CHECK(strncmp(late->f.out, "220 ", 4) == 0, "the newcomer's greeting: \"%s\"", late->f.out);
	h_feed(late, "EHLO d.example\r\nMAIL FROM:<d@exa");
	CHECK(hold_nfree == 0, "the newcomer holds the buffer");

	/* Input restarts a holder's time: the open transaction, touched at
	 * 13 s, is inside the floor at 14 s, and so is the first newcomer
	 * (12 s); the next newcomer waits. */
	hold_now = 13000000;
	h_feed(&psess[2], "RCPT TO:<x@exa");
	hold_now = 14000000;
	x = h_open(4);
	CHECK(hold_empty == 2 && x->f.out_len == 0, "the second newcomer waits");
	CHECK(h_evict() == SESS_HOLD_NONE, "a holder with recent input is not closed");
	/* Later, the oldest input goes first: the first newcomer (12 s), not
	 * session 2, whose first byte was older but its latest newer (13 s). */
	hold_now = 22500000;
	got = h_evict();
	CHECK(got == 3, "evicted %u, want the first newcomer, 3", got);
	CHECK(late->f.closes == 1 && psess[2].f.closes == 0, "the oldest input closed first");
	smtp_session_writable(x->s);
	CHECK(strncmp(x->f.out, "220 ", 4) == 0, "the second newcomer's greeting");
	CHECK(h_evict() == SESS_HOLD_NONE, "session 2 is inside the floor until 23 s");
	hold_now = 23000000;
	CHECK(h_evict() == 2, "then session 2");

	for (i = 0; i < HOLD_SESS; i++)
		smtp_session_fini(psess[i].s);
	CHECK(hold_nfree == HOLD_BUFS, "%u of %u buffers back", hold_nfree, HOLD_BUFS);
}

int
main(void)
{
	check_links();
	check_idle_timeouts();
	check_awaits_command();
	check_evict();
	check_holders();
	return check_done();
}
