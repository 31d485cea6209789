/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/spf/spf_suite_driver.c — runs RFC 7208 suite cases through spf_check().
 *
 * run_rfc7208.py serves one scenario's zone on 127.0.0.1:PORT and writes
 * its cases to a file, one per line, four hex-encoded tab-separated fields:
 * name, client address, HELO, MAIL FROM.  For each case this driver makes
 * a fresh libunbound context forwarding to that server (so no cache or
 * server-timeout state carries from one case to the next), runs the real
 * spf_check(), and prints: name TAB result TAB mechanism TAB explanation.
 * Judging is left to the Python side, which holds the expected results.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

#include "auth/spf.h"

#define FIELD_MAX 4096

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode the next hex field of line into out; advance *pos. */
static int
next_field(const char *line, size_t *pos, char *out, size_t len)
{
	size_t o = 0;
	const char *p = line + *pos;

	while (*p != '\0' && *p != '\t' && *p != '\n') {
		int hi = hexval(p[0]), lo = p[1] != '\0' ? hexval(p[1]) : -1;

		if (hi < 0 || lo < 0 || o + 1 >= len)
			return -1;
		out[o++] = (char)(hi * 16 + lo);
		p += 2;
	}
	out[o] = '\0';
	if (*p == '\t')
		p++;
	*pos = (size_t)(p - line);
	return 0;
}

static void
clean(char *s)
{
	for (; *s != '\0'; s++)
		if (*s == '\t' || *s == '\n' || *s == '\r')
			*s = ' ';
}

static struct ub_ctx *
make_resolver(const char *port)
{
	struct ub_ctx *ub = ub_ctx_create();
	char fwd[64];

	if (ub == NULL)
		return NULL;
	snprintf(fwd, sizeof(fwd), "127.0.0.1@%s", port);
	/* The suite's zones use names unbound answers itself by default
	 * (RFC 6303 local zones: RFC 1918 and 2001:db8::/32 reverse trees):
	 * let those queries reach the test server.  Keep RRset order as
	 * served so that "the first 10 PTR names" is the suite's order. */
	if (ub_ctx_async(ub, 1) != 0 ||
	    ub_ctx_set_option(ub, "do-not-query-localhost:", "no") != 0 ||
	    ub_ctx_set_option(ub, "unblock-lan-zones:", "yes") != 0 ||
	    ub_ctx_set_option(ub, "insecure-lan-zones:", "yes") != 0 ||
	    ub_ctx_set_option(ub, "local-zone:", "8.b.d.0.1.0.0.2.ip6.arpa. nodefault") != 0 ||
	    ub_ctx_set_option(ub, "rrset-roundrobin:", "no") != 0 || ub_ctx_set_fwd(ub, fwd) != 0) {
		ub_ctx_delete(ub);
		return NULL;
	}
	return ub;
}

static int
run_case(const char *port, char *line)
{
	static char name[FIELD_MAX], host[FIELD_MAX], helo[FIELD_MAX], from[FIELD_MAX];
	size_t pos = 0;
	struct spf_query q = { 0 };
	struct spf_answer a;
	struct spf_checker *ck;
	struct ub_ctx *ub;
	struct spf_params params = { .receiver = "mx.smtpedge.test", .dns_timeout_ms = 500 };

	if (next_field(line, &pos, name, sizeof(name)) != 0 ||
	    next_field(line, &pos, host, sizeof(host)) != 0 ||
	    next_field(line, &pos, helo, sizeof(helo)) != 0 ||
	    next_field(line, &pos, from, sizeof(from)) != 0) {
		fprintf(stderr, "bad case line\n");
		return -1;
	}
	if (inet_pton(AF_INET, host, q.addr) == 1) {
		q.family = AF_INET;
	} else if (inet_pton(AF_INET6, host, q.addr) == 1) {
		q.family = AF_INET6;
	} else {
		fprintf(stderr, "%s: bad address %s\n", name, host);
		return -1;
	}
	q.helo = helo;
	q.mail_from = from;
	ub = make_resolver(port);
	if (ub == NULL)
		return -1;
	params.ub = ub;
	ck = spf_checker_create(&params);
	if (ck == NULL) {
		ub_ctx_delete(ub);
		return -1;
	}
	spf_check(ck, &q, &a);
	clean(a.mechanism);
	clean(a.explanation);
	printf("%s\t%s\t%s\t%s\n", name, spf_result_name(a.result), a.mechanism, a.explanation);
	fflush(stdout);
	spf_checker_destroy(ck);
	ub_ctx_delete(ub);
	return 0;
}

int
main(int argc, char **argv)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f;
	int rc = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s PORT CASES\n", argv[0]);
		return 2;
	}
	f = fopen(argv[2], "r");
	if (f == NULL) {
		perror(argv[2]);
		return 2;
	}
	while (getline(&line, &cap, f) > 0)
		if (run_case(argv[1], line) != 0)
			rc = 1;
	free(line);
	fclose(f);
	return rc;
}
