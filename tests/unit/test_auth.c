/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_auth.c — the headers of control/checks.c: forged
 * Authentication-Results removed wherever the message's chunks happen to
 * split it, others kept, nothing else touched; and the headers we write
 * (Authentication-Results, Received): what goes in a comment, and the
 * client's name only when it is forward-confirmed. And DKIM's key records:
 * the names read from the header block as the verifier reads it, and the
 * verification answered from a key set filled here by hand (answers built
 * in wire format, as libunbound gives them), with no DNS.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

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

/* ---- DKIM key records ---- */

/* RFC 8463 A.3, two signatures (ed25519 and RSA), and A.2's key records. */
static const char rfc8463_msg[] =
	"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
	" d=football.example.com; i=@football.example.com;\r\n"
	" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
	" subject : date : message-id : from : subject : date;\r\n"
	" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
	" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
	" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
	"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
	" d=football.example.com; i=@football.example.com;\r\n"
	" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
	" date : message-id : from : subject : date;\r\n"
	" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
	" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
	" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
	" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
	"From: Joe SixPack <joe@football.example.com>\r\n"
	"To: Suzie Q <suzie@shopping.example.net>\r\n"
	"Subject: Is dinner ready?\r\n"
	"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
	"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
	"\r\n"
	"Hi.\r\n"
	"\r\n"
	"We lost the game.  Are you hungry yet?\r\n"
	"\r\n"
	"Joe.\r\n";
static const char brisbane_name[] = "brisbane._domainkey.football.example.com";
static const char brisbane_key[] =
	"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char test_name[] = "test._domainkey.football.example.com";
static const char test_key[] =
	"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6w"
	"y5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvH"
	"O9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

static size_t
put_name(uint8_t *p, const char *name)
{
	size_t o = 0;

	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		p[o++] = (uint8_t)n;
		memcpy(p + o, name, n);
		o += n;
		name += n + (dot ? 1 : 0);
	}
	p[o++] = 0;
	return o;
}

/* A reply as libunbound hands it over: rcode, and for NOERROR one TXT
 * record holding txt (in strings of at most 255). Freed by
 * ub_resolve_free(), so every part comes from malloc. */
static struct ub_result *
txt_reply(const char *name, int rcode, const char *txt)
{
	struct ub_result *res = calloc(1, sizeof(*res));
	uint8_t *p = malloc(4096);
	size_t o = 12, rdlen_at, len = txt ? strlen(txt) : 0, off;

	memset(p, 0, 12);
	p[2] = 0x81; /* QR, RD */
	p[3] = (uint8_t)(0x80 | rcode);
	p[5] = 1; /* one question */
	o += put_name(p + o, name);
	p[o++] = 0, p[o++] = 16, p[o++] = 0, p[o++] = 1; /* TXT IN */
	if (rcode == 0 && txt) {
		p[7] = 1; /* one answer */
		p[o++] = 0xc0, p[o++] = 12;
		p[o++] = 0, p[o++] = 16, p[o++] = 0, p[o++] = 1;
		p[o++] = 0, p[o++] = 0, p[o++] = 1, p[o++] = 0; /* TTL */
		rdlen_at = o;
		o += 2;
		for (off = 0; off < len; off += 255) {
			size_t n = len - off < 255 ? len - off : 255;

			p[o++] = (uint8_t)n;
			memcpy(p + o, txt + off, n);
			o += n;
		}
		p[rdlen_at] = (uint8_t)((o - rdlen_at - 2) >> 8);
		p[rdlen_at + 1] = (uint8_t)(o - rdlen_at - 2);
	}
	res->qname = strdup(name);
	res->qtype = 16;
	res->qclass = 1;
	res->data = calloc(1, sizeof(char *));
	res->len = calloc(1, sizeof(int));
	res->rcode = rcode;
	res->havedata = rcode == 0 && txt;
	res->nxdomain = rcode == 3;
	res->answer_packet = p;
	res->answer_len = (int)o;
	return res;
}

/* The names auth_dkim_keys() reads from msg cut in pieces of `cut`, joined
 * with spaces; returns how many lookups the verification then made that
 * the set could not answer (every name answered NXDOMAIN). */
static unsigned
key_names(struct auth *a, const char *msg, size_t cut, char *out, size_t n)
{
	struct chunk *c = chain(msg, cut);
	struct dkim_keys *k = auth_dkim_keys(a, c);
	struct policy_rule rule = { 0 };
	struct auth_verdict v;
	unsigned i, missing;

	out[0] = '\0';
	for (i = 0; k && i < dkim_keys_count(k); i++) {
		snprintf(out + strlen(out), n - strlen(out), "%s%s", i ? " " : "",
			 dkim_keys_name(k, i));
		dkim_keys_answer(k, i, 0, txt_reply(dkim_keys_name(k, i), 3, NULL));
	}
	memset(&v, 0, sizeof(v));
	auth_verify(a, c, k, &rule, 6, &v);
	missing = dkim_keys_missing(k);
	dkim_keys_free(k);
	chain_free(c);
	return missing;
}

/* The tags a signature needs besides v, a, d and s to be parsed at all. */
#define SIGT      "h=from; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=dGVzdHRlc3R0ZXN0;"
#define SIG9(sel) "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=" sel "\r\n"

static void
test_dkim_key_names(struct auth *a)
{
	static const struct {
		const char *msg, *want, *what;
	} cases[] = {
		{ rfc8463_msg,
		  "brisbane._domainkey.football.example.com "
		  "test._domainkey.football.example.com",
		  "RFC 8463 A.3: both signatures' records" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT
		  "\r\n d = Ex\r\n\t.Org ; s\t=\r\n sel\r\n"
		  "\r\nbody\r\n",
		  "sel._domainkey.Ex.Org", "FWS in tags" },
		{ "dkim-SIGNATURE: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a\r\n\r\n",
		  "a._domainkey.ex.org", "the field name in any case" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org\r\n\r\n", "",
		  "no s=: malformed, no query" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; d=ex.org; s=a; bh=x; b=x\r\n\r\n", "",
		  "no h=: malformed" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT
		  " d=ex.org; s=a; D=ex.net; s=b\r\n\r\n",
		  "b._domainkey.ex.org", "tags given again, as the library reads them" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " D=ex.org; s=a\r\n\r\n", "",
		  "a tag first written in upper case is not found" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a\x01\r\n\r\n", "",
		  "a control character: malformed" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s s=a\r\n\r\n", "",
		  "white space inside a tag name: malformed" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a; ;\r\n\r\n",
		  "a._domainkey.ex.org", "an empty tag between two ';', as the library reads it" },
		{ "DKIM-Signature: v=1; a=RSA-SHA1; " SIGT " d=ex.org; s=a\r\n\r\n", "",
		  "rsa-sha1 never passes: no query" },
		{ "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a\r\n"
		  "DKIM-Signature: v=1; a=rsa-sha256; " SIGT " s=a; d=EX.org\r\n\r\n",
		  "a._domainkey.ex.org", "the same record named twice is fetched once" },
		{ "Subject: x\r\n\r\nDKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a\r\n",
		  "", "a field in the body is no signature" },
		{ "X-DKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=a\r\n"
		  "DKIM-Signature-X: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=b\r\n\r\n",
		  "", "other field names" },
		{ "From: a\r\nDKIM-Signature: v=1; a=rsa-sha256; " SIGT " d=ex.org; s=last",
		  "last._domainkey.ex.org",
		  "a message that ends in its header block: the last field counts" },
		{ SIG9("1") SIG9("2\x01") SIG9("3") SIG9("4") SIG9("5") SIG9("6") SIG9("7")
			  SIG9("8") SIG9("9") "\r\n",
		  "1._domainkey.ex.org 3._domainkey.ex.org 4._domainkey.ex.org 5._domainkey.ex.org "
		  "6._domainkey.ex.org 7._domainkey.ex.org 8._domainkey.ex.org",
		  "AUTH_MAX_SIGS signatures counted, malformed ones too; the rest cost no DNS" },
	};
	static const size_t cuts[] = { 1, 7, 100000 };
	char got[1024];
	size_t i, c;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			unsigned missing = key_names(a, cases[i].msg, cuts[c], got, sizeof(got));

			CHECK(strcmp(got, cases[i].want) == 0,
			      "DKIM keys: %s (cut %zu): got \"%s\"", cases[i].what, cuts[c], got);
			CHECK(missing == 0,
			      "DKIM keys: %s (cut %zu): the verifier asked for %u key(s) not named",
			      cases[i].what, cuts[c], missing);
		}
}

/* The message verified with the key set as filled by fill(): the
 * verdict, and the set's counters. */
struct key_run {
	struct auth_verdict v;
	uint32_t served, missing;
};

static struct key_run
verify_with(struct auth *a, void (*fill)(struct dkim_keys *), bool no_set)
{
	struct chunk *c = chain(rfc8463_msg, 64);
	struct dkim_keys *k = auth_dkim_keys(a, c);
	struct policy_rule rule = { 0 };
	struct key_run r;

	memset(&r, 0, sizeof(r));
	if (fill)
		fill(k);
	auth_verify(a, c, no_set ? NULL : k, &rule, 6, &r.v);
	r.served = dkim_keys_served(k);
	r.missing = dkim_keys_missing(k);
	dkim_keys_free(k);
	chain_free(c);
	return r;
}

static void
fill_both(struct dkim_keys *k)
{
	dkim_keys_answer(k, 0, 0, txt_reply(brisbane_name, 0, brisbane_key));
	dkim_keys_answer(k, 1, 0, txt_reply(test_name, 0, test_key));
}

static void
fill_first(struct dkim_keys *k)
{
	dkim_keys_answer(k, 0, 0, txt_reply(brisbane_name, 0, brisbane_key));
}

static void
fill_failures(struct dkim_keys *k)
{
	dkim_keys_answer(k, 0, 0, txt_reply(brisbane_name, 3, NULL)); /* NXDOMAIN */
	dkim_keys_timeout(k, 1);
}

static void
fill_servfail(struct dkim_keys *k)
{
	dkim_keys_answer(k, 0, 0, txt_reply(brisbane_name, 2, NULL));
	dkim_keys_answer(k, 1, UB_SERVFAIL, NULL);
}

static void
test_dkim_key_set(struct auth *a)
{
	struct key_run r;
	r = verify_with(a, fill_both, false);
	CHECK(r.v.ndkim == 2 && r.v.dkim[0].result == DKIM_RES_PASS &&
		      r.v.dkim[1].result == DKIM_RES_PASS && r.v.dkim_pass && !r.v.temp,
	      "both keys in the set: both signatures pass (%s, %s)",
	      dkim_outcome_name(r.v.dkim[0].result), dkim_outcome_name(r.v.dkim[1].result));
	CHECK(r.served == 2 && r.missing == 0, "both served from the set (%u served, %u missing)",
	      r.served, r.missing);

	r = verify_with(a, fill_first, false);
	CHECK(r.v.ndkim == 2 && r.v.dkim[0].result == DKIM_RES_PASS &&
		      r.v.dkim[1].result == DKIM_RES_TEMPERROR,
	      "a key never answered is a temperror, not a wait (%s, %s)",
	      dkim_outcome_name(r.v.dkim[0].result), dkim_outcome_name(r.v.dkim[1].result));
	CHECK(r.served == 1 && r.missing == 1, "one served, one missing (%u, %u)", r.served,
	      r.missing);

	r = verify_with(a, NULL, true);
	CHECK(r.v.ndkim == 2 && r.v.dkim[0].result == DKIM_RES_TEMPERROR &&
		      r.v.dkim[1].result == DKIM_RES_TEMPERROR && r.v.temp && !r.v.dkim_pass,
	      "no key set at all: every signature a temperror (%s, %s)",
	      dkim_outcome_name(r.v.dkim[0].result), dkim_outcome_name(r.v.dkim[1].result));

	r = verify_with(a, fill_failures, false);
	CHECK(r.v.ndkim == 2 && r.v.dkim[0].result == DKIM_RES_PERMERROR &&
		      r.v.dkim[1].result == DKIM_RES_TEMPERROR,
	      "NXDOMAIN is a permerror, a timeout a temperror (%s %s, %s %s)",
	      dkim_outcome_name(r.v.dkim[0].result), r.v.dkim[0].reason,
	      dkim_outcome_name(r.v.dkim[1].result), r.v.dkim[1].reason);
	CHECK(r.served == 2 && r.missing == 0, "failures are served from the set too (%u, %u)",
	      r.served, r.missing);

	r = verify_with(a, fill_servfail, false);
	CHECK(r.v.ndkim == 2 && r.v.dkim[0].result == DKIM_RES_TEMPERROR &&
		      r.v.dkim[1].result == DKIM_RES_TEMPERROR,
	      "SERVFAIL, in the reply or from libunbound, is a temperror (%s, %s)",
	      dkim_outcome_name(r.v.dkim[0].result), dkim_outcome_name(r.v.dkim[1].result));
}

int
main(void)
{
	struct ub_ctx *ub = ub_ctx_create();
	char err[256];
	struct auth *a = auth_create(ub, "mx.lab.example", 1000, err, sizeof(err));

	CHECK(a != NULL, "auth_create: %s", a ? "" : err);
	if (a) {
		test_dkim_key_names(a);
		test_dkim_key_set(a);
	}
	auth_destroy(a);
	ub_ctx_delete(ub);
	test_strip();
	test_results_header();
	test_ptr_name();
	test_dkim_reason();
	return check_done();
}
