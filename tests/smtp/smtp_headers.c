/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_headers.c — the engine says when a message's header
 * block is in, and gives a lent body back whole.
 *
 * The control plane fetches a message's DKIM keys as soon as its header
 * block has arrived, reading the chain while the body still fills it. So
 * the engine must call ops->headers once, with the exact length of the
 * block (its empty line included; all of a message that has none), with
 * those bytes already in the chain; and a chain it lent must never come
 * back chunk by chunk while the reader may hold it: an aborted
 * transaction hands it to ops->body_release, whole, and only an answered
 * end of DATA lets the engine free it itself. Each row is sent through a
 * real session by DATA and by BDAT, in packets of 1, 7 and 1500 bytes and
 * in random splits, with chunks small enough that the header block spans
 * several of them.
 *
 * While a lent body goes on arriving, the engine says how much of it is
 * final (ops->body_final) each time a chunk fills: the count only grows,
 * covers whole chunks (never the one being filled), holds the message's
 * own bytes, comes only while the chain is lent, and by the end of a long
 * body covers every chunk but the last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/smtp.h"
#include "tests/check.h"

/* Room for data in each chunk: small, so a block spans chunks (the engine
 * wants at least a path's worth). */
#define DATA_CAP 300u

enum ending {
	END_DELIVER,  /* the end of DATA answered later: 250 */
	END_REFUSE,   /* the end of DATA answered at once: 451 */
	END_RSET,     /* RSET after the header block, before the end */
	END_CLOSE,    /* fini with the body half sent */
	END_BARE_LF,  /* a bare LF in the body: 550 */
	END_NOT_LENT, /* headers() declines: the engine keeps the chain */
};

struct row {
	const char *name;
	const char *msg; /* unstuffed, CRLF lines */
	long hdr_len;    /* bytes of the header block; -1: never told */
	enum ending ending;
};

static char long_hdrs[4096], boundary_hdrs[1024], long_body[4096];

static const struct row rows[] = {
	{ "short", "From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n", 36, END_DELIVER },
	{ "spans chunks", long_hdrs, 0, END_DELIVER },
	{ "CRLFCRLF across a chunk boundary", boundary_hdrs, DATA_CAP + 2, END_DELIVER },
	{ "headers only", "From: a@example.net\r\nSubject: hi\r\n", 34, END_DELIVER },
	{ "body starts with an empty line", "\r\nbody line\r\n", 2, END_DELIVER },
	{ "stuffed header lines", "..X: y\r\n.\r\n\r\n.body\r\n", 0, END_DELIVER },
	{ "no body", "", -1, END_DELIVER },
	{ "refused at the end", "From: a@example.net\r\n\r\nbody\r\n", 23, END_REFUSE },
	{ "RSET after the block", "From: a@example.net\r\n\r\nbody\r\n", 23, END_RSET },
	{ "closed in the body", "From: a@example.net\r\n\r\nbody\r\n", 23, END_CLOSE },
	{ "bare LF after the block", "From: a@example.net\r\n\r\nbo\ndy\r\n", 23, END_BARE_LF },
	{ "bare LF in the block", "From: a@\nexample.net\r\n\r\nbody\r\n", -1, END_BARE_LF },
	{ "not lent", "From: a@example.net\r\n\r\nbody\r\n", 23, END_NOT_LENT },
	{ "long body", long_body, 23, END_DELIVER },
	{ "long body, closed", long_body, 23, END_CLOSE },
};

struct ctx {
	const struct row *row;
	long told;                /* len given to headers(), -1 none */
	unsigned n_told;          /* calls */
	bool block_right;         /* the chain held the block when told */
	const struct chunk *lent; /* the head of the chain lent */
	uint32_t lent_chunks;     /* chunks of the lent chain at release */
	unsigned released;        /* body_release calls */
	bool put_lent;            /* a chunk of the lent chain came to chunk_put */
	uint32_t final;           /* the last count given to body_final */
	unsigned n_final;         /* body_final calls */
	bool final_wrong;         /* a count that shrank, split a chunk, or
				     whose bytes were not the message's, or
				     one that came while nothing was lent */
	int32_t chunks_out;
	uint32_t pending_token;
	char last_reply[128];
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

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
	*cap = (uint32_t)sizeof(struct chunk) + DATA_CAP;
	return malloc(*cap);
}

static void
w_put(void *c, void *chunk)
{
	struct ctx *x = c;

	if (x->lent != NULL && chunk == x->lent) /* chain_put starts at the head */
		x->put_lent = true;
	x->chunks_out--;
	free(chunk);
}

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

/* Reads the block as the control plane does (common/chunk.h): len from
 * the call, never the last chunk's len or next. */
static bool
w_headers(void *c, const struct chunk *body, uint32_t len)
{
	struct ctx *x = c;
	const char *want = x->row->msg;
	uint32_t left = len, n, off = 0;
	bool same = true;
	const struct chunk *head = body;

	x->n_told++;
	x->told = len;
	while (body != NULL && left > 0) {
		n = left > body->cap ? body->len : left;
		same = same && memcmp(body->data, want + off, n) == 0;
		off += n;
		left -= n;
		if (left > 0)
			body = body->next;
	}
	x->block_right = same && left == 0;
	if (x->row->ending == END_NOT_LENT)
		return false;
	x->lent = head;
	return true;
}

/* Reads the final bytes as the control plane does: whole chunks only. */
static void
w_final(void *c, uint32_t final)
{
	struct ctx *x = c;
	const struct chunk *body = x->lent;
	uint32_t off = 0;

	x->n_final++;
	if (body == NULL || final <= x->final || final % DATA_CAP != 0) {
		x->final_wrong = true;
		return;
	}
	x->final = final;
	for (; off < final; off += body->cap, body = off < final ? body->next : body)
		if (body->len != body->cap || memcmp(body->data, x->row->msg + off, body->cap) != 0)
			x->final_wrong = true;
}

static void
w_release(void *c, struct chunk *body)
{
	struct ctx *x = c;
	struct chunk *next;

	x->released++;
	for (; body != NULL; body = next) {
		next = body->next;
		x->lent_chunks++;
		x->chunks_out--;
		free(body);
	}
	x->lent = NULL;
}

static int
w_check(void *c, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct ctx *x = c;

	if (chk->stage != SMTP_STAGE_DATA_END)
		return SMTP_CHECK_DONE;
	if (x->row->ending == END_REFUSE) {
		v->code = 451;
		return SMTP_CHECK_DONE;
	}
	x->pending_token = chk->token;
	return SMTP_CHECK_PENDING;
}

static bool
accept_all(const void *arg, const char *d, size_t len)
{
	(void)arg, (void)d, (void)len;
	return true;
}

static void
feed(struct smtp_session *s, const char *p, size_t n, uint32_t packet)
{
	size_t pos = 0;

	while (pos < n) {
		uint32_t want = packet ? packet : 1 + rnd(64);

		if (want > n - pos)
			want = (uint32_t)(n - pos);
		pos += smtp_session_feed(s, (const uint8_t *)p + pos, want);
	}
}

/* Dot-stuffs m for DATA; with the end marker unless cut. */
static char *
stuff(const char *m, bool end, size_t *out)
{
	size_t n = strlen(m), i, k = 0;
	char *w = malloc(n * 2 + 8);
	bool bol = true;

	for (i = 0; i < n; i++) {
		if (bol && m[i] == '.')
			w[k++] = '.';
		w[k++] = m[i];
		bol = m[i] == '\n';
	}
	if (end) {
		memcpy(w + k, ".\r\n", 3);
		k += 3;
	}
	*out = k;
	return w;
}

static void
run(const struct row *r, bool bdat, uint32_t packet)
{
	static const struct smtp_peer peer = { 4, { 198, 51, 100, 7 }, 25000 };
	static const struct smtp_ops ops = {
		.write = w_write,
		.close = w_close,
		.check = w_check,
		.chunk_get = w_get,
		.chunk_put = w_put,
		.buf_get = w_buf_get,
		.buf_put = w_buf_put,
		.headers = w_headers,
		.body_release = w_release,
		.body_final = w_final,
	};
	struct smtp_params params = { .hostname = "mx.example.com", .domain_accepted = accept_all };
	struct ctx x = { .row = r, .told = -1 };
	void *mem = malloc(smtp_session_size());
	struct smtp_session *s = smtp_session_init(
		mem, smtp_session_size(), &params, &ops, &x, &peer);
	bool cut = r->ending == END_CLOSE || r->ending == END_RSET;
	size_t mlen = strlen(r->msg), wlen;
	static const char greeting[] =
		"EHLO c.example.net\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.com>\r\n";
	char head[64], *wire;
	long want = r->hdr_len;
	const char *how = bdat ? "BDAT" : "DATA";

	if (r->ending == END_RSET && !bdat) { /* RSET cannot cut a DATA body */
		free(mem);
		return;
	}
	smtp_session_start(s);
	feed(s, greeting, strlen(greeting), packet);
	if (cut)
		mlen -= 4; /* "dy\r\n" never comes */
	if (bdat) {
		snprintf(head, sizeof(head), cut ? "BDAT %zu\r\n" : "BDAT %zu LAST\r\n", mlen);
		feed(s, head, strlen(head), packet);
		feed(s, r->msg, mlen, packet);
	} else {
		char *part = strndup(r->msg, mlen);

		feed(s, "DATA\r\n", 6, packet);
		wire = stuff(part, !cut, &wlen);
		feed(s, wire, wlen, packet);
		free(wire);
		free(part);
	}
	if (want == 0) /* up to and with the first CRLF CRLF */
		want = (long)(strstr(r->msg, "\r\n\r\n") - r->msg) + 4;
	CHECK(x.told == want && x.n_told == (want >= 0 ? 1u : 0u),
	      "%s by %s, packets %u: told %ld (%u calls), want %ld", r->name, how, packet, x.told,
	      x.n_told, want);
	if (want >= 0)
		CHECK(x.block_right, "%s by %s, packets %u: the block was not in the chain",
		      r->name, how, packet);
	if (r->ending == END_RSET)
		feed(s, "RSET\r\n", 6, packet);
	if (r->ending == END_DELIVER && x.pending_token != 0) {
		struct smtp_verdict v = { 0 };

		CHECK(x.released == 0, "%s by %s: released before the answer", r->name, how);
		x.lent = NULL; /* the reader is done once it answers */
		smtp_session_verdict(s, x.pending_token, &v);
		CHECK(strncmp(x.last_reply, "250", 3) == 0, "%s by %s: %s", r->name, how,
		      x.last_reply);
	}
	CHECK(!x.final_wrong, "%s by %s, packets %u: a wrong final count (%u calls)", r->name, how,
	      packet, x.n_final);
	if (r->msg == long_body && !cut)
		CHECK(x.final == (mlen - 1) / DATA_CAP * DATA_CAP,
		      "%s by %s, packets %u: %u bytes said final of %zu", r->name, how, packet,
		      x.final, mlen);
	else if (r->msg == long_body)
		CHECK(x.n_final > 0, "%s by %s, packets %u: nothing said final", r->name, how,
		      packet);
	smtp_session_fini(s);
	CHECK(!x.put_lent, "%s by %s: a lent chunk came back through chunk_put", r->name, how);
	CHECK(x.chunks_out == 0, "%s by %s: %d chunks not back", r->name, how, x.chunks_out);
	if (want < 0 || r->ending == END_DELIVER || r->ending == END_NOT_LENT)
		CHECK(x.released == 0, "%s by %s: released %u", r->name, how, x.released);
	else
		CHECK(x.released == 1 && x.lent_chunks > 0, "%s by %s: released %u (%u chunks)",
		      r->name, how, x.released, x.lent_chunks);
	free(mem);
}

static void
make_messages(void)
{
	size_t k = 0, i;

	/* Header fields past three chunks, then a body. */
	for (i = 0; k < 3 * DATA_CAP + 50; i++)
		k += (size_t)snprintf(long_hdrs + k, sizeof(long_hdrs) - k,
				      "X-Field-%02zu: some value of the field %zu\r\n", i, i);
	snprintf(long_hdrs + k, sizeof(long_hdrs) - k, "\r\nthe body\r\n");
	/* A field that ends so that CRLF CRLF straddles the first chunk's
	 * end: "\r\n" in the first chunk, "\r\n" in the second. */
	memset(boundary_hdrs, 'v', DATA_CAP - 2);
	memcpy(boundary_hdrs, "X-Pad: ", 7);
	snprintf(boundary_hdrs + DATA_CAP - 2, sizeof(boundary_hdrs) - DATA_CAP + 2,
		 "\r\n\r\nbody\r\n");
	/* A short block, then a body of many chunks. */
	k = (size_t)snprintf(long_body, sizeof(long_body), "From: a@example.net\r\n\r\n");
	for (i = 0; k < 10 * DATA_CAP + 17; i++)
		k += (size_t)snprintf(long_body + k, sizeof(long_body) - k,
				      "line %03zu of a body of many chunks\r\n", i);
}

int
main(void)
{
	static const uint32_t packets[] = { 1, 7, 1500, 0 };
	size_t i, p;

	make_messages();
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		for (p = 0; p < sizeof(packets) / sizeof(packets[0]); p++) {
			run(&rows[i], false, packets[p]);
			run(&rows[i], true, packets[p]);
		}
	return check_done();
}
