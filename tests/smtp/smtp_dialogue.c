/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_dialogue.c — golden dialogues for the SMTP engine.
 *
 * Each case is NAME.in (client bytes and directives for the verdict double)
 * and NAME.ref (the exact server output, then the checks asked, the
 * records written and the close). Every case is run whole, one byte at a
 * time, in seeded random splits with random short writes, random chunk
 * sizes and verdicts answered at random later moments, and in seeded
 * random splits where a third of the session-buffer requests find the pool
 * dry (the session waits; writable() resumes it, as the worker does when a
 * buffer comes back); all runs must give the .ref output byte for byte.
 * That is the proof that replies leave in command order whatever the
 * timing, and that a dry buffer pool loses and reorders nothing.
 *
 * .in syntax: a line is client input sent with CRLF appended, with escapes
 * \r \n \t \\ \xHH, and \c at the end of a line to append no CRLF. Lines
 * starting with '!' are directives:
 *   !param NAME=VALUE     hostname, max_cmd_line, max_text_line, max_rcpts,
 *                         max_msg_size, max_errors, max_pending_in,
 *                         pregreet_reject, domains (comma list)
 *   !verdict STAGE CODE [ENH [TEXT]]   next check at STAGE gets this answer
 *   !keep                 the verdict above keeps the message (keep_message):
 *                         the test, not the engine, gives its chunks back
 *   !pending STAGE|ALL    checks at STAGE are answered later, not at once
 *   !start                where smtp_session_start() happens (default: first)
 *   !answer               answer every pending check here
 *   !hold                 pending checks wait for !answer (unless input
 *                         cannot go on without the answer)
 *   !stale                deliver a verdict with a wrong token here
 *   !idle  !eof           idle timeout / peer closed, here
 *   !fill N C             N bytes of C, no CRLF
 *   !rep N LINE           LINE (escaped) with CRLF, N times
 *   !chunks N             at most N chunks lent at once
 *   !chunksize N          chunk size in bytes (else random in random runs)
 *   !# ...                comment
 *
 * Usage: smtp_dialogue [--print] [--random N] FILE.in|DIR...
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dataplane/smtp.h"
#include "tests/check.h"

enum ev_kind { EV_START, EV_ANSWER, EV_STALE, EV_IDLE, EV_EOF };

struct event {
	size_t off;
	enum ev_kind kind;
};

struct scripted {
	int stage;
	struct smtp_verdict v;
	char text[512];
};

struct tcase {
	char name[256];
	unsigned char *in;
	size_t len, cap;
	struct event ev[256];
	int nev;
	bool has_start;
	struct scripted script[64];
	int nscript;
	bool pending[SMTP_STAGE_COUNT];
	struct smtp_params params;
	char hostname[256];
	char domains[1024];
	uint32_t chunk_limit;
	bool has_chunk_limit;
	bool hold; /* answer only at !answer (or if starved) */
	uint32_t chunk_size;
};

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	buf_add(b, tmp, n < (int)sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void
buf_escaped(struct buf *b, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r')
			buf_add(b, "\\r", 2);
		else if (p[i] == '\n')
			buf_add(b, "\\n", 2);
		else if (p[i] == '\\' || p[i] == '"')
			buf_printf(b, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			buf_printf(b, "\\x%02x", p[i]);
		else
			buf_add(b, p + i, 1);
	}
}

/* ------------------------------------------------------------- the double */

struct run {
	const struct tcase *tc;
	int mode; /* 0 whole, 1 bytes, 2 random, 3 random with a dry buffer pool */
	uint64_t rng;
	struct smtp_session *s;
	struct buf out; /* raw reply bytes */
	struct buf events;
	int next_script;
	bool used[64];
	/* the pending check */
	bool pend;
	uint32_t pend_token;
	int pend_stage;
	uint64_t pend_feed; /* feed count when it was asked */
	uint64_t feeds;
	bool want_writable;
	int closes;
	int session_records;
	uint32_t chunks_out;
	uint32_t bufs_out;
	uint32_t buf_waits;
	uint32_t chunk_size;
	const struct chunk *pend_rcpts, *pend_body; /* lent to the check */
	char problem[256];
};

static uint64_t dry_waits; /* sessions that found the pool dry, all runs */

static uint32_t
rnd(struct run *r, uint32_t n)
{
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 7;
	r->rng ^= r->rng << 17;
	return n ? (uint32_t)(r->rng % n) : 0;
}

static uint32_t
d_write(void *ctx, const void *p, uint32_t n)
{
	struct run *r = ctx;
	uint32_t k = n;

	if (r->mode == 2 && rnd(r, 2) == 0)
		k = rnd(r, n + 1);
	buf_add(&r->out, p, k);
	if (k < n)
		r->want_writable = true;
	return k;
}

static void
d_close(void *ctx)
{
	struct run *r = ctx;

	r->closes++;
	buf_printf(&r->events, "#close\n");
}

static const struct scripted *
take_script(struct run *r, int stage)
{
	int i;

	for (i = 0; i < r->tc->nscript; i++) {
		if (!r->used[i] && r->tc->script[i].stage == stage) {
			r->used[i] = true;
			return &r->tc->script[i];
		}
	}
	return NULL;
}

static const struct smtp_verdict *
verdict_for(struct run *r, int stage)
{
	static const struct smtp_verdict none = { 0 };
	const struct scripted *sc = take_script(r, stage);

	return sc != NULL ? &sc->v : &none;
}

static void
chain_text(struct buf *b, const struct chunk *c, uint32_t n)
{
	uint32_t i = 0, off;

	for (; c != NULL && i < n; c = c->next) {
		for (off = 0; off < c->len && i < n; i++) {
			const char *a = (const char *)c->data + off;

			buf_printf(b, "%s<%s>", i ? "," : "", a);
			off += (uint32_t)strlen(a) + 1;
		}
	}
}

static int
d_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct run *r = ctx;

	buf_printf(&r->events, "#check %s", smtp_stage_name(chk->stage));
	if (chk->stage != SMTP_STAGE_CONNECT)
		buf_printf(&r->events, " helo=%s from=<%s>", chk->helo, chk->mail_from);
	if (chk->stage == SMTP_STAGE_RCPT)
		buf_printf(&r->events, " rcpt=<%s>", chk->rcpt);
	if (chk->stage == SMTP_STAGE_DATA_END) {
		buf_printf(&r->events, " rcpts=");
		chain_text(&r->events, chk->rcpts, chk->nrcpts);
		buf_printf(&r->events, " size=%llu", (unsigned long long)chk->body_size);
	}
	if (chk->stage == SMTP_STAGE_MAIL)
		buf_printf(&r->events, " sizeparam=%llu body=%d utf8=%d",
			   (unsigned long long)chk->size_param, chk->body_type, chk->smtputf8);
	buf_printf(&r->events, "\n");
	if (r->pend)
		snprintf(r->problem, sizeof(r->problem), "check while another is pending");
	if (r->tc->pending[chk->stage]) {
		r->pend = true;
		r->pend_token = chk->token;
		r->pend_stage = chk->stage;
		r->pend_feed = r->feeds;
		r->pend_rcpts = chk->rcpts;
		r->pend_body = chk->body;
		return SMTP_CHECK_PENDING;
	}
	*v = *verdict_for(r, chk->stage);
	return SMTP_CHECK_DONE;
}

static void *
d_chunk_get(void *ctx, uint32_t *cap)
{
	struct run *r = ctx;
	void *m;

	if (r->tc->has_chunk_limit && r->chunks_out >= r->tc->chunk_limit)
		return NULL;
	m = malloc(r->chunk_size);
	if (m == NULL)
		abort();
	r->chunks_out++;
	*cap = r->chunk_size;
	return m;
}

static void
d_chunk_put(void *ctx, void *chunk)
{
	struct run *r = ctx;

	r->chunks_out--;
	free(chunk);
}

/* The session buffer: in the dry-pool mode a third of the requests find
 * none, and the session must wait until writable(). */
static void *
d_buf_get(void *ctx)
{
	struct run *r = ctx;

	if (r->mode == 3 && rnd(r, 3) == 0) {
		r->buf_waits++;
		r->want_writable = true;
		return NULL;
	}
	if (r->bufs_out != 0)
		snprintf(r->problem, sizeof(r->problem), "a second buffer for one session");
	r->bufs_out++;
	return malloc(smtp_buf_size());
}

static void
d_buf_put(void *ctx, void *buf)
{
	struct run *r = ctx;

	if (r->bufs_out == 0)
		snprintf(r->problem, sizeof(r->problem), "buf_put without buf_get");
	r->bufs_out--;
	free(buf);
}

static void
d_record(void *ctx, const struct smtp_record *rec)
{
	static const char *const fl[] = { "pregreet", "delivered", "aborted",  "bare-nl",
					  "too-big",  "no-mem",    "long-line" };
	struct run *r = ctx;
	struct buf *b = &r->events;
	const struct chunk *c;
	uint64_t sum = 0;
	uint32_t i;

	if (rec->smtp.kind == TXREC_SESSION) {
		r->session_records++;
		buf_printf(b, "#record session helo=%s", rec->helo);
	} else {
		buf_printf(b, "#record txn helo=%s from=<%s> rcpts=", rec->helo, rec->mail_from);
		chain_text(b, rec->rcpts, rec->smtp.nrcpts);
		buf_printf(b, " size=%llu", (unsigned long long)rec->smtp.size);
		if (rec->body != NULL) {
			buf_printf(b, " body=\"");
			for (c = rec->body; c != NULL; c = c->next) {
				if (sum < 300)
					buf_escaped(
						b, c->data,
						c->len < 300 - sum ? c->len : (size_t)(300 - sum));
				sum += c->len;
			}
			buf_printf(b, sum <= 300 ? "\"" : "...\"");
			if (sum != rec->smtp.size)
				snprintf(r->problem, sizeof(r->problem),
					 "body chain %llu bytes, size %llu",
					 (unsigned long long)sum,
					 (unsigned long long)rec->smtp.size);
		}
	}
	buf_printf(b, " replies=");
	for (i = 0; i < rec->smtp.nreplies; i++)
		buf_printf(b, "%s%u", i ? "," : "", rec->smtp.replies[i]);
	if (rec->smtp.replies_dropped)
		buf_printf(b, "+%u", rec->smtp.replies_dropped);
	buf_printf(b, " flags=");
	for (i = 0; i < 7; i++)
		if (rec->smtp.flags & (1u << i))
			buf_printf(b, "%s,", fl[i]);
	buf_printf(b, " errors=%u stale=%u\n", rec->smtp.errors, rec->smtp.stale_verdicts);
}

static bool
d_domain(const void *arg, const char *d, size_t len)
{
	const char *list = arg, *p = list;

	while (*p) {
		size_t k = strcspn(p, ",");

		if (k == len && strncasecmp(p, d, len) == 0)
			return true;
		p += k;
		if (*p == ',')
			p++;
	}
	return false;
}

static const struct smtp_ops dops = {
	.write = d_write,
	.close = d_close,
	.check = d_check,
	.chunk_get = d_chunk_get,
	.chunk_put = d_chunk_put,
	.buf_get = d_buf_get,
	.buf_put = d_buf_put,
	.record = d_record,
};

/* ------------------------------------------------------------ .in reading */

static void
in_add(struct tcase *tc, const void *p, size_t n)
{
	if (tc->len + n > tc->cap) {
		tc->cap = (tc->len + n) * 2 + 1024;
		tc->in = realloc(tc->in, tc->cap);
		if (tc->in == NULL)
			abort();
	}
	memcpy(tc->in + tc->len, p, n);
	tc->len += n;
}

/* Decodes an input line's escapes; returns false for \c (no CRLF). */
static bool
decode_line(struct tcase *tc, const char *l)
{
	unsigned char ch;

	while (*l) {
		if (*l != '\\') {
			in_add(tc, l++, 1);
			continue;
		}
		l++;
		switch (*l) {
		case 'r': ch = '\r'; break;
		case 'n': ch = '\n'; break;
		case 't': ch = '\t'; break;
		case '0': ch = 0; break;
		case '\\': ch = '\\'; break;
		case 'x': {
			char hex[3] = { l[1], l[2], 0 };

			ch = (unsigned char)strtoul(hex, NULL, 16);
			l += 2;
			break;
		}
		case 'c': return false;
		default: ch = (unsigned char)*l;
		}
		in_add(tc, &ch, 1);
		l++;
	}
	return true;
}

/* Verdict texts take the same escapes, so that tests can hand the engine
 * CR, LF and other bytes it must not pass through. */
static void
unescape(char *d, size_t cap, const char *l)
{
	size_t k = 0;

	while (*l && k + 1 < cap) {
		char ch = *l++;

		if (ch == '\\' && *l) {
			ch = *l++;
			if (ch == 'r')
				ch = '\r';
			else if (ch == 'n')
				ch = '\n';
			else if (ch == 'x' && l[0] && l[1]) {
				char hex[3] = { l[0], l[1], 0 };

				ch = (char)strtoul(hex, NULL, 16);
				l += 2;
			}
		}
		d[k++] = ch;
	}
	d[k] = '\0';
}

static int
stage_by_name(const char *n)
{
	int i;

	for (i = 0; i < SMTP_STAGE_COUNT; i++)
		if (strcasecmp(n, smtp_stage_name(i)) == 0)
			return i;
	return -1;
}

static bool
add_event(struct tcase *tc, enum ev_kind k)
{
	if (tc->nev >= (int)(sizeof(tc->ev) / sizeof(tc->ev[0])))
		return false;
	tc->ev[tc->nev].off = tc->len;
	tc->ev[tc->nev++].kind = k;
	if (k == EV_START)
		tc->has_start = true;
	return true;
}

static bool
set_param(struct tcase *tc, const char *kv)
{
	char key[64];
	const char *eq = strchr(kv, '=');
	unsigned long long v;

	if (eq == NULL || (size_t)(eq - kv) >= sizeof(key))
		return false;
	memcpy(key, kv, (size_t)(eq - kv));
	key[eq - kv] = '\0';
	eq++;
	if (strcmp(key, "hostname") == 0) {
		snprintf(tc->hostname, sizeof(tc->hostname), "%s", eq);
		return true;
	}
	if (strcmp(key, "domains") == 0) {
		snprintf(tc->domains, sizeof(tc->domains), "%s", eq);
		return true;
	}
	v = strtoull(eq, NULL, 10);
	if (strcmp(key, "max_cmd_line") == 0)
		tc->params.max_cmd_line = (uint32_t)v;
	else if (strcmp(key, "max_text_line") == 0)
		tc->params.max_text_line = (uint32_t)v;
	else if (strcmp(key, "max_rcpts") == 0)
		tc->params.max_rcpts = (uint32_t)v;
	else if (strcmp(key, "max_msg_size") == 0)
		tc->params.max_msg_size = v;
	else if (strcmp(key, "max_errors") == 0)
		tc->params.max_errors = (uint32_t)v;
	else if (strcmp(key, "max_pending_in") == 0)
		tc->params.max_pending_in = (uint32_t)v;
	else if (strcmp(key, "pregreet_reject") == 0)
		tc->params.pregreet_reject = v != 0;
	else
		return false;
	return true;
}

static bool
directive(struct tcase *tc, char *l)
{
	char *arg = strchr(l, ' ');
	char *save = NULL;

	if (arg != NULL)
		*arg++ = '\0';
	if (strcmp(l, "#") == 0)
		return true;
	if (strcmp(l, "start") == 0)
		return add_event(tc, EV_START);
	if (strcmp(l, "answer") == 0)
		return add_event(tc, EV_ANSWER);
	if (strcmp(l, "hold") == 0) {
		tc->hold = true;
		return true;
	}
	if (strcmp(l, "stale") == 0)
		return add_event(tc, EV_STALE);
	if (strcmp(l, "keep") == 0) {
		if (tc->nscript == 0)
			return false;
		tc->script[tc->nscript - 1].v.keep_message = true;
		return true;
	}
	if (strcmp(l, "idle") == 0)
		return add_event(tc, EV_IDLE);
	if (strcmp(l, "eof") == 0)
		return add_event(tc, EV_EOF);
	if (arg == NULL)
		return false;
	if (strcmp(l, "param") == 0)
		return set_param(tc, arg);
	if (strcmp(l, "chunks") == 0) {
		tc->chunk_limit = (uint32_t)atoi(arg);
		tc->has_chunk_limit = true;
		return true;
	}
	if (strcmp(l, "chunksize") == 0) {
		tc->chunk_size = (uint32_t)atoi(arg);
		return true;
	}
	if (strcmp(l, "pending") == 0) {
		int st = stage_by_name(arg), i;

		if (strcasecmp(arg, "ALL") == 0) {
			for (i = 0; i < SMTP_STAGE_COUNT; i++)
				tc->pending[i] = true;
			return true;
		}
		if (st < 0)
			return false;
		tc->pending[st] = true;
		return true;
	}
	if (strcmp(l, "fill") == 0) {
		char *c = strchr(arg, ' ');
		long n = atol(arg);

		if (c == NULL || n < 0)
			return false;
		while (n-- > 0)
			in_add(tc, c + 1, 1);
		return true;
	}
	if (strcmp(l, "rep") == 0) {
		char *text = strchr(arg, ' ');
		long n = atol(arg);

		if (text == NULL)
			return false;
		text++;
		while (n-- > 0)
			if (decode_line(tc, text))
				in_add(tc, "\r\n", 2);
		return true;
	}
	if (strcmp(l, "verdict") == 0) {
		struct scripted *sc;
		char *st = strtok_r(arg, " ", &save);
		char *code = strtok_r(NULL, " ", &save);
		char *enh = strtok_r(NULL, " ", &save);
		char *text = strtok_r(NULL, "", &save);

		if (st == NULL || code == NULL || stage_by_name(st) < 0 || tc->nscript >= 64)
			return false;
		sc = &tc->script[tc->nscript++];
		memset(sc, 0, sizeof(*sc));
		sc->stage = stage_by_name(st);
		sc->v.code = (uint16_t)atoi(code);
		if (enh != NULL && strcmp(enh, "-") != 0)
			snprintf(sc->v.enh, sizeof(sc->v.enh), "%s", enh);
		if (text != NULL) {
			unescape(sc->text, sizeof(sc->text), text);
			sc->v.text = sc->text;
		}
		return true;
	}
	return false;
}

static bool
load_case(struct tcase *tc, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[8192];
	const char *base = strrchr(path, '/');

	memset(tc, 0, sizeof(*tc));
	snprintf(tc->name, sizeof(tc->name), "%s", base ? base + 1 : path);
	snprintf(tc->hostname, sizeof(tc->hostname), "mx.example.com");
	snprintf(tc->domains, sizeof(tc->domains), "example.com,example.org");
	tc->params.max_msg_size = 10240000;
	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n = strlen(line);

		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (line[0] == '!') {
			if (!directive(tc, line + 1)) {
				fprintf(stderr, "%s: bad directive: %s\n", path, line);
				fclose(f);
				return false;
			}
		} else if (decode_line(tc, line)) {
			in_add(tc, "\r\n", 2);
		}
	}
	fclose(f);
	tc->params.hostname = tc->hostname;
	tc->params.domain_accepted = d_domain;
	tc->params.domain_arg = tc->domains;
	return true;
}

/* --------------------------------------------------------------- running */

/* A chain the engine left to us (keep_message): still whole, then freed. */
static void
chain_free(struct run *r, const struct chunk *c)
{
	while (c != NULL) {
		const struct chunk *next = c->next;

		d_chunk_put(r, (void *)(uintptr_t)c);
		c = next;
	}
}

static void
answer(struct run *r)
{
	const struct smtp_verdict *v = verdict_for(r, r->pend_stage);
	/* The verdict may let the engine parse on and lend new chains. */
	const struct chunk *rcpts = r->pend_rcpts, *body = r->pend_body;
	bool kept = v->keep_message && r->pend_stage == SMTP_STAGE_DATA_END;

	r->pend = false;
	smtp_session_verdict(r->s, r->pend_token, v);
	if (kept) {
		chain_free(r, rcpts);
		chain_free(r, body);
	}
}

static void
answer_all(struct run *r)
{
	int guard = 0;

	while (r->pend && guard++ < 10000)
		answer(r);
}

static void
touch_chains(struct run *r)
{
	const struct chunk *c;
	volatile uint8_t sum = 0;
	uint32_t i;

	for (c = r->pend_rcpts; c != NULL; c = c->next)
		for (i = 0; i < c->len; i++)
			sum += c->data[i];
	for (c = r->pend_body; c != NULL; c = c->next)
		for (i = 0; i < c->len; i++)
			sum += c->data[i];
	(void)sum;
}

/* The greeting: a client reads it before it speaks, so a start that found
 * no buffer is resumed before the next input. */
static void
start(struct run *r)
{
	int guard = 0;

	smtp_session_start(r->s);
	while (smtp_session_state(r->s) == SMTP_ST_NEW && r->want_writable && guard++ < 1000) {
		r->want_writable = false;
		smtp_session_writable(r->s);
	}
}

static void
do_event(struct run *r, enum ev_kind k)
{
	static const struct smtp_verdict bogus = { 550, "5.0.0", "stale" };

	switch (k) {
	case EV_START: start(r); break;
	case EV_ANSWER: answer_all(r); break;
	case EV_STALE: smtp_session_verdict(r->s, r->pend_token + 7777, &bogus); break;
	case EV_IDLE: smtp_session_idle(r->s); break;
	case EV_EOF: smtp_session_peer_closed(r->s); break;
	}
	/* A pending check may still read the chains it was given, whatever
	 * the session did meanwhile (ASan builds catch a premature free). */
	if (r->pend)
		touch_chains(r);
}

/* Between feeds: the moments when verdicts and writability come back. */
static void
after_feed(struct run *r, bool starved)
{
	bool ans = false;

	if (r->pend) {
		if (r->tc->hold)
			ans = starved;
		else if (r->mode == 0)
			ans = true;
		else if (r->mode == 1)
			ans = r->feeds > r->pend_feed;
		else
			ans = starved || rnd(r, 3) == 0;
		if (ans)
			answer(r);
	}
	if (r->want_writable && (r->mode < 2 || starved || rnd(r, 2) == 0)) {
		r->want_writable = false;
		smtp_session_writable(r->s);
	}
}

static void
transcript(struct run *r, struct buf *t)
{
	size_t i;

	/* Reply bytes with CRLF shown as a line end; anything else shows. */
	for (i = 0; i < r->out.len; i++) {
		char ch = r->out.p[i];

		if (ch == '\r' && i + 1 < r->out.len && r->out.p[i + 1] == '\n') {
			buf_add(t, "\n", 1);
			i++;
		} else if (ch == '\r' || ch == '\n') {
			buf_add(t, ch == '\r' ? "<CR>" : "<LF>", 4);
		} else {
			buf_add(t, &ch, 1);
		}
	}
	if (r->out.len > 0 && r->out.p[r->out.len - 1] != '\n')
		buf_add(t, "<NO CRLF AT END>\n", 17);
	buf_add(t, "---\n", 4);
	buf_add(t, r->events.p ? r->events.p : "", r->events.len);
}

static void
run_once(const struct tcase *tc, int mode, uint64_t seed, struct buf *t)
{
	static const struct smtp_peer peer = { 6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x20 }, 40000 };
	struct run r;
	void *mem = malloc(smtp_session_size());
	size_t pos = 0;
	int ev = 0, guard = 0;

	memset(&r, 0, sizeof(r));
	r.tc = tc;
	r.mode = mode;
	r.rng = seed * 0x9e3779b97f4a7c15ull + 1;
	r.chunk_size = tc->chunk_size ? tc->chunk_size : mode >= 2 ? 300 + rnd(&r, 3000) : 2048;
	r.s = smtp_session_init(mem, smtp_session_size(), &tc->params, &dops, &r, &peer);
	if (r.s == NULL) {
		buf_printf(t, "init failed\n");
		free(mem);
		return;
	}
	if (!tc->has_start)
		start(&r);
	for (;;) {
		size_t limit = tc->len, want;
		uint32_t n, waits;

		while (ev < tc->nev && tc->ev[ev].off == pos)
			do_event(&r, tc->ev[ev++].kind);
		if (pos == tc->len)
			break;
		if (ev < tc->nev)
			limit = tc->ev[ev].off;
		want = limit - pos;
		if (mode == 1)
			want = 1;
		else if (mode >= 2)
			want = 1 + rnd(&r, rnd(&r, 4) == 0 ? 2000 : 40);
		if (want > limit - pos)
			want = limit - pos;
		r.feeds++;
		waits = r.buf_waits;
		n = smtp_session_feed(r.s, tc->in + pos, (uint32_t)want);
		pos += n;
		after_feed(&r, n < want);
		/* Taking nothing is stuck unless something is awaited: a verdict,
		 * writability, or a buffer (the pool was dry). */
		if (n == 0 && !r.pend && !r.want_writable && r.buf_waits == waits && ++guard > 3) {
			snprintf(r.problem, sizeof(r.problem), "stuck at input byte %zu", pos);
			break;
		}
	}
	for (guard = 0; guard < 100000 && (r.pend || r.want_writable); guard++)
		after_feed(&r, true);
	smtp_session_fini(r.s);
	if (r.chunks_out != 0)
		snprintf(r.problem, sizeof(r.problem), "%u chunks not returned", r.chunks_out);
	if (r.bufs_out != 0)
		snprintf(r.problem, sizeof(r.problem), "buffer not returned");
	dry_waits += r.buf_waits;
	if (r.closes > 1 || r.session_records != 1)
		snprintf(r.problem, sizeof(r.problem), "%d closes, %d session records", r.closes,
			 r.session_records);
	transcript(&r, t);
	if (r.problem[0])
		buf_printf(t, "PROBLEM: %s\n", r.problem);
	free(r.out.p);
	free(r.events.p);
	free(mem);
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	if (p == NULL || fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		fclose(f);
		return NULL;
	}
	p[n] = '\0';
	*len = (size_t)n;
	fclose(f);
	return p;
}

static void
show_diff(const char *want, const char *got)
{
	int line = 1;
	const char *w = want, *g = got;

	while (*w && *w == *g) {
		if (*w == '\n')
			line++;
		w++;
		g++;
	}
	fprintf(stderr, "  first difference at line %d\n  want: %.*s\n  got:  %.*s\n", line,
		(int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
}

static int
is_case(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return n > 3 && strcmp(d->d_name + n - 3, ".in") == 0;
}

/* Arguments, with each directory replaced by its *.in files, sorted. */
static char **
expand(int argc, char **argv, int *out_n)
{
	char **list = NULL;
	int n = 0, i, k;

	for (i = 0; i < argc; i++) {
		struct dirent **ents;
		int m = scandir(argv[i], &ents, is_case, alphasort);

		if (m < 0) {
			list = realloc(list, sizeof(*list) * (size_t)(n + 1));
			list[n++] = strdup(argv[i]);
			continue;
		}
		list = realloc(list, sizeof(*list) * (size_t)(n + m + 1));
		for (k = 0; k < m; k++) {
			size_t len = strlen(argv[i]) + strlen(ents[k]->d_name) + 2;

			list[n] = malloc(len);
			snprintf(list[n++], len, "%s/%s", argv[i], ents[k]->d_name);
			free(ents[k]);
		}
		free(ents);
	}
	*out_n = n;
	return list;
}

int
main(int argc, char **argv)
{
	static const char *const modes[] = { "whole", "bytes", "random", "dry-pool" };
	int i, nrandom = 20, nfiles = 0;
	bool print = false;
	char **files;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--print") == 0)
			print = true;
		else if (strcmp(argv[i], "--random") == 0 && i + 1 < argc)
			nrandom = atoi(argv[++i]);
	}
	files = expand(argc - i, argv + i, &nfiles);
	for (i = 0; i < nfiles; i++) {
		struct tcase *tc = calloc(1, sizeof(*tc));
		char refpath[4096];
		char *ref;
		size_t reflen = 0;
		bool ok;
		int m, k;

		check_case_begin();
		if (!CHECK(tc != NULL && load_case(tc, files[i]), "%s", files[i])) {
			check_case_end();
			free(tc);
			continue;
		}
		if (print) {
			struct buf t = { 0 };

			run_once(tc, 0, 0, &t);
			fputs(t.p ? t.p : "", stdout);
			free(t.p);
			free(tc->in);
			free(tc);
			check_case_end();
			continue;
		}
		snprintf(refpath, sizeof(refpath), "%.*s.ref", (int)(strlen(files[i]) - 3),
			 files[i]);
		ref = read_file(refpath, &reflen);
		ok = CHECK(ref != NULL, "%s: no %s", tc->name, refpath);
		for (m = 0; ok && m < 4; m++) {
			for (k = 0; ok && k < (m >= 2 ? nrandom : 1); k++) {
				struct buf t = { 0 };

				run_once(tc, m, (uint64_t)k + 1, &t);
				ok = CHECK(t.p != NULL && strcmp(t.p, ref) == 0, "%s (%s, seed %d)",
					   tc->name, modes[m], k + 1);
				if (!ok)
					show_diff(ref, t.p ? t.p : "");
				free(t.p);
			}
		}
		check_case_end();
		free(ref);
		free(tc->in);
		free(tc);
	}
	for (i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	if (!print) {
		/* The dry-pool runs did run dry. */
		check_case_begin();
		CHECK(nrandom == 0 || dry_waits > 0, "no session ever found the pool dry");
		check_case_end();
		return check_done();
	}
	return check_failed ? 1 : 0;
}
