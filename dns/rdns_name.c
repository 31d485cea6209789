/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/rdns_name.c — PTR targets from wire form to text (see rdns_name.h).
 */
#include <stdio.h>
#include <string.h>

#include "dns/rdns_name.h"

/* Characters with a meaning in presentation form: escaped with '\'. */
static const char rdns_name_special[] = ".\\\"();@$";

/* Appends the text of one byte; false when out is full. */
static bool
rdns_name_byte(uint8_t ch, char *out, size_t *o)
{
	size_t room = RDNS_NAME_LEN - *o;
	int w;

	if (ch != 0 && strchr(rdns_name_special, ch) != NULL)
		w = snprintf(out + *o, room, "\\%c", ch);
	else if (ch <= 0x20 || ch >= 0x7f)
		w = snprintf(out + *o, room, "\\%03u", ch);
	else
		w = snprintf(out + *o, room, "%c", ch);
	if (w < 0 || (size_t)w >= room)
		return false;
	*o += (size_t)w;
	return true;
}

bool
rdns_name_text(const uint8_t *wire, size_t n, char out[RDNS_NAME_LEN])
{
	size_t pos = 0, o = 0;

	while (pos < n && wire[pos] != 0) {
		size_t lab = wire[pos++], k;

		/* 64..255 are compression pointers and reserved types */
		if (lab > 63 || lab > n - pos)
			return false;
		for (k = 0; k < lab; k++)
			if (!rdns_name_byte(wire[pos + k], out, &o))
				return false;
		pos += lab;
		if (o + 2 > RDNS_NAME_LEN)
			return false;
		out[o++] = '.';
	}
	if (pos >= n)
		return false; /* ran out before the root label */
	if (o == 0)
		out[o++] = '.'; /* the root itself */
	out[o] = '\0';
	return true;
}
