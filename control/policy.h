/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/policy.h — the rules that turn check results into SMTP replies.
 *
 * A rule has a few settings (action, reply, stage, fcrdns), set from its
 * config section ([ipv6-ptr]) and changeable live from the CLI. One parser
 * serves both, so the config file and `smtpedgectl policy set` accept and
 * refuse exactly the same values. Workers take a snapshot of the live rules
 * when a session opens (a seqlock read, no lock on the fast path): a change
 * applies to every new session at once and never to one half-way through.
 */
#ifndef SMTPEDGE_CONTROL_POLICY_H
#define SMTPEDGE_CONTROL_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rules.h"

void policy_defaults(struct policy *p);
/* Set one key of one rule from text. On failure, a reason in why
 * ("reply: 999 is not one of 550 450") and -1. */
int policy_set(struct policy *p, const char *rule, const char *key, const char *value, char *why,
	       size_t whylen);
/* "action=enforce reply=550 stage=mail fcrdns=no" */
void policy_rule_format(int id, const struct policy_rule *r, char *out, size_t n);
/* Calls each(key, value) for the settings of a rule, in table order. */
void policy_rule_each(int id, const struct policy_rule *r,
		      void (*each)(void *arg, const char *key, const char *val), void *arg);

/* The live rules. */
void policy_live_init(const struct policy *p);
void policy_live_get(struct policy *out);
int policy_live_set(const char *rule, const char *key, const char *value, char *why, size_t whylen);
/* Sets n keys of one rule of the live copy, all or nothing, as one change:
 * changes made at once (the CLI's handlers run on a thread per client)
 * never undo each other. before/after (may be NULL) get the rules around
 * the change. */
int policy_live_change(const char *rule, const char *const *keys, const char *const *values,
		       unsigned n, char *why, size_t whylen, struct policy *before,
		       struct policy *after);

#endif
