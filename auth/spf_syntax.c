/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf_syntax.c — RFC 7208 record syntax check and rewrite for libspf2.
 *
 * Why this exists: RFC 7208 §4.6 says a syntax error anywhere in a record
 * is a permerror, found before any mechanism is evaluated.  libspf2 1.2.10
 * accepts many malformed records and refuses one valid form (/0), so the
 * wrapper parses each record itself with the §12 grammar and hands libspf2
 * only a rewrite it is known to compile as we mean it (see spf_syntax.h).
 *
 * The parser is a loop over space-separated terms; mechanisms dispatch
 * through one table that says what argument each one takes.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/spf_syntax.h"

enum spf_arg {
	ARG_NONE,        /* all */
	ARG_DOMAIN_REQ,  /* include, exists: ":" domain-spec */
	ARG_DOMAIN_OPT,  /* ptr: [":" domain-spec] */
	ARG_DOMAIN_CIDR, /* a, mx: [":" domain-spec] [dual-cidr-length] */
	ARG_IP4,         /* ip4: ":" ip4-network [ip4-cidr-length] */
	ARG_IP6,         /* ip6: ":" ip6-network [ip6-cidr-length] */
};

struct spf_mech_row {
	const char *name;
	enum spf_arg arg;
};

static const struct spf_mech_row spf_mechs[] = {
	{ "all", ARG_NONE },       { "include", ARG_DOMAIN_REQ }, { "a", ARG_DOMAIN_CIDR },
	{ "mx", ARG_DOMAIN_CIDR }, { "ptr", ARG_DOMAIN_OPT },     { "ip4", ARG_IP4 },
	{ "ip6", ARG_IP6 },        { "exists", ARG_DOMAIN_REQ },
};

/* One parse: the input, the rewrite being written, the first fault. */
struct spf_parse {
	char *out;
	size_t out_len;
	size_t out_used;
	bool out_full;
	char *problem;
	size_t problem_len;
	bool seen_redirect;
	bool seen_exp;
	bool seen_all;
	const char *redirect; /* its domain-spec, emitted last */
	size_t redirect_len;
	const char *cidr0_key;
};

static int spf_fault(struct spf_parse *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
spf_fault(struct spf_parse *p, const char *fmt, ...)
{
	va_list ap;

	if (p->problem != NULL && p->problem_len > 0) {
		va_start(ap, fmt);
		vsnprintf(p->problem, p->problem_len, fmt, ap);
		va_end(ap);
	}
	return SPF_SYNTAX_BAD;
}

static void
spf_emit(struct spf_parse *p, const char *s, size_t n)
{
	if (p->out == NULL || p->out_full)
		return;
	if (p->out_used + n + 1 > p->out_len) {
		p->out_full = true;
		return;
	}
	memcpy(p->out + p->out_used, s, n);
	p->out_used += n;
	p->out[p->out_used] = '\0';
}

static void
spf_emit_str(struct spf_parse *p, const char *s)
{
	spf_emit(p, s, strlen(s));
}

/* --- macro-string and domain-spec (§7.1, §12) --- */

static bool
spf_is_delimiter(char c)
{
	return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

/*
 * Check the macro-expand starting at s[0] == '%'.  Returns its length, or
 * 0 if it is malformed.  letters: the macro letters allowed here.
 */
static size_t
spf_macro_len(const char *s, size_t n, const char *letters)
{
	size_t i;
	unsigned digits = 0;
	bool any_digit = false;

	if (n < 2)
		return 0;
	if (s[1] == '%' || s[1] == '_' || s[1] == '-')
		return 2;
	if (s[1] != '{' || n < 4)
		return 0;
	if (strchr(letters, tolower((unsigned char)s[2])) == NULL || s[2] == '\0')
		return 0;
	i = 3;
	while (i < n && isdigit((unsigned char)s[i])) {
		any_digit = true;
		if (digits < 1000)
			digits = digits * 10 + (unsigned)(s[i] - '0');
		i++;
	}
	/* %{d0} asks for zero labels: a syntax error, not an empty string */
	if (any_digit && digits == 0)
		return 0;
	if (i < n && (s[i] == 'r' || s[i] == 'R'))
		i++;
	while (i < n && spf_is_delimiter(s[i]))
		i++;
	if (i >= n || s[i] != '}')
		return 0;
	return i + 1;
}

/*
 * Walk a macro-string; every '%' must open a valid macro-expand and every
 * other byte must be a visible character.  *tail_start gets the offset
 * just after the last macro-expand (0 if none), *ends_in_macro whether the
 * string ends with one.
 */
static bool
spf_macro_string_ok(const char *s, size_t n, const char *letters, size_t *tail_start,
		    bool *ends_in_macro)
{
	size_t i = 0, m;

	*tail_start = 0;
	*ends_in_macro = false;
	while (i < n) {
		if (s[i] == '%') {
			m = spf_macro_len(s + i, n - i, letters);
			if (m == 0)
				return false;
			i += m;
			*tail_start = i;
			*ends_in_macro = true;
			continue;
		}
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
		*ends_in_macro = false;
		i++;
	}
	return true;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool
spf_toplabel_ok(const char *s, size_t n)
{
	size_t i;
	bool alpha = false, dash = false;

	if (n == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (i = 0; i < n; i++) {
		if (isalpha((unsigned char)s[i]))
			alpha = true;
		else if (s[i] == '-')
			dash = true;
		else if (!isdigit((unsigned char)s[i]))
			return false;
	}
	return alpha || dash;
}

/* domain-spec = macro-string domain-end;
 * domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static bool
spf_domain_spec_ok(const char *s, size_t n)
{
	size_t tail, end, dot;
	bool macro_end;

	if (n == 0)
		return false;
	/* c, r and t belong to explanation text only (§7.1) */
	if (!spf_macro_string_ok(s, n, "slodiphv", &tail, &macro_end))
		return false;
	if (macro_end)
		return true;
	end = n;
	if (end > tail && s[end - 1] == '.')
		end--;
	for (dot = end; dot > tail; dot--)
		if (s[dot - 1] == '.')
			break;
	if (dot == tail)
		return false;
	return spf_toplabel_ok(s + dot, end - dot);
}

/* --- numbers, addresses, prefix lengths --- */

/* A decimal with no leading zero, at most max.  -1 if malformed. */
static int
spf_number(const char *s, size_t n, int max)
{
	size_t i;
	int v = 0;

	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* ip4-network = qnum "." qnum "." qnum "." qnum */
static bool
spf_ip4_network_ok(const char *s, size_t n)
{
	size_t i, start = 0;
	int parts = 0;

	for (i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (spf_number(s + start, i - start, 255) < 0)
			return false;
		parts++;
		start = i + 1;
	}
	return parts == 4;
}

static bool
spf_ip6_network_ok(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/*
 * Strip a dual-cidr-length from the end of s[0..*n): sets *c4 and *c6
 * (-1 when absent) and shortens *n.  Returns false on a malformed or out
 * of range length.
 */
static bool
spf_dual_cidr(const char *s, size_t *n, int *c4, int *c6)
{
	size_t i = *n;

	*c4 = -1;
	*c6 = -1;
	while (i > 0 && isdigit((unsigned char)s[i - 1]))
		i--;
	if (i < *n && i >= 2 && s[i - 1] == '/' && s[i - 2] == '/') {
		*c6 = spf_number(s + i, *n - i, 128);
		if (*c6 < 0)
			return false;
		*n = i - 2;
		i = *n;
		while (i > 0 && isdigit((unsigned char)s[i - 1]))
			i--;
	}
	if (i < *n && i >= 1 && s[i - 1] == '/') {
		*c4 = spf_number(s + i, *n - i, 32);
		if (*c4 < 0)
			return false;
		*n = i - 1;
	}
	return true;
}

/* --- terms --- */

static void
spf_emit_qual(struct spf_parse *p, char qual)
{
	if (qual != '\0')
		spf_emit(p, &qual, 1);
}

static int
spf_mech_ip(struct spf_parse *p, char qual, const char *name, const char *arg, size_t n, bool v6)
{
	size_t slash;
	int cidr = -1;

	if (n < 2 || arg[0] != ':')
		return spf_fault(p, "%s needs \":\" and a network", name);
	arg++;
	n--;
	for (slash = 0; slash < n && arg[slash] != '/'; slash++)
		;
	if (slash < n) {
		cidr = spf_number(arg + slash + 1, n - slash - 1, v6 ? 128 : 32);
		if (cidr < 0)
			return spf_fault(p, "bad %s prefix length", name);
	}
	if (!(v6 ? spf_ip6_network_ok(arg, slash) : spf_ip4_network_ok(arg, slash)))
		return spf_fault(p, "bad %s network", name);
	spf_emit(p, " ", 1);
	if (cidr == 0) {
		/* libspf2 reads a zero length as "none given": use two halves */
		spf_emit_qual(p, qual);
		spf_emit_str(p, v6 ? "ip6:::/1 " : "ip4:0.0.0.0/1 ");
		spf_emit_qual(p, qual);
		spf_emit_str(p, v6 ? "ip6:8000::/1" : "ip4:128.0.0.0/1");
		return SPF_SYNTAX_OK;
	}
	spf_emit_qual(p, qual);
	spf_emit_str(p, name);
	spf_emit(p, ":", 1);
	spf_emit(p, arg, n);
	return SPF_SYNTAX_OK;
}

/* a and mx: a /0 length goes to the DNS layer through a reserved suffix */
static int
spf_mech_domain_cidr(struct spf_parse *p, char qual, const char *name, const char *arg, size_t n)
{
	size_t dn = n;
	int c4, c6;
	char num[16];
	const char *dom = NULL;

	if (!spf_dual_cidr(arg, &dn, &c4, &c6))
		return spf_fault(p, "bad %s prefix length", name);
	if (dn > 0) {
		if (arg[0] != ':' || !spf_domain_spec_ok(arg + 1, dn - 1))
			return spf_fault(p, "bad %s domain-spec", name);
		dom = arg + 1;
		dn--;
	}
	spf_emit(p, " ", 1);
	spf_emit_qual(p, qual);
	spf_emit_str(p, name);
	if (c4 != 0 && c6 != 0) {
		if (dom != NULL) {
			spf_emit(p, ":", 1);
			spf_emit(p, dom, dn);
		}
	} else {
		spf_emit(p, ":", 1);
		if (dom == NULL) {
			spf_emit_str(p, "%{d}");
		} else {
			if (dom[dn - 1] == '.' && dn > 1)
				dn--;
			spf_emit(p, dom, dn);
		}
		spf_emit_str(p, c4 == 0 && c6 == 0 ? "._spf-cidr0-46-" :
				c4 == 0            ? "._spf-cidr0-4-" :
						     "._spf-cidr0-6-");
		spf_emit_str(p, p->cidr0_key != NULL ? p->cidr0_key : "");
		spf_emit_str(p, ".smtpedge.invalid");
	}
	if (c4 > 0) {
		snprintf(num, sizeof(num), "/%d", c4);
		spf_emit_str(p, num);
	}
	if (c6 > 0) {
		snprintf(num, sizeof(num), "//%d", c6);
		spf_emit_str(p, num);
	}
	return SPF_SYNTAX_OK;
}

static int
spf_mechanism(struct spf_parse *p, const char *t, size_t n)
{
	char qual = '\0';
	size_t i, nl;
	const struct spf_mech_row *row = NULL;
	const char *arg;
	size_t an;

	if (strchr("+-?~", t[0]) != NULL) {
		qual = t[0];
		t++;
		n--;
	}
	for (nl = 0; nl < n && t[nl] != ':' && t[nl] != '/'; nl++)
		;
	for (i = 0; i < sizeof(spf_mechs) / sizeof(spf_mechs[0]); i++) {
		if (strlen(spf_mechs[i].name) == nl && strncasecmp(spf_mechs[i].name, t, nl) == 0) {
			row = &spf_mechs[i];
			break;
		}
	}
	if (row == NULL)
		return spf_fault(p, "unknown mechanism \"%.*s\"", (int)(nl > 40 ? 40 : nl), t);
	if (row->arg == ARG_NONE)
		p->seen_all = true;
	arg = t + nl;
	an = n - nl;
	switch (row->arg) {
	case ARG_NONE:
		if (an != 0)
			return spf_fault(p, "%s takes no argument", row->name);
		break;
	case ARG_DOMAIN_REQ:
	case ARG_DOMAIN_OPT:
		if (an == 0 && row->arg == ARG_DOMAIN_OPT)
			break;
		if (an < 1 || arg[0] != ':' || !spf_domain_spec_ok(arg + 1, an - 1))
			return spf_fault(p, "bad %s domain-spec", row->name);
		break;
	case ARG_DOMAIN_CIDR: return spf_mech_domain_cidr(p, qual, row->name, arg, an);
	case ARG_IP4: return spf_mech_ip(p, qual, row->name, arg, an, false);
	case ARG_IP6: return spf_mech_ip(p, qual, row->name, arg, an, true);
	}
	spf_emit(p, " ", 1);
	spf_emit_qual(p, qual);
	spf_emit_str(p, row->name);
	spf_emit(p, arg, an);
	return SPF_SYNTAX_OK;
}

/* modifier = redirect / explanation / unknown-modifier */
static int
spf_modifier(struct spf_parse *p, const char *t, size_t nl, const char *val, size_t vn)
{
	size_t tail;
	bool macro_end;
	bool is_redirect = nl == 8 && strncasecmp(t, "redirect", 8) == 0;
	bool is_exp = nl == 3 && strncasecmp(t, "exp", 3) == 0;

	if (is_redirect || is_exp) {
		bool *seen = is_redirect ? &p->seen_redirect : &p->seen_exp;

		if (*seen)
			return spf_fault(p, "%s= given twice", is_exp ? "exp" : "redirect");
		*seen = true;
		if (!spf_domain_spec_ok(val, vn))
			return spf_fault(p, "bad %s= domain-spec", is_exp ? "exp" : "redirect");
		if (is_redirect) {
			/* libspf2 runs redirect where it stands; §6.1 runs it
			 * after every mechanism, and never with an "all" */
			p->redirect = val;
			p->redirect_len = vn;
			return SPF_SYNTAX_OK;
		}
		spf_emit_str(p, " exp=");
		spf_emit(p, val, vn);
		return SPF_SYNTAX_OK;
	}
	/* unknown modifiers are checked, then left out: they change nothing */
	if (!spf_macro_string_ok(val, vn, "slodiphvcrt", &tail, &macro_end))
		return spf_fault(p, "bad macro in modifier \"%.*s\"", (int)(nl > 40 ? 40 : nl), t);
	return SPF_SYNTAX_OK;
}

static int
spf_term(struct spf_parse *p, const char *t, size_t n)
{
	size_t i = 0;

	/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) followed by "=" */
	if (isalpha((unsigned char)t[0])) {
		i = 1;
		while (i < n &&
		       (isalnum((unsigned char)t[i]) || t[i] == '-' || t[i] == '_' || t[i] == '.'))
			i++;
		if (i < n && t[i] == '=')
			return spf_modifier(p, t, i, t + i + 1, n - i - 1);
	}
	return spf_mechanism(p, t, n);
}

enum spf_syntax_status
spf_syntax_record(const char *rec, size_t len, const char *cidr0_key, char *out, size_t out_len,
		  char *problem, size_t problem_len)
{
	struct spf_parse p = {
		.out = out,
		.out_len = out_len,
		.problem = problem,
		.problem_len = problem_len,
		.cidr0_key = cidr0_key,
	};
	size_t i, start;
	int rc;

	if (problem != NULL && problem_len > 0)
		problem[0] = '\0';
	if (out != NULL && out_len > 0)
		out[0] = '\0';
	if (len < 6 || strncasecmp(rec, "v=spf1", 6) != 0 || (len > 6 && rec[6] != ' '))
		return spf_fault(&p, "not a v=spf1 record");
	for (i = 0; i < len; i++)
		if ((unsigned char)rec[i] < 0x20 || (unsigned char)rec[i] > 0x7e)
			return spf_fault(&p, "byte 0x%02x at %zu is not visible ASCII",
					 (unsigned char)rec[i], i);
	spf_emit_str(&p, "v=spf1");
	i = 6;
	while (i < len) {
		while (i < len && rec[i] == ' ')
			i++;
		start = i;
		while (i < len && rec[i] != ' ')
			i++;
		if (i == start)
			break;
		rc = spf_term(&p, rec + start, i - start);
		if (rc != SPF_SYNTAX_OK)
			return rc;
	}
	if (p.redirect != NULL && !p.seen_all) {
		spf_emit_str(&p, " redirect=");
		spf_emit(&p, p.redirect, p.redirect_len);
	}
	if (p.out_full)
		return SPF_SYNTAX_NOSPACE;
	return SPF_SYNTAX_OK;
}

bool
spf_syntax_query_name_ok(const char *name)
{
	size_t n = strlen(name), label = 0, i;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > SPF_SYNTAX_NAME_MAX)
		return false;
	for (i = 0; i < n; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (++label > 63) {
			return false;
		}
	}
	return label > 0;
}

bool
spf_syntax_identity_domain_ok(const char *name)
{
	const char *dot = strchr(name, '.');

	if (name[0] == '[' || !spf_syntax_query_name_ok(name))
		return false;
	/* a multi-label name: one dot that is not just the trailing one */
	return dot != NULL && dot[1] != '\0';
}

int
spf_syntax_cidr0_tag(const char *name, const char *cidr0_key, size_t *base_len)
{
	static const struct {
		const char *tag;
		int which;
	} tags[] = {
		{ "._spf-cidr0-46-", 46 },
		{ "._spf-cidr0-4-", 4 },
		{ "._spf-cidr0-6-", 6 },
	};
	static const char tail[] = ".smtpedge.invalid";
	size_t n = strlen(name), t, i, k = cidr0_key ? strlen(cidr0_key) : 0;
	size_t tl = sizeof(tail) - 1;

	if (n > 0 && name[n - 1] == '.')
		n--;
	*base_len = n;
	/* no key, no tag: the bare suffix is an ordinary name */
	if (k != SPF_SYNTAX_CIDR0_KEY_LEN || n < k + tl ||
	    strncasecmp(name + n - tl, tail, tl) != 0 ||
	    strncasecmp(name + n - tl - k, cidr0_key, k) != 0)
		return 0;
	for (i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		t = strlen(tags[i].tag);
		if (n >= t + k + tl && strncasecmp(name + n - tl - k - t, tags[i].tag, t) == 0) {
			*base_len = n - tl - k - t;
			return tags[i].which;
		}
	}
	return 0;
}
