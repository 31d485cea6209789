/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tls/tls.c — the TLS layer: OpenSSL over memory BIOs (see tls.h).
 *
 * Choices:
 * - TLS 1.2 and 1.3 only; a lower hello is answered with a
 *   protocol_version alert. AEAD suites with forward secrecy only, X25519
 *   then P-256. No renegotiation (SSL_OP_NO_RENEGOTIATION: a renegotiating
 *   hello gets a no_renegotiation alert), no 0-RTT (max_early_data 0), no
 *   compression.
 * - Resumption is stateless: TLS 1.3 tickets and TLS 1.2 session tickets,
 *   encrypted under keys every worker shares (struct tls_tickets), so a
 *   sender that comes back on another worker resumes too. OpenSSL's session
 *   cache is off: it would grow with the senders and lock across workers.
 * - Bounds: the ciphertext buffered in the input BIO is at most TLS_IN_CAP
 *   (one largest record and then some), the records waiting for TCP at most
 *   TLS_OUT_CAP before tls_conn_write refuses more, and decrypted bytes the
 *   application has not taken wait in a fixed buffer; what the application
 *   leaves is offered again on tls_conn_pump().
 * - Callbacks may end the caller's session; the connection is then freed
 *   when the outermost call into this file returns (c->depth), never under
 *   OpenSSL's feet.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "tls/tls.h"

#define TLS_IN_CAP    (16384u + 2048u + 5u + 1024u) /* a TLS 1.2 record max */
#define TLS_OUT_CAP   16384u
#define TLS_PLAIN_CAP 16384u

const char *const tls_fail_names[] = {
#define TLS_FAIL_NAME(id, name) name,
	TLS_FAILS(TLS_FAIL_NAME)
#undef TLS_FAIL_NAME
};

/* ----------------------------------------------------------- ticket keys */

struct ticket_key {
	uint8_t name[16];
	uint8_t aes[32];
	uint8_t hmac[32];
};

struct tls_tickets {
	_Atomic uint64_t seq; /* odd while being written */
	struct ticket_key cur, prev;
};

static void
ticket_key_new(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		abort(); /* no randomness: nothing safe to do */
}

struct tls_tickets *
tls_tickets_create(void)
{
	struct tls_tickets *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	ticket_key_new(&t->cur);
	ticket_key_new(&t->prev);
	return t;
}

void
tls_tickets_rotate(struct tls_tickets *t)
{
	struct ticket_key k;

	ticket_key_new(&k);
	atomic_fetch_add_explicit(&t->seq, 1, memory_order_acq_rel);
	atomic_thread_fence(memory_order_release);
	t->prev = t->cur;
	t->cur = k;
	atomic_fetch_add_explicit(&t->seq, 1, memory_order_release);
}

void
tls_tickets_free(struct tls_tickets *t)
{
	if (t)
		OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

static void
tickets_read(struct tls_tickets *t, struct ticket_key *cur, struct ticket_key *prev)
{
	uint64_t s0, s1;

	do {
		s0 = atomic_load_explicit(&t->seq, memory_order_acquire);
		*cur = t->cur;
		*prev = t->prev;
		atomic_thread_fence(memory_order_acquire);
		s1 = atomic_load_explicit(&t->seq, memory_order_relaxed);
	} while ((s0 & 1) || s0 != s1);
}

static int
ticket_mac_init(EVP_MAC_CTX *h, const struct ticket_key *k)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(
		OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(h, params);
}

/* 1: key found (or a new ticket made); 2: found under the previous key, so
 * the client gets a fresh ticket; 0: unknown, a full handshake follows. */
static int
ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
	  EVP_MAC_CTX *hctx, int enc)
{
	struct tls_tickets *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct ticket_key cur, prev;
	const struct ticket_key *k;
	int rc = 1;

	tickets_read(t, &cur, &prev);
	if (enc) {
		if (RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(name, cur.name, 16);
		k = &cur;
		if (EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			rc = -1;
	} else {
		if (memcmp(name, cur.name, 16) == 0) {
			k = &cur;
		} else if (memcmp(name, prev.name, 16) == 0) {
			k = &prev;
			rc = 2;
		} else {
			rc = 0;
			goto out;
		}
		if (EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			rc = -1;
	}
	if (rc > 0 && ticket_mac_init(hctx, k) != 1)
		rc = -1;
out:
	OPENSSL_cleanse(&cur, sizeof(cur));
	OPENSSL_cleanse(&prev, sizeof(prev));
	return rc;
}

/* -------------------------------------------------------------- contexts */

static int
fail_why(char *why, size_t len, const char *what, const char *path)
{
	unsigned long e = ERR_peek_last_error();
	char buf[160] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(why, len, "\"%s\" %s%s%s", path, what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
	return -1;
}

/* The key in the context's current slot: EC P-256, or RSA of 2048 bits
 * or more. */
static int
key_kind_ok(SSL_CTX *x, bool rsa, const char *path, char *why, size_t len)
{
	EVP_PKEY *k = SSL_CTX_get0_privatekey(x);
	char group[32] = "";
	size_t glen = 0;

	if (!k)
		return fail_why(why, len, "holds no key", path);
	if (rsa) {
		if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA)
			return fail_why(why, len, "is not an RSA key", path);
		if (EVP_PKEY_get_bits(k) < 2048)
			return fail_why(why, len, "is an RSA key under 2048 bits", path);
		return 0;
	}
	if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
	    EVP_PKEY_get_group_name(k, group, sizeof(group), &glen) != 1 ||
	    strcmp(group, "prime256v1") != 0)
		return fail_why(why, len, "is not an ECDSA P-256 key", path);
	return 0;
}

static int
load_pair(SSL_CTX *x, const char *cert, const char *key, bool rsa, const char **which, char *why,
	  size_t len)
{
	*which = rsa ? "rsa_cert" : "cert";
	if (SSL_CTX_use_certificate_chain_file(x, cert) != 1)
		return fail_why(why, len, "is not a readable PEM certificate", cert);
	*which = rsa ? "rsa_key" : "key";
	if (SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			return fail_why(why, len, "does not match the certificate", key);
		return fail_why(why, len, "is not a readable PEM private key", key);
	}
	if (SSL_CTX_check_private_key(x) != 1)
		return fail_why(why, len, "does not match the certificate", key);
	return key_kind_ok(x, rsa, key, why, len);
}

static int
load_chain(SSL_CTX *x, const char *path, char *why, size_t len)
{
	FILE *f = fopen(path, "r");
	X509 *c;
	int n = 0;

	if (!f)
		return fail_why(why, len, "cannot be read", path);
	while ((c = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(x, c) != 1) {
			X509_free(c);
			fclose(f);
			return fail_why(why, len, "has a certificate that cannot be used", path);
		}
		n++;
	}
	fclose(f);
	ERR_clear_error(); /* the end of the file */
	if (n == 0)
		return fail_why(why, len, "holds no PEM certificate", path);
	return 0;
}

struct tls_ctx *
tls_ctx_create(const struct tls_ctx_params *p, const char **which, char *why, size_t len)
{
	static const char ciphers12[] = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
					"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
					"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
	static const char suites13[] = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
				       "TLS_AES_128_GCM_SHA256";
	SSL_CTX *x;

	ERR_clear_error();
	*which = "cert";
	x = SSL_CTX_new(TLS_server_method());
	if (!x) {
		snprintf(why, len, "no memory for a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(x, p->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(x, TLS1_3_VERSION);
	SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				       SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
	SSL_CTX_clear_options(x, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
	SSL_CTX_set_max_early_data(x, 0);
	SSL_CTX_set_recv_max_early_data(x, 0);
	SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(x, 1);
	SSL_CTX_set_session_id_context(x, (const unsigned char *)"smtpedge", 8);
	if (SSL_CTX_set_cipher_list(x, ciphers12) != 1 ||
	    SSL_CTX_set_ciphersuites(x, suites13) != 1 ||
	    SSL_CTX_set1_groups_list(x, "X25519:P-256") != 1) {
		fail_why(why, len, "cannot be used: the cipher list is refused", p->cert);
		goto bad;
	}
	if (load_pair(x, p->cert, p->key, false, which, why, len) < 0)
		goto bad;
	if (p->chain && p->chain[0]) {
		*which = "chain";
		if (load_chain(x, p->chain, why, len) < 0)
			goto bad;
	}
	if (p->rsa_cert && p->rsa_cert[0] &&
	    load_pair(x, p->rsa_cert, p->rsa_key, true, which, why, len) < 0)
		goto bad;
	if (p->tickets) {
		SSL_CTX_set_app_data(x, p->tickets);
		SSL_CTX_set_tlsext_ticket_key_evp_cb(x, ticket_cb);
	}
	return (struct tls_ctx *)x;
bad:
	SSL_CTX_free(x);
	return NULL;
}

void
tls_ctx_ref(struct tls_ctx *c)
{
	SSL_CTX_up_ref((SSL_CTX *)c);
}

void
tls_ctx_put(struct tls_ctx *c)
{
	SSL_CTX_free((SSL_CTX *)c);
}

void
tls_slot_offer(struct tls_slot *s, struct tls_ctx *c)
{
	/* A context the worker never took is ours again: drop it. */
	tls_ctx_put(atomic_exchange_explicit(&s->offered, c, memory_order_acq_rel));
}

struct tls_ctx *
tls_slot_current(struct tls_slot *s)
{
	struct tls_ctx *n;

	if (atomic_load_explicit(&s->offered, memory_order_relaxed) == NULL)
		return s->current;
	n = atomic_exchange_explicit(&s->offered, NULL, memory_order_acq_rel);
	if (n) {
		tls_ctx_put(s->current);
		s->current = n;
	}
	return s->current;
}

void
tls_slot_clear(struct tls_slot *s)
{
	tls_ctx_put(atomic_exchange(&s->offered, NULL));
	tls_ctx_put(s->current);
	s->current = NULL;
}

/* ----------------------------------------------------------- connections */

struct tls_conn {
	SSL *ssl;
	BIO *in, *out; /* owned by ssl */
	const struct tls_conn_ops *ops;
	void *arg;
	struct tls_conn_stats *st;
	int depth; /* calls into this file under way */
	bool done, failed, eof, dead, peer_alert;
	uint32_t plain_off, plain_len;
	uint8_t plain[TLS_PLAIN_CAP];
};

static void
info_cb(const SSL *ssl, int where, int ret)
{
	struct tls_conn *c = SSL_get_app_data(ssl);

	if (!(where & SSL_CB_ALERT) || !c)
		return;
	if (where & SSL_CB_READ) {
		c->st->alerts_received++;
		if ((ret >> 8) == SSL3_AL_FATAL)
			c->peer_alert = true;
	} else {
		c->st->alerts_sent++;
	}
}

struct tls_conn *
tls_conn_new(struct tls_ctx *ctx, const struct tls_conn_ops *ops, void *arg,
	     struct tls_conn_stats *st)
{
	struct tls_conn *c = malloc(sizeof(*c));

	if (!c)
		return NULL;
	memset(c, 0, offsetof(struct tls_conn, plain));
	c->ops = ops;
	c->arg = arg;
	c->st = st;
	c->ssl = SSL_new((SSL_CTX *)ctx);
	c->in = BIO_new(BIO_s_mem());
	c->out = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->in || !c->out) {
		BIO_free(c->in);
		BIO_free(c->out);
		SSL_free(c->ssl);
		free(c);
		ERR_clear_error();
		return NULL;
	}
	/* An empty memory BIO says "retry", not "end of file". */
	BIO_set_mem_eof_return(c->in, -1);
	BIO_set_mem_eof_return(c->out, -1);
	SSL_set_bio(c->ssl, c->in, c->out);
	SSL_set_app_data(c->ssl, c);
	SSL_set_info_callback(c->ssl, info_cb);
	SSL_set_accept_state(c->ssl);
	return c;
}

static void
really_free(struct tls_conn *c)
{
	SSL_free(c->ssl); /* its BIOs too, and its reference to the context */
	free(c);
}

void
tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	if (c->depth > 0) {
		c->dead = true;
		c->ops = NULL;
		return;
	}
	really_free(c);
}

/* Records waiting in the output BIO go to TCP as far as it takes them. */
static void
flush(struct tls_conn *c)
{
	uint8_t scratch[2048];
	char *p;
	long n;

	while (!c->dead && (n = BIO_get_mem_data(c->out, &p)) > 0) {
		uint32_t k = c->ops->cipher(c->arg, (const uint8_t *)p, (uint32_t)n);

		if (k == 0 || c->dead)
			break;
		while (k > 0) {
			int r = BIO_read(c->out, scratch,
					 k < sizeof(scratch) ? (int)k : (int)sizeof(scratch));

			if (r <= 0)
				break;
			k -= (uint32_t)r;
		}
	}
}

static enum tls_fail
fail_reason(const struct tls_conn *c)
{
	unsigned long e = ERR_peek_error();
	int r = ERR_GET_REASON(e);

	if (c->peer_alert)
		return TLS_FAIL_ALERT;
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return e ? TLS_FAIL_OTHER : TLS_FAIL_PROTOCOL;
	switch (r) {
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW: return TLS_FAIL_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
	case SSL_R_NO_SHARED_GROUPS: return TLS_FAIL_CIPHER;
	default: return TLS_FAIL_PROTOCOL;
	}
}

static void
fail(struct tls_conn *c)
{
	enum tls_fail why = fail_reason(c);

	ERR_clear_error();
	c->failed = true;
	flush(c); /* the alert OpenSSL queued */
	if (!c->dead)
		c->ops->failed(c->arg, why);
}

static bool
soft_error(int e)
{
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* The handshake, then plaintext to the application until one side stops. */
static void
run(struct tls_conn *c)
{
	int r, e;

	if (c->failed || c->dead)
		return;
	if (!c->done) {
		ERR_clear_error();
		r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			e = SSL_get_error(c->ssl, r);
			if (soft_error(e))
				flush(c);
			else
				fail(c);
			return;
		}
		c->done = true;
		flush(c);
		if (c->dead)
			return;
		c->ops->handshake_done(c->arg);
	}
	while (!c->dead && !c->failed) {
		if (c->plain_off < c->plain_len) {
			c->plain_off += c->ops->plain(
				c->arg, c->plain + c->plain_off, c->plain_len - c->plain_off);
			if (c->dead || c->plain_off < c->plain_len)
				break;
		}
		c->plain_off = c->plain_len = 0;
		if (c->eof)
			break;
		ERR_clear_error();
		r = SSL_read(c->ssl, c->plain, sizeof(c->plain));
		if (r > 0) {
			c->plain_len = (uint32_t)r;
			continue;
		}
		e = SSL_get_error(c->ssl, r);
		if (soft_error(e))
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			c->eof = true;
			c->ops->peer_closed(c->arg);
			break;
		}
		fail(c);
		return;
	}
	if (!c->dead)
		flush(c); /* alerts, tickets, key updates */
}

static void
leave(struct tls_conn *c)
{
	if (--c->depth == 0 && c->dead)
		really_free(c);
}

uint32_t
tls_conn_room(const struct tls_conn *c)
{
	size_t held = BIO_ctrl_pending(c->in);

	if (c->failed)
		return TLS_IN_CAP; /* read and dropped */
	return held >= TLS_IN_CAP ? 0 : TLS_IN_CAP - (uint32_t)held;
}

uint32_t
tls_conn_input(struct tls_conn *c, const uint8_t *p, uint32_t n)
{
	uint32_t room = tls_conn_room(c), k = n < room ? n : room;

	if (c->failed || c->eof)
		return n;
	c->depth++;
	if (k > 0 && BIO_write(c->in, p, (int)k) != (int)k)
		k = 0;
	run(c);
	leave(c);
	return k;
}

uint32_t
tls_conn_buffer(struct tls_conn *c, const uint8_t *p, uint32_t n)
{
	uint32_t room = tls_conn_room(c), k = n < room ? n : room;

	if (c->failed || c->eof)
		return n;
	if (k > 0 && BIO_write(c->in, p, (int)k) != (int)k)
		k = 0;
	return k;
}

void
tls_conn_pump(struct tls_conn *c)
{
	c->depth++;
	flush(c);
	run(c);
	leave(c);
}

uint32_t
tls_conn_write(struct tls_conn *c, const void *p, uint32_t n)
{
	int r;

	if (c->failed)
		return n; /* nobody to say it to */
	if (!c->done || BIO_ctrl_pending(c->out) >= TLS_OUT_CAP || n == 0)
		return 0;
	c->depth++;
	ERR_clear_error();
	r = SSL_write(c->ssl, p, (int)n);
	if (r <= 0) {
		fail(c);
		r = (int)n;
	} else {
		flush(c);
	}
	leave(c);
	return (uint32_t)r;
}

void
tls_conn_shutdown(struct tls_conn *c)
{
	if (!c->done || c->failed)
		return;
	c->depth++;
	ERR_clear_error();
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	flush(c);
	leave(c);
}

uint32_t
tls_conn_unsent(const struct tls_conn *c)
{
	return (uint32_t)BIO_ctrl_pending(c->out);
}

bool
tls_conn_established(const struct tls_conn *c)
{
	return c->done && !c->failed;
}

bool
tls_conn_info(const struct tls_conn *c, struct tls_conn_info *out)
{
	const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);

	memset(out, 0, sizeof(*out));
	if (!c->done || !ci)
		return false;
	snprintf(out->version, sizeof(out->version), "%s", SSL_get_version(c->ssl));
	snprintf(out->cipher, sizeof(out->cipher), "%s", SSL_CIPHER_get_name(ci));
	out->bits = SSL_CIPHER_get_bits(ci, &out->alg_bits);
	out->resumed = SSL_session_reused(c->ssl) == 1;
	return true;
}
