/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_body_hash.c — the body chain holds exactly the message.
 *
 * For messages from 0 bytes to a few MB (random lines, 8-bit bytes, many
 * lines that start with dots), the test sends each once by DATA
 * (dot-stuffed on the wire) and once by BDAT, fed in random splits through
 * a real session, and compares the SHA-256 of the chunk chain the record
 * carries with the SHA-256 of the original message. The chain must also
 * add up to the recorded size, and every chunk must be back after fini.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dataplane/smtp.h"
#include "tests/check.h"

struct ctx {
	unsigned char want[32];
	uint64_t want_size;
	int delivered;
	int good;
	uint32_t chunks_out;
	uint32_t chunk_size;
	size_t out_len;
	char last_reply[64];
};

static uint64_t rng = 88172645463325252ull;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static uint32_t
w_write(void *c, const void *p, uint32_t n)
{
	struct ctx *x = c;
	size_t k = n < sizeof(x->last_reply) - 1 ? n : sizeof(x->last_reply) - 1;

	memcpy(x->last_reply, p, k);
	x->last_reply[k] = '\0';
	x->out_len += n;
	return n;
}

static void
w_close(void *c)
{
	(void)c;
}

static void *
w_get(void *c, uint32_t *cap)
{
	struct ctx *x = c;

	x->chunks_out++;
	*cap = x->chunk_size;
	return malloc(x->chunk_size);
}

/* Session buffers from the heap: this test is about bodies, not the pool. */
static void *
w_buf_get(void *c)
{
	(void)c;
	return malloc(smtp_buf_size());
}

static void
w_buf_put(void *c, void *buf)
{
	(void)c;
	free(buf);
}

static void
w_put(void *c, void *chunk)
{
	struct ctx *x = c;

	x->chunks_out--;
	free(chunk);
}

static void
w_record(void *c, const struct smtp_record *r)
{
	struct ctx *x = c;
	const struct chunk *ch;
	unsigned char got[32];
	unsigned int glen = 0;
	uint64_t sum = 0;
	EVP_MD_CTX *md;

	if (r->smtp.kind != TXREC_TRANSACTION || !(r->smtp.flags & TXREC_F_DELIVERED))
		return;
	x->delivered++;
	md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	for (ch = r->body; ch != NULL; ch = ch->next) {
		EVP_DigestUpdate(md, ch->data, ch->len);
		sum += ch->len;
	}
	EVP_DigestFinal_ex(md, got, &glen);
	EVP_MD_CTX_free(md);
	if (sum == x->want_size && r->smtp.size == x->want_size && memcmp(got, x->want, 32) == 0)
		x->good++;
}

static bool
accept_all(const void *arg, const char *d, size_t len)
{
	(void)arg, (void)d, (void)len;
	return true;
}

/* A message of exactly size bytes: CRLF lines of up to 998 bytes. */
static unsigned char *
make_message(size_t size)
{
	unsigned char *m = malloc(size + 1);
	size_t pos = 0;

	while (pos < size) {
		size_t left = size - pos, len, i;

		/* Never leave a single byte: a message ends with CRLF. */
		if (left <= 1000) {
			len = left - 2;
		} else {
			len = rnd(999);
			if (left - len - 2 == 1)
				len--;
		}
		for (i = 0; i < len; i++) {
			unsigned char ch = (unsigned char)(32 + rnd(224));

			/* Lines that start with dots are what stuffing is for. */
			if (i == 0 && rnd(4) == 0)
				ch = '.';
			m[pos + i] = ch;
		}
		pos += len;
		m[pos++] = '\r';
		m[pos++] = '\n';
	}
	return m;
}

/* Dot-stuffs m for DATA and appends the end marker. */
static unsigned char *
stuff(const unsigned char *m, size_t n, size_t *out)
{
	unsigned char *w = malloc(n * 2 + 8);
	size_t i, k = 0;
	bool bol = true;

	for (i = 0; i < n; i++) {
		if (bol && m[i] == '.')
			w[k++] = '.';
		w[k++] = m[i];
		bol = m[i] == '\n';
	}
	memcpy(w + k, ".\r\n", 3);
	*out = k + 3;
	return w;
}

static void
feed_all(struct smtp_session *s, const unsigned char *p, size_t n)
{
	size_t pos = 0;

	while (pos < n) {
		uint32_t want = 1 + rnd(rnd(8) == 0 ? 65536 : 1500);

		if (want > n - pos)
			want = (uint32_t)(n - pos);
		pos += smtp_session_feed(s, p + pos, want);
	}
}

static bool
run(size_t size, bool bdat)
{
	static const struct smtp_peer peer = { 4, { 198, 51, 100, 7 }, 25000 };
	static const struct smtp_ops ops = {
		.write = w_write,
		.close = w_close,
		.chunk_get = w_get,
		.chunk_put = w_put,
		.buf_get = w_buf_get,
		.buf_put = w_buf_put,
		.record = w_record,
	};
	struct smtp_params params = {
		.hostname = "mx.example.com",
		.max_msg_size = 8u << 20,
		.domain_accepted = accept_all,
	};
	struct ctx x = { 0 };
	void *mem = malloc(smtp_session_size());
	unsigned char *msg = make_message(size), *wire;
	size_t wlen;
	char head[256];
	struct smtp_session *s;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int l;
	bool ok;

	x.chunk_size = 256 + 24 + rnd(8192);
	x.want_size = size;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, msg, size);
	EVP_DigestFinal_ex(md, x.want, &l);
	EVP_MD_CTX_free(md);

	s = smtp_session_init(mem, smtp_session_size(), &params, &ops, &x, &peer);
	smtp_session_start(s);
	snprintf(head, sizeof(head),
		 "EHLO client.example.net\r\nMAIL FROM:<a@example.net> SIZE=%zu\r\n"
		 "RCPT TO:<b@example.com>\r\n",
		 size);
	feed_all(s, (const unsigned char *)head, strlen(head));
	if (bdat) {
		snprintf(head, sizeof(head), "BDAT %zu LAST\r\n", size);
		feed_all(s, (const unsigned char *)head, strlen(head));
		feed_all(s, msg, size);
	} else {
		feed_all(s, (const unsigned char *)"DATA\r\n", 6);
		wire = stuff(msg, size, &wlen);
		feed_all(s, wire, wlen);
		free(wire);
	}
	smtp_session_fini(s);
	ok = x.delivered == 1 && x.good == 1 && x.chunks_out == 0 &&
	     strncmp(x.last_reply, "250 2.0.0 Ok: queued", 20) == 0;
	if (!ok)
		printf("  size %zu by %s: delivered %d good %d chunks %u last %s\n", size,
		       bdat ? "BDAT" : "DATA", x.delivered, x.good, x.chunks_out, x.last_reply);
	free(msg);
	free(mem);
	return ok;
}

int
main(void)
{
	static const size_t sizes[] = {
		0, 2, 3, 1000, 1002, 4096, 65536, 1u << 20, (3u << 20) + 7
	};
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		CHECK(run(sizes[i], false), "%zu bytes by DATA", sizes[i]);
		CHECK(run(sizes[i], true), "%zu bytes by BDAT", sizes[i]);
	}
	return check_done();
}
