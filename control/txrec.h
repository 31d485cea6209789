/*
 * txrec.h - what the dataplane tells the control plane about one SMTP
 * transaction: for the spool (with the body) and for the transaction log.
 *
 * A worker fills one from a mempool and passes its pointer in a ctl_msg; the
 * control plane reads it, and either returns it to the worker (MSG_SPOOL,
 * with the queue id filled in) or puts it back in the mempool (MSG_LOG).
 */
#ifndef SMTPEDGE_TXREC_H
#define SMTPEDGE_TXREC_H

#include <stdint.h>

#include "control/msg.h"
#include "control/policy.h"
#include "dataplane/smtp.h"

#define TXREC_REPLIES 32
#define TXREC_MAX_RCPTS 10000   /* [smtp] max_recipients at most */

enum txrec_kind { TXREC_TRANSACTION, TXREC_SESSION };

struct txrec {
	uint64_t session_id;
	uint64_t time_us;            /* wall clock, microseconds since the epoch */
	uint8_t kind;                /* enum txrec_kind */
	uint8_t family;
	uint8_t ptr;                 /* enum ptr_result, as the worker knew it */
	uint8_t ptr_outcome;         /* enum policy_outcome of the PTR rule */
	uint16_t port;
	uint16_t worker;
	uint32_t txn;                /* the session's transaction (its MAIL) */
	uint8_t addr[16];
	uint32_t flags;              /* SMTP_RF_* */
	uint32_t nrcpts;
	uint64_t size;
	uint32_t nreplies;
	uint16_t replies[TXREC_REPLIES];
	int32_t spool_errno;         /* MSG_SPOOL: 0 written, else why not */
	char queue_id[24];           /* MSG_SPOOL: set by the spool */
	char ptr_name[256];          /* set by the control plane */
	char helo[256];
	char mail_from[260];
	char rcpt[260];              /* the first recipient */
	/* MSG_SPOOL, read-only until the answer goes back: */
	const struct smtp_chunk *body;   /* the message */
	const struct smtp_chunk *rcpts;  /* every recipient, NUL-separated */
	struct policy_rule auth_rule;    /* ipv6-auth or ipv4-auth, as of the open */
	bool body_8bit, smtputf8;
	/* MSG_SPOOL answers, set by the control plane; MSG_LOG, by the worker: */
	uint16_t reply_code;
	char reply_enh[8];
	char reply_text[256];
	char spf[12], dkim[12];      /* results' names, "" when not checked */
	uint8_t auth_outcome;        /* enum policy_outcome of the auth rule */
	bool auth_checked;
};

#endif
