/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dns/test_rdns.c — dns/rdns.c and dns/resolver.c against a real
 * unbound serving the test zones on 127.0.0.1 (suite 'dns').
 *
 * The test writes an unbound.conf into a temporary directory, runs
 * `unbound -d` as its child on a free port, and points a libunbound
 * context made by dns_resolver_create() at it. Failing zones are
 * stub-zones whose server is a closed port (unbound answers SERVFAIL) or
 * a socket of ours that never answers (the deadline fires). Each rdns has a
 * dnsq of its own (its queries in lane RDNS_LANE, lane 0 left for the
 * test's own queries, as the dispatcher leaves it for SPF's), and each
 * lookup is driven the way the dispatcher drives it: poll(dnsq_fd()) with
 * dnsq_timeout_ms(), then dnsq_process().
 *
 * Usage: test_rdns /path/to/unbound
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <unbound.h>

#include "dns/dnsq.h"
#include "dns/rdns.h"
#include "dns/resolver.h"

#include "tests/check.h"

#define BULK_N      10000
#define BULK_PREFIX "2001:db8:60::" /* a /112: the last 16 bits vary */
#define RDNS_LANE   1
#define OTHER_SLOTS 8 /* lane 0: the queries of SPF's stand-in */

static char tmpdir[64];
static pid_t server_pid = -1;
static int server_port, hole_port, hole_fd = -1;

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void stop_server(void);

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (tmpdir[0] != '\0')
		stop_server();
	check_failed++; /* the test could not run to its end */
	(void)check_done();
	exit(2);
}

/* ---- the server ---------------------------------------------------- */

/* A UDP socket on a free port of 127.0.0.1; its fd, port in *port. */
static int
udp_socket(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
		die("udp socket: %s", strerror(errno));
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port free for both UDP and TCP right now (unbound listens on both). */
static int
free_port(void)
{
	for (int tries = 0; tries < 50; tries++) {
		int port, ufd = udp_socket(&port);
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_port = htons((uint16_t)port) };
		int tfd = socket(AF_INET, SOCK_STREAM, 0);
		int ok;

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ok = tfd >= 0 && bind(tfd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(ufd);
		if (tfd >= 0)
			close(tfd);
		if (ok)
			return port;
	}
	die("no free port");
	return -1;
}

static void
v6_nibbles(const char *addr, char *out, size_t n, int nibbles)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t a[16];
	size_t o = 0;

	if (inet_pton(AF_INET6, addr, a) != 1)
		die("bad test address %s", addr);
	for (int i = nibbles - 1; i >= 0; i--) {
		uint8_t b = a[i / 2];

		o += (size_t)snprintf(out + o, n - o, "%c.", hex[i % 2 ? b & 0xf : b >> 4]);
	}
	snprintf(out + o, n - o, "ip6.arpa.");
}

static void
ptr6(FILE *f, const char *addr, const char *target)
{
	char rev[96];

	v6_nibbles(addr, rev, sizeof(rev), 32);
	fprintf(f, "  local-data: \"%s 3600 IN PTR %s\"\n", rev, target);
}

static void
ptr4(FILE *f, const char *addr, const char *target)
{
	unsigned a, b, c, d;

	if (sscanf(addr, "%u.%u.%u.%u", &a, &b, &c, &d) != 4)
		die("bad test address %s", addr);
	fprintf(f,
		"  local-data: \"%u.%u.%u.%u.in-addr.arpa. 3600 IN PTR "
		"%s\"\n",
		d, c, b, a, target);
}

static void
rr(FILE *f, const char *fmt, ...)
{
	va_list ap;

	fprintf(f, "  local-data: \"");
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fprintf(f, "\"\n");
}

/* The zones; the cases in main() say what each entry is for. */
static void
write_zones(FILE *f)
{
	char name[64], zone[96];

	fprintf(f, "  local-zone: \"rdns.example.\" static\n");
	rr(f, "rdns.example. 3600 IN SOA ns.rdns.example. h.rdns.example. 1 3600 600 "
	      "86400 300");
	v6_nibbles("2001:db8:53::", zone, sizeof(zone), 12);
	fprintf(f, "  local-zone: \"%s\" static\n", zone);
	rr(f,
	   "%s 3600 IN SOA ns.rdns.example. h.rdns.example. 1 3600 600 86400 "
	   "300",
	   zone);
	fprintf(f, "  local-zone: \"100.51.198.in-addr.arpa.\" static\n");
	rr(f, "100.51.198.in-addr.arpa. 3600 IN SOA ns.rdns.example. "
	      "h.rdns.example. 1 3600 600 86400 300");
	rr(f, "other.rdns.example. 3600 IN AAAA 2001:db8:53::99");
	rr(f, "other.rdns.example. 3600 IN A 198.51.100.99");

	ptr6(f, "2001:db8:53::1", "ok6.rdns.example.");
	rr(f, "ok6.rdns.example. 3600 IN AAAA 2001:db8:53::1");
	ptr6(f, "2001:db8:53::3", "noaddr.rdns.example.");
	rr(f, "noaddr.rdns.example. 3600 IN A 198.51.100.3");
	ptr6(f, "2001:db8:53::4", "alias6.rdns.example.");
	rr(f, "alias6.rdns.example. 3600 IN CNAME target6.rdns.example.");
	rr(f, "target6.rdns.example. 3600 IN AAAA 2001:db8:53::4");
	ptr6(f, "2001:db8:53::5", "a5.rdns.example.");
	ptr6(f, "2001:db8:53::5", "b5.rdns.example.");
	ptr6(f, "2001:db8:53::5", "c5.rdns.example.");
	rr(f, "a5.rdns.example. 3600 IN AAAA 2001:db8:53::99");
	rr(f, "b5.rdns.example. 3600 IN TXT no-address-here");
	rr(f, "c5.rdns.example. 3600 IN AAAA 2001:db8:53::5");
	for (int i = 1; i <= 12; i++) {
		snprintf(name, sizeof(name), "t6-%d.rdns.example.", i);
		ptr6(f, "2001:db8:53::6", name);
		if (i == 12)
			rr(f, "%s 3600 IN AAAA 2001:db8:53::6", name);
		else
			rr(f, "%s 3600 IN AAAA 2001:db8:53::99", name);
	}
	ptr6(f, "2001:db8:53::7", "x.fail.example.");
	ptr6(f, "2001:db8:53::8", "other.rdns.example.");
	ptr6(f, "2001:db8:53::8", "y.fail.example.");
	{
		char rev[96];

		v6_nibbles("2001:db8:53::9", rev, sizeof(rev), 32);
		rr(f, "%s 3600 IN TXT a-name-with-no-PTR", rev);
	}
	ptr6(f, "2001:db8:53::a", "gone.rdns.example.");
	for (int i = 1; i <= 10; i++) {
		snprintf(name, sizeof(name), "t10-%d.rdns.example.", i);
		ptr6(f, "2001:db8:53::b", name);
		rr(f, "%s 3600 IN AAAA 2001:db8:53::%s", name, i == 10 ? "b" : "99");
	}
	/* TTL 0: a PASS that must not be cached */
	rr(f, "%s 0 IN PTR zero.rdns.example.",
	   (v6_nibbles("2001:db8:53::d", zone, sizeof(zone), 32), zone));
	rr(f, "zero.rdns.example. 0 IN AAAA 2001:db8:53::d");
	ptr6(f, "2001:db8:53::c", "first2.rdns.example.");
	ptr6(f, "2001:db8:53::c", "other.rdns.example.");
	rr(f, "first2.rdns.example. 3600 IN AAAA 2001:db8:53::c");
	/* a label with a dot in it, written \. in presentation form */
	ptr6(f, "2001:db8:53::10", "we\\.ird.rdns.example.");
	rr(f, "we\\.ird.rdns.example. 3600 IN AAAA 2001:db8:53::10");
	/* the first name never answers: only parallel lookups pass */
	ptr6(f, "2001:db8:53::f", "z.hole.example.");
	ptr6(f, "2001:db8:53::f", "par.rdns.example.");
	rr(f, "par.rdns.example. 3600 IN AAAA 2001:db8:53::f");
	ptr6(f, "2001:db8:53::e", "other.rdns.example.");
	ptr6(f, "2001:db8:53::e", "z.hole.example.");

	ptr4(f, "198.51.100.1", "ok4.rdns.example.");
	rr(f, "ok4.rdns.example. 3600 IN A 198.51.100.1");
	ptr4(f, "198.51.100.3", "noaddr4.rdns.example.");
	rr(f, "noaddr4.rdns.example. 3600 IN AAAA 2001:db8:53::3");
	ptr4(f, "198.51.100.4", "alias4.rdns.example.");
	rr(f, "alias4.rdns.example. 3600 IN CNAME target4.rdns.example.");
	rr(f, "target4.rdns.example. 3600 IN A 198.51.100.4");
	ptr4(f, "198.51.100.5", "a5v4.rdns.example.");
	ptr4(f, "198.51.100.5", "b5v4.rdns.example.");
	ptr4(f, "198.51.100.5", "c5v4.rdns.example.");
	rr(f, "a5v4.rdns.example. 3600 IN A 198.51.100.99");
	rr(f, "c5v4.rdns.example. 3600 IN A 198.51.100.5");
	for (int i = 1; i <= 12; i++) {
		snprintf(name, sizeof(name), "t4-%d.rdns.example.", i);
		ptr4(f, "198.51.100.6", name);
		rr(f, "%s 3600 IN A 198.51.100.%s", name, i == 12 ? "6" : "99");
	}
	ptr4(f, "198.51.100.8", "other.rdns.example.");
	ptr4(f, "198.51.100.8", "v.fail.example.");

	/* the bulk /112: i%4 == 0 confirms, 2 mismatches, 1 and 3 have no
	 * PTR (NXDOMAIN from the static zone) */
	v6_nibbles(BULK_PREFIX, zone, sizeof(zone), 28);
	fprintf(f, "  local-zone: \"%s\" static\n", zone);
	for (int i = 0; i < BULK_N; i += 2) {
		char addr[64];

		snprintf(addr, sizeof(addr), BULK_PREFIX "%x", i);
		snprintf(name, sizeof(name), "h%d.bulk.rdns.example.", i);
		ptr6(f, addr, name);
		rr(f, "%s 3600 IN AAAA %s", name, i % 4 == 0 ? addr : "2001:db8:53::99");
	}
}

static void
write_config(const char *path)
{
	FILE *f = fopen(path, "w");
	char zone[96];

	if (f == NULL)
		die("%s: %s", path, strerror(errno));
	fprintf(f,
		"server:\n"
		"  interface: 127.0.0.1\n  port: %d\n"
		"  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n"
		"  directory: \"%s\"\n  pidfile: \"%s/unbound.pid\"\n"
		"  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n"
		"  module-config: \"iterator\"\n  num-threads: 1\n"
		"  do-ip6: no\n  do-not-query-localhost: no\n"
		"  unblock-lan-zones: yes\n  insecure-lan-zones: yes\n"
		"  rrset-roundrobin: no\n  minimal-responses: yes\n"
		"  access-control: 127.0.0.0/8 allow\n"
		"  so-rcvbuf: 4m\n  outgoing-range: 64\n",
		server_port, tmpdir, tmpdir);
	write_zones(f);
	/* REFUSED from our server: libunbound, which forwards to it, makes
	 * that a SERVFAIL at once */
	fprintf(f, "  local-zone: \"fail.example.\" refuse\n");
	v6_nibbles("2001:db8:54::", zone, sizeof(zone), 12);
	fprintf(f, "  local-zone: \"%s\" refuse\n", zone);
	fprintf(f, "  local-zone: \"113.0.203.in-addr.arpa.\" refuse\n");
	/* no answer at all: a socket of ours that is never read */
	fprintf(f,
		"stub-zone:\n  name: \"hole.example.\"\n"
		"  stub-addr: 127.0.0.1@%d\n",
		hole_port);
	v6_nibbles("2001:db8:55::", zone, sizeof(zone), 12);
	fprintf(f, "stub-zone:\n  name: \"%s\"\n  stub-addr: 127.0.0.1@%d\n", zone, hole_port);
	fclose(f);
}

/* One raw query, any reply within 100 ms: the server is up. */
static bool
server_answers(void)
{
	static const uint8_t q[] = {
		0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0,   0,   0,   0, 0, 4, 'r', 'd',
		'n',  's',  7,    'e',  'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 6, 0,   1,
	};
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)server_port) };
	struct pollfd pfd;
	uint8_t buf[512];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	bool ok = false;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 &&
	    sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)sizeof(q)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		ok = poll(&pfd, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) > 12;
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The server's complaints, before the directory goes. */
static void
system_log(const char *log)
{
	char line[256];
	FILE *f = fopen(log, "r");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		fprintf(stderr, "unbound: %s", line);
	if (f != NULL)
		fclose(f);
}

/* Runs unbound on a free port; false when it exits (the port was taken
 * meanwhile, say), true once it answers. */
static bool
try_server(const char *unbound, const char *conf, const char *log)
{
	server_port = free_port();
	write_config(conf);
	server_pid = fork();
	if (server_pid < 0)
		die("fork: %s", strerror(errno));
	if (server_pid == 0) {
		if (freopen(log, "w", stderr) == NULL || freopen("/dev/null", "w", stdout) == NULL)
			_exit(127);
		execl(unbound, unbound, "-d", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		if (server_answers())
			return true;
		if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
			server_pid = -1;
			return false;
		}
	}
	system_log(log);
	die("unbound does not answer on port %d", server_port);
	return false;
}

static void
start_server(const char *unbound)
{
	char conf[128], log[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-rdns-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		die("mkdtemp: %s", strerror(errno));
	hole_fd = udp_socket(&hole_port);
	snprintf(conf, sizeof(conf), "%s/unbound.conf", tmpdir);
	snprintf(log, sizeof(log), "%s/unbound.log", tmpdir);
	for (int tries = 0; tries < 3; tries++)
		if (try_server(unbound, conf, log))
			return;
	system_log(log);
	die("unbound exited three times");
}

static void
stop_server(void)
{
	char path[160];

	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = -1;
	}
	if (hole_fd >= 0)
		close(hole_fd);
	for (const char *const *f =
		     (const char *const[]){ "unbound.conf", "unbound.log", "unbound.pid", NULL };
	     *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, *f);
		unlink(path);
	}
	rmdir(tmpdir);
}

/* ---- driving lookups ----------------------------------------------- */

struct waiter {
	bool done;
	int calls;
	struct rdns_answer a;
};

static void
on_done(void *arg, const struct rdns_answer *a)
{
	struct waiter *w = arg;

	w->done = true;
	w->calls++;
	w->a = *a;
}

/* The dnsq under the rdns being tested (one at a time). */
static struct dnsq *dq;

/* The dispatcher's loop, until *flag or the guard time runs out. clock
 * is added to every time given to rdns and dnsq (to age the cache). */
static void
drive(struct rdns *r, const bool *flag, uint64_t clock, uint64_t guard_ms)
{
	uint64_t end = now_us() + guard_ms * 1000;

	(void)r;
	while (!*flag && now_us() < end) {
		struct pollfd pfd = { .fd = dnsq_fd(dq), .events = POLLIN };
		int t = dnsq_timeout_ms(dq, now_us() + clock);

		(void)poll(&pfd, 1, t < 0 || t > 100 ? 100 : t);
		dnsq_process(dq, now_us() + clock);
	}
}

static void
parse_addr(uint8_t family, const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(family == 6 ? AF_INET6 : AF_INET, s, out) != 1)
		die("bad address %s", s);
}

static struct waiter
lookup(struct rdns *r, uint8_t family, const char *addr, uint64_t clock)
{
	struct waiter w = { 0 };
	uint8_t a[16];

	parse_addr(family, addr, a);
	if (rdns_lookup(r, family, a, on_done, &w, now_us() + clock) != 0)
		die("rdns_lookup %s: %s", addr, strerror(errno));
	drive(r, &w.done, clock, 10000);
	return w;
}

/* An rdns on a dnsq of its own, whose lane holds every query the lookups
 * can have out (rdns.h); p->dnsq and p->lane are filled in. NULL when
 * rdns_create() refuses p. */
static struct rdns *
make_rdns_p(struct ub_ctx *ub, struct rdns_params *p)
{
	uint32_t names = p->max_names ? p->max_names : RDNS_MAX_NAMES;
	struct dnsq_params qp = { .ub = ub, .max_inflight = OTHER_SLOTS };
	struct rdns *r;
	int e;

	qp.lane_max[RDNS_LANE - 1] = p->max_inflight * names;
	dq = dnsq_create(&qp);
	if (dq == NULL)
		die("dnsq_create: %s", strerror(errno));
	p->dnsq = dq;
	p->lane = RDNS_LANE;
	r = rdns_create(p);
	if (r == NULL) {
		e = errno;
		dq = dnsq_destroy(dq);
		errno = e;
	}
	return r;
}

static struct rdns *
make_rdns(struct ub_ctx *ub, uint32_t timeout_ms, uint32_t cache, uint32_t max_inflight)
{
	struct rdns_params p = {
		.timeout_ms = timeout_ms,
		.max_names = 10,
		.cache_entries = cache,
		.cache_ttl_s = 60,
		.max_inflight = max_inflight,
	};
	struct rdns *r = make_rdns_p(ub, &p);

	if (r == NULL)
		die("rdns_create: %s", strerror(errno));
	return r;
}

/* rdns first: it withdraws its queries from the dnsq. */
static struct rdns *
free_rdns(struct rdns *r)
{
	r = rdns_destroy(r);
	dq = dnsq_destroy(dq);
	return r;
}

/* ---- the cases ----------------------------------------------------- */

struct rdns_case {
	const char *what;
	uint8_t family;
	const char *addr;
	enum rdns_result want;
	const char *name;
	uint32_t n_ptr;
};

static const struct rdns_case cases[] = {
	{ "v6 one PTR that confirms", 6, "2001:db8:53::1", RDNS_PASS, "ok6.rdns.example", 1 },
	{ "v6 no PTR (NXDOMAIN)", 6, "2001:db8:53::2", RDNS_NONE, "", 0 },
	{ "v6 PTR name without AAAA (an A only)", 6, "2001:db8:53::3", RDNS_MISMATCH,
	  "noaddr.rdns.example", 1 },
	{ "v6 PTR name is a CNAME to the address", 6, "2001:db8:53::4", RDNS_PASS,
	  "alias6.rdns.example", 1 },
	{ "v6 3 PTR names, the third confirms", 6, "2001:db8:53::5", RDNS_PASS, "c5.rdns.example",
	  3 },
	/* only max_names (10) names are checked: the 12th, which would
	 * confirm, is never looked at */
	{ "v6 12 PTR names, only the 12th would confirm", 6, "2001:db8:53::6", RDNS_MISMATCH,
	  "t6-1.rdns.example", 12 },
	{ "v6 10 PTR names, the 10th confirms", 6, "2001:db8:53::b", RDNS_PASS,
	  "t10-10.rdns.example", 10 },
	{ "v6 2 PTR names, the first confirms", 6, "2001:db8:53::c", RDNS_PASS,
	  "first2.rdns.example", 2 },
	{ "v6 PTR name with an escaped dot", 6, "2001:db8:53::10", RDNS_PASS,
	  "we\\.ird.rdns.example", 1 },
	{ "v6 forward lookup SERVFAIL", 6, "2001:db8:53::7", RDNS_TEMPERROR, "x.fail.example", 1 },
	{ "v6 forward SERVFAIL beside a mismatch", 6, "2001:db8:53::8", RDNS_TEMPERROR,
	  "other.rdns.example", 2 },
	{ "v6 reverse name exists, no PTR (NODATA)", 6, "2001:db8:53::9", RDNS_NONE, "", 0 },
	{ "v6 PTR name does not exist", 6, "2001:db8:53::a", RDNS_MISMATCH, "gone.rdns.example",
	  1 },
	{ "v6 PTR lookup SERVFAIL", 6, "2001:db8:54::1", RDNS_TEMPERROR, "", 0 },
	{ "v4 one PTR that confirms", 4, "198.51.100.1", RDNS_PASS, "ok4.rdns.example", 1 },
	{ "v4 no PTR (NXDOMAIN)", 4, "198.51.100.2", RDNS_NONE, "", 0 },
	{ "v4 PTR name without A (an AAAA only)", 4, "198.51.100.3", RDNS_MISMATCH,
	  "noaddr4.rdns.example", 1 },
	{ "v4 PTR name is a CNAME to the address", 4, "198.51.100.4", RDNS_PASS,
	  "alias4.rdns.example", 1 },
	{ "v4 3 PTR names, the third confirms", 4, "198.51.100.5", RDNS_PASS, "c5v4.rdns.example",
	  3 },
	{ "v4 12 PTR names, only the 12th would confirm", 4, "198.51.100.6", RDNS_MISMATCH,
	  "t4-1.rdns.example", 12 },
	{ "v4 forward SERVFAIL beside a mismatch", 4, "198.51.100.8", RDNS_TEMPERROR,
	  "other.rdns.example", 2 },
	{ "v4 PTR lookup SERVFAIL", 4, "203.0.113.1", RDNS_TEMPERROR, "", 0 },
};

static void
test_cases(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 5000, 0, 16);
	uint64_t n_pass = 0, n_temp = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct rdns_case *c = &cases[i];
		struct waiter w = lookup(r, c->family, c->addr, 0);

		CHECK(w.done && w.calls == 1, "%s: answered once", c->what);
		CHECK(w.a.result == c->want, "%s: %s, want %s", c->what,
		      rdns_result_name(w.a.result), rdns_result_name(c->want));
		CHECK(strcmp(w.a.name, c->name) == 0,
		      "%s: name '%s', want "
		      "'%s'",
		      c->what, w.a.name, c->name);
		CHECK(w.a.n_ptr == c->n_ptr, "%s: n_ptr %u, want %u", c->what, w.a.n_ptr, c->n_ptr);
		CHECK(!w.a.cached, "%s: not from the cache", c->what);
		n_pass += c->want == RDNS_PASS;
		n_temp += c->want == RDNS_TEMPERROR;
		printf("%-48s %-9s %-18s %u us\n", c->what, rdns_result_name(w.a.result), w.a.name,
		       w.a.latency_us);
	}
	CHECK(rdns_inflight(r) == 0, "inflight %u", rdns_inflight(r));
	CHECK(rdns_counter(r, RDNS_C_LOOKUPS) == sizeof(cases) / sizeof(cases[0]),
	      "lookups counted");
	CHECK(rdns_counter(r, RDNS_C_PASS) == n_pass, "pass counted: %llu",
	      (unsigned long long)rdns_counter(r, RDNS_C_PASS));
	CHECK(rdns_counter(r, RDNS_C_TEMPERROR) == n_temp, "temperror counted: %llu",
	      (unsigned long long)rdns_counter(r, RDNS_C_TEMPERROR));
	r = free_rdns(r);
}

static void
test_cache(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 5000, 64, 4);
	struct waiter w;

	w = lookup(r, 6, "2001:db8:53::1", 0);
	CHECK(w.a.result == RDNS_PASS && !w.a.cached, "first lookup by DNS");
	w = lookup(r, 6, "2001:db8:53::1", 0);
	CHECK(w.done && w.a.cached, "second lookup from the cache");
	CHECK(w.a.result == RDNS_PASS && strcmp(w.a.name, "ok6.rdns.example") == 0,
	      "cached answer keeps result and name: %s %s", rdns_result_name(w.a.result), w.a.name);
	w = lookup(r, 4, "198.51.100.6", 0);
	w = lookup(r, 4, "198.51.100.6", 0);
	CHECK(w.a.cached && w.a.result == RDNS_MISMATCH &&
		      strcmp(w.a.name, "t4-1.rdns.example") == 0,
	      "MISMATCH cached");
	w = lookup(r, 6, "2001:db8:53::2", 0);
	w = lookup(r, 6, "2001:db8:53::2", 0);
	CHECK(w.a.cached && w.a.result == RDNS_NONE,
	      "NONE cached (the zone has an SOA: negative TTL 300)");
	w = lookup(r, 6, "2001:db8:54::1", 0);
	w = lookup(r, 6, "2001:db8:54::1", 0);
	CHECK(w.a.result == RDNS_TEMPERROR && !w.a.cached,
	      "TEMPERROR (PTR SERVFAIL) is not cached");
	w = lookup(r, 6, "2001:db8:53::8", 0);
	w = lookup(r, 6, "2001:db8:53::8", 0);
	CHECK(w.a.result == RDNS_TEMPERROR && !w.a.cached,
	      "TEMPERROR (a forward SERVFAIL beside a mismatch, PTR TTL "
	      "3600) is not cached");
	w = lookup(r, 6, "2001:db8:53::d", 0);
	w = lookup(r, 6, "2001:db8:53::d", 0);
	CHECK(w.a.result == RDNS_PASS && !w.a.cached, "a PASS with DNS TTL 0 is not cached");
	/* cache_ttl_s is 60: 61 s later the entry is gone */
	w = lookup(r, 6, "2001:db8:53::1", 61ull * 1000000);
	CHECK(w.a.result == RDNS_PASS && !w.a.cached, "expired entry looked up again");
	CHECK(rdns_counter(r, RDNS_C_CACHE_HITS) == 3, "cache_hits %llu",
	      (unsigned long long)rdns_counter(r, RDNS_C_CACHE_HITS));
	r = free_rdns(r);

	/* same family bits, other family: no false hit */
	r = make_rdns(ub, 5000, 64, 4);
	w = lookup(r, 4, "198.51.100.1", 0);
	{
		uint8_t a[16] = { 198, 51, 100, 1 };
		struct waiter w2 = { 0 };

		CHECK(rdns_lookup(r, 6, a, on_done, &w2, now_us()) == 0, "v6 lookup");
		drive(r, &w2.done, 0, 10000);
		CHECK(!w2.a.cached, "a v6 address is not the cached v4 one");
	}
	r = free_rdns(r);
}

static void
test_timeout(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 300, 64, 4);
	struct waiter w;

	w = lookup(r, 6, "2001:db8:55::1", 0);
	CHECK(w.a.result == RDNS_TEMPERROR, "PTR timeout: %s", rdns_result_name(w.a.result));
	CHECK(w.a.latency_us >= 300000 && w.a.latency_us < 1000000, "deadline kept: %u us",
	      w.a.latency_us);
	w = lookup(r, 6, "2001:db8:53::e", 0);
	CHECK(w.a.result == RDNS_TEMPERROR && strcmp(w.a.name, "other.rdns.example") == 0,
	      "forward timeout beside a mismatch: "
	      "%s %s",
	      rdns_result_name(w.a.result), w.a.name);
	CHECK(rdns_counter(r, RDNS_C_TIMEOUTS) == 2, "timeouts %llu",
	      (unsigned long long)rdns_counter(r, RDNS_C_TIMEOUTS));
	w = lookup(r, 6, "2001:db8:55::1", 0);
	CHECK(!w.a.cached, "a timeout is not cached");
	/* the forward lookups go out together: the second name confirms
	 * while the first is still unanswered */
	w = lookup(r, 6, "2001:db8:53::f", 0);
	CHECK(w.a.result == RDNS_PASS && strcmp(w.a.name, "par.rdns.example") == 0 &&
		      w.a.latency_us < 300000,
	      "forward lookups in parallel: "
	      "%s %s %u us",
	      rdns_result_name(w.a.result), w.a.name, w.a.latency_us);
	CHECK(rdns_inflight(r) == 0, "inflight back to 0: %u", rdns_inflight(r));
	r = free_rdns(r);
}

/* max_names bounds the names checked. */
static void
test_max_names(struct ub_ctx *ub)
{
	struct rdns_params p = { .timeout_ms = 5000, .max_names = 2, .max_inflight = 2 };
	struct rdns *r = make_rdns_p(ub, &p);
	struct waiter w;

	if (r == NULL)
		die("rdns_create: %s", strerror(errno));
	w = lookup(r, 6, "2001:db8:53::5", 0);
	CHECK(w.a.result == RDNS_MISMATCH && w.a.n_ptr == 3,
	      "max_names 2: the third name is not checked: %s", rdns_result_name(w.a.result));
	r = free_rdns(r);
	p.max_names = RDNS_MAX_NAMES + 1;
	errno = 0;
	CHECK(make_rdns_p(ub, &p) == NULL && errno == EINVAL, "max_names above %d refused",
	      RDNS_MAX_NAMES);
}

static void
test_busy_and_destroy(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 5000, 64, 2);
	struct waiter w[3] = { 0 }, hit;
	uint8_t a[16];

	hit = lookup(r, 6, "2001:db8:53::1", 0); /* fills the cache */
	parse_addr(6, "2001:db8:55::2", a);
	CHECK(rdns_lookup(r, 6, a, on_done, &w[0], now_us()) == 0, "1 of 2");
	a[15] = 3;
	CHECK(rdns_lookup(r, 6, a, on_done, &w[1], now_us()) == 0, "2 of 2");
	a[15] = 4;
	errno = 0;
	CHECK(rdns_lookup(r, 6, a, on_done, &w[2], now_us()) == -1 && errno == EBUSY,
	      "the third is refused: EBUSY");
	CHECK(rdns_inflight(r) == 2, "2 in flight");
	CHECK(rdns_counter(r, RDNS_C_BUSY) == 1, "busy counted");
	memset(&hit, 0, sizeof(hit));
	parse_addr(6, "2001:db8:53::1", a);
	CHECK(rdns_lookup(r, 6, a, on_done, &hit, now_us()) == 0 && hit.done && hit.a.cached,
	      "the cache answers while the pool is full");
	errno = 0;
	CHECK(rdns_lookup(r, 5, a, on_done, &hit, now_us()) == -1 && errno == EINVAL,
	      "family 5 refused");
	dnsq_process(dq, now_us());
	r = free_rdns(r);
	CHECK(!w[0].done && !w[1].done && !w[2].done,
	      "no callback for lookups cancelled by destroy");
}

/* A query of lane 0 (SPF's, in the dispatcher): its answer. */
struct other {
	int calls, err;
	bool data;
};

static void
on_other(void *arg, int err, struct ub_result *res)
{
	struct other *o = arg;

	o->calls++;
	o->err = err;
	o->data = res != NULL && res->havedata;
	ub_resolve_free(res);
}

static uint64_t
dq_count(unsigned id)
{
	return dnsq_counter(dq, id);
}

/*
 * The lookups' queries are dnsq's: counted there, timed out by its heap,
 * withdrawn through it (an early PASS, destroy); a lookup and another
 * query on the same dnsq are both answered by the one dnsq_process(); and
 * each kind has its own slots: with lane 0 full a lookup still passes,
 * and with every lookup out lane 0 still takes queries.
 */
static void
test_shared_dnsq(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 300, 0, 2);
	struct other o[OTHER_SLOTS + 1], spf = { 0 };
	struct waiter w, w2 = { 0 };
	uint8_t a[16];
	int i;

	w = lookup(r, 6, "2001:db8:53::1", 0);
	CHECK(w.a.result == RDNS_PASS, "pass: %s", rdns_result_name(w.a.result));
	CHECK(dq_count(DNSQ_C_ISSUED) == 2 && dq_count(DNSQ_C_ANSWERED) == 2,
	      "the PTR and the AAAA went through dnsq: issued %llu answered %llu",
	      (unsigned long long)dq_count(DNSQ_C_ISSUED),
	      (unsigned long long)dq_count(DNSQ_C_ANSWERED));
	w = lookup(r, 6, "2001:db8:55::1", 0);
	CHECK(w.a.result == RDNS_TEMPERROR && rdns_counter(r, RDNS_C_TIMEOUTS) == 1 &&
		      dq_count(DNSQ_C_TIMEOUTS) == 1,
	      "the PTR's deadline is dnsq's: %s, dnsq timeouts %llu", rdns_result_name(w.a.result),
	      (unsigned long long)dq_count(DNSQ_C_TIMEOUTS));
	/* the second name confirms while the first is unanswered: the first
	 * is withdrawn */
	w = lookup(r, 6, "2001:db8:53::f", 0);
	CHECK(w.a.result == RDNS_PASS && dq_count(DNSQ_C_CANCELLED) == 1 && dnsq_inflight(dq) == 0,
	      "an early pass withdraws the other query: %s, dnsq cancelled %llu, %u out",
	      rdns_result_name(w.a.result), (unsigned long long)dq_count(DNSQ_C_CANCELLED),
	      dnsq_inflight(dq));

	/* lane 0 full of queries that never end: the lookup still goes */
	for (i = 0; i < OTHER_SLOTS; i++) {
		memset(&o[i], 0, sizeof(o[i]));
		CHECK(dnsq_issue(dq, "s.hole.example", ns_t_txt, 5000, on_other, &o[i], now_us()) !=
			      0,
		      "lane 0 query %d", i);
	}
	errno = 0;
	memset(&o[i], 0, sizeof(o[i]));
	CHECK(dnsq_issue(dq, "t.hole.example", ns_t_txt, 5000, on_other, &o[i], now_us()) == 0 &&
		      errno == EBUSY,
	      "lane 0 is full");
	w = lookup(r, 6, "2001:db8:53::4", 0);
	CHECK(w.a.result == RDNS_PASS && strcmp(w.a.name, "alias6.rdns.example") == 0,
	      "a lookup passes beside a full lane 0: %s", rdns_result_name(w.a.result));
	r = free_rdns(r);
	for (i = 0; i <= OTHER_SLOTS; i++)
		CHECK(o[i].calls == 0, "lane 0 query %d withdrawn by destroy, no callback", i);

	/* every lookup out (the silent zone), then a lookup and a lane-0
	 * query answered together */
	r = make_rdns(ub, 5000, 0, 3);
	parse_addr(6, "2001:db8:55::3", a);
	CHECK(rdns_lookup(r, 6, a, on_done, &w2, now_us()) == 0, "silent lookup 1");
	a[15] = 4;
	CHECK(rdns_lookup(r, 6, a, on_done, &w2, now_us()) == 0, "silent lookup 2");
	memset(&w, 0, sizeof(w));
	parse_addr(6, "2001:db8:53::c", a);
	CHECK(rdns_lookup(r, 6, a, on_done, &w, now_us()) == 0, "a lookup");
	CHECK(dnsq_issue(dq, "other.rdns.example", ns_t_a, 5000, on_other, &spf, now_us()) != 0,
	      "lane 0 takes a query with every lookup out");
	for (uint64_t end = now_us() + 5000000; (!w.done || spf.calls == 0) && now_us() < end;) {
		struct pollfd pfd = { .fd = dnsq_fd(dq), .events = POLLIN };

		(void)poll(&pfd, 1, 50);
		dnsq_process(dq, now_us());
	}
	CHECK(w.done && w.a.result == RDNS_PASS && spf.calls == 1 && spf.err == 0 && spf.data,
	      "both answered by dnsq_process: %s, other %d/%d", rdns_result_name(w.a.result),
	      spf.calls, spf.data);
	CHECK(rdns_inflight(r) == 2 && dnsq_inflight(dq) == 2, "the silent two still out: %u %u",
	      rdns_inflight(r), dnsq_inflight(dq));
	i = (int)dq_count(DNSQ_C_CANCELLED);
	r = rdns_destroy(r);
	CHECK(dq_count(DNSQ_C_CANCELLED) == (uint64_t)i + 2 && dnsq_inflight(dq) == 0 && !w2.done,
	      "destroy withdraws its queries from dnsq: cancelled %llu, %u out",
	      (unsigned long long)dq_count(DNSQ_C_CANCELLED), dnsq_inflight(dq));
	dq = dnsq_destroy(dq);
}

/* Another thread drains libunbound's pipe: our answer is handed over
 * through dnsq's mailbox and dnsq_fd() wakes us. */
struct thief {
	struct ub_ctx *ub;
	atomic_bool stop;
	unsigned rounds;
};

static void *
thief_main(void *arg)
{
	struct thief *t = arg;

	while (!atomic_load(&t->stop)) {
		struct pollfd pfd = { .fd = ub_fd(t->ub), .events = POLLIN };

		if (poll(&pfd, 1, 5) == 1)
			(void)ub_process(t->ub);
		t->rounds++;
	}
	return NULL;
}

static void
test_other_thread(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 5000, 0, 4);
	struct thief t = { .ub = ub };
	struct waiter w = { 0 };
	struct pollfd pfd;
	pthread_t th;
	uint8_t a[16];

	parse_addr(6, "2001:db8:53::5", a);
	if (pthread_create(&th, NULL, thief_main, &t) != 0)
		die("pthread_create");
	CHECK(rdns_lookup(r, 6, a, on_done, &w, now_us()) == 0, "started");
	usleep(300000); /* the thief takes every answer meanwhile */
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	CHECK(!w.done, "not answered before dnsq_process");
	pfd.fd = dnsq_fd(dq);
	pfd.events = POLLIN;
	CHECK(poll(&pfd, 1, 0) == 1, "dnsq_fd readable after another thread "
				     "took the answers");
	drive(r, &w.done, 0, 5000);
	CHECK(w.done && w.a.result == RDNS_PASS && strcmp(w.a.name, "c5.rdns.example") == 0,
	      "answer delivered: %s %s", rdns_result_name(w.a.result), w.a.name);
	r = free_rdns(r);
}

/* BULK_N lookups in flight at once, one thread, while another thread
 * takes part of the answers. */
struct bulk {
	struct waiter w[BULK_N];
};

static void
test_bulk(struct ub_ctx *ub)
{
	struct rdns *r = make_rdns(ub, 20000, 0, BULK_N);
	static struct bulk b;
	struct thief t = { .ub = ub };
	unsigned wrong = 0, missing = 0, twice = 0, max_inflight;
	uint64_t t0 = now_us(), t1;
	bool all = false;
	pthread_t th;
	uint8_t a[16];
	char s[64];

	if (pthread_create(&th, NULL, thief_main, &t) != 0)
		die("pthread_create");
	for (int i = 0; i < BULK_N; i++) {
		snprintf(s, sizeof(s), BULK_PREFIX "%x", i);
		parse_addr(6, s, a);
		if (rdns_lookup(r, 6, a, on_done, &b.w[i], now_us()) != 0)
			die("bulk lookup %d: %s", i, strerror(errno));
	}
	max_inflight = rdns_inflight(r);
	CHECK(max_inflight == BULK_N, "%u lookups in flight at once", max_inflight);
	CHECK(dnsq_counter(dq, DNSQ_C_BUSY) == 0 && dnsq_counter(dq, DNSQ_C_REFUSED) == 0,
	      "every query taken: busy %llu, refused %llu",
	      (unsigned long long)dnsq_counter(dq, DNSQ_C_BUSY),
	      (unsigned long long)dnsq_counter(dq, DNSQ_C_REFUSED));
	while (!all && now_us() - t0 < 25000000) {
		drive(r, &all, 0, 100);
		all = rdns_inflight(r) == 0;
	}
	t1 = now_us();
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	for (int i = 0; i < BULK_N; i++) {
		enum rdns_result want = i % 4 == 0 ? RDNS_PASS :
					i % 4 == 2 ? RDNS_MISMATCH :
						     RDNS_NONE;

		if (!b.w[i].done)
			missing++;
		else if (b.w[i].calls != 1)
			twice++;
		else if (b.w[i].a.result != want)
			wrong++;
	}
	CHECK(missing == 0, "%u lookups never answered", missing);
	CHECK(twice == 0, "%u answered more than once", twice);
	CHECK(wrong == 0, "%u wrong results", wrong);
	CHECK(rdns_inflight(r) == 0, "inflight back to 0: %u", rdns_inflight(r));
	CHECK(rdns_counter(r, RDNS_C_PASS) == BULK_N / 4, "pass %llu",
	      (unsigned long long)rdns_counter(r, RDNS_C_PASS));
	CHECK(rdns_counter(r, RDNS_C_TIMEOUTS) == 0, "no timeouts");
	printf("bulk: %d lookups in %.2f s, the other thread polled %u "
	       "times\n",
	       BULK_N, (double)(t1 - t0) / 1e6, t.rounds);
	r = free_rdns(r);
}

/*
 * Deadlines and destroy racing with answers that another thread hands
 * over: 10,000 lookups with a 100 ms deadline (many expire while their
 * answers arrive), then 10,000 destroyed in flight. Each lookup must be
 * answered exactly once, and none after destroy (ASan watches the rest).
 */
static void
test_bulk_cancel(struct ub_ctx *ub)
{
	static struct bulk b;
	struct thief t = { .ub = ub };
	unsigned answered = 0, twice = 0, odd = 0, temp = 0, after;
	struct rdns *r = make_rdns(ub, 100, 0, BULK_N);
	uint64_t t0;
	bool stop = false;
	pthread_t th;
	uint8_t a[16];
	char s[64];

	if (pthread_create(&th, NULL, thief_main, &t) != 0)
		die("pthread_create");
	for (int i = 0; i < BULK_N; i++) {
		/* not in the zone's data: NXDOMAIN, not cached by libunbound */
		snprintf(s, sizeof(s), BULK_PREFIX "%x", BULK_N + i);
		parse_addr(6, s, a);
		if (rdns_lookup(r, 6, a, on_done, &b.w[i], now_us()) != 0)
			die("lookup: %s", strerror(errno));
	}
	t0 = now_us();
	while (rdns_inflight(r) > 0 && now_us() - t0 < 10000000)
		drive(r, &stop, 0, 50);
	for (int i = 0; i < BULK_N; i++) {
		answered += b.w[i].done;
		twice += b.w[i].calls > 1;
		odd += b.w[i].done && b.w[i].a.result != RDNS_NONE &&
		       b.w[i].a.result != RDNS_TEMPERROR;
		temp += b.w[i].done && b.w[i].a.result == RDNS_TEMPERROR;
	}
	CHECK(answered == BULK_N && twice == 0 && odd == 0,
	      "deadline race: %u answered, %u twice, %u odd", answered, twice, odd);
	CHECK(rdns_counter(r, RDNS_C_TIMEOUTS) == temp, "every TEMPERROR here is a timeout: %u",
	      temp);
	CHECK(rdns_inflight(r) == 0, "inflight back to 0: %u", rdns_inflight(r));
	printf("deadline race: %u of %d timed out\n", temp, BULK_N);
	r = free_rdns(r);

	memset(&b, 0, sizeof(b));
	r = make_rdns(ub, 5000, 0, BULK_N);
	for (int i = 0; i < BULK_N; i++) {
		/* half of them never answered (the silent zone) */
		if (i % 2)
			snprintf(s, sizeof(s), BULK_PREFIX "%x", 2 * BULK_N + i);
		else
			snprintf(s, sizeof(s), "2001:db8:55::%x", i);
		parse_addr(6, s, a);
		if (rdns_lookup(r, 6, a, on_done, &b.w[i], now_us()) != 0)
			die("lookup: %s", strerror(errno));
	}
	dnsq_process(dq, now_us());
	r = free_rdns(r);
	after = 0;
	for (int i = 0; i < BULK_N; i++)
		after += b.w[i].calls;
	usleep(200000); /* the thief goes on delivering meanwhile */
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	answered = 0;
	for (int i = 0; i < BULK_N; i++)
		answered += b.w[i].calls;
	CHECK(answered == after,
	      "no callback after destroy (%u before, %u "
	      "after)",
	      after, answered);
	CHECK(after <= BULK_N / 2, "destroy came before the silent half: %u", after);
	printf("destroy race: %u of %d answered before destroy\n", after, BULK_N);
}

static void
test_resolver_params(void)
{
	const char *bad[] = { "not an address" };
	struct dns_resolver_params p = { .servers = bad, .n_servers = 1 };
	char err[160] = "";

	CHECK(dns_resolver_create(&p, err, sizeof(err)) == NULL &&
		      strstr(err, "not an address") != NULL,
	      "bad forwarder refused with a reason: '%s'", err);
	p.n_servers = 0;
	p.trust_anchor = "/nonexistent/root.key";
	err[0] = '\0';
	CHECK(dns_resolver_create(&p, err, sizeof(err)) == NULL && err[0] != '\0',
	      "missing trust anchor refused: '%s'", err);
	CHECK(dns_resolver_destroy(NULL) == NULL, "destroy(NULL)");
	CHECK(rdns_destroy(NULL) == NULL, "rdns_destroy(NULL)");
	errno = 0;
	CHECK(rdns_create(&(struct rdns_params){ .dnsq = NULL, .max_inflight = 1 }) == NULL &&
		      errno == EINVAL,
	      "rdns_create without a dnsq: EINVAL");
}

int
main(int argc, char **argv)
{
	struct dns_resolver_params p = { 0 };
	struct ub_ctx *ub;
	char fwd[64], err[160];
	const char *servers[1] = { fwd };

	if (argc != 2)
		die("usage: test_rdns /path/to/unbound");
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_resolver_params();
	start_server(argv[1]);
	snprintf(fwd, sizeof(fwd), "127.0.0.1@%d", server_port);
	p.servers = servers;
	p.n_servers = 1;
	ub = dns_resolver_create(&p, err, sizeof(err));
	if (ub == NULL)
		die("dns_resolver_create: %s", err);
	test_cases(ub);
	test_cache(ub);
	test_timeout(ub);
	test_max_names(ub);
	test_busy_and_destroy(ub);
	test_shared_dnsq(ub);
	test_other_thread(ub);
	test_bulk(ub);
	test_bulk_cancel(ub);
	ub = dns_resolver_destroy(ub);
	stop_server();
	return check_done();
}
