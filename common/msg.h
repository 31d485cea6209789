/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * common/msg.h — the messages between the planes, on their rings.
 *
 * Each worker has two rte_rings of these fixed-size 32-byte messages: a
 * request ring (the worker enqueues, the dispatcher thread dequeues) and a
 * verdict ring (the control threads enqueue, the worker dequeues). A message
 * names its session by index and generation: a verdict whose generation no
 * longer matches is for a session that has closed, and is dropped and
 * counted. Anything larger than a message (a transaction record, a message
 * body) travels by pointer to an object the worker owns and gets back.
 *
 * A body lent early (MSG_DKIM_HEADERS) is the exception: the worker goes on
 * filling the chain while the dispatcher reads its header block, so the
 * two keep to the rules in common/chunk.h, and a chain whose transaction
 * ends without reaching the dispatcher in a MSG_SPOOL is not the worker's
 * to free any more: it goes to the dispatcher in MSG_BODY_RETURN, behind
 * the MSG_DKIM_HEADERS on the same ring, so it is freed only after the
 * dispatcher has read it. The worker frees a lent chain itself only once
 * the MSG_SPOOL_DONE for it has come back. While the body arrives the
 * worker says, each time a chunk of it fills, how many of its bytes are
 * final (MSG_BODY_FINAL: every chunk before the one being filled), and
 * the dispatcher may read those too, by the same rules, until the
 * MSG_SPOOL or MSG_BODY_RETURN that comes behind them on the ring.
 */
#ifndef SMTPEDGE_COMMON_MSG_H
#define SMTPEDGE_COMMON_MSG_H

#include <stdint.h>

#include "common/rules.h"

enum msg_kind {
	/* worker -> control */
	MSG_RDNS = 1,     /* look up the peer: addr */
	MSG_SPOOL,        /* hand a message on: rec (a struct txrec) */
	MSG_LOG,          /* write a transaction log line: rec */
	MSG_SPF,          /* MAIL accepted: start SPF (rec: helo, mail_from, addr) */
	MSG_SPF_CANCEL,   /* RSET ended transaction txn: its SPF check is of no use */
	MSG_DKIM_HEADERS, /* the header block of txn's message is in (u.hdrs):
			     fetch its DKIM keys now */
	MSG_BODY_RETURN,  /* free the chain u.hdrs.body (one or more lent
			     bodies, linked); the fetch of txn is of no use */
	MSG_BODY_FINAL,   /* the first u.hdrs.len bytes of txn's lent body
			     are final: they may be hashed now */
	/* control -> worker */
	MSG_RDNS_DONE,  /* result: enum ptr_result */
	MSG_SPOOL_DONE, /* rec comes back with reply_code/enh/text set */
};

struct chunk;
struct txrec;

struct ctl_msg {
	uint8_t kind;   /* enum msg_kind */
	uint8_t family; /* 4 or 6 */
	uint8_t result;
	uint8_t pad;
	uint32_t idx; /* the session's slot in its worker */
	uint32_t gen; /* the slot's generation when the message was made */
	uint32_t txn; /* MSG_SPF_CANCEL, _DKIM_HEADERS, _BODY_RETURN,
			 _BODY_FINAL: the session's transaction */
	union {
		uint8_t addr[16];
		struct txrec *rec;
		struct {
			struct chunk *body; /* the body chain's head */
			uint32_t len;       /* the header block's bytes;
					       MSG_BODY_FINAL: the final ones */
		} hdrs;
	} u;
};

_Static_assert(sizeof(struct ctl_msg) == 32, "ring element size");

#endif
