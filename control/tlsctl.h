/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/tlsctl.h — the control plane's side of TLS: the contexts the workers use,
 * their reload, and the ticket keys every worker shares.
 *
 * At start one context is loaded from [tls] and offered to each worker's
 * slot. A reload (smtpedgectl tls reload) loads the same files again and
 * offers the new context: each worker takes it at its next STARTTLS, and
 * sessions already in TLS keep the context they were made from. A thread
 * rotates the ticket keys every [tls] ticket_rotate_s.
 */
#ifndef SMTPEDGE_CONTROL_TLSCTL_H
#define SMTPEDGE_CONTROL_TLSCTL_H

#include <stddef.h>

struct edge_config;
struct tls_slot;

/* Nothing to do without [tls] cert. -1 with a one-line err on failure. */
int tlsctl_init(const struct edge_config *cfg, unsigned n_workers, char *err, size_t errlen);
/* The worker's slot; NULL when STARTTLS is not offered. */
struct tls_slot *tlsctl_slot(unsigned worker);
/* Loads the certificates again; -1 with why when they do not load (the
 * workers keep the context they have). */
int tlsctl_reload(char *why, size_t len);
/* After the workers have stopped. */
void tlsctl_fini(void);

#endif
