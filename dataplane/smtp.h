/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/smtp.h — the SMTP protocol engine of smtpedge: the interface.
 *
 * The engine is pure C over byte buffers. The worker feeds it the bytes its
 * TCP engine delivers; it produces reply bytes through ops->write and asks
 * the control plane for verdicts through ops->check, holding every reply
 * behind a pending verdict so that pipelined replies leave in command order
 * (RFC 2920). It knows nothing of DPDK, rings or sockets, so tests and fuzz
 * targets drive it alone.
 *
 * Memory: the session is one small fixed-size object in the caller's
 * memory (smtp_session_size() bytes). What it has in flight (queued
 * replies, input held behind a verdict, a partial command line) lives in a
 * buffer of smtp_buf_size() bytes the caller lends through ops->buf_get
 * while there is any and gets back through ops->buf_put when there is
 * none, so an idle session holds no buffer. When buf_get has none to
 * lend, the session waits: feed() takes nothing, start() greets later, and
 * smtp_session_writable() tries again. Message bodies and recipient lists
 * live in chunks the caller lends through ops->chunk_get / ops->chunk_put;
 * the engine never calls malloc.
 */
#ifndef SMTPEDGE_DATAPLANE_SMTP_H
#define SMTPEDGE_DATAPLANE_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/chunk.h"
#include "common/txrec.h"

/* Compile-time ceilings of the fixed-size session; params are clamped. */
#define SMTP_CMD_LINE_CAP 2048u /* largest max_cmd_line honoured */
#define SMTP_PENDING_CAP  4096u /* largest max_pending_in honoured */
#define SMTP_PATH_MAX     256u  /* RFC 5321 4.5.3.1.3, with the <> */
#define SMTP_DOMAIN_MAX   255u  /* RFC 5321 4.5.3.1.2 */
#define SMTP_LOCAL_MAX    64u   /* RFC 5321 4.5.3.1.1 */

struct smtp_session; /* opaque: smtp_session_size() bytes */

struct smtp_peer {
	uint8_t family;   /* 4 or 6 */
	uint8_t addr[16]; /* network order; IPv4 in the first 4 */
	uint16_t port;
};

/*
 * Bodies and recipient lists live in chains of struct chunk (common/chunk.h)
 * of caller memory: chunk_get returns raw memory of *cap bytes, the engine
 * lays the chunk header at its start and uses the rest; chunk_put receives
 * the same pointer back.
 */

struct smtp_params {             /* shared by a worker's sessions; read-only */
	const char *hostname;    /* greeting, EHLO, 421 texts */
	uint32_t max_cmd_line;   /* with CRLF; 0 = 512 (RFC 5321 4.5.3.1.4) */
	uint32_t max_text_line;  /* with CRLF; 0 = 1000 (4.5.3.1.6) */
	uint32_t max_rcpts;      /* 0 = 100 (4.5.3.1.8) */
	uint64_t max_msg_size;   /* SIZE advertised and enforced; 0 = 10 MiB */
	uint32_t max_errors;     /* then 421 4.7.0; 0 = 20 */
	uint32_t max_pending_in; /* input held behind a verdict; 0 = 4096 */
	bool pregreet_reject;    /* talking before the greeting: reject */
	bool tls_offer;          /* STARTTLS in EHLO (a certificate is
					  configured and ops->starttls set) */
	/* Recipient domains we are MX for; NULL accepts none (never a relay). */
	bool (*domain_accepted)(const void *arg, const char *domain, size_t len);
	const void *domain_arg;
};

enum smtp_stage {
	SMTP_STAGE_CONNECT, /* the greeting waits on it */
	SMTP_STAGE_MAIL,
	SMTP_STAGE_RCPT,
	SMTP_STAGE_DATA_END, /* the reply to the end of DATA / BDAT LAST */
	SMTP_STAGE_COUNT
};

enum smtp_body_type { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

/*
 * A verdict request. Pointers are valid during the check call only, except
 * rcpts and body, which stay put until the verdict is delivered (or until
 * smtp_session_fini): the control plane may read the chains meanwhile.
 */
struct smtp_check {
	enum smtp_stage stage;
	uint32_t token; /* give it back to smtp_session_verdict */
	const struct smtp_peer *peer;
	const char *helo;          /* "" before HELO/EHLO */
	const char *mail_from;     /* "" for <>; NULL before MAIL */
	const char *rcpt;          /* RCPT: the address asked about */
	const struct chunk *rcpts; /* accepted so far (DATA_END: all) */
	uint32_t nrcpts;
	const struct chunk *body; /* DATA_END: the message */
	uint64_t body_size;
	uint64_t size_param; /* MAIL SIZE=, 0 when absent */
	enum smtp_body_type body_type;
	bool smtputf8;
};

struct smtp_verdict {
	uint16_t code;    /* 0: no objection, the engine's own reply */
	char enh[8];      /* "5.7.25"; "" picks a default by class */
	const char *text; /* may be NULL; one line, clipped */
	/* DATA_END only: the caller keeps the message's body and recipient
	 * chains (a reader still has them) and gives them back itself with
	 * chunk_put; the engine forgets them without returning them. */
	bool keep_message;
};

enum smtp_check_result {
	SMTP_CHECK_DONE = 0,    /* *v filled in now */
	SMTP_CHECK_PENDING = 1, /* smtp_session_verdict() comes later */
};

/*
 * What happened: once per transaction (MAIL to its end) and once at session
 * end. The engine's account (kind, flags, sizes, the reply codes given since
 * the previous record) is the transaction record's own part, given whole;
 * the pointers are valid during the record call only.
 */
struct smtp_record {
	struct txrec_smtp smtp;
	const struct smtp_peer *peer;
	const char *helo;
	const char *mail_from; /* NULL outside a transaction */
	const struct chunk *rcpts;
	const struct chunk *body; /* NULL when discarded */
};

struct smtp_ops { /* ctx is the glue's, one per session */
	/* Reply bytes to TCP. May take fewer than n: the engine stops and
	 * resumes on smtp_session_writable(). */
	uint32_t (*write)(void *ctx, const void *p, uint32_t n);
	/* Graceful close after 221 or 421 has been written, or once the
	 * input the peer ended with FIN is all answered. Called once. Must
	 * not call smtp_session_fini() itself. */
	void (*close)(void *ctx);
	/* Returns SMTP_CHECK_PENDING, or fills *v (zeroed on entry) and
	 * returns SMTP_CHECK_DONE. NULL: no objection at any stage. Must not
	 * call smtp_session_verdict() from inside: answer through *v. */
	int (*check)(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v);
	/* Caller memory for bodies and recipient lists; NULL when the
	 * worker's budget is spent (the peer gets 452 4.3.1). */
	void *(*chunk_get)(void *ctx, uint32_t *cap);
	void (*chunk_put)(void *ctx, void *chunk);
	/* A buffer of smtp_buf_size() bytes for what is in flight, or NULL
	 * when none is free: the engine waits, and the caller calls
	 * smtp_session_writable() once one may be. buf_put gives it back. */
	void *(*buf_get)(void *ctx);
	void (*buf_put)(void *ctx, void *buf);
	void (*record)(void *ctx, const struct smtp_record *rec); /* may be NULL */
	/* STARTTLS (RFC 3207), with params->tls_offer only. starttls() asks
	 * whether the handshake may start: true, or false with *v (zeroed on
	 * entry) filled with the refusal (454 4.7.0 when code is 0).
	 * tls_begin() comes once the 220 is all written: every byte the
	 * caller receives from then on is TLS, and the plaintext it decrypts
	 * comes back through smtp_session_feed(). */
	bool (*starttls)(void *ctx, struct smtp_verdict *v);
	void (*tls_begin)(void *ctx);
	/* The header block of the message being received is complete: the
	 * first len bytes of the body chain at body (up to and with the empty
	 * line that ends it, or the whole of a message that has none) will
	 * not change, nor will the chunks that hold them, save the `len` and
	 * `next` of the last one. Once per transaction. Returns true when it
	 * lent the chain to a reader: from then on the engine gives that
	 * chain back through body_release, whole, instead of chunk_put,
	 * unless a DATA_END verdict that was PENDING has come (the reader is
	 * done by then). NULL: not told. */
	bool (*headers)(void *ctx, const struct chunk *body, uint32_t len);
	void (*body_release)(void *ctx, struct chunk *body);
	/* The chain is lent and another chunk of it filled: its first final
	 * bytes (every chunk before the one now filling) will not change.
	 * Each time a chunk fills, the count only growing. NULL: not told. */
	void (*body_final)(void *ctx, uint32_t final);
};

enum smtp_state {
	SMTP_ST_NEW,      /* initialised, not started */
	SMTP_ST_CONNECT,  /* the CONNECT verdict is pending: no greeting yet */
	SMTP_ST_REJECTED, /* refused at connect: 503 to all but QUIT */
	SMTP_ST_GREETED,  /* 220 sent, no HELO/EHLO yet */
	SMTP_ST_READY,    /* HELO/EHLO done, no transaction */
	SMTP_ST_MAIL,     /* MAIL accepted, no recipient yet */
	SMTP_ST_RCPT,     /* at least one recipient */
	SMTP_ST_DATA,     /* reading a DATA body */
	SMTP_ST_BDAT,     /* in a BDAT transaction */
	SMTP_ST_CLOSING,  /* 221/421 queued: draining output, input ignored */
	SMTP_ST_CLOSED,   /* ops->close called */
	SMTP_ST_COUNT
};

size_t smtp_session_size(void);
size_t smtp_buf_size(void);
/* Lays a session in mem (memlen >= smtp_session_size()). NULL on bad
 * arguments. params, ops and peer must outlive the session. */
struct smtp_session *smtp_session_init(void *mem, size_t memlen, const struct smtp_params *params,
				       const struct smtp_ops *ops, void *ctx,
				       const struct smtp_peer *peer);
/* Asks the CONNECT check; the greeting (or the refusal) follows. With no
 * buffer to be had it waits for smtp_session_writable(). */
void smtp_session_start(struct smtp_session *s);
/* Takes client bytes; returns how many it took: all of them unless the
 * held-input bound (max_pending_in) is reached while a verdict or the
 * output is awaited, or none when no buffer is to be had. Bytes after 221/421 are taken and dropped, and so are
 * bytes after a STARTTLS command until tls_begin() (counted: they would be
 * plaintext injected ahead of the handshake). */
uint32_t smtp_session_feed(struct smtp_session *s, const uint8_t *p, uint32_t n);
/* Bytes feed() is sure to take now: the receive window to advertise. */
uint32_t smtp_session_rcv_space(const struct smtp_session *s);
/* The answer to a PENDING check. A token that is not the one awaited
 * (late, duplicate, after close) is dropped and counted. */
void smtp_session_verdict(struct smtp_session *s, uint32_t token, const struct smtp_verdict *v);
/* ops->write took less than offered earlier, or ops->buf_get had none;
 * it may go on now. */
void smtp_session_writable(struct smtp_session *s);
/* Idle timer: 421 4.4.2 and close (or drop unsent output when closing). */
void smtp_session_idle(struct smtp_session *s);
/* True while the session waits for the client's next command with nothing
 * pending (no verdict, no body, no held input, no unsent reply): closing it
 * loses nothing the client was told was taken. */
bool smtp_session_awaits_command(const struct smtp_session *s);
/* The worker needs the slot: 421 4.7.0 and close, as the idle timer does.
 * A session holding a buffer writes the 421 with it and gives it back once
 * the 421 is handed to the transport. */
void smtp_session_evict(struct smtp_session *s);
/* True while evict() would give a held buffer back at once and lose
 * nothing the client was told was taken: in the dialogue (greeted or
 * refused, up to a body being read), no verdict awaited, no switch to TLS
 * pending, every reply handed to the transport. A partial command line,
 * held input and an open transaction all qualify. */
bool smtp_session_evictable(const struct smtp_session *s);
/* The peer sent FIN: its input is complete, but it still reads. Every
 * command received (held ones included) is answered as its verdict comes,
 * then the session closes; an incomplete line or body is dropped and its
 * transaction recorded aborted. Later feed() bytes are dropped. (After a
 * RST nothing can be sent: the caller goes straight to fini.) */
void smtp_session_peer_closed(struct smtp_session *s);
/* Records what was not yet recorded and returns every chunk. Safe in any
 * state, twice, and on a session that was never started. */
void smtp_session_fini(struct smtp_session *s);

int smtp_session_state(const struct smtp_session *s);
const char *smtp_state_name(int state);
const char *smtp_stage_name(int stage);

struct smtp_session_stats {
	uint32_t errors;
	uint32_t stale_verdicts;
	uint32_t chunks_held;
	uint64_t tls_discarded; /* bytes after STARTTLS, before TLS */
	uint32_t buf_waits;     /* times ops->buf_get had no buffer */
	bool buf_held;          /* a buffer is lent now */
	bool pregreet;
	bool tls; /* STARTTLS done */
};
void smtp_session_stats(const struct smtp_session *s, struct smtp_session_stats *st);

#endif
