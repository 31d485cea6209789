/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/spool.h — the embedded default handoff: accepted mail written to a
 * local Maildir, whole and on disk, before the sender is told 250. Messages
 * are committed in groups that share the disk's flushes.
 */
#ifndef SMTPEDGE_CONTROL_SPOOL_H
#define SMTPEDGE_CONTROL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct chunk;
struct spool;
struct txrec;

/* Done: err 0 when the message's file and its entry in new/ are on disk,
 * else the errno that stopped it (nothing of it is then left in new/).
 * Called once per submission, on the spool's committer thread. */
typedef void spool_done_fn(void *arg, int err);

/* Called on the committer thread for each group once it is on disk, before
 * its done calls: its messages and the fsyncs (or syncfs) it issued. */
typedef void spool_group_fn(void *arg, unsigned msgs, unsigned fsyncs);

#define SPOOL_MAX_GROUP   256  /* messages one group holds */
#define SPOOL_MAX_WAITING 8192 /* submitted and not yet answered */
#define SPOOL_WINDOW_US   200  /* how long a group waits for more messages */
#define SPOOL_SYNCERS     8    /* files written and fsync'd at once */

struct spool_params {
	unsigned max_group;   /* 0: SPOOL_MAX_GROUP */
	unsigned max_waiting; /* 0: SPOOL_MAX_WAITING */
	unsigned window_us;   /* 0: SPOOL_WINDOW_US; past it a group starts */
	unsigned syncers;     /* 0: SPOOL_SYNCERS */
	bool syncfs;          /* one syncfs(2) per group, not one fsync per file */
	unsigned stall_s;     /* the test shim: every group waits this long first */
	spool_group_fn *on_group;
	void *group_arg;
};

/* Opens (and creates) DIR/tmp, DIR/new, DIR/cur and starts the committer.
 * p NULL: the defaults. NULL with one line in err on failure. */
struct spool *spool_open(const char *dir, const char *hostname, const struct spool_params *p,
			 char *err, size_t errlen);
/* Stops the committer after it has committed every submission (so each
 * gets its done call before this returns), and frees the spool. */
void spool_close(struct spool *s);

/* Queues prefix (our headers, copied) then the message (msg must stay
 * whole until done is called) for the next group, and returns at once.
 * The group writes each file to tmp/ and fsyncs it, renames it into new/,
 * fsyncs new/ once, and only then calls each done. -1 with errno EAGAIN
 * when SPOOL_MAX_WAITING submissions wait already (done is not called),
 * ENOMEM, or ECANCELED after spool_close began. Safe from any thread. */
int spool_submit(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg,
		 spool_done_fn *done, void *arg);

/* spool_submit and wait for its group: 0 on success; -1 with errno, and
 * nothing left in new/, on failure. */
int spool_write(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg);

/* A new queue id (17 hex digits, unique in this process and over time),
 * for our Received: header, the 250 and the log. Thread-safe. */
void queue_id_new(char out[24]);

/* The Received: header for rec (RFC 5321 4.4), CRLF-terminated. */
size_t spool_received(const struct txrec *rec, const char *hostname, char *out, size_t n);

#endif
