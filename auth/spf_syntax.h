/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf_syntax.h — the RFC 7208 record checker in front of libspf2.
 *
 * libspf2 1.2.10 compiles records leniently (a malformed domain-spec, a
 * repeated exp= or redirect=, a bad %-escape all get through) and cannot
 * express a /0 prefix at all.  So every record we fetch is checked here
 * against the RFC 7208 §12 grammar first, and what libspf2 is given is a
 * normalised rewrite of it: unknown modifiers (which have no effect) are
 * dropped, ip4:/0 and ip6:/0 become two /1 halves, and an a or mx term
 * with a /0 length is sent to a reserved suffix that our DNS layer
 * (spf_ub.c) recognises and answers "any address of that family".
 *
 * The suffix carries a key, a secret of the one check that fetched the
 * record: a name that a record, a macro or the sender's own HELO or local
 * part can produce never ends in it, so nothing but our rewrite can ask
 * for a /0 match (the suffix alone, without the key, is an ordinary name).
 */
#ifndef SMTPEDGE_AUTH_SPF_SYNTAX_H
#define SMTPEDGE_AUTH_SPF_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

/* Reserved suffixes carrying a /0 prefix length of an a or mx term to the
 * DNS layer: "._spf-cidr0-4-" KEY ".smtpedge.invalid" (or -6-, -46-).
 * .invalid can never be a real name (RFC 6761). KEY is
 * SPF_SYNTAX_CIDR0_KEY_LEN lowercase hex digits. */
#define SPF_SYNTAX_CIDR0_KEY_LEN 16

/* The longest domain name as text, without the final dot: 255 octets on the
 * wire (RFC 1035 §2.3.4) less the first label's length octet and the root's. */
#define SPF_SYNTAX_NAME_MAX 253

enum spf_syntax_status {
	SPF_SYNTAX_OK = 0,
	SPF_SYNTAX_BAD = -1,     /* the record breaks RFC 7208: permerror */
	SPF_SYNTAX_NOSPACE = -2, /* the rewrite does not fit the buffer */
};

/*
 * Check record rec (len bytes, not NUL-terminated necessarily; it must
 * start with the version, already selected per §4.5).  When out is not
 * NULL, write the libspf2 rewrite there (NUL-terminated), its /0
 * suffixes keyed with cidr0_key (needed only with out).  On
 * SPF_SYNTAX_BAD, problem (if not NULL) names the first fault.
 */
enum spf_syntax_status spf_syntax_record(const char *rec, size_t len, const char *cidr0_key,
					 char *out, size_t out_len, char *problem,
					 size_t problem_len);

/* True when name (no trailing dot needed) can be put in a DNS query:
 * labels of 1..63 octets, at most SPF_SYNTAX_NAME_MAX in all (RFC 1035). */
bool spf_syntax_query_name_ok(const char *name);

/* True when name is a usable check_host() <domain> (RFC 7208 §4.3): a
 * query name with at least two labels, not a domain literal. */
bool spf_syntax_identity_domain_ok(const char *name);

/* Which /0 suffix with cidr0_key (if any) ends name; *base_len gets the
 * length of the name before it.  Returns 0 (none), 4, 6 or 46. */
int spf_syntax_cidr0_tag(const char *name, const char *cidr0_key, size_t *base_len);

#endif
