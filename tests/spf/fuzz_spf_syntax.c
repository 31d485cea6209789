/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/spf/fuzz_spf_syntax.c — libFuzzer target for the SPF record checker.
 *
 * Records come from any DNS zone on the Internet, so spf_syntax_record()
 * must survive any bytes.  Beyond "no crash", two properties are checked:
 * an accepted record's rewrite is NUL-terminated within the buffer, and
 * the rewrite is itself accepted (libspf2 must be given a valid record).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/spf_syntax.h"

#define KEY "0123456789abcdef"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[16384], again[16384], name[512];
	char problem[128];
	size_t n;

	if (spf_syntax_record((const char *)data, size, KEY, out, sizeof(out), problem,
			      sizeof(problem)) == SPF_SYNTAX_OK) {
		n = strnlen(out, sizeof(out));
		if (n == sizeof(out))
			abort();
		if (spf_syntax_record(out, n, KEY, again, sizeof(again), problem,
				      sizeof(problem)) != SPF_SYNTAX_OK)
			abort();
	}
	n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
	memcpy(name, data, n);
	name[n] = '\0';
	(void)spf_syntax_query_name_ok(name);
	(void)spf_syntax_identity_domain_ok(name);
	(void)spf_syntax_cidr0_tag(name, KEY, &n);
	return 0;
}
