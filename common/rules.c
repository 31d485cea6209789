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

/* An address as inet_ntop() writes it (RFC 5952 for IPv6: lower-case hex,
 * the longest run of two or more zero groups, the first of equals, as
 * "::"), without its sprintf per group: the refusal's text is made on every
 * refused session. The IPv4-compatible and -mapped forms, which inet_ntop
 * writes with a dotted quad and which the edge drops as martians, are left
 * to inet_ntop. */
static void
addr_text(uint8_t family, const uint8_t *a, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	static const uint8_t zero10[10];
	int best = -1, best_len = 0, run = -1, i;
	char *p = out;

	if (family != 6) {
		for (i = 0; i < 4; i++) {
			unsigned v = a[i];

			if (v >= 100)
				*p++ = (char)('0' + v / 100);
			if (v >= 10)
				*p++ = (char)('0' + v / 10 % 10);
			*p++ = (char)('0' + v % 10);
			*p++ = i < 3 ? '.' : '\0';
		}
		return;
	}
	if (memcmp(a, zero10, 10) == 0 &&
	    ((a[10] == 0 && a[11] == 0) || (a[10] == 0xff && a[11] == 0xff))) {
		inet_ntop(AF_INET6, a, out, (socklen_t)cap);
		return;
	}
	for (i = 0; i <= 8; i++) {
		bool zero = i < 8 && a[2 * i] == 0 && a[2 * i + 1] == 0;

		if (zero && run < 0)
			run = i;
		if (!zero && run >= 0) {
			if (i - run > best_len && i - run >= 2) {
				best = run;
				best_len = i - run;
			}
			run = -1;
		}
	}
	for (i = 0; i < 8; i++) {
		unsigned v = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
		int shift;

		if (i == best) {
			*p++ = ':';
			if (i == 0)
				*p++ = ':';
			i += best_len - 1;
			continue;
		}
		for (shift = 12; shift > 0 && (v >> shift) == 0; shift -= 4)
			;
		for (; shift >= 0; shift -= 4)
			*p++ = hex[(v >> shift) & 0xf];
		if (i < 7)
			*p++ = ':';
	}
	*p = '\0';
}

/* Appends s to the text in buf (cap bytes with its NUL), clipped; returns
 * the new length. The refusal's text is made on every refused session, so
 * it is copied together instead of going through snprintf. */
static size_t
text_add(char *buf, size_t len, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n > cap - 1 - len)
		n = cap - 1 - len;
	memcpy(buf + len, s, n);
	buf[len + n] = '\0';
	return len + n;
}

static void
ptr_reply(struct policy_reply *reply, uint16_t code, const char *enh, const char *before,
	  const char *fam, const char *addr, const char *after)
{
	size_t n;

	reply->code = code;
	memcpy(reply->enh, enh, strlen(enh) + 1);
	n = text_add(reply->text, 0, sizeof(reply->text), before);
	n = text_add(reply->text, n, sizeof(reply->text), fam);
	n = text_add(reply->text, n, sizeof(reply->text), " address [");
	n = text_add(reply->text, n, sizeof(reply->text), addr);
	n = text_add(reply->text, n, sizeof(reply->text), "]");
	text_add(reply->text, n, sizeof(reply->text), after);
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
	addr_text(family, addr, a, sizeof(a));
	if (res == PTR_TEMPERROR) {
		ptr_reply(reply, 451, "4.7.25",
			  "Service temporarily unavailable, the reverse DNS lookup of sending ",
			  fam, a, " failed, try again later");
		return POLICY_DEFER;
	}
	ptr_reply(reply, r->reply, r->reply == 550 ? "5.7.25" : "4.7.25",
		  "Service unavailable, sending ", fam, a, " must have a reverse DNS record");
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
