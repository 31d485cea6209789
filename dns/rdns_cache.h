/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns_cache.h — the reverse-DNS result cache: address -> answer.
 *
 * Senders come back (retries, one connection per message), and a refused
 * sender comes back most of all: answering it from here keeps the reject
 * path cheap. Fixed size, allocated once: a set-associative table whose
 * sets hold a few entries; a new entry takes an empty or expired way, else
 * the way that expires first. The set index is a keyed hash of the
 * address, so a sender who picks addresses from his /64 cannot aim them
 * at one set without knowing the key. One thread only (rdns's owner).
 */
#ifndef SMTPEDGE_DNS_RDNS_CACHE_H
#define SMTPEDGE_DNS_RDNS_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "dns/rdns.h"

struct rdns_cache;

/* At least entries entries (rounded up to whole sets). NULL and errno. */
struct rdns_cache *rdns_cache_create(uint32_t entries);
struct rdns_cache *rdns_cache_destroy(struct rdns_cache *c);

/* True and the result and name when a live entry holds the address. */
bool rdns_cache_get(const struct rdns_cache *c, uint8_t family, const uint8_t addr[16],
		    uint64_t now_us, enum rdns_result *res, char name[RDNS_NAME_LEN]);

/* Keeps res and name for the address until expires_us. */
void rdns_cache_put(struct rdns_cache *c, uint8_t family, const uint8_t addr[16],
		    enum rdns_result res, const char *name, uint64_t now_us, uint64_t expires_us);

#endif
