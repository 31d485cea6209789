/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/relay.h — the second handoff of accepted mail: an SMTP or LMTP
 * client to the downstream MTA, so that the sender's 250 means "the next hop
 * has it".
 *
 * Called from the control plane's work threads; relay_deliver blocks (every
 * connect, write and reply bounded by a timeout) and is safe from several
 * threads at once. Connections are kept in a small shared pool.
 */
#ifndef SMTPEDGE_CONTROL_RELAY_H
#define SMTPEDGE_CONTROL_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct chunk;

struct relay_params {
	const char *target;        /* "[v6addr]:port", "v4addr:port" or "host:port" */
	bool lmtp;                 /* LHLO and one reply per recipient after the dot */
	const char *helo;          /* our hostname, for EHLO/LHLO */
	uint32_t pool_size;        /* idle connections kept; 0 = none kept */
	uint32_t timeout_ms;       /* connect, each write, each reply; 0 = 30000 */
	uint32_t final_timeout_ms; /* the reply(ies) to the final dot; 0 = timeout_ms */
	uint32_t idle_max_ms;      /* an idle connection older than this is closed,
				    * not reused; 0 = 30000 (Postfix's smtpd gives
				    * up on an idle client after 300 s) */
};

struct relay_msg {
	const char *mail_from;    /* without <>; "" = null sender */
	const char *const *rcpts; /* without <> */
	uint32_t nrcpts;
	uint8_t family;       /* the real client: 4, 6 or 0 (unknown) */
	const uint8_t *addr;  /* network order, 4 or 16 bytes */
	const char *helo;     /* the client's HELO/EHLO argument or "" */
	uint8_t ptr;          /* enum ptr_result of the client's PTR */
	const char *ptr_name; /* its PTR name or ""; passed on only
						* when forward-confirmed (PTR_PASS) */
	const char *prefix;   /* our headers, CRLF wire form */
	size_t prefix_len;
	const struct chunk *body; /* dot-unstuffed, CRLF; may be NULL */
	bool body_8bit;           /* BODY=8BITMIME when the downstream offers it */
	bool smtputf8;            /* SMTPUTF8 on MAIL when the downstream offers it */
};

/*
 * The single answer for the sender. code 250: every recipient has the
 * message. 451: try again (enh 4.4.1 no answer, 4.4.2 connection lost,
 * 4.5.0 garbled reply, or the downstream's own 4.x.x). 5xx: the downstream's
 * refusal, passed on. text: what happened, printable ASCII, NUL-terminated.
 */
struct relay_result {
	uint16_t code;
	char enh[8]; /* "x.y.z" */
	char text[256];
	uint32_t delivered; /* recipients that have the message */
};

/* Parses the target; does not connect. NULL with one line in err. */
struct relay *relay_create(const struct relay_params *p, char *err, size_t errlen);
void relay_destroy(struct relay *r);

/* Hands one message over. Always fills res; returns 0 when res->code is
 * 2xx, -1 otherwise. */
int relay_deliver(struct relay *r, const struct relay_msg *m, struct relay_result *res);

#endif
