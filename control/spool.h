/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/spool.h — the embedded default handoff: accepted mail written to a
 * local Maildir, whole and on disk, before the sender is told 250.
 */
#ifndef SMTPEDGE_CONTROL_SPOOL_H
#define SMTPEDGE_CONTROL_SPOOL_H

#include <stddef.h>

struct chunk;
struct spool;
struct txrec;

/* Opens (and creates) DIR/tmp, DIR/new, DIR/cur. NULL with one line in err
 * on failure. */
struct spool *spool_open(const char *dir, const char *hostname, char *err, size_t errlen);
void spool_close(struct spool *s);

/* Writes prefix (our headers) then the message: to tmp/, fsync'd, renamed
 * into new/, the directory fsync'd. Safe from several threads at once. 0 on
 * success; -1 with errno, and nothing left in new/, on failure. */
int spool_write(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg);

/* A new queue id (17 hex digits, unique in this process and over time),
 * for our Received: header, the 250 and the log. Thread-safe. */
void queue_id_new(char out[24]);

/* The Received: header for rec (RFC 5321 4.4), CRLF-terminated. */
size_t spool_received(const struct txrec *rec, const char *hostname, char *out, size_t n);

#endif
