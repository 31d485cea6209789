/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/test_rdns_name.c — rdns_name_text() on chosen names: the
 * expected text where there is one, and the round-trip oracle on all.
 */
#include <stdio.h>
#include <string.h>

#include "dns/rdns_name.h"

#include "tests/check.h"
#include "tests/dns/rdns_name_check.h"

struct name_case {
	const char *what;
	const char *wire; /* bytes, as a C string with escapes */
	size_t n;
	const char *text; /* NULL: must be refused */
};

#define W(s) s, sizeof(s) - 1

static const struct name_case cases[] = {
	{ "plain", W("\4mail\7example\0"), "mail.example." },
	{ "root", W("\0"), "." },
	{ "dot inside a label", W("\3a.b\7example\0"), "a\\.b.example." },
	{ "backslash, quote, parens", W("\5\\\"();\0"), "\\\\\\\"\\(\\)\\;." },
	{ "space and control bytes", W("\3a \1\0"), "a\\032\\001." },
	{ "high bytes", W("\2\xff\x80\0"), "\\255\\128." },
	{ "NUL inside a label", W("\3a\0b\0"), "a\\000b." },
	{ "bytes after the root are ignored", W("\1a\0\5junk"), "a." },
	{ "no root label", W("\4mail"), NULL },
	{ "label runs past the end", W("\11short\0"), NULL },
	{ "compression pointer", W("\xc0\x0c"), NULL },
	{ "label type 0x40", W("\x41x\0"), NULL },
	{ "empty input", "", 0, NULL },
};

int
main(void)
{
	char out[RDNS_NAME_LEN];
	uint8_t wire[300];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct name_case *c = &cases[i];
		bool ok = rdns_name_text((const uint8_t *)c->wire, c->n, out);
		const char *why = name_check((const uint8_t *)c->wire, c->n);

		if (c->text == NULL)
			CHECK(!ok, "%s: refused", c->what);
		else
			CHECK(ok && strcmp(out, c->text) == 0, "%s: '%s', want '%s'", c->what,
			      ok ? out : "-", c->text);
		CHECK(why == NULL, "%s: %s", c->what, why);
	}
	/* 4 labels of 63 'a' = 255 bytes of wire, 256 characters of text
	 * with the dots: one too many for the buffer */
	memset(wire, 0, sizeof(wire));
	for (int l = 0; l < 4; l++) {
		wire[l * 64] = 63;
		memset(wire + l * 64 + 1, 'a', 63);
	}
	CHECK(!rdns_name_text(wire, 257, out), "256 characters refused");
	CHECK(name_check(wire, 257) == NULL, "oracle agrees");
	wire[3 * 64] = 61; /* two shorter: 254 characters, fits */
	wire[3 * 64 + 62] = 0;
	CHECK(rdns_name_text(wire, 257, out) && strlen(out) == 254, "254 characters kept");
	CHECK(name_check(wire, 257) == NULL, "oracle agrees");
	/* escapes count: a short name of many \DDD does not fit */
	memset(wire, 0, sizeof(wire));
	for (int l = 0; l < 2; l++) {
		wire[l * 64] = 63;
		memset(wire + l * 64 + 1, 0x01, 63);
	}
	CHECK(!rdns_name_text(wire, 129, out), "126 bytes needing 4 characters each refused");
	CHECK(name_check(wire, 129) == NULL, "oracle agrees");
	return check_done();
}
