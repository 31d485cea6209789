/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp_body.h — the message body scanner of the smtpedge SMTP
 * engine.
 *
 * A resumable byte scanner for DATA (dot-unstuffing, end at exactly
 * CRLF.CRLF) and BDAT (length-framed, no stuffing). It hands the unstuffed
 * bytes to a sink and raises flags for bare CR, bare LF and over-long lines:
 * the SMTP smuggling defence lives here, apart from the session logic, so
 * that the framing rule is one small state machine that can be read whole.
 *
 * Beside it, a matcher for the end of the header block (RFC 5322 §2.1: the
 * first empty line) over the unstuffed bytes the sink is given, so that the
 * control plane can be told, while the body still arrives, that the fields
 * naming the message's DKIM keys are all in.
 */
#ifndef SMTPEDGE_DATAPLANE_SMTP_BODY_H
#define SMTPEDGE_DATAPLANE_SMTP_BODY_H

#include <stdbool.h>
#include <stdint.h>

#define SMTP_BODY_BARE_CR   0x1u
#define SMTP_BODY_BARE_LF   0x2u
#define SMTP_BODY_LONG_LINE 0x4u

struct smtp_body {
	uint8_t st;        /* scanner state, private to smtp_body.c */
	uint8_t flags;     /* SMTP_BODY_* seen so far */
	bool dot;          /* DATA framing: unstuff, stop at CRLF.CRLF */
	bool done;         /* DATA: the end marker has been consumed */
	uint32_t line_len; /* wire bytes of the current line */
	uint32_t max_line; /* text line limit with CRLF */
};

typedef void smtp_body_sink(void *arg, const uint8_t *p, uint32_t n);

void smtp_body_begin(struct smtp_body *b, bool dot, uint32_t max_line);
/* Scans up to n bytes; returns how many were consumed (fewer only when the
 * DATA end marker was reached). Body bytes go to sink. */
uint32_t smtp_body_scan(struct smtp_body *b, const uint8_t *p, uint32_t n, smtp_body_sink *sink,
			void *arg);
/* BDAT LAST: the message ends here; a CR left waiting is a bare CR. */
void smtp_body_end(struct smtp_body *b);

/* Where the header block ends: CRLF CRLF, or a CRLF at the very start (a
 * message whose header block is empty). */
struct smtp_hdr_end {
	uint8_t matched; /* bytes of CRLF CRLF matched so far */
};

#define SMTP_HDR_END_NONE UINT32_MAX

void smtp_hdr_end_begin(struct smtp_hdr_end *h);
/* Reads the next n unstuffed bytes of the message: returns how many of
 * them belong to the header block, its empty line included, once its end
 * is among them, else SMTP_HDR_END_NONE. Call it no more after an end. */
uint32_t smtp_hdr_end_scan(struct smtp_hdr_end *h, const uint8_t *p, uint32_t n);

#endif
