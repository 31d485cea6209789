/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dkim/test_dkim.c — the 'dkim' suite: auth/dkim.c against the RFC
 * test vectors and against messages signed here with libopendkim's signer.
 *
 * Why this way: the verifier is only worth something with real DNS in the
 * path, so every key comes from a DNS server on 127.0.0.1 (dns_server.py,
 * started here, stopped here) through a real libunbound context forwarding
 * to it, exactly as the control plane sets it up, and each message's keys
 * are fetched ahead through dns/dnsq.c before the verification, as the
 * dispatcher does (prefetch.c). Keys that the RFCs do
 * not give (512-bit RSA, a fresh ed25519, a 2048-bit RSA) are generated at
 * run time with OpenSSL, so nothing secret or stale is kept in the tree.
 *
 * Usage: test_dkim SOURCE_DIR (the folder holding dns_server.py and
 * vectors/). Prints one line per check and "N passed, M failed".
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <opendkim/dkim.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unbound.h>

#include "auth/dkim.h"

#include "tests/check.h"
#include "tests/dkim/prefetch.h"

#define MAX_RESULTS      8
#define DNS_TIMEOUT_MS   3000u
#define FAULT_TIMEOUT_MS 400u

static void
die(const char *what)
{
	fprintf(stderr, "test_dkim: %s: %s\n", what, strerror(errno));
	exit(2);
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- text helpers -------------------------------------------------------- */

struct buf {
	char *p;
	size_t len;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	char *p = realloc(b->p, b->len + n + 1);

	if (p == NULL)
		die("realloc");
	memcpy(p + b->len, s, n);
	b->len += n;
	p[b->len] = '\0';
	b->p = p;
}

static void
buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static struct buf
read_file(const char *dir, const char *name)
{
	struct buf b = { 0 };
	char path[1024], chunk[4096];
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL)
		die(path);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_add(&b, chunk, n);
	fclose(f);
	return b;
}

/* The vectors are kept with LF line ends (git-safe); the wire has CRLF. */
static struct buf
to_crlf(const char *text)
{
	struct buf b = { 0 };

	buf_add(&b, "", 0);
	for (; *text != '\0'; text++) {
		if (*text == '\n')
			buf_add(&b, "\r", 1);
		buf_add(&b, text, 1);
	}
	return b;
}

static struct buf
vector(const char *src, const char *name)
{
	char dir[1024];
	struct buf raw, crlf;

	snprintf(dir, sizeof(dir), "%s/vectors", src);
	raw = read_file(dir, name);
	crlf = to_crlf(raw.p);
	free(raw.p);
	return crlf;
}

/* Replace the first occurrence of from by to (same length or not). */
static struct buf
edited(const struct buf *m, const char *from, const char *to)
{
	struct buf b = { 0 };
	const char *at = strstr(m->p, from);

	if (at == NULL) {
		fprintf(stderr, "test_dkim: edit target '%s' missing\n", from);
		exit(2);
	}
	buf_add(&b, m->p, (size_t)(at - m->p));
	buf_str(&b, to);
	buf_str(&b, at + strlen(from));
	return b;
}

static char *
base64(const unsigned char *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);

	if (out == NULL)
		die("malloc");
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* ---- keys and signing ---------------------------------------------------- */

struct testkey {
	EVP_PKEY *pkey;
	char *pem;    /* private key, for dkim_sign() */
	char *record; /* the TXT record */
};

static char *
private_pem(EVP_PKEY *pkey)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *pem;
	long n;

	if (bio == NULL || !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
		die("PEM_write_bio_PrivateKey");
	n = BIO_get_mem_data(bio, &data);
	pem = strndup(data, (size_t)n);
	BIO_free(bio);
	return pem;
}

static struct testkey
key_rsa(unsigned bits)
{
	struct testkey k = { 0 };
	unsigned char *der = NULL;
	char *b64;
	int n;

	k.pkey = EVP_RSA_gen(bits);
	if (k.pkey == NULL)
		die("EVP_RSA_gen");
	k.pem = private_pem(k.pkey);
	n = i2d_PUBKEY(k.pkey, &der);
	if (n <= 0)
		die("i2d_PUBKEY");
	b64 = base64(der, (size_t)n);
	OPENSSL_free(der);
	if (asprintf(&k.record, "v=DKIM1; k=rsa; p=%s", b64) < 0)
		die("asprintf");
	free(b64);
	return k;
}

static struct testkey
key_ed25519(void)
{
	struct testkey k = { 0 };
	unsigned char raw[32];
	size_t n = sizeof(raw);
	char *b64;

	k.pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (k.pkey == NULL || !EVP_PKEY_get_raw_public_key(k.pkey, raw, &n))
		die("ed25519 keygen");
	k.pem = private_pem(k.pkey);
	b64 = base64(raw, n);
	if (asprintf(&k.record, "v=DKIM1; k=ed25519; p=%s", b64) < 0)
		die("asprintf");
	free(b64);
	return k;
}

static void
key_free(struct testkey *k)
{
	EVP_PKEY_free(k->pkey);
	free(k->pem);
	free(k->record);
}

/* m with a DKIM-Signature field (made by libopendkim's signer) on top;
 * with an i= tag when identity is not NULL. */
static struct buf
signed_as(DKIM_LIB *signer, const struct testkey *key, const char *selector, const char *domain,
	  const char *identity, dkim_alg_t alg, dkim_canon_t canon, const struct buf *m)
{
	struct buf out = { 0 };
	DKIM_STAT stat;
	unsigned char *hdr;
	size_t hlen;
	DKIM *d;

	d = dkim_sign(signer, (const unsigned char *)"test-signer", NULL, (dkim_sigkey_t)key->pem,
		      (const unsigned char *)selector, (const unsigned char *)domain, canon, canon,
		      alg, -1, &stat);
	if (d == NULL) {
		fprintf(stderr, "test_dkim: dkim_sign: %d\n", stat);
		exit(2);
	}
	(void)dkim_set_margin(d, 0); /* one line: no LF-only folding */
	if (identity != NULL &&
	    dkim_set_signer(d, (const unsigned char *)identity) != DKIM_STAT_OK) {
		fprintf(stderr, "test_dkim: dkim_set_signer failed\n");
		exit(2);
	}
	if (dkim_chunk(d, (unsigned char *)m->p, m->len) != DKIM_STAT_OK ||
	    dkim_chunk(d, NULL, 0) != DKIM_STAT_OK || dkim_eom(d, NULL) != DKIM_STAT_OK ||
	    dkim_getsighdr_d(d, strlen("DKIM-Signature: "), &hdr, &hlen) != DKIM_STAT_OK) {
		fprintf(stderr, "test_dkim: signing failed: %s\n", dkim_geterror(d));
		exit(2);
	}
	buf_str(&out, "DKIM-Signature: ");
	buf_add(&out, (const char *)hdr, hlen);
	buf_str(&out, "\r\n");
	buf_add(&out, m->p, m->len);
	dkim_free(d);
	return out;
}

static struct buf
signed_by(DKIM_LIB *signer, const struct testkey *key, const char *selector, const char *domain,
	  dkim_alg_t alg, dkim_canon_t canon, const struct buf *m)
{
	return signed_as(signer, key, selector, domain, NULL, alg, canon, m);
}

/* ---- the DNS server ------------------------------------------------------ */

struct dns_server {
	pid_t pid;
	int to_child; /* closing it stops the server */
	int port;
};

static struct dns_server
dns_start(const char *src, const char *zone_path)
{
	struct dns_server s = { .pid = -1, .to_child = -1 };
	int in[2], out[2];
	char script[1024], line[32];
	size_t used;
	ssize_t n;

	snprintf(script, sizeof(script), "%s/dns_server.py", src);
	if (pipe(in) != 0 || pipe(out) != 0)
		die("pipe");
	s.pid = fork();
	if (s.pid < 0)
		die("fork");
	if (s.pid == 0) {
		/* Mind pipe ends that landed on 0 or 1 themselves. */
		if (in[0] != 0) {
			dup2(in[0], 0);
			close(in[0]);
		}
		if (out[1] != 1) {
			dup2(out[1], 1);
			close(out[1]);
		}
		close(in[1]);
		close(out[0]);
		execl("/usr/bin/python3", "python3", script, zone_path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	s.to_child = in[1];
	/* The port, up to its newline, however the pipe splits it. */
	used = 0;
	while (used < sizeof(line) - 1 && memchr(line, '\n', used) == NULL) {
		n = read(out[0], line + used, sizeof(line) - 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	close(out[0]);
	line[used] = '\0';
	s.port = atoi(line);
	if (strchr(line, '\n') == NULL || s.port <= 0) {
		fprintf(stderr, "test_dkim: dns_server.py did not start\n");
		exit(2);
	}
	return s;
}

static void
dns_stop(struct dns_server *s)
{
	int status;

	if (s->to_child >= 0)
		close(s->to_child);
	if (s->pid > 0 && waitpid(s->pid, &status, 0) < 0)
		kill(s->pid, SIGTERM);
}

/* A libunbound context as the control plane makes it: forward to one
 * server, threads, nothing from /etc/resolv.conf. */
static struct ub_ctx *
make_ub(int port)
{
	struct ub_ctx *ub = ub_ctx_create();
	char fwd[64];

	if (ub == NULL)
		die("ub_ctx_create");
	snprintf(fwd, sizeof(fwd), "127.0.0.1@%d", port);
	if (ub_ctx_set_option(ub, "do-not-query-localhost:", "no") != 0 ||
	    ub_ctx_set_option(ub, "do-ip6:", "no") != 0 || ub_ctx_set_fwd(ub, fwd) != 0 ||
	    ub_ctx_async(ub, 1) != 0) {
		fprintf(stderr, "test_dkim: libunbound setup failed\n");
		exit(2);
	}
	return ub;
}

/* What verify() needs to fetch a verifier's keys: the resolver and the
 * deadline it was made with. */
struct vreg {
	struct dkim_verifier *v;
	struct ub_ctx *ub;
	uint32_t timeout_ms;
};
static struct vreg vregs[8];

static const struct vreg *
vreg_of(const struct dkim_verifier *v)
{
	size_t i;

	for (i = 0; i < sizeof(vregs) / sizeof(vregs[0]); i++)
		if (vregs[i].v == v)
			return &vregs[i];
	die("verifier not made by make_verifier");
	return NULL;
}

static struct dkim_verifier *
make_verifier(struct ub_ctx *ub, uint32_t timeout_ms, uint32_t max_sigs)
{
	struct dkim_params params = {
		.dns_timeout_ms = timeout_ms,
		.max_signatures = max_sigs,
	};
	struct dkim_verifier *v = dkim_verifier_create(&params);
	size_t i, slot = sizeof(vregs) / sizeof(vregs[0]);

	if (v == NULL)
		die("dkim_verifier_create");
	/* a verifier made where a destroyed one was takes its slot */
	for (i = 0; i < sizeof(vregs) / sizeof(vregs[0]); i++)
		if (vregs[i].v == v ||
		    (vregs[i].v == NULL && slot == sizeof(vregs) / sizeof(vregs[0])))
			slot = i;
	if (slot == sizeof(vregs) / sizeof(vregs[0]))
		die("too many verifiers");
	vregs[slot] = (struct vreg){ .v = v, .ub = ub, .timeout_ms = timeout_ms };
	return v;
}

/* ---- running the verifier ------------------------------------------------ */

struct run {
	struct dkim_sig_result r[MAX_RESULTS];
	unsigned n;
	int rc;
	uint64_t ms;
};

static void
show(const char *name, const struct run *run)
{
	unsigned i;

	for (i = 0; i < run->n; i++)
		printf("# %s[%u]: %s d=%s s=%s a=%s bits=%u reason=\"%s\"\n", name, i,
		       dkim_outcome_name(run->r[i].result), run->r[i].domain, run->r[i].selector,
		       run->r[i].algorithm, run->r[i].key_bits, run->r[i].reason);
}

static bool
same_runs(const struct run *a, const struct run *b)
{
	return a->rc == b->rc && a->n == b->n && memcmp(a->r, b->r, sizeof(a->r[0]) * a->n) == 0;
}

/* Every message verified whole is verified again as the control plane
 * hashes one while it arrives: the header block, then the body, each in
 * pieces at pseudo-random splits, the keys handed over only at the end.
 * Off where verify() runs on several threads at once. */
static bool pieces_on;
static unsigned pieces_runs, pieces_differ, pieces_early_hashing, pieces_late_hashing;
static uint64_t pieces_seed = 0x9e3779b97f4a7c15u;

static size_t
piece_len(size_t max)
{
	pieces_seed ^= pieces_seed << 13;
	pieces_seed ^= pieces_seed >> 7;
	pieces_seed ^= pieces_seed << 17;
	return 1 + (size_t)(pieces_seed % max);
}

/* Feeds m[from, to) in random pieces of at most max bytes; counts a job
 * that says it hashes the body before `to` when to is the header end. */
static void
feed_pieces(struct dkim_job *job, const struct buf *m, size_t from, size_t to, size_t max,
	    bool in_header)
{
	while (from < to) {
		size_t n = piece_len(max);

		if (n > to - from)
			n = to - from;
		if (dkim_job_feed(job, (const uint8_t *)m->p + from, n) != 0)
			die("dkim_job_feed");
		from += n;
		if (in_header && from < to && dkim_job_hashing(job))
			pieces_early_hashing++;
	}
}

static struct run
verify_pieces(struct dkim_verifier *v, const struct buf *m)
{
	struct run run;
	const struct vreg *reg = vreg_of(v);
	struct dkim_job *job = dkim_job_begin(v, "pieces");
	struct dkim_keys *keys = dkim_prefetch(
		reg->ub, v, (const uint8_t *)m->p, m->len, 0, reg->timeout_ms);
	const char *eoh = memmem(m->p, m->len, "\r\n\r\n", 4);
	size_t hdr = eoh != NULL ? (size_t)(eoh - m->p) + 4 : m->len;
	unsigned i;
	bool hashing;

	memset(&run, 0, sizeof(run));
	if (job == NULL || keys == NULL)
		die("dkim_job_begin");
	feed_pieces(job, m, 0, hdr, 64, true);
	hashing = dkim_job_hashing(job);
	feed_pieces(job, m, hdr, m->len, 700, false);
	dkim_job_use_keys(job, keys);
	run.rc = dkim_job_end(job, run.r, MAX_RESULTS, &run.n);
	dkim_job_free(job);
	dkim_keys_free(keys);
	/* a message with a signature that passes was being hashed */
	for (i = 0; i < run.n; i++)
		if (run.r[i].result == DKIM_RES_PASS && !hashing)
			pieces_late_hashing++;
	return run;
}

/* Fetch m's keys ahead as the dispatcher does, feed m in chunks of `chunk`
 * bytes (0: all at once), then end. */
static struct run
verify(struct dkim_verifier *v, const struct buf *m, size_t chunk)
{
	struct run run;
	const struct vreg *reg = vreg_of(v);
	struct dkim_job *job = dkim_job_begin(v, "test");
	uint64_t t0 = now_ms();
	struct dkim_keys *keys = dkim_prefetch(
		reg->ub, v, (const uint8_t *)m->p, m->len, chunk, reg->timeout_ms);
	size_t off = 0;
	bool whole = chunk == 0;

	memset(&run, 0, sizeof(run));
	if (job == NULL || keys == NULL)
		die("dkim_job_begin");
	dkim_job_use_keys(job, keys);
	if (chunk == 0)
		chunk = m->len;
	while (off < m->len) {
		size_t n = m->len - off < chunk ? m->len - off : chunk;

		if (dkim_job_feed(job, (const uint8_t *)m->p + off, n) != 0)
			die("dkim_job_feed");
		off += n;
	}
	run.rc = dkim_job_end(job, run.r, MAX_RESULTS, &run.n);
	run.ms = now_ms() - t0;
	dkim_job_free(job);
	dkim_keys_free(keys);
	if (pieces_on && whole) {
		struct run p = verify_pieces(v, m);

		pieces_runs++;
		if (!same_runs(&run, &p)) {
			pieces_differ++;
			show("pieces-whole", &run);
			show("pieces-split", &p);
		}
	}
	return run;
}

static const char *
res_name(const struct run *run, unsigned i)
{
	return i < run->n ? dkim_outcome_name(run->r[i].result) : "(missing)";
}

static bool
is(const struct run *run, unsigned i, enum dkim_outcome want)
{
	return run->rc == 0 && i < run->n && run->r[i].result == want;
}

/* ---- the tests ----------------------------------------------------------- */

struct fixture {
	const char *src;
	struct dkim_verifier *v;
	DKIM_LIB *signer;
	struct testkey rsa2048, rsa512, ed;
	struct buf base;     /* RFC 6376 A.1 message, unsigned */
	struct buf good;     /* base signed, rsa-sha256 2048 */
	struct buf bad;      /* good with one body byte changed */
	char *strict_record; /* rsa2048's key with t=s */
};

static void
test_rfc8463(struct fixture *fx)
{
	struct buf m = vector(fx->src, "rfc8463-a3.eml");
	struct buf body = edited(&m, "hungry yet?", "hungry yet!");
	struct buf hdr = edited(&m, "Subject: Is dinner ready?", "Subject: Is dinner ready!");
	struct run whole = verify(fx->v, &m, 0);
	struct run bytes = verify(fx->v, &m, 1);
	struct run sevens = verify(fx->v, &m, 7);
	struct run rb = verify(fx->v, &body, 0);
	struct run rh = verify(fx->v, &hdr, 0);

	show("rfc8463", &whole);
	CHECK(whole.n == 2, "rfc8463 A.3: two signatures reported (%u)", whole.n);
	CHECK(is(&whole, 0, DKIM_RES_PASS) && strcmp(whole.r[0].algorithm, "ed25519-sha256") == 0 &&
		      strcmp(whole.r[0].selector, "brisbane") == 0 &&
		      strcmp(whole.r[0].domain, "football.example.com") == 0 &&
		      whole.r[0].key_bits == 256,
	      "rfc8463 A.3: ed25519-sha256 signature passes (%s)", res_name(&whole, 0));
	CHECK(is(&whole, 1, DKIM_RES_PASS) && strcmp(whole.r[1].algorithm, "rsa-sha256") == 0 &&
		      strcmp(whole.r[1].selector, "test") == 0 && whole.r[1].key_bits == 1024,
	      "rfc8463 A.3: rsa-sha256 signature passes (%s)", res_name(&whole, 1));
	CHECK(same_runs(&whole, &bytes), "rfc8463 A.3 fed one byte at a time: same results");
	CHECK(same_runs(&whole, &sevens), "rfc8463 A.3 fed in 7-byte chunks: same results");
	show("rfc8463-body", &rb);
	CHECK(rb.n == 2 && is(&rb, 0, DKIM_RES_FAIL) && is(&rb, 1, DKIM_RES_FAIL) &&
		      strstr(rb.r[0].reason, "body hash") != NULL,
	      "rfc8463 A.3 with one body byte changed: both fail (%s, %s)", res_name(&rb, 0),
	      res_name(&rb, 1));
	show("rfc8463-hdr", &rh);
	CHECK(rh.n == 2 && is(&rh, 0, DKIM_RES_FAIL) && is(&rh, 1, DKIM_RES_FAIL),
	      "rfc8463 A.3 with signed Subject changed: both fail (%s, %s)", res_name(&rh, 0),
	      res_name(&rh, 1));
	free(m.p);
	free(body.p);
	free(hdr.p);
}

static void
test_rfc6376(struct fixture *fx)
{
	struct buf m = vector(fx->src, "rfc6376-a2-errata.eml");
	struct buf two = vector(fx->src, "rfc6376-a2-twospace.eml");
	struct buf resigned;
	struct buf unsigned_part;
	const char *from;
	struct run r1, r2, r3;

	r1 = verify(fx->v, &m, 0);
	show("rfc6376-errata", &r1);
	CHECK(r1.n == 1 && is(&r1, 0, DKIM_RES_PASS) && r1.r[0].key_bits == 1024,
	      "rfc6376 A.2 with errata 3192/4926 applied passes (%s)", res_name(&r1, 0));

	r2 = verify(fx->v, &two, 0);
	show("rfc6376-twospace", &r2);
	CHECK(r2.n == 1 && is(&r2, 0, DKIM_RES_FAIL) && strstr(r2.r[0].reason, "body hash") != NULL,
	      "rfc6376 A.2 with the two-space body of errata 3192 fails on "
	      "the body hash (%s)",
	      res_name(&r2, 0));

	/* The same message re-signed here, simple/simple like A.2, with a
	 * generated key: the example's intent, checked end to end. */
	from = strstr(m.p, "Received:");
	unsigned_part.p = NULL;
	unsigned_part.len = 0;
	buf_str(&unsigned_part, from);
	resigned = signed_by(fx->signer, &fx->rsa2048, "resigned", "example.com",
			     DKIM_SIGN_RSASHA256, DKIM_CANON_SIMPLE, &unsigned_part);
	r3 = verify(fx->v, &resigned, 0);
	CHECK(r3.n == 1 && is(&r3, 0, DKIM_RES_PASS) && r3.r[0].key_bits == 2048,
	      "rfc6376 A.2 message re-signed (simple/simple, 2048-bit key) "
	      "passes (%s)",
	      res_name(&r3, 0));
	free(m.p);
	free(two.p);
	free(resigned.p);
	free(unsigned_part.p);
}

static void
test_generated(struct fixture *fx)
{
	struct buf m512 = signed_by(fx->signer, &fx->rsa512, "rsa512", "gen.example",
				    DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf med = signed_by(fx->signer, &fx->ed, "ed", "gen.example",
				   DKIM_SIGN_ED25519SHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf msha1 = signed_by(fx->signer, &fx->rsa2048, "absent-sha1", "gen.example",
				     DKIM_SIGN_RSASHA1, DKIM_CANON_RELAXED, &fx->base);
	struct buf mnokey = signed_by(fx->signer, &fx->rsa2048, "absent", "gen.example",
				      DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf mbogus = { 0 }, mnod = { 0 };
	struct run r;

	r = verify(fx->v, &fx->good, 0);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PASS) && r.r[0].key_bits == 2048,
	      "rsa-sha256 with a 2048-bit key passes (%s)", res_name(&r, 0));
	r = verify(fx->v, &fx->bad, 0);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_FAIL),
	      "the same with one body byte changed fails (%s)", res_name(&r, 0));

	r = verify(fx->v, &m512, 0);
	show("rsa512", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_FAIL) && r.r[0].key_bits == 512,
	      "a 512-bit RSA key fails, RFC 8301 (%s, %u bits)", res_name(&r, 0),
	      r.n ? r.r[0].key_bits : 0);

	r = verify(fx->v, &med, 0);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PASS) &&
		      strcmp(r.r[0].algorithm, "ed25519-sha256") == 0,
	      "ed25519-sha256 with a generated key passes (%s)", res_name(&r, 0));

	/* Selector absent from DNS: had a lookup been made, this would be a
	 * permerror, so "fail" also shows that rsa-sha1 cost no DNS. */
	r = verify(fx->v, &msha1, 0);
	show("rsa-sha1", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_FAIL) && strcmp(r.r[0].algorithm, "rsa-sha1") == 0 &&
		      strstr(r.r[0].reason, "8301") != NULL,
	      "rsa-sha1 is not a pass and is not looked up, RFC 8301 (%s)", res_name(&r, 0));

	r = verify(fx->v, &mnokey, 0);
	show("nokey", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PERMERROR),
	      "no key in DNS (NXDOMAIN) is a permerror (%s)", res_name(&r, 0));

	r = verify(fx->v, &fx->base, 0);
	CHECK(r.rc == 0 && r.n == 0,
	      "an unsigned message has no results "
	      "(dkim=none) (%u)",
	      r.n);

	buf_str(&mbogus, "DKIM-Signature: v=1; a=rsa-sha256; d=gen.example; "
			 "s=rsa2048; bogus\r\n");
	buf_add(&mbogus, fx->base.p, fx->base.len);
	r = verify(fx->v, &mbogus, 0);
	show("syntax", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PERMERROR),
	      "a signature with a syntax error is reported, as a permerror "
	      "(%s)",
	      res_name(&r, 0));

	/* No d=: the library never reads a=, and must not be taken for
	 * rsa-sha1 (its zero value). */
	mnod.len = 0;
	buf_str(&mnod, "DKIM-Signature: v=1; a=ed25519-sha256; s=ed; "
		       "h=from; bh=AAAA; b=AAAA\r\n");
	buf_add(&mnod, fx->base.p, fx->base.len);
	r = verify(fx->v, &mnod, 0);
	show("no-d", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PERMERROR) &&
		      strcmp(r.r[0].algorithm, "ed25519-sha256") == 0,
	      "a signature without d= is a permerror, its a= kept (%s, %s)", res_name(&r, 0),
	      r.n ? r.r[0].algorithm : "");

	free(m512.p);
	free(med.p);
	free(msha1.p);
	free(mnokey.p);
	free(mbogus.p);
	free(mnod.p);
}

/* The key's flags and the library's per-signature error count: a key
 * with t=s allows no i= below d= (RFC 6376 3.6.1), and a key that was
 * never loaded has no size, whatever the algorithm. */
static void
test_key_rules(struct fixture *fx)
{
	struct buf msub = signed_as(
		fx->signer, &fx->rsa2048, "strict", "gen.example", "@sub.gen.example",
		DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf msame = signed_as(
		fx->signer, &fx->rsa2048, "strict", "gen.example", "@gen.example",
		DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf mloose = signed_as(
		fx->signer, &fx->rsa2048, "rsa2048", "gen.example", "@sub.gen.example",
		DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf mednokey = signed_by(fx->signer, &fx->ed, "absent-ed", "gen.example",
					DKIM_SIGN_ED25519SHA256, DKIM_CANON_RELAXED, &fx->base);
	struct run r;

	r = verify(fx->v, &msub, 0);
	show("t=s subdomain", &r);
	CHECK(r.n == 1 && r.rc == 0 && r.r[0].result != DKIM_RES_PASS &&
		      is(&r, 0, DKIM_RES_PERMERROR),
	      "a t=s key and i= in a subdomain of d= is not a pass, "
	      "a permerror (%s: %s)",
	      res_name(&r, 0), r.n ? r.r[0].reason : "");
	r = verify(fx->v, &msame, 0);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PASS), "a t=s key and i= equal to d= passes (%s)",
	      res_name(&r, 0));
	r = verify(fx->v, &mloose, 0);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PASS),
	      "a key without t=s and i= in a subdomain passes (%s)", res_name(&r, 0));
	r = verify(fx->v, &mednokey, 0);
	show("ed25519 nokey", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PERMERROR) && r.r[0].key_bits == 0,
	      "ed25519 whose key is not in DNS: permerror, key_bits 0 (%s, %u)", res_name(&r, 0),
	      r.n ? r.r[0].key_bits : 99);
	free(msub.p);
	free(msame.p);
	free(mloose.p);
	free(mednokey.p);
}

static void
test_limits(struct fixture *fx)
{
	struct buf inner = signed_by(fx->signer, &fx->ed, "ed", "gen.example",
				     DKIM_SIGN_ED25519SHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf twice = signed_by(fx->signer, &fx->rsa2048, "rsa2048", "gen.example",
				     DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &inner);
	struct buf huge = { 0 };
	struct dkim_job *job;
	struct run r;

	r = verify(fx->v, &twice, 0);
	CHECK(r.n == 2 && is(&r, 0, DKIM_RES_PASS) && is(&r, 1, DKIM_RES_PASS),
	      "two signatures, both pass, in header order (%s, %s)", res_name(&r, 0),
	      res_name(&r, 1));

	/* A field longer than the bound: the message cannot be verified. */
	buf_str(&huge, "X-Long: ");
	while (huge.len <= DKIM_HEADER_FIELD_MAX)
		buf_str(&huge, "0123456789012345678901234567890123456789\r\n ");
	buf_str(&huge, "end\r\n");
	buf_add(&huge, fx->good.p, fx->good.len);
	r = verify(fx->v, &huge, 4096);
	show("huge", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_PERMERROR) &&
		      strstr(r.r[0].reason, "too long") != NULL,
	      "a header field over %u bytes is a permerror (%s)", DKIM_HEADER_FIELD_MAX,
	      res_name(&r, 0));

	/* Freed half way, and freed without end: no leak, no crash (asan). */
	job = dkim_job_begin(fx->v, "half");
	(void)dkim_job_feed(job, (const uint8_t *)fx->good.p, fx->good.len / 2);
	dkim_job_free(job);
	job = dkim_job_begin(fx->v, "whole");
	(void)dkim_job_feed(job, (const uint8_t *)fx->good.p, fx->good.len);
	dkim_job_free(job);
	CHECK(true, "a job freed mid-message or before its end is released");

	job = dkim_job_begin(fx->v, "twice");
	{
		struct dkim_sig_result out[1];
		unsigned n;
		int rc1, rc2;

		(void)dkim_job_feed(job, (const uint8_t *)fx->good.p, fx->good.len);
		rc1 = dkim_job_end(job, out, 1, &n);
		rc2 = dkim_job_end(job, out, 1, &n);
		CHECK(rc1 == 0 && rc2 == -1 && errno == EINVAL &&
			      dkim_job_feed(job, (const uint8_t *)"x", 1) == -1,
		      "end twice, or feed after end, is refused (EINVAL)");
	}
	dkim_job_free(job);

	free(inner.p);
	free(twice.p);
	free(huge.p);
}

static void
test_max_signatures(struct fixture *fx, struct ub_ctx *ub)
{
	struct buf inner = signed_by(fx->signer, &fx->ed, "ed", "gen.example",
				     DKIM_SIGN_ED25519SHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf twice = signed_by(fx->signer, &fx->rsa2048, "rsa2048", "gen.example",
				     DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &inner);
	struct dkim_verifier *v = make_verifier(ub, DNS_TIMEOUT_MS, 1);
	struct run r = verify(v, &twice, 0);

	show("max1", &r);
	CHECK(r.n == 2 && is(&r, 0, DKIM_RES_PASS) && is(&r, 1, DKIM_RES_POLICY),
	      "max_signatures=1: the second signature is not evaluated "
	      "(%s, %s)",
	      res_name(&r, 0), res_name(&r, 1));
	dkim_verifier_destroy(v);
	free(inner.p);
	free(twice.p);
}

/* SERVFAIL and silence each get a context of their own: libunbound
 * remembers a server that failed, and that must not leak into the other
 * tests (nor into each other). */
static void
test_dns_faults(struct fixture *fx, int port)
{
	struct buf msf = signed_by(fx->signer, &fx->rsa2048, "servfail", "gen.example",
				   DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct buf mdrop = signed_by(fx->signer, &fx->rsa2048, "drop", "gen.example",
				     DKIM_SIGN_RSASHA256, DKIM_CANON_RELAXED, &fx->base);
	struct ub_ctx *ub1 = make_ub(port), *ub2 = make_ub(port);
	struct dkim_verifier *v1 = make_verifier(ub1, DNS_TIMEOUT_MS, 0);
	struct dkim_verifier *v2 = make_verifier(ub2, FAULT_TIMEOUT_MS, 0);
	struct run r;

	r = verify(v1, &msf, 0);
	show("servfail", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_TEMPERROR),
	      "SERVFAIL for the key is a temperror (%s, %llu ms)", res_name(&r, 0),
	      (unsigned long long)r.ms);

	/* Under 1 s: the library's own timeout is whole seconds (1 here),
	 * so only the adapter's deadline can end the wait this early. */
	r = verify(v2, &mdrop, 0);
	show("timeout", &r);
	CHECK(r.n == 1 && is(&r, 0, DKIM_RES_TEMPERROR) && r.ms >= FAULT_TIMEOUT_MS &&
		      r.ms < FAULT_TIMEOUT_MS + 500,
	      "no answer within dns_timeout_ms (%u) is a temperror, in time "
	      "(%s, %llu ms)",
	      FAULT_TIMEOUT_MS, res_name(&r, 0), (unsigned long long)r.ms);

	dkim_verifier_destroy(v1);
	dkim_verifier_destroy(v2);
	ub_ctx_delete(ub1);
	ub_ctx_delete(ub2);
	free(msf.p);
	free(mdrop.p);
}

#define THREADS 4
#define ROUNDS  6

struct worker {
	struct fixture *fx;
	int ok;
	int bad;
};

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		/* Different chunk sizes per thread and round: interleave. */
		struct run good = verify(w->fx->v, &w->fx->good, 1 + (size_t)i * 13);
		struct run bad = verify(w->fx->v, &w->fx->bad, 0);

		if (is(&good, 0, DKIM_RES_PASS) && good.n == 1)
			w->ok++;
		else
			w->bad++;
		if (is(&bad, 0, DKIM_RES_FAIL) && bad.n == 1)
			w->ok++;
		else
			w->bad++;
	}
	return NULL;
}

static void
test_threads(struct fixture *fx)
{
	pthread_t t[THREADS];
	struct worker w[THREADS];
	int i, ok = 0, bad = 0;

	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .fx = fx };
		if (pthread_create(&t[i], NULL, worker_main, &w[i]) != 0)
			die("pthread_create");
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		ok += w[i].ok;
		bad += w[i].bad;
	}
	CHECK(bad == 0 && ok == THREADS * ROUNDS * 2,
	      "%d threads verifying at once on one verifier: %d right, %d "
	      "wrong",
	      THREADS, ok, bad);
}

static bool
create_refuses_null(void)
{
	errno = 0;
	return dkim_verifier_create(NULL) == NULL && errno == EINVAL;
}

static void
test_names(void)
{
	CHECK(strcmp(dkim_outcome_name(DKIM_RES_NONE), "none") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_PASS), "pass") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_FAIL), "fail") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_NEUTRAL), "neutral") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_POLICY), "policy") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_TEMPERROR), "temperror") == 0 &&
		      strcmp(dkim_outcome_name(DKIM_RES_PERMERROR), "permerror") == 0,
	      "outcome names are RFC 8601's");
}

static const char base_message[] =
	"Received: from client1.football.example.com  [192.0.2.1]\n"
	"      by submitserver.example.com with SUBMISSION;\n"
	"      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)\n"
	"From: Joe SixPack <joe@football.example.com>\n"
	"To: Suzie Q <suzie@shopping.example.net>\n"
	"Subject: Is dinner ready?\n"
	"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\n"
	"Message-ID: <20030712040037.46341.5F8J@football.example.com>\n"
	"\n"
	"Hi.\n"
	"\n"
	"We lost the game. Are you hungry yet?\n"
	"\n"
	"Joe.\n";

static char *
write_zone(const struct fixture *fx, char *dir)
{
	struct buf z = { 0 };
	struct buf part;
	char *path;
	FILE *f;

	part = read_file(fx->src, "vectors/rfc8463-a2.zone");
	buf_add(&z, part.p, part.len);
	free(part.p);
	part = read_file(fx->src, "vectors/rfc6376-c.zone");
	buf_add(&z, part.p, part.len);
	free(part.p);
	buf_str(&z, "rsa2048._domainkey.gen.example TXT ");
	buf_str(&z, fx->rsa2048.record);
	buf_str(&z, "\nresigned._domainkey.example.com TXT ");
	buf_str(&z, fx->rsa2048.record);
	buf_str(&z, "\nrsa512._domainkey.gen.example TXT ");
	buf_str(&z, fx->rsa512.record);
	buf_str(&z, "\ned._domainkey.gen.example TXT ");
	buf_str(&z, fx->ed.record);
	buf_str(&z, "\nstrict._domainkey.gen.example TXT ");
	buf_str(&z, fx->strict_record);
	buf_str(&z, "\nservfail._domainkey.gen.example SERVFAIL\n"
		    "drop._domainkey.gen.example DROP\n");

	if (asprintf(&path, "%s/test.zone", dir) < 0)
		die("asprintf");
	f = fopen(path, "w");
	if (f == NULL || fwrite(z.p, 1, z.len, f) != z.len || fclose(f) != 0)
		die(path);
	free(z.p);
	return path;
}

int
main(int argc, char **argv)
{
	struct fixture fx = { 0 };
	char dir[] = "/tmp/smtpedge-dkim-XXXXXXXX";
	struct dns_server dns;
	struct ub_ctx *ub;
	unsigned int minbits = 512;
	char *zone;

	if (argc != 2) {
		fprintf(stderr, "usage: test_dkim SOURCE_DIR\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	check_verbose = true;
	fx.src = argv[1];
	if (mkdtemp(dir) == NULL)
		die("mkdtemp");

	fx.rsa2048 = key_rsa(2048);
	fx.rsa512 = key_rsa(512);
	fx.ed = key_ed25519();
	if (asprintf(&fx.strict_record, "v=DKIM1; k=rsa; t=s; %s",
		     strstr(fx.rsa2048.record, "p=")) < 0)
		die("asprintf");
	fx.signer = dkim_init(NULL, NULL);
	/* The signer must be allowed to make the weak signature the
	 * verifier has to refuse. */
	if (fx.signer == NULL || dkim_options(fx.signer, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS,
					      &minbits, sizeof(minbits)) != DKIM_STAT_OK)
		die("signer");

	zone = write_zone(&fx, dir);
	dns = dns_start(fx.src, zone);
	ub = make_ub(dns.port);
	fx.v = make_verifier(ub, DNS_TIMEOUT_MS, 0);

	fx.base = to_crlf(base_message);
	fx.good = signed_by(fx.signer, &fx.rsa2048, "rsa2048", "gen.example", DKIM_SIGN_RSASHA256,
			    DKIM_CANON_RELAXED, &fx.base);
	fx.bad = edited(&fx.good, "We lost", "We Lost");

	CHECK(create_refuses_null(), "dkim_verifier_create without parameters is refused (EINVAL)");
	test_names();
	pieces_on = true;
	test_rfc8463(&fx);
	test_rfc6376(&fx);
	test_generated(&fx);
	test_key_rules(&fx);
	test_limits(&fx);
	test_max_signatures(&fx, ub);
	pieces_on = false;
	CHECK(pieces_runs >= 20 && pieces_differ == 0,
	      "every message verified whole, fed again in pieces at random splits with "
	      "its keys given at the end, has the same results (%u of %u differ)",
	      pieces_differ, pieces_runs);
	CHECK(pieces_early_hashing == 0 && pieces_late_hashing == 0,
	      "a job hashes the body from its header block's end, never before (%u early, "
	      "%u late)",
	      pieces_early_hashing, pieces_late_hashing);
	test_threads(&fx);
	test_dns_faults(&fx, dns.port);

	dkim_verifier_destroy(fx.v);
	ub_ctx_delete(ub);
	dns_stop(&dns);
	dkim_close(fx.signer);
	key_free(&fx.rsa2048);
	key_free(&fx.rsa512);
	key_free(&fx.ed);
	free(fx.strict_record);
	free(fx.base.p);
	free(fx.good.p);
	free(fx.bad.p);
	unlink(zone);
	free(zone);
	rmdir(dir);

	return check_done();
}
