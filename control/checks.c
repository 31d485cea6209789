/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/checks.c — SPF, DKIM, the authentication rule and our headers (checks.h).
 *
 * Temporary failures: the rule never answers 5xx when a check failed
 * temporarily, because the failure may have hidden a pass; with neither
 * check passing and any of them temperror, the sender gets 451 4.7.26 and
 * retries. Only when every check gave a real answer does hard mode's 554
 * apply.
 *
 * Forged headers: an incoming Authentication-Results field naming our
 * authserv-id would read, downstream, as our own verdict; RFC 8601 5 says to
 * remove it. DKIM still verifies the message as the sender sent it. The
 * field is recognised by the full grammar (RFC 8601 2.2 over RFC 5322 and
 * 2045): the name in any case, CFWS with nested comments and quoted-pairs,
 * folds anywhere, the authserv-id as a token or a quoted-string; in a
 * message that has no body, all of it is the header section. A downstream
 * parser that reads less of the grammar sees a field we kept only when the
 * full grammar says it names another server.
 *
 * Our own header: whatever the peer influenced goes either in a value,
 * quoted (RFC 2045), or in a comment, escaped for a comment; never one
 * escaped as the other. The PTR name appears only once forward-confirmed.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/dkim.h"
#include "auth/spf.h"

#include "common/chunk.h"
#include "common/txrec.h"

#include "control/checks.h"

struct auth {
	struct spf_checker *spf;
	struct dkim_verifier *dkim;
};

struct auth *
auth_create(struct ub_ctx *ub, const char *hostname, uint32_t dns_timeout_ms, char *err,
	    size_t errlen)
{
	struct auth *a = calloc(1, sizeof(*a));
	struct spf_params sp = { .ub = ub, .receiver = hostname, .dns_timeout_ms = dns_timeout_ms };
	struct dkim_params dp = { .dns_timeout_ms = dns_timeout_ms,
				  .max_signatures = AUTH_MAX_SIGS };

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->spf = spf_checker_create(&sp);
	a->dkim = dkim_verifier_create(&dp);
	if (!a->spf || !a->dkim) {
		snprintf(err, errlen, "%s: %s", a->spf ? "DKIM" : "SPF", strerror(errno));
		auth_destroy(a);
		return NULL;
	}
	return a;
}

void
auth_destroy(struct auth *a)
{
	if (!a)
		return;
	if (a->spf)
		spf_checker_destroy(a->spf);
	dkim_verifier_destroy(a->dkim);
	free(a);
}

static void
auth_spf_query(uint8_t family, const uint8_t *addr, const char *helo, const char *mail_from,
	       struct spf_query *q)
{
	*q = (struct spf_query){
		.family = family == 6 ? AF_INET6 : AF_INET, .helo = helo, .mail_from = mail_from
	};
	memcpy(q->addr, addr, 16);
}

struct spf_eval *
auth_spf_start(struct auth *a, uint8_t family, const uint8_t *addr, const char *helo,
	       const char *mail_from)
{
	struct spf_query q;

	auth_spf_query(family, addr, helo, mail_from, &q);
	return spf_eval_start(a->spf, &q);
}

void
auth_spf_result(const struct spf_eval *ev, struct auth_spf *out)
{
	struct spf_answer ans;

	out->result = spf_eval_result(ev, &ans);
	out->kind = ans.identity_kind;
	snprintf(out->identity, sizeof(out->identity), "%s", ans.identity);
}

struct dkim_keys *
auth_dkim_keys(struct auth *a, const struct chunk *msg)
{
	struct dkim_keys *k = dkim_keys_create(a->dkim);

	if (!k)
		return NULL;
	for (; msg; msg = msg->next)
		if (dkim_keys_feed(k, msg->data, msg->len))
			break;
	dkim_keys_scan_end(k);
	return k;
}

struct dkim_keys *
auth_dkim_keys_head(struct auth *a, const struct chunk *msg, uint32_t len)
{
	struct dkim_keys *k = dkim_keys_create(a->dkim);
	uint32_t left = len, n;

	if (!k)
		return NULL;
	while (msg && left > 0) {
		/* a chunk read past is full, its len final; of the one the
		 * block ends in, neither len nor next is ours to read */
		n = left > msg->cap ? msg->len : left;
		if (dkim_keys_feed(k, msg->data, n))
			break;
		left -= n;
		if (left > 0)
			msg = msg->next;
	}
	dkim_keys_scan_end(k);
	return k;
}

/* A signed message's job and where its feeding stands in the chain: the
 * chunk that holds the next byte (or whose end was reached: its `next` is
 * read only once bytes past it are final) and the offset in it. */
struct auth_hash {
	struct dkim_job *job;
	const struct chunk *head;
	const struct chunk *at;
	uint32_t off;
	uint32_t fed;
};

/* Feeds the chain up to byte final. A chunk read past is full, so its cap
 * is its length; of the one final ends in, neither len nor next is read. */
static void
hash_feed_to(struct auth_hash *h, uint32_t final)
{
	while (h->fed < final) {
		uint32_t n;

		if (h->off == h->at->cap) {
			if (h->at->next == NULL)
				return;
			h->at = h->at->next;
			h->off = 0;
		}
		n = h->at->cap - h->off;
		if (n > final - h->fed)
			n = final - h->fed;
		dkim_job_feed(h->job, h->at->data + h->off, n);
		h->off += n;
		h->fed += n;
	}
}

struct auth_hash *
auth_hash_begin(struct auth *a, const struct chunk *msg, uint32_t len)
{
	struct auth_hash *h;

	if (!msg || len == 0 || !(h = calloc(1, sizeof(*h))))
		return NULL;
	h->job = dkim_job_begin(a->dkim, "smtpedge");
	h->head = h->at = msg;
	if (!h->job)
		return auth_hash_free(h);
	hash_feed_to(h, len);
	if (!dkim_job_hashing(h->job))
		return auth_hash_free(h);
	return h;
}

uint32_t
auth_hash_feed(struct auth_hash *h, uint32_t final)
{
	uint32_t before = h->fed;

	hash_feed_to(h, final);
	return h->fed - before;
}

uint32_t
auth_hash_fed(const struct auth_hash *h)
{
	return h ? h->fed : 0;
}

struct auth_hash *
auth_hash_free(struct auth_hash *h)
{
	if (h) {
		dkim_job_free(h->job);
		free(h);
	}
	return NULL;
}

/* The DKIM job of msg: h's, fed the rest of the (complete) chain, or a new
 * one fed all of it. Takes h. */
static void
dkim_run(struct auth *a, const struct chunk *msg, struct auth_hash *h, struct dkim_keys *keys,
	 struct auth_verdict *v)
{
	struct dkim_job *job;
	unsigned i;

	v->ndkim = 0;
	if (h) {
		const struct chunk *c = h->at;
		uint32_t off = h->off;

		job = h->job;
		h->job = NULL;
		auth_hash_free(h);
		for (; c; c = c->next, off = 0)
			if (off < c->len)
				dkim_job_feed(job, c->data + off, c->len - off);
	} else {
		job = dkim_job_begin(a->dkim, "smtpedge");
		if (!job) {
			v->temp = true;
			return;
		}
		for (; msg; msg = msg->next)
			dkim_job_feed(job, msg->data, msg->len);
	}
	dkim_job_use_keys(job, keys);
	if (dkim_job_end(job, v->dkim, AUTH_MAX_SIGS, &v->ndkim) < 0)
		v->temp = true;
	dkim_job_free(job);
	for (i = 0; i < v->ndkim; i++) {
		if (v->dkim[i].result == DKIM_RES_PASS)
			v->dkim_pass = true;
		if (v->dkim[i].result == DKIM_RES_TEMPERROR)
			v->temp = true;
	}
}

void
auth_verify_hashed(struct auth *a, const struct chunk *msg, struct auth_hash *h,
		   struct dkim_keys *keys, const struct policy_rule *rule, uint8_t family,
		   struct auth_verdict *v)
{
	if (h && h->head != msg)
		h = auth_hash_free(h);
	v->dkim_pass = false;
	v->temp = v->spf.result == SPF_RES_TEMPERROR;
	dkim_run(a, msg, h, keys, v);
	memset(&v->reply, 0, sizeof(v->reply));
	v->outcome = policy_auth(rule, v->spf.result == SPF_RES_PASS, v->dkim_pass, v->temp, family,
				 &v->reply);
}

void
auth_verify(struct auth *a, const struct chunk *msg, struct dkim_keys *keys,
	    const struct policy_rule *rule, uint8_t family, struct auth_verdict *v)
{
	auth_verify_hashed(a, msg, NULL, keys, rule, family, v);
}

const char *
auth_dkim_summary(const struct auth_verdict *v)
{
	static const enum dkim_outcome order[] = {
		DKIM_RES_PASS,      DKIM_RES_TEMPERROR, DKIM_RES_FAIL,
		DKIM_RES_PERMERROR, DKIM_RES_NEUTRAL,   DKIM_RES_POLICY,
	};
	unsigned i, k;

	for (k = 0; k < sizeof(order) / sizeof(order[0]); k++)
		for (i = 0; i < v->ndkim; i++)
			if (v->dkim[i].result == order[k])
				return dkim_outcome_name(order[k]);
	return "none";
}

/* A property value: bare when it is a plain token, else a quoted string. */
static int
put_value(char *out, size_t n, const char *v)
{
	size_t off = 0, i;
	bool plain = *v != '\0';

	for (i = 0; v[i]; i++)
		if (!isalnum((unsigned char)v[i]) && !strchr(".@_+-=/", v[i]))
			plain = false;
	if (plain)
		return snprintf(out, n, "%s", v);
	off = (size_t)snprintf(out, n, "\"");
	for (i = 0; v[i] && off + 3 < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c < 0x20 || c == 0x7f)
			c = '?';
		if (c == '"' || c == '\\')
			out[off++] = '\\';
		out[off++] = (char)c;
	}
	off += (size_t)snprintf(out + off, n - off, "\"");
	return (int)off;
}

/* Text for inside a comment (RFC 5322 3.2.2): parentheses and backslashes
 * get a backslash, so nothing the peer chose can close the comment or open
 * another; control and non-ASCII bytes become '?', so it cannot end the
 * line either. Cut to fit n. */
static int
put_comment(char *out, size_t n, const char *v)
{
	size_t off = 0, i;

	for (i = 0; v[i] && off + 3 < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c < 0x20 || c >= 0x7f)
			c = '?';
		if (c == '(' || c == ')' || c == '\\')
			out[off++] = '\\';
		out[off++] = (char)c;
	}
	if (n > 0)
		out[off] = '\0';
	return (int)off;
}

/* RFC 8601 2.7.3: a PTR that does not resolve back fails; no PTR at all
 * is a permerror (the evaluation could not be completed); a lookup that
 * failed or has not answered is a temperror. */
static const char *
iprev_result(uint8_t ptr)
{
	switch (ptr) {
	case PTR_PASS: return "pass";
	case PTR_MISMATCH: return "fail";
	case PTR_NONE: return "permerror";
	default: return "temperror";
	}
}

size_t
auth_results_header(const char *authserv_id, const struct txrec *rec, const struct auth_verdict *v,
		    char *out, size_t n)
{
	char addr[INET6_ADDRSTRLEN], val[700];
	size_t off;
	unsigned i;

#define PUT(...)                                                                  \
	do {                                                                      \
		if (off < n)                                                      \
			off += (size_t)snprintf(out + off, n - off, __VA_ARGS__); \
	} while (0)
	off = 0;
	inet_ntop(rec->family == 6 ? AF_INET6 : AF_INET, rec->addr, addr, sizeof(addr));
	PUT("Authentication-Results: %s;\r\n\tiprev=%s policy.iprev=%s", authserv_id,
	    iprev_result(rec->ptr), addr);
	/* The name only once it is forward-confirmed, and as a comment:
	 * policy.iprev is the address (RFC 8601 2.7.3). */
	if (rec->ptr == PTR_PASS && rec->ptr_name[0]) {
		put_comment(val, sizeof(val), rec->ptr_name);
		PUT(" (%s)", val);
	}
	put_value(val, sizeof(val), v->spf.identity[0] ? v->spf.identity : "<>");
	PUT(";\r\n\tspf=%s %s=%s", spf_result_name(v->spf.result),
	    v->spf.kind == SPF_ID_HELO ? "smtp.helo" : "smtp.mailfrom", val);
	if (v->ndkim == 0)
		PUT(";\r\n\tdkim=none");
	for (i = 0; i < v->ndkim; i++) {
		const struct dkim_sig_result *d = &v->dkim[i];

		PUT(";\r\n\tdkim=%s", dkim_outcome_name(d->result));
		if (d->result != DKIM_RES_PASS && d->reason[0]) {
			put_comment(val, sizeof(val), d->reason);
			PUT(" (%s)", val);
		}
		if (d->domain[0]) {
			put_value(val, sizeof(val), d->domain);
			PUT(" header.d=%s", val);
		}
		if (d->selector[0]) {
			put_value(val, sizeof(val), d->selector);
			PUT(" header.s=%s", val);
		}
		if (d->algorithm[0]) {
			put_value(val, sizeof(val), d->algorithm);
			PUT(" header.a=%s", val);
		}
	}
	PUT("\r\n");
#undef PUT
	return off < n ? off : n - 1;
}

/* ---- forged Authentication-Results ------------------------------------ */

static const char ar_name[] = "authentication-results";
#define AR_NAME_LEN (sizeof(ar_name) - 1)

static bool
is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* The value of a field is read unfolded: inside one field every CRLF is
 * a fold (CRLF before a space or tab), and the space stays. CR and LF are
 * passed over wherever they are, so a stray one (which the engine never
 * lets through) cannot hide a name either. */
static size_t
next_byte(const char *f, size_t len, size_t i)
{
	while (i < len && (f[i] == '\r' || f[i] == '\n'))
		i++;
	return i;
}

/* Past CFWS (RFC 5322 3.2.2) from f[i]: spaces, folds and comments, which
 * nest and may hold quoted-pairs. An unclosed comment runs to the end of
 * the field. */
static size_t
skip_cfws(const char *f, size_t len, size_t i)
{
	size_t depth = 0;

	for (; (i = next_byte(f, len, i)) < len; i++) {
		unsigned char c = (unsigned char)f[i];

		if (depth > 0 && c == '\\') {
			/* a quoted-pair: the next byte, whatever it is */
			if ((i = next_byte(f, len, i + 1)) == len)
				break;
		} else if (c == '(')
			depth++;
		else if (c == ')' && depth > 0)
			depth--;
		else if (depth == 0 && !is_wsp(c))
			break;
	}
	return i;
}

/* An RFC 2045 token character; bytes past ASCII count too, so that a
 * longer UTF-8 name is never taken for ours. */
static bool
is_token(unsigned char c)
{
	return c > ' ' && c != 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Is the value (RFC 2045: token or quoted-string) at f[i] id, in any case?
 * A quoted-string's content is compared after its quoted-pairs are undone
 * and its folds removed; it must be closed. */
static bool
value_is(const char *f, size_t len, size_t i, const char *id)
{
	size_t idlen = strlen(id), k = 0;

	if (i < len && f[i] == '"') {
		for (i++; (i = next_byte(f, len, i)) < len && f[i] != '"'; i++) {
			if (f[i] == '\\' && (i = next_byte(f, len, i + 1)) == len)
				return false;
			if (k >= idlen ||
			    tolower((unsigned char)f[i]) != tolower((unsigned char)id[k]))
				return false;
			k++;
		}
		return i < len && k == idlen;
	}
	for (; (i = next_byte(f, len, i)) < len && is_token((unsigned char)f[i]); i++, k++)
		if (k >= idlen || tolower((unsigned char)f[i]) != tolower((unsigned char)id[k]))
			return false;
	return k > 0 && k == idlen;
}

/* Does this header field (name, colon, value, folds and CRLF) claim id as
 * its authserv-id (RFC 8601 2.2: [CFWS] authserv-id [CFWS version] ...)?
 * What follows the id does not matter: a field that names us, well formed
 * or not, could only be read as our verdict. */
static bool
ar_claims(const char *f, size_t len, const char *id)
{
	size_t i = AR_NAME_LEN;

	if (len < i || strncasecmp(f, ar_name, i) != 0)
		return false;
	while (i < len && is_wsp((unsigned char)f[i])) /* obs-optional */
		i++;
	if (i >= len || f[i] != ':')
		return false;
	return value_is(f, len, skip_cfws(f, len, i + 1), id);
}

/* The header section as the chunks hold it: up to and with the first
 * empty line, or the whole message when it has none (RFC 5322 allows a
 * message without a body). */
struct hdr_scan {
	size_t len;               /* bytes of the section */
	const struct chunk *last; /* the chunk it ends in */
	size_t last_off;          /* where in that chunk */
	bool candidate;           /* a field starts "Authentication-Results" */
};

enum { HS_BOL, HS_CR_AT_BOL, HS_NAME, HS_TEXT };

/* One pass over the chunks, byte by byte, so any split reads the same. A
 * line is empty when it is CRLF (or a bare LF, which the engine never
 * passes). A field starts on a line that does not start with SP or HT. */
static void
hdr_scan(const struct chunk *msg, struct hdr_scan *hs)
{
	const struct chunk *c;
	unsigned st = HS_BOL;
	size_t name = 0, i;

	memset(hs, 0, sizeof(*hs));
	CHUNK_FOREACH(c, msg)
	{
		hs->last = c;
		for (i = 0; i < c->len; i++) {
			unsigned char b = c->data[i];

			if (b == '\n') {
				if (st == HS_BOL || st == HS_CR_AT_BOL) {
					hs->len += i + 1;
					hs->last_off = i + 1;
					return;
				}
				st = HS_BOL;
				continue;
			}
			switch (st) {
			case HS_BOL:
				if (b == '\r') {
					st = HS_CR_AT_BOL;
					break;
				}
				if (is_wsp(b)) {
					st = HS_TEXT;
					break;
				}
				name = 0;
				st = HS_NAME;
				/* fall through */
			case HS_NAME:
				if (tolower(b) != ar_name[name]) {
					st = HS_TEXT;
				} else if (++name == AR_NAME_LEN) {
					hs->candidate = true;
					st = HS_TEXT;
				}
				break;
			default: st = HS_TEXT; break;
			}
		}
		hs->len += c->len;
		hs->last_off = c->len;
	}
}

/* Where the field that starts at h[start] ends: after its last line, the
 * lines that start with SP or HT being its folds. */
static size_t
field_end(const char *h, size_t len, size_t start)
{
	size_t end = start;

	do {
		const char *lf = memchr(h + end, '\n', len - end);

		end = lf ? (size_t)(lf - h) + 1 : len;
	} while (end < len && is_wsp((unsigned char)h[end]));
	return end;
}

struct chunk *
auth_strip_forged(const char *id, const struct chunk *msg)
{
	const struct chunk *c;
	struct hdr_scan hs;
	struct chunk *out;
	size_t copied = 0, kept = 0, start, end, tail;
	bool any = false;
	char *h;

	hdr_scan(msg, &hs);
	if (!hs.candidate)
		return NULL;
	tail = hs.last->len - hs.last_off;
	out = malloc(sizeof(*out) + hs.len + tail);
	if (!out)
		return NULL;
	h = (char *)out->data;
	for (c = msg; copied < hs.len; c = c->next) {
		size_t k = c->len < hs.len - copied ? c->len : hs.len - copied;

		memcpy(h + copied, c->data, k);
		copied += k;
	}
	/* Field by field, in place: what is kept moves down over what is
	 * not, never ahead of what is still to be read. */
	for (start = 0; start < hs.len; start = end) {
		end = field_end(h, hs.len, start);
		if (ar_claims(h + start, end - start, id)) {
			any = true;
			continue;
		}
		memmove(h + kept, h + start, end - start);
		kept += end - start;
	}
	if (!any) {
		free(out);
		return NULL;
	}
	memcpy(h + kept, hs.last->data + hs.last_off, tail);
	out->len = (uint32_t)(kept + tail);
	out->cap = out->len;
	out->next = hs.last->next;
	return out;
}
