/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf.c — SPF checks for smtpedge: libspf2 driven by our own DNS layer.
 *
 * Why the wrapper: libspf2 1.2.10 is a sound evaluator but leaves gaps
 * that matter at an MX (RFC 7208 conformance ~143/203 on its own).  This
 * file does the parts that belong before and after evaluation — the
 * identity (§2.3, §2.4: MAIL FROM, or postmaster@HELO for the null
 * sender), the §4.3 domain checks, IPv4-mapped IPv6 as IPv4 (§5/9), and the
 * mapping of every libspf2 outcome to one of the seven results — while
 * spf_ub.c (DNS, record selection, limits) and spf_syntax.c (grammar)
 * fix what happens during it.
 *
 * Thread safety: the checker is read-only after creation.  Each check
 * builds its own libspf2 server, request and DNS layer, so pool threads
 * share nothing but the ub_ctx, which libunbound makes thread-safe.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spf2/spf.h>

#include "auth/spf.h"
#include "auth/spf_syntax.h"
#include "auth/spf_ub.h"

#define SPF_DEFAULT_TIMEOUT_MS 5000

struct spf_checker {
	struct ub_ctx *ub;
	char *receiver;
	uint32_t timeout_ms;
};

static const char *const spf_result_names[] = {
	[SPF_RES_NONE] = "none",           [SPF_RES_NEUTRAL] = "neutral",
	[SPF_RES_PASS] = "pass",           [SPF_RES_FAIL] = "fail",
	[SPF_RES_SOFTFAIL] = "softfail",   [SPF_RES_TEMPERROR] = "temperror",
	[SPF_RES_PERMERROR] = "permerror",
};

const char *
spf_result_name(enum spf_result result)
{
	if ((unsigned)result >= sizeof(spf_result_names) / sizeof(spf_result_names[0]))
		return "permerror";
	return spf_result_names[result];
}

const char *
spf_identity_kind_name(enum spf_identity_kind kind)
{
	return kind == SPF_ID_HELO ? "helo" : "mailfrom";
}

/* libspf2 logs to stdout/stderr by default; a library inside a server must
 * not.  Errors stay fatal (libspf2 calls them only for internal bugs). */
static void
spf_log_quiet(const char *file, int line, const char *msg)
{
	(void)file;
	(void)line;
	(void)msg;
}

static pthread_once_t spf_log_once = PTHREAD_ONCE_INIT;

static void
spf_log_setup(void)
{
	SPF_warning_handler = spf_log_quiet;
	SPF_info_handler = spf_log_quiet;
	SPF_debug_handler = spf_log_quiet;
}

struct spf_checker *
spf_checker_create(const struct spf_params *params)
{
	struct spf_checker *ck;

	if (params == NULL || params->ub == NULL || params->receiver == NULL ||
	    params->receiver[0] == '\0') {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&spf_log_once, spf_log_setup);
	ck = calloc(1, sizeof(*ck));
	if (ck == NULL)
		goto fail;
	ck->ub = params->ub;
	ck->timeout_ms = params->dns_timeout_ms != 0 ? params->dns_timeout_ms :
						       SPF_DEFAULT_TIMEOUT_MS;
	ck->receiver = strdup(params->receiver);
	if (ck->receiver == NULL)
		goto fail;
	return ck;
fail:
	spf_checker_destroy(ck);
	errno = ENOMEM;
	return NULL;
}

void
spf_checker_destroy(struct spf_checker *checker)
{
	if (checker == NULL)
		return;
	free(checker->receiver);
	free(checker);
}

/* --- one check --- */

static void
spf_copy(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src != NULL ? src : "");
}

/* Identity and <domain> from the query (§2.3, §2.4, §4.3). */
static void
spf_identity(const struct spf_query *q, struct spf_answer *a)
{
	const char *from = q->mail_from != NULL ? q->mail_from : "";
	const char *helo = q->helo != NULL ? q->helo : "";
	const char *at;
	size_t n;

	if (from[0] != '\0') {
		a->identity_kind = SPF_ID_MAILFROM;
		at = strrchr(from, '@');
		if (at != NULL && at != from) {
			spf_copy(a->identity, sizeof(a->identity), from);
		} else {
			/* "@domain" or a bare domain: postmaster (§4.3) */
			snprintf(a->identity, sizeof(a->identity), "postmaster@%s",
				 at != NULL ? at + 1 : from);
		}
		spf_copy(a->domain, sizeof(a->domain), at != NULL ? at + 1 : from);
	} else {
		a->identity_kind = SPF_ID_HELO;
		snprintf(a->identity, sizeof(a->identity), "postmaster@%s", helo);
		spf_copy(a->domain, sizeof(a->domain), helo);
	}
	n = strlen(a->domain);
	if (n > 0 && a->domain[n - 1] == '.')
		a->domain[n - 1] = '\0';
}

/* The client address as libspf2 should see it: ::ffff:a.b.c.d is IPv4. */
static bool
spf_address(const struct spf_query *q, struct spf_ub_params *p)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (q->family == AF_INET) {
		p->family = AF_INET;
		memcpy(&p->v4, q->addr, 4);
		return true;
	}
	if (q->family != AF_INET6)
		return false;
	if (memcmp(q->addr, mapped, sizeof(mapped)) == 0) {
		p->family = AF_INET;
		memcpy(&p->v4, q->addr + 12, 4);
		return true;
	}
	p->family = AF_INET6;
	memcpy(&p->v6, q->addr, 16);
	return true;
}

static enum spf_result
spf_map(SPF_result_t r, SPF_errcode_t err)
{
	switch (r) {
	case SPF_RESULT_PASS: return SPF_RES_PASS;
	case SPF_RESULT_FAIL: return SPF_RES_FAIL;
	case SPF_RESULT_SOFTFAIL: return SPF_RES_SOFTFAIL;
	case SPF_RESULT_NEUTRAL: return SPF_RES_NEUTRAL;
	case SPF_RESULT_NONE: return SPF_RES_NONE;
	case SPF_RESULT_TEMPERROR: return SPF_RES_TEMPERROR;
	case SPF_RESULT_PERMERROR: return SPF_RES_PERMERROR;
	case SPF_RESULT_INVALID:
	default:
		/* no result: a resource or DNS problem is temporary, anything
		 * else is a record libspf2 could not use */
		return err == SPF_E_DNS_ERROR || err == SPF_E_NO_MEMORY ?
			       SPF_RES_TEMPERROR :
			       SPF_RES_PERMERROR;
	}
}

static void
spf_describe(struct spf_answer *a, const struct spf_ub_check *c, SPF_response_t *resp)
{
	const char *s;

	switch (a->result) {
	case SPF_RES_PASS:
	case SPF_RES_FAIL:
	case SPF_RES_SOFTFAIL:
	case SPF_RES_NEUTRAL:
		spf_copy(a->mechanism, sizeof(a->mechanism),
			 SPF_response_reason(resp) == SPF_REASON_DEFAULT ? "default" : "mechanism");
		break;
	case SPF_RES_TEMPERROR:
		s = spf_ub_check_dns_problem(c);
		spf_copy(a->mechanism, sizeof(a->mechanism),
			 s != NULL ? s : SPF_strerror(SPF_response_errcode(resp)));
		break;
	case SPF_RES_PERMERROR:
		spf_copy(a->mechanism, sizeof(a->mechanism),
			 SPF_strerror(SPF_response_errcode(resp)));
		break;
	case SPF_RES_NONE: spf_copy(a->mechanism, sizeof(a->mechanism), "no SPF record"); break;
	}
	if (a->result == SPF_RES_FAIL || a->result == SPF_RES_SOFTFAIL ||
	    a->result == SPF_RES_NEUTRAL)
		spf_copy(a->explanation, sizeof(a->explanation),
			 SPF_response_get_explanation(resp));
	spf_copy(a->comment, sizeof(a->comment), SPF_response_get_header_comment(resp));
}

/* Run libspf2 on a prepared check; fills a->result and the texts. */
static void
spf_evaluate(const struct spf_checker *ck, const struct spf_query *q, struct spf_ub_check *c,
	     const struct spf_ub_params *p, struct spf_answer *a)
{
	SPF_server_t *server = NULL;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	SPF_errcode_t err;
	const char *why;

	a->result = SPF_RES_TEMPERROR;
	spf_copy(a->mechanism, sizeof(a->mechanism), "out of memory");
	server = SPF_server_new_dns(spf_ub_check_layer(c), 0);
	if (server == NULL || SPF_server_set_rec_dom(server, ck->receiver) != SPF_E_SUCCESS)
		goto out;
	req = SPF_request_new(server);
	if (req == NULL)
		goto out;
	if (p->family == AF_INET)
		err = SPF_request_set_ipv4(req, p->v4);
	else
		err = SPF_request_set_ipv6(req, p->v6);
	if (err == SPF_E_SUCCESS)
		err = SPF_request_set_helo_dom(req, q->helo != NULL ? q->helo : "");
	/* with "" libspf2 takes postmaster@<helo>, the HELO identity */
	if (err == SPF_E_SUCCESS)
		err = SPF_request_set_env_from(req, q->mail_from != NULL ? q->mail_from : "");
	if (err != SPF_E_SUCCESS)
		goto out;
	spf_ub_check_set_request(c, req);
	err = SPF_request_query_mailfrom(req, &resp);
	if (resp == NULL)
		goto out;
	if (spf_ub_check_forced_permerror(c, &why)) {
		a->result = SPF_RES_PERMERROR;
		spf_copy(a->mechanism, sizeof(a->mechanism), why);
	} else {
		a->result = spf_map(SPF_response_result(resp), err);
		spf_describe(a, c, resp);
	}
out:
	/* libspf2's free functions do not take NULL */
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	if (server != NULL)
		SPF_server_free(server);
}

enum spf_result
spf_check(struct spf_checker *checker, const struct spf_query *query, struct spf_answer *answer)
{
	struct spf_ub_params p = { 0 };
	struct spf_ub_check *c;

	memset(answer, 0, sizeof(*answer));
	spf_identity(query, answer);
	/* §4.3: a malformed or single-label domain has no SPF: none */
	if (!spf_syntax_identity_domain_ok(answer->domain)) {
		answer->result = SPF_RES_NONE;
		spf_copy(answer->mechanism, sizeof(answer->mechanism),
			 "no usable domain in the identity");
		return answer->result;
	}
	if (!spf_address(query, &p)) {
		answer->result = SPF_RES_PERMERROR;
		spf_copy(answer->mechanism, sizeof(answer->mechanism), "unknown address family");
		return answer->result;
	}
	p.ub = checker->ub;
	p.timeout_ms = checker->timeout_ms;
	c = spf_ub_check_create(&p);
	if (c == NULL) {
		answer->result = SPF_RES_TEMPERROR;
		spf_copy(answer->mechanism, sizeof(answer->mechanism), "out of memory");
		return answer->result;
	}
	spf_evaluate(checker, query, c, &p, answer);
	spf_ub_check_destroy(c);
	return answer->result;
}

/* A quoted-string body from text the peer chose: no CR/LF, no quote or
 * backslash left bare (RFC 5322 §3.2.4), so it cannot break the header. */
static void
spf_quote(char *dst, size_t len, const char *src)
{
	size_t o = 0;

	for (; src != NULL && *src != '\0' && o + 3 < len; src++) {
		unsigned char ch = (unsigned char)*src;

		if (ch < 0x20 || ch > 0x7e)
			ch = '?';
		if (ch == '"' || ch == '\\')
			dst[o++] = '\\';
		dst[o++] = (char)ch;
	}
	dst[o] = '\0';
}

int
spf_received_spf(const struct spf_checker *checker, const struct spf_query *query,
		 const struct spf_answer *answer, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	char from[2 * SPF_IDENTITY_MAX], helo[512], comment[512];

	if (inet_ntop(query->family == AF_INET ? AF_INET : AF_INET6, query->addr, ip, sizeof(ip)) ==
	    NULL)
		snprintf(ip, sizeof(ip), "unknown");
	spf_quote(from, sizeof(from), answer->identity);
	spf_quote(helo, sizeof(helo), query->helo);
	spf_quote(comment, sizeof(comment),
		  answer->comment[0] != '\0' ? answer->comment : answer->mechanism);
	/* the comment may not hold parentheses of its own */
	for (char *x = comment; *x != '\0'; x++)
		if (*x == '(' || *x == ')')
			*x = ' ';
	/* RFC 7208 §9.1 key-value pairs; the comment is libspf2's prose */
	return snprintf(buf, len,
			"%s (%s) client-ip=%s; envelope-from=\"%s\"; helo=\"%s\"; "
			"receiver=%s; identity=%s",
			spf_result_name(answer->result), comment, ip, from, helo, checker->receiver,
			spf_identity_kind_name(answer->identity_kind));
}
