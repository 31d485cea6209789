/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp_body.c — scan a message body: dot-unstuffing and strict
 * framing.
 *
 * RFC 5321 4.1.1.4 ends DATA at CRLF.CRLF and nothing else. Receivers that
 * also accept LF.LF or CR.CR disagree with senders about where a message
 * ends, and that disagreement is SMTP smuggling. Here a line ends only at
 * CRLF; a CR not followed by LF, or an LF not preceded by CR, raises a flag
 * that makes the engine refuse the message, while framing goes on by the
 * strict rule so that the session stays in step with a correct sender.
 * Bytes are still handed to the sink after a flag: the caller decides
 * whether to keep them.
 */
#include <string.h>

#include "dataplane/smtp_body.h"

enum {
	B_BOL,    /* at the start of a line (after CRLF, or of the body) */
	B_DOT,    /* DATA: a line began with '.' */
	B_DOT_CR, /* DATA: ".\r" at the start of a line */
	B_MID,    /* inside a line */
	B_CR,     /* a CR inside a line, waiting for its LF */
};

static const uint8_t crlf[2] = { '\r', '\n' };

void
smtp_body_begin(struct smtp_body *b, bool dot, uint32_t max_line)
{
	b->st = B_BOL;
	b->flags = 0;
	b->dot = dot;
	b->done = false;
	b->line_len = 0;
	b->max_line = max_line;
}

static void
count(struct smtp_body *b, uint32_t n)
{
	b->line_len += n;
	if (b->line_len > b->max_line)
		b->flags |= SMTP_BODY_LONG_LINE;
}

uint32_t
smtp_body_scan(struct smtp_body *b, const uint8_t *p, uint32_t n, smtp_body_sink *sink, void *arg)
{
	uint32_t i = 0, j;

	/* Every "continue" without i++ re-reads the byte in the new state. */
	while (i < n && !b->done) {
		uint8_t ch = p[i];

		switch (b->st) {
		case B_BOL:
			b->line_len = 0;
			if (b->dot && ch == '.') {
				/* Stuffing: the leading dot is never data, and
				 * RFC 5321 4.5.3.1.6 leaves it out of the line
				 * length too. */
				b->st = B_DOT;
				i++;
				continue;
			}
			b->st = B_MID;
			continue;
		case B_DOT:
			if (ch == '\r') {
				count(b, 1);
				b->st = B_DOT_CR;
				i++;
				continue;
			}
			b->st = B_MID;
			continue;
		case B_DOT_CR:
			if (ch == '\n') {
				b->done = true;
				i++;
				continue;
			}
			/* ".\r" then not LF: the CR was a bare one, and data. */
			b->flags |= SMTP_BODY_BARE_CR;
			sink(arg, crlf, 1);
			b->st = B_MID;
			continue;
		case B_MID:
			for (j = i; j < n && p[j] != '\r' && p[j] != '\n'; j++)
				;
			if (j > i) {
				sink(arg, p + i, j - i);
				count(b, j - i);
				i = j;
				continue;
			}
			count(b, 1);
			i++;
			if (ch == '\r') {
				b->st = B_CR;
			} else {
				/* A bare LF ends no line: the framing stays strict. */
				b->flags |= SMTP_BODY_BARE_LF;
				sink(arg, crlf + 1, 1);
			}
			continue;
		case B_CR:
			if (ch == '\n') {
				count(b, 1);
				sink(arg, crlf, 2);
				b->st = B_BOL;
				i++;
				continue;
			}
			b->flags |= SMTP_BODY_BARE_CR;
			sink(arg, crlf, 1);
			b->st = B_MID;
			continue;
		}
	}
	return i;
}

void
smtp_body_end(struct smtp_body *b)
{
	if (b->st == B_CR || b->st == B_DOT_CR)
		b->flags |= SMTP_BODY_BARE_CR;
}

static const uint8_t hdr_end[4] = { '\r', '\n', '\r', '\n' };

void
smtp_hdr_end_begin(struct smtp_hdr_end *h)
{
	/* The start of the message is the start of a line: a CRLF there is
	 * the empty line. */
	h->matched = 2;
}

uint32_t
smtp_hdr_end_scan(struct smtp_hdr_end *h, const uint8_t *p, uint32_t n)
{
	uint32_t i = 0;

	while (i < n) {
		if (h->matched == 0) {
			/* Inside a line: only a CR can start the match. */
			const uint8_t *cr = memchr(p + i, '\r', n - i);

			if (cr == NULL)
				return SMTP_HDR_END_NONE;
			i = (uint32_t)(cr - p);
		}
		if (p[i] == hdr_end[h->matched])
			h->matched++;
		else
			h->matched = p[i] == '\r' ? 1 : 0;
		i++;
		if (h->matched == sizeof(hdr_end))
			return i;
	}
	return SMTP_HDR_END_NONE;
}
