/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_auth.c — the headers of control/checks.c: forged
 * Authentication-Results removed wherever the message's chunks happen to
 * split it, others kept, nothing else touched; and the headers we write
 * (Authentication-Results, Received): what goes in a comment, and the
 * client's name only when it is forward-confirmed.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/txrec.h"

#include "control/checks.h"
#include "control/spool.h"
#include "tests/check.h"

/* msg cut into chunks of at most `cut` bytes. */
static struct chunk *
chain(const char *msg, size_t cut)
{
	struct chunk *head = NULL, **tail = &head;
	size_t len = strlen(msg), off;

	for (off = 0; off < len; off += cut) {
		size_t n = len - off < cut ? len - off : cut;
		struct chunk *c = malloc(sizeof(*c) + n);

		c->next = NULL;
		c->len = c->cap = (uint32_t)n;
		memcpy(c->data, msg + off, n);
		*tail = c;
		tail = &c->next;
	}
	return head;
}

static void
chain_free(struct chunk *c)
{
	while (c) {
		struct chunk *n = c->next;

		free(c);
		c = n;
	}
}

static char *
flatten(const struct chunk *c)
{
	size_t len = 0, off = 0;
	const struct chunk *k;
	char *out;

	for (k = c; k; k = k->next)
		len += k->len;
	out = malloc(len + 1);
	for (k = c; k; k = k->next) {
		memcpy(out + off, k->data, k->len);
		off += k->len;
	}
	out[off] = '\0';
	return out;
}

struct strip_case {
	const char *name, *in, *want; /* want NULL: nothing to strip */
};

static const struct strip_case strip_cases[] = {
	{ "ours removed, others kept",
	  "Authentication-Results: mx.lab.example; spf=pass\r\n"
	  "Authentication-Results: other.example; spf=fail\r\n"
	  "Subject: x\r\n\r\nbody\r\n",
	  "Authentication-Results: other.example; spf=fail\r\n"
	  "Subject: x\r\n\r\nbody\r\n" },
	{ "folded, comment, version, other case",
	  "Subject: x\r\n"
	  "authentication-results: (forged) MX.Lab.Example 1;\r\n\tdkim=pass\r\n header.d=bank.example\r\n"
	  "To: <a@b>\r\n\r\nbody\r\n",
	  "Subject: x\r\nTo: <a@b>\r\n\r\nbody\r\n" },
	{ "a longer id is not ours",
	  "Authentication-Results: mx.lab.example.evil; spf=pass\r\n\r\nbody\r\n", NULL },
	{ "in the body it stays",
	  "Subject: x\r\n\r\nAuthentication-Results: mx.lab.example; spf=pass\r\n", NULL },
	{ "no header of that name",
	  "Subject: x\r\nX-Authentication-Results: mx.lab.example; a=b\r\n\r\nbody\r\n", NULL },
	{ "no body at all: all of it is headers",
	  "Authentication-Results: mx.lab.example; spf=pass\r\n", "" },
	{ "no body, no final CRLF",
	  "Subject: x\r\nAuthentication-Results: mx.lab.example; spf=pass\r\n\tdkim=pass",
	  "Subject: x\r\n" },
	{ "no body, ours in the middle",
	  "To: <a@b>\r\nAuthentication-Results: mx.lab.example; none\r\nSubject: x\r\n",
	  "To: <a@b>\r\nSubject: x\r\n" },
	{ "nested comments",
	  "Authentication-Results: (a (b) c) mx.lab.example; dkim=pass\r\n\r\nbody\r\n",
	  "\r\nbody\r\n" },
	{ "quoted-pairs in a comment",
	  "Authentication-Results: (a \\) b \\( c \\\\) mx.lab.example; spf=pass\r\nX: y\r\n\r\nb\r\n",
	  "X: y\r\n\r\nb\r\n" },
	{ "quoted-string authserv-id",
	  "Authentication-Results: \"mx.lab.example\"; spf=pass\r\n\r\nb\r\n", "\r\nb\r\n" },
	{ "quoted-string with quoted-pairs, other case, version",
	  "Authentication-Results: \"MX.lab\\.Example\" 1; spf=pass\r\n\r\nb\r\n", "\r\nb\r\n" },
	{ "CFWS before the id and the version, folded everywhere",
	  "X: 1\r\nAuthentication-Results :\r\n (first\r\n (second)) \r\n\tmx.lab.example\r\n (v)\r\n 1;\r\n dkim=pass\r\nY: 2\r\n\r\nb\r\n",
	  "X: 1\r\nY: 2\r\n\r\nb\r\n" },
	{ "our id inside a comment, another's after it",
	  "Authentication-Results: (mx.lab.example) other.example; spf=pass\r\n\r\nb\r\n", NULL },
	{ "our id in a nested comment, another's after it",
	  "Authentication-Results: (a (mx.lab.example) b) other.example; spf=pass\r\n\r\nb\r\n",
	  NULL },
	{ "an unclosed comment names nobody",
	  "Authentication-Results: (mx.lab.example; spf=pass\r\n\r\nb\r\n", NULL },
	{ "a quoted id of another",
	  "Authentication-Results: \"mx.lab.example.evil\"; spf=pass\r\n\r\nb\r\n", NULL },
	{ "a quoted id, unclosed",
	  "Authentication-Results: \"mx.lab.example; spf=pass\r\n\r\nb\r\n", NULL },
	{ "a fold inside a quoted id keeps its space: not ours",
	  "Authentication-Results: \"mx.lab.\r\n example\"; spf=pass\r\n\r\nb\r\n", NULL },
	{ "a quoted-pair across a fold, then ours",
	  "Authentication-Results: (a \\\r\n ) mx.lab.example; x\r\n\r\nb\r\n", "\r\nb\r\n" },
	{ "an empty line first: all of it is body",
	  "\r\nAuthentication-Results: mx.lab.example; spf=pass\r\n", NULL },
	{ "after the empty line it stays, before it goes",
	  "Authentication-Results: mx.lab.example; a=b\r\n\r\nAuthentication-Results: mx.lab.example; c=d\r\n",
	  "\r\nAuthentication-Results: mx.lab.example; c=d\r\n" },
};

static void
test_strip(void)
{
	size_t i, cut;

	for (i = 0; i < sizeof(strip_cases) / sizeof(strip_cases[0]); i++) {
		const struct strip_case *c = &strip_cases[i];
		unsigned bad = 0;

		for (cut = 1; cut <= strlen(c->in); cut++) {
			struct chunk *in = chain(c->in, cut);
			struct chunk *out = auth_strip_forged("mx.lab.example", in);
			char *flat;

			if (!c->want) {
				bad += out != NULL;
			} else if (!out) {
				bad++;
			} else {
				flat = flatten(out);
				bad += strcmp(flat, c->want) != 0;
				free(flat);
				free(out); /* the rest belongs to in */
			}
			chain_free(in);
		}
		CHECK(bad == 0, "%s: wrong at %u of %zu chunk sizes", c->name, bad, strlen(c->in));
	}
}

static void
test_results_header(void)
{
	struct txrec r;
	struct auth_verdict v;
	char out[2048];

	memset(&r, 0, sizeof(r));
	memset(&v, 0, sizeof(v));
	r.family = 6;
	inet_pton(AF_INET6, "2001:db8:1::10", r.addr);
	r.ptr = PTR_PASS;
	snprintf(r.ptr_name, sizeof(r.ptr_name), "peer-ok.lab.example");
	v.spf.result = SPF_RES_FAIL;
	v.spf.kind = SPF_ID_MAILFROM;
	snprintf(v.spf.identity, sizeof(v.spf.identity), "a b\"c@example.org");
	v.ndkim = 2;
	v.dkim[0].result = DKIM_RES_PASS;
	snprintf(v.dkim[0].domain, sizeof(v.dkim[0].domain), "example.org");
	snprintf(v.dkim[0].selector, sizeof(v.dkim[0].selector), "sel");
	snprintf(v.dkim[0].algorithm, sizeof(v.dkim[0].algorithm), "ed25519-sha256");
	v.dkim[1].result = DKIM_RES_FAIL;
	snprintf(v.dkim[1].reason, sizeof(v.dkim[1].reason), "body hash (mismatch)");
	snprintf(v.dkim[1].domain, sizeof(v.dkim[1].domain), "example.net");
	auth_results_header("mx.lab.example", &r, &v, out, sizeof(out));
	CHECK(strcmp(out,
		     "Authentication-Results: mx.lab.example;\r\n"
		     "\tiprev=pass policy.iprev=2001:db8:1::10 (peer-ok.lab.example);\r\n"
		     "\tspf=fail smtp.mailfrom=\"a b\\\"c@example.org\";\r\n"
		     "\tdkim=pass header.d=example.org header.s=sel header.a=ed25519-sha256;\r\n"
		     "\tdkim=fail (body hash \\(mismatch\\)) header.d=example.net\r\n") == 0,
	      "header:\n%s", out);
	r.ptr = PTR_NONE;
	r.ptr_name[0] = '\0';
	v.ndkim = 0;
	v.spf.kind = SPF_ID_HELO;
	v.spf.result = SPF_RES_NONE;
	snprintf(v.spf.identity, sizeof(v.spf.identity), "postmaster@client.example");
	auth_results_header("mx.lab.example", &r, &v, out, sizeof(out));
	CHECK(strstr(out,
		     "\tiprev=permerror policy.iprev=2001:db8:1::10;\r\n"
		     "\tspf=none smtp.helo=postmaster@client.example;\r\n\tdkim=none\r\n") != NULL,
	      "header:\n%s", out);
	CHECK(strcmp(auth_dkim_summary(&v), "none") == 0, "summary of none");
}

/* The client's name, in Authentication-Results and Received, for each PTR
 * result: only a forward-confirmed one is written, and as a comment. */
static void
test_ptr_name(void)
{
	static const struct {
		uint8_t ptr;
		const char *name, *iprev, *received;
	} cases[] = {
		{ PTR_PASS, "peer-ok.lab.example",
		  "\tiprev=pass policy.iprev=2001:db8:1::30 (peer-ok.lab.example);\r\n",
		  "Received: from client.example (peer-ok.lab.example [IPv6:2001:db8:1::30])\r\n" },
		{ PTR_MISMATCH, "peer-ok.lab.example",
		  "\tiprev=fail policy.iprev=2001:db8:1::30;\r\n",
		  "Received: from client.example (unknown [IPv6:2001:db8:1::30])\r\n" },
		{ PTR_NONE, "", "\tiprev=permerror policy.iprev=2001:db8:1::30;\r\n",
		  "Received: from client.example (unknown [IPv6:2001:db8:1::30])\r\n" },
		{ PTR_TEMPERROR, "peer-ok.lab.example",
		  "\tiprev=temperror policy.iprev=2001:db8:1::30;\r\n",
		  "Received: from client.example (unknown [IPv6:2001:db8:1::30])\r\n" },
		{ PTR_UNKNOWN, "peer-ok.lab.example",
		  "\tiprev=temperror policy.iprev=2001:db8:1::30;\r\n",
		  "Received: from client.example (unknown [IPv6:2001:db8:1::30])\r\n" },
		/* A confirmed name is still the peer's text: it cannot close
		 * the comment. */
		{ PTR_PASS, "x)dkim=pass(.evil\\.example",
		  "\tiprev=pass policy.iprev=2001:db8:1::30 (x\\)dkim=pass\\(.evil\\\\.example);\r\n",
		  "Received: from client.example (x\\)dkim=pass\\(.evil\\\\.example [IPv6:2001:db8:1::30])\r\n" },
		{ PTR_PASS, "a\r\nX-Evil: (1)",
		  "\tiprev=pass policy.iprev=2001:db8:1::30 (a??X-Evil: \\(1\\));\r\n",
		  "Received: from client.example (a??X-Evil: \\(1\\) [IPv6:2001:db8:1::30])\r\n" },
	};
	struct txrec r;
	struct auth_verdict v;
	char out[2048];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&r, 0, sizeof(r));
		memset(&v, 0, sizeof(v));
		r.family = 6;
		inet_pton(AF_INET6, "2001:db8:1::30", r.addr);
		r.ptr = cases[i].ptr;
		snprintf(r.ptr_name, sizeof(r.ptr_name), "%s", cases[i].name);
		snprintf(r.helo, sizeof(r.helo), "client.example");
		snprintf(r.queue_id, sizeof(r.queue_id), "Q1");
		auth_results_header("mx.lab.example", &r, &v, out, sizeof(out));
		CHECK(strstr(out, cases[i].iprev) != NULL, "%s %s: Authentication-Results:\n%s",
		      ptr_result_name(cases[i].ptr), cases[i].name, out);
		spool_received(&r, "mx.lab.example", out, sizeof(out));
		CHECK(strncmp(out, cases[i].received, strlen(cases[i].received)) == 0,
		      "%s %s: Received:\n%s", ptr_result_name(cases[i].ptr), cases[i].name, out);
	}
}

/* DKIM's reasons go in comments: escaped as comments, whatever they hold. */
static void
test_dkim_reason(void)
{
	struct txrec r;
	struct auth_verdict v;
	char out[2048];

	memset(&r, 0, sizeof(r));
	memset(&v, 0, sizeof(v));
	r.family = 4;
	inet_pton(AF_INET, "198.51.100.20", r.addr);
	r.ptr = PTR_NONE;
	v.ndkim = 1;
	v.dkim[0].result = DKIM_RES_PERMERROR;
	snprintf(v.dkim[0].reason, sizeof(v.dkim[0].reason), "x) dkim=pass (\\ \"q\"\r\nX: y");
	snprintf(v.dkim[0].domain, sizeof(v.dkim[0].domain), "example.net");
	auth_results_header("mx.lab.example", &r, &v, out, sizeof(out));
	CHECK(strstr(out, ";\r\n\tdkim=permerror (x\\) dkim=pass \\(\\\\ \"q\"??X: y) "
			  "header.d=example.net\r\n") != NULL,
	      "header:\n%s", out);
}

int
main(void)
{
	test_strip();
	test_results_header();
	test_ptr_name();
	test_dkim_reason();
	return check_done();
}
