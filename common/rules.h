/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/rules.h — the policy as both planes read it: the rules, the results they
 * judge and their outcomes, and what a rule says for a result.
 *
 * Workers take a snapshot of the live rules (struct policy) when a session
 * opens and judge the PTR result with it; the control plane judges SPF and
 * DKIM with the auth rule the session carried. The settings' parser and the
 * live copy belong to the control plane (control/policy.h).
 */
#ifndef SMTPEDGE_COMMON_RULES_H
#define SMTPEDGE_COMMON_RULES_H

#include <stdbool.h>
#include <stdint.h>

/* The reverse-DNS result as the planes exchange it. */
enum ptr_result {
	PTR_UNKNOWN = 0, /* not known yet */
	PTR_PASS,        /* PTR found and forward-confirmed */
	PTR_NONE,        /* NXDOMAIN or no PTR record */
	PTR_MISMATCH,    /* PTR names, none resolves back to the peer */
	PTR_TEMPERROR,   /* SERVFAIL, timeout: try later, never a 5xx */
	PTR__RESULTS
};

const char *ptr_result_name(enum ptr_result r);

enum policy_rule_id {
	POLICY_IPV6_PTR,
	POLICY_IPV4_PTR,
	POLICY_IPV6_AUTH, /* SPF or DKIM must pass */
	POLICY_IPV4_AUTH,
	POLICY__RULES
};

enum policy_action { POLICY_ENFORCE, POLICY_LOG, POLICY_OFF };
/* Where a PTR verdict is given: instead of the greeting, at MAIL, at RCPT. */
enum policy_stage { POLICY_AT_CONNECT, POLICY_AT_MAIL, POLICY_AT_RCPT };

struct policy_rule {
	uint8_t action; /* enum policy_action */
	uint8_t stage;  /* enum policy_stage (PTR rules) */
	bool fcrdns;    /* PTR rules: a PTR that does not resolve back fails too */
	uint16_t reply; /* PTR rules: 550 or 450; auth rules: 450 or 554 */
};

struct policy {
	struct policy_rule rule[POLICY__RULES];
};

/* What a rule says for one result. */
enum policy_outcome {
	POLICY_PASS,   /* no objection */
	POLICY_REJECT, /* the rule's reply (5xx or 4xx as set) */
	POLICY_DEFER,  /* temporary failure: 451, never a 5xx */
	POLICY_LOGGED, /* would have refused; action = log */
	POLICY__OUTCOMES
};

struct policy_reply {
	uint16_t code;
	char enh[8];
	char text[160];
};

const char *policy_rule_name(enum policy_rule_id id);
const char *policy_outcome_name(enum policy_outcome o);
/* -1 when the name is not a rule. */
int policy_rule_find(const char *name);

/* The PTR rule of the peer's family, applied to a result. Fills reply when
 * the outcome is REJECT or DEFER. addr is the peer's, for the text. */
enum policy_outcome policy_ptr(const struct policy_rule *r, enum ptr_result res, uint8_t family,
			       const uint8_t *addr, struct policy_reply *reply);

/* The authentication rule of the peer's family: SPF and DKIM results in,
 * what the sender is told out. spf_pass / dkim_pass: one passed;
 * temp: a check failed temporarily (then never a 5xx). */
enum policy_outcome policy_auth(const struct policy_rule *r, bool spf_pass, bool dkim_pass,
				bool temp, uint8_t family, struct policy_reply *reply);

#endif
