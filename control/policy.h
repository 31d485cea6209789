/*
 * policy.h - the rules that turn check results into SMTP replies.
 *
 * A rule has a few settings (action, reply, stage, fcrdns), set from its
 * config section ([ipv6-ptr]) and changeable live from the CLI. One parser
 * serves both, so the config file and `smtpedgectl policy set` accept and
 * refuse exactly the same values. Workers take a snapshot of the live rules
 * when a session opens (a seqlock read, no lock on the fast path): a change
 * applies to every new session at once and never to one half-way through.
 */
#ifndef SMTPEDGE_POLICY_H
#define SMTPEDGE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/msg.h"

enum policy_rule_id {
	POLICY_IPV6_PTR,
	POLICY_IPV4_PTR,
	POLICY_IPV6_AUTH,    /* SPF or DKIM must pass (issue 6) */
	POLICY_IPV4_AUTH,
	POLICY__RULES
};

enum policy_action { POLICY_ENFORCE, POLICY_LOG, POLICY_OFF };
/* Where a PTR verdict is given: instead of the greeting, at MAIL, at RCPT. */
enum policy_stage { POLICY_AT_CONNECT, POLICY_AT_MAIL, POLICY_AT_RCPT };

struct policy_rule {
	uint8_t action;      /* enum policy_action */
	uint8_t stage;       /* enum policy_stage (PTR rules) */
	bool fcrdns;         /* PTR rules: a PTR that does not resolve back fails too */
	uint16_t reply;      /* PTR rules: 550 or 450; auth rules: 450 or 554 */
};

struct policy {
	struct policy_rule rule[POLICY__RULES];
};

/* What a rule says for one result. */
enum policy_outcome {
	POLICY_PASS,         /* no objection */
	POLICY_REJECT,       /* the rule's reply (5xx or 4xx as set) */
	POLICY_DEFER,        /* temporary failure: 451, never a 5xx */
	POLICY_LOGGED,       /* would have refused; action = log */
	POLICY__OUTCOMES
};

struct policy_reply {
	uint16_t code;
	char enh[8];
	char text[160];
};

void policy_defaults(struct policy *p);
const char *policy_rule_name(enum policy_rule_id id);
const char *policy_outcome_name(enum policy_outcome o);
/* -1 when the name is not a rule. */
int policy_rule_find(const char *name);

/* Set one key of one rule from text. On failure, a reason in why
 * ("reply: 999 is not one of 550 450") and -1. */
int policy_set(struct policy *p, const char *rule, const char *key,
	       const char *value, char *why, size_t whylen);
/* "action=enforce reply=550 stage=mail fcrdns=no" */
void policy_rule_format(int id, const struct policy_rule *r, char *out, size_t n);
/* Calls each(key, value) for the settings of a rule, in table order. */
void policy_rule_each(int id, const struct policy_rule *r,
		      void (*each)(void *arg, const char *key, const char *val),
		      void *arg);

/* The PTR rule of the peer's family, applied to a result. Fills reply when
 * the outcome is REJECT or DEFER. addr is the peer's, for the text. */
enum policy_outcome policy_ptr(const struct policy_rule *r,
			       enum ptr_result res, uint8_t family,
			       const uint8_t *addr, struct policy_reply *reply);

/* The authentication rule of the peer's family: SPF and DKIM results in,
 * what the sender is told out. spf_pass / dkim_pass: one passed;
 * temp: a check failed temporarily (then never a 5xx). */
enum policy_outcome policy_auth(const struct policy_rule *r, bool spf_pass,
				bool dkim_pass, bool temp, uint8_t family,
				struct policy_reply *reply);

/* The live rules. */
void policy_live_init(const struct policy *p);
void policy_live_get(struct policy *out);
int policy_live_set(const char *rule, const char *key, const char *value,
		    char *why, size_t whylen);
/* Sets n keys of one rule of the live copy, all or nothing, as one change:
 * changes made at once (the CLI's handlers run on a thread per client)
 * never undo each other. before/after (may be NULL) get the rules around
 * the change. */
int policy_live_change(const char *rule, const char *const *keys,
		       const char *const *values, unsigned n, char *why,
		       size_t whylen, struct policy *before, struct policy *after);

#endif
