/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf.h — SPF (RFC 7208) checks for the control plane.
 *
 * A check evaluates check_host() for the MAIL FROM identity, or for the
 * HELO identity (postmaster@helo) when the sender is null.  It is
 * resumable, so that no thread waits for DNS: spf_eval_step() runs a pass
 * of the evaluator over the answers the check has so far; a pass that met
 * a lookup with no answer yet returns SPF_STEP_NEED_DNS, and the caller
 * issues the queries spf_eval_next_query() gives (all at once), hands each
 * answer to spf_eval_answer() (or its deadline to spf_eval_timeout()) and
 * steps again.  A pass costs microseconds.  spf_check() is the same
 * evaluation driven by a loop of its own that blocks: its queries go out
 * through a dns/dnsq.h of its own on the caller's libunbound context.
 * Checks share nothing but the checker (read-only) and the ub_ctx, so
 * several threads may run checks at once.
 *
 * The evaluator is libspf2; the wrapper (spf_syntax.c, spf_ub.c) checks
 * the record grammar, selects records (§4.5), enforces the §4.6.4 limits
 * (10 DNS-querying terms, 2 void lookups) and maps every outcome to one of
 * the seven RFC 7208 results.
 */
#ifndef SMTPEDGE_AUTH_SPF_H
#define SMTPEDGE_AUTH_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ub_ctx;

enum spf_result {
	SPF_RES_NONE,
	SPF_RES_NEUTRAL,
	SPF_RES_PASS,
	SPF_RES_FAIL,
	SPF_RES_SOFTFAIL,
	SPF_RES_TEMPERROR,
	SPF_RES_PERMERROR,
};

enum spf_identity_kind {
	SPF_ID_MAILFROM, /* smtp.mailfrom in Authentication-Results */
	SPF_ID_HELO,     /* smtp.helo: the null sender */
};

struct spf_params {
	/* Shared resolver, created and owned by the caller.  It must be
	 * usable with ub_resolve_async() (ub_ctx_async(ub, 1) recommended:
	 * a thread, not a forked process).  Not destroyed by the checker. */
	struct ub_ctx *ub;
	/* Our host name: %{r} and the Received-SPF receiver=. */
	const char *receiver;
	/* Per DNS query; a query not answered in time is a temperror.
	 * 0 means 5000. */
	uint32_t dns_timeout_ms;
};

/* NULL and errno (EINVAL, ENOMEM) on failure. */
struct spf_checker *spf_checker_create(const struct spf_params *params);
void spf_checker_destroy(struct spf_checker *checker);

struct spf_query {
	uint8_t family;        /* AF_INET or AF_INET6; ::ffff:a.b.c.d is IPv4 */
	uint8_t addr[16];      /* network order; the first 4 bytes for AF_INET */
	const char *helo;      /* EHLO/HELO argument, may be "" */
	const char *mail_from; /* reverse-path without <>, "" for the null sender */
};

#define SPF_IDENTITY_MAX 320 /* local-part 64 + "@" + domain 255 */

struct spf_answer {
	enum spf_result result;
	enum spf_identity_kind identity_kind;
	/* The identity checked: the MAIL FROM address, or postmaster@helo. */
	char identity[SPF_IDENTITY_MAX];
	/* The <domain> of check_host(): the part after the last '@'. */
	char domain[256];
	/* fail/softfail/neutral: the expanded exp= text or our default. */
	char explanation[256];
	/* What decided: "mechanism", "default" (no match), or for the
	 * error results a short cause ("record syntax: ...",
	 * "too many DNS-querying terms", "DNS timeout", ...). */
	char mechanism[128];
	/* libspf2's Received-SPF comment, e.g. "domain of x designates y as
	 * permitted sender"; may be empty. */
	char comment[256];
};

/* --- the resumable check --- */

struct ub_result;
struct spf_eval;

enum spf_step {
	SPF_STEP_DONE,     /* spf_eval_result() has the answer */
	SPF_STEP_NEED_DNS, /* issue the new queries, step again on an answer */
};

struct spf_dns_query {
	unsigned id;         /* for spf_eval_answer() and spf_eval_timeout() */
	const char *name;    /* valid until spf_eval_free() */
	int type;            /* ns_t_txt, ns_t_a, ... (class IN) */
	uint32_t timeout_ms; /* the query's deadline, from now: the checker's
				dns_timeout_ms or what is left of the check's
				20 s budget (§4.6.4), which starts here */
};

/* NULL on ENOMEM.  The query's strings are copied. */
struct spf_eval *spf_eval_start(struct spf_checker *checker, const struct spf_query *query);
/* One pass over the answers so far.  The limits of §4.6.4 are counted
 * per pass, so they mean what they mean for one whole evaluation. */
enum spf_step spf_eval_step(struct spf_eval *ev);
/* The next query the passes asked for and nobody issued yet; it counts as
 * issued from now on.  False when there is none. */
bool spf_eval_next_query(struct spf_eval *ev, struct spf_dns_query *out);
/* libunbound's answer to query id (err, result); res becomes the check's. */
void spf_eval_answer(struct spf_eval *ev, unsigned id, int err, struct ub_result *res);
/* Query id's deadline passed: it failed ("DNS timeout"). */
void spf_eval_timeout(struct spf_eval *ev, unsigned id);
/* Queries issued and not answered yet. */
unsigned spf_eval_waiting(const struct spf_eval *ev);
/* After SPF_STEP_DONE; before it, temperror "SPF check not finished". */
enum spf_result spf_eval_result(const struct spf_eval *ev, struct spf_answer *answer);
/* Passes run so far, and distinct lookups asked for. */
unsigned spf_eval_passes(const struct spf_eval *ev);
unsigned spf_eval_lookups(const struct spf_eval *ev);
/* Tolerates NULL; returns NULL. */
struct spf_eval *spf_eval_free(struct spf_eval *ev);

/* --- the blocking check --- */

/* Never fails: a problem is one of the results (temperror on resource
 * trouble).  Returns answer->result.  Blocks on DNS. */
enum spf_result spf_check(struct spf_checker *checker, const struct spf_query *query,
			  struct spf_answer *answer);

/* "none", "neutral", "pass", "fail", "softfail", "temperror",
 * "permerror" as RFC 8601 spells them. */
const char *spf_result_name(enum spf_result result);

/* "mailfrom" or "helo" (the ptype.property of RFC 8601 is smtp.<this>). */
const char *spf_identity_kind_name(enum spf_identity_kind kind);

/*
 * Format a Received-SPF header value (RFC 7208 §9.1) without the field
 * name, e.g. `pass (comment) client-ip=2001:db8::1; envelope-from=...;
 * helo=...; receiver=...; identity=mailfrom`.  Returns the length that
 * was needed (like snprintf).
 */
int spf_received_spf(const struct spf_checker *checker, const struct spf_query *query,
		     const struct spf_answer *answer, char *buf, size_t len);

#endif
