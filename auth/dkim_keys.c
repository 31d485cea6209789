/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim_keys.c — a message's DKIM key records: named from its header
 * block, fetched by the caller, served to libopendkim from memory.
 *
 * Why: no thread may wait on DNS. The names are known as soon as the
 * header block is in (each DKIM-Signature field's s= and d=), so the
 * caller's event loop fetches them while the rest of the message is dealt
 * with, and the verification that follows needs no DNS at all.
 *
 * Reading the fields as libopendkim does, by having libopendkim read them:
 * a scanner job (auth/dkim.c) feeds the header block through the
 * verifier's own splitter into a library handle and, at the end of the
 * headers, takes the signatures the library parsed, after the same
 * prescreen as the verification. Signatures it ignores (past
 * max_signatures, rsa-sha1) or found malformed name nothing; the others
 * name their s= and d= exactly as the library will ask for them. No
 * signature is checked and the body is not read, so this costs
 * microseconds on the caller's thread. A name missing from the set costs
 * only a temperror, never a wait; the fuzz target (tests/dkim/fuzz_dkim.c)
 * checks that the verifier never asks for a key the scan did not name.
 *
 * Serving: libopendkim's DNS layer is pluggable (start, wait, cancel) and
 * parses the raw DNS reply itself, so each answer is kept in wire format
 * and handed over as libunbound gave it; NXDOMAIN and an empty answer are
 * the library's "no key" (permerror). SERVFAIL, REFUSED, a DNSSEC-bogus
 * answer, a failed query and a timeout are failures the hooks report, as
 * the library's "key query failed" or "timed out" (temperror). The hooks
 * are per library, the set is per message: the job being verified names
 * its set in a thread-local pointer for the length of dkim_eom().
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <unbound.h>

#include "auth/dkim.h"
#include "auth/dkim_keys.h"

/* s=, "._domainkey.", d=: a DNS name is at most 253 characters. */
#define DKIM_KEY_NAME_MAX 254u

enum dkim_key_state {
	DKIM_KEY_PENDING, /* named, not answered */
	DKIM_KEY_ANSWER,  /* ans holds the reply */
	DKIM_KEY_FAILED,  /* no usable reply */
	DKIM_KEY_EXPIRED, /* no reply in time */
};

struct dkim_key {
	char name[DKIM_KEY_NAME_MAX];
	enum dkim_key_state state;
	unsigned char *ans;
	size_t len;
};

struct dkim_keys {
	struct dkim_job *scan; /* NULL once the scan ended */
	uint32_t max_signatures;
	unsigned n;
	struct dkim_key *key; /* max_signatures */
	uint32_t served, missing;
};

/* One lookup of the library, from its start hook to its cancel hook. */
struct dkim_keyq {
	int status; /* DKIM_DNS_SUCCESS, _ERROR or _EXPIRED */
	size_t len;
};

static __thread struct dkim_keys *dkim_keys_current;

struct dkim_keys *
dkim_keys_create(struct dkim_verifier *v)
{
	struct dkim_keys *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return NULL;
	k->max_signatures = dkim_verifier_max_signatures(v);
	k->key = calloc(k->max_signatures, sizeof(*k->key));
	k->scan = k->key != NULL && v != NULL ? dkim_job_scanner(v, k) : NULL;
	if (k->scan == NULL) {
		dkim_keys_free(k);
		errno = ENOMEM;
		return NULL;
	}
	return k;
}

struct dkim_keys *
dkim_keys_free(struct dkim_keys *k)
{
	unsigned i;

	if (k == NULL)
		return NULL;
	dkim_job_free(k->scan);
	for (i = 0; i < k->n; i++)
		free(k->key[i].ans);
	free(k->key);
	free(k);
	return NULL;
}

int
dkim_keys_feed(struct dkim_keys *k, const uint8_t *p, size_t n)
{
	if (k == NULL || k->scan == NULL)
		return 1;
	dkim_job_feed(k->scan, p, n);
	return dkim_job_scanned(k->scan) ? 1 : 0;
}

void
dkim_keys_scan_end(struct dkim_keys *k)
{
	if (k == NULL || k->scan == NULL)
		return;
	dkim_job_scan_end(k->scan);
	k->scan = dkim_job_free(k->scan);
}

unsigned
dkim_keys_count(const struct dkim_keys *k)
{
	return k != NULL ? k->n : 0;
}

const char *
dkim_keys_name(const struct dkim_keys *k, unsigned i)
{
	return k != NULL && i < k->n ? k->key[i].name : NULL;
}

uint32_t
dkim_keys_served(const struct dkim_keys *k)
{
	return k != NULL ? k->served : 0;
}

uint32_t
dkim_keys_missing(const struct dkim_keys *k)
{
	return k != NULL ? k->missing : 0;
}

/* ---- the scan ---------------------------------------------------------- */

/* The length of a name without its root dot. */
static size_t
dkim_name_len(const char *name)
{
	size_t len = strlen(name);

	return len > 0 && name[len - 1] == '.' ? len - 1 : len;
}

/* DNS names: in any case, with or without the root dot. */
static bool
dkim_name_same(const char *a, const char *b)
{
	size_t len = dkim_name_len(a);

	return dkim_name_len(b) == len && strncasecmp(a, b, len) == 0;
}

static void
dkim_keys_add(struct dkim_keys *k, const char *name)
{
	unsigned i;

	for (i = 0; i < k->n; i++)
		if (dkim_name_same(k->key[i].name, name))
			return;
	if (k->n >= k->max_signatures)
		return;
	snprintf(k->key[k->n].name, sizeof(k->key[k->n].name), "%s", name);
	k->key[k->n].state = DKIM_KEY_PENDING;
	k->n++;
}

void
dkim_keys_sig(struct dkim_keys *k, DKIM_SIGINFO *sig)
{
	const char *sel = (const char *)dkim_sig_getselector(sig);
	const char *dom = (const char *)dkim_sig_getdomain(sig);
	char name[DKIM_KEY_NAME_MAX];
	int w;

	/* ignored (over the bound, rsa-sha1) or found malformed: no key */
	if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_IGNORE) != 0 ||
	    dkim_sig_geterror(sig) != DKIM_SIGERROR_UNKNOWN || sel == NULL || dom == NULL ||
	    sel[0] == '\0' || dom[0] == '\0')
		return;
	w = snprintf(name, sizeof(name), "%s._domainkey.%s", sel, dom);
	if (w > 0 && (size_t)w < sizeof(name))
		dkim_keys_add(k, name);
}

/* ---- answers ----------------------------------------------------------- */

/* Which answers libopendkim may parse. */
static bool
dkim_answer_usable(const struct ub_result *res)
{
	if (res->bogus)
		return false;
	return res->rcode == ns_r_noerror || res->rcode == ns_r_nxdomain;
}

void
dkim_keys_answer(struct dkim_keys *k, unsigned i, int err, struct ub_result *res)
{
	struct dkim_key *key;

	if (k == NULL || i >= k->n || k->key[i].state != DKIM_KEY_PENDING) {
		ub_resolve_free(res);
		return;
	}
	key = &k->key[i];
	key->state = DKIM_KEY_FAILED;
	if (err == 0 && res != NULL && dkim_answer_usable(res) && res->answer_packet != NULL &&
	    res->answer_len > 0) {
		key->ans = malloc((size_t)res->answer_len);
		if (key->ans != NULL) {
			memcpy(key->ans, res->answer_packet, (size_t)res->answer_len);
			key->len = (size_t)res->answer_len;
			key->state = DKIM_KEY_ANSWER;
		}
	}
	ub_resolve_free(res);
}

void
dkim_keys_timeout(struct dkim_keys *k, unsigned i)
{
	if (k != NULL && i < k->n && k->key[i].state == DKIM_KEY_PENDING)
		k->key[i].state = DKIM_KEY_EXPIRED;
}

/* ---- libopendkim's DNS hooks ------------------------------------------- */

void
dkim_keys_enter(struct dkim_keys *k)
{
	dkim_keys_current = k;
}

void
dkim_keys_leave(void)
{
	dkim_keys_current = NULL;
}

static struct dkim_key *
dkim_keys_find(struct dkim_keys *k, const char *name)
{
	unsigned i;

	if (k == NULL)
		return NULL;
	for (i = 0; i < k->n; i++)
		if (dkim_name_same(k->key[i].name, name))
			return &k->key[i];
	return NULL;
}

static int
dkim_keys_start(void *srv, int type, unsigned char *name, unsigned char *buf, size_t buflen,
		void **qh)
{
	struct dkim_keys *k = dkim_keys_current;
	struct dkim_key *key = type == ns_t_txt ? dkim_keys_find(k, (const char *)name) : NULL;
	struct dkim_keyq *q;

	(void)srv;
	if (key == NULL || key->state == DKIM_KEY_PENDING) {
		if (k != NULL)
			k->missing++;
		return DKIM_DNS_ERROR;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return DKIM_DNS_ERROR;
	k->served++;
	q->status = DKIM_DNS_ERROR;
	if (key->state == DKIM_KEY_EXPIRED) {
		q->status = DKIM_DNS_EXPIRED;
	} else if (key->state == DKIM_KEY_ANSWER && key->len <= buflen) {
		memcpy(buf, key->ans, key->len);
		q->len = key->len;
		q->status = DKIM_DNS_SUCCESS;
	}
	*qh = q;
	return DKIM_DNS_SUCCESS;
}

static int
dkim_keys_wait(void *srv, void *qh, struct timeval *timeout, size_t *bytes, int *error, int *dnssec)
{
	struct dkim_keyq *q = qh;

	(void)srv;
	(void)timeout;
	if (q->status == DKIM_DNS_SUCCESS && bytes != NULL)
		*bytes = q->len;
	if (error != NULL)
		*error = 0;
	if (dnssec != NULL)
		*dnssec = DKIM_DNSSEC_UNKNOWN;
	return q->status;
}

static int
dkim_keys_cancel(void *srv, void *qh)
{
	(void)srv;
	free(qh);
	return DKIM_DNS_SUCCESS;
}

void
dkim_keys_attach(DKIM_LIB *lib)
{
	static char service; /* the hooks need none; the library wants one */

	(void)dkim_dns_set_query_service(lib, &service);
	dkim_dns_set_query_start(lib, dkim_keys_start);
	dkim_dns_set_query_waitreply(lib, dkim_keys_wait);
	dkim_dns_set_query_cancel(lib, dkim_keys_cancel);
	/* The defaults would res_ninit()/res_nclose() a service handle. */
	dkim_dns_set_init(lib, NULL);
	dkim_dns_set_close(lib, NULL);
	dkim_dns_set_nslist(lib, NULL);
	dkim_dns_set_config(lib, NULL);
	dkim_dns_set_trustanchor(lib, NULL);
}
