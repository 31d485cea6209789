/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns_cache.c — the reverse-DNS result cache (see rdns_cache.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dns/rdns_cache.h"

#define RDNS_CACHE_WAYS 4

struct rdns_cache_entry {
	uint64_t expires_us; /* 0: empty */
	uint8_t family;
	uint8_t result; /* enum rdns_result */
	uint8_t addr[16];
	char name[RDNS_NAME_LEN];
};

struct rdns_cache {
	uint64_t key[2]; /* hash key, random per cache */
	uint32_t n_sets;
	struct rdns_cache_entry *e; /* n_sets * RDNS_CACHE_WAYS */
};

struct rdns_cache *
rdns_cache_create(uint32_t entries)
{
	struct rdns_cache *c;

	if (entries == 0) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->n_sets = (entries + RDNS_CACHE_WAYS - 1) / RDNS_CACHE_WAYS;
	c->e = calloc((size_t)c->n_sets * RDNS_CACHE_WAYS, sizeof(*c->e));
	if (c->e == NULL)
		return rdns_cache_destroy(c);
	/* A weak key is still a key: fall back rather than fail. */
	if (getrandom(c->key, sizeof(c->key), GRND_NONBLOCK) != (ssize_t)sizeof(c->key)) {
		c->key[0] = (uint64_t)(uintptr_t)c ^ 0x6a09e667f3bcc908ull;
		c->key[1] = (uint64_t)(uintptr_t)c->e ^ 0xbb67ae8584caa73bull;
	}
	return c;
}

struct rdns_cache *
rdns_cache_destroy(struct rdns_cache *c)
{
	if (c != NULL) {
		free(c->e);
		free(c);
	}
	return NULL;
}

static uint64_t
rdns_cache_mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static struct rdns_cache_entry *
rdns_cache_set(const struct rdns_cache *c, uint8_t family, const uint8_t addr[16])
{
	uint64_t w0, w1, h;

	memcpy(&w0, addr, 8);
	memcpy(&w1, addr + 8, 8);
	if (family == 4)
		w1 = 0; /* only addr[0..3] is the address */
	h = rdns_cache_mix(w0 ^ c->key[0]);
	h = rdns_cache_mix(h ^ w1 ^ c->key[1] ^ family);
	return &c->e[(h % c->n_sets) * RDNS_CACHE_WAYS];
}

static bool
rdns_cache_same(const struct rdns_cache_entry *e, uint8_t family, const uint8_t addr[16])
{
	return e->family == family && memcmp(e->addr, addr, family == 4 ? 4 : 16) == 0;
}

bool
rdns_cache_get(const struct rdns_cache *c, uint8_t family, const uint8_t addr[16], uint64_t now_us,
	       enum rdns_result *res, char name[RDNS_NAME_LEN])
{
	const struct rdns_cache_entry *set = rdns_cache_set(c, family, addr);
	int w;

	for (w = 0; w < RDNS_CACHE_WAYS; w++) {
		const struct rdns_cache_entry *e = &set[w];

		if (e->expires_us > now_us && rdns_cache_same(e, family, addr)) {
			*res = (enum rdns_result)e->result;
			memcpy(name, e->name, RDNS_NAME_LEN);
			return true;
		}
	}
	return false;
}

void
rdns_cache_put(struct rdns_cache *c, uint8_t family, const uint8_t addr[16], enum rdns_result res,
	       const char *name, uint64_t now_us, uint64_t expires_us)
{
	struct rdns_cache_entry *set = rdns_cache_set(c, family, addr);
	struct rdns_cache_entry *victim = NULL;
	size_t len;
	int w;

	/* the same address again, else an empty or dead way, else the way
	 * that would expire first */
	for (w = 0; w < RDNS_CACHE_WAYS && victim == NULL; w++)
		if (rdns_cache_same(&set[w], family, addr))
			victim = &set[w];
	for (w = 0; w < RDNS_CACHE_WAYS && victim == NULL; w++)
		if (set[w].expires_us <= now_us)
			victim = &set[w];
	if (victim == NULL) {
		victim = &set[0];
		for (w = 1; w < RDNS_CACHE_WAYS; w++)
			if (set[w].expires_us < victim->expires_us)
				victim = &set[w];
	}
	memset(victim, 0, sizeof(*victim));
	victim->expires_us = expires_us;
	victim->family = family;
	victim->result = (uint8_t)res;
	memcpy(victim->addr, addr, family == 4 ? 4 : 16);
	len = strnlen(name, RDNS_NAME_LEN - 1);
	memcpy(victim->name, name, len);
}
