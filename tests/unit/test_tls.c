/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_tls.c — the TLS layer (common/tls.c) and STARTTLS in the SMTP
 * engine, without EAL: an OpenSSL client over memory buffers talks to a
 * tls_conn whose ciphertext goes to a byte buffer instead of TCP.
 *
 * Certificates are made here (ECDSA P-256, RSA 2048, self-signed) into a
 * temporary directory.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/tls.h"

#include "dataplane/smtp.h"
#include "tests/check.h"

static char dir[64];
static char ec_cert[128], ec_key[128], rsa_cert[128], rsa_key[128], ec_key2[128];

static void
write_pair(EVP_PKEY *k, const char *cert_path, const char *key_path)
{
	X509 *x = X509_new();
	X509_NAME *n;
	FILE *f;

	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(
		n, "CN", MBSTRING_ASC, (const unsigned char *)"mx.example.net", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_sign(x, k, EVP_sha256());
	if (cert_path) {
		f = fopen(cert_path, "w");
		PEM_write_X509(f, x);
		fclose(f);
	}
	f = fopen(key_path, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
}

static void
make_certs(void)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256"), *ec2 = EVP_EC_gen("P-256");
	EVP_PKEY *rsa = EVP_RSA_gen(2048);

	snprintf(dir, sizeof(dir), "/tmp/test_tls.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(ec_cert, sizeof(ec_cert), "%s/ec.crt", dir);
	snprintf(ec_key, sizeof(ec_key), "%s/ec.key", dir);
	snprintf(ec_key2, sizeof(ec_key2), "%s/ec2.key", dir);
	snprintf(rsa_cert, sizeof(rsa_cert), "%s/rsa.crt", dir);
	snprintf(rsa_key, sizeof(rsa_key), "%s/rsa.key", dir);
	write_pair(ec, ec_cert, ec_key);
	write_pair(ec2, NULL, ec_key2);
	write_pair(rsa, rsa_cert, rsa_key);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec2);
	EVP_PKEY_free(rsa);
}

static void
remove_certs(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("could not remove %s\n", dir);
}

/* ------------------------------------------------------------- the pair */

struct end {
	struct tls_conn *c;
	uint8_t to_client[1 << 16]; /* ciphertext the server sent */
	uint32_t to_client_len;
	uint32_t tcp_room;      /* what "TCP" takes per call */
	uint8_t plain[1 << 16]; /* plaintext the app took */
	uint32_t plain_len;
	uint32_t app_take; /* what the app takes per call */
	bool done, peer_closed;
	int fails;
	enum tls_fail why;
	bool free_in_plain; /* the app ends the session inside */
};

static uint32_t
end_plain(void *arg, const uint8_t *p, uint32_t n)
{
	struct end *e = arg;
	uint32_t k = n < e->app_take ? n : e->app_take;

	if (e->free_in_plain) {
		tls_conn_free(e->c);
		e->c = NULL;
		return n;
	}
	if (k > sizeof(e->plain) - e->plain_len)
		k = (uint32_t)sizeof(e->plain) - e->plain_len;
	memcpy(e->plain + e->plain_len, p, k);
	e->plain_len += k;
	return k;
}

static uint32_t
end_cipher(void *arg, const uint8_t *p, uint32_t n)
{
	struct end *e = arg;
	uint32_t k = n < e->tcp_room ? n : e->tcp_room;

	if (k > sizeof(e->to_client) - e->to_client_len)
		k = (uint32_t)sizeof(e->to_client) - e->to_client_len;
	memcpy(e->to_client + e->to_client_len, p, k);
	e->to_client_len += k;
	return k;
}

static void
end_done(void *arg)
{
	((struct end *)arg)->done = true;
}

static void
end_failed(void *arg, enum tls_fail why)
{
	struct end *e = arg;

	e->fails++;
	e->why = why;
}

static void
end_closed(void *arg)
{
	((struct end *)arg)->peer_closed = true;
}

static const struct tls_conn_ops end_ops = {
	.plain = end_plain,
	.cipher = end_cipher,
	.handshake_done = end_done,
	.failed = end_failed,
	.peer_closed = end_closed,
};

struct client {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in, *out;
};

static void
client_new(struct client *cl, int min, int max, SSL_SESSION *resume, const char *sigalgs)
{
	cl->ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_security_level(cl->ctx, 0);
	SSL_CTX_set_min_proto_version(cl->ctx, min);
	SSL_CTX_set_max_proto_version(cl->ctx, max);
	/* No client cache: freeing it would mark its sessions not resumable. */
	SSL_CTX_set_session_cache_mode(cl->ctx, SSL_SESS_CACHE_OFF);
	if (min < TLS1_2_VERSION)
		SSL_CTX_set_cipher_list(cl->ctx, "DEFAULT:@SECLEVEL=0");
	if (sigalgs)
		SSL_CTX_set1_sigalgs_list(cl->ctx, sigalgs);
	cl->ssl = SSL_new(cl->ctx);
	cl->in = BIO_new(BIO_s_mem());
	cl->out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(cl->in, -1);
	BIO_set_mem_eof_return(cl->out, -1);
	SSL_set_bio(cl->ssl, cl->in, cl->out);
	SSL_set_connect_state(cl->ssl);
	if (resume)
		SSL_set_session(cl->ssl, resume);
}

static void
client_free(struct client *cl)
{
	SSL_free(cl->ssl);
	SSL_CTX_free(cl->ctx);
}

/* Moves bytes both ways until nothing moves; drives the client's state. */
static void
shuttle(struct client *cl, struct end *e)
{
	uint8_t buf[4096];
	int i, n;

	for (i = 0; i < 200; i++) {
		bool moved = false;

		ERR_clear_error();
		if (!SSL_is_init_finished(cl->ssl))
			SSL_do_handshake(cl->ssl);
		else
			(void)SSL_read(cl->ssl, buf, 0);
		while ((n = BIO_read(cl->out, buf, sizeof(buf))) > 0) {
			int off = 0;

			while (off < n && e->c) {
				uint32_t k = tls_conn_input(e->c, buf + off, (uint32_t)(n - off));

				if (k == 0) {
					tls_conn_pump(e->c);
					k = tls_conn_input(e->c, buf + off, (uint32_t)(n - off));
					if (k == 0)
						break;
				}
				off += (int)k;
			}
			moved = true;
		}
		if (e->c)
			tls_conn_pump(e->c);
		if (e->to_client_len > 0) {
			BIO_write(cl->in, e->to_client, (int)e->to_client_len);
			e->to_client_len = 0;
			moved = true;
		}
		if (!moved)
			break;
	}
}

static struct tls_ctx *
server_ctx(int min, bool with_rsa, struct tls_tickets *t)
{
	struct tls_ctx_params p = {
		.cert = ec_cert,
		.key = ec_key,
		.min_version = min,
		.tickets = t,
	};
	const char *key;
	char why[256];

	if (with_rsa) {
		p.rsa_cert = rsa_cert;
		p.rsa_key = rsa_key;
	}
	return tls_ctx_create(&p, &key, why, sizeof(why));
}

static void
end_init(struct end *e, struct tls_ctx *ctx, struct tls_conn_stats *st)
{
	memset(e, 0, sizeof(*e));
	e->tcp_room = 1u << 20;
	e->app_take = 1u << 20;
	e->c = tls_conn_new(ctx, &end_ops, e, st);
}

/* ------------------------------------------------------------- the tests */

static void
test_ctx_errors(void)
{
	struct tls_ctx_params p = { .cert = ec_cert, .key = ec_key2, .min_version = 12 };
	const char *key = NULL;
	char why[256] = "";
	struct tls_ctx *c;

	c = tls_ctx_create(&p, &key, why, sizeof(why));
	CHECK(!c && key && strcmp(key, "key") == 0 && strstr(why, "does not match"),
	      "mismatched key: %s %s", key ? key : "-", why);
	p.key = ec_key;
	p.cert = "/nonexistent/cert.pem";
	c = tls_ctx_create(&p, &key, why, sizeof(why));
	CHECK(!c && strcmp(key, "cert") == 0, "missing cert: %s %s", key, why);
	p.cert = rsa_cert;
	p.key = rsa_key;
	c = tls_ctx_create(&p, &key, why, sizeof(why));
	CHECK(!c && strcmp(key, "key") == 0 && strstr(why, "P-256"),
	      "an RSA key as the ECDSA one: %s %s", key, why);
	p.cert = ec_cert;
	p.key = ec_key;
	p.rsa_cert = ec_cert;
	p.rsa_key = ec_key;
	c = tls_ctx_create(&p, &key, why, sizeof(why));
	CHECK(!c && strcmp(key, "rsa_key") == 0, "an EC key as the RSA one: %s %s", key, why);
	p.rsa_cert = rsa_cert;
	p.rsa_key = rsa_key;
	c = tls_ctx_create(&p, &key, why, sizeof(why));
	CHECK(c != NULL, "both pairs: %s", why);
	tls_ctx_put(c);
}

static void
handshake(int version, bool rsa_only_client, const char *what)
{
	struct tls_ctx *ctx = server_ctx(12, true, NULL);
	struct tls_conn_stats st = { 0 };
	struct tls_conn_info info;
	struct client cl;
	struct end e;
	char buf[64];
	int n;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx); /* the connection holds its own reference */
	client_new(&cl, version, version, NULL,
		   rsa_only_client ? "RSA-PSS+SHA256:RSA+SHA256" : NULL);
	shuttle(&cl, &e);
	CHECK(e.done && e.fails == 0 && SSL_is_init_finished(cl.ssl), "%s: handshake", what);
	CHECK(tls_conn_info(e.c, &info) && !info.resumed, "%s: info", what);
	CHECK(SSL_version(cl.ssl) == version, "%s: version %s", what, info.version);
	if (rsa_only_client) {
		X509 *peer = SSL_get1_peer_certificate(cl.ssl);

		CHECK(peer && EVP_PKEY_get_base_id(X509_get0_pubkey(peer)) == EVP_PKEY_RSA,
		      "%s: the RSA certificate", what);
		X509_free(peer);
	}
	/* Both ways. */
	SSL_write(cl.ssl, "EHLO x\r\n", 8);
	shuttle(&cl, &e);
	CHECK(e.plain_len == 8 && memcmp(e.plain, "EHLO x\r\n", 8) == 0, "%s: plaintext in", what);
	CHECK(tls_conn_write(e.c, "250 ok\r\n", 8) == 8, "%s: write", what);
	shuttle(&cl, &e);
	n = SSL_read(cl.ssl, buf, sizeof(buf));
	CHECK(n == 8 && memcmp(buf, "250 ok\r\n", 8) == 0, "%s: plaintext out", what);
	/* close_notify reaches the app as the end of its input. */
	SSL_shutdown(cl.ssl);
	shuttle(&cl, &e);
	CHECK(e.peer_closed, "%s: close_notify", what);
	tls_conn_free(e.c);
	client_free(&cl);
}

static void
refused(int version, enum tls_fail want, const char *what)
{
	struct tls_ctx *ctx = server_ctx(version == TLS1_2_VERSION ? 13 : 12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, version, version, NULL, NULL);
	shuttle(&cl, &e);
	CHECK(!e.done && e.fails == 1 && e.why == want, "%s: failed %d (%s)", what, e.fails,
	      e.fails ? tls_fail_names[e.why] : "-");
	CHECK(st.alerts_sent == 1, "%s: an alert sent (%llu)", what,
	      (unsigned long long)st.alerts_sent);
	CHECK(tls_conn_write(e.c, "x", 1) == 1, "%s: writes after failure are dropped", what);
	tls_conn_free(e.c);
	client_free(&cl);
}

static void
garbage(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct end e;
	static const char junk[] = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	CHECK(tls_conn_input(e.c, (const uint8_t *)junk, sizeof(junk) - 1) == sizeof(junk) - 1,
	      "garbage taken");
	CHECK(e.fails == 1 && e.why == TLS_FAIL_PROTOCOL && e.plain_len == 0,
	      "garbage instead of a ClientHello: %d %d", e.fails, e.why);
	CHECK(tls_conn_input(e.c, (const uint8_t *)junk, 5) == 5 && e.fails == 1,
	      "after the failure input is dropped, failed() once");
	tls_conn_free(e.c);
}

static void
truncated_then_free(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;
	uint8_t buf[4096];
	int n;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, TLS1_2_VERSION, TLS1_3_VERSION, NULL, NULL);
	SSL_do_handshake(cl.ssl);
	n = BIO_read(cl.out, buf, sizeof(buf));
	CHECK(n > 20, "a ClientHello");
	/* Half a record: the handshake waits, nothing fails. */
	CHECK(tls_conn_input(e.c, buf, (uint32_t)n / 2) == (uint32_t)n / 2, "half taken");
	CHECK(!e.done && e.fails == 0 && e.to_client_len == 0, "waits for the rest");
	/* Freed mid-handshake (a reset, a timeout): nothing leaks (ASan). */
	tls_conn_free(e.c);
	client_free(&cl);
}

static void
alert_mid_handshake(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;
	uint8_t buf[4096];
	/* A fatal handshake_failure alert, TLS 1.2 record. */
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, 2, 40 };
	int n;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL);
	SSL_do_handshake(cl.ssl);
	n = BIO_read(cl.out, buf, sizeof(buf));
	tls_conn_input(e.c, buf, (uint32_t)n);
	CHECK(!e.done && e.to_client_len > 0, "ServerHello sent");
	tls_conn_input(e.c, alert, sizeof(alert));
	CHECK(e.fails == 1 && e.why == TLS_FAIL_ALERT && st.alerts_received == 1,
	      "alert mid-handshake: %d %s %llu", e.fails, e.fails ? tls_fail_names[e.why] : "-",
	      (unsigned long long)st.alerts_received);
	tls_conn_free(e.c);
	client_free(&cl);
}

/* The app takes a few bytes at a time; the rest waits in the layer, and
 * the ciphertext it takes is bounded. */
static void
backpressure(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;
	static uint8_t msg[100000], wire[200000];
	uint32_t wire_len = 0, off = 0, i;
	int n;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL);
	shuttle(&cl, &e);
	for (i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	SSL_write(cl.ssl, msg, 60000);
	while ((n = BIO_read(cl.out, wire + wire_len, sizeof(wire) - wire_len)) > 0)
		wire_len += (uint32_t)n;
	e.app_take = 0;
	off += tls_conn_input(e.c, wire, wire_len);
	CHECK(off < wire_len && off <= 16384 + 2048 + 5 + 1024, "bounded: took %u of %u", off,
	      wire_len);
	/* What it holds stays bounded however much is offered: the input
	 * BIO's cap plus one decrypted record waiting for the app. */
	for (i = 0; i < 10; i++)
		off += tls_conn_input(e.c, wire + off, wire_len - off);
	CHECK(tls_conn_room(e.c) == 0 && off <= 2 * (16384 + 2048 + 5 + 1024),
	      "no room while the app takes nothing (%u, took %u)", tls_conn_room(e.c), off);
	e.app_take = 1000;
	for (i = 0; i < 10000 && (off < wire_len || e.plain_len < 60000); i++) {
		tls_conn_pump(e.c);
		if (off < wire_len)
			off += tls_conn_input(e.c, wire + off, wire_len - off);
	}
	CHECK(e.plain_len == 60000 && memcmp(e.plain, msg, 60000) == 0, "every byte, in order (%u)",
	      e.plain_len);
	/* TCP takes little: records wait, then writes are refused. */
	e.tcp_room = 0;
	for (i = 0; i < 100 && tls_conn_write(e.c, msg, 1000) == 1000; i++)
		;
	CHECK(i < 100 && tls_conn_unsent(e.c) >= 16384, "writes refused while TCP is full");
	e.tcp_room = 1u << 20;
	tls_conn_pump(e.c);
	CHECK(tls_conn_unsent(e.c) == 0, "records go once TCP takes them");
	tls_conn_free(e.c);
	client_free(&cl);
}

static void
free_inside_callback(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL);
	shuttle(&cl, &e);
	e.free_in_plain = true;
	SSL_write(cl.ssl, "QUIT\r\n", 6);
	shuttle(&cl, &e);
	CHECK(e.c == NULL, "freed from inside plain() (ASan checks the rest)");
	client_free(&cl);
}

static SSL_SESSION *
full_then_session(struct tls_ctx *ctx, int version, struct tls_conn_stats *st)
{
	struct client cl;
	struct end e;
	SSL_SESSION *sess;
	char buf[8];

	end_init(&e, ctx, st);
	client_new(&cl, version, version, NULL, NULL);
	shuttle(&cl, &e);
	(void)SSL_read(cl.ssl, buf, sizeof(buf)); /* the 1.3 ticket */
	sess = SSL_get1_session(cl.ssl);
	SSL_shutdown(cl.ssl);
	tls_conn_free(e.c);
	client_free(&cl);
	return sess;
}

static bool
resumes(struct tls_ctx *ctx, int version, SSL_SESSION *sess, struct tls_conn_stats *st)
{
	struct tls_conn_info info;
	struct client cl;
	struct end e;
	bool r;

	end_init(&e, ctx, st);
	client_new(&cl, version, version, sess, NULL);
	shuttle(&cl, &e);
	r = e.done && tls_conn_info(e.c, &info) && info.resumed && SSL_session_reused(cl.ssl) == 1;
	tls_conn_free(e.c);
	client_free(&cl);
	return r;
}

static void
resumption(int version, const char *what)
{
	struct tls_tickets *t = tls_tickets_create();
	struct tls_ctx *a = server_ctx(12, false, t), *b = server_ctx(12, false, t);
	struct tls_conn_stats st = { 0 };
	SSL_SESSION *sess = full_then_session(a, version, &st);

	CHECK(sess && SSL_SESSION_is_resumable(sess), "%s: a ticket", what);
	/* Another context (another worker, a reload) with the shared keys. */
	CHECK(resumes(b, version, sess, &st), "%s: resumed elsewhere", what);
	SSL_SESSION_free(sess);
	sess = full_then_session(a, version, &st);
	tls_tickets_rotate(t);
	CHECK(resumes(a, version, sess, &st), "%s: previous key still good", what);
	SSL_SESSION_free(sess);
	sess = full_then_session(a, version, &st);
	tls_tickets_rotate(t);
	tls_tickets_rotate(t);
	CHECK(!resumes(a, version, sess, &st), "%s: gone after two rotations", what);
	SSL_SESSION_free(sess);
	tls_ctx_put(a);
	tls_ctx_put(b);
	tls_tickets_free(t);
}

static void
renegotiation(void)
{
	struct tls_ctx *ctx = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;
	char buf[16];

	end_init(&e, ctx, &st);
	tls_ctx_put(ctx);
	client_new(&cl, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL);
	SSL_set_options(cl.ssl, SSL_OP_LEGACY_SERVER_CONNECT);
	shuttle(&cl, &e);
	CHECK(e.done, "renegotiation: first handshake");
	CHECK(SSL_renegotiate(cl.ssl) == 1, "the client asks");
	SSL_do_handshake(cl.ssl);
	shuttle(&cl, &e);
	(void)SSL_read(cl.ssl, buf, sizeof(buf));
	CHECK(st.alerts_sent >= 1, "refused with an alert (%llu)",
	      (unsigned long long)st.alerts_sent);
	CHECK(SSL_get_state(cl.ssl) != TLS_ST_OK || SSL_renegotiate_pending(cl.ssl) == 1 ||
		      e.fails == 1,
	      "no second handshake completed");
	tls_conn_free(e.c);
	client_free(&cl);
}

static void
slot_swap(void)
{
	struct tls_slot slot;
	struct tls_ctx *a = server_ctx(12, false, NULL), *b = server_ctx(12, false, NULL);
	struct tls_conn_stats st = { 0 };
	struct client cl;
	struct end e;

	memset(&slot, 0, sizeof(slot)); /* clang takes no { 0 } for an _Atomic pointer */
	tls_slot_offer(&slot, a);
	CHECK(tls_slot_current(&slot) == a, "the first context");
	end_init(&e, tls_slot_current(&slot), &st);
	client_new(&cl, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL);
	tls_slot_offer(&slot, b);
	CHECK(tls_slot_current(&slot) == b, "the reloaded context");
	/* The old context lives on in the connection made from it. */
	shuttle(&cl, &e);
	CHECK(e.done, "a session keeps its context across a reload");
	tls_conn_free(e.c);
	client_free(&cl);
	tls_slot_clear(&slot);
}

/* --------------------------------------------------- STARTTLS in the SMTP engine */

static char out[8192];
static size_t out_len;
static bool began;
static bool allow = true;

static uint32_t
s_write(void *ctx, const void *p, uint32_t n)
{
	(void)ctx;
	if (n > sizeof(out) - 1 - out_len)
		n = (uint32_t)(sizeof(out) - 1 - out_len);
	memcpy(out + out_len, p, n);
	out_len += n;
	out[out_len] = '\0';
	return n;
}

static void
s_close(void *ctx)
{
	(void)ctx;
}
static void *
s_get(void *ctx, uint32_t *cap)
{
	(void)ctx;
	*cap = 8192;
	return malloc(8192);
}
/* Session buffers from the heap: this test is about TLS, not the pool. */
static void *
s_buf_get(void *c)
{
	(void)c;
	return malloc(smtp_buf_size());
}

static void
s_buf_put(void *c, void *buf)
{
	(void)c;
	free(buf);
}

static void
s_put(void *ctx, void *c)
{
	(void)ctx;
	free(c);
}

static bool
s_starttls(void *ctx, struct smtp_verdict *v)
{
	(void)ctx;
	if (!allow) {
		v->code = 454;
		return false;
	}
	return true;
}

static void
s_begin(void *ctx)
{
	(void)ctx;
	began = true;
}

static const struct smtp_ops s_ops = {
	.write = s_write,
	.close = s_close,
	.chunk_get = s_get,
	.chunk_put = s_put,
	.buf_get = s_buf_get,
	.buf_put = s_buf_put,
	.starttls = s_starttls,
	.tls_begin = s_begin,
};

static void
feed(struct smtp_session *s, const char *p)
{
	smtp_session_feed(s, (const uint8_t *)p, (uint32_t)strlen(p));
}

static void
smtp_starttls(void)
{
	static uint8_t mem[64 << 10];
	struct smtp_params params = { .hostname = "mx.example.net", .tls_offer = true };
	struct smtp_peer peer = { .family = 4 };
	struct smtp_session_stats ss;
	struct smtp_session *s;

	s = smtp_session_init(mem, sizeof(mem), &params, &s_ops, NULL, &peer);
	smtp_session_start(s);
	out_len = 0;
	feed(s, "EHLO a\r\n");
	CHECK(strstr(out, "250-STARTTLS\r\n") || strstr(out, "250 STARTTLS\r\n"), "offered: %s",
	      out);
	out_len = 0;
	/* Pipelined after STARTTLS: answered with nothing, never run. */
	feed(s, "STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<a@b>\r\n");
	CHECK(strcmp(out, "220 2.0.0 Ready to start TLS\r\n") == 0, "the 220 alone: %s", out);
	CHECK(began, "TLS begins after the 220");
	smtp_session_stats(s, &ss);
	CHECK(ss.tls && ss.tls_discarded == strlen("MAIL FROM:<evil@x>\r\nRCPT TO:<a@b>\r\n"),
	      "discarded and counted: %llu", (unsigned long long)ss.tls_discarded);
	/* The session starts over: MAIL before EHLO is a sequence error. */
	out_len = 0;
	feed(s, "MAIL FROM:<a@b>\r\n");
	CHECK(strncmp(out, "503 5.5.1", 9) == 0, "EHLO again first: %s", out);
	out_len = 0;
	feed(s, "EHLO a\r\n");
	CHECK(!strstr(out, "STARTTLS") && strstr(out, "250 "), "not offered again: %s", out);
	out_len = 0;
	feed(s, "STARTTLS\r\n");
	CHECK(strcmp(out, "503 5.5.1 Error: TLS already active\r\n") == 0, "a second: %s", out);
	smtp_session_fini(s);

	/* Refused (max_sessions, a rule): the session goes on in plaintext. */
	began = false;
	allow = false;
	s = smtp_session_init(mem, sizeof(mem), &params, &s_ops, NULL, &peer);
	smtp_session_start(s);
	feed(s, "EHLO a\r\n");
	out_len = 0;
	feed(s, "STARTTLS\r\nNOOP\r\n");
	CHECK(strncmp(out, "454 4.7.0 ", 10) == 0 && strstr(out, "250 2.0.0") && !began,
	      "454, then NOOP: %s", out);
	smtp_session_fini(s);
	allow = true;

	/* No certificate: not offered, 502. */
	params.tls_offer = false;
	s = smtp_session_init(mem, sizeof(mem), &params, &s_ops, NULL, &peer);
	smtp_session_start(s);
	out_len = 0;
	feed(s, "EHLO a\r\nSTARTTLS\r\n");
	CHECK(!strstr(out, "STARTTLS") && strstr(out, "502 5.5.1"), "not offered: %s", out);
	smtp_session_fini(s);
}

int
main(void)
{
	make_certs();
	test_ctx_errors();
	handshake(TLS1_3_VERSION, false, "TLS 1.3");
	handshake(TLS1_2_VERSION, false, "TLS 1.2");
	handshake(TLS1_2_VERSION, true, "TLS 1.2 RSA");
	refused(TLS1_VERSION, TLS_FAIL_VERSION, "TLS 1.0");
	refused(TLS1_1_VERSION, TLS_FAIL_VERSION, "TLS 1.1");
	refused(TLS1_2_VERSION, TLS_FAIL_VERSION, "TLS 1.2 under min_version 1.3");
	garbage();
	truncated_then_free();
	alert_mid_handshake();
	backpressure();
	free_inside_callback();
	resumption(TLS1_3_VERSION, "TLS 1.3");
	resumption(TLS1_2_VERSION, "TLS 1.2");
	renegotiation();
	slot_swap();
	smtp_starttls();
	remove_certs();
	return check_done();
}
