/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim.h — DKIM verification (RFC 6376, 8301, 8463) for the control
 * plane, on libopendkim with its DNS answered by the shared libunbound
 * context.
 *
 * Why this shape: smtpedge must know, per message received over IPv6,
 * whether some DKIM signature passes. A verifier is made once and
 * shared by every control-plane pool thread; each message is a job fed the
 * bytes as they arrive, and ended when the message is complete. Only
 * dkim_job_end() does DNS, and it may block its (pool) thread for up to
 * max_signatures * dns_timeout_ms. Never call any of this on a DPDK worker.
 *
 * Threads: one verifier, any number of jobs at once on different threads;
 * a single job is used by one thread at a time.
 */
#ifndef SMTPEDGE_AUTH_DKIM_H
#define SMTPEDGE_AUTH_DKIM_H

#include <stddef.h>
#include <stdint.h>

struct ub_ctx;
struct dkim_verifier;
struct dkim_job;

struct dkim_params {
	/* The process's one libunbound context, made and configured by the
	 * caller (forwarder, ub_ctx_async(ub, 1) for threads). Thread-safe;
	 * it must outlive the verifier. Required. */
	struct ub_ctx *ub;
	/* Bound on each key lookup; SERVFAIL or no answer in time is a
	 * temperror. 0 means DKIM_DEFAULT_DNS_TIMEOUT_MS. */
	uint32_t dns_timeout_ms;
	/* Signatures evaluated per message, in header order; the rest are
	 * reported as DKIM_RES_POLICY and cost no DNS. 0 means
	 * DKIM_DEFAULT_MAX_SIGNATURES. */
	uint32_t max_signatures;
};

#define DKIM_DEFAULT_DNS_TIMEOUT_MS 5000u
#define DKIM_DEFAULT_MAX_SIGNATURES 8u

/* One bound on a single (folded) header field; a longer one makes every
 * signature of the message a permerror. */
#define DKIM_HEADER_FIELD_MAX (64u * 1024u)

/* RFC 8601 §2.7.1 results, per signature. */
enum dkim_outcome {
	DKIM_RES_NONE,
	DKIM_RES_PASS,
	DKIM_RES_FAIL,
	DKIM_RES_NEUTRAL,
	DKIM_RES_POLICY,
	DKIM_RES_TEMPERROR,
	DKIM_RES_PERMERROR,
};

struct dkim_sig_result {
	enum dkim_outcome result;
	char domain[256];   /* d=, "" if the signature had none */
	char selector[64];  /* s= (truncated if longer) */
	char algorithm[32]; /* a=, e.g. "rsa-sha256" */
	char reason[96];    /* why not pass, for logs and A-R comments */
	unsigned key_bits;  /* 0 when no key was loaded */
};

/* Initialises libopendkim. NULL + errno (EINVAL, ENOMEM, ...). */
struct dkim_verifier *dkim_verifier_create(const struct dkim_params *params);

/* After every job is freed. Tolerates NULL; returns NULL. */
struct dkim_verifier *dkim_verifier_destroy(struct dkim_verifier *v);

/* One message. id names it in logs (copied). NULL + errno. */
struct dkim_job *dkim_job_begin(struct dkim_verifier *v, const char *id);

/*
 * The message content as received after DATA: CRLF lines, header fields,
 * the empty line, the body; dot-stuffing already removed and without the
 * final ".". Any split, fed in order. Returns 0, or -1 + errno only for
 * misuse (EINVAL: NULL job or after dkim_job_end). A malformed message is
 * not an error here: it shows in the results.
 */
int dkim_job_feed(struct dkim_job *job, const uint8_t *p, size_t n);

/*
 * Finish the message and verify: may block on DNS. Writes one result per
 * DKIM-Signature field in header order, at most max of them, and their
 * count to *n (0: the message is unsigned, "dkim=none"). Returns 0, or -1 +
 * errno for misuse (EINVAL) or when the library failed (ENOMEM, EIO); *n
 * is valid in every case. Once only per job.
 */
int dkim_job_end(struct dkim_job *job, struct dkim_sig_result *out, unsigned max, unsigned *n);

/* Safe at any point, also without dkim_job_end. Returns NULL. */
struct dkim_job *dkim_job_free(struct dkim_job *job);

/* Where the job's input stands ("hdr-line", "body", "done", ...): logs. */
const char *dkim_job_state_name(const struct dkim_job *job);

/* "pass", "fail", ... as written in Authentication-Results (RFC 8601). */
const char *dkim_outcome_name(enum dkim_outcome outcome);

#endif
