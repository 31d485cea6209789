/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/txlog.h — the transaction log: one key=value line per SMTP
 * transaction (and one per session end), written by the control plane, never
 * a worker.
 */
#ifndef SMTPEDGE_CONTROL_TXLOG_H
#define SMTPEDGE_CONTROL_TXLOG_H

#include <stddef.h>
#include <stdio.h>

struct txrec;

/* A line never needs more: the values the peer chose are bounded. */
#define TXLOG_LINE_MAX 2048

/* Opens a log file for appending; one it creates gets mode 0640 whatever
 * the umask (the lines name peers and senders). NULL with errno set. */
FILE *txlog_open(const char *path);

/* The line for rec, with a final '\n'. Returns its length. */
size_t txlog_format(const struct txrec *rec, char *out, size_t n);

#endif
