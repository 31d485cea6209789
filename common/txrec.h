/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/txrec.h — the one record of an SMTP transaction, as the planes pass it:
 * for the spool (with the body) and for the transaction log.
 *
 * The SMTP engine fills its part (struct txrec_smtp) and hands it to the
 * worker with each record; the worker takes it whole into a struct txrec
 * from a mempool, adds what it knows of the session, and passes its pointer
 * in a ctl_msg. The control plane reads it, and either returns it to the
 * worker (MSG_SPOOL, with the queue id filled in) or puts it back in the
 * mempool (MSG_LOG).
 */
#ifndef SMTPEDGE_COMMON_TXREC_H
#define SMTPEDGE_COMMON_TXREC_H

#include <stdbool.h>
#include <stdint.h>

#include "common/chunk.h"
#include "common/rules.h"

#define TXREC_REPLIES   32    /* reply codes kept per record */
#define TXREC_MAX_RCPTS 10000 /* [smtp] max_recipients at most */

/* Once per transaction (MAIL to its end) and once at session end. */
enum txrec_kind { TXREC_TRANSACTION, TXREC_SESSION };

/* Record flags. */
#define TXREC_F_PREGREET   0x01u /* the peer talked before the greeting */
#define TXREC_F_DELIVERED  0x02u /* DATA_END answered 2xx */
#define TXREC_F_ABORTED    0x04u /* ended by RSET, EHLO, close, timeout */
#define TXREC_F_BARE_NL    0x08u /* bare CR or LF in the body */
#define TXREC_F_TOO_BIG    0x10u /* SIZE exceeded */
#define TXREC_F_NO_MEM     0x20u /* chunk_get failed */
#define TXREC_F_LONG_LINE  0x40u /* a text line over max_text_line */
#define TXREC_F_LATE_WRITE 0x80u /* written after the sender was told 451 */

/*
 * What the SMTP engine says happened. replies[] holds every reply code
 * given since the previous record, so the records of a session together list
 * all its replies in order.
 */
struct txrec_smtp {
	uint8_t kind;   /* enum txrec_kind */
	uint32_t flags; /* TXREC_F_* */
	uint32_t nrcpts;
	uint64_t size; /* body bytes received, unstuffed */
	uint32_t nreplies;
	uint32_t replies_dropped; /* beyond TXREC_REPLIES */
	uint32_t errors;          /* session error count so far */
	uint32_t stale_verdicts;
	uint16_t replies[TXREC_REPLIES];
};

struct txrec {
	struct txrec_smtp smtp; /* the engine's part, as it gave it */
	uint64_t session_id;
	uint64_t time_us; /* wall clock, microseconds since the epoch */
	uint8_t family;
	uint8_t ptr;         /* enum ptr_result, as the worker knew it */
	uint8_t ptr_outcome; /* enum policy_outcome of the PTR rule */
	uint16_t port;
	uint16_t worker;
	uint32_t txn; /* the session's transaction (its MAIL) */
	uint8_t addr[16];
	int32_t spool_errno; /* MSG_SPOOL: 0 written, else why not */
	char queue_id[24];   /* MSG_SPOOL: set by the spool */
	char ptr_name[256];  /* set by the control plane */
	char helo[256];
	char mail_from[260];
	char rcpt[260]; /* the first recipient */
	/* MSG_SPOOL, read-only until the answer goes back: */
	const struct chunk *body;     /* the message */
	const struct chunk *rcpts;    /* every recipient, NUL-separated */
	struct policy_rule auth_rule; /* ipv6-auth or ipv4-auth, as of the open */
	bool body_8bit, smtputf8;
	/* MSG_SPOOL answers, set by the control plane; MSG_LOG, by the worker: */
	uint16_t reply_code;
	char reply_enh[8];
	char reply_text[256];
	char spf[12], dkim[12]; /* results' names, "" when not checked */
	uint8_t auth_outcome;   /* enum policy_outcome of the auth rule */
	bool auth_checked;
	/* The session's TLS after STARTTLS; tls_version "" without. */
	char tls_version[16]; /* "TLSv1.3" */
	char tls_cipher[64];  /* "TLS_AES_256_GCM_SHA384" */
	uint16_t tls_bits, tls_alg_bits;
};

#endif
