/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns.h — forward-confirmed reverse DNS (FCrDNS), asynchronous.
 *
 * The control plane's one dispatcher thread must keep thousands of sender
 * lookups in flight without a thread each, so a lookup is a small state
 * machine on the dispatcher's event loop: rdns_lookup() starts it, its
 * queries go out through dns/dnsq.h (the one asynchronous way to query
 * the shared libunbound context), the loop polls dnsq_fd() and calls
 * dnsq_process() as it does for every other query, and the result comes
 * back through a callback. One struct rdns belongs to the thread that
 * owns its dnsq.
 *
 * The check: PTR of the peer; NXDOMAIN or no PTR -> NONE. Then
 * the A (IPv4 peer) or AAAA (IPv6 peer) records of up to max_names PTR
 * names, all at once; a name whose records hold the peer's address
 * confirms -> PASS. No name confirms -> MISMATCH, unless a forward lookup
 * failed temporarily -> TEMPERROR. Any other failure, and the whole-lookup
 * deadline, -> TEMPERROR: a DNS outage of ours never becomes a 5xx.
 *
 * A lookup has at most max_names queries out at once (the PTR, then the
 * forward ones), so a dnsq lane of max_inflight * max_names slots of its
 * own never refuses one, and other queries cannot take them.
 */
#ifndef SMTPEDGE_DNS_RDNS_H
#define SMTPEDGE_DNS_RDNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dnsq;
struct rdns;

enum rdns_result { RDNS_PASS, RDNS_NONE, RDNS_MISMATCH, RDNS_TEMPERROR };

#define RDNS_MAX_NAMES 10 /* PTR names checked at most (as RFC 7208 ptr) */
#define RDNS_NAME_LEN  256

struct rdns_answer {
	enum rdns_result result;
	/* PASS: the name that confirmed; otherwise the first PTR name, or ""
	 * when there is none. Presentation form without the final dot. */
	char name[RDNS_NAME_LEN];
	uint32_t n_ptr;      /* PTR records in the answer (all, not only
				  the names checked); 0 from the cache */
	uint32_t latency_us; /* start to answer; 0 from the cache */
	bool cached;
};

struct rdns_params {
	struct dnsq *dnsq;      /* the owner's; not owned, outlives r */
	unsigned lane;          /* dnsq's lane for the queries */
	uint32_t timeout_ms;    /* whole-lookup deadline; 0 = 5000 */
	uint32_t max_names;     /* 1..RDNS_MAX_NAMES; 0 = RDNS_MAX_NAMES */
	uint32_t cache_entries; /* result cache size; 0 = no cache */
	uint32_t cache_ttl_s;   /* upper bound (0 = no cache); the TTLs of
				    the records behind a result bound it too,
				    TEMPERROR is never cached */
	uint32_t max_inflight;  /* lookups at once (fixed pool), >= 1 */
};

/* NULL and errno: EINVAL (bad params) or ENOMEM. Everything a lookup
 * needs is allocated here. */
struct rdns *rdns_create(const struct rdns_params *params);

/* Cancels what is in flight (counted as cancelled, no callback for it;
 * its queries are withdrawn from dnsq) and frees. Before the dnsq is
 * destroyed. Tolerates NULL and half-built; returns NULL. Not from inside
 * a done() callback. */
struct rdns *rdns_destroy(struct rdns *r);

typedef void (*rdns_done_fn)(void *arg, const struct rdns_answer *a);

/*
 * Looks up the peer: family 4 (address in addr[0..3]) or 6. now_us is the
 * caller's monotonic clock, the one it gives dnsq_process(). Returns 0
 * when done() will be called: later from dnsq_process(), or already,
 * before this returns (a cache hit, or a query refused at once by dnsq or
 * the resolver, which answers TEMPERROR). Returns -1 without calling
 * done() when max_inflight lookups are in flight (errno EBUSY: answer a
 * 4xx) or the family is not 4 or 6 (EINVAL). done() may start new
 * lookups, but must not call dnsq_process() or rdns_destroy().
 */
int rdns_lookup(struct rdns *r, uint8_t family, const uint8_t addr[16], rdns_done_fn done,
		void *arg, uint64_t now_us);

/* Lookups holding a pool slot (started and not yet finished with). */
uint32_t rdns_inflight(const struct rdns *r);

/*
 * Counters, for telemetry: any thread may read them while the owner
 * works. Result counters count every answer given, the cached ones too;
 * the latency buckets count the answers that needed DNS.
 */
enum rdns_counter_id {
	RDNS_C_LOOKUPS, /* rdns_lookup() calls that returned 0 */
	RDNS_C_CACHE_HITS,
	RDNS_C_PASS,
	RDNS_C_NONE,
	RDNS_C_MISMATCH,
	RDNS_C_TEMPERROR,
	RDNS_C_TIMEOUTS,  /* TEMPERRORs given because of the deadline */
	RDNS_C_CANCELLED, /* in flight when rdns_destroy() was called */
	RDNS_C_BUSY,      /* refused: max_inflight reached */
	RDNS_C_LAT_1MS,   /* latency < 1 ms */
	RDNS_C_LAT_2MS,
	RDNS_C_LAT_5MS,
	RDNS_C_LAT_10MS,
	RDNS_C_LAT_20MS,
	RDNS_C_LAT_50MS,
	RDNS_C_LAT_100MS,
	RDNS_C_LAT_200MS,
	RDNS_C_LAT_500MS,
	RDNS_C_LAT_1000MS,
	RDNS_C_LAT_SLOW, /* >= 1000 ms */
	RDNS_C__COUNT
};

/* "lookups", "cache_hits", ..., "latency_lt_1ms", ..., "latency_ge_1000ms";
 * NULL for an id out of range. */
const char *rdns_counter_name(unsigned id);
uint64_t rdns_counter(const struct rdns *r, unsigned id);

const char *rdns_result_name(enum rdns_result res);

#endif
