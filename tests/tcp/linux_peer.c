/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/tcp/linux_peer.c — the TCP engine against the real Linux TCP stack.
 *
 * Why: crafted segments only prove what their author believed about TCP. A
 * Linux client is what the product faces, so this test puts the engine at
 * the far end of a TUN device inside a private network namespace (nothing
 * is added to the machine's own namespace) and lets ordinary kernel sockets
 * talk to it: handshakes with Linux's options, SYN cookies with timestamps
 * carrying window scale and SACK, a 20 MB upload into a slow consumer (zero
 * windows, window updates), downloads, loss injected in both directions by
 * a seeded shim, and both orders of closing. The kernel checks every
 * checksum we send, so a malformed header shows up as a stalled test.
 *
 * The engine runs on its own thread with a tiny SMTP-like app; the client
 * side is plain blocking socket code. Needs root and /dev/net/tun: without
 * them it exits 77 (skipped).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dataplane/tcp.h"
#include "tests/check.h"

static int tun_fd = -1;
static struct tcp_engine *E;
static atomic_int g_stop, g_active;
static atomic_uint g_loss_pct; /* shim: percent of packets dropped each way */
static unsigned g_dropped;     /* engine thread only */
static unsigned g_rng = 12345;
static uint8_t SRV4[4] = { 198, 51, 100, 2 };
static uint8_t SRV6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };

static uint64_t
mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool
shim_drop(void)
{
	g_rng = g_rng * 1103515245u + 12345u;
	if (((g_rng >> 16) % 100) >= atomic_load(&g_loss_pct))
		return false;
	g_dropped++;
	return true;
}

/* ---------------------------------------------------------- checksums */

static uint32_t
sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t
fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static uint16_t
tcp_csum(int fam, const uint8_t *src, const uint8_t *dst, const uint8_t *seg, size_t n)
{
	uint32_t s = 0;
	int al = fam == 4 ? 4 : 16;

	s = sum16(src, (size_t)al, s);
	s = sum16(dst, (size_t)al, s);
	s += 6 + (uint32_t)n;
	s = sum16(seg, n, s);
	return fold(s);
}

/* ------------------------------------------------- engine-side glue */

static bool
out_cb(void *ctx, const struct tcp_out *o)
{
	static uint8_t pkt[4096];
	uint32_t tl = o->hdr_len + o->data_len[0] + o->data_len[1];
	uint32_t ipl = o->family == 4 ? 20 : 40;
	uint8_t *t = pkt + ipl;
	uint16_t cs;

	(void)ctx;
	memcpy(t, o->hdr, o->hdr_len);
	memcpy(t + o->hdr_len, o->data[0], o->data_len[0]);
	if (o->data_len[1])
		memcpy(t + o->hdr_len + o->data_len[0], o->data[1], o->data_len[1]);
	cs = tcp_csum(o->family, o->saddr, o->daddr, t, tl);
	t[16] = (uint8_t)(cs >> 8);
	t[17] = (uint8_t)cs;
	memset(pkt, 0, ipl);
	if (o->family == 4) {
		pkt[0] = 0x45;
		pkt[2] = (uint8_t)((tl + 20) >> 8);
		pkt[3] = (uint8_t)(tl + 20);
		pkt[6] = 0x40;
		pkt[8] = 64;
		pkt[9] = 6;
		memcpy(pkt + 12, o->saddr, 4);
		memcpy(pkt + 16, o->daddr, 4);
		cs = fold(sum16(pkt, 20, 0));
		pkt[10] = (uint8_t)(cs >> 8);
		pkt[11] = (uint8_t)cs;
	} else {
		pkt[0] = 0x60;
		pkt[4] = (uint8_t)(tl >> 8);
		pkt[5] = (uint8_t)tl;
		pkt[6] = 6;
		pkt[7] = 64;
		memcpy(pkt + 8, o->saddr, 16);
		memcpy(pkt + 24, o->daddr, 16);
	}
	if (shim_drop())
		return true; /* lost on the wire */
	return write(tun_fd, pkt, tl + ipl) == (ssize_t)(tl + ipl);
}

static void
rx_packet(const uint8_t *p, size_t n)
{
	struct tcp_pkt tp;
	size_t ipl, tl;

	memset(&tp, 0, sizeof(tp));
	if (n >= 20 && (p[0] >> 4) == 4 && p[9] == 6) {
		ipl = (size_t)(p[0] & 15) * 4;
		tl = (size_t)(p[2] << 8 | p[3]);
		if (tl > n || tl < ipl + 20)
			return;
		tp.family = 4;
		memcpy(tp.saddr, p + 12, 4);
		memcpy(tp.daddr, p + 16, 4);
		tl -= ipl;
	} else if (n >= 60 && (p[0] >> 4) == 6 && p[6] == 6) {
		ipl = 40;
		tl = (size_t)(p[4] << 8 | p[5]);
		if (tl + 40 > n || tl < 20)
			return;
		tp.family = 6;
		memcpy(tp.saddr, p + 8, 16);
		memcpy(tp.daddr, p + 24, 16);
	} else {
		return; /* ND, MLD, ...: not ours */
	}
	if (tcp_csum(tp.family, tp.saddr, tp.daddr, p + ipl, tl) != 0)
		return;
	if (shim_drop())
		return;
	tp.tcp = p + ipl;
	tp.len = (uint32_t)tl;
	tcp_input(E, &tp, mono_us());
}

/* The app: greeting, then lines. "UP n" takes n raw bytes and answers
 * their sum; "DOWN n" sends n bytes; "QUIT" says 221 and closes. The app
 * buffer is 64 KiB and drains at a fixed rate, so a fast sender meets zero
 * windows and window updates. */
struct papp {
	struct tcp_conn *c;
	char line[128];
	uint32_t ll;
	uint64_t up_left, up_sum, down_left, down_off;
	uint32_t pending;
	bool quit, live;
	struct papp *next;
};
#define PAPPS 64
static struct papp apps[PAPPS];
#define APP_BUF 65536u

static uint8_t
pattern(uint64_t i)
{
	return (uint8_t)(i * 7 + (i >> 9));
}

static void
app_pump(struct papp *a)
{
	static uint8_t blk[8192];

	while (a->down_left) {
		uint32_t n = a->down_left > sizeof(blk) ? sizeof(blk) : (uint32_t)a->down_left, k;
		for (uint32_t i = 0; i < n; i++)
			blk[i] = pattern(a->down_off + i);
		k = tcp_send(a->c, blk, n);
		a->down_off += k;
		a->down_left -= k;
		if (k < n)
			return;
	}
}

static void
app_say(struct papp *a, const char *s)
{
	tcp_send(a->c, s, (uint32_t)strlen(s));
}

static void
app_line(struct papp *a)
{
	char buf[160];
	unsigned long long n;

	if (sscanf(a->line, "UP %llu", &n) == 1) {
		a->up_left = n;
		a->up_sum = 0;
	} else if (sscanf(a->line, "DOWN %llu", &n) == 1) {
		a->down_left = n;
		a->down_off = 0;
		app_pump(a);
	} else if (!strncmp(a->line, "QUIT", 4)) {
		app_say(a, "221 bye\r\n");
		tcp_close(a->c);
		a->quit = true;
	} else {
		snprintf(buf, sizeof(buf), "250 %s\r\n", a->line);
		app_say(a, buf);
	}
}

static void *
p_open(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *info)
{
	(void)ctx;
	(void)info;
	for (int i = 0; i < PAPPS; i++)
		if (!apps[i].live) {
			memset(&apps[i], 0, sizeof(apps[i]));
			apps[i].live = true;
			apps[i].c = c;
			tcp_send(c, "220 linux-peer test\r\n", 21);
			return &apps[i];
		}
	return NULL;
}

static uint32_t
p_recv(void *p, const uint8_t *d, uint32_t n)
{
	struct papp *a = p;
	char buf[64];

	a->pending += n; /* held until drained by the clock */
	for (uint32_t i = 0; i < n && a->live; i++) {
		if (a->up_left) {
			a->up_sum += d[i];
			if (--a->up_left == 0) {
				snprintf(buf, sizeof(buf), "250 %llu\r\n",
					 (unsigned long long)a->up_sum);
				app_say(a, buf);
			}
			continue;
		}
		if (d[i] == '\n') {
			a->line[a->ll > 0 && a->line[a->ll - 1] == '\r' ? a->ll - 1 : a->ll] = 0;
			a->ll = 0;
			app_line(a);
		} else if (a->ll < sizeof(a->line) - 1) {
			a->line[a->ll++] = (char)d[i];
		}
	}
	return n;
}

static uint32_t
p_space(void *p)
{
	struct papp *a = p;
	return a->pending >= APP_BUF ? 0 : APP_BUF - a->pending;
}
static void
p_sent(void *p)
{
	app_pump(p);
}
static void
p_peer_fin(void *p)
{
	struct papp *a = p;
	if (!a->quit)
		tcp_close(a->c); /* the client left first */
}
static void
p_closed(void *p, int reason)
{
	struct papp *a = p;
	(void)reason;
	a->live = false;
	a->c = NULL;
}

static const struct tcp_ops pops = {
	.output = out_cb,
	.open = p_open,
	.recv = p_recv,
	.rcv_space = p_space,
	.sent = p_sent,
	.peer_fin = p_peer_fin,
	.closed = p_closed,
};

static void *
engine_thread(void *arg)
{
	static uint8_t buf[65536];
	uint64_t last_drain = mono_us();

	(void)arg;
	while (!atomic_load(&g_stop)) {
		struct pollfd pf = { .fd = tun_fd, .events = POLLIN };
		uint64_t now;
		if (poll(&pf, 1, 1) > 0) {
			for (int k = 0; k < 64; k++) {
				ssize_t n = read(tun_fd, buf, sizeof(buf));
				if (n <= 0)
					break;
				rx_packet(buf, (size_t)n);
			}
		}
		now = mono_us();
		if (now - last_drain >= 1000) { /* the consumer: 64 KiB per ms */
			for (int i = 0; i < PAPPS; i++) {
				struct papp *a = &apps[i];
				if (!a->live || !a->pending)
					continue;
				a->pending = a->pending > APP_BUF ? a->pending - APP_BUF : 0;
				tcp_rcv_window_update(a->c);
			}
			last_drain = now;
		}
		tcp_engine_tick(E, now);
		atomic_store(&g_active, (int)tcp_engine_active(E));
	}
	return NULL;
}

/* ---------------------------------------------------------- namespace */

static int
setup_net(void)
{
	struct ifreq ifr;

	if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
		return -1;
	tun_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
	if (tun_fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strcpy(ifr.ifr_name, "tcpt0");
	if (ioctl(tun_fd, TUNSETIFF, &ifr) < 0)
		return -1;
	if (system("ip link set lo up && ip link set tcpt0 up && "
		   "ip addr add 198.51.100.1/24 dev tcpt0 && "
		   "ip -6 addr add 2001:db8::1/64 dev tcpt0 nodad") != 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------- client */

static int
cli_connect(int fam)
{
	int s = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 8 };
	int r;

	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fam == 4) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(25) };
		memcpy(&a.sin_addr, SRV4, 4);
		r = connect(s, (struct sockaddr *)&a, sizeof(a));
	} else {
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(25) };
		memcpy(&a.sin6_addr, SRV6, 16);
		r = connect(s, (struct sockaddr *)&a, sizeof(a));
	}
	if (r != 0) {
		close(s);
		return -1;
	}
	return s;
}

/* Read one CRLF line (byte by byte is fine at these sizes). */
static int
cli_line(int s, char *buf, size_t n)
{
	size_t i = 0;
	while (i + 1 < n) {
		char ch;
		if (recv(s, &ch, 1, 0) != 1)
			return -1;
		if (ch == '\n')
			break;
		if (ch != '\r')
			buf[i++] = ch;
	}
	buf[i] = 0;
	return (int)i;
}

static bool
cli_says(int s, const char *cmd, const char *want)
{
	char buf[256];
	if (cmd && send(s, cmd, strlen(cmd), 0) != (ssize_t)strlen(cmd))
		return false;
	if (cli_line(s, buf, sizeof(buf)) < 0)
		return false;
	if (strncmp(buf, want, strlen(want))) {
		fprintf(stderr, "  got '%s', want '%s'\n", buf, want);
		return false;
	}
	return true;
}

static bool
wait_idle_engine(int ms)
{
	for (int i = 0; i < ms; i++) {
		if (atomic_load(&g_active) == 0)
			return true;
		usleep(1000);
	}
	return false;
}

static void
dialogue(int fam, bool server_closes)
{
	int s = cli_connect(fam);
	char b[16];

	CHECK(s >= 0);
	if (s < 0)
		return;
	CHECK(cli_says(s, NULL, "220 linux-peer"));
	CHECK(cli_says(s, "EHLO client\r\n", "250 EHLO client"));
	if (server_closes) {
		CHECK(cli_says(s, "QUIT\r\n", "221 bye"));
		CHECK(recv(s, b, sizeof(b), 0) == 0); /* the server's FIN */
	} else {
		shutdown(s, SHUT_WR); /* client FIN first */
		CHECK(recv(s, b, sizeof(b), 0) == 0);
	}
	close(s);
	CHECK(wait_idle_engine(3000));
}

static void
upload(int fam, uint64_t n, unsigned loss)
{
	static uint8_t blk[65536];
	int s = cli_connect(fam);
	uint64_t sum = 0, sent = 0;
	char cmd[64], want[64];

	CHECK(s >= 0);
	if (s < 0)
		return;
	CHECK(cli_says(s, NULL, "220"));
	atomic_store(&g_loss_pct, loss); /* once established: see the header of tcp.c on cookies */
	snprintf(cmd, sizeof(cmd), "UP %llu\r\n", (unsigned long long)n);
	CHECK(send(s, cmd, strlen(cmd), 0) > 0);
	while (check_case_failures == 0 && sent < n) {
		size_t k = n - sent > sizeof(blk) ? sizeof(blk) : (size_t)(n - sent);
		ssize_t w;
		for (size_t i = 0; i < k; i++) {
			blk[i] = pattern(sent + i);
			sum += blk[i];
		}
		w = send(s, blk, k, 0);
		CHECK(w == (ssize_t)k);
		sent += k;
	}
	snprintf(want, sizeof(want), "250 %llu", (unsigned long long)sum);
	CHECK(cli_says(s, NULL, want));
	CHECK(cli_says(s, "QUIT\r\n", "221"));
	close(s);
	CHECK(wait_idle_engine(5000));
	atomic_store(&g_loss_pct, 0);
}

static void
download(int fam, uint64_t n, unsigned loss)
{
	static uint8_t blk[65536];
	int s = cli_connect(fam);
	uint64_t got = 0;
	char cmd[64];

	CHECK(s >= 0);
	if (s < 0)
		return;
	CHECK(cli_says(s, NULL, "220"));
	atomic_store(&g_loss_pct, loss);
	snprintf(cmd, sizeof(cmd), "DOWN %llu\r\n", (unsigned long long)n);
	CHECK(send(s, cmd, strlen(cmd), 0) > 0);
	while (check_case_failures == 0 && got < n) {
		ssize_t r = recv(s, blk, n - got > sizeof(blk) ? sizeof(blk) : (size_t)(n - got),
				 0);
		CHECK(r > 0);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			if (blk[i] != pattern(got + (uint64_t)i)) {
				CHECK(!"downloaded byte differs");
				break;
			}
		got += (uint64_t)r;
	}
	CHECK(cli_says(s, "QUIT\r\n", "221"));
	close(s);
	CHECK(wait_idle_engine(5000));
	atomic_store(&g_loss_pct, 0);
}

static void
many_at_once(int fam, int n)
{
	int s[32];

	for (int i = 0; i < n; i++) {
		s[i] = cli_connect(fam);
		CHECK(s[i] >= 0);
	}
	for (int i = 0; i < n; i++)
		if (s[i] >= 0) {
			CHECK(cli_says(s[i], NULL, "220"));
			CHECK(cli_says(s[i], "QUIT\r\n", "221"));
			close(s[i]);
		}
	CHECK(wait_idle_engine(3000));
}

static uint64_t g_t0;

/* One scenario: its CHECKs count as one case, reported with its time. */
static char g_name[96];

static void
run_begin(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g_name, sizeof(g_name), fmt, ap);
	va_end(ap);
	check_case_begin();
}

static void
run_end(void)
{
	printf("%s %s (%.2f s)\n", check_case_end() ? "ok  " : "FAIL", g_name,
	       (mono_us() - g_t0) / 1e6);
	fflush(stdout);
	g_t0 = mono_us();
}

static void
engine_start(uint32_t halfopen_max)
{
	static const uint16_t ports[] = { 25 };
	struct tcp_params p = {
		.max_flows = 256,
		.ports = ports,
		.n_ports = 1,
		.mss4 = 1460,
		.mss6 = 1440,
		.sndbuf_bytes = 262144,
		.sndbuf_pool_bytes = 8 << 20,
		.ooo_max_bytes = 65536,
		.ooo_pool_bytes = 4 << 20,
		.handshake_timeout_ms = 5000,
		.idle_timeout_ms = 30000,
		.lifetime_ms = 60000,
		.rto_min_ms = 50,
		.rto_max_ms = 2000,
		.max_retries = 8,
		.halfopen_max = halfopen_max,
		.rst_rate_per_s = 1000,
		.secret_seed = 99,
	};
	E = tcp_engine_create(&p, &pops, NULL, mono_us());
	if (!E) {
		perror("tcp_engine_create");
		exit(1);
	}
}

int
main(void)
{
	pthread_t th;

	if (setup_net() != 0) {
		printf("skipped: needs root, a network namespace and /dev/net/tun\n");
		(void)check_done();
		return 77;
	}
	g_t0 = mono_us();
	for (int mode = 0; mode < 2; mode++) {
		const char *m = mode ? "cookies" : "halfopen";

		engine_start(mode ? 0 : 64);
		atomic_store(&g_stop, 0);
		atomic_store(&g_loss_pct, 0);
		pthread_create(&th, NULL, engine_thread, NULL);
		for (int fam = 4; fam <= 6; fam += 2) {
			run_begin("%s v%d dialogue, server closes", m, fam);
			dialogue(fam, true);
			run_end();
			run_begin("%s v%d dialogue, client closes", m, fam);
			dialogue(fam, false);
			run_end();
			run_begin("%s v%d 20 sessions at once", m, fam);
			many_at_once(fam, 20);
			run_end();
		}
		run_begin("%s v6 upload 20 MB into a slow consumer", m);
		upload(6, 20u << 20, 0);
		run_end();
		run_begin("%s v4 download 4 MB", m);
		download(4, 4u << 20, 0);
		run_end();
		run_begin("%s v4 upload 2 MB, 3%% loss each way", m);
		upload(4, 2u << 20, 3);
		run_end();
		run_begin("%s v6 download 1 MB, 3%% loss each way", m);
		download(6, 1u << 20, 3);
		run_end();
		atomic_store(&g_stop, 1);
		pthread_join(th, NULL);
		if (mode == 1) {
			const struct tcp_counters *c = tcp_engine_counters(E);
			run_begin("cookie mode really used cookies");
			CHECK(c->cookies_validated > 0 && c->halfopen_created == 0);
			run_end();
		}
		printf("     (%u packets dropped by the shim, %llu retransmitted by the engine)\n",
		       g_dropped, (unsigned long long)tcp_engine_counters(E)->retransmits);
		run_begin("lossy runs lost packets and retransmitted");
		CHECK(g_dropped > 20 && tcp_engine_counters(E)->retransmits > 0);
		run_end();
		g_dropped = 0;
		tcp_engine_destroy(E);
	}
	return check_done();
}
