/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/checks.h — the authentication step of the control plane: SPF (resumable,
 * on the dispatcher), DKIM's key records named for the dispatcher to fetch and
 * the signatures verified from them on a work thread, the ipv6-auth rule's
 * verdict, and the headers we add (Authentication-Results, RFC 8601) and
 * remove (forged ones that claim our authserv-id).
 */
#ifndef SMTPEDGE_CONTROL_CHECKS_H
#define SMTPEDGE_CONTROL_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/dkim.h"
#include "auth/spf.h"

#include "common/rules.h"

struct ub_ctx;
struct chunk;
struct txrec;

#define AUTH_MAX_SIGS 8

struct auth_spf {
	enum spf_result result;
	enum spf_identity_kind kind;
	char identity[SPF_IDENTITY_MAX];
};

struct auth_verdict {
	struct auth_spf spf;
	struct dkim_sig_result dkim[AUTH_MAX_SIGS];
	unsigned ndkim;
	bool dkim_pass; /* at least one signature verified */
	bool temp;      /* a check failed temporarily */
	enum policy_outcome outcome;
	struct policy_reply reply;
};

struct auth;
struct auth_hash;

/* SPF checker and DKIM verifier over the shared resolver. NULL with one
 * line in err. */
struct auth *auth_create(struct ub_ctx *ub, const char *hostname, uint32_t dns_timeout_ms,
			 char *err, size_t errlen);
void auth_destroy(struct auth *a);

/* SPF of the transaction, resumable (no DNS yet; see auth/spf.h): NULL
 * out of memory. */
struct spf_eval *auth_spf_start(struct auth *a, uint8_t family, const uint8_t *addr,
				const char *helo, const char *mail_from);
/* The result of a finished evaluation. */
void auth_spf_result(const struct spf_eval *ev, struct auth_spf *out);
/* The key records msg's DKIM signatures name, to be fetched
 * (dkim_keys_name(), dkim_keys_answer()): read from the header block, at
 * most AUTH_MAX_SIGS signatures. NULL out of memory. */
struct dkim_keys *auth_dkim_keys(struct auth *a, const struct chunk *msg);
/* The same from the header block alone: the first len bytes of a chain
 * the worker is still filling, read by the rules of common/chunk.h. */
struct dkim_keys *auth_dkim_keys_head(struct auth *a, const struct chunk *msg, uint32_t len);
/* DKIM of the message with the keys fetched (no DNS: a key not in keys,
 * or keys NULL, is a temperror), then the rule's verdict. */
void auth_verify(struct auth *a, const struct chunk *msg, struct dkim_keys *keys,
		 const struct policy_rule *rule, uint8_t family, struct auth_verdict *v);

/*
 * A signed message's body hashed while it arrives: a DKIM job begun on the
 * header block (the first len bytes of a chain the worker is still
 * filling, read by the rules of common/chunk.h), then fed the body as
 * bytes of the chain become final. NULL when the message has no signature
 * to verify (or out of memory): it is verified whole at the end. One
 * thread at a time; it holds no pointer into the chain that it reads
 * beyond what the rules allow, and may be freed whatever became of the
 * chain.
 */
struct auth_hash *auth_hash_begin(struct auth *a, const struct chunk *msg, uint32_t len);
/* The first final bytes of the chain are final (every chunk before the
 * one the worker fills): feeds those not fed yet. Returns how many. */
uint32_t auth_hash_feed(struct auth_hash *h, uint32_t final);
/* Bytes of the message fed so far, the header block's included. */
uint32_t auth_hash_fed(const struct auth_hash *h);
/* Tolerates NULL; returns NULL. */
struct auth_hash *auth_hash_free(struct auth_hash *h);
/* auth_verify() with the job h begun on msg's header block and fed part
 * of it (NULL: none): msg is complete, the rest is fed and the signatures
 * verified. Takes h (freed). An h begun on another chain is freed and msg
 * verified whole. */
void auth_verify_hashed(struct auth *a, const struct chunk *msg, struct auth_hash *h,
			struct dkim_keys *keys, const struct policy_rule *rule, uint8_t family,
			struct auth_verdict *v);

/* The Authentication-Results header of authserv_id for rec and v (iprev,
 * spf, dkim), CRLF-terminated, folded. The client's PTR name appears, in a
 * comment, only when rec->ptr is PTR_PASS. */
size_t auth_results_header(const char *authserv_id, const struct txrec *rec,
			   const struct auth_verdict *v, char *out, size_t n);

/* The message without the Authentication-Results fields of its header
 * section (up to the first empty line; all of it when there is none) that
 * claim our authserv-id. NULL when there are none (use msg as it is);
 * otherwise a new chain whose first chunk is malloc'd (free it with
 * free(*head)) and whose rest is msg's own chunks. */
struct chunk *auth_strip_forged(const char *authserv_id, const struct chunk *msg);

/* "pass", "fail", ...: the best DKIM result, for the log. */
const char *auth_dkim_summary(const struct auth_verdict *v);

#endif
