/*
 * auth.c - SPF, DKIM, the authentication rule and our headers (auth.h).
 *
 * Temporary failures: the rule never answers 5xx when a check failed
 * temporarily, because the failure may have hidden a pass; with neither
 * check passing and any of them temperror, the sender gets 451 4.7.26 and
 * retries. Only when every check gave a real answer does hard mode's 554
 * apply.
 *
 * Forged headers: an incoming Authentication-Results field naming our
 * authserv-id would read, downstream, as our own verdict; RFC 8601 5 says to
 * remove it. DKIM still verifies the message as the sender sent it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/auth.h"
#include "control/txrec.h"
#include "dataplane/smtp.h"

struct auth {
	struct spf_checker *spf;
	struct dkim_verifier *dkim;
};

struct auth *
auth_create(struct ub_ctx *ub, const char *hostname, uint32_t dns_timeout_ms,
	    char *err, size_t errlen)
{
	struct auth *a = calloc(1, sizeof(*a));
	struct spf_params sp = { .ub = ub, .receiver = hostname,
				 .dns_timeout_ms = dns_timeout_ms };
	struct dkim_params dp = { .ub = ub, .dns_timeout_ms = dns_timeout_ms,
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

void
auth_spf(struct auth *a, uint8_t family, const uint8_t *addr, const char *helo,
	 const char *mail_from, struct auth_spf *out)
{
	struct spf_query q = { .family = family == 6 ? AF_INET6 : AF_INET,
			       .helo = helo, .mail_from = mail_from };
	struct spf_answer ans;

	memcpy(q.addr, addr, 16);
	out->result = spf_check(a->spf, &q, &ans);
	out->kind = ans.identity_kind;
	snprintf(out->identity, sizeof(out->identity), "%s", ans.identity);
}

static void
dkim_run(struct auth *a, const struct smtp_chunk *msg, struct auth_verdict *v)
{
	struct dkim_job *job = dkim_job_begin(a->dkim, "smtpedge");
	unsigned i;

	v->ndkim = 0;
	if (!job) {
		v->temp = true;
		return;
	}
	for (; msg; msg = msg->next)
		dkim_job_feed(job, msg->data, msg->len);
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
auth_verify(struct auth *a, const struct smtp_chunk *msg,
	    const struct policy_rule *rule, uint8_t family, struct auth_verdict *v)
{
	v->dkim_pass = false;
	v->temp = v->spf.result == SPF_RES_TEMPERROR;
	dkim_run(a, msg, v);
	memset(&v->reply, 0, sizeof(v->reply));
	v->outcome = policy_auth(rule, v->spf.result == SPF_RES_PASS, v->dkim_pass,
				 v->temp, family, &v->reply);
}

const char *
auth_dkim_summary(const struct auth_verdict *v)
{
	static const enum dkim_outcome order[] = {
		DKIM_RES_PASS, DKIM_RES_TEMPERROR, DKIM_RES_FAIL, DKIM_RES_PERMERROR,
		DKIM_RES_NEUTRAL, DKIM_RES_POLICY,
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

static const char *
iprev_result(uint8_t ptr)
{
	switch (ptr) {
	case PTR_PASS: return "pass";
	case PTR_NONE: case PTR_MISMATCH: return "fail";
	default: return "temperror";
	}
}

size_t
auth_results_header(const char *authserv_id, const struct txrec *rec,
		    const struct auth_verdict *v, char *out, size_t n)
{
	char addr[INET6_ADDRSTRLEN], val[700];
	size_t off;
	unsigned i;

#define PUT(...) do { if (off < n) off += (size_t)snprintf(out + off, n - off, __VA_ARGS__); } while (0)
	off = 0;
	inet_ntop(rec->family == 6 ? AF_INET6 : AF_INET, rec->addr, addr, sizeof(addr));
	PUT("Authentication-Results: %s;\r\n\tiprev=%s policy.iprev=%s", authserv_id,
	    iprev_result(rec->ptr), addr);
	if (rec->ptr_name[0]) {
		put_value(val, sizeof(val), rec->ptr_name);
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
			char r[100];
			size_t k;

			for (k = 0; d->reason[k] && k + 1 < sizeof(r); k++)
				r[k] = (d->reason[k] == '(' || d->reason[k] == ')' ||
					(unsigned char)d->reason[k] < 0x20) ? ' ' : d->reason[k];
			r[k] = '\0';
			PUT(" (%s)", r);
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

/* Is this header field (name: value, unfolded or not) an
 * Authentication-Results claiming id? */
static bool
forged(const char *f, size_t len, const char *id)
{
	static const char name[] = "authentication-results";
	size_t i = sizeof(name) - 1, idlen = strlen(id);

	if (len < i + 1 || strncasecmp(f, name, i) != 0)
		return false;
	while (i < len && (f[i] == ' ' || f[i] == '\t'))
		i++;
	if (i >= len || f[i] != ':')
		return false;
	i++;
	/* CFWS before the authserv-id: spaces, folds and (comments). */
	for (;;) {
		while (i < len && (f[i] == ' ' || f[i] == '\t' || f[i] == '\r' || f[i] == '\n'))
			i++;
		if (i < len && f[i] == '(') {
			while (i < len && f[i] != ')')
				i++;
			i++;
			continue;
		}
		break;
	}
	if (i + idlen > len || strncasecmp(f + i, id, idlen) != 0)
		return false;
	i += idlen;
	return i == len || f[i] == ';' || f[i] == ' ' || f[i] == '\t' ||
	       f[i] == '\r' || f[i] == '(';
}

struct smtp_chunk *
auth_strip_forged(const char *id, const struct smtp_chunk *msg)
{
	const struct smtp_chunk *c, *last = NULL;
	size_t total = 0, hend = 0, tail = 0, kept = 0, i, start;
	char *hdr;
	struct smtp_chunk *out;
	bool any = false, found = false;
	uint8_t prev[3] = { 0 };

	/* Where the header block ends: after the first CRLF CRLF. */
	for (c = msg; c && !found; c = c->next) {
		for (i = 0; i < c->len; i++) {
			if (prev[0] == '\r' && prev[1] == '\n' && prev[2] == '\r' && c->data[i] == '\n') {
				hend = total + i + 1;
				tail = c->len - (i + 1);
				last = c;
				found = true;
				break;
			}
			prev[0] = prev[1];
			prev[1] = prev[2];
			prev[2] = c->data[i];
		}
		if (!found)
			total += c->len;
	}
	if (!found)
		return NULL;   /* no body: headers only, left alone */
	hdr = malloc(hend);
	if (!hdr)
		return NULL;
	for (c = msg, total = 0; total < hend; c = c->next) {
		size_t k = c->len < hend - total ? c->len : hend - total;

		memcpy(hdr + total, c->data, k);
		total += k;
	}
	out = malloc(sizeof(*out) + hend + tail);
	if (!out) {
		free(hdr);
		return NULL;
	}
	/* Fields: a line not starting with SP/HT begins one. */
	for (start = 0; start < hend;) {
		size_t end = start;

		do {
			while (end < hend && hdr[end] != '\n')
				end++;
			end++;
		} while (end < hend && (hdr[end] == ' ' || hdr[end] == '\t'));
		if (end > hend)
			end = hend;
		if (forged(hdr + start, end - start, id))
			any = true;
		else {
			memcpy(out->data + kept, hdr + start, end - start);
			kept += end - start;
		}
		start = end;
	}
	free(hdr);
	if (!any) {
		free(out);
		return NULL;
	}
	memcpy(out->data + kept, last->data + last->len - tail, tail);
	out->len = (uint32_t)(kept + tail);
	out->cap = out->len;
	out->next = last->next;
	return out;
}
