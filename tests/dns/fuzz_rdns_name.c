/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/fuzz_rdns_name.c — libFuzzer target: rdns_name_text() on any
 * bytes, checked by the round-trip oracle (rdns_name_check.h): a valid
 * name that fits comes out as text naming exactly the same labels, and
 * anything else is refused. A PTR target is the attacker's to choose.
 */
#include <stdlib.h>

#include "tests/dns/rdns_name_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (name_check(data, size) != NULL)
		abort();
	return 0;
}
