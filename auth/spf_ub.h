/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf_ub.h — the libspf2 DNS layer over libunbound, one per check.
 *
 * libspf2 asks its DNS layer for records; this layer answers from the
 * shared ub_ctx and is also where RFC 7208 §4.6.4 is enforced, because it
 * is the one place that sees every lookup of a check: it counts the
 * DNS-querying terms (10) and the void lookups (2), fetches and selects
 * SPF records itself (§4.5) and runs them through spf_syntax before
 * libspf2 compiles them.  A limit or syntax fault forces permerror.
 *
 * It never waits for DNS: it answers from the check's table of answers.
 * A lookup not in the table yet becomes a query for the caller to issue
 * and makes the pass incomplete (see spf_ub.c); the caller fills in the
 * answer and evaluates again.
 */
#ifndef SMTPEDGE_AUTH_SPF_UB_H
#define SMTPEDGE_AUTH_SPF_UB_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <spf2/spf.h>

struct ub_result;
struct spf_ub_check;

struct spf_ub_params {
	int family; /* AF_INET or AF_INET6: the client address */
	struct in_addr v4;
	struct in6_addr v6;
};

#define SPF_UB_MAX_TERMS 10
#define SPF_UB_MAX_VOIDS 2
#define SPF_UB_MAX_NAMES 10 /* PTR names looked at; MX names allowed */

enum spf_ub_query_state {
	SPF_UB_Q_NEW,      /* needed, not issued yet */
	SPF_UB_Q_ISSUED,   /* issued, no answer yet */
	SPF_UB_Q_ANSWERED, /* in the table */
};

/* NULL on ENOMEM.  The 20 s budget of the check starts here. */
struct spf_ub_check *spf_ub_check_create(const struct spf_ub_params *params);
void spf_ub_check_destroy(struct spf_ub_check *check);

/* Before each pass: the limits, the permerror and the problem start
 * afresh; the answers stay. */
void spf_ub_check_begin_pass(struct spf_ub_check *check);

/* True when the pass met a lookup with no answer yet: its result means
 * nothing. */
bool spf_ub_check_incomplete(const struct spf_ub_check *check);

/* The check's lookups, numbered from 0 in the order first met. */
unsigned spf_ub_check_nqueries(const struct spf_ub_check *check);
enum spf_ub_query_state spf_ub_check_query(const struct spf_ub_check *check, unsigned i,
					   const char **name, int *type);
/* Query i has gone out (NEW -> ISSUED). */
void spf_ub_check_issued(struct spf_ub_check *check, unsigned i);
/* Query i's answer: libunbound's err and result; res becomes the
 * check's.  An answer for an answered query is only freed. */
void spf_ub_check_answer(struct spf_ub_check *check, unsigned i, int err, struct ub_result *res);
/* Query i failed without an answer ("DNS timeout", "resolver error"). */
void spf_ub_check_failed(struct spf_ub_check *check, unsigned i, const char *problem);
/* How long a query issued now may take: timeout_ms, or what is left of
 * the check's budget; 0 when it is spent. */
uint32_t spf_ub_check_query_timeout(const struct spf_ub_check *check, uint32_t timeout_ms);

/* The layer to give SPF_server_new_dns(); it belongs to the check. */
SPF_dns_server_t *spf_ub_check_layer(struct spf_ub_check *check);

/* The request being evaluated (needed to expand exp= text). */
void spf_ub_check_set_request(struct spf_ub_check *check, SPF_request_t *req);

/* True when a limit or a record syntax fault made the check permerror;
 * *why then says which. */
bool spf_ub_check_forced_permerror(const struct spf_ub_check *check, const char **why);

/* Last DNS failure of the check ("DNS timeout", "SERVFAIL"), or NULL. */
const char *spf_ub_check_dns_problem(const struct spf_ub_check *check);

#endif
