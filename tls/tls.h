/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tls/tls.h — the TLS layer of a worker's sessions (RFC 3207 STARTTLS): the
 * interface.
 *
 * OpenSSL runs over two memory BIOs per connection: ciphertext the TCP
 * engine delivers goes into one, plaintext for the SMTP engine comes out of
 * SSL_read; replies go in through SSL_write and the records come out of the
 * other BIO to tcp_send. No socket, no EAL: tests and fuzz targets drive it
 * with bytes alone.
 *
 * Memory: a connection (struct tls_conn plus OpenSSL's SSL) exists only
 * for a session in TLS; tls_conn_free releases all of it on every path.
 * The ciphertext a connection takes is bounded (tls_conn_room), so what the
 * TCP engine acknowledges is what this layer holds, never more.
 *
 * Contexts: a struct tls_ctx is an SSL_CTX (certificates, versions, ticket
 * keys). Every connection holds a reference to the context it was made
 * from, so a reload gives new sessions the new certificates while sessions
 * already in TLS keep theirs; the last connection of an old context frees
 * it. A worker learns of a new context through its struct tls_slot.
 */
#ifndef SMTPEDGE_TLS_TLS_H
#define SMTPEDGE_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tls_ctx; /* an SSL_CTX */
struct tls_conn;
struct tls_tickets;

struct tls_ctx_params {
	const char *cert, *key;         /* ECDSA P-256; the chain may follow */
	const char *rsa_cert, *rsa_key; /* optional second certificate */
	const char *chain;              /* optional extra chain file */
	int min_version;                /* 12 or 13 */
	struct tls_tickets *tickets;    /* shared ticket keys; NULL: OpenSSL's */
};

/* Loads the certificates and keys. NULL on failure: *key names the
 * parameter at fault ("cert", "key", "rsa_key", ...) and why says what is
 * wrong with it, for the config's one-line error. */
struct tls_ctx *tls_ctx_create(const struct tls_ctx_params *p, const char **key, char *why,
			       size_t whylen);
void tls_ctx_ref(struct tls_ctx *c);
void tls_ctx_put(struct tls_ctx *c); /* tolerates NULL */

/*
 * A worker's current context. The control plane offers a new one (with one
 * reference for the worker); the worker takes it at its next
 * tls_slot_current() and drops its reference to the old one, which lives on
 * as long as a connection made from it does.
 */
struct tls_slot {
	struct tls_ctx *_Atomic offered;
	struct tls_ctx *current; /* the worker's own */
};
void tls_slot_offer(struct tls_slot *s, struct tls_ctx *c);
struct tls_ctx *tls_slot_current(struct tls_slot *s);
void tls_slot_clear(struct tls_slot *s);

/*
 * Ticket keys shared by all workers: the current key encrypts new tickets,
 * the current and the previous one decrypt. Rotated by one thread (the
 * control plane); read by the workers without locks (a sequence counter).
 */
struct tls_tickets *tls_tickets_create(void);
void tls_tickets_rotate(struct tls_tickets *t);
void tls_tickets_free(struct tls_tickets *t);

/* Why a handshake failed, for counting. */
#define TLS_FAILS(X)                                                   \
	X(PROTOCOL, "protocol") /* not TLS, bad record, bad message */ \
	X(VERSION, "version")   /* below min_version */                \
	X(CIPHER, "no_shared_cipher")                                  \
	X(ALERT, "peer_alert") /* the client sent a fatal alert */     \
	X(OTHER, "other")

enum tls_fail {
#define TLS_FAIL_ENUM(id, name) TLS_FAIL_##id,
	TLS_FAILS(TLS_FAIL_ENUM)
#undef TLS_FAIL_ENUM
		TLS_FAIL__COUNT
};
extern const char *const tls_fail_names[];

struct tls_conn_ops {
	/* Plaintext for the application; returns how much it took. What it
	 * leaves is offered again on tls_conn_pump(). */
	uint32_t (*plain)(void *arg, const uint8_t *p, uint32_t n);
	/* Ciphertext for the peer; returns how much TCP took. */
	uint32_t (*cipher)(void *arg, const uint8_t *p, uint32_t n);
	void (*handshake_done)(void *arg);
	/* The handshake failed, or the peer broke the session (a fatal alert
	 * or a bad record): the caller closes TCP after the alert went out.
	 * Called once. */
	void (*failed)(void *arg, enum tls_fail why);
	/* The peer sent close_notify: its input ended. */
	void (*peer_closed)(void *arg);
};

struct tls_conn_info {
	char version[16]; /* "TLSv1.3" */
	char cipher[64];  /* "TLS_AES_256_GCM_SHA384" */
	int bits, alg_bits;
	bool resumed;
};

struct tls_conn_stats {
	uint64_t alerts_sent, alerts_received;
};

/* NULL when memory runs out. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const struct tls_conn_ops *ops, void *arg,
			      struct tls_conn_stats *stats);
/* Ciphertext from TCP: returns how many bytes it took (at most
 * tls_conn_room()), then runs the handshake or delivers plaintext. */
uint32_t tls_conn_input(struct tls_conn *c, const uint8_t *p, uint32_t n);
/* The same, but only kept: the handshake or the records it completes run
 * at the next tls_conn_pump(), when the caller chooses. */
uint32_t tls_conn_buffer(struct tls_conn *c, const uint8_t *p, uint32_t n);
/* Ciphertext the connection is sure to take now: the receive window. */
uint32_t tls_conn_room(const struct tls_conn *c);
/* Plaintext to send: returns how much was taken (0 before the handshake
 * is done or while earlier records wait for TCP). */
uint32_t tls_conn_write(struct tls_conn *c, const void *p, uint32_t n);
/* Retries what waited: records for TCP, plaintext for the application. */
void tls_conn_pump(struct tls_conn *c);
/* Queues close_notify (sent as TCP takes it). */
void tls_conn_shutdown(struct tls_conn *c);
/* Records still waiting for TCP. */
uint32_t tls_conn_unsent(const struct tls_conn *c);
bool tls_conn_established(const struct tls_conn *c);
bool tls_conn_info(const struct tls_conn *c, struct tls_conn_info *out);
void tls_conn_free(struct tls_conn *c); /* tolerates NULL */

#endif
