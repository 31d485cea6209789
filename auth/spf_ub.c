/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/spf_ub.c — libspf2's DNS layer over the shared libunbound context.
 *
 * Why a layer of our own: libspf2's resolver layers each bring their own
 * resolver and cache; smtpedge has one (libunbound), shared by rDNS, SPF
 * and DKIM.  And libspf2 1.2.10 counts DNS terms per include level and has
 * no void-lookup limit, so the limits of RFC 7208 §4.6.4 are enforced here,
 * where every lookup of a check passes.  One spf_ub_check lives for one
 * check_host() evaluation; nothing in it is shared between threads.
 *
 * Terms are counted from the lookups libspf2 makes: each lookup is a new
 * term except the address lookups that an mx or ptr term makes for the
 * names it got back, which libspf2 issues in order right after the MX or
 * PTR lookup (the "follow" list below).  include and redirect are counted
 * when their record is fetched.  Lookups made for the explanation, after
 * the result is known, count for nothing (§6.2, test exp-void).
 *
 * The layer never waits for DNS.  It answers from the check's own table
 * of answers, filled by the caller between passes (spf.c).  A lookup whose
 * answer is not in the table yet is entered there as a query to issue,
 * and the pass is marked incomplete; the lookup is then answered with a
 * placeholder (no data, or an include record that matches nothing) so
 * that libspf2 goes on and the pass finds the lookups that do not depend
 * on it, to be issued at the same time.  An incomplete pass never yields
 * a result; the pass that does is one in which every lookup was answered
 * from the table, so it is check_host() on those answers, limits and all,
 * exactly as a blocking evaluation would have made it.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <unbound.h>

#include "auth/spf_syntax.h"
#include "auth/spf_ub.h"

#define SPF_UB_NAME_MAX        1025 /* a presentation name, escapes included */
/* §4.6.4 asks for a bound on the whole of check_host(), of at least 20 s;
 * past it every lookup not yet answered fails, which makes the result
 * temperror. */
#define SPF_UB_CHECK_BUDGET_MS 20000
/* Distinct lookups of one check.  A complete evaluation makes at most
 * about 140 (11 records, 10 terms, 10 names for each mx or ptr term, the
 * explanation); placeholders can add a few more.  Past it a lookup fails. */
#define SPF_UB_MAX_QUERIES     256

enum spf_ub_outcome {
	SPF_UB_DATA,
	SPF_UB_NODATA,
	SPF_UB_NXDOMAIN,
	SPF_UB_FAIL,    /* timeout, SERVFAIL, REFUSED, resolver error */
	SPF_UB_MISSING, /* not answered yet: the pass is incomplete */
};

/* One lookup of the check and, once it is in, its answer. */
struct spf_ub_entry {
	char *name;
	int type;
	enum spf_ub_query_state state;
	enum spf_ub_outcome out;
	struct ub_result *res; /* SPF_UB_DATA: the records */
	const char *problem;   /* SPF_UB_FAIL: why */
};

struct spf_ub_check {
	SPF_dns_server_t layer; /* layer.hook points back here */
	int64_t check_deadline; /* monotonic ms: the whole evaluation */
	int family;
	struct in_addr v4;
	struct in6_addr v6;
	struct spf_ub_entry *q;
	unsigned nq, cap;
	/* per pass, from here down (spf_ub_check_begin_pass) */
	SPF_request_t *req;
	int records; /* SPF records fetched so far */
	int terms;
	int voids;
	bool permerror; /* a limit or a syntax fault */
	bool exp_phase; /* inside get_exp: lookups count for nothing */
	bool missing;   /* a lookup had no answer yet */
	const char *dns_problem;
	char why[160];
	/* the names an mx or ptr term will look up next, in order */
	struct {
		char names[SPF_UB_MAX_NAMES][256];
		int n, next;
		int cidr0; /* the mx term's /0 lengths (4, 6, 46) */
		bool from_ptr;
	} follow;
	char cidr0_key[SPF_SYNTAX_CIDR0_KEY_LEN + 1]; /* see spf_syntax.h */
};

static int64_t
spf_ub_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum spf_ub_outcome
spf_ub_classify(struct spf_ub_entry *e, int err, const struct ub_result *res)
{
	if (err != 0 || res == NULL) {
		e->problem = "resolver error";
		return SPF_UB_FAIL;
	}
	if (res->rcode == ns_r_nxdomain || res->nxdomain)
		return SPF_UB_NXDOMAIN;
	if (res->rcode != ns_r_noerror) {
		e->problem = res->rcode == ns_r_servfail ? "SERVFAIL" : "DNS error";
		return SPF_UB_FAIL;
	}
	return res->havedata ? SPF_UB_DATA : SPF_UB_NODATA;
}

/* The entry for name/type, added (to be issued) when there is none; NULL
 * when the check has made too many lookups or memory ran out. */
static struct spf_ub_entry *
spf_ub_entry(struct spf_ub_check *c, const char *name, int type)
{
	struct spf_ub_entry *e;
	unsigned i;

	for (i = 0; i < c->nq; i++)
		if (c->q[i].type == type && strcasecmp(c->q[i].name, name) == 0)
			return &c->q[i];
	if (c->nq == SPF_UB_MAX_QUERIES)
		return NULL;
	if (c->nq == c->cap) {
		unsigned cap = c->cap ? c->cap * 2 : 16;

		e = realloc(c->q, cap * sizeof(*e));
		if (e == NULL)
			return NULL;
		c->q = e;
		c->cap = cap;
	}
	e = &c->q[c->nq];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (e->name == NULL)
		return NULL;
	e->type = type;
	e->state = SPF_UB_Q_NEW;
	c->nq++;
	return e;
}

/* name/type from the check's answers.  *res (DATA only) stays the
 * check's.  MISSING marks the pass incomplete. */
static enum spf_ub_outcome
spf_ub_resolve(struct spf_ub_check *c, const char *name, int type, const struct ub_result **res)
{
	struct spf_ub_entry *e = spf_ub_entry(c, name, type);

	*res = NULL;
	if (e == NULL) {
		c->dns_problem = "too many lookups";
		return SPF_UB_FAIL;
	}
	if (e->state != SPF_UB_Q_ANSWERED) {
		/* past the budget nothing more is waited for */
		if (spf_ub_now_ms() >= c->check_deadline) {
			c->dns_problem = "SPF check took too long";
			return SPF_UB_FAIL;
		}
		c->missing = true;
		return SPF_UB_MISSING;
	}
	if (e->out == SPF_UB_FAIL)
		c->dns_problem = e->problem;
	*res = e->res;
	return e->out;
}

/* --- answers in libspf2's form --- */

static SPF_dns_rr_t *
spf_ub_rr(struct spf_ub_check *c, const char *domain, ns_type type, SPF_dns_stat_t herrno)
{
	/* libspf2 itself aborts when a layer returns NULL: there is no
	 * way to report ENOMEM through this interface. */
	return SPF_dns_rr_new_init(&c->layer, domain, type, 0, herrno);
}

/* An uncompressed wire name at rdata[*off] into presentation text. */
static bool
spf_ub_wire_name(const uint8_t *d, size_t n, size_t off, char *out, size_t out_len)
{
	size_t o = 0, l, i;
	char esc[6];

	out[0] = '\0';
	while (off < n && d[off] != 0) {
		l = d[off++];
		if (l > 63 || off + l > n)
			return false;
		if (o > 0) {
			if (o + 2 > out_len)
				return false;
			out[o++] = '.';
		}
		for (i = 0; i < l; i++) {
			uint8_t ch = d[off + i];
			size_t el;

			if (ch == '.' || ch == '\\')
				el = (size_t)snprintf(esc, sizeof(esc), "\\%c", ch);
			else if (ch < 0x21 || ch > 0x7e)
				el = (size_t)snprintf(esc, sizeof(esc), "\\%03u", ch);
			else
				el = (size_t)snprintf(esc, sizeof(esc), "%c", ch);
			if (o + el + 1 > out_len)
				return false;
			memcpy(out + o, esc, el);
			o += el;
		}
		off += l;
	}
	out[o] = '\0';
	return off < n;
}

/* TXT rdata: its character-strings glued together (§3.3).  Returns the
 * length, or -1 if the rdata is malformed.  out may be NULL to measure. */
static long
spf_ub_txt_join(const uint8_t *d, size_t n, char *out)
{
	size_t off = 0, total = 0, l;

	while (off < n) {
		l = d[off++];
		if (off + l > n)
			return -1;
		if (out != NULL)
			memcpy(out + total, d + off, l);
		total += l;
		off += l;
	}
	if (out != NULL)
		out[total] = '\0';
	return (long)total;
}

static bool
spf_ub_same_name(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

static void
spf_ub_force_permerror(struct spf_ub_check *c, const char *why)
{
	if (c->permerror)
		return;
	c->permerror = true;
	snprintf(c->why, sizeof(c->why), "%s", why);
}

/* A new DNS-querying term begins.  False when it is one too many. */
static bool
spf_ub_new_term(struct spf_ub_check *c)
{
	c->follow.n = 0;
	c->follow.next = 0;
	if (c->permerror)
		return false;
	if (++c->terms > SPF_UB_MAX_TERMS) {
		spf_ub_force_permerror(c, "more than 10 DNS-querying terms");
		return false;
	}
	return true;
}

/* A term's lookup came back empty.  False when it is one too many. */
static bool
spf_ub_void(struct spf_ub_check *c)
{
	if (++c->voids > SPF_UB_MAX_VOIDS) {
		spf_ub_force_permerror(c, "more than 2 void lookups");
		return false;
	}
	return true;
}

static void
spf_ub_fill_addresses(struct spf_ub_check *c, SPF_dns_rr_t *rr, const struct ub_result *r,
		      ns_type type, int cidr0)
{
	size_t want = type == ns_t_a ? 4 : 16;
	bool any_v4 = type == ns_t_a && (cidr0 == 4 || cidr0 == 46) && c->family == AF_INET;
	bool any_v6 = type == ns_t_aaaa && (cidr0 == 6 || cidr0 == 46) && c->family == AF_INET6;
	int i, k = 0;

	for (i = 0; r->data[i] != NULL; i++) {
		if ((size_t)r->len[i] != want)
			continue;
		if (SPF_dns_rr_buf_realloc(rr, k, want) != SPF_E_SUCCESS)
			break;
		/* a /0 term matches any address of its family: show libspf2
		 * the client's own address, which its /32 or /128 matches */
		if (any_v4)
			memcpy(&rr->rr[k]->a, &c->v4, 4);
		else if (any_v6)
			memcpy(&rr->rr[k]->aaaa, &c->v6, 16);
		else
			memcpy(type == ns_t_a ? (void *)&rr->rr[k]->a : (void *)&rr->rr[k]->aaaa,
			       r->data[i], want);
		k++;
	}
	rr->num_rr = k;
}

static void
spf_ub_fill_names(struct spf_ub_check *c, SPF_dns_rr_t *rr, const struct ub_result *r, ns_type type,
		  bool track, int cidr0)
{
	char name[SPF_UB_NAME_MAX];
	size_t skip = type == ns_t_mx ? 2 : 0;
	int i, k = 0;

	for (i = 0; r->data[i] != NULL; i++) {
		/* §4.6.4: at most 10 PTR names are looked at; libspf2 would
		 * call an eleventh a permerror, so it never sees one */
		if (type == ns_t_ptr && k == SPF_UB_MAX_NAMES)
			break;
		if ((size_t)r->len[i] <= skip ||
		    !spf_ub_wire_name((const uint8_t *)r->data[i], (size_t)r->len[i], skip, name,
				      sizeof(name)))
			continue;
		if (SPF_dns_rr_buf_realloc(rr, k, strlen(name) + 1) != SPF_E_SUCCESS)
			break;
		strcpy(type == ns_t_mx ? rr->rr[k]->mx : rr->rr[k]->ptr, name);
		if (track && k < SPF_UB_MAX_NAMES && strlen(name) < 256)
			strcpy(c->follow.names[c->follow.n++], name);
		k++;
	}
	rr->num_rr = k;
	if (track) {
		c->follow.cidr0 = cidr0;
		c->follow.from_ptr = type == ns_t_ptr;
	}
}

static void
spf_ub_fill_txt(SPF_dns_rr_t *rr, const struct ub_result *r)
{
	int i, k = 0;
	long l;

	for (i = 0; r->data[i] != NULL; i++) {
		l = spf_ub_txt_join((const uint8_t *)r->data[i], (size_t)r->len[i], NULL);
		if (l < 0 || SPF_dns_rr_buf_realloc(rr, k, (size_t)l + 1) != SPF_E_SUCCESS)
			continue;
		spf_ub_txt_join((const uint8_t *)r->data[i], (size_t)r->len[i], rr->rr[k]->txt);
		k++;
	}
	rr->num_rr = k;
}

/* §7.3: an expanded name longer than SPF_SYNTAX_NAME_MAX loses labels on the left
 * until it fits.  Returns a pointer into name. */
static const char *
spf_ub_fit(const char *name)
{
	size_t n = strlen(name);
	const char *dot;

	if (n > 0 && name[n - 1] == '.')
		n--;
	while (n > SPF_SYNTAX_NAME_MAX && (dot = strchr(name, '.')) != NULL) {
		n -= (size_t)(dot + 1 - name);
		name = dot + 1;
	}
	return name;
}

static int
spf_ub_count(const struct ub_result *r)
{
	int n = 0;

	while (r->data[n] != NULL)
		n++;
	return n;
}

/* SPF_dns_lookup_t: every lookup libspf2 makes, bar SPF records and exp. */
static SPF_dns_rr_t *
spf_ub_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type, int should_cache)
{
	struct spf_ub_check *c = layer->hook;
	char name[SPF_UB_NAME_MAX];
	size_t base;
	int cidr0 = spf_syntax_cidr0_tag(domain, c->cidr0_key, &base);
	bool follows = false, primary;
	const char *fitted;
	const struct ub_result *r = NULL;
	enum spf_ub_outcome out;
	SPF_dns_rr_t *rr;

	(void)should_cache; /* unbound's cache is the cache */
	if (base >= sizeof(name))
		base = sizeof(name) - 1;
	memcpy(name, domain, base);
	name[base] = '\0';
	fitted = spf_ub_fit(name);
	if (fitted != name)
		memmove(name, fitted, strlen(fitted) + 1);

	if ((type == ns_t_a || type == ns_t_aaaa) && c->follow.next < c->follow.n &&
	    spf_ub_same_name(name, c->follow.names[c->follow.next])) {
		follows = true;
		cidr0 = c->follow.cidr0;
		c->follow.next++;
	}
	primary = !follows && !c->exp_phase;
	if (primary && !spf_ub_new_term(c))
		return spf_ub_rr(c, domain, type, TRY_AGAIN); /* stop libspf2 */

	/* §4.8, §5: a target that cannot be queried does not exist */
	if (!spf_syntax_query_name_ok(name))
		out = SPF_UB_NXDOMAIN;
	else
		out = spf_ub_resolve(c, name, type, &r);

	switch (out) {
	case SPF_UB_MISSING:
		/* a placeholder, so the pass goes on to the other lookups */
		return spf_ub_rr(c, domain, type, NO_DATA);
	case SPF_UB_FAIL:
		/* §5.5: a failed address lookup of a PTR name skips that name */
		if (follows && c->follow.from_ptr)
			return spf_ub_rr(c, domain, type, NO_DATA);
		return spf_ub_rr(c, domain, type, TRY_AGAIN);
	case SPF_UB_NXDOMAIN:
	case SPF_UB_NODATA:
		if (primary && !spf_ub_void(c))
			return spf_ub_rr(c, domain, type, TRY_AGAIN);
		return spf_ub_rr(c, domain, type,
				 out == SPF_UB_NXDOMAIN ? HOST_NOT_FOUND : NO_DATA);
	case SPF_UB_DATA: break;
	}
	/* §4.6.4: an mx term whose name has more than 10 MX records is a
	 * permerror, whichever 10 the resolver happens to list first */
	if (type == ns_t_mx && primary && spf_ub_count(r) > SPF_UB_MAX_NAMES) {
		spf_ub_force_permerror(c, "more than 10 MX records");
		return spf_ub_rr(c, domain, type, TRY_AGAIN);
	}
	rr = spf_ub_rr(c, domain, type, NETDB_SUCCESS);
	if (rr == NULL)
		return NULL;
	switch (type) {
	case ns_t_a:
	case ns_t_aaaa: spf_ub_fill_addresses(c, rr, r, type, cidr0); break;
	case ns_t_mx:
	case ns_t_ptr: spf_ub_fill_names(c, rr, r, type, primary, cidr0); break;
	case ns_t_txt: spf_ub_fill_txt(rr, r); break;
	default: break;
	}
	if (rr->num_rr == 0)
		rr->herrno = NO_DATA;
	return rr;
}

/* --- SPF records: fetch, select (§4.5), check, compile --- */

static SPF_errcode_t
spf_ub_record_error(SPF_response_t *resp, SPF_result_t result, SPF_errcode_t code,
		    const char *domain)
{
	resp->result = result;
	resp->reason = SPF_REASON_FAILURE;
	resp->err = code;
	return SPF_response_add_error(
		resp, code, "SPF record of '%s': %s", domain, SPF_strresult(result));
}

/* Pick the one v=spf1 record out of a TXT answer.  Returns the number of
 * candidates; the text of the last one is malloc'ed into *text. */
static int
spf_ub_select(const struct ub_result *r, char **text, size_t *len)
{
	int i, found = 0;
	long l;
	char *buf;

	*text = NULL;
	for (i = 0; r->data[i] != NULL; i++) {
		l = spf_ub_txt_join((const uint8_t *)r->data[i], (size_t)r->len[i], NULL);
		if (l < 6)
			continue;
		buf = malloc((size_t)l + 1);
		if (buf == NULL) {
			free(*text);
			*text = NULL;
			return -1;
		}
		spf_ub_txt_join((const uint8_t *)r->data[i], (size_t)r->len[i], buf);
		if (strncasecmp(buf, "v=spf1", 6) != 0 || (l > 6 && buf[6] != ' ')) {
			free(buf);
			continue;
		}
		found++;
		free(*text);
		*text = buf;
		*len = (size_t)l;
	}
	return found;
}

static SPF_errcode_t
spf_ub_get_spf(SPF_server_t *server, SPF_request_t *req, SPF_response_t *resp,
	       SPF_record_t **recordp)
{
	struct spf_ub_check *c = server->resolver->hook;
	const char *domain = spf_ub_fit(req->cur_dom);
	bool top = c->records++ == 0;
	const struct ub_result *r = NULL;
	enum spf_ub_outcome out;
	char *text = NULL, *rewrite;
	char problem[128];
	size_t len = 0, rlen;
	int n;
	enum spf_syntax_status st;
	SPF_errcode_t err;

	*recordp = NULL;
	/* include and redirect are DNS-querying terms; the first fetch is
	 * the check itself */
	if (!top && !spf_ub_new_term(c))
		return spf_ub_record_error(resp, SPF_RESULT_PERMERROR, SPF_E_BIG_DNS, domain);
	if (!spf_syntax_query_name_ok(domain))
		out = SPF_UB_NXDOMAIN;
	else
		out = spf_ub_resolve(c, domain, ns_t_txt, &r);
	if (out == SPF_UB_MISSING && !top) {
		/* a placeholder that matches nothing: the pass goes on past
		 * the include (or ends at the redirect) */
		err = SPF_record_compile(server, resp, recordp, "v=spf1");
		if (err == SPF_E_SUCCESS)
			return err;
		if (*recordp != NULL)
			SPF_record_free(*recordp);
		*recordp = NULL;
	}
	if (out == SPF_UB_FAIL || out == SPF_UB_MISSING)
		return spf_ub_record_error(resp, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR, domain);
	if (out != SPF_UB_DATA) {
		if (!top && !spf_ub_void(c))
			return spf_ub_record_error(
				resp, SPF_RESULT_PERMERROR, SPF_E_BIG_DNS, domain);
		return spf_ub_record_error(resp, SPF_RESULT_NONE, SPF_E_NOT_SPF, domain);
	}
	n = spf_ub_select(r, &text, &len);
	/* out of memory is temporary; libspf2 makes any include error but
	 * SPF_E_DNS_ERROR a permerror, so that is the code to give */
	if (n < 0)
		return spf_ub_record_error(resp, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR, domain);
	if (n == 0)
		return spf_ub_record_error(resp, SPF_RESULT_NONE, SPF_E_NOT_SPF, domain);
	if (n > 1) {
		free(text);
		spf_ub_force_permerror(c, "more than one SPF record");
		return spf_ub_record_error(
			resp, SPF_RESULT_PERMERROR, SPF_E_MULTIPLE_RECORDS, domain);
	}
	rlen = len * 4 + 512;
	rewrite = malloc(rlen);
	if (rewrite == NULL) {
		free(text);
		return spf_ub_record_error(resp, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR, domain);
	}
	st = spf_syntax_record(text, len, c->cidr0_key, rewrite, rlen, problem, sizeof(problem));
	free(text);
	if (st != SPF_SYNTAX_OK) {
		char why[160];

		free(rewrite);
		snprintf(why, sizeof(why), "record syntax: %s",
			 st == SPF_SYNTAX_BAD ? problem : "too long");
		spf_ub_force_permerror(c, why);
		return spf_ub_record_error(resp, SPF_RESULT_PERMERROR, SPF_E_SYNTAX, domain);
	}
	err = SPF_record_compile(server, resp, recordp, rewrite);
	free(rewrite);
	if (err != SPF_E_SUCCESS) {
		if (*recordp != NULL)
			SPF_record_free(*recordp);
		*recordp = NULL;
		spf_ub_force_permerror(c, "libspf2 could not compile the record");
		return spf_ub_record_error(resp, SPF_RESULT_PERMERROR, err, domain);
	}
	return SPF_E_SUCCESS;
}

/* --- explanations (§6.2) --- */

static SPF_errcode_t
spf_ub_expand(SPF_server_t *server, SPF_request_t *req, SPF_macro_t *mac, char **bufp,
	      size_t *buflenp)
{
	SPF_response_t *scratch = SPF_response_new(req);
	SPF_errcode_t err;

	if (scratch == NULL)
		return SPF_E_NO_MEMORY;
	err = SPF_record_expand_data(
		server, req, scratch, (SPF_data_t *)((char *)mac + sizeof(*mac)), mac->macro_len,
		bufp, buflenp);
	SPF_response_free(scratch);
	return err;
}

static bool
spf_ub_exp_text(struct spf_ub_check *c, const char *domain, char **text)
{
	const struct ub_result *r = NULL;
	long l;
	int i;

	*text = NULL;
	if (!spf_syntax_query_name_ok(domain) ||
	    spf_ub_resolve(c, domain, ns_t_txt, &r) != SPF_UB_DATA)
		return false;
	/* exactly one TXT record, visible ASCII and spaces only */
	if (r->data[0] == NULL || r->data[1] != NULL)
		goto fail;
	l = spf_ub_txt_join((const uint8_t *)r->data[0], (size_t)r->len[0], NULL);
	if (l < 0 || (*text = malloc((size_t)l + 1)) == NULL)
		goto fail;
	spf_ub_txt_join((const uint8_t *)r->data[0], (size_t)r->len[0], *text);
	for (i = 0; i < l; i++)
		if ((unsigned char)(*text)[i] < 0x20 || (unsigned char)(*text)[i] > 0x7e)
			goto fail;
	return true;
fail:
	free(*text);
	*text = NULL;
	return false;
}

/* libspf2's macro compiler reads a space in explanation text as the end of
 * a %-escape (it was written for terms); "%_" is the same space, spelt the
 * way it understands.  Takes text, returns the new string (NULL: ENOMEM). */
static char *
spf_ub_exp_spaces(char *text)
{
	size_t n = 0, o = 0, i;
	char *out;

	for (i = 0; text[i] != '\0'; i++)
		n += text[i] == ' ' ? 2 : 1;
	out = malloc(n + 1);
	if (out != NULL) {
		for (i = 0; text[i] != '\0'; i++) {
			if (text[i] == ' ') {
				out[o++] = '%';
				out[o++] = '_';
			} else {
				out[o++] = text[i];
			}
		}
		out[o] = '\0';
	}
	free(text);
	return out;
}

static SPF_errcode_t
spf_ub_explain(struct spf_ub_check *c, SPF_server_t *server, const char *domain, char **bufp,
	       size_t *buflenp)
{
	SPF_response_t *scratch;
	SPF_macro_t *mac = NULL;
	char *text;
	SPF_errcode_t err = SPF_E_NOT_SPF;

	if (c->req == NULL)
		return SPF_E_NOT_CONFIG;
	if (spf_ub_exp_text(c, spf_ub_fit(domain), &text)) {
		text = spf_ub_exp_spaces(text);
		scratch = text != NULL ? SPF_response_new(c->req) : NULL;
		if (scratch != NULL)
			err = SPF_record_compile_macro(server, scratch, &mac, text);
		SPF_response_free(scratch);
		free(text);
		if (err == SPF_E_SUCCESS && mac != NULL) {
			err = spf_ub_expand(server, c->req, mac, bufp, buflenp);
			SPF_macro_free(mac);
			if (err == SPF_E_SUCCESS)
				return err;
		} else if (mac != NULL) {
			SPF_macro_free(mac);
		}
	}
	/* any trouble with exp= means "as if no exp= was given" (§6.2) */
	if (server->explanation == NULL)
		return SPF_E_NOT_CONFIG;
	return spf_ub_expand(server, c->req, server->explanation, bufp, buflenp);
}

/* SPF_dns_get_exp_t.  libspf2 explains every fail, softfail and neutral,
 * also those of an include in the middle of the evaluation: so the
 * explanation's own lookups are exempt from the limits only while it is
 * being made (§6.2, §4.6.4). */
static SPF_errcode_t
spf_ub_get_exp(SPF_server_t *server, const char *domain, char **bufp, size_t *buflenp)
{
	struct spf_ub_check *c = server->resolver->hook;
	bool was = c->exp_phase;
	SPF_errcode_t err;

	c->exp_phase = true;
	err = spf_ub_explain(c, server, domain, bufp, buflenp);
	c->exp_phase = was;
	return err;
}

/* --- the check --- */

/* The check's /0 key: 64 random bits, so no name from outside ends in it. */
static void
spf_ub_new_key(char key[SPF_SYNTAX_CIDR0_KEY_LEN + 1])
{
	static atomic_uint_fast64_t fallback;
	uint64_t v;
	struct timespec ts;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
		/* no entropy yet (early boot): unpredictable enough, and the
		 * counter keeps two checks apart */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		v = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)key ^
		    (atomic_fetch_add(&fallback, 1) * 0x9e3779b97f4a7c15ull);
	}
	snprintf(key, SPF_SYNTAX_CIDR0_KEY_LEN + 1, "%016llx", (unsigned long long)v);
}

struct spf_ub_check *
spf_ub_check_create(const struct spf_ub_params *params)
{
	struct spf_ub_check *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->check_deadline = spf_ub_now_ms() + SPF_UB_CHECK_BUDGET_MS;
	c->family = params->family;
	c->v4 = params->v4;
	c->v6 = params->v6;
	spf_ub_new_key(c->cidr0_key);
	/* destroy == NULL: libspf2 leaves the layer to us */
	c->layer.destroy = NULL;
	c->layer.lookup = spf_ub_lookup;
	c->layer.get_spf = spf_ub_get_spf;
	c->layer.get_exp = spf_ub_get_exp;
	c->layer.add_cache = NULL;
	c->layer.layer_below = NULL;
	c->layer.name = "smtpedge-unbound";
	c->layer.debug = 0;
	c->layer.hook = c;
	return c;
}

void
spf_ub_check_destroy(struct spf_ub_check *check)
{
	unsigned i;

	if (check == NULL)
		return;
	for (i = 0; i < check->nq; i++) {
		free(check->q[i].name);
		ub_resolve_free(check->q[i].res);
	}
	free(check->q);
	free(check);
}

void
spf_ub_check_begin_pass(struct spf_ub_check *check)
{
	struct spf_ub_check *c = check;

	c->req = NULL;
	c->records = 0;
	c->terms = 0;
	c->voids = 0;
	c->permerror = false;
	c->exp_phase = false;
	c->missing = false;
	c->dns_problem = NULL;
	c->why[0] = '\0';
	c->follow.n = 0;
	c->follow.next = 0;
}

bool
spf_ub_check_incomplete(const struct spf_ub_check *check)
{
	return check->missing;
}

unsigned
spf_ub_check_nqueries(const struct spf_ub_check *check)
{
	return check->nq;
}

enum spf_ub_query_state
spf_ub_check_query(const struct spf_ub_check *check, unsigned i, const char **name, int *type)
{
	if (i >= check->nq)
		return SPF_UB_Q_ANSWERED;
	if (name != NULL)
		*name = check->q[i].name;
	if (type != NULL)
		*type = check->q[i].type;
	return check->q[i].state;
}

void
spf_ub_check_issued(struct spf_ub_check *check, unsigned i)
{
	if (i < check->nq && check->q[i].state == SPF_UB_Q_NEW)
		check->q[i].state = SPF_UB_Q_ISSUED;
}

void
spf_ub_check_answer(struct spf_ub_check *check, unsigned i, int err, struct ub_result *res)
{
	struct spf_ub_entry *e;

	if (i >= check->nq || check->q[i].state == SPF_UB_Q_ANSWERED) {
		ub_resolve_free(res);
		return;
	}
	e = &check->q[i];
	e->out = spf_ub_classify(e, err, res);
	if (e->out == SPF_UB_DATA)
		e->res = res;
	else
		ub_resolve_free(res);
	e->state = SPF_UB_Q_ANSWERED;
}

void
spf_ub_check_failed(struct spf_ub_check *check, unsigned i, const char *problem)
{
	if (i >= check->nq || check->q[i].state == SPF_UB_Q_ANSWERED)
		return;
	check->q[i].out = SPF_UB_FAIL;
	check->q[i].problem = problem;
	check->q[i].state = SPF_UB_Q_ANSWERED;
}

uint32_t
spf_ub_check_query_timeout(const struct spf_ub_check *check, uint32_t timeout_ms)
{
	int64_t left = check->check_deadline - spf_ub_now_ms();

	if (left <= 0)
		return 0;
	return left < (int64_t)timeout_ms ? (uint32_t)left : timeout_ms;
}

SPF_dns_server_t *
spf_ub_check_layer(struct spf_ub_check *check)
{
	return &check->layer;
}

void
spf_ub_check_set_request(struct spf_ub_check *check, SPF_request_t *req)
{
	check->req = req;
}

bool
spf_ub_check_forced_permerror(const struct spf_ub_check *check, const char **why)
{
	if (why != NULL)
		*why = check->why;
	return check->permerror;
}

const char *
spf_ub_check_dns_problem(const struct spf_ub_check *check)
{
	return check->dns_problem;
}
