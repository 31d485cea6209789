/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dkim/prefetch.h — a message's DKIM key records fetched the way the
 * dispatcher fetches them (dns/dnsq.h, one deadline per query), with the
 * calling thread looping in poll() until every query is done, so that the
 * DKIM tests drive the same prefetch and verify path as the product.
 */
#ifndef SMTPEDGE_TESTS_DKIM_PREFETCH_H
#define SMTPEDGE_TESTS_DKIM_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

struct ub_ctx;
struct dkim_keys;
struct dkim_verifier;

/* Names the keys of m[0..len) for v (fed in pieces of `chunk` bytes, 0:
 * at once), and fetches them through a dnsq on ub with
 * timeout_ms each. NULL out of memory. ub NULL: nothing is fetched. */
struct dkim_keys *dkim_prefetch(struct ub_ctx *ub, struct dkim_verifier *v, const uint8_t *m,
				size_t len, size_t chunk, uint32_t timeout_ms);

#endif
