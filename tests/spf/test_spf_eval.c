/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/spf/test_spf_eval.c — the resumable SPF evaluation, driven by hand.
 *
 * No DNS server: the test is the caller of auth/spf.h's step API and
 * answers each query the passes ask for from a small table of its own,
 * as libunbound would (struct ub_result). So it sees what the evaluator
 * asks for pass by pass: that independent lookups of one pass are asked
 * for together, that a pass with a missing answer yields nothing, that
 * the §4.6.4 limits count per pass, and that a deadline is a temperror.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

#include "auth/spf.h"

#include "tests/check.h"

/* One name's records of one type; rcode NXDOMAIN when none of the name. */
struct rec {
	const char *name;
	int type;
	const char *text; /* TXT text, A address, or MX target */
};

static const struct rec *zone;
static size_t zone_n;

static void
push(struct ub_result *r, int *n, const void *data, int len)
{
	r->data = realloc(r->data, (size_t)(*n + 2) * sizeof(char *));
	r->len = realloc(r->len, (size_t)(*n + 2) * sizeof(int));
	r->data[*n] = malloc((size_t)len);
	memcpy(r->data[*n], data, (size_t)len);
	r->len[*n] = len;
	(*n)++;
	r->data[*n] = NULL;
	r->len[*n] = 0;
}

/* What libunbound would give for name/type from the table. */
static struct ub_result *
answer(const char *name, int type)
{
	struct ub_result *r = calloc(1, sizeof(*r));
	bool name_exists = false;
	int n = 0;
	size_t i;

	r->data = calloc(1, sizeof(char *));
	r->len = calloc(1, sizeof(int));
	for (i = 0; i < zone_n; i++) {
		uint8_t buf[300];
		size_t l;

		if (strcasecmp(zone[i].name, name) != 0)
			continue;
		name_exists = true;
		if (zone[i].type != type)
			continue;
		switch (type) {
		case ns_t_txt:
			l = strlen(zone[i].text);
			buf[0] = (uint8_t)l;
			memcpy(buf + 1, zone[i].text, l);
			push(r, &n, buf, (int)l + 1);
			break;
		case ns_t_a:
			inet_pton(AF_INET, zone[i].text, buf);
			push(r, &n, buf, 4);
			break;
		case ns_t_mx: {
			/* preference 10, then the target as one label per dot */
			const char *p = zone[i].text, *dot;
			size_t o = 2;

			buf[0] = 0;
			buf[1] = 10;
			while (*p) {
				dot = strchr(p, '.');
				l = dot ? (size_t)(dot - p) : strlen(p);
				buf[o++] = (uint8_t)l;
				memcpy(buf + o, p, l);
				o += l;
				p += l + (dot ? 1 : 0);
			}
			buf[o++] = 0;
			push(r, &n, buf, (int)o);
			break;
		}
		}
	}
	r->rcode = name_exists ? 0 : 3;
	r->nxdomain = !name_exists;
	r->havedata = n > 0;
	return r;
}

/* Runs the check to the end, answering from the zone (or letting the
 * queries for timeout_name time out). Fills per_pass[k] with the number
 * of queries pass k+1 asked for. Returns the passes. */
static unsigned
drive(struct spf_eval *ev, const char *timeout_name, unsigned per_pass[16])
{
	struct spf_dns_query q[64];
	unsigned nq, i, k = 0;

	memset(per_pass, 0, 16 * sizeof(unsigned));
	while (spf_eval_step(ev) == SPF_STEP_NEED_DNS) {
		nq = 0;
		while (nq < 64 && spf_eval_next_query(ev, &q[nq]))
			nq++;
		if (k < 16)
			per_pass[k] = nq;
		k++;
		CHECK(spf_eval_waiting(ev) == nq);
		for (i = 0; i < nq; i++) {
			CHECK(q[i].timeout_ms > 0 && q[i].timeout_ms <= 5000);
			if (timeout_name && strcasecmp(q[i].name, timeout_name) == 0)
				spf_eval_timeout(ev, q[i].id);
			else
				spf_eval_answer(ev, q[i].id, 0, answer(q[i].name, q[i].type));
		}
		if (k > 50)
			break;
	}
	return spf_eval_passes(ev);
}

static struct spf_eval *
start(struct spf_checker *ck, const char *from)
{
	struct spf_query q = { .family = AF_INET, .helo = "client.test", .mail_from = from };

	inet_pton(AF_INET, "192.0.2.1", q.addr);
	return spf_eval_start(ck, &q);
}

static void
test_parallel_lookups(struct spf_checker *ck)
{
	static const struct rec z[] = {
		{ "d.test", ns_t_txt,
		  "v=spf1 a:a.test mx:mx.test include:inc.test exists:e.test -all" },
		{ "a.test", ns_t_a, "198.51.100.9" },
		{ "mx.test", ns_t_txt, "not an mx" },
		{ "inc.test", ns_t_txt, "v=spf1 ip4:192.0.2.0/24 -all" },
	};
	struct spf_answer a;
	struct spf_eval *ev;
	unsigned per[16], passes;

	zone = z;
	zone_n = sizeof(z) / sizeof(z[0]);
	ev = start(ck, "x@d.test");
	CHECK(ev != NULL);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_TEMPERROR); /* nothing before it is done */
	passes = drive(ev, NULL, per);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_PASS);
	/* pass 1: the record; pass 2: a, mx, include and exists, together
	 * (exists behind the include's placeholder); pass 3: no more */
	CHECK(per[0] == 1);
	CHECK_EQ_INT(per[1], 4);
	CHECK_EQ_INT(passes, 3);
	CHECK_EQ_INT(spf_eval_lookups(ev), 5);
	spf_eval_free(ev);
}

static void
test_limits_per_pass(struct spf_checker *ck)
{
	static const struct rec z[] = {
		{ "many.test", ns_t_txt,
		  "v=spf1 include:i1.test include:i2.test include:i3.test include:i4.test "
		  "include:i5.test include:i6.test include:i7.test include:i8.test "
		  "include:i9.test include:i10.test include:i11.test -all" },
		{ "i1.test", ns_t_txt, "v=spf1 -all" },
		{ "i2.test", ns_t_txt, "v=spf1 -all" },
		{ "i3.test", ns_t_txt, "v=spf1 -all" },
		{ "i4.test", ns_t_txt, "v=spf1 -all" },
		{ "i5.test", ns_t_txt, "v=spf1 -all" },
		{ "i6.test", ns_t_txt, "v=spf1 -all" },
		{ "i7.test", ns_t_txt, "v=spf1 -all" },
		{ "i8.test", ns_t_txt, "v=spf1 -all" },
		{ "i9.test", ns_t_txt, "v=spf1 -all" },
		{ "i10.test", ns_t_txt, "v=spf1 -all" },
		{ "i11.test", ns_t_txt, "v=spf1 -all" },
		{ "ten.test", ns_t_txt,
		  "v=spf1 include:i1.test include:i2.test include:i3.test include:i4.test "
		  "include:i5.test include:i6.test include:i7.test include:i8.test "
		  "include:i9.test include:i10.test ip4:192.0.2.1 -all" },
		{ "voids.test", ns_t_txt,
		  "v=spf1 a:n1.test a:n2.test a:n3.test ip4:192.0.2.1 -all" },
	};
	struct spf_answer a;
	struct spf_eval *ev;
	unsigned per[16];

	zone = z;
	zone_n = sizeof(z) / sizeof(z[0]);
	/* eleven includes: the eleventh term is one too many, whichever pass
	 * meets it */
	ev = start(ck, "x@many.test");
	drive(ev, NULL, per);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_PERMERROR);
	CHECK(strstr(a.mechanism, "10 DNS-querying terms") != NULL);
	CHECK_EQ_INT(per[1], 10); /* the limit stops discovery at the tenth */
	spf_eval_free(ev);
	/* ten are allowed, however many passes they took */
	ev = start(ck, "x@ten.test");
	drive(ev, NULL, per);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_PASS);
	spf_eval_free(ev);
	/* three void lookups: permerror, as in one blocking evaluation */
	ev = start(ck, "x@voids.test");
	drive(ev, NULL, per);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_PERMERROR);
	CHECK(strstr(a.mechanism, "void") != NULL);
	spf_eval_free(ev);
}

static void
test_timeout(struct spf_checker *ck)
{
	static const struct rec z[] = {
		{ "t.test", ns_t_txt, "v=spf1 include:slow.test ip4:192.0.2.1 -all" },
	};
	struct spf_answer a;
	struct spf_eval *ev;
	unsigned per[16];

	zone = z;
	zone_n = sizeof(z) / sizeof(z[0]);
	ev = start(ck, "x@t.test");
	drive(ev, "slow.test", per);
	spf_eval_result(ev, &a);
	/* the include's record timed out: temperror, not the ip4 match that
	 * the pass with its placeholder saw */
	CHECK(a.result == SPF_RES_TEMPERROR);
	spf_eval_free(ev);
	ev = start(ck, "x@t.test");
	drive(ev, "t.test", per);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_TEMPERROR);
	CHECK(strcmp(a.mechanism, "DNS timeout") == 0);
	spf_eval_free(ev);
}

static void
test_no_dns_needed(struct spf_checker *ck)
{
	struct spf_answer a;
	struct spf_eval *ev = start(ck, "x@single-label");

	CHECK(spf_eval_step(ev) == SPF_STEP_DONE);
	CHECK(spf_eval_passes(ev) == 0 && spf_eval_lookups(ev) == 0);
	spf_eval_result(ev, &a);
	CHECK(a.result == SPF_RES_NONE);
	spf_eval_free(ev);
}

int
main(void)
{
	struct ub_ctx *ub = ub_ctx_create(); /* never asked: the test answers */
	struct spf_params p = { .ub = ub, .receiver = "mx.test", .dns_timeout_ms = 5000 };
	struct spf_checker *ck = spf_checker_create(&p);

	CHECK(ck != NULL);
	test_parallel_lookups(ck);
	test_limits_per_pass(ck);
	test_timeout(ck);
	test_no_dns_needed(ck);
	spf_checker_destroy(ck);
	ub_ctx_delete(ub);
	return check_done();
}
