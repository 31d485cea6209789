/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/rdns_name_check.h — the oracle for rdns_name_text(), shared by
 * the unit test and the fuzz target: parses the text back into wire form
 * (as ub_resolve_async() will) and says whether it is the same name, and
 * works out on its own whether the name was valid and fit.
 */
#ifndef SMTPEDGE_TESTS_DNS_RDNS_NAME_CHECK_H
#define SMTPEDGE_TESTS_DNS_RDNS_NAME_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns/rdns_name.h"

/* Presentation text (with the final dot) back to wire form; its length,
 * or 0 when the text is not well-formed. */
static size_t
name_check_parse(const char *s, uint8_t *wire, size_t cap)
{
	size_t o = 1, lab = 0; /* wire[lab]: the current label's length */

	if (strcmp(s, ".") == 0) {
		wire[0] = 0;
		return 1;
	}
	if (*s == '\0' || s[strlen(s) - 1] != '.')
		return 0; /* no final dot */
	while (*s != '\0') {
		unsigned ch;

		if (*s == '.') {
			if (o - lab - 1 == 0 || o >= cap)
				return 0; /* empty label */
			wire[lab] = (uint8_t)(o - lab - 1);
			lab = o++;
			s++;
			continue;
		}
		if (*s == '\\' && s[1] >= '0' && s[1] <= '9') {
			if (s[2] < '0' || s[2] > '9' || s[3] < '0' || s[3] > '9')
				return 0;
			ch = (unsigned)(s[1] - '0') * 100 + (unsigned)(s[2] - '0') * 10 +
			     (unsigned)(s[3] - '0');
			if (ch > 255)
				return 0;
			s += 4;
		} else if (*s == '\\' && s[1] != '\0') {
			ch = (unsigned char)s[1];
			s += 2;
		} else if (*s == '\\' || (unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) {
			return 0; /* must have been escaped */
		} else {
			ch = (unsigned char)*s++;
		}
		if (o >= cap || o - lab > 63)
			return 0;
		wire[o++] = (uint8_t)ch;
	}
	wire[lab] = 0; /* the root label */
	return lab + 1;
}

/* What rdns_name_text() must do with wire[0..n): the length of the name
 * (root label included) and of its text, or false when malformed. */
static bool
name_check_expect(const uint8_t *wire, size_t n, size_t *wire_len, size_t *text_len)
{
	size_t pos = 0, t = 0;

	while (pos < n && wire[pos] != 0) {
		size_t lab = wire[pos++];

		if (lab > 63 || pos + lab > n)
			return false;
		for (size_t k = 0; k < lab; k++) {
			uint8_t ch = wire[pos + k];

			t += ch != 0 && strchr(".\\\"();@$", ch) ? 2 :
			     ch <= 0x20 || ch >= 0x7f            ? 4 :
								   1;
		}
		t++; /* the dot */
		pos += lab;
	}
	if (pos >= n)
		return false;
	*wire_len = pos + 1;
	*text_len = t == 0 ? 1 : t;
	return true;
}

/* NULL when rdns_name_text() did the right thing, else what went wrong. */
static const char *
name_check(const uint8_t *wire, size_t n)
{
	char text[RDNS_NAME_LEN + 8];
	uint8_t back[600];
	size_t wlen, tlen, blen;
	bool valid = name_check_expect(wire, n, &wlen, &tlen);
	bool ok;

	memset(text, 'X', sizeof(text));
	ok = rdns_name_text(wire, n, text);
	if (!valid)
		return ok ? "accepted a malformed name" : NULL;
	if (tlen >= RDNS_NAME_LEN)
		return ok ? "accepted a text too long for the buffer" : NULL;
	if (!ok)
		return "refused a valid name that fits";
	if (strlen(text) != tlen)
		return "text of an unexpected length";
	blen = name_check_parse(text, back, sizeof(back));
	if (blen == 0)
		return "text is not well-formed presentation";
	if (blen != wlen || memcmp(back, wire, wlen) != 0)
		return "text names other labels";
	return NULL;
}

#endif
