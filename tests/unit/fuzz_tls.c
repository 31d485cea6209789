/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/fuzz_tls.c — libFuzzer target: arbitrary bytes to an SMTP session after
 * STARTTLS, through the TLS layer (common/tls.c, dataplane/smtp*.c are
 * compiled in for the coverage instrumentation).
 *
 * Input: byte 0 picks the mode and byte 1 how the bytes are cut and how
 * much "TCP" and the SMTP engine take at a time; the rest is the stream.
 *   mode even: the stream arrives as ciphertext straight after the 220
 *              (hostile handshakes, records, alerts);
 *   mode odd:  an in-process client completes a handshake first and the
 *              stream is its plaintext (SMTP commands and bodies inside
 *              TLS).
 * The target traps when a call takes more than it was given, when the
 * room exceeds its bound, when the engine writes plaintext after the 220
 * outside TLS, or when the session's TLS state outlives the session
 * (LeakSanitizer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/tls.h"

#include "dataplane/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct tls_ctx *ctx;
static SSL_CTX *client_ctx;

static void
fail(const char *why)
{
	fprintf(stderr, "FAIL %s\n", why);
	abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fuzz_tls.XXXXXX", cert[64], key[64];
	struct tls_ctx_params p = { .min_version = 12 };
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	const char *which;
	char why[256];
	FILE *f;

	(void)argc, (void)argv;
	if (!mkdtemp(dir))
		fail("mkdtemp");
	snprintf(cert, sizeof(cert), "%s/c.pem", dir);
	snprintf(key, sizeof(key), "%s/k.pem", dir);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"mx", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, k, EVP_sha256());
	f = fopen(cert, "w");
	PEM_write_X509(f, x);
	fclose(f);
	f = fopen(key, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	p.cert = cert;
	p.key = key;
	p.tickets = tls_tickets_create();
	ctx = tls_ctx_create(&p, &which, why, sizeof(why));
	if (!ctx)
		fail(why);
	unlink(cert);
	unlink(key);
	rmdir(dir);
	X509_free(x);
	EVP_PKEY_free(k);
	client_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

struct fz {
	struct smtp_session *smtp;
	struct tls_conn *tls;
	bool tls_on, closed;
	uint32_t tcp_take, app_take;
	uint8_t to_client[1 << 16];
	uint32_t to_client_len;
};

static uint32_t
take(uint32_t n, uint32_t cap)
{
	return n < cap ? n : cap;
}

static uint32_t
s_write(void *c, const void *p, uint32_t n)
{
	struct fz *z = c;

	(void)p;
	if (z->closed)
		fail("write after close");
	if (z->tls_on)
		return tls_conn_write(z->tls, p, n);
	return n; /* plaintext before STARTTLS: dropped */
}

static void
s_close(void *c)
{
	((struct fz *)c)->closed = true;
}
static void *
s_get(void *c, uint32_t *cap)
{
	(void)c;
	*cap = 4096;
	return malloc(4096);
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
s_put(void *c, void *m)
{
	(void)c;
	free(m);
}

static struct tls_conn_stats stats;

static uint32_t
t_plain(void *arg, const uint8_t *p, uint32_t n)
{
	struct fz *z = arg;
	uint32_t k = smtp_session_feed(z->smtp, p, take(n, z->app_take));

	if (k > take(n, z->app_take))
		fail("feed took more than given");
	return k;
}

static uint32_t
t_cipher(void *arg, const uint8_t *p, uint32_t n)
{
	struct fz *z = arg;
	uint32_t k = take(n, z->tcp_take);

	if (k > sizeof(z->to_client) - z->to_client_len)
		k = (uint32_t)sizeof(z->to_client) - z->to_client_len;
	memcpy(z->to_client + z->to_client_len, p, k);
	z->to_client_len += k;
	return k;
}

static void
t_done(void *arg)
{
	(void)arg;
}
static void
t_failed(void *arg, enum tls_fail w)
{
	(void)arg;
	(void)w;
}
static void
t_closed(void *arg)
{
	smtp_session_peer_closed(((struct fz *)arg)->smtp);
}

static const struct tls_conn_ops t_ops = {
	.plain = t_plain,
	.cipher = t_cipher,
	.handshake_done = t_done,
	.failed = t_failed,
	.peer_closed = t_closed,
};

static bool
s_starttls(void *c, struct smtp_verdict *v)
{
	struct fz *z = c;

	(void)v;
	z->tls = tls_conn_new(ctx, &t_ops, z, &stats);
	return z->tls != NULL;
}

static void
s_begin(void *c)
{
	((struct fz *)c)->tls_on = true;
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
to_server(struct fz *z, const uint8_t *p, uint32_t n, uint32_t cut)
{
	uint32_t off = 0, tries = 0;

	while (off < n && z->tls && tries++ < 100000) {
		uint32_t want = take(n - off, cut);
		uint32_t k = tls_conn_input(z->tls, p + off, want);

		if (k > want)
			fail("input took more than given");
		if (tls_conn_room(z->tls) > 16384 + 2048 + 5 + 1024)
			fail("room beyond its bound");
		off += k;
		if (k == 0) {
			z->app_take = 1u << 20;
			z->tcp_take = 1u << 20;
			tls_conn_pump(z->tls);
			smtp_session_writable(z->smtp);
			if (tls_conn_input(z->tls, p + off, want) == 0 &&
			    tls_conn_room(z->tls) == 0)
				break;
		}
	}
}

static void
client_run(struct fz *z, SSL *cl, BIO *cin, BIO *cout)
{
	uint8_t buf[4096];
	int i, n;

	for (i = 0; i < 50; i++) {
		bool moved = false;

		if (!SSL_is_init_finished(cl))
			SSL_do_handshake(cl);
		else
			(void)SSL_read(cl, buf, sizeof(buf));
		while ((n = BIO_read(cout, buf, sizeof(buf))) > 0) {
			to_server(z, buf, (uint32_t)n, sizeof(buf));
			moved = true;
		}
		if (z->to_client_len) {
			BIO_write(cin, z->to_client, (int)z->to_client_len);
			z->to_client_len = 0;
			moved = true;
		}
		if (z->tls)
			tls_conn_pump(z->tls);
		if (!moved)
			break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t mem[64 << 10];
	static const char hello[] = "EHLO a\r\nSTARTTLS\r\n";
	struct smtp_params params = { .hostname = "mx.example.net", .tls_offer = true };
	struct smtp_peer peer = { .family = 4 };
	static struct fz z;
	uint32_t cut;
	SSL *cl = NULL;
	BIO *cin = NULL, *cout = NULL;

	if (size < 2)
		return 0;
	memset(&z, 0, offsetof(struct fz, to_client));
	z.to_client_len = 0;
	cut = 1u + (data[1] & 0x3f) * 97u;
	z.tcp_take = data[1] & 0x40 ? 7 : 1u << 20;
	z.app_take = data[1] & 0x80 ? 3 : 1u << 20;
	z.smtp = smtp_session_init(mem, sizeof(mem), &params, &s_ops, &z, &peer);
	smtp_session_start(z.smtp);
	smtp_session_feed(z.smtp, (const uint8_t *)hello, sizeof(hello) - 1);
	if (!z.tls_on)
		fail("STARTTLS did not begin TLS");
	if (data[0] & 1) {
		cl = SSL_new(client_ctx);
		cin = BIO_new(BIO_s_mem());
		cout = BIO_new(BIO_s_mem());
		BIO_set_mem_eof_return(cin, -1);
		BIO_set_mem_eof_return(cout, -1);
		SSL_set_bio(cl, cin, cout);
		SSL_set_connect_state(cl);
		client_run(&z, cl, cin, cout);
		if (SSL_is_init_finished(cl)) {
			size_t off;

			for (off = 2; off < size; off += cut) {
				size_t n = size - off < cut ? size - off : cut;

				SSL_write(cl, data + off, (int)n);
				client_run(&z, cl, cin, cout);
			}
		}
	} else {
		to_server(&z, data + 2, (uint32_t)(size - 2), cut);
	}
	smtp_session_idle(z.smtp);
	smtp_session_fini(z.smtp);
	tls_conn_free(z.tls);
	SSL_free(cl);
	return 0;
}
