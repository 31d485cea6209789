/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/fuzz_auth.c — libFuzzer target for the header scan and the forged
 * Authentication-Results filter of control/checks.c (auth_strip_forged).
 *
 * Input: data[0] % 8 is how many chunk sizes follow (one byte each, 0 for
 * an empty chunk); the rest is the message, cut into chunks of those sizes
 * in turn, so the fuzzer chooses where the chunks split it. The message is
 * what the engine hands over (CRLF lines, but nothing here relies on it).
 *
 * Checked against a reference written here, over the message in one piece:
 *  - the output is exactly the input without the header fields that claim
 *    our authserv-id, whatever the split;
 *  - no field of the output's header section claims it;
 *  - everything after the first empty line is byte-identical;
 *  - NULL (nothing to strip) only when the reference strips nothing.
 * The reference unfolds each field's value first (drops every CR and LF)
 * and then reads it as RFC 8601 says (comments nest and hold quoted-pairs;
 * the id is a token or a quoted-string), so it shares no code with the
 * filter.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/chunk.h"

#include "control/checks.h"

#define ID       "mx.lab.example"
#define MAX_CUTS 7

/* ---- the reference -------------------------------------------------------- */

/* f[0..len) without CR and LF: the field unfolded. */
static size_t
unfold(const uint8_t *f, size_t len, char *u)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (f[i] != '\r' && f[i] != '\n')
			u[n++] = (char)f[i];
	return n;
}

/* Past a comment that opens at u[*i]; false if it never closes. */
static bool
comment(const char *u, size_t n, size_t *i)
{
	(*i)++;
	while (*i < n) {
		char c = u[*i];

		if (c == ')') {
			(*i)++;
			return true;
		}
		if (c == '(') {
			if (!comment(u, n, i))
				return false;
			continue;
		}
		*i += c == '\\' ? 2 : 1;
	}
	return false;
}

static bool
tspecial_or_ctl(unsigned char c)
{
	return c <= ' ' || c == 0x7f || strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* The name and the colon as they are; the value unfolded. */
static bool
ref_claims(const uint8_t *f, size_t len)
{
	static const char name[] = "authentication-results";
	char *u, val[sizeof(ID) + 1];
	size_t n, i = sizeof(name) - 1, k = 0;
	bool ours = false;

	if (len < i || strncasecmp((const char *)f, name, i) != 0)
		return false;
	while (i < len && (f[i] == ' ' || f[i] == '\t'))
		i++;
	if (i >= len || f[i] != ':')
		return false;
	u = malloc(len + 1);
	if (!u)
		abort();
	n = unfold(f + i + 1, len - i - 1, u);
	for (i = 0; i < n;) {
		if (u[i] == ' ' || u[i] == '\t')
			i++;
		else if (u[i] != '(')
			break;
		else if (!comment(u, n, &i))
			goto out;
	}
	if (i < n && u[i] == '"') {
		for (i++; i < n && u[i] != '"'; i++) {
			if (u[i] == '\\' && ++i == n)
				goto out;
			if (k == sizeof(ID))
				goto out;
			val[k++] = u[i];
		}
		if (i == n)
			goto out;
	} else {
		for (; i < n && !tspecial_or_ctl((unsigned char)u[i]); i++) {
			if (k == sizeof(ID))
				goto out;
			val[k++] = u[i];
		}
	}
	ours = k == sizeof(ID) - 1 && strncasecmp(val, ID, k) == 0;
out:
	free(u);
	return ours;
}

/* Where the header section ends in m: after the first empty line (CRLF or
 * LF alone at a line start), or at the end. */
static size_t
ref_header_end(const uint8_t *m, size_t len)
{
	size_t i = 0;

	while (i < len) {
		if (m[i] == '\n')
			return i + 1;
		if (m[i] == '\r' && i + 1 < len && m[i + 1] == '\n')
			return i + 2;
		while (i < len && m[i] != '\n')
			i++;
		i++;
	}
	return len;
}

/* The next field of h from start: its first line and the lines after it
 * that start with SP or HT. */
static size_t
ref_field_end(const uint8_t *h, size_t hend, size_t start)
{
	size_t i = start;

	for (;;) {
		while (i < hend && h[i] != '\n')
			i++;
		if (i < hend)
			i++;
		if (i >= hend || (h[i] != ' ' && h[i] != '\t'))
			return i;
	}
}

/* m without our fields; returns its length, *stripped how many went. */
static size_t
ref_strip(const uint8_t *m, size_t len, uint8_t *out, unsigned *stripped)
{
	size_t hend = ref_header_end(m, len), s, e, o = 0;

	*stripped = 0;
	for (s = 0; s < hend; s = e) {
		e = ref_field_end(m, hend, s);
		if (ref_claims(m + s, e - s)) {
			(*stripped)++;
			continue;
		}
		memcpy(out + o, m + s, e - s);
		o += e - s;
	}
	memcpy(out + o, m + hend, len - hend);
	return o + len - hend;
}

/* ---- the target ----------------------------------------------------------- */

static struct chunk *
chunk_new(const uint8_t *p, size_t n)
{
	struct chunk *c = malloc(sizeof(*c) + n);

	if (!c)
		abort();
	c->next = NULL;
	c->len = c->cap = (uint32_t)n;
	memcpy(c->data, p, n);
	return c;
}

static struct chunk *
cut(const uint8_t *m, size_t len, const uint8_t *cuts, unsigned ncuts)
{
	struct chunk *head = NULL, **tail = &head;
	size_t off = 0;
	unsigned i = 0, idle = 0;

	while (off < len) {
		size_t n = ncuts ? cuts[i++ % ncuts] : len;

		/* Empty chunks are fine, but not a whole round of them. */
		if (n == 0 && ++idle > ncuts)
			n = len - off;
		if (n > len - off)
			n = len - off;
		if (n)
			idle = 0;
		*tail = chunk_new(m + off, n);
		tail = &(*tail)->next;
		off += n;
	}
	return head;
}

static size_t
flatten(const struct chunk *c, uint8_t *out)
{
	size_t n = 0;

	for (; c; c = c->next) {
		memcpy(out + n, c->data, c->len);
		n += c->len;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chunk *in, *out, *c;
	unsigned ncuts, stripped;
	const uint8_t *m;
	uint8_t *want, *got;
	size_t len, wlen, glen, hend, s;

	if (size < 1)
		return 0;
	ncuts = data[0] % (MAX_CUTS + 1);
	if (size < 1 + ncuts)
		return 0;
	m = data + 1 + ncuts;
	len = size - 1 - ncuts;
	in = cut(m, len, data + 1, ncuts);
	want = malloc(len + 1);
	got = malloc(len + 1);
	if (!want || !got)
		abort();

	wlen = ref_strip(m, len, want, &stripped);
	out = auth_strip_forged(ID, in);
	if ((out == NULL) != (stripped == 0))
		abort();
	glen = out ? flatten(out, got) : flatten(in, got);
	if (glen != wlen || memcmp(got, want, wlen) != 0)
		abort();
	/* What the output's own header section holds: nothing of ours. */
	hend = ref_header_end(got, glen);
	for (s = 0; s < hend; s = ref_field_end(got, hend, s))
		if (ref_claims(got + s, ref_field_end(got, hend, s) - s))
			abort();
	/* The body: the input's, byte for byte. */
	if (glen - hend != len - ref_header_end(m, len) ||
	    memcmp(got + hend, m + ref_header_end(m, len), glen - hend) != 0)
		abort();

	free(out); /* its first chunk only: the rest is in's */
	while (in) {
		c = in->next;
		free(in);
		in = c;
	}
	free(want);
	free(got);
	return 0;
}
