/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/relay/relay_cli.c — a small command line around control/relay.c, so that the
 * Python harness (test_relay.py) can drive real deliveries against its fake
 * downstream and against Postfix's smtp-sink, and check what arrived.
 *
 * One relay object per run; --count messages per thread, --threads threads
 * sharing it (the pool is shared, as the work threads share it). The body
 * is cut into --chunk-byte chunks, so that dot-stuffing across chunk
 * boundaries is exercised. With --seq each message's prefix starts with
 * "X-Seq: T.I" so the harness can tell every copy apart.
 *
 * --ptr and --ptr-result (pass, the default; none, mismatch, temperror,
 * unknown) are the client's PTR name and its result.
 *
 * --submit N hands N messages over at once with relay_submit (from one
 * thread, as the control plane's work threads do) instead of the threads'
 * relay_deliver, and waits for their answers. --connections is the
 * relay's bound on open connections.
 *
 * Prints one line per message, then the relay's counters:
 *   RESULT T.I CODE ENH DELIVERED MILLISECONDS TEXT
 *   STATS opened=N reused=N open=N pipelined=N inflight=N inflight_max=N queued=N
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/rules.h"

#include "control/relay.h"

#define MAX_RCPTS 1000

static struct {
	struct relay_params p;
	const char *from;
	const char *rcpts[MAX_RCPTS];
	uint32_t nrcpts;
	char *prefix;
	size_t prefix_len;
	char *body;
	size_t body_len;
	size_t chunk;
	uint8_t family;
	uint8_t addr[16];
	const char *client_helo;
	const char *ptr;
	uint8_t ptr_result;
	unsigned count, threads, pause_ms, submit;
	uint64_t counters[RELAY__COUNTERS];
	sem_t answered;
	bool seq, utf8, eightbit;
	struct relay *relay;
	pthread_mutex_t out;
	unsigned failures;
} g = { .chunk = 8192,
	.count = 1,
	.threads = 1,
	.client_helo = "",
	.ptr = "",
	.ptr_result = PTR_PASS,
	.from = "" };

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0 ||
	    !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "relay_cli: cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* The body as the engine hands it over: a chain of chunks. */
static struct chunk *
make_chain(void)
{
	struct chunk *head = NULL, **tail = &head;
	size_t off;

	for (off = 0; off < g.body_len; off += g.chunk) {
		size_t n = g.body_len - off < g.chunk ? g.body_len - off : g.chunk;
		struct chunk *c = malloc(sizeof(*c) + n);

		if (!c)
			exit(2);
		c->next = NULL;
		c->len = c->cap = (uint32_t)n;
		memcpy(c->data, g.body + off, n);
		*tail = c;
		tail = &c->next;
	}
	return head;
}

static double
ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void *
run(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg, i;
	struct chunk *chain = make_chain(), *c;
	char *prefix = malloc(g.prefix_len + 64);

	if (!prefix)
		exit(2);
	for (i = 0; i < g.count; i++) {
		struct relay_msg m = {
			.mail_from = g.from,
			.rcpts = g.rcpts,
			.nrcpts = g.nrcpts,
			.family = g.family,
			.addr = g.addr,
			.helo = g.client_helo,
			.ptr = g.ptr_result,
			.ptr_name = g.ptr,
			.prefix = prefix,
			.body = chain,
			.body_8bit = g.eightbit,
			.smtputf8 = g.utf8,
		};
		struct relay_result res;
		struct timespec t0;
		size_t n = 0;
		int rc;

		if (g.seq)
			n = (size_t)sprintf(prefix, "X-Seq: %u.%u\r\n", t, i);
		if (g.prefix_len)
			memcpy(prefix + n, g.prefix, g.prefix_len);
		m.prefix_len = n + g.prefix_len;
		if (i > 0 && g.pause_ms)
			usleep(g.pause_ms * 1000u);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = relay_deliver(g.relay, &m, &res);
		pthread_mutex_lock(&g.out);
		if ((rc == 0) != (res.code / 100 == 2))
			g.failures++;
		printf("RESULT %u.%u %u %s %u %.1f %s\n", t, i, res.code, res.enh, res.delivered,
		       ms_since(&t0), res.text);
		fflush(stdout);
		pthread_mutex_unlock(&g.out);
	}
	while (chain) {
		c = chain->next;
		free(chain);
		chain = c;
	}
	free(prefix);
	return NULL;
}

/* One --submit message, from relay_submit to its answer. */
struct submitted {
	unsigned i;
	struct timespec t0;
};

static void
answered(void *arg, const struct relay_result *res)
{
	struct submitted *s = arg;

	pthread_mutex_lock(&g.out);
	printf("RESULT 0.%u %u %s %u %.1f %s\n", s->i, res->code, res->enh, res->delivered,
	       ms_since(&s->t0), res->text);
	fflush(stdout);
	pthread_mutex_unlock(&g.out);
	sem_post(&g.answered);
}

/* --submit: every message queued at once, then the answers awaited. */
static void
submit_all(void)
{
	struct chunk *chain = make_chain(), *c;
	struct submitted *s = calloc(g.submit, sizeof(*s));
	char **prefix = calloc(g.submit, sizeof(*prefix));
	unsigned i, queued = 0;

	if (!s || !prefix)
		exit(2);
	for (i = 0; i < g.submit; i++) {
		struct relay_msg m = {
			.mail_from = g.from,
			.rcpts = g.rcpts,
			.nrcpts = g.nrcpts,
			.family = g.family,
			.addr = g.addr,
			.helo = g.client_helo,
			.ptr = g.ptr_result,
			.ptr_name = g.ptr,
			.body = chain,
			.body_8bit = g.eightbit,
			.smtputf8 = g.utf8,
		};
		size_t n = 0;

		/* The prefix is freed before the answer: the relay owns a copy. */
		prefix[i] = malloc(g.prefix_len + 64);
		if (!prefix[i])
			exit(2);
		if (g.seq)
			n = (size_t)sprintf(prefix[i], "X-Seq: 0.%u\r\n", i);
		if (g.prefix_len)
			memcpy(prefix[i] + n, g.prefix, g.prefix_len);
		m.prefix = prefix[i];
		m.prefix_len = n + g.prefix_len;
		s[i].i = i;
		clock_gettime(CLOCK_MONOTONIC, &s[i].t0);
		if (relay_submit(g.relay, &m, answered, &s[i]) == 0)
			queued++;
		else
			printf("SUBMIT-FAILED 0.%u\n", i);
		memset(prefix[i], 'Z', m.prefix_len);
		free(prefix[i]);
	}
	for (i = 0; i < queued; i++)
		sem_wait(&g.answered);
	while (chain) {
		c = chain->next;
		free(chain);
		chain = c;
	}
	free(prefix);
	free(s);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "target", 1, 0, 't' },
		{ "helo", 1, 0, 'H' },
		{ "lmtp", 0, 0, 'L' },
		{ "pool", 1, 0, 'P' },
		{ "timeout", 1, 0, 'T' },
		{ "final-timeout", 1, 0, 'F' },
		{ "from", 1, 0, 'f' },
		{ "rcpt", 1, 0, 'r' },
		{ "prefix-file", 1, 0, 'p' },
		{ "body-file", 1, 0, 'b' },
		{ "chunk", 1, 0, 'c' },
		{ "client-addr", 1, 0, 'a' },
		{ "client-helo", 1, 0, 'e' },
		{ "ptr", 1, 0, 'n' },
		{ "count", 1, 0, 'N' },
		{ "threads", 1, 0, 'j' },
		{ "pause", 1, 0, 'w' },
		{ "seq", 0, 0, 's' },
		{ "utf8", 0, 0, 'u' },
		{ "8bit", 0, 0, '8' },
		{ "idle-max", 1, 0, 'I' },
		{ "ptr-result", 1, 0, 'R' },
		{ "submit", 1, 0, 'S' },
		{ "connections", 1, 0, 'C' },
		{ 0, 0, 0, 0 },
	};
	pthread_t th[64];
	char err[256];
	enum ptr_result r;
	int o;
	unsigned i;

	g.p.helo = "edge.test";
	g.p.pool_size = 4;
	g.p.timeout_ms = 5000;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 't': g.p.target = optarg; break;
		case 'H': g.p.helo = optarg; break;
		case 'L': g.p.lmtp = true; break;
		case 'P': g.p.pool_size = (uint32_t)atoi(optarg); break;
		case 'T': g.p.timeout_ms = (uint32_t)atoi(optarg); break;
		case 'F': g.p.final_timeout_ms = (uint32_t)atoi(optarg); break;
		case 'I': g.p.idle_max_ms = (uint32_t)atoi(optarg); break;
		case 'f': g.from = optarg; break;
		case 'r':
			if (g.nrcpts < MAX_RCPTS)
				g.rcpts[g.nrcpts++] = optarg;
			break;
		case 'p': g.prefix = slurp(optarg, &g.prefix_len); break;
		case 'b': g.body = slurp(optarg, &g.body_len); break;
		case 'c': g.chunk = (size_t)atol(optarg); break;
		case 'a':
			if (inet_pton(AF_INET6, optarg, g.addr) == 1)
				g.family = 6;
			else if (inet_pton(AF_INET, optarg, g.addr) == 1)
				g.family = 4;
			break;
		case 'e': g.client_helo = optarg; break;
		case 'n': g.ptr = optarg; break;
		case 'R':
			for (r = PTR_UNKNOWN;
			     r < PTR__RESULTS && strcmp(ptr_result_name(r), optarg) != 0; r++)
				;
			if (r == PTR__RESULTS) {
				fprintf(stderr, "relay_cli: --ptr-result %s?\n", optarg);
				return 2;
			}
			g.ptr_result = (uint8_t)r;
			break;
		case 'N': g.count = (unsigned)atoi(optarg); break;
		case 'j': g.threads = (unsigned)atoi(optarg); break;
		case 'w': g.pause_ms = (unsigned)atoi(optarg); break;
		case 's': g.seq = true; break;
		case 'u': g.utf8 = true; break;
		case '8': g.eightbit = true; break;
		case 'S': g.submit = (unsigned)atoi(optarg); break;
		case 'C': g.p.connections = (uint32_t)atoi(optarg); break;
		default: return 2;
		}
	}
	if (!g.p.target || g.chunk == 0 || g.threads == 0 || g.threads > 64) {
		fprintf(stderr, "relay_cli: --target needed; chunk, threads sane\n");
		return 2;
	}
	g.p.counters = g.counters;
	g.relay = relay_create(&g.p, err, sizeof(err));
	if (!g.relay) {
		printf("CREATE-FAILED %s\n", err);
		return 3;
	}
	pthread_mutex_init(&g.out, NULL);
	sem_init(&g.answered, 0, 0);
	if (g.submit) {
		submit_all();
	} else {
		for (i = 0; i < g.threads; i++)
			if (pthread_create(&th[i], NULL, run, (void *)(uintptr_t)i) != 0)
				return 2;
		for (i = 0; i < g.threads; i++)
			pthread_join(th[i], NULL);
	}
	relay_destroy(g.relay);
	printf("STATS opened=%" PRIu64 " reused=%" PRIu64 " open=%" PRIu64 " pipelined=%" PRIu64
	       " inflight=%" PRIu64 " inflight_max=%" PRIu64 " queued=%" PRIu64 "\n",
	       g.counters[RELAY_CONN_OPENED], g.counters[RELAY_CONN_REUSED],
	       g.counters[RELAY_CONN_OPEN], g.counters[RELAY_PIPELINED], g.counters[RELAY_INFLIGHT],
	       g.counters[RELAY_INFLIGHT_MAX], g.counters[RELAY_QUEUED]);
	free(g.prefix);
	free(g.body);
	/* A return code that disagrees with the result's code is a bug. */
	if (g.failures)
		printf("INCONSISTENT %u\n", g.failures);
	return g.failures ? 1 : 0;
}
