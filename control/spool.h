/*
 * spool.h - the embedded default handoff: accepted mail written to a local
 * Maildir, whole and on disk, before the sender is told 250.
 */
#ifndef SMTPEDGE_SPOOL_H
#define SMTPEDGE_SPOOL_H

#include <stddef.h>

struct spool;
struct txrec;

/* Opens (and creates) DIR/tmp, DIR/new, DIR/cur. NULL with one line in err
 * on failure. */
struct spool *spool_open(const char *dir, const char *hostname, char *err,
			 size_t errlen);
void spool_close(struct spool *s);

/* Writes rec's message with a Received: header in front: to tmp/, fsync'd,
 * renamed into new/, the directory fsync'd. Fills rec->queue_id. Safe from
 * several threads at once. 0 on success; -1 with errno, and nothing left in
 * new/, on failure. */
int spool_write(struct spool *s, struct txrec *rec);

/* The Received: header for rec (RFC 5321 4.4), CRLF-terminated. */
size_t spool_received(const struct txrec *rec, const char *hostname,
		      char *out, size_t n);

#endif
