/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * auth/dkim.c — DKIM verification of one message at a time, on libopendkim.
 *
 * Why: mail sent over IPv6 must pass SPF or DKIM, and the verdict
 * goes into Authentication-Results, so every signature gets its own RFC 8601
 * result. libopendkim does the canonicalisation and the cryptography; this
 * file adds what smtpedge needs around it:
 *
 *  - a resumable splitter that turns the bytes as they arrive into
 *    dkim_header() per field (when the next line shows the field is
 *    complete), dkim_eoh() at the empty line and dkim_body() per chunk,
 *    straight from the caller's buffer: the body is never stored nor re-read;
 *  - a job that stops at the end of the headers (a scanner) names the key
 *    records of the message's signatures from the library's own parse of
 *    them (dkim_keys_*, auth/dkim_keys.c), for the caller to fetch ahead;
 *  - signature processing delayed to dkim_job_end() (DELAYSIGPROC), where
 *    every key lookup is answered from the job's key set, never by DNS;
 *  - the RFC 8301 rules enforced here whatever the library does: rsa-sha1
 *    never passes (skipped before any DNS), RSA keys under 1024 bits fail;
 *  - each signature judged with DKIM_SIG_CHECK() and the library's error
 *    for it: libopendkim 2.11 leaves the PASSED flag set after a body-hash
 *    mismatch, and also where the key forbids the signature (t=s);
 *  - a bound on signatures per message (the rest cost no DNS) and on the
 *    size of one header field.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <opendkim/dkim.h>

#include "auth/dkim.h"
#include "auth/dkim_keys.h"

/* RFC 8301 §3.2: verifiers MUST NOT consider smaller RSA keys valid. */
#define DKIM_RSA_MIN_BITS  1024u
#define DKIM_ED25519_BITS  256u
#define DKIM_FIELD_INITIAL 1024u

struct dkim_verifier {
	DKIM_LIB *lib;
	uint32_t max_signatures;
};

/* Where the splitter stands. HDR_* are inside the header block. */
enum dkim_job_state {
	DKIM_JOB_HDR_LINE, /* at the start of a header line */
	DKIM_JOB_HDR_TEXT, /* inside a header line */
	DKIM_JOB_HDR_CR,   /* CR seen inside a header line */
	DKIM_JOB_EOH_CR,   /* CR seen at the start of a line */
	DKIM_JOB_BODY,     /* body goes to dkim_body() */
	DKIM_JOB_SKIP,     /* nothing to verify: body ignored */
	DKIM_JOB_BROKEN,   /* the library gave up on the message */
	DKIM_JOB_DONE,     /* dkim_job_end() ran */
	DKIM_JOB_NSTATES
};

struct dkim_job {
	struct dkim_verifier *v;
	DKIM *dkim;
	struct dkim_keys *scan; /* a scanner's key set: stops at the headers' end */
	struct dkim_keys *keys; /* what dkim_job_end() looks keys up in */
	enum dkim_job_state state;
	/* Set when BROKEN: what every unprocessed signature becomes. */
	enum dkim_outcome broken_outcome;
	char broken_reason[96];
	/* The header field being collected, with its inner CRLFs. */
	unsigned char *field;
	size_t field_len;
	size_t field_cap;
	char id[64]; /* libopendkim keeps a pointer to it */
};

/* ---- outcomes ---------------------------------------------------------- */

static const char *const dkim_outcome_names[] = {
	[DKIM_RES_NONE] = "none",           [DKIM_RES_PASS] = "pass",
	[DKIM_RES_FAIL] = "fail",           [DKIM_RES_NEUTRAL] = "neutral",
	[DKIM_RES_POLICY] = "policy",       [DKIM_RES_TEMPERROR] = "temperror",
	[DKIM_RES_PERMERROR] = "permerror",
};

const char *
dkim_outcome_name(enum dkim_outcome outcome)
{
	if ((size_t)outcome >= sizeof(dkim_outcome_names) / sizeof(dkim_outcome_names[0]))
		return "unknown";
	return dkim_outcome_names[outcome];
}

/* The signing algorithms we know, and whether RFC 8301/8463 let them pass.
 * rsa-sha1 is skipped at the end of the headers: no DNS is spent on it. */
static const struct dkim_alg_row {
	const char *name;
	bool acceptable;
	bool rsa;
} dkim_algs[] = {
	{ "rsa-sha1", false, true },
	{ "rsa-sha256", true, true },
	{ "ed25519-sha256", true, false },
};

/* The signature's a= tag as written. Not dkim_sig_getsignalg(): for a
 * signature the library could not parse (kept by BADSIGHANDLES) that
 * reads 0, which is DKIM_SIGN_RSASHA1. */
static const char *
dkim_alg_text(DKIM_SIGINFO *sig)
{
	return (const char *)dkim_sig_gettagvalue(sig, 0, (unsigned char *)"a");
}

static const struct dkim_alg_row *
dkim_alg_find(DKIM_SIGINFO *sig)
{
	const char *text = dkim_alg_text(sig);
	size_t i;

	if (text == NULL)
		return NULL;
	for (i = 0; i < sizeof(dkim_algs) / sizeof(dkim_algs[0]); i++)
		if (strcasecmp(dkim_algs[i].name, text) == 0)
			return &dkim_algs[i];
	return NULL;
}

/* What a signature that did not pass becomes, by libopendkim's error.
 * Key lookups that failed are temporary (RFC 6376 §6.1.2 TEMPFAIL); a
 * signature that does not verify is "fail"; every other problem with the
 * signature or its key record is permanent. */
static const struct dkim_err_row {
	DKIM_SIGERROR err;
	enum dkim_outcome outcome;
} dkim_errs[] = {
	{ DKIM_SIGERROR_KEYFAIL, DKIM_RES_TEMPERROR }, { DKIM_SIGERROR_BADSIG, DKIM_RES_FAIL },
	{ DKIM_SIGERROR_KEYTOOSMALL, DKIM_RES_FAIL },  { DKIM_SIGERROR_OK, DKIM_RES_FAIL },
	{ DKIM_SIGERROR_UNKNOWN, DKIM_RES_FAIL },
};

static enum dkim_outcome
dkim_err_outcome(DKIM_SIGERROR err)
{
	size_t i;

	for (i = 0; i < sizeof(dkim_errs) / sizeof(dkim_errs[0]); i++)
		if (dkim_errs[i].err == err)
			return dkim_errs[i].outcome;
	return DKIM_RES_PERMERROR;
}

/* ---- verifier ---------------------------------------------------------- */

/* At the end of the headers, before any DNS: skip what can never pass and
 * what is over the per-message bound. */
static DKIM_CBSTAT
dkim_prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
	struct dkim_job *job = dkim_get_user_context(dkim);
	int i;

	for (i = 0; i < nsigs; i++) {
		const struct dkim_alg_row *row = dkim_alg_find(sigs[i]);

		/* A signature with a syntax error keeps its own verdict. */
		bool sound = dkim_sig_geterror(sigs[i]) == DKIM_SIGERROR_UNKNOWN;

		if ((uint32_t)i >= job->v->max_signatures ||
		    (sound && row != NULL && !row->acceptable))
			dkim_sig_ignore(sigs[i]);
	}
	return DKIM_CBSTAT_CONTINUE;
}

static int
dkim_lib_setopt(DKIM_LIB *lib, int opt, void *data, size_t len)
{
	return dkim_options(lib, DKIM_OP_SETOPT, opt, data, len) == DKIM_STAT_OK ? 0 : -1;
}

struct dkim_verifier *
dkim_verifier_create(const struct dkim_params *params)
{
	struct dkim_verifier *v;
	uint32_t timeout_ms;
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES | DKIM_LIBFLAGS_DELAYSIGPROC;
	unsigned int minbits = DKIM_RSA_MIN_BITS;
	unsigned int timeout_s;
	int err = EINVAL;

	if (params == NULL) {
		errno = EINVAL;
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return NULL;
	timeout_ms = params->dns_timeout_ms ? params->dns_timeout_ms : DKIM_DEFAULT_DNS_TIMEOUT_MS;
	v->max_signatures = params->max_signatures ? params->max_signatures :
						     DKIM_DEFAULT_MAX_SIGNATURES;

	v->lib = dkim_init(NULL, NULL);
	if (v->lib == NULL) {
		err = ENOMEM;
		goto fail;
	}
	/* The library's own timeout is whole seconds; the caller's fetch
	 * is the real bound, so give the library at least as much. */
	timeout_s = (timeout_ms + 999u) / 1000u;
	if (dkim_lib_setopt(v->lib, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) != 0 ||
	    dkim_lib_setopt(v->lib, DKIM_OPTS_MINKEYBITS, &minbits, sizeof(minbits)) != 0 ||
	    dkim_lib_setopt(v->lib, DKIM_OPTS_TIMEOUT, &timeout_s, sizeof(timeout_s)) != 0 ||
	    dkim_set_prescreen(v->lib, dkim_prescreen) != DKIM_STAT_OK)
		goto fail;
	dkim_keys_attach(v->lib);
	return v;
fail:
	dkim_verifier_destroy(v);
	errno = err;
	return NULL;
}

uint32_t
dkim_verifier_max_signatures(const struct dkim_verifier *v)
{
	return v != NULL ? v->max_signatures : DKIM_DEFAULT_MAX_SIGNATURES;
}

struct dkim_verifier *
dkim_verifier_destroy(struct dkim_verifier *v)
{
	if (v == NULL)
		return NULL;
	if (v->lib != NULL)
		dkim_close(v->lib);
	free(v);
	return NULL;
}

/* ---- job: the one place that changes state ------------------------------ */

static const char *const dkim_job_state_names[DKIM_JOB_NSTATES] = {
	[DKIM_JOB_HDR_LINE] = "hdr-line", [DKIM_JOB_HDR_TEXT] = "hdr-text",
	[DKIM_JOB_HDR_CR] = "hdr-cr",     [DKIM_JOB_EOH_CR] = "eoh-cr",
	[DKIM_JOB_BODY] = "body",         [DKIM_JOB_SKIP] = "skip",
	[DKIM_JOB_BROKEN] = "broken",     [DKIM_JOB_DONE] = "done",
};

const char *
dkim_job_state_name(const struct dkim_job *job)
{
	return job != NULL ? dkim_job_state_names[job->state] : "none";
}

static void
dkim_job_enter(struct dkim_job *job, enum dkim_job_state state)
{
	job->state = state;
}

static void
dkim_job_break(struct dkim_job *job, enum dkim_outcome outcome, const char *reason)
{
	job->broken_outcome = outcome;
	if (reason == NULL || reason[0] == '\0')
		reason = "message not verifiable";
	snprintf(job->broken_reason, sizeof(job->broken_reason), "%s", reason);
	dkim_job_enter(job, DKIM_JOB_BROKEN);
}

static bool
dkim_job_in_header(const struct dkim_job *job)
{
	return job->state <= DKIM_JOB_EOH_CR;
}

struct dkim_job *
dkim_job_begin(struct dkim_verifier *v, const char *id)
{
	struct dkim_job *job;
	DKIM_STAT stat;

	if (v == NULL) {
		errno = EINVAL;
		return NULL;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL)
		return NULL;
	job->v = v;
	snprintf(job->id, sizeof(job->id), "%s", id != NULL ? id : "-");
	job->field = malloc(DKIM_FIELD_INITIAL);
	if (job->field == NULL)
		goto fail;
	job->field_cap = DKIM_FIELD_INITIAL;

	job->dkim = dkim_verify(v->lib, (const unsigned char *)job->id, NULL, &stat);
	if (job->dkim == NULL || dkim_set_user_context(job->dkim, job) != DKIM_STAT_OK)
		goto fail;
	dkim_job_enter(job, DKIM_JOB_HDR_LINE);
	return job;
fail:
	dkim_job_free(job);
	errno = ENOMEM;
	return NULL;
}

static void dkim_job_eoh(struct dkim_job *job);

/* A scanner: a job whose end of the headers hands the library's signature
 * list to the key set, and which ignores the body. */
struct dkim_job *
dkim_job_scanner(struct dkim_verifier *v, struct dkim_keys *k)
{
	struct dkim_job *job = dkim_job_begin(v, "scan");

	if (job != NULL)
		job->scan = k;
	return job;
}

bool
dkim_job_scanned(const struct dkim_job *job)
{
	return !dkim_job_in_header(job);
}

void
dkim_job_scan_end(struct dkim_job *job)
{
	if (dkim_job_in_header(job))
		dkim_job_eoh(job);
}

bool
dkim_job_hashing(const struct dkim_job *job)
{
	return job != NULL && job->state == DKIM_JOB_BODY;
}

void
dkim_job_use_keys(struct dkim_job *job, struct dkim_keys *k)
{
	if (job != NULL)
		job->keys = k;
}

struct dkim_job *
dkim_job_free(struct dkim_job *job)
{
	if (job == NULL)
		return NULL;
	if (job->dkim != NULL)
		dkim_free(job->dkim);
	free(job->field);
	free(job);
	return NULL;
}

/* ---- the splitter: one handler per state, each consumes >= 0 bytes and
 * either consumes something or changes state, so the loop always advances */

static bool
dkim_field_append(struct dkim_job *job, const uint8_t *p, size_t n)
{
	if (n > DKIM_HEADER_FIELD_MAX - job->field_len) {
		dkim_job_break(job, DKIM_RES_PERMERROR, "header field too long");
		return false;
	}
	if (job->field_len + n > job->field_cap) {
		size_t cap = job->field_cap;
		unsigned char *field;

		while (cap < job->field_len + n)
			cap *= 2;
		if (cap > DKIM_HEADER_FIELD_MAX)
			cap = DKIM_HEADER_FIELD_MAX;
		field = realloc(job->field, cap);
		if (field == NULL) {
			dkim_job_break(job, DKIM_RES_TEMPERROR, "out of memory");
			return false;
		}
		job->field = field;
		job->field_cap = cap;
	}
	memcpy(job->field + job->field_len, p, n);
	job->field_len += n;
	return true;
}

/* Hand the collected field to the library, without its final CRLF. */
static bool
dkim_field_flush(struct dkim_job *job)
{
	size_t len = job->field_len;
	DKIM_STAT stat;

	if (len == 0)
		return true;
	if (len >= 2 && job->field[len - 2] == '\r' && job->field[len - 1] == '\n')
		len -= 2;
	job->field_len = 0;
	stat = dkim_header(job->dkim, job->field, len);
	/* SYNTAX: a field the library cannot use (no colon, say). It is left
	 * out; a signature that covered it will not verify. */
	if (stat != DKIM_STAT_OK && stat != DKIM_STAT_SYNTAX) {
		dkim_job_break(job, DKIM_RES_TEMPERROR, dkim_geterror(job->dkim));
		return false;
	}
	return true;
}

static void
dkim_job_eoh(struct dkim_job *job)
{
	DKIM_STAT stat;

	if (!dkim_field_flush(job))
		return;
	stat = dkim_eoh(job->dkim);
	if (job->scan != NULL) {
		DKIM_SIGINFO **sigs;
		int nsigs, i;

		if (stat == DKIM_STAT_OK &&
		    dkim_getsiglist(job->dkim, &sigs, &nsigs) == DKIM_STAT_OK)
			for (i = 0; i < nsigs; i++)
				dkim_keys_sig(job->scan, sigs[i]);
		dkim_job_enter(job, DKIM_JOB_SKIP);
		return;
	}
	if (stat == DKIM_STAT_OK)
		dkim_job_enter(job, DKIM_JOB_BODY);
	else if (stat == DKIM_STAT_NOSIG)
		dkim_job_enter(job, DKIM_JOB_SKIP);
	else
		dkim_job_break(job,
			       stat == DKIM_STAT_NORESOURCE || stat == DKIM_STAT_INTERNAL ?
				       DKIM_RES_TEMPERROR :
				       DKIM_RES_PERMERROR,
			       dkim_geterror(job->dkim));
}

static size_t
dkim_feed_hdr_line(struct dkim_job *job, const uint8_t *p, size_t n)
{
	(void)n;
	if (p[0] == ' ' || p[0] == '\t') {
		/* Folded: the field goes on. */
		if (dkim_field_append(job, p, 1))
			dkim_job_enter(job, DKIM_JOB_HDR_TEXT);
		return 1;
	}
	if (p[0] == '\r') {
		dkim_job_enter(job, DKIM_JOB_EOH_CR);
		return 1;
	}
	if (dkim_field_flush(job) && dkim_field_append(job, p, 1))
		dkim_job_enter(job, DKIM_JOB_HDR_TEXT);
	return 1;
}

static size_t
dkim_feed_hdr_text(struct dkim_job *job, const uint8_t *p, size_t n)
{
	const uint8_t *cr = memchr(p, '\r', n);
	size_t take = cr != NULL ? (size_t)(cr - p) + 1 : n;

	if (dkim_field_append(job, p, take) && cr != NULL)
		dkim_job_enter(job, DKIM_JOB_HDR_CR);
	return take;
}

static size_t
dkim_feed_hdr_cr(struct dkim_job *job, const uint8_t *p, size_t n)
{
	(void)n;
	if (p[0] != '\n') {
		/* A bare CR inside the line: keep it, go on with the text. */
		dkim_job_enter(job, DKIM_JOB_HDR_TEXT);
		return 0;
	}
	if (dkim_field_append(job, p, 1))
		dkim_job_enter(job, DKIM_JOB_HDR_LINE);
	return 1;
}

static size_t
dkim_feed_eoh_cr(struct dkim_job *job, const uint8_t *p, size_t n)
{
	static const uint8_t cr = '\r';

	(void)n;
	if (p[0] == '\n') {
		dkim_job_eoh(job);
		return 1;
	}
	/* A line that starts with a bare CR: not the end of the headers but
	 * the start of a (malformed) field. */
	if (dkim_field_flush(job) && dkim_field_append(job, &cr, 1))
		dkim_job_enter(job, DKIM_JOB_HDR_TEXT);
	return 0;
}

static size_t
dkim_feed_body(struct dkim_job *job, const uint8_t *p, size_t n)
{
	DKIM_STAT stat = dkim_body(job->dkim, (unsigned char *)p, n);

	if (stat != DKIM_STAT_OK)
		dkim_job_break(job, DKIM_RES_TEMPERROR, dkim_geterror(job->dkim));
	return n;
}

static size_t
dkim_feed_ignore(struct dkim_job *job, const uint8_t *p, size_t n)
{
	(void)job;
	(void)p;
	return n;
}

static size_t (*const dkim_feeders[DKIM_JOB_NSTATES])(struct dkim_job *, const uint8_t *,
						      size_t) = {
	[DKIM_JOB_HDR_LINE] = dkim_feed_hdr_line, [DKIM_JOB_HDR_TEXT] = dkim_feed_hdr_text,
	[DKIM_JOB_HDR_CR] = dkim_feed_hdr_cr,     [DKIM_JOB_EOH_CR] = dkim_feed_eoh_cr,
	[DKIM_JOB_BODY] = dkim_feed_body,         [DKIM_JOB_SKIP] = dkim_feed_ignore,
	[DKIM_JOB_BROKEN] = dkim_feed_ignore,     [DKIM_JOB_DONE] = dkim_feed_ignore,
};

int
dkim_job_feed(struct dkim_job *job, const uint8_t *p, size_t n)
{
	if (job == NULL || (p == NULL && n != 0) || job->state == DKIM_JOB_DONE) {
		errno = EINVAL;
		return -1;
	}
	while (n > 0) {
		size_t used = dkim_feeders[job->state](job, p, n);

		p += used;
		n -= used;
	}
	return 0;
}

/* ---- results ----------------------------------------------------------- */

static void
dkim_copy(char *dst, size_t cap, const unsigned char *src)
{
	snprintf(dst, cap, "%s", src != NULL ? (const char *)src : "");
}

/* Did the library check the signature against a key it loaded? It has
 * when it found the signature good (PASSED is set even where the key then
 * forbids it) or bad. */
static bool
dkim_key_used(unsigned int flags, DKIM_SIGERROR err)
{
	return (flags & DKIM_SIGFLAG_PROCESSED) != 0 &&
	       ((flags & DKIM_SIGFLAG_PASSED) != 0 || err == DKIM_SIGERROR_BADSIG);
}

/* The verdict for one signature, from the library's flags and error and
 * our own RFC 8301 rules: a pass needs the signature verified, its body
 * hash matched, and no error for it. */
static void
dkim_judge(const struct dkim_job *job, DKIM_SIGINFO *sig, unsigned index, struct dkim_sig_result *r)
{
	const struct dkim_alg_row *alg = dkim_alg_find(sig);
	unsigned int flags = dkim_sig_getflags(sig);
	DKIM_SIGERROR err = dkim_sig_geterror(sig);
	unsigned int bits = 0;
	const char *why;

	memset(r, 0, sizeof(*r));
	dkim_copy(r->domain, sizeof(r->domain), dkim_sig_getdomain(sig));
	dkim_copy(r->selector, sizeof(r->selector), dkim_sig_getselector(sig));
	dkim_copy(r->algorithm, sizeof(r->algorithm),
		  (const unsigned char *)(alg != NULL ? alg->name : dkim_alg_text(sig)));
	/* The library sizes RSA keys only, and only those it loaded; an
	 * ed25519 key was loaded when the signature was checked with it. */
	if ((flags & DKIM_SIGFLAG_PROCESSED) != 0 &&
	    dkim_sig_getkeysize(sig, &bits) == DKIM_STAT_OK)
		r->key_bits = bits;
	if (alg != NULL && !alg->rsa)
		r->key_bits = dkim_key_used(flags, err) ? DKIM_ED25519_BITS : 0;

	if ((flags & DKIM_SIGFLAG_IGNORE) != 0) {
		if (alg != NULL && !alg->acceptable) {
			r->result = DKIM_RES_FAIL;
			snprintf(r->reason, sizeof(r->reason), "%s not acceptable (RFC 8301)",
				 alg->name);
		} else {
			r->result = DKIM_RES_POLICY;
			snprintf(r->reason, sizeof(r->reason),
				 "not evaluated: signature %u over limit %u", index + 1,
				 (unsigned)job->v->max_signatures);
		}
		return;
	}
	/* DKIM_SIG_CHECK alone is not enough: the library verifies the
	 * cryptography even where the key forbids the signature (t=s and an
	 * i= below d=), sets PASSED, and says why in the error. */
	if (err == DKIM_SIGERROR_OK && DKIM_SIG_CHECK(sig)) {
		if (alg != NULL && alg->rsa && r->key_bits < DKIM_RSA_MIN_BITS) {
			r->result = DKIM_RES_FAIL;
			snprintf(r->reason, sizeof(r->reason),
				 "RSA key of %u bits, under %u (RFC 8301)", r->key_bits,
				 DKIM_RSA_MIN_BITS);
			return;
		}
		r->result = DKIM_RES_PASS;
		return;
	}
	if ((flags & DKIM_SIGFLAG_PROCESSED) == 0 && err == DKIM_SIGERROR_UNKNOWN) {
		/* Never reached verification. */
		if (job->broken_reason[0] != '\0') {
			r->result = job->broken_outcome;
			snprintf(r->reason, sizeof(r->reason), "%s", job->broken_reason);
		} else {
			r->result = DKIM_RES_NEUTRAL;
			snprintf(r->reason, sizeof(r->reason), "not evaluated");
		}
		return;
	}
	r->result = dkim_err_outcome(err);
	if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
		why = "body hash mismatch";
	else if (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_UNKNOWN)
		why = "signature did not verify";
	else
		why = dkim_sig_geterrorstr(err);
	snprintf(r->reason, sizeof(r->reason), "%s", why != NULL ? why : "unknown error");
}

int
dkim_job_end(struct dkim_job *job, struct dkim_sig_result *out, unsigned max, unsigned *n)
{
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0;
	int err = 0;
	int i;

	if (n != NULL)
		*n = 0;
	if (job == NULL || n == NULL || (out == NULL && max != 0) || job->state == DKIM_JOB_DONE ||
	    job->scan != NULL) {
		errno = EINVAL;
		return -1;
	}
	/* A message that ends inside its header block: what we have is all
	 * the headers there are. */
	if (dkim_job_in_header(job))
		dkim_job_eoh(job);

	if (job->state == DKIM_JOB_BODY) {
		DKIM_STAT stat;

		dkim_keys_enter(job->keys);
		stat = dkim_eom(job->dkim, NULL);
		dkim_keys_leave();

		/* Verdict statuses (BADSIG, NOKEY, CANTVRFY...) are read
		 * per signature below; only a library failure matters here. */
		if (stat == DKIM_STAT_NORESOURCE || stat == DKIM_STAT_INTERNAL) {
			dkim_job_break(job, DKIM_RES_TEMPERROR, dkim_geterror(job->dkim));
			err = stat == DKIM_STAT_NORESOURCE ? ENOMEM : EIO;
		}
	}
	if (dkim_getsiglist(job->dkim, &sigs, &nsigs) != DKIM_STAT_OK) {
		sigs = NULL;
		nsigs = 0;
	}
	for (i = 0; i < nsigs && (unsigned)i < max; i++)
		dkim_judge(job, sigs[i], (unsigned)i, &out[i]);
	*n = (unsigned)i;

	/* The library gave up before it knew the signatures: still say that
	 * the message could not be verified, rather than "unsigned". */
	if (*n == 0 && nsigs == 0 && job->state == DKIM_JOB_BROKEN && max > 0) {
		memset(&out[0], 0, sizeof(out[0]));
		out[0].result = job->broken_outcome;
		snprintf(out[0].reason, sizeof(out[0].reason), "%s", job->broken_reason);
		*n = 1;
	}
	dkim_job_enter(job, DKIM_JOB_DONE);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}
