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
#include "dataplane/smtp.h"

#define TXREC_REPLIES 32

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
	const struct smtp_chunk *body;   /* MSG_SPOOL: the message, read-only */
};

#endif
