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
 */
#ifndef SMTPEDGE_AUTH_SPF_UB_H
#define SMTPEDGE_AUTH_SPF_UB_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <spf2/spf.h>

struct ub_ctx;
struct spf_ub_check;

struct spf_ub_params {
	struct ub_ctx *ub;
	uint32_t timeout_ms; /* per query */
	int family;          /* AF_INET or AF_INET6: the client address */
	struct in_addr v4;
	struct in6_addr v6;
};

#define SPF_UB_MAX_TERMS 10
#define SPF_UB_MAX_VOIDS 2
#define SPF_UB_MAX_NAMES 10 /* PTR names looked at; MX names allowed */

/* NULL on ENOMEM. */
struct spf_ub_check *spf_ub_check_create(const struct spf_ub_params *params);
void spf_ub_check_destroy(struct spf_ub_check *check);

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
