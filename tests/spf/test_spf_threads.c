/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/spf/test_spf_threads.c — spf_check() from several threads, limits,
 * DNS failures, identities; against threads-zone.yml served on 127.0.0.1.
 *
 * Phase 1: eight threads share one checker and one ub_ctx (as the pool
 * threads do) and run the same table of cases over and over; every answer
 * must be the expected one.  The table covers the MAIL FROM and the HELO
 * identity, IPv4-mapped IPv6, include and mx, the 10-term limit across an
 * include (libspf2 alone resets its count there), the void limit
 * (libspf2 alone has none), and a /0 length, which only a record's own
 * term can ask for (never a HELO or local part put into a name by a macro).  Phase 2, on a fresh ub_ctx so that the
 * unanswered server does not slow phase 1: a timeout and a SERVFAIL are
 * temperror, and a timeout costs about dns_timeout_ms, not unbound's own
 * retry schedule.
 *
 * usage: test_spf_threads PORT (run_with_zone.py supplies it)
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <unbound.h>

#include "auth/spf.h"

#include "tests/check.h"

#define THREADS    8
#define ROUNDS     25
#define TIMEOUT_MS 300

struct case_row {
	const char *name;
	const char *addr;
	const char *helo;
	const char *from;
	enum spf_result want;
	const char *identity; /* NULL: not checked */
};

static const struct case_row cases[] = {
	{ "mailfrom pass ip6", "2001:db8:1::5", "mail.example.net", "a@pass.example.org",
	  SPF_RES_PASS, "a@pass.example.org" },
	{ "mailfrom fail ip6", "2001:db8:9::1", "mail.example.net", "a@pass.example.org",
	  SPF_RES_FAIL, NULL },
	{ "ipv4-mapped is ipv4", "::ffff:192.0.2.7", "mail.example.net", "a@pass.example.org",
	  SPF_RES_PASS, NULL },
	{ "include then mx", "2001:db8:2::25", "mail.example.net", "b@inc.example.org",
	  SPF_RES_PASS, NULL },
	{ "a mechanism ip4", "198.51.100.9", "mail.example.net", "c@fail.example.org", SPF_RES_PASS,
	  NULL },
	{ "softfail ip4", "198.51.100.10", "mail.example.net", "c@fail.example.org",
	  SPF_RES_SOFTFAIL, NULL },
	{ "null sender uses helo", "2001:db8:1::7", "helo.example.org", "", SPF_RES_PASS,
	  "postmaster@helo.example.org" },
	{ "null sender, helo fails", "2001:db8:7::7", "helo.example.org", "", SPF_RES_FAIL, NULL },
	{ "no record", "2001:db8:1::5", "mail.example.net", "d@nodata.example.org", SPF_RES_NONE,
	  NULL },
	{ "no such domain", "2001:db8:1::5", "mail.example.net", "d@nxdomain.example.org",
	  SPF_RES_NONE, NULL },
	{ "single-label domain", "2001:db8:1::5", "mail.example.net", "d@localhost", SPF_RES_NONE,
	  NULL },
	{ "11 terms across include", "2001:db8:1::5", "mail.example.net", "e@terms.example.org",
	  SPF_RES_PERMERROR, NULL },
	{ "3 void lookups", "2001:db8:1::5", "mail.example.net", "f@voids.example.org",
	  SPF_RES_PERMERROR, NULL },
	/* libspf2 explains the include's -all mid-evaluation; the count
	 * must go on after it */
	{ "terms counted after an include's explanation", "2001:db8:1::5", "mail.example.net",
	  "h@expinc.example.org", SPF_RES_PERMERROR, NULL },
	/* a/0: any address of the family matches, and only a record's own
	 * /0 does: a name the sender makes up (its HELO, its local part,
	 * through a macro) that ends in the /0 suffix is just a name */
	{ "a/0 matches any ip4", "198.51.100.200", "mail.example.net", "z@zero.example.org",
	  SPF_RES_PASS, NULL },
	{ "a/0 is for ip4 only", "2001:db8:9::9", "mail.example.net", "z@zero.example.org",
	  SPF_RES_FAIL, NULL },
	{ "a HELO cannot ask for /0", "198.51.100.77",
	  "h.example.org._spf-cidr0-4.smtpedge.invalid", "x@helomacro.example.org", SPF_RES_FAIL,
	  NULL },
	{ "a local part cannot ask for /0", "2001:db8:9::9", "mail.example.net",
	  "h.example.org._spf-cidr0-46.smtpedge.invalid@localmacro.example.org", SPF_RES_FAIL,
	  NULL },
};

static const struct case_row failures[] = {
	{ "timeout", "2001:db8:1::5", "mail.example.net", "g@slow.example.org", SPF_RES_TEMPERROR,
	  NULL },
	{ "servfail", "2001:db8:1::5", "mail.example.net", "g@broken.example.org",
	  SPF_RES_TEMPERROR, NULL },
	{ "timeout inside include", "2001:db8:1::5", "mail.example.net", "g@slowinc.example.org",
	  SPF_RES_TEMPERROR, NULL },
};

static const char *port;
static struct spf_checker *shared;
static int
run_one(struct spf_checker *ck, const struct case_row *row)
{
	struct spf_query q = { .helo = row->helo, .mail_from = row->from };
	struct spf_answer a;
	bool ok;

	if (inet_pton(AF_INET, row->addr, q.addr) == 1)
		q.family = AF_INET;
	else if (inet_pton(AF_INET6, row->addr, q.addr) == 1)
		q.family = AF_INET6;
	else
		return -1;
	spf_check(ck, &q, &a);
	ok = a.result == row->want &&
	     (row->identity == NULL || strcmp(a.identity, row->identity) == 0);
	return CHECK(ok, "%s: got %s (%s), identity %s, want %s", row->name,
		     spf_result_name(a.result), a.mechanism, a.identity,
		     row->identity != NULL ? row->identity : "any") ?
		       0 :
		       -1;
}

static void *
worker(void *arg)
{
	size_t start = (size_t)(uintptr_t)arg, i;
	int r;

	/* each thread walks the table from its own starting row, so
	 * different checks are in flight at the same moment */
	for (r = 0; r < ROUNDS; r++)
		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			run_one(shared, &cases[(start + i) % (sizeof(cases) / sizeof(cases[0]))]);
	return NULL;
}

static struct ub_ctx *
make_resolver(void)
{
	struct ub_ctx *ub = ub_ctx_create();
	char fwd[64];

	snprintf(fwd, sizeof(fwd), "127.0.0.1@%s", port);
	if (ub == NULL || ub_ctx_async(ub, 1) != 0 ||
	    ub_ctx_set_option(ub, "do-not-query-localhost:", "no") != 0 ||
	    ub_ctx_set_fwd(ub, fwd) != 0) {
		fprintf(stderr, "cannot set up libunbound\n");
		exit(2);
	}
	return ub;
}

static struct spf_checker *
make_checker(struct ub_ctx *ub)
{
	struct spf_params p = {
		.ub = ub, .receiver = "mx.smtpedge.test", .dns_timeout_ms = TIMEOUT_MS
	};
	struct spf_checker *ck = spf_checker_create(&p);

	if (ck == NULL) {
		perror("spf_checker_create");
		exit(2);
	}
	return ck;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void
test_api(void)
{
	struct spf_params p = { .ub = NULL, .receiver = "x" };
	struct spf_query q = {
		.family = AF_INET6, .helo = "h.example", .mail_from = "a\"b@pass.example.org"
	};
	struct spf_answer a = { .result = SPF_RES_PASS, .identity_kind = SPF_ID_MAILFROM };
	char buf[512];

	CHECK(spf_checker_create(&p) == NULL, "create without ub must fail");
	CHECK(strcmp(spf_result_name(SPF_RES_SOFTFAIL), "softfail") == 0 &&
		      strcmp(spf_result_name(SPF_RES_TEMPERROR), "temperror") == 0 &&
		      strcmp(spf_result_name(SPF_RES_NONE), "none") == 0,
	      "result names");
	/* a quote from the peer cannot end the quoted-string early */
	inet_pton(AF_INET6, "2001:db8::1", q.addr);
	snprintf(a.identity, sizeof(a.identity), "%s", q.mail_from);
	spf_received_spf(shared, &q, &a, buf, sizeof(buf));
	CHECK(strstr(buf, "envelope-from=\"a\\\"b@pass.example.org\"") != NULL &&
		      strncmp(buf, "pass (", 6) == 0 &&
		      strstr(buf, "client-ip=2001:db8::1;") != NULL &&
		      strstr(buf, "identity=mailfrom") != NULL,
	      "Received-SPF: %s", buf);
}

int
main(int argc, char **argv)
{
	pthread_t t[THREADS];
	struct ub_ctx *ub;
	struct spf_checker *ck;
	size_t i;
	double t0, took;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	port = argv[1];

	ub = make_resolver();
	shared = make_checker(ub);
	test_api();
	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i * 3));
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	spf_checker_destroy(shared);
	ub_ctx_delete(ub);

	ub = make_resolver();
	ck = make_checker(ub);
	for (i = 0; i < sizeof(failures) / sizeof(failures[0]); i++) {
		t0 = now_ms();
		run_one(ck, &failures[i]);
		took = now_ms() - t0;
		/* the deadline, not unbound's retries, bounds the wait */
		CHECK(took <= TIMEOUT_MS * 3, "%s took %.0f ms", failures[i].name, took);
	}
	spf_checker_destroy(ck);
	ub_ctx_delete(ub);

	return check_done();
}
