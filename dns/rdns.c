/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns.c — forward-confirmed reverse DNS, asynchronous, on dns/dnsq
 * (see rdns.h for the check itself).
 *
 * A lookup is a slot of a pool allocated at create, with room for its PTR
 * query and its RDNS_MAX_NAMES forward queries: nothing is allocated per
 * lookup by us (libunbound allocates its answers; we free them).
 *
 * The queries go out through dnsq, in a lane of their own, and their
 * answers come back through dnsq's callback on the owner thread, from the
 * dnsq_process() that the event loop calls anyway: dnsq already hands back
 * what other threads' ub_process() took out, and its withdrawal waits for
 * an answer already on its way, so here a withdrawn query is simply gone.
 * Every query of a lookup carries the lookup's own deadline (its start
 * plus timeout_ms), so the deadline is dnsq's: the first query of a lookup
 * to time out answers TEMPERROR and withdraws the others.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

#include "dns/dnsq.h"
#include "dns/rdns.h"
#include "dns/rdns_cache.h"
#include "dns/rdns_name.h"

#define RDNS_DEFAULT_TIMEOUT_MS 5000

enum rdns_state {
	RDNS_S_FREE,    /* on the free list */
	RDNS_S_PTR,     /* waiting for the PTR answer */
	RDNS_S_FORWARD, /* waiting for the A/AAAA answers of the names */
};

struct rdns_lookup;

struct rdns_query {
	struct rdns_lookup *lookup; /* fixed at create: the callback's way in */
	uint64_t handle;            /* dnsq's while out, else 0 */
	uint8_t index;              /* 0: the PTR; 1 + i: PTR name i */
};

struct rdns_lookup {
	struct rdns *r;           /* fixed at create */
	struct rdns_lookup *next; /* free list */
	uint8_t state;            /* enum rdns_state */
	uint8_t family;
	uint8_t addr[16];
	bool fwd_temp; /* a forward lookup failed */
	rdns_done_fn done;
	void *arg;
	uint64_t start_us;
	struct ub_result *ptr; /* the PTR answer, for the names */
	uint32_t fwd_left;     /* forward answers awaited */
	int ttl_ptr, ttl_fwd;  /* bounds for the result cache */
	struct rdns_query q[1 + RDNS_MAX_NAMES];
};

struct rdns {
	struct dnsq *dnsq;
	unsigned lane;
	uint32_t timeout_ms;
	uint32_t max_names, max_inflight, cache_ttl_s;
	struct rdns_cache *cache;
	struct rdns_lookup *pool;
	struct rdns_lookup *free; /* singly linked through next */
	uint32_t inflight;
	_Atomic uint64_t counters[RDNS_C__COUNT];
};

static const char *const rdns_counter_names[RDNS_C__COUNT] = {
	[RDNS_C_LOOKUPS] = "lookups",
	[RDNS_C_CACHE_HITS] = "cache_hits",
	[RDNS_C_PASS] = "pass",
	[RDNS_C_NONE] = "none",
	[RDNS_C_MISMATCH] = "mismatch",
	[RDNS_C_TEMPERROR] = "temperror",
	[RDNS_C_TIMEOUTS] = "timeouts",
	[RDNS_C_CANCELLED] = "cancelled",
	[RDNS_C_BUSY] = "busy",
	[RDNS_C_LAT_1MS] = "latency_lt_1ms",
	[RDNS_C_LAT_2MS] = "latency_lt_2ms",
	[RDNS_C_LAT_5MS] = "latency_lt_5ms",
	[RDNS_C_LAT_10MS] = "latency_lt_10ms",
	[RDNS_C_LAT_20MS] = "latency_lt_20ms",
	[RDNS_C_LAT_50MS] = "latency_lt_50ms",
	[RDNS_C_LAT_100MS] = "latency_lt_100ms",
	[RDNS_C_LAT_200MS] = "latency_lt_200ms",
	[RDNS_C_LAT_500MS] = "latency_lt_500ms",
	[RDNS_C_LAT_1000MS] = "latency_lt_1000ms",
	[RDNS_C_LAT_SLOW] = "latency_ge_1000ms",
};

/* Upper bounds of the latency buckets, RDNS_C_LAT_1MS onwards. */
static const uint32_t rdns_latency_bounds_us[] = {
	1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000,
};

static const struct {
	const char *name;
	enum rdns_counter_id counter;
} rdns_results[] = {
	[RDNS_PASS] = { "pass", RDNS_C_PASS },
	[RDNS_NONE] = { "none", RDNS_C_NONE },
	[RDNS_MISMATCH] = { "mismatch", RDNS_C_MISMATCH },
	[RDNS_TEMPERROR] = { "temperror", RDNS_C_TEMPERROR },
};

const char *
rdns_result_name(enum rdns_result res)
{
	if ((unsigned)res >= sizeof(rdns_results) / sizeof(rdns_results[0]))
		return "?";
	return rdns_results[res].name;
}

const char *
rdns_counter_name(unsigned id)
{
	return id < RDNS_C__COUNT ? rdns_counter_names[id] : NULL;
}

uint64_t
rdns_counter(const struct rdns *r, unsigned id)
{
	if (id >= RDNS_C__COUNT)
		return 0;
	return atomic_load_explicit(&r->counters[id], memory_order_relaxed);
}

/* One writer (the owner), many readers: no read-modify-write needed. */
static void
rdns_count(struct rdns *r, enum rdns_counter_id id)
{
	uint64_t v = atomic_load_explicit(&r->counters[id], memory_order_relaxed);

	atomic_store_explicit(&r->counters[id], v + 1, memory_order_relaxed);
}

static void
rdns_count_latency(struct rdns *r, uint64_t us)
{
	unsigned i;

	for (i = 0; i < sizeof(rdns_latency_bounds_us) / sizeof(rdns_latency_bounds_us[0]); i++)
		if (us < rdns_latency_bounds_us[i])
			break;
	rdns_count(r, (enum rdns_counter_id)(RDNS_C_LAT_1MS + i));
}

/* A slot taken from the free list, or given back to it. */
static void
rdns_enter(struct rdns *r, struct rdns_lookup *l, enum rdns_state to)
{
	if (l->state == RDNS_S_FREE && to != RDNS_S_FREE) {
		r->inflight++;
	} else if (l->state != RDNS_S_FREE && to == RDNS_S_FREE) {
		r->inflight--;
		l->next = r->free;
		r->free = l;
	}
	l->state = (uint8_t)to;
}

static void rdns_on_answer(void *arg, int err, struct ub_result *res);

/* Every query of a lookup has the lookup's deadline: start + timeout. */
static int
rdns_issue(struct rdns *r, struct rdns_lookup *l, unsigned qi, const char *name, int type)
{
	struct rdns_query *q = &l->q[qi];

	q->handle = dnsq_issue_lane(
		r->dnsq, r->lane, name, type, r->timeout_ms, rdns_on_answer, q, l->start_us);
	return q->handle != 0 ? 0 : -1;
}

/* Ends the slot's lookup: the queries still out are withdrawn (dnsq calls
 * nothing for them), and the slot goes back to the free list. */
static void
rdns_release(struct rdns *r, struct rdns_lookup *l)
{
	unsigned i;

	for (i = 0; i < 1 + RDNS_MAX_NAMES; i++) {
		if (l->q[i].handle != 0) {
			dnsq_cancel(r->dnsq, l->q[i].handle);
			l->q[i].handle = 0;
		}
	}
	ub_resolve_free(l->ptr);
	l->ptr = NULL;
	l->done = NULL;
	l->arg = NULL;
	rdns_enter(r, l, RDNS_S_FREE);
}

/* Records in an answer: data[] ends with NULL. */
static uint32_t
rdns_count_names(const struct ub_result *res)
{
	uint32_t n = 0;

	while (res->data != NULL && res->data[n] != NULL)
		n++;
	return n;
}

/* PTR name i for the answer: no final dot; "" when there is none. */
static void
rdns_answer_name(const struct rdns_lookup *l, uint32_t i, char out[RDNS_NAME_LEN])
{
	size_t len;

	out[0] = '\0';
	if (l->ptr == NULL || i >= rdns_count_names(l->ptr) ||
	    !rdns_name_text((const uint8_t *)l->ptr->data[i], (size_t)l->ptr->len[i], out)) {
		out[0] = '\0';
		return;
	}
	len = strlen(out);
	if (len > 1)
		out[len - 1] = '\0';
}

static int
rdns_min_ttl(int a, int b)
{
	return a < b ? a : b;
}

/*
 * Gives the answer: counters, the cache, the slot released, then done()
 * last, so that done() may start lookups of its own. name_i: the PTR name
 * to report (the confirming one for PASS), or 0 for the first.
 */
static void
rdns_finish(struct rdns *r, struct rdns_lookup *l, enum rdns_result res, uint32_t name_i, int ttl,
	    uint64_t now_us)
{
	struct rdns_answer a;
	rdns_done_fn done = l->done;
	void *arg = l->arg;
	uint64_t lat = now_us > l->start_us ? now_us - l->start_us : 0;

	memset(&a, 0, sizeof(a));
	a.result = res;
	a.n_ptr = l->ptr != NULL ? rdns_count_names(l->ptr) : 0;
	rdns_answer_name(l, name_i, a.name);
	a.latency_us = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
	a.cached = false;

	rdns_count(r, rdns_results[res].counter);
	rdns_count_latency(r, lat);
	if (r->cache != NULL && res != RDNS_TEMPERROR && ttl > 0) {
		uint64_t keep = (uint64_t)ttl < r->cache_ttl_s ? (uint64_t)ttl : r->cache_ttl_s;

		if (keep > 0)
			rdns_cache_put(r->cache, l->family, l->addr, res, a.name, now_us,
				       now_us + keep * 1000000u);
	}
	rdns_release(r, l);
	done(arg, &a);
}

/* What an answer means for the check. */
enum rdns_dns {
	RDNS_DNS_DATA,  /* records of the type asked for */
	RDNS_DNS_EMPTY, /* NXDOMAIN or NODATA: a real "no" */
	RDNS_DNS_FAIL,  /* anything else: try again later */
};

static enum rdns_dns
rdns_classify(int err, const struct ub_result *res)
{
	if (err != 0 || res == NULL || res->bogus)
		return RDNS_DNS_FAIL;
	if (res->rcode == ns_r_nxdomain)
		return RDNS_DNS_EMPTY;
	if (res->rcode != ns_r_noerror)
		return RDNS_DNS_FAIL;
	return res->havedata ? RDNS_DNS_DATA : RDNS_DNS_EMPTY;
}

static void
rdns_forward_done(struct rdns *r, struct rdns_lookup *l, uint64_t now_us)
{
	rdns_finish(r, l, l->fwd_temp ? RDNS_TEMPERROR : RDNS_MISMATCH, 0,
		    rdns_min_ttl(l->ttl_ptr, l->ttl_fwd), now_us);
}

/* The PTR answer: NONE, TEMPERROR, or the forward queries, all at once. */
static void
rdns_on_ptr(struct rdns *r, struct rdns_lookup *l, int err, struct ub_result *res, uint64_t now_us)
{
	char name[RDNS_NAME_LEN];
	uint32_t i, n;
	int ttl;

	switch (rdns_classify(err, res)) {
	case RDNS_DNS_FAIL:
		ub_resolve_free(res);
		rdns_finish(r, l, RDNS_TEMPERROR, 0, 0, now_us);
		return;
	case RDNS_DNS_EMPTY:
		/* the negative TTL (SOA minimum); 0 without an SOA */
		ttl = res->ttl;
		ub_resolve_free(res);
		rdns_finish(r, l, RDNS_NONE, 0, ttl, now_us);
		return;
	case RDNS_DNS_DATA: break;
	}
	l->ptr = res;
	l->ttl_ptr = res->ttl;
	l->ttl_fwd = INT_MAX;
	rdns_enter(r, l, RDNS_S_FORWARD);
	n = rdns_count_names(res);
	for (i = 0; i < n && i < r->max_names; i++) {
		/* a name we cannot even write down cannot confirm */
		if (!rdns_name_text((const uint8_t *)res->data[i], (size_t)res->len[i], name))
			continue;
		if (rdns_issue(r, l, 1 + i, name, l->family == 6 ? ns_t_aaaa : ns_t_a) == 0)
			l->fwd_left++;
		else
			l->fwd_temp = true;
	}
	if (l->fwd_left == 0)
		rdns_forward_done(r, l, now_us);
}

static bool
rdns_has_addr(const struct rdns_lookup *l, const struct ub_result *res)
{
	size_t alen = l->family == 6 ? 16 : 4;
	uint32_t i;

	for (i = 0; res->data[i] != NULL; i++)
		if ((size_t)res->len[i] == alen && memcmp(res->data[i], l->addr, alen) == 0)
			return true;
	return false;
}

/* The A/AAAA answer of a PTR name. The first name that confirms wins:
 * the check is answered then, and the other queries are withdrawn. */
static void
rdns_on_forward(struct rdns *r, struct rdns_lookup *l, struct rdns_query *q, int err,
		struct ub_result *res, uint64_t now_us)
{
	uint32_t i = q->index - 1u; /* q[0] is the PTR */
	enum rdns_dns got = rdns_classify(err, res);
	int ttl = res != NULL ? res->ttl : 0;
	bool match = got == RDNS_DNS_DATA && rdns_has_addr(l, res);

	ub_resolve_free(res);
	l->fwd_left--;
	if (match) {
		rdns_finish(r, l, RDNS_PASS, i, rdns_min_ttl(l->ttl_ptr, ttl), now_us);
		return;
	}
	if (got == RDNS_DNS_FAIL)
		l->fwd_temp = true;
	else
		l->ttl_fwd = rdns_min_ttl(l->ttl_fwd, ttl);
	if (l->fwd_left == 0)
		rdns_forward_done(r, l, now_us);
}

/* dnsq's callback, on the owner thread: an answer, or the deadline. */
static void
rdns_on_answer(void *arg, int err, struct ub_result *res)
{
	struct rdns_query *q = arg;
	struct rdns_lookup *l = q->lookup;
	struct rdns *r = l->r;
	uint64_t now_us = dnsq_now(r->dnsq);

	q->handle = 0;
	if (err == DNSQ_TIMEOUT) {
		rdns_count(r, RDNS_C_TIMEOUTS);
		rdns_finish(r, l, RDNS_TEMPERROR, 0, 0, now_us);
	} else if (l->state == RDNS_S_PTR) {
		rdns_on_ptr(r, l, err, res, now_us);
	} else {
		rdns_on_forward(r, l, q, err, res, now_us);
	}
}

/* The PTR owner name: nibbles under ip6.arpa, octets under in-addr.arpa. */
static void
rdns_reverse_name(uint8_t family, const uint8_t addr[16], char out[80])
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	int i;

	if (family == 4) {
		snprintf(out, 80, "%u.%u.%u.%u.in-addr.arpa.", addr[3], addr[2], addr[1], addr[0]);
		return;
	}
	for (i = 15; i >= 0; i--) {
		out[o++] = hex[addr[i] & 0xf];
		out[o++] = '.';
		out[o++] = hex[addr[i] >> 4];
		out[o++] = '.';
	}
	memcpy(out + o, "ip6.arpa.", sizeof("ip6.arpa."));
}

int
rdns_lookup(struct rdns *r, uint8_t family, const uint8_t addr[16], rdns_done_fn done, void *arg,
	    uint64_t now_us)
{
	struct rdns_answer a;
	struct rdns_lookup *l;
	char name[80];

	if ((family != 4 && family != 6) || done == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (r->cache != NULL && rdns_cache_get(r->cache, family, addr, now_us, &a.result, a.name)) {
		a.n_ptr = 0;
		a.latency_us = 0;
		a.cached = true;
		rdns_count(r, RDNS_C_LOOKUPS);
		rdns_count(r, RDNS_C_CACHE_HITS);
		rdns_count(r, rdns_results[a.result].counter);
		done(arg, &a);
		return 0;
	}
	l = r->free;
	if (l == NULL) {
		rdns_count(r, RDNS_C_BUSY);
		errno = EBUSY;
		return -1;
	}
	r->free = l->next;
	l->next = NULL;
	l->family = family;
	memset(l->addr, 0, sizeof(l->addr));
	memcpy(l->addr, addr, family == 6 ? 16 : 4);
	l->done = done;
	l->arg = arg;
	l->start_us = now_us;
	l->fwd_temp = false;
	l->fwd_left = 0;
	l->ptr = NULL;
	rdns_count(r, RDNS_C_LOOKUPS);
	rdns_enter(r, l, RDNS_S_PTR);
	rdns_reverse_name(family, l->addr, name);
	if (rdns_issue(r, l, 0, name, ns_t_ptr) != 0)
		rdns_finish(r, l, RDNS_TEMPERROR, 0, 0, now_us);
	return 0;
}

uint32_t
rdns_inflight(const struct rdns *r)
{
	return r->inflight;
}

struct rdns *
rdns_create(const struct rdns_params *p)
{
	struct rdns *r;
	uint32_t i, j;
	int e;

	if (p == NULL || p->dnsq == NULL || p->lane >= DNSQ_LANES || p->max_inflight == 0 ||
	    p->max_names > RDNS_MAX_NAMES) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->dnsq = p->dnsq;
	r->lane = p->lane;
	r->timeout_ms = p->timeout_ms ? p->timeout_ms : RDNS_DEFAULT_TIMEOUT_MS;
	r->max_names = p->max_names ? p->max_names : RDNS_MAX_NAMES;
	r->max_inflight = p->max_inflight;
	r->cache_ttl_s = p->cache_ttl_s;
	if (p->cache_entries > 0 && p->cache_ttl_s > 0) {
		r->cache = rdns_cache_create(p->cache_entries);
		if (r->cache == NULL)
			goto fail;
	}
	r->pool = calloc(p->max_inflight, sizeof(*r->pool));
	if (r->pool == NULL)
		goto fail;
	for (i = p->max_inflight; i-- > 0;) {
		struct rdns_lookup *l = &r->pool[i];

		l->r = r;
		l->state = RDNS_S_FREE;
		for (j = 0; j < 1 + RDNS_MAX_NAMES; j++) {
			l->q[j].lookup = l;
			l->q[j].index = (uint8_t)j;
		}
		l->next = r->free;
		r->free = l;
	}
	return r;
fail:
	e = errno;
	rdns_destroy(r);
	errno = e ? e : ENOMEM;
	return NULL;
}

struct rdns *
rdns_destroy(struct rdns *r)
{
	uint32_t i;

	if (r == NULL)
		return NULL;
	for (i = 0; r->pool != NULL && i < r->max_inflight; i++) {
		struct rdns_lookup *l = &r->pool[i];

		if (l->state != RDNS_S_FREE) {
			rdns_count(r, RDNS_C_CANCELLED);
			rdns_release(r, l);
		}
	}
	free(r->pool);
	r->cache = rdns_cache_destroy(r->cache);
	free(r);
	return NULL;
}
