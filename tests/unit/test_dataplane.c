/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_dataplane.c — the dataplane library links with common/ alone: the
 * worker loop and the session layer, with the TCP and SMTP engines behind
 * them, and no control plane. A call into control/ from dataplane/ fails
 * to link this test. Run without EAL: it checks what needs no memory from
 * it, the pure parts the session layer decides idle pressure with: the
 * idle timeout at each fill level, and which SMTP sessions wait idle
 * between commands and how one is closed to make room.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
	printf("dataplane: slot %zu bytes\n", sess_layer_slot_bytes());
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
}

int
main(void)
{
	check_links();
	check_idle_timeouts();
	check_awaits_command();
	check_evict();
	return check_done();
}
