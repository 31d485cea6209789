/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim_keys.h — a message's DKIM key records, between auth/dkim.c and
 * auth/dkim_keys.c. Private to auth/dkim*.c: the control plane only sees
 * auth/dkim.h.
 *
 * A scanner job (dkim.c) hands the key set the library's signatures at the
 * end of the headers; the key set keeps the names and, once fetched, the
 * answers; libopendkim's DNS hooks (dkim_keys_attach) answer from the set
 * of the job being verified on the calling thread.
 */
#ifndef SMTPEDGE_AUTH_DKIM_KEYS_H
#define SMTPEDGE_AUTH_DKIM_KEYS_H

#include <stddef.h>

#include <opendkim/dkim.h>

struct dkim_job;
struct dkim_keys;

struct dkim_verifier;

/* A job that gives k the library's signatures at the end of the header
 * block (dkim_keys_sig()) and reads no further. NULL out of memory. */
struct dkim_job *dkim_job_scanner(struct dkim_verifier *v, struct dkim_keys *k);
/* The verifier's bound on signatures per message. */
uint32_t dkim_verifier_max_signatures(const struct dkim_verifier *v);
/* true once the scanner is past the header block. */
bool dkim_job_scanned(const struct dkim_job *job);
/* The message ended: the field being collected is complete. */
void dkim_job_scan_end(struct dkim_job *job);

/* One signature of the message, in header order, as the library parsed
 * it, after the prescreen. */
void dkim_keys_sig(struct dkim_keys *k, DKIM_SIGINFO *sig);

/* Point the library's DNS hooks at the key sets (and switch off its
 * resolv.conf init/close hooks). */
void dkim_keys_attach(DKIM_LIB *lib);

/* The set the hooks answer from on this thread while the library
 * verifies (NULL: none, every key missing). */
void dkim_keys_enter(struct dkim_keys *k);
void dkim_keys_leave(void);

#endif
