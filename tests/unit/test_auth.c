/*
 * test_auth.c - the headers of control/auth.c: forged Authentication-Results
 * removed wherever the message's chunks happen to split it, others kept,
 * nothing else touched; and the Authentication-Results we write.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "control/auth.h"
#include "control/txrec.h"
#include "tests/unit/check.h"

/* msg cut into chunks of at most `cut` bytes. */
static struct smtp_chunk *
chain(const char *msg, size_t cut)
{
	struct smtp_chunk *head = NULL, **tail = &head;
	size_t len = strlen(msg), off;

	for (off = 0; off < len; off += cut) {
		size_t n = len - off < cut ? len - off : cut;
		struct smtp_chunk *c = malloc(sizeof(*c) + n);

		c->next = NULL;
		c->len = c->cap = (uint32_t)n;
		memcpy(c->data, msg + off, n);
		*tail = c;
		tail = &c->next;
	}
	return head;
}

static void
chain_free(struct smtp_chunk *c)
{
	while (c) {
		struct smtp_chunk *n = c->next;

		free(c);
		c = n;
	}
}

static char *
flatten(const struct smtp_chunk *c)
{
	size_t len = 0, off = 0;
	const struct smtp_chunk *k;
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
	const char *name, *in, *want;   /* want NULL: nothing to strip */
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
	{ "no body at all: left alone",
	  "Authentication-Results: mx.lab.example; spf=pass\r\n", NULL },
};

static void
test_strip(void)
{
	size_t i, cut;

	for (i = 0; i < sizeof(strip_cases) / sizeof(strip_cases[0]); i++) {
		const struct strip_case *c = &strip_cases[i];
		unsigned bad = 0;

		for (cut = 1; cut <= strlen(c->in); cut++) {
			struct smtp_chunk *in = chain(c->in, cut);
			struct smtp_chunk *out = auth_strip_forged("mx.lab.example", in);
			char *flat;

			if (!c->want) {
				bad += out != NULL;
			} else if (!out) {
				bad++;
			} else {
				flat = flatten(out);
				bad += strcmp(flat, c->want) != 0;
				free(flat);
				free(out);      /* the rest belongs to in */
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
		     "\tdkim=fail (body hash  mismatch ) header.d=example.net\r\n") == 0,
	      "header:\n%s", out);
	r.ptr = PTR_NONE;
	r.ptr_name[0] = '\0';
	v.ndkim = 0;
	v.spf.kind = SPF_ID_HELO;
	v.spf.result = SPF_RES_NONE;
	snprintf(v.spf.identity, sizeof(v.spf.identity), "postmaster@client.example");
	auth_results_header("mx.lab.example", &r, &v, out, sizeof(out));
	CHECK(strstr(out, "\tiprev=fail policy.iprev=2001:db8:1::10;\r\n"
			  "\tspf=none smtp.helo=postmaster@client.example;\r\n\tdkim=none\r\n") != NULL,
	      "header:\n%s", out);
	CHECK(strcmp(auth_dkim_summary(&v), "none") == 0, "summary of none");
}

int
main(void)
{
	test_strip();
	test_results_header();
	return check_done();
}
