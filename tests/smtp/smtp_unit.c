/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/smtp/smtp_unit.c — table-driven unit tests of the SMTP path parser
 * (smtp_addr.c), the body scanner (smtp_body.c) and the EHLO reply.
 *
 * Each row names an input, the flags it is parsed with, and what must come
 * out: the result, the mailbox and the domain the engine will hand to the
 * relay check. The body rows give wire bytes and the unstuffed bytes and
 * flags that must come out, fed whole and one byte at a time.
 */
#include <stdio.h>
#include <string.h>

#include "dataplane/smtp.h"
#include "dataplane/smtp_addr.h"
#include "dataplane/smtp_body.h"
#include "tests/check.h"

#define N SMTP_ADDR_NULL_OK
#define P SMTP_ADDR_POSTMASTER
#define U SMTP_ADDR_UTF8

struct addr_row {
	const char *in;
	unsigned flags;
	enum smtp_addr_result want;
	const char *mbox;   /* expected mailbox when OK */
	const char *domain; /* expected domain when OK */
	uint32_t len;       /* input length when it holds a NUL; else 0 */
};

static const struct addr_row addr_rows[] = {
	/* good paths */
	{ "<alice@example.net>", 0, SMTP_ADDR_OK, "alice@example.net", "example.net" },
	{ "<alice@example.net> SIZE=1", 0, SMTP_ADDR_OK, "alice@example.net", "example.net" },
	{ "<a.b-c+d_e@sub.example.net>", 0, SMTP_ADDR_OK, "a.b-c+d_e@sub.example.net",
	  "sub.example.net" },
	{ "<!#$%&'*+-/=?^_`{|}~@x.example>", 0, SMTP_ADDR_OK, "!#$%&'*+-/=?^_`{|}~@x.example",
	  "x.example" },
	{ "<\"john doe\"@example.net>", 0, SMTP_ADDR_OK, "\"john doe\"@example.net",
	  "example.net" },
	{ "<\"a\\\"b\"@example.net>", 0, SMTP_ADDR_OK, "\"a\\\"b\"@example.net", "example.net" },
	{ "<\"\"@example.net>", 0, SMTP_ADDR_OK, "\"\"@example.net", "example.net" },
	{ "<@hop.example:bob@example.com>", 0, SMTP_ADDR_OK, "bob@example.com", "example.com" },
	{ "<@a.example,@b.example:bob@example.com>", 0, SMTP_ADDR_OK, "bob@example.com",
	  "example.com" },
	{ "<bob@[192.0.2.1]>", 0, SMTP_ADDR_OK, "bob@[192.0.2.1]", "[192.0.2.1]" },
	{ "<bob@[IPv6:2001:db8::1]>", 0, SMTP_ADDR_OK, "bob@[IPv6:2001:db8::1]",
	  "[IPv6:2001:db8::1]" },
	{ "<bob@[ipv6:::1]>", 0, SMTP_ADDR_OK, "bob@[ipv6:::1]", "[ipv6:::1]" },
	{ "<bob@[x-tag:abc]>", 0, SMTP_ADDR_OK, "bob@[x-tag:abc]", "[x-tag:abc]" },
	{ "<bob@9.example>", 0, SMTP_ADDR_OK, "bob@9.example", "9.example" },
	{ "<bob@EXAMPLE.COM>", 0, SMTP_ADDR_OK, "bob@EXAMPLE.COM", "EXAMPLE.COM" },
	{ "<>", N, SMTP_ADDR_OK, "", "" },
	{ "<postmaster>", P, SMTP_ADDR_OK, "postmaster", "" },
	{ "<PostMaster>", P, SMTP_ADDR_OK, "PostMaster", "" },
	{ "<postmaster@example.com>", P, SMTP_ADDR_OK, "postmaster@example.com", "example.com" },
	{ "<j\xc3\xb6rg@b\xc3\xbc"
	  "cher.example>",
	  U, SMTP_ADDR_OK,
	  "j\xc3\xb6rg@b\xc3\xbc"
	  "cher.example",
	  "b\xc3\xbc"
	  "cher.example" },
	{ "<\xe7\x94\xa8\xe6\x88\xb7@example.com>", U, SMTP_ADDR_OK,
	  "\xe7\x94\xa8\xe6\x88\xb7@example.com", "example.com" },
	{ "<\"\xc3\xa4 b\"@example.com>", U, SMTP_ADDR_OK, "\"\xc3\xa4 b\"@example.com",
	  "example.com" },
	{ "<\xf0\x9f\x93\xa7@example.com>", U, SMTP_ADDR_OK, "\xf0\x9f\x93\xa7@example.com",
	  "example.com" },
	/* 64-octet local part, 63-octet labels: at the limits */
	{ "<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com>", 0,
	  SMTP_ADDR_OK,
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
	  "example.com" },
	{ "<b@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com>", 0,
	  SMTP_ADDR_OK, "b@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com" },

	/* bad paths */
	{ "", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "alice@example.net", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@example.net", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<postmaster>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<postmaster>", N, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<.alice@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice.@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<al..ice@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<al ice@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<al(ice@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@-example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@example-.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@example..net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@.example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@example.net.>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<alice@exa_mple.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<\"unterminated@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<\"bad\x01\"@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<\"a\\\x01\"@example.net>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<@hop.example,bob@example.com>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<@hop.example:>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[300.1.1.1]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[192.0.2]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[192.0.2.1.5]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[IPv6:zz::1]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[192.0.2.1>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[tag:a b]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[tag-:ab]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@[tag:]>", 0, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bob@example.com\0>", 0, SMTP_ADDR_SYNTAX, NULL, NULL, 18 },
	{ "<b\0ob@example.com>", 0, SMTP_ADDR_SYNTAX, NULL, NULL, 18 },
	{ "<b@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com>", 0,
	  SMTP_ADDR_SYNTAX, NULL, NULL },
	/* UTF-8: needs SMTPUTF8, and must be well-formed */
	{ "<j\xc3\xb6rg@example.net>", 0, SMTP_ADDR_NEED_UTF8, NULL, NULL },
	{ "<jorg@b\xc3\xbc"
	  "cher.example>",
	  0, SMTP_ADDR_NEED_UTF8, NULL, NULL },
	{ "<bad\xc3\x28@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bad\xc0\xaf@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bad\xed\xa0\x80@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bad\xf4\x90\x80\x80@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bad\xe0\x80\x80@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	{ "<bad\xff@example.com>", U, SMTP_ADDR_SYNTAX, NULL, NULL },
	/* limits */
	{ "<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com>", 0,
	  SMTP_ADDR_TOO_LONG, NULL, NULL },
	{ "<b@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com>",
	  0, SMTP_ADDR_TOO_LONG, NULL, NULL },
	{ "<bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaa.com>",
	  0, SMTP_ADDR_TOO_LONG, NULL, NULL },
};

static void
addr_tests(void)
{
	size_t i;

	for (i = 0; i < sizeof(addr_rows) / sizeof(addr_rows[0]); i++) {
		const struct addr_row *r = &addr_rows[i];
		uint32_t n = r->len ? r->len : (uint32_t)strlen(r->in);
		struct smtp_addr a;
		enum smtp_addr_result got;
		char detail[600];
		bool ok;

		got = smtp_addr_parse(r->in, n, r->flags, &a);
		ok = got == r->want;
		if (ok && got == SMTP_ADDR_OK) {
			ok = a.mbox_len == strlen(r->mbox) &&
			     memcmp(r->in + a.mbox_off, r->mbox, a.mbox_len) == 0 &&
			     a.domain_len == strlen(r->domain) &&
			     memcmp(r->in + a.domain_off, r->domain, a.domain_len) == 0 &&
			     r->in[a.path_len - 1] == '>';
		}
		snprintf(detail, sizeof(detail), "row %zu %.80s: got %s (mbox %.*s)", i, r->in,
			 smtp_addr_result_name(got), got == SMTP_ADDR_OK ? (int)a.mbox_len : 0,
			 got == SMTP_ADDR_OK ? r->in + a.mbox_off : "");
		CHECK(ok, "addr: %s", detail);
	}
}

/* Local parts that name a further route are flagged (RCPT refuses them);
 * everything else, however unusual, is not. */
static const struct {
	const char *in;
	bool routing;
} routing_rows[] = {
	{ "<a%b@example.com>", true },
	{ "<a!b@example.com>", true },
	{ "<host!user@example.com>", true },
	{ "<\"a@b\"@example.com>", true },
	{ "<\"a%b\"@example.com>", true },
	{ "<\"a!b\"@example.com>", true },
	{ "<\"a\\@b\"@example.com>", true },
	{ "<%@example.com>", true },
	{ "<@hop.example:a%b@example.com>", true },
	{ "<first.last+tag@example.com>", false },
	{ "<\"john doe\"@example.com>", false },
	{ "<#$&'*+-/=?^_`{|}~@example.com>", false },
	{ "<@hop.example:bob@example.com>", false },
	{ "<bob@[IPv6:2001:db8::1]>", false },
	{ "<postmaster>", false },
};

static void
routing_tests(void)
{
	size_t i;

	for (i = 0; i < sizeof(routing_rows) / sizeof(routing_rows[0]); i++) {
		const char *in = routing_rows[i].in;
		struct smtp_addr a;
		enum smtp_addr_result got;
		char detail[300];

		got = smtp_addr_parse(in, (uint32_t)strlen(in), P, &a);
		snprintf(detail, sizeof(detail), "%s: got %s, routing %d", in,
			 smtp_addr_result_name(got), a.routing);
		CHECK(got == SMTP_ADDR_OK && a.routing == routing_rows[i].routing, "routing: %s",
		      detail);
	}
}

struct body_row {
	const char *in;
	size_t len;
	bool dot;
	uint32_t max_line;
	const char *out; /* unstuffed bytes */
	uint8_t flags;
	bool done;       /* DATA end marker reached */
	size_t consumed; /* bytes consumed when done (else len) */
};

#define S(x) x, sizeof(x) - 1

static const struct body_row body_rows[] = {
	{ S(".\r\n"), true, 1000, "", 0, true, 3 },
	{ S("a\r\n.\r\n"), true, 1000, "a\r\n", 0, true, 6 },
	{ S("a\r\n.\r\nMAIL"), true, 1000, "a\r\n", 0, true, 6 },
	{ S("..\r\n.\r\n"), true, 1000, ".\r\n", 0, true, 7 },
	{ S(".x\r\n.\r\n"), true, 1000, "x\r\n", 0, true, 7 },
	{ S("a.\r\n .\r\n.\r\n"), true, 1000, "a.\r\n .\r\n", 0, true, 11 },
	{ S("\r\n\r\n.\r\n"), true, 1000, "\r\n\r\n", 0, true, 7 },
	/* A bare LF starts no line: the dot after it is data, not stuffing. */
	{ S("a\n.\nb\r\n"), true, 1000, "a\n.\nb\r\n", SMTP_BODY_BARE_LF, false, 7 },
	{ S("a\r\n.\nb\r\n"), true, 1000, "a\r\n\nb\r\n", SMTP_BODY_BARE_LF, false, 8 },
	{ S("a\n.\r\nb"), true, 1000, "a\n.\r\nb", SMTP_BODY_BARE_LF, false, 6 },
	{ S("a\r.\r\n"), true, 1000, "a\r.\r\n", SMTP_BODY_BARE_CR, false, 5 },
	{ S("a\r\n.\rX\r\n.\r\n"), true, 1000, "a\r\n\rX\r\n", SMTP_BODY_BARE_CR, true, 11 },
	{ S("ab\r\r\n.\r\n"), true, 1000, "ab\r\r\n", SMTP_BODY_BARE_CR, true, 8 },
	{ S("abcd\r\n.\r\n"), true, 6, "abcd\r\n", 0, true, 9 },
	{ S("abcde\r\n.\r\n"), true, 6, "abcde\r\n", SMTP_BODY_LONG_LINE, true, 10 },
	/* The stuffing dot does not count toward the line length. */
	{ S("..bcd\r\n.\r\n"), true, 6, ".bcd\r\n", 0, true, 10 },
	{ S("..bcde\r\n.\r\n"), true, 6, ".bcde\r\n", SMTP_BODY_LONG_LINE, true, 11 },
	/* BDAT: no stuffing, no end marker */
	{ S(".\r\n.\r\n"), false, 1000, ".\r\n.\r\n", 0, false, 6 },
	{ S("a\nb"), false, 1000, "a\nb", SMTP_BODY_BARE_LF, false, 3 },
};

static char sink_buf[256];
static size_t sink_len;

static void
sink(void *arg, const uint8_t *p, uint32_t n)
{
	(void)arg;
	if (sink_len + n <= sizeof(sink_buf))
		memcpy(sink_buf + sink_len, p, n);
	sink_len += n;
}

static void
body_tests(void)
{
	size_t i, step;

	for (i = 0; i < sizeof(body_rows) / sizeof(body_rows[0]); i++) {
		const struct body_row *r = &body_rows[i];

		for (step = 0; step < 2; step++) {
			struct smtp_body b;
			size_t pos = 0;
			char detail[300];
			bool ok;

			smtp_body_begin(&b, r->dot, r->max_line);
			sink_len = 0;
			while (pos < r->len && !b.done) {
				uint32_t n = step ? 1 : (uint32_t)(r->len - pos);

				pos += smtp_body_scan(&b, (const uint8_t *)r->in + pos, n, sink,
						      NULL);
			}
			ok = b.flags == r->flags && b.done == r->done && pos == r->consumed &&
			     sink_len == strlen(r->out) && memcmp(sink_buf, r->out, sink_len) == 0;
			snprintf(detail, sizeof(detail),
				 "row %zu (%s): flags %u done %d consumed %zu out %zu", i,
				 step ? "bytes" : "whole", b.flags, b.done, pos, sink_len);
			CHECK(ok, "body: %s", detail);
		}
	}
}

/* ------------------------------------------------------------ EHLO */

static char ehlo_out[4096];
static size_t ehlo_len;

static uint32_t
e_write(void *ctx, const void *p, uint32_t n)
{
	(void)ctx;
	if (n > sizeof(ehlo_out) - 1 - ehlo_len)
		n = (uint32_t)(sizeof(ehlo_out) - 1 - ehlo_len);
	memcpy(ehlo_out + ehlo_len, p, n);
	ehlo_len += n;
	ehlo_out[ehlo_len] = '\0';
	return n;
}

static void
e_close(void *ctx)
{
	(void)ctx;
}

static void *
e_chunk_get(void *ctx, uint32_t *cap)
{
	(void)ctx;
	(void)cap;
	return NULL;
}

static void
e_chunk_put(void *ctx, void *c)
{
	(void)ctx;
	(void)c;
}

static uint8_t e_buf[1 << 16];

static void *
e_buf_get(void *ctx)
{
	(void)ctx;
	return e_buf;
}

static void
e_buf_put(void *ctx, void *b)
{
	(void)ctx;
	(void)b;
}

static const struct smtp_ops e_ops = {
	.write = e_write,
	.close = e_close,
	.chunk_get = e_chunk_get,
	.chunk_put = e_chunk_put,
	.buf_get = e_buf_get,
	.buf_put = e_buf_put,
};

/* The EHLO reply, byte for byte: with and without STARTTLS (the last line
 * changes), and SIZE with one digit and with the most a uint64_t holds. */
static void
ehlo_tests(void)
{
	static const struct {
		bool tls;
		uint64_t max;
		const char *want;
	} rows[] = {
		{ false, 0,
		  "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
		  "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n" },
		{ true, 1,
		  "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 1\r\n250-8BITMIME\r\n"
		  "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 STARTTLS\r\n" },
		{ true, UINT64_MAX,
		  "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 18446744073709551615\r\n"
		  "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n"
		  "250 STARTTLS\r\n" },
	};
	static uint8_t mem[1 << 16];

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_params params = { .hostname = "mx.example.net",
					      .tls_offer = rows[i].tls,
					      .max_msg_size = rows[i].max };
		struct smtp_peer peer = { .family = 4 };
		struct smtp_session *s = smtp_session_init(
			mem, sizeof(mem), &params, &e_ops, NULL, &peer);

		if (!CHECK(s != NULL, "session"))
			return;
		smtp_session_start(s);
		ehlo_len = 0;
		smtp_session_feed(s, (const uint8_t *)"EHLO a\r\n", 8);
		CHECK(strcmp(ehlo_out, rows[i].want) == 0, "EHLO reply %zu:\n%s", i, ehlo_out);
		smtp_session_fini(s);
	}
}

int
main(void)
{
	addr_tests();
	routing_tests();
	body_tests();
	ehlo_tests();
	return check_done();
}
