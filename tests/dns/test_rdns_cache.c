/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/test_rdns_cache.c — the rDNS result cache on its own: hits,
 * expiry, replacement in place, eviction of the entry that expires first,
 * and families kept apart.
 */
#include <errno.h>
#include <string.h>

#include "dns/rdns_cache.h"

#include "tests/check.h"

static void
addr6(uint8_t a[16], uint8_t last)
{
	memset(a, 0, 16);
	a[0] = 0x20;
	a[1] = 0x01;
	a[15] = last;
}

int
main(void)
{
	struct rdns_cache *c = rdns_cache_create(4); /* one set of 4 */
	enum rdns_result res;
	char name[RDNS_NAME_LEN], want[32];
	uint8_t a[16], v4[16];

	CHECK(c != NULL, "create");
	for (uint8_t i = 1; i <= 4; i++) {
		addr6(a, i);
		snprintf(want, sizeof(want), "h%u.example", i);
		rdns_cache_put(c, 6, a, RDNS_PASS, want, 0, 100u * i);
	}
	for (uint8_t i = 1; i <= 4; i++) {
		addr6(a, i);
		snprintf(want, sizeof(want), "h%u.example", i);
		CHECK(rdns_cache_get(c, 6, a, 50, &res, name) && res == RDNS_PASS &&
			      strcmp(name, want) == 0,
		      "entry %u kept", i);
	}
	addr6(a, 1);
	CHECK(!rdns_cache_get(c, 6, a, 100, &res, name), "entry 1 expired at 100");
	/* the set is full (at time 50): the fifth takes the way that
	 * expires first, entry 1's */
	addr6(a, 5);
	rdns_cache_put(c, 6, a, RDNS_NONE, "", 50, 1000);
	CHECK(rdns_cache_get(c, 6, a, 60, &res, name) && res == RDNS_NONE, "fifth entry in");
	addr6(a, 1);
	CHECK(!rdns_cache_get(c, 6, a, 60, &res, name), "entry 1 evicted (it expired first)");
	addr6(a, 2);
	CHECK(rdns_cache_get(c, 6, a, 60, &res, name), "entry 2 still in");
	/* the same address again replaces its entry, no duplicate */
	rdns_cache_put(c, 6, a, RDNS_MISMATCH, "new.example", 60, 2000);
	CHECK(rdns_cache_get(c, 6, a, 1500, &res, name) && res == RDNS_MISMATCH &&
		      strcmp(name, "new.example") == 0,
	      "replaced in place");
	addr6(a, 3);
	CHECK(rdns_cache_get(c, 6, a, 60, &res, name), "entry 3 not evicted "
						       "by the replacement");
	/* IPv4: only the first 4 bytes count, and 4 is not 6 */
	memset(v4, 0, sizeof(v4));
	v4[0] = 0x20;
	v4[1] = 0x01;
	v4[15] = 9; /* garbage beyond the IPv4 address */
	rdns_cache_put(c, 4, v4, RDNS_PASS, "v4.example", 0, 5000);
	v4[15] = 0;
	CHECK(rdns_cache_get(c, 4, v4, 10, &res, name) && strcmp(name, "v4.example") == 0,
	      "v4 keyed by 4 bytes");
	CHECK(!rdns_cache_get(c, 6, v4, 10, &res, name), "v6 2001:: is not v4 32.1.0.0");
	/* a name of 255 characters is kept whole */
	{
		char longname[RDNS_NAME_LEN];

		memset(longname, 'a', RDNS_NAME_LEN - 1);
		longname[RDNS_NAME_LEN - 1] = '\0';
		addr6(a, 7);
		rdns_cache_put(c, 6, a, RDNS_PASS, longname, 0, 5000);
		CHECK(rdns_cache_get(c, 6, a, 10, &res, name) && strcmp(name, longname) == 0,
		      "255-character name");
	}
	c = rdns_cache_destroy(c);
	CHECK(c == NULL, "destroy returns NULL");
	errno = 0;
	CHECK(rdns_cache_create(0) == NULL && errno == EINVAL, "0 entries refused");
	return check_done();
}
