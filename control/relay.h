/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/relay.h — the second handoff of accepted mail: an SMTP or LMTP
 * client to the downstream MTA, so that the sender's 250 means "the next hop
 * has it".
 *
 * relay_submit queues a message and returns at once, from any thread; the
 * relay's own thread (one epoll loop, non-blocking sockets) carries it over
 * one of at most `connections` connections to the downstream, kept open
 * and reused, several messages in flight at once, and calls the done
 * callback with the answer. relay_deliver is the same, waited for.
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
	uint32_t connections;      /* connections open at most; 0 = 64 */
	uint32_t timeout_ms;       /* connect, each write, each reply; 0 = 30000 */
	uint32_t final_timeout_ms; /* the reply(ies) to the final dot; 0 = timeout_ms */
	uint32_t idle_max_ms;      /* an idle connection older than this is closed,
				    * not reused; 0 = 30000 (Postfix's smtpd gives
				    * up on an idle client after 300 s) */
	uint64_t *counters;        /* RELAY__COUNTERS of them, written by the relay's
			     * thread only; NULL = none kept */
};

/* The relay's counters (relay_params.counters). */
enum relay_counter {
	RELAY_CONN_OPENED,  /* connections made to the downstream */
	RELAY_CONN_REUSED,  /* messages begun on a connection kept open */
	RELAY_CONN_OPEN,    /* gauge: connections open now */
	RELAY_PIPELINED,    /* messages whose MAIL, RCPTs and DATA went in one write */
	RELAY_INFLIGHT,     /* gauge: messages on a connection now */
	RELAY_INFLIGHT_MAX, /* the most messages on connections at once */
	RELAY_QUEUED,       /* gauge: messages waiting for a connection */
	RELAY__COUNTERS
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

/* Called once per submitted message, on the relay's thread. */
typedef void relay_done_fn(void *arg, const struct relay_result *res);

/* Parses the target (a name is resolved here, once) and starts the relay's
 * thread; does not connect. NULL with one line in err. */
struct relay *relay_create(const struct relay_params *p, char *err, size_t errlen);
/* Stops the thread: messages not answered yet get 451 4.3.0 first. */
void relay_destroy(struct relay *r);

/* Queues one message: the envelope, the client's details and the prefix
 * are copied; the body's chunks must stay alive until done is called. 0
 * when queued (done will be called once); -1 with errno (EINVAL: an
 * envelope that cannot be sent, ENOMEM) and done never called. */
int relay_submit(struct relay *r, const struct relay_msg *m, relay_done_fn *done, void *arg);

/* relay_submit, waited for. Always fills res; returns 0 when res->code is
 * 2xx, -1 otherwise. */
int relay_deliver(struct relay *r, const struct relay_msg *m, struct relay_result *res);

#endif
