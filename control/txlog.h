/*
 * txlog.h - the transaction log: one key=value line per SMTP transaction
 * (and one per session end), written by the control plane, never a worker.
 */
#ifndef SMTPEDGE_TXLOG_H
#define SMTPEDGE_TXLOG_H

#include <stddef.h>

struct txrec;

/* The line for rec, with a final '\n'. Returns its length. */
size_t txlog_format(const struct txrec *rec, char *out, size_t n);

#endif
