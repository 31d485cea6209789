/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_fuzz.c — libFuzzer target for the SMTP engine.
 *
 * The input is a small header (limits and modes, among them how often the
 * session-buffer pool is dry) and then a stream of operations: feed the
 * next bytes, answer the pending verdict with a code chosen from the input,
 * deliver a stale verdict, signal writability, fire the idle timer, close
 * from the peer's side, start late. The target traps when:
 *   - the output is not a sequence of well-formed reply lines
 *     ("DDD-text" CRLF ... "DDD text" CRLF, one code per reply, 2xx-5xx);
 *   - bytes are written after ops->close, or close comes twice;
 *   - a check is asked while another is pending;
 *   - feed() takes more than it was given, or rcv_space exceeds the bound;
 *   - a chunk or the session buffer is still lent after smtp_session_fini,
 *     or a session asks for a second buffer (LeakSanitizer also sees the
 *     malloc behind every chunk and buffer).
 * Seed inputs live in tests/smtp/fuzz-seeds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned long long runs;

/* A broken rule: say which, close with the summary line, and crash so
 * that libFuzzer keeps the input. */
static void
fail(const char *why)
{
	fprintf(stderr, "FAIL %s\n%llu passed, 1 failed\n", why, runs);
	abort();
}

static void
summary(void)
{
	printf("%llu passed, 0 failed\n", runs);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	atexit(summary);
	return 0;
}

struct fz {
	/* output checker */
	int col; /* bytes into the current line, -1 after CR */
	char code[3];
	char sep;
	bool in_multi; /* a '-' line was seen: same code must follow */
	char multi_code[3];
	/* the rest */
	bool closed;
	bool short_writes;
	uint32_t wcount;
	bool pend;
	uint32_t token;
	uint32_t chunks_out;
	uint32_t bufs_out, buf_asks, buf_dry;
	uint32_t chunk_limit;
	uint32_t chunk_size;
	bool pending_mode;
};

static void
check_byte(struct fz *f, char ch)
{
	if (f->col == -1) { /* after CR: only LF */
		if (ch != '\n')
			fail("CR without LF in output");
		f->col = 0;
		if (f->sep == '-') {
			f->in_multi = true;
			memcpy(f->multi_code, f->code, 3);
		} else {
			f->in_multi = false;
		}
		return;
	}
	if (f->col < 3) {
		if (ch < '0' || ch > '9' || (f->col == 0 && (ch < '2' || ch > '5')))
			fail("reply code not 2xx-5xx");
		f->code[f->col++] = ch;
		if (f->col == 3 && f->in_multi && memcmp(f->code, f->multi_code, 3) != 0)
			fail("multi-line reply changes code");
		return;
	}
	if (f->col == 3) {
		if (ch != ' ' && ch != '-')
			fail("no ' ' or '-' after the code");
		f->sep = ch;
		f->col++;
		return;
	}
	if (ch == '\r') {
		f->col = -1;
		return;
	}
	if (ch == '\n' || ++f->col > 512)
		fail("bare LF or reply line over 512");
}

static uint32_t
z_write(void *ctx, const void *p, uint32_t n)
{
	struct fz *f = ctx;
	uint32_t k = n, i;

	if (f->closed)
		fail("write after close");
	if (f->short_writes && (f->wcount++ & 1))
		k = n / 2;
	for (i = 0; i < k; i++)
		check_byte(f, ((const char *)p)[i]);
	return k;
}

static void
z_close(void *ctx)
{
	struct fz *f = ctx;

	if (f->closed)
		fail("close twice");
	f->closed = true;
}

static int
z_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct fz *f = ctx;

	(void)v;
	if (f->pend)
		fail("check while another is pending");
	if (!f->pending_mode)
		return SMTP_CHECK_DONE; /* *v is zeroed: no objection */
	f->pend = true;
	f->token = chk->token;
	return SMTP_CHECK_PENDING;
}

static void *
z_get(void *ctx, uint32_t *cap)
{
	struct fz *f = ctx;

	if (f->chunks_out >= f->chunk_limit)
		return NULL;
	f->chunks_out++;
	*cap = f->chunk_size;
	return malloc(f->chunk_size);
}

static void
z_put(void *ctx, void *chunk)
{
	struct fz *f = ctx;

	if (f->chunks_out == 0)
		fail("chunk_put without chunk_get");
	f->chunks_out--;
	free(chunk);
}

/* Session buffers: every (buf_dry)th request finds none, so the waits and
 * the resumes are fuzzed too. */
static void *
z_buf_get(void *ctx)
{
	struct fz *f = ctx;

	if (f->buf_dry && ++f->buf_asks % f->buf_dry == 0)
		return NULL;
	if (f->bufs_out)
		fail("a second buffer for one session");
	f->bufs_out++;
	return malloc(smtp_buf_size());
}

static void
z_buf_put(void *ctx, void *buf)
{
	struct fz *f = ctx;

	if (f->bufs_out == 0)
		fail("buf_put without buf_get");
	f->bufs_out--;
	free(buf);
}

static void
z_record(void *ctx, const struct smtp_record *r)
{
	const struct chunk *c;
	uint64_t sum = 0;

	(void)ctx;
	for (c = r->body; c != NULL; c = c->next)
		sum += c->len;
	if (r->body != NULL && sum != r->smtp.size)
		fail("body chain length differs from size");
}

static bool
z_domain(const void *arg, const char *d, size_t len)
{
	(void)arg;
	return len >= 11 && memcmp(d + len - 11, "example.com", 11) == 0;
}

static const struct smtp_ops zops = {
	.write = z_write,
	.close = z_close,
	.check = z_check,
	.chunk_get = z_get,
	.chunk_put = z_put,
	.buf_get = z_buf_get,
	.buf_put = z_buf_put,
	.record = z_record,
};

static const struct smtp_verdict verdicts[] = {
	{ 0, "", NULL },
	{ 250, "2.0.0", "Ok: queued as F" },
	{ 421, "4.7.0", "closing" },
	{ 450, "4.7.25",
	  "Service unavailable, sending IPv6 address [2001:db8::1] must have a reverse DNS record" },
	{ 451, "", NULL },
	{ 550, "5.7.26", "bad\r\nline" },
	{ 554, "4.7.1", "wrong class" },
	{ 799, "7.0.0", "not a code" },
	{ 354, "3.0.0", "not a verdict" },
	{ 250, "2.1.0", "" },
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct smtp_peer peer = { 6, { 0x20, 0x01, 0x0d, 0xb8 }, 1 };
	struct smtp_params params = {
		.hostname = "mx.example.com",
		.domain_accepted = z_domain,
	};
	struct fz f;
	struct smtp_session *s;
	void *mem;
	size_t pos = 6;
	bool started = false;

	if (size < 6) {
		runs++;
		return 0;
	}
	memset(&f, 0, sizeof(f));
	params.pregreet_reject = data[0] & 1;
	f.pending_mode = data[0] & 2;
	f.short_writes = data[0] & 4;
	params.max_pending_in = 16u + data[1] * 16u;
	params.max_rcpts = 1u + data[2] % 8u;
	f.chunk_limit = data[3] == 255 ? UINT32_MAX : data[3] % 16u;
	f.chunk_size = 300u + data[4] * 8u;
	params.max_errors = data[5] % 32u;
	params.max_msg_size = 64u + data[5] * 64u;
	params.max_cmd_line = (data[0] & 8) ? 100 : 0;
	params.max_text_line = (data[0] & 16) ? 40 : 0;
	f.buf_dry = data[0] >> 6; /* 0: buffers always free */

	mem = malloc(smtp_session_size());
	s = smtp_session_init(mem, smtp_session_size(), &params, &zops, &f, &peer);
	if (s == NULL)
		fail("init refused valid parameters");
	if (!(data[0] & 32)) {
		smtp_session_start(s);
		started = true;
	}
	while (pos < size) {
		uint8_t op = data[pos++];
		uint8_t arg = pos < size ? data[pos] : 0;

		switch (op % 8) {
		case 0:
		case 1:
		case 2:
		case 3:
		case 7: {
			uint32_t n = op % 8 == 7 ? 1 : (uint32_t)arg + 1, k;

			if (op % 8 != 7)
				pos++;
			if (pos >= size)
				break;
			if (n > size - pos)
				n = (uint32_t)(size - pos);
			if (smtp_session_rcv_space(s) > SMTP_PENDING_CAP)
				fail("rcv_space over the bound");
			k = smtp_session_feed(s, data + pos, n);
			if (k > n)
				fail("feed took more than given");
			pos += n; /* bytes not taken are dropped, like a lost peer */
			break;
		}
		case 4:
			pos++;
			if (f.pend) {
				f.pend = false;
				smtp_session_verdict(
					s, f.token,
					&verdicts[arg % (sizeof(verdicts) / sizeof(verdicts[0]))]);
			}
			break;
		case 5: smtp_session_writable(s); break;
		case 6:
			pos++;
			if (arg < 240) {
				smtp_session_verdict(s, f.token + 1 + arg, &verdicts[1]);
			} else if (arg < 248) {
				smtp_session_idle(s);
			} else if (arg < 252) {
				smtp_session_peer_closed(s);
			} else if (!started) {
				smtp_session_start(s);
				started = true;
			}
			break;
		}
	}
	/* Drain: answer and flush until the session is quiet. */
	for (int i = 0; i < 64 && (f.pend || f.short_writes); i++) {
		if (f.pend) {
			f.pend = false;
			smtp_session_verdict(s, f.token, &verdicts[0]);
		}
		smtp_session_writable(s);
	}
	smtp_session_fini(s);
	if (f.chunks_out != 0)
		fail("chunks not returned after fini");
	if (f.bufs_out != 0)
		fail("buffer not returned after fini");
	free(mem);
	runs++;
	return 0;
}
