/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/rules.c — the names of the rules, results and outcomes, and what a rule
 * says for a result (see rules.h).
 *
 * The reply texts follow what Microsoft's Exchange Online Protection sends
 * (REFERENCES.md): 550 5.7.25 by default, 450 4.7.25 as EOP replies today.
 * A temporary DNS failure is a 451 4.7.25 whatever the setting: an outage of
 * ours must never bounce anyone's mail.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/rules.h"

static const char *const rule_names[POLICY__RULES] = {
	[POLICY_IPV6_PTR] = "ipv6-ptr",
	[POLICY_IPV4_PTR] = "ipv4-ptr",
	[POLICY_IPV6_AUTH] = "ipv6-auth",
	[POLICY_IPV4_AUTH] = "ipv4-auth",
};

static const char *const outcome_names[POLICY__OUTCOMES] = {
	[POLICY_PASS] = "pass",
	[POLICY_REJECT] = "reject",
	[POLICY_DEFER] = "defer",
	[POLICY_LOGGED] = "logged",
};

static const char *const ptr_names[PTR__RESULTS] = {
	[PTR_UNKNOWN] = "unknown",   [PTR_PASS] = "pass",           [PTR_NONE] = "none",
	[PTR_MISMATCH] = "mismatch", [PTR_TEMPERROR] = "temperror",
};

const char *
ptr_result_name(enum ptr_result r)
{
	return (unsigned)r < PTR__RESULTS ? ptr_names[r] : "?";
}

const char *
policy_rule_name(enum policy_rule_id id)
{
	return (unsigned)id < POLICY__RULES ? rule_names[id] : "?";
}

const char *
policy_outcome_name(enum policy_outcome o)
{
	return (unsigned)o < POLICY__OUTCOMES ? outcome_names[o] : "?";
}

int
policy_rule_find(const char *name)
{
	int i;

	for (i = 0; i < POLICY__RULES; i++)
		if (strcmp(rule_names[i], name) == 0)
			return i;
	return -1;
}

enum policy_outcome
policy_ptr(const struct policy_rule *r, enum ptr_result res, uint8_t family, const uint8_t *addr,
	   struct policy_reply *reply)
{
	char a[INET6_ADDRSTRLEN];
	const char *fam = family == 6 ? "IPv6" : "IPv4";
	bool fails = res == PTR_NONE || (res == PTR_MISMATCH && r->fcrdns);

	if (r->action == POLICY_OFF || res == PTR_PASS || res == PTR_UNKNOWN ||
	    (!fails && res != PTR_TEMPERROR))
		return POLICY_PASS;
	if (r->action == POLICY_LOG)
		return POLICY_LOGGED;
	inet_ntop(family == 6 ? AF_INET6 : AF_INET, addr, a, sizeof(a));
	if (res == PTR_TEMPERROR) {
		reply->code = 451;
		snprintf(reply->enh, sizeof(reply->enh), "4.7.25");
		snprintf(
			reply->text, sizeof(reply->text),
			"Service temporarily unavailable, the reverse DNS lookup of sending %s address [%s] failed, try again later",
			fam, a);
		return POLICY_DEFER;
	}
	reply->code = r->reply;
	snprintf(reply->enh, sizeof(reply->enh), r->reply == 550 ? "5.7.25" : "4.7.25");
	snprintf(reply->text, sizeof(reply->text),
		 "Service unavailable, sending %s address [%s] must have a reverse DNS record", fam,
		 a);
	return POLICY_REJECT;
}

enum policy_outcome
policy_auth(const struct policy_rule *r, bool spf_pass, bool dkim_pass, bool temp, uint8_t family,
	    struct policy_reply *reply)
{
	const char *fam = family == 6 ? "IPv6" : "IPv4";

	if (r->action == POLICY_OFF || spf_pass || dkim_pass)
		return POLICY_PASS;
	if (r->action == POLICY_LOG)
		return POLICY_LOGGED;
	if (temp) { /* a pass may have hidden behind the failure */
		reply->code = 451;
		snprintf(reply->enh, sizeof(reply->enh), "4.7.26");
		snprintf(
			reply->text, sizeof(reply->text),
			"Service temporarily unavailable, SPF and DKIM could not be checked for a message sent over %s, try again later",
			fam);
		return POLICY_DEFER;
	}
	reply->code = r->reply;
	snprintf(reply->enh, sizeof(reply->enh), r->reply == 554 ? "5.7.26" : "4.7.26");
	snprintf(
		reply->text, sizeof(reply->text),
		"Service unavailable, message sent over %s must pass either SPF or DKIM validation",
		fam);
	return POLICY_REJECT;
}
