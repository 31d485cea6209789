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
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spf2/spf.h>
#include <unbound.h>

#include "auth/spf.h"
#include "auth/spf_syntax.h"
#include "auth/spf_ub.h"
#include "dns/dnsq.h"

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

/* One pass of libspf2 over the answers fetched so far.  False when the
 * pass met a lookup with no answer yet (a->result then means nothing). */
static bool
spf_pass(const struct spf_checker *ck, const struct spf_query *q, struct spf_ub_check *c,
	 const struct spf_ub_params *p, struct spf_answer *a)
{
	SPF_server_t *server = NULL;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	SPF_errcode_t err;
	const char *why;

	spf_ub_check_begin_pass(c);
	a->result = SPF_RES_TEMPERROR;
	spf_copy(a->mechanism, sizeof(a->mechanism), "out of memory");
	a->explanation[0] = '\0';
	a->comment[0] = '\0';
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
	if (resp == NULL || spf_ub_check_incomplete(c))
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
	return !spf_ub_check_incomplete(c);
}

/* --- the resumable evaluation --- */

/* Passes of one check at most: each incomplete pass adds a query or waits
 * for one, so this is only a guard against our own bug. */
#define SPF_EVAL_MAX_PASSES 1024

struct spf_eval {
	struct spf_checker *ck;
	struct spf_query q;
	char helo[256];
	char mail_from[SPF_IDENTITY_MAX];
	struct spf_ub_params p;
	struct spf_ub_check *c; /* NULL: decided without DNS */
	struct spf_answer a;
	unsigned passes, next; /* next: where to look for a NEW query */
	bool done;
};

struct spf_eval *
spf_eval_start(struct spf_checker *checker, const struct spf_query *query)
{
	struct spf_eval *ev = calloc(1, sizeof(*ev));

	if (ev == NULL)
		return NULL;
	ev->ck = checker;
	ev->q = *query;
	spf_copy(ev->helo, sizeof(ev->helo), query->helo);
	spf_copy(ev->mail_from, sizeof(ev->mail_from), query->mail_from);
	ev->q.helo = ev->helo;
	ev->q.mail_from = ev->mail_from;
	spf_identity(&ev->q, &ev->a);
	/* §4.3: a malformed or single-label domain has no SPF: none */
	if (!spf_syntax_identity_domain_ok(ev->a.domain)) {
		ev->a.result = SPF_RES_NONE;
		spf_copy(ev->a.mechanism, sizeof(ev->a.mechanism),
			 "no usable domain in the identity");
		ev->done = true;
		return ev;
	}
	if (!spf_address(&ev->q, &ev->p)) {
		ev->a.result = SPF_RES_PERMERROR;
		spf_copy(ev->a.mechanism, sizeof(ev->a.mechanism), "unknown address family");
		ev->done = true;
		return ev;
	}
	ev->c = spf_ub_check_create(&ev->p);
	if (ev->c == NULL) {
		free(ev);
		return NULL;
	}
	return ev;
}

enum spf_step
spf_eval_step(struct spf_eval *ev)
{
	if (ev->done)
		return SPF_STEP_DONE;
	ev->passes++;
	if (spf_pass(ev->ck, &ev->q, ev->c, &ev->p, &ev->a))
		ev->done = true;
	else if (ev->passes >= SPF_EVAL_MAX_PASSES) {
		ev->a.result = SPF_RES_TEMPERROR;
		spf_copy(ev->a.mechanism, sizeof(ev->a.mechanism), "SPF evaluation did not settle");
		ev->done = true;
	}
	return ev->done ? SPF_STEP_DONE : SPF_STEP_NEED_DNS;
}

bool
spf_eval_next_query(struct spf_eval *ev, struct spf_dns_query *out)
{
	const char *name;
	int type;

	if (ev->c == NULL || ev->done)
		return false;
	for (; ev->next < spf_ub_check_nqueries(ev->c); ev->next++) {
		if (spf_ub_check_query(ev->c, ev->next, &name, &type) != SPF_UB_Q_NEW)
			continue;
		out->id = ev->next;
		out->name = name;
		out->type = type;
		out->timeout_ms = spf_ub_check_query_timeout(ev->c, ev->ck->timeout_ms);
		spf_ub_check_issued(ev->c, ev->next);
		ev->next++;
		if (out->timeout_ms == 0) {
			/* the check's budget is spent: no more lookups */
			spf_ub_check_failed(ev->c, out->id, "SPF check took too long");
			continue;
		}
		return true;
	}
	return false;
}

void
spf_eval_answer(struct spf_eval *ev, unsigned id, int err, struct ub_result *res)
{
	if (ev->c == NULL)
		ub_resolve_free(res);
	else
		spf_ub_check_answer(ev->c, id, err, res);
}

void
spf_eval_timeout(struct spf_eval *ev, unsigned id)
{
	if (ev->c != NULL)
		spf_ub_check_failed(ev->c, id, "DNS timeout");
}

unsigned
spf_eval_waiting(const struct spf_eval *ev)
{
	unsigned i, n = 0;

	for (i = 0; ev->c != NULL && i < spf_ub_check_nqueries(ev->c); i++)
		if (spf_ub_check_query(ev->c, i, NULL, NULL) != SPF_UB_Q_ANSWERED)
			n++;
	return n;
}

enum spf_result
spf_eval_result(const struct spf_eval *ev, struct spf_answer *answer)
{
	if (!ev->done) {
		memset(answer, 0, sizeof(*answer));
		*answer = ev->a;
		answer->result = SPF_RES_TEMPERROR;
		spf_copy(answer->mechanism, sizeof(answer->mechanism), "SPF check not finished");
		return answer->result;
	}
	*answer = ev->a;
	return answer->result;
}

unsigned
spf_eval_passes(const struct spf_eval *ev)
{
	return ev->passes;
}

unsigned
spf_eval_lookups(const struct spf_eval *ev)
{
	return ev->c != NULL ? spf_ub_check_nqueries(ev->c) : 0;
}

struct spf_eval *
spf_eval_free(struct spf_eval *ev)
{
	if (ev != NULL) {
		spf_ub_check_destroy(ev->c);
		free(ev);
	}
	return NULL;
}

/* --- the synchronous check: the same evaluation, with its own loop --- */

/* One query of a round: dnsq's callback argument. */
struct spf_wait {
	struct spf_eval *ev;
	unsigned id;
	unsigned *left; /* the round's queries not answered yet */
};

static void
spf_wait_done(void *arg, int err, struct ub_result *res)
{
	struct spf_wait *w = arg;

	if (err == DNSQ_TIMEOUT)
		spf_eval_timeout(w->ev, w->id);
	else
		spf_eval_answer(w->ev, w->id, err, res);
	(*w->left)--;
}

static uint64_t
spf_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Issues what the last pass asked for, all at once, through a dnsq of the
 * round's own (the one way to query the shared context), and waits in
 * poll() on its fd until every query is answered or past its deadline.
 * Another thread's ub_process() may take our answers: dnsq hands them
 * back, and its fd wakes us. */
static void
spf_round(struct spf_eval *ev)
{
	struct spf_dns_query dq, *qs = NULL, *grown;
	struct dnsq_params qp = { .ub = ev->ck->ub };
	struct spf_wait *w = NULL;
	struct dnsq *q = NULL;
	unsigned nq = 0, cap = 0, left = 0, i;
	struct pollfd pfd;

	while (spf_eval_next_query(ev, &dq)) {
		if (nq == cap) {
			cap = cap ? cap * 2 : 8;
			grown = realloc(qs, cap * sizeof(*qs));
			if (grown == NULL) {
				spf_eval_answer(ev, dq.id, UB_NOMEM, NULL);
				cap = nq;
				continue;
			}
			qs = grown;
		}
		qs[nq++] = dq;
	}
	if (nq > 0) {
		qp.max_inflight = nq;
		q = dnsq_create(&qp);
		w = calloc(nq, sizeof(*w));
		if (q == NULL || w == NULL) {
			q = dnsq_destroy(q);
			free(w);
			w = NULL;
		}
	}
	for (i = 0; i < nq; i++) {
		if (q == NULL) {
			spf_eval_answer(ev, qs[i].id, UB_NOMEM, NULL);
			continue;
		}
		w[i] = (struct spf_wait){ .ev = ev, .id = qs[i].id, .left = &left };
		if (dnsq_issue(q, qs[i].name, qs[i].type, qs[i].timeout_ms, spf_wait_done, &w[i],
			       spf_now_us()) == 0) {
			spf_eval_answer(ev, qs[i].id, UB_NOMEM, NULL);
			continue;
		}
		left++;
	}
	free(qs);
	while (left > 0) {
		pfd.fd = dnsq_fd(q);
		pfd.events = POLLIN;
		pfd.revents = 0;
		(void)poll(&pfd, 1, dnsq_timeout_ms(q, spf_now_us()));
		dnsq_process(q, spf_now_us());
	}
	dnsq_destroy(q);
	free(w);
}

enum spf_result
spf_check(struct spf_checker *checker, const struct spf_query *query, struct spf_answer *answer)
{
	struct spf_eval *ev = spf_eval_start(checker, query);

	if (ev == NULL) {
		memset(answer, 0, sizeof(*answer));
		spf_identity(query, answer);
		answer->result = SPF_RES_TEMPERROR;
		spf_copy(answer->mechanism, sizeof(answer->mechanism), "out of memory");
		return answer->result;
	}
	while (spf_eval_step(ev) == SPF_STEP_NEED_DNS)
		spf_round(ev);
	spf_eval_result(ev, answer);
	spf_eval_free(ev);
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
