/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_pool.c — many SMTP sessions sharing a session-buffer pool
 * far smaller than they need, as a worker's sessions share theirs.
 *
 * Sixteen sessions are opened and greeted; idle, they must hold no buffer.
 * Then each sends a whole transaction (EHLO, MAIL, RCPT, DATA, a body of
 * its own, QUIT) in random pieces, interleaved at random, with random short
 * writes and MAIL verdicts answered at random later moments, through a pool
 * of two buffers. A session that finds the pool dry is fed nothing more
 * until a buffer comes back and writable() is called (the worker closes its
 * TCP window meanwhile). Every session must give the replies of a session
 * that never waited, byte for byte, and record its body byte-exact; the
 * pool must have run dry, and every buffer must come back.
 *
 * Usage: smtp_pool [SEEDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/smtp.h"
#include "tests/check.h"

#define NSESS 16
#define NBUFS 2

struct sess {
	int idx;
	struct smtp_session *s;
	char *in;
	size_t in_len, in_pos;
	char out[4096];
	size_t out_len;
	char *body;
	size_t body_len;
	bool got_body, closed, waiting, want_writable, pend;
	uint32_t token;
	bool buf_held;
};

static struct sess sess[NSESS];
static void *pool[NBUFS];
static unsigned pool_free;
static int waitq[NSESS * 4];
static unsigned wq_head, wq_tail;
static uint64_t rng, dry;
static bool short_writes, pend_mail;
static unsigned held_max;

static void *
xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? (uint32_t)(rng % n) : 0;
}

static uint32_t
p_write(void *ctx, const void *p, uint32_t n)
{
	struct sess *x = ctx;
	uint32_t k = n;

	if (short_writes && rnd(2) == 0)
		k = rnd(n + 1);
	if (x->out_len + k > sizeof(x->out))
		k = (uint32_t)(sizeof(x->out) - x->out_len);
	memcpy(x->out + x->out_len, p, k);
	x->out_len += k;
	if (k < n)
		x->want_writable = true;
	return k;
}

static void
p_close(void *ctx)
{
	((struct sess *)ctx)->closed = true;
}

static int
p_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct sess *x = ctx;

	(void)v;
	if (chk->stage == SMTP_STAGE_MAIL && pend_mail && rnd(2) == 0) {
		x->pend = true;
		x->token = chk->token;
		return SMTP_CHECK_PENDING;
	}
	return SMTP_CHECK_DONE;
}

static void *
p_chunk_get(void *ctx, uint32_t *cap)
{
	(void)ctx;
	*cap = 1000;
	return xmalloc(1000);
}

static void
p_chunk_put(void *ctx, void *c)
{
	(void)ctx;
	free(c);
}

static void *
p_buf_get(void *ctx)
{
	struct sess *x = ctx;
	unsigned held = NBUFS;

	if (pool_free == 0) {
		dry++;
		if (!x->waiting) {
			x->waiting = true;
			waitq[wq_tail++ % (NSESS * 4)] = x->idx;
		}
		return NULL;
	}
	x->buf_held = true;
	held -= --pool_free;
	if (held > held_max)
		held_max = held;
	return pool[pool_free];
}

static void
p_buf_put(void *ctx, void *buf)
{
	((struct sess *)ctx)->buf_held = false;
	pool[pool_free++] = buf;
}

static void
p_record(void *ctx, const struct smtp_record *r)
{
	struct sess *x = ctx;
	const struct chunk *c;
	size_t off = 0;
	bool same = true;

	if (r->smtp.kind != TXREC_TRANSACTION || r->body == NULL)
		return;
	for (c = r->body; c != NULL; c = c->next) {
		if (off + c->len > x->body_len || memcmp(x->body + off, c->data, c->len) != 0)
			same = false;
		off += c->len;
	}
	x->got_body = same && off == x->body_len;
}

static bool
p_domain(const void *arg, const char *d, size_t len)
{
	(void)arg;
	return len == 11 && memcmp(d, "example.com", 11) == 0;
}

static const struct smtp_ops ops = {
	.write = p_write,
	.close = p_close,
	.check = p_check,
	.chunk_get = p_chunk_get,
	.chunk_put = p_chunk_put,
	.buf_get = p_buf_get,
	.buf_put = p_buf_put,
	.record = p_record,
};

static const struct smtp_params params = {
	.hostname = "mx.example.com",
	.domain_accepted = p_domain,
};

static const struct smtp_peer peer = { 6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 }, 40000 };

/* A client script with a body of its own (no line starts with a dot). */
static void
script(struct sess *x, int idx)
{
	size_t cap = 8192, n = 0, b0;
	int lines = 5 + (int)rnd(60), i, j;

	x->in = xmalloc(cap);
	n += (size_t)sprintf(x->in + n,
			     "EHLO c%d.example.net\r\nMAIL FROM:<a%d@example.net>\r\n"
			     "RCPT TO:<b@example.com>\r\nDATA\r\n",
			     idx, idx);
	b0 = n;
	for (i = 0; i < lines; i++) {
		int len = (int)rnd(90);

		for (j = 0; j < len; j++)
			x->in[n++] = (char)('a' + rnd(26));
		x->in[n++] = '\r';
		x->in[n++] = '\n';
	}
	x->body = xmalloc(n - b0);
	memcpy(x->body, x->in + b0, n - b0);
	x->body_len = n - b0;
	n += (size_t)sprintf(x->in + n, ".\r\nQUIT\r\n");
	x->in_len = n;
}

static void
answer(struct sess *x)
{
	static const struct smtp_verdict ok = { 0 };

	x->pend = false;
	smtp_session_verdict(x->s, x->token, &ok);
}

/* Buffers came back: the oldest waiting sessions go on, as the worker
 * wakes them (one per free buffer). */
static void
wake(void)
{
	unsigned n = pool_free;

	while (n-- > 0 && wq_head != wq_tail) {
		struct sess *x = &sess[waitq[wq_head++ % (NSESS * 4)]];

		x->waiting = false;
		smtp_session_writable(x->s);
	}
}

static void
run(uint64_t seed, const char *ref, size_t ref_len)
{
	unsigned i, guard = 0, open = NSESS;
	uint64_t dry0 = dry;

	rng = seed * 0x9e3779b97f4a7c15ull + 7;
	short_writes = seed % 2;
	pend_mail = seed % 3 != 0;
	wq_head = wq_tail = 0;
	for (i = 0; i < NSESS; i++) {
		struct sess *x = &sess[i];

		memset(x, 0, sizeof(*x));
		x->idx = (int)i;
		script(x, (int)i);
		x->s = smtp_session_init(xmalloc(smtp_session_size()), smtp_session_size(), &params,
					 &ops, x, &peer);
		smtp_session_start(x->s);
	}
	/* Greeted and idle (all written, so the short writes resumed first):
	 * no session holds a buffer. */
	for (guard = 0; guard < 1000; guard++) {
		wake();
		for (i = 0; i < NSESS; i++)
			if (sess[i].want_writable) {
				sess[i].want_writable = false;
				smtp_session_writable(sess[i].s);
			}
	}
	guard = 0;
	CHECK_EQ_INT(pool_free, NBUFS);
	for (i = 0; i < NSESS; i++)
		CHECK(!sess[i].buf_held, "idle session %u holds a buffer", i);

	while (open > 0 && guard++ < 200000) {
		struct sess *x = &sess[rnd(NSESS)];

		wake();
		if (x->pend && rnd(3) == 0)
			answer(x);
		if (x->want_writable && rnd(2) == 0) {
			x->want_writable = false;
			smtp_session_writable(x->s);
		}
		if (!x->waiting && x->in_pos < x->in_len) {
			uint32_t want = 1 + rnd(rnd(4) == 0 ? 600 : 30);

			if (want > x->in_len - x->in_pos)
				want = (uint32_t)(x->in_len - x->in_pos);
			x->in_pos += smtp_session_feed(x->s, (uint8_t *)x->in + x->in_pos, want);
			if (x->in_pos == x->in_len)
				smtp_session_peer_closed(x->s);
		}
		for (open = 0, i = 0; i < NSESS; i++)
			open += !sess[i].closed || sess[i].want_writable || sess[i].pend;
	}
	CHECK(open == 0, "seed %llu: %u sessions never finished", (unsigned long long)seed, open);
	for (i = 0; i < NSESS; i++) {
		struct sess *x = &sess[i];

		CHECK(x->out_len == ref_len && memcmp(x->out, ref, ref_len) == 0,
		      "seed %llu session %u: replies differ: %.*s", (unsigned long long)seed, i,
		      (int)x->out_len, x->out);
		CHECK(x->got_body, "seed %llu session %u: body not recorded byte-exact",
		      (unsigned long long)seed, i);
		smtp_session_fini(x->s);
		free(x->s);
		free(x->in);
		free(x->body);
	}
	CHECK(held_max <= NBUFS);
	CHECK(dry > dry0, "seed %llu: the pool never ran dry", (unsigned long long)seed);
	CHECK_EQ_INT(pool_free, NBUFS);
}

int
main(int argc, char **argv)
{
	static const char ref[] =
		"220 mx.example.com ESMTP\r\n"
		"250-mx.example.com\r\n"
		"250-PIPELINING\r\n"
		"250-SIZE 10485760\r\n"
		"250-8BITMIME\r\n"
		"250-ENHANCEDSTATUSCODES\r\n"
		"250-SMTPUTF8\r\n"
		"250 CHUNKING\r\n"
		"250 2.1.0 Ok\r\n"
		"250 2.1.5 Ok\r\n"
		"354 End data with <CR><LF>.<CR><LF>\r\n"
		"250 2.0.0 Ok: queued\r\n"
		"221 2.0.0 Bye\r\n";
	unsigned seeds = argc > 1 ? (unsigned)atoi(argv[1]) : 30, k;

	for (k = 0; k < NBUFS; k++)
		pool[pool_free++] = xmalloc(smtp_buf_size());
	for (k = 1; k <= seeds; k++) {
		check_case_begin();
		run(k, ref, sizeof(ref) - 1);
		check_case_end();
	}
	for (k = 0; k < NBUFS; k++)
		free(pool[k]);
	return check_done();
}
