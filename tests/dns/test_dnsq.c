/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/test_dnsq.c — dns/dnsq.c on a real libunbound context (suite 'dns').
 *
 * The context forwards to a small DNS server of the test's own, a thread on
 * 127.0.0.1: it answers A queries for names under ok.example with 192.0.2.1,
 * NXDOMAIN for names under nx.example, and nothing at all for names under
 * hole.example (so the deadline fires). Queries are driven the way the
 * dispatcher drives them: poll(dnsq_fd()) with dnsq_timeout_ms(), then
 * dnsq_process().
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <unbound.h>

#include "dns/dnsq.h"
#include "dns/resolver.h"

#include "tests/check.h"

static int server_fd = -1, server_port;
static atomic_bool server_stop;
static atomic_uint server_queries;

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the server ---------------------------------------------------- */

/* The question's name in lower case, dotted; its end offset in *end. */
static bool
question(const uint8_t *m, size_t n, char *name, size_t len, size_t *end)
{
	size_t off = 12, o = 0;

	if (n < 17)
		return false;
	while (off < n && m[off] != 0) {
		size_t l = m[off++];

		if (l > 63 || off + l > n || o + l + 2 > len)
			return false;
		if (o > 0)
			name[o++] = '.';
		for (size_t i = 0; i < l; i++)
			name[o++] = (char)(m[off + i] | 0x20);
		off += l;
	}
	name[o] = '\0';
	*end = off + 5; /* the root label, QTYPE, QCLASS */
	return *end <= n;
}

static bool
under(const char *name, const char *zone)
{
	size_t n = strlen(name), z = strlen(zone);

	return n > z && name[n - z - 1] == '.' && strcmp(name + n - z, zone) == 0;
}

static void *
server_main(void *arg)
{
	uint8_t q[512], a[600];
	struct sockaddr_in from;
	socklen_t flen;
	char name[300];
	size_t end;
	ssize_t n;

	(void)arg;
	while (!atomic_load(&server_stop)) {
		struct pollfd pfd = { .fd = server_fd, .events = POLLIN };

		if (poll(&pfd, 1, 50) != 1)
			continue;
		flen = sizeof(from);
		n = recvfrom(server_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
		if (n <= 0 || !question(q, (size_t)n, name, sizeof(name), &end))
			continue;
		atomic_fetch_add(&server_queries, 1);
		if (under(name, "hole.example"))
			continue;
		memcpy(a, q, end);
		a[2] = 0x84 | (q[2] & 0x01); /* QR, AA, RD as asked */
		a[3] = 0x80;                 /* RA */
		a[6] = a[7] = 0;
		a[8] = a[9] = a[10] = a[11] = 0;
		if (under(name, "ok.example") && q[end - 4] == 0 && q[end - 3] == ns_t_a) {
			static const uint8_t rr[] = { 0xc0, 12, 0, 1, 0,   1, 0, 0,
						      0,    60, 0, 4, 192, 0, 2, 1 };

			a[7] = 1;
			memcpy(a + end, rr, sizeof(rr));
			end += sizeof(rr);
		} else if (!under(name, "ok.example")) {
			a[3] |= 3; /* NXDOMAIN */
		}
		sendto(server_fd, a, end, 0, (struct sockaddr *)&from, flen);
	}
	return NULL;
}

static pthread_t server_thread;

static void
start_server(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server_fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (server_fd < 0 || bind(server_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(server_fd, (struct sockaddr *)&sa, &len) != 0) {
		fprintf(stderr, "test server: %s\n", strerror(errno));
		exit(2);
	}
	server_port = ntohs(sa.sin_port);
	pthread_create(&server_thread, NULL, server_main, NULL);
}

static void
stop_server(void)
{
	atomic_store(&server_stop, true);
	pthread_join(server_thread, NULL);
	close(server_fd);
}

/* ---- driving queries ----------------------------------------------- */

struct got {
	int calls;
	int err;
	bool data, nx;
	uint64_t at_us;
	int order; /* the how-many-th callback of the run */
};

static int callbacks;

static void
on_done(void *arg, int err, struct ub_result *res)
{
	struct got *g = arg;

	g->calls++;
	g->err = err;
	g->data = res != NULL && res->havedata;
	g->nx = res != NULL && res->rcode == ns_r_nxdomain;
	g->at_us = now_us();
	g->order = ++callbacks;
	ub_resolve_free(res);
}

/* The dispatcher's loop until the in-flight count is 0 (or guard_ms). */
static void
drive(struct dnsq *q, uint64_t guard_ms)
{
	uint64_t end = now_us() + guard_ms * 1000u;

	while (dnsq_inflight(q) > 0 && now_us() < end) {
		struct pollfd pfd = { .fd = dnsq_fd(q), .events = POLLIN };
		int t = dnsq_timeout_ms(q, now_us());

		poll(&pfd, 1, t < 0 || t > 50 ? 50 : t);
		dnsq_process(q, now_us());
	}
}

static struct dnsq *
make(struct ub_ctx *ub, uint32_t max)
{
	struct dnsq_params p = { .ub = ub, .max_inflight = max };
	struct dnsq *q = dnsq_create(&p);

	CHECK(q != NULL, "dnsq_create: %s", strerror(errno));
	return q;
}

static void
test_answers(struct ub_ctx *ub)
{
	struct dnsq *q = make(ub, 16);
	struct got ok = { 0 }, nx = { 0 };

	CHECK(dnsq_issue(q, "a.ok.example", ns_t_a, 2000, on_done, &ok, now_us()) != 0);
	CHECK(dnsq_issue(q, "b.nx.example", ns_t_a, 2000, on_done, &nx, now_us()) != 0);
	CHECK_EQ_INT(dnsq_inflight(q), 2);
	drive(q, 3000);
	CHECK(ok.calls == 1 && ok.err == 0 && ok.data, "answer: calls %d err %d", ok.calls, ok.err);
	CHECK(nx.calls == 1 && nx.err == 0 && nx.nx && !nx.data, "NXDOMAIN");
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_ANSWERED), 2);
	CHECK_EQ_INT(dnsq_timeout_ms(q, now_us()), -1);
	dnsq_destroy(q);
}

static void
test_deadlines_in_order(struct ub_ctx *ub)
{
	struct dnsq *q = make(ub, 16);
	struct got late = { 0 }, early = { 0 }, mid = { 0 };
	uint64_t t0 = now_us();

	callbacks = 0;
	/* issued out of deadline order: the heap expires them in order */
	CHECK(dnsq_issue(q, "x.hole.example", ns_t_a, 600, on_done, &late, t0) != 0);
	CHECK(dnsq_issue(q, "y.hole.example", ns_t_a, 200, on_done, &early, t0) != 0);
	CHECK(dnsq_issue(q, "z.hole.example", ns_t_a, 400, on_done, &mid, t0) != 0);
	CHECK(dnsq_timeout_ms(q, t0) == 200, "next deadline %d", dnsq_timeout_ms(q, t0));
	drive(q, 3000);
	CHECK(early.calls == 1 && early.err == DNSQ_TIMEOUT && early.order == 1, "first");
	CHECK(mid.calls == 1 && mid.err == DNSQ_TIMEOUT && mid.order == 2, "second");
	CHECK(late.calls == 1 && late.err == DNSQ_TIMEOUT && late.order == 3, "third");
	CHECK(early.at_us - t0 >= 200000 && late.at_us - t0 >= 600000, "not before the deadline");
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_TIMEOUTS), 3);
	dnsq_destroy(q);
}

static void
test_cancel(struct ub_ctx *ub)
{
	struct dnsq *q = make(ub, 16);
	struct got gone = { 0 }, kept = { 0 }, stale = { 0 };
	uint64_t h, h2;

	h = dnsq_issue(q, "c.ok.example", ns_t_a, 2000, on_done, &gone, now_us());
	h2 = dnsq_issue(q, "d.ok.example", ns_t_a, 2000, on_done, &kept, now_us());
	CHECK(h != 0 && h2 != 0 && h != h2);
	dnsq_cancel(q, h);
	CHECK_EQ_INT(dnsq_inflight(q), 1);
	drive(q, 3000);
	/* the answer to the cancelled one may arrive: it is dropped */
	for (int i = 0; i < 10; i++) {
		usleep(10000);
		dnsq_process(q, now_us());
	}
	CHECK(gone.calls == 0, "a cancelled query's callback ran");
	CHECK(kept.calls == 1 && kept.data, "the other query");
	/* a handle whose query is over names nothing, even once its slot is
	 * reused */
	dnsq_cancel(q, h2);
	CHECK(dnsq_issue(q, "e.ok.example", ns_t_a, 2000, on_done, &stale, now_us()) != 0);
	dnsq_cancel(q, h);
	dnsq_cancel(q, h2);
	drive(q, 3000);
	CHECK(stale.calls == 1, "an old handle cancelled a new query");
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_CANCELLED), 1);
	dnsq_destroy(q);
}

static void
test_busy_and_destroy(struct ub_ctx *ub)
{
	struct dnsq *q = make(ub, 2);
	struct got g[3] = { { 0 } };

	CHECK(dnsq_issue(q, "p.hole.example", ns_t_a, 5000, on_done, &g[0], now_us()) != 0);
	CHECK(dnsq_issue(q, "q.hole.example", ns_t_a, 5000, on_done, &g[1], now_us()) != 0);
	errno = 0;
	CHECK(dnsq_issue(q, "r.ok.example", ns_t_a, 5000, on_done, &g[2], now_us()) == 0 &&
		      errno == EBUSY,
	      "a third query in a pool of two");
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_BUSY), 1);
	/* destroyed with two out: no callback, nothing left behind */
	dnsq_destroy(q);
	CHECK(g[0].calls == 0 && g[1].calls == 0 && g[2].calls == 0);
}

/* Another thread calls ub_process() on the shared context meanwhile, as
 * DKIM's threads do: answers it takes out must still reach us. */
static atomic_bool thief_stop;

static void *
thief_main(void *arg)
{
	struct ub_ctx *ub = arg;

	while (!atomic_load(&thief_stop)) {
		ub_process(ub);
		usleep(100);
	}
	return NULL;
}

static void
test_other_thread(struct ub_ctx *ub)
{
	enum { N = 200 };
	struct dnsq *q = make(ub, N);
	static struct got g[N];
	char name[64];
	pthread_t thief;
	int answered = 0;

	memset(g, 0, sizeof(g));
	atomic_store(&thief_stop, false);
	pthread_create(&thief, NULL, thief_main, ub);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "t%d.ok.example", i);
		CHECK(dnsq_issue(q, name, ns_t_a, 5000, on_done, &g[i], now_us()) != 0);
	}
	drive(q, 6000);
	atomic_store(&thief_stop, true);
	pthread_join(thief, NULL);
	for (int i = 0; i < N; i++)
		answered += g[i].calls == 1 && g[i].data;
	CHECK_EQ_INT(answered, N);
	dnsq_destroy(q);
}

/*
 * The same, with answers libunbound has cached: its thread answers at
 * once, so the other thread's ub_process() runs our callback while
 * dnsq_issue() is still returning. Every query must be taken (none
 * refused as busy for a slot the callback relinked) and answered once.
 */
static void
test_other_thread_cached(struct ub_ctx *ub)
{
	enum { N = 2000, ROUNDS = 20 };
	struct dnsq *q = make(ub, N);
	static struct got g[N];
	char name[64];
	pthread_t thief;
	int answered = 0, issued = 0;

	atomic_store(&thief_stop, false);
	pthread_create(&thief, NULL, thief_main, ub);
	for (int r = 0; r < ROUNDS; r++) {
		/* the first round fills libunbound's cache */
		memset(g, 0, sizeof(g));
		for (int i = 0; i < N; i++) {
			snprintf(name, sizeof(name), "c%d.ok.example", i);
			issued += dnsq_issue(q, name, ns_t_a, 5000, on_done, &g[i], now_us()) != 0;
		}
		drive(q, 6000);
		for (int i = 0; i < N; i++)
			answered += g[i].calls == 1 && g[i].data;
	}
	atomic_store(&thief_stop, true);
	pthread_join(thief, NULL);
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_BUSY), 0);
	CHECK_EQ_INT(issued, N * ROUNDS);
	CHECK_EQ_INT(answered, N * ROUNDS);
	CHECK_EQ_INT(dnsq_inflight(q), 0);
	dnsq_destroy(q);
}

/* Lanes: each has slots of its own, and a full one leaves the others be. */
static void
test_lanes(struct ub_ctx *ub)
{
	struct dnsq_params p = { .ub = ub, .max_inflight = 2, .lane_max = { 3 } };
	struct dnsq *q = dnsq_create(&p);
	struct got hole[5] = { { 0 } }, ok0 = { 0 }, ok1 = { 0 }, over = { 0 };
	uint64_t h[3];

	CHECK(q != NULL, "dnsq_create with a lane: %s", strerror(errno));
	if (q == NULL)
		return;
	for (int i = 0; i < 3; i++) {
		h[i] = dnsq_issue_lane(q, 1, "l1.hole.example", ns_t_a, 5000, on_done, &hole[i],
				       now_us());
		CHECK(h[i] != 0, "lane 1 query %d", i);
	}
	errno = 0;
	CHECK(dnsq_issue_lane(q, 1, "l.ok.example", ns_t_a, 5000, on_done, &over, now_us()) == 0 &&
		      errno == EBUSY,
	      "lane 1 full");
	/* lane 0 has its two slots whatever lane 1 holds */
	CHECK(dnsq_issue(q, "l0.hole.example", ns_t_a, 5000, on_done, &hole[3], now_us()) != 0);
	CHECK(dnsq_issue(q, "a0.ok.example", ns_t_a, 5000, on_done, &ok0, now_us()) != 0);
	errno = 0;
	CHECK(dnsq_issue(q, "b0.ok.example", ns_t_a, 5000, on_done, &over, now_us()) == 0 &&
		      errno == EBUSY,
	      "lane 0 full");
	CHECK_EQ_INT(dnsq_inflight(q), 5);
	CHECK_EQ_INT(dnsq_counter(q, DNSQ_C_BUSY), 2);
	errno = 0;
	CHECK(dnsq_issue_lane(q, DNSQ_LANES, "x.ok.example", ns_t_a, 5000, on_done, &over,
			      now_us()) == 0 &&
		      errno == EINVAL,
	      "a lane out of range");
	/* a slot given back goes to its own lane */
	dnsq_cancel(q, h[0]);
	CHECK(dnsq_issue_lane(q, 1, "a1.ok.example", ns_t_a, 5000, on_done, &ok1, now_us()) != 0,
	      "lane 1 again after a cancel");
	errno = 0;
	CHECK(dnsq_issue(q, "c0.ok.example", ns_t_a, 5000, on_done, &over, now_us()) == 0 &&
		      errno == EBUSY,
	      "lane 1's slot did not go to lane 0");
	/* answers reach both lanes' callers through the one fd */
	for (uint64_t end = now_us() + 3000000;
	     (ok0.calls == 0 || ok1.calls == 0) && now_us() < end;) {
		struct pollfd pfd = { .fd = dnsq_fd(q), .events = POLLIN };

		poll(&pfd, 1, 50);
		dnsq_process(q, now_us());
	}
	CHECK(ok0.calls == 1 && ok0.data && ok1.calls == 1 && ok1.data, "both lanes answered");
	CHECK(over.calls == 0 && hole[0].calls == 0, "nothing for the refused or cancelled");
	dnsq_destroy(q);
	p.max_inflight = 1;
	p.lane_max[0] = INT32_MAX;
	errno = 0;
	CHECK(dnsq_create(&p) == NULL && errno == EINVAL, "lanes over INT32_MAX in all");
}

int
main(void)
{
	struct dns_resolver_params p = { 0 };
	char fwd[64], err[160];
	const char *servers[1] = { fwd };
	struct dnsq_params bad = { 0 };
	struct ub_ctx *ub;

	setvbuf(stdout, NULL, _IOLBF, 0);
	start_server();
	snprintf(fwd, sizeof(fwd), "127.0.0.1@%d", server_port);
	p.servers = servers;
	p.n_servers = 1;
	ub = dns_resolver_create(&p, err, sizeof(err));
	if (ub == NULL) {
		fprintf(stderr, "dns_resolver_create: %s\n", err);
		return 2;
	}
	errno = 0;
	CHECK(dnsq_create(&bad) == NULL && errno == EINVAL, "no context");
	test_answers(ub);
	test_deadlines_in_order(ub);
	test_cancel(ub);
	test_busy_and_destroy(ub);
	test_other_thread(ub);
	test_other_thread_cached(ub);
	test_lanes(ub);
	dns_resolver_destroy(ub);
	stop_server();
	return check_done();
}
