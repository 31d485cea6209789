/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim.h — DKIM verification (RFC 6376, 8301, 8463) for the control
 * plane, on libopendkim, with its key records fetched beforehand.
 *
 * Why this shape: smtpedge must know, per message received over IPv6,
 * whether some DKIM signature passes, and no thread may wait on DNS for
 * it. So a message's key records are named first (dkim_keys_*: the header
 * block read with the verifier's own splitter, the d= and s= of each
 * DKIM-Signature field), fetched by the caller's event loop, and handed to
 * the job; the verification then answers every key lookup from that set
 * and never does DNS: a name not in the set is a temperror at once. A
 * verifier is made once and shared by every control-plane pool thread;
 * each message is a job fed the bytes as they arrive, and ended when the
 * message is complete. Never call any of this on a DPDK worker.
 *
 * Threads: one verifier, any number of jobs at once on different threads;
 * a single job, and a key set, is used by one thread at a time.
 */
#ifndef SMTPEDGE_AUTH_DKIM_H
#define SMTPEDGE_AUTH_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ub_result;
struct dkim_verifier;
struct dkim_job;
struct dkim_keys;

struct dkim_params {
	/* The bound the caller puts on each key lookup (SERVFAIL or no
	 * answer in time is a temperror); the library's own timeout is set
	 * to it. 0 means DKIM_DEFAULT_DNS_TIMEOUT_MS. */
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

/* A message's key records for v's verification: the names to fetch, then
 * their answers. NULL + errno (EINVAL, ENOMEM). The verifier is only used
 * while naming (feed, scan_end). */
struct dkim_keys *dkim_keys_create(struct dkim_verifier *v);

/* Tolerates NULL; returns NULL. */
struct dkim_keys *dkim_keys_free(struct dkim_keys *k);

/*
 * The message as for dkim_job_feed(), from its start, any split: only the
 * header block is read, by the library as the verification will read it.
 * Returns 1 once the header block has ended (feed no more), 0 while it goes
 * on. A signature the library finds malformed, one over the bound and an
 * rsa-sha1 one name no record; the same name twice is fetched once.
 */
int dkim_keys_feed(struct dkim_keys *k, const uint8_t *p, size_t n);

/* The message ended (inside its header block, perhaps): the last field
 * counts. Call once, after the feeding, before reading the names. */
void dkim_keys_scan_end(struct dkim_keys *k);

/* The names to fetch ("sel._domainkey.example.org"), TXT. */
unsigned dkim_keys_count(const struct dkim_keys *k);
const char *dkim_keys_name(const struct dkim_keys *k, unsigned i);

/* Name i's answer: err 0 and libunbound's result, or a libunbound error
 * (res NULL). Takes res (ub_resolve_free). Anything but NOERROR or
 * NXDOMAIN, or a bogus answer, is a failure the verifier reports as a
 * temperror. */
void dkim_keys_answer(struct dkim_keys *k, unsigned i, int err, struct ub_result *res);
/* Name i got no answer in time (temperror, "timed out"). */
void dkim_keys_timeout(struct dkim_keys *k, unsigned i);

/* Lookups the verification answered from the set, and those it found no
 * answer for (temperror, never a wait). */
uint32_t dkim_keys_served(const struct dkim_keys *k);
uint32_t dkim_keys_missing(const struct dkim_keys *k);

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

/* Past the header block with signatures to verify: from here on the job
 * only hashes the body, so it may be fed piece by piece as the body
 * arrives, long before dkim_job_end(). False for an unsigned message (its
 * body is ignored), one the library gave up on, and before the empty line. */
bool dkim_job_hashing(const struct dkim_job *job);

/* The key set dkim_job_end() answers lookups from (not owned; it must live
 * until then). Without one, every key is missing. */
void dkim_job_use_keys(struct dkim_job *job, struct dkim_keys *k);

/*
 * Finish the message and verify, with no DNS: the keys come from the set.
 * Writes one result per DKIM-Signature field in header order, at most max
 * of them, and their count to *n (0: the message is unsigned, "dkim=none"). Returns 0, or -1 +
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
