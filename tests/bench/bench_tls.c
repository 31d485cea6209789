/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/bench/bench_tls.c — what a STARTTLS handshake costs the worker: the server side
 * of common/tls.c, timed alone (CPU time of the thread spent in
 * tls_conn_input and tls_conn_pump), against an OpenSSL client over memory
 * buffers whose own time is not counted.
 *
 * usage: bench_tls CERT KEY RSA_CERT RSA_KEY [SECONDS]
 * Prints one line: BENCH_TLS_JSON {"tls_full_handshakes_per_s_per_core":
 * ..., "_rsa": ..., "tls_resumed_handshakes_per_s_per_core": ...,
 * "full_us": ..., ...}: per core means one core doing nothing else.
 *
 * Each call into the server (a handshake step, as the worker makes it) is
 * timed too: the longest and the 99th percentile of the full ECDSA
 * handshakes' steps are how long a plain session's reply can wait behind
 * one step on the worker.
 *
 * It also times X25519 key generation through OpenSSL's EVP API, as libssl
 * does it for every handshake: `openssl speed ecdhx25519` times only the
 * derivation, and the server does both.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "tls/tls.h"

struct srv {
	struct tls_conn *c;
	uint8_t out[1 << 16];
	uint32_t out_len;
	bool done;
};

static uint32_t
plain(void *a, const uint8_t *p, uint32_t n)
{
	(void)a;
	(void)p;
	return n;
}

static uint32_t
cipher(void *a, const uint8_t *p, uint32_t n)
{
	struct srv *s = a;

	memcpy(s->out + s->out_len, p, n);
	s->out_len += n;
	return n;
}

static void
done(void *a)
{
	((struct srv *)a)->done = true;
}
static void
failed(void *a, enum tls_fail w)
{
	(void)a;
	fprintf(stderr, "failed %d\n", w);
	exit(1);
}
static void
closed(void *a)
{
	(void)a;
}

static const struct tls_conn_ops ops = {
	.plain = plain,
	.cipher = cipher,
	.handshake_done = done,
	.failed = failed,
	.peer_closed = closed,
};

static double
cpu_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define MAX_STEPS 65536
static double steps[MAX_STEPS];
static unsigned n_steps;
static bool record_steps;

static void
step_done(double t)
{
	if (record_steps && n_steps < MAX_STEPS)
		steps[n_steps++] = t;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* One handshake; returns the server's CPU seconds. *sess in/out. */
static double
one(struct tls_ctx *ctx, SSL_CTX *cctx, SSL_SESSION **sess, bool resume)
{
	static struct tls_conn_stats st;
	struct srv s = { 0 };
	SSL *cl = SSL_new(cctx);
	BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
	uint8_t buf[8192];
	double t = 0, t0;
	int n, i;

	BIO_set_mem_eof_return(in, -1);
	BIO_set_mem_eof_return(out, -1);
	SSL_set_bio(cl, in, out);
	SSL_set_connect_state(cl);
	if (resume && *sess)
		SSL_set_session(cl, *sess);
	t0 = cpu_now();
	s.c = tls_conn_new(ctx, &ops, &s, &st);
	t += cpu_now() - t0;
	for (i = 0; i < 20; i++) {
		if (!SSL_is_init_finished(cl))
			SSL_do_handshake(cl);
		else
			(void)SSL_read(cl, buf, sizeof(buf));
		while ((n = BIO_read(out, buf, sizeof(buf))) > 0) {
			t0 = cpu_now();
			tls_conn_input(s.c, buf, (uint32_t)n);
			t0 = cpu_now() - t0;
			t += t0;
			step_done(t0);
		}
		if (s.out_len) {
			BIO_write(in, s.out, (int)s.out_len);
			s.out_len = 0;
		} else if (s.done && SSL_is_init_finished(cl)) {
			break;
		}
	}
	if (!s.done)
		exit(1);
	(void)SSL_read(cl, buf, sizeof(buf)); /* the 1.3 ticket */
	if (!resume) {
		SSL_SESSION_free(*sess);
		*sess = SSL_get1_session(cl);
	} else if (!SSL_session_reused(cl)) {
		fprintf(stderr, "not resumed\n");
		exit(1);
	}
	SSL_shutdown(cl);
	t0 = cpu_now();
	tls_conn_free(s.c);
	t += cpu_now() - t0;
	SSL_free(cl);
	return t;
}

static double
rate(struct tls_ctx *ctx, SSL_CTX *cctx, bool resume, double seconds, double *us)
{
	SSL_SESSION *sess = NULL;
	double cpu = 0;
	long n = 0;

	one(ctx, cctx, &sess, false);
	while (cpu < seconds) {
		cpu += one(ctx, cctx, &sess, resume);
		n++;
	}
	SSL_SESSION_free(sess);
	*us = cpu / (double)n * 1e6;
	return (double)n / cpu;
}

/* X25519 key pairs generated per CPU second. */
static double
x25519_keygen_rate(double seconds)
{
	double t0 = cpu_now(), t = 0;
	long n = 0;

	while (t < seconds) {
		EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");

		if (!k) {
			fprintf(stderr, "X25519 key generation failed\n");
			exit(1);
		}
		EVP_PKEY_free(k);
		n++;
		t = cpu_now() - t0;
	}
	return (double)n / t;
}

int
main(int argc, char **argv)
{
	struct tls_ctx_params p = { .min_version = 12 };
	double secs = argc > 5 ? atof(argv[5]) : 2.0, full, rsa, res, full_us, rsa_us, res_us, kg;
	struct tls_ctx *ctx;
	const char *which;
	char why[256];
	SSL_CTX *cctx, *rctx;

	if (argc < 5) {
		fprintf(stderr, "usage: bench_tls CERT KEY RSA_CERT RSA_KEY [SECONDS]\n");
		return 2;
	}
	p.cert = argv[1];
	p.key = argv[2];
	p.rsa_cert = argv[3];
	p.rsa_key = argv[4];
	p.tickets = tls_tickets_create();
	ctx = tls_ctx_create(&p, &which, why, sizeof(why));
	if (!ctx) {
		fprintf(stderr, "%s: %s\n", which, why);
		return 1;
	}
	cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set1_groups_list(cctx, "X25519");
	SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
	rctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(rctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set1_groups_list(rctx, "X25519");
	SSL_CTX_set_min_proto_version(rctx, TLS1_3_VERSION);
	SSL_CTX_set1_sigalgs_list(rctx, "rsa_pss_rsae_sha256");
	record_steps = true;
	full = rate(ctx, cctx, false, secs, &full_us);
	record_steps = false;
	qsort(steps, n_steps, sizeof(steps[0]), cmp_double);
	rsa = rate(ctx, rctx, false, secs, &rsa_us);
	res = rate(ctx, cctx, true, secs, &res_us);
	kg = x25519_keygen_rate(secs / 2);
	printf("BENCH_TLS_JSON {\"tls_full_handshakes_per_s_per_core\": %.0f, "
	       "\"tls_full_handshakes_per_s_per_core_rsa\": %.0f, "
	       "\"tls_resumed_handshakes_per_s_per_core\": %.0f, "
	       "\"tls_full_handshake_us\": %.1f, \"tls_full_handshake_rsa_us\": %.1f, "
	       "\"tls_resumed_handshake_us\": %.1f, \"x25519_keygen_per_s\": %.0f, "
	       "\"tls_step_p99_us\": %.1f, \"tls_step_max_us\": %.1f}\n",
	       full, rsa, res, full_us, rsa_us, res_us, kg,
	       n_steps ? steps[n_steps * 99 / 100] * 1e6 : 0.0,
	       n_steps ? steps[n_steps - 1] * 1e6 : 0.0);
	SSL_CTX_free(cctx);
	SSL_CTX_free(rctx);
	tls_ctx_put(ctx);
	return 0;
}
