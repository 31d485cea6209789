/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/bench/bench_inproc.c — smtpedge's in-process benchmark: the real
 * worker loop and the real control plane, no kernel on the packet path.
 *
 * A net_ring ethdev (rte_eth_from_rings) stands where the NIC would be. The
 * worker polls it on lcore 1 exactly as it polls a NIC; the main lcore runs
 * the control plane's dispatcher (ctlplane_run) as smtpedge's main() does; a
 * generator thread plays thousands of concurrent scripted IPv6 SMTP clients
 * with a tiny client TCP of its own (SYN, ACK, commands, FIN) and answers
 * whatever the worker sends. So the figures cover frame validation, TCP,
 * SMTP, the rings and the rDNS verdicts - everything but the NIC driver.
 *
 * Why per-core figures come from busy_cycles: the machine the benchmark
 * runs on also runs the generator and the dispatcher, so wall-clock
 * sessions per second say how fast the generator is as much as the worker.
 * The worker counts the TSC cycles of every poll that found work
 * (DP_BUSY_CYCLES); sessions * tsc_hz / busy_cycles is what one fully busy
 * worker core would sustain. Both are printed.
 *
 * Runs: "reject" (no-PTR peers: EHLO, MAIL -> 550 5.7.25, QUIT), "accept"
 * (forward-confirmed peers, SPF pass: EHLO, MAIL, RCPT, DATA, 2 KB, QUIT:
 * the message goes to the spool) and "idle" (N sessions opened to the
 * greeting and held, to show they are held; the memory per session is
 * measured around worker_create, planes_create and ctlplane_create: what a
 * flow slot costs all told, which is all an idle session holds; also
 * sess_layer_slot_bytes() and the RSS per session held).
 * It asserts nothing but that the sessions got the replies their script
 * expects; any that did not are counted and printed.
 *
 * The accept run's message can be a file (--body, e.g. one signed with
 * DKIM) and its senders can each have a domain of their own under a suffix
 * (--mail-domain), so that every SPF check asks the DNS; scripts/bench.sh
 * runs it so at 1,000 sessions behind a DNS proxy that delays answers.
 * Sessions that wait longer than --stall seconds (3 by default) for a
 * reply are reset and counted as stalled: at 1,000 sessions a reply may
 * wait seconds behind the others without anything being wrong.
 *
 * The reject run is repeated (--repeat, 5 by default) and reported as the
 * median and the best of its runs: on a shared machine one run's figure
 * says as much about the neighbours as about the code. The "reject" object
 * is the run with the median sessions per core.
 *
 * Output: a readable table on stderr and one line "BENCH_JSON {...}" on
 * stdout for scripts/bench.sh.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_random.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "common/msg.h"
#include "common/txrec.h"

#include "control/config.h"
#include "control/ctlplane.h"
#include "control/policy.h"
#include "daemon/planes.h"
#include "dataplane/port.h"
#include "dataplane/session.h"
#include "dataplane/stats.h"
#include "dataplane/tcp_wire.h"
#include "dataplane/worker.h"

#define GEN_RING     16384 /* each direction of the fake NIC */
#define GEN_MBUFS    (GEN_RING * 2 - 1)
#define GEN_BURST    64
#define GEN_TXQ      4096
#define GEN_MAX_ADDR 16
#define GEN_PORTS    64512u /* source ports 1024..65535 */
#define GEN_LINE     600
#define GEN_STALL_S  3 /* no progress this long: abandoned (RST); --stall */
#define GEN_MSS      1400

/* ---- the scripts ---------------------------------------------------- */

/* SEND_MAIL: the accept run's MAIL FROM, bench@example.org, or with
 * --mail-domain SUFFIX a sender domain of the session's own under SUFFIX,
 * so that no DNS cache holds its SPF record. */
enum gen_send { SEND_CMD, SEND_BODY, SEND_CLOSE, SEND_HOLD, SEND_MAIL };

/* One row per server reply: the code the script expects, and what the
 * client does next. An unexpected code sends QUIT and jumps to the
 * script's last row (221, then the close). */
struct gen_step {
	int expect;
	enum gen_send what;
	const char *cmd;
};

static const struct gen_step script_reject[] = {
	{ 220, SEND_CMD, "EHLO bench.example\r\n" },
	{ 250, SEND_CMD, "MAIL FROM:<bench@example.org>\r\n" },
	{ 550, SEND_CMD, "QUIT\r\n" },
	{ 221, SEND_CLOSE, NULL },
};

static const struct gen_step script_accept[] = {
	{ 220, SEND_CMD, "EHLO bench.example\r\n" },
	{ 250, SEND_MAIL, NULL },
	{ 250, SEND_CMD, "RCPT TO:<postmaster@example.net>\r\n" },
	{ 250, SEND_CMD, "DATA\r\n" },
	{ 354, SEND_BODY, NULL },
	{ 250, SEND_CMD, "QUIT\r\n" },
	{ 221, SEND_CLOSE, NULL },
};

static const struct gen_step script_idle[] = {
	{ 220, SEND_HOLD, NULL },
};

struct gen_script {
	const char *name;
	const struct gen_step *steps;
	unsigned n;
	uint16_t addr_first, addr_step; /* bulk peers 2001:db8:1::1:N */
};

/* Odd bulk peers have no PTR, even ones a forward-confirmed one (lab.sh). */
static const struct gen_script scripts[] = {
	{ "reject", script_reject, RTE_DIM(script_reject), 1, 2 },
	{ "accept", script_accept, RTE_DIM(script_accept), 2, 2 },
	{ "idle", script_idle, RTE_DIM(script_idle), 2, 2 },
};

/* ---- one client session ------------------------------------------------ */

enum gen_state { GS_FREE, GS_SYN_SENT, GS_OPEN, GS_FIN_SENT };

struct gen_sess {
	uint32_t isn, snd_nxt, rcv_nxt;
	uint16_t port;
	uint8_t addr, state, step;
	bool failed, peer_fin, held;
	uint16_t llen;
	uint64_t t_last;
	char line[GEN_LINE];
};

struct gen_counts {
	uint64_t ok, failed, stalled, reset, opened;
	uint64_t codes[600]; /* unexpected reply codes */
};

struct gen {
	struct rte_ring *to_worker, *from_worker;
	struct rte_mempool *pool;
	uint8_t edge_mac[6], peer_mac[6], edge6[16];
	uint8_t addrs[GEN_MAX_ADDR][16];
	unsigned n_addr;
	const struct gen_script *sc;
	struct gen_sess *sess;
	uint32_t *free_stack, n_free, cap;
	uint32_t *map; /* [addr][port] -> session index + 1 */
	uint32_t active, want;
	uint64_t next_tuple;
	bool opening;
	uint64_t tsc_hz;
	struct gen_counts cnt;
	char *body;
	uint32_t body_len;
	const char *mail_domain; /* NULL: example.org for every session */
	uint64_t mail_seq;
	uint32_t idle_turns;
	uint32_t stall_s;
	uint16_t ntx;
	struct rte_mbuf *txq[GEN_TXQ];
};

static volatile sig_atomic_t g_stop;

static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)(v >> 16));
	wr16(p + 2, (uint16_t)v);
}

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}

static void
gen_flush(struct gen *g)
{
	unsigned n;

	if (g->ntx == 0)
		return;
	n = rte_ring_enqueue_burst(g->to_worker, (void **)g->txq, g->ntx, NULL);
	if (n < g->ntx)
		memmove(g->txq, g->txq + n, (g->ntx - n) * sizeof(g->txq[0]));
	g->ntx = (uint16_t)(g->ntx - n);
}

/* One client segment: Ethernet, IPv6, TCP (MSS option on the SYN), data.
 * The checksum is real: the worker verifies it in software, as it would
 * for a NIC without offloads. */
static void
gen_emit(struct gen *g, const struct gen_sess *s, uint32_t seq, uint8_t flags, const void *data,
	 uint32_t len)
{
	uint32_t opt = (flags & TH_SYN) ? 4 : 0, tl = 20 + opt + len;
	struct rte_mbuf *m;
	uint8_t *p, *tcp;
	uint16_t ck;

	while (g->ntx == GEN_TXQ)
		gen_flush(g);
	while (!(m = rte_pktmbuf_alloc(g->pool)))
		gen_flush(g);
	p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(14 + 40 + tl));
	if (!p) { /* cannot happen: segments are under the data room */
		rte_pktmbuf_free(m);
		return;
	}
	memcpy(p, g->edge_mac, 6);
	memcpy(p + 6, g->peer_mac, 6);
	wr16(p + 12, 0x86dd);
	wr32(p + 14, 6u << 28);
	wr16(p + 18, (uint16_t)tl);
	p[20] = IPPROTO_TCP;
	p[21] = 64;
	memcpy(p + 22, g->addrs[s->addr], 16);
	memcpy(p + 38, g->edge6, 16);
	tcp = p + 54;
	memset(tcp, 0, 20 + opt);
	wr16(tcp, s->port);
	wr16(tcp + 2, 25);
	wr32(tcp + 4, seq);
	wr32(tcp + 8, (flags & TH_ACK) ? s->rcv_nxt : 0);
	tcp[12] = (uint8_t)(((20 + opt) / 4) << 4);
	tcp[13] = flags;
	wr16(tcp + 14, 65535);
	if (opt) {
		tcp[20] = 2;
		tcp[21] = 4;
		wr16(tcp + 22, GEN_MSS);
	}
	if (len)
		memcpy(tcp + 20 + opt, data, len);
	ck = rte_ipv6_udptcp_cksum((const struct rte_ipv6_hdr *)(p + 14), tcp);
	memcpy(tcp + 16, &ck, 2);
	g->txq[g->ntx++] = m;
}

static void
gen_send(struct gen *g, struct gen_sess *s, const char *data, uint32_t len)
{
	while (len) {
		uint32_t n = len > GEN_MSS ? GEN_MSS : len;

		gen_emit(g, s, s->snd_nxt, TH_ACK | TH_PSH, data, n);
		s->snd_nxt += n;
		data += n;
		len -= n;
	}
}

static void
gen_free(struct gen *g, struct gen_sess *s)
{
	uint32_t idx = (uint32_t)(s - g->sess);

	g->map[(uint32_t)s->addr * 65536u + s->port] = 0;
	s->state = GS_FREE;
	g->free_stack[g->n_free++] = idx;
	g->active--;
}

static void
gen_finish(struct gen *g, struct gen_sess *s)
{
	if (s->failed)
		g->cnt.failed++;
	else
		g->cnt.ok++;
	gen_free(g, s);
}

static bool
gen_open(struct gen *g, uint64_t now)
{
	uint32_t idx, a, port, tries;
	struct gen_sess *s;

	if (g->n_free == 0)
		return false;
	for (tries = 0; tries < 1024; tries++) {
		uint64_t t = g->next_tuple++;

		a = (uint32_t)(t % g->n_addr);
		port = 1024 + (uint32_t)((t / g->n_addr) % GEN_PORTS);
		if (!g->map[a * 65536u + port])
			break;
	}
	if (tries == 1024)
		return false;
	idx = g->free_stack[--g->n_free];
	s = &g->sess[idx];
	memset(s, 0, offsetof(struct gen_sess, line));
	s->addr = (uint8_t)a;
	s->port = (uint16_t)port;
	s->isn = (uint32_t)rte_rand();
	s->snd_nxt = s->isn + 1;
	s->state = GS_SYN_SENT;
	s->t_last = now;
	g->map[a * 65536u + port] = idx + 1;
	g->active++;
	g->cnt.opened++;
	gen_emit(g, s, s->isn, TH_SYN, NULL, 0);
	return true;
}

/* A whole reply arrived: check it against the script, do the next step. */
static void
gen_reply(struct gen *g, struct gen_sess *s, int code)
{
	const struct gen_step *st = &g->sc->steps[s->step];

	if (code != st->expect) {
		s->failed = true;
		g->cnt.codes[code >= 0 && code < 600 ? code : 0]++;
		if (s->step + 1u < g->sc->n) {
			s->step = (uint8_t)(g->sc->n - 1);
			gen_send(g, s, "QUIT\r\n", 6);
		}
		return;
	}
	switch (st->what) {
	case SEND_CMD: gen_send(g, s, st->cmd, (uint32_t)strlen(st->cmd)); break;
	case SEND_BODY: gen_send(g, s, g->body, g->body_len); break;
	case SEND_MAIL: {
		char cmd[GEN_LINE];
		int n;

		if (g->mail_domain)
			n = snprintf(cmd, sizeof(cmd), "MAIL FROM:<bench@s%" PRIu64 "-%d.%s>\r\n",
				     g->mail_seq++, (int)getpid(), g->mail_domain);
		else
			n = snprintf(cmd, sizeof(cmd), "MAIL FROM:<bench@example.org>\r\n");
		gen_send(g, s, cmd, (uint32_t)n);
		break;
	}
	case SEND_HOLD: s->held = true; return;
	case SEND_CLOSE: return; /* the server closes after 221; we answer its FIN */
	}
	s->step++;
}

/* Reply bytes: whole lines; "DDD " ends a reply, "DDD-" continues it. */
static void
gen_data(struct gen *g, struct gen_sess *s, const uint8_t *p, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (s->llen < GEN_LINE)
			s->line[s->llen++] = (char)p[i];
		if (p[i] != '\n')
			continue;
		if (s->llen >= 4 && s->line[3] != '-')
			gen_reply(g, s, atoi(s->line));
		s->llen = 0;
		if (s->state == GS_FREE)
			return;
	}
}

static void
gen_segment(struct gen *g, struct gen_sess *s, const uint8_t *tcp, const uint8_t *data,
	    uint32_t len, uint64_t now)
{
	uint8_t fl = tcp[13];
	uint32_t seq = rd32(tcp + 4), ack = rd32(tcp + 8), sent0 = s->snd_nxt;
	bool need_ack = false;

	s->t_last = now;
	if (fl & TH_RST) {
		g->cnt.reset++;
		s->failed = true;
		gen_finish(g, s);
		return;
	}
	if (s->state == GS_SYN_SENT) {
		if ((fl & (TH_SYN | TH_ACK)) != (TH_SYN | TH_ACK) || ack != s->isn + 1)
			return;
		s->rcv_nxt = seq + 1;
		s->state = GS_OPEN;
		gen_emit(g, s, s->snd_nxt, TH_ACK, NULL, 0);
		return;
	}
	if (len) {
		need_ack = true;
		if (seq == s->rcv_nxt) {
			s->rcv_nxt += len;
			gen_data(g, s, data, len);
		}
	}
	if ((fl & TH_FIN) && seq + len == s->rcv_nxt && !s->peer_fin) {
		s->rcv_nxt++;
		s->peer_fin = true;
		need_ack = true;
	}
	if (s->peer_fin && s->state == GS_OPEN) {
		gen_emit(g, s, s->snd_nxt, TH_FIN | TH_ACK, NULL, 0);
		s->snd_nxt++;
		s->state = GS_FIN_SENT;
		return;
	}
	if (s->state == GS_FIN_SENT && (fl & TH_ACK) && ack == s->snd_nxt && s->peer_fin) {
		gen_finish(g, s);
		return;
	}
	if (need_ack && s->snd_nxt == sent0)
		gen_emit(g, s, s->snd_nxt, TH_ACK, NULL, 0);
}

/* A frame from the worker: find the session by peer address and port. */
static void
gen_input(struct gen *g, struct rte_mbuf *m, uint64_t now)
{
	const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *), *tcp;
	uint32_t len = rte_pktmbuf_data_len(m), plen, doff, a, idx;

	if (len < 74 || rd16(p + 12) != 0x86dd || p[20] != IPPROTO_TCP)
		return;
	plen = rd16(p + 18);
	tcp = p + 54;
	doff = (uint32_t)(tcp[12] >> 4) * 4;
	if (plen + 54 > len || doff < 20 || doff > plen)
		return;
	for (a = 0; a < g->n_addr; a++)
		if (memcmp(p + 38, g->addrs[a], 16) == 0)
			break;
	if (a == g->n_addr)
		return;
	idx = g->map[a * 65536u + rd16(tcp + 2)];
	if (!idx)
		return;
	gen_segment(g, &g->sess[idx - 1], tcp, tcp + doff, plen - doff, now);
}

/* Sessions that made no progress for g->stall_s are reset and counted. */
static void
gen_reap(struct gen *g, uint64_t now)
{
	uint64_t limit = g->tsc_hz * g->stall_s;
	uint32_t i;

	for (i = 0; i < g->cap; i++) {
		struct gen_sess *s = &g->sess[i];

		if (s->state == GS_FREE || s->held || now - s->t_last < limit)
			continue;
		gen_emit(g, s, s->snd_nxt, TH_RST, NULL, 0);
		g->cnt.stalled++;
		s->failed = true;
		gen_finish(g, s);
	}
}

/* One turn of the generator: what the worker sent, then new sessions. */
static void
gen_turn(struct gen *g)
{
	struct rte_mbuf *rx[GEN_BURST];
	uint64_t now = rte_rdtsc();
	unsigned n, i, opened = 0;

	n = rte_ring_dequeue_burst(g->from_worker, (void **)rx, GEN_BURST, NULL);
	for (i = 0; i < n; i++) {
		gen_input(g, rx[i], now);
		rte_pktmbuf_free(rx[i]);
	}
	while (g->opening && g->active < g->want && opened < 32 && gen_open(g, now))
		opened++;
	gen_flush(g);
	/* Nothing to do: give the CPU back. The machine may have as few cores
	 * as threads here, and a worker preempted inside a busy poll counts the
	 * time it was away as busy cycles. */
	if (n == 0 && opened == 0 && g->ntx == 0)
		g->idle_turns++;
	else
		g->idle_turns = 0;
	if (g->idle_turns > 64)
		nanosleep(&(struct timespec){ 0, 20000 }, NULL);
}

/* ---- runs and measurement ------------------------------------------- */

struct bench_env {
	struct worker *w;
	unsigned wlcore;
	volatile pid_t worker_tid;
	pid_t gen_tid;
	uint64_t tsc_hz;
	struct gen *g;
};

struct snap {
	uint64_t tsc, busy, rx, tx, ok, failed, opened;
	uint64_t ctl_ticks, spool_written, rdns_req, rdns_cached;
};

struct run_result {
	const char *name;
	unsigned conc;
	double wall_s, busy_s, ctl_cpu_s;
	uint64_t ok, failed, stalled, reset, packets;
	uint64_t spool_written, rdns_req, rdns_cached;
	double per_s_wall, per_s_core, cycles_per_session, cycles_per_packet;
	double packets_per_session;
	char unexpected[160];
};

/* CPU ticks of every thread of ours but the worker's and the generator's:
 * the dispatcher, the work threads and EAL's own. */
static uint64_t
ctl_ticks(const struct bench_env *e)
{
	char path[300], buf[1024];
	uint64_t sum = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		int tid = atoi(de->d_name);
		unsigned long ut = 0, st = 0;
		FILE *f;
		char *p;

		if (tid <= 0 || tid == e->worker_tid || tid == e->gen_tid)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) &&
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			   &st) == 2)
			sum += ut + st;
		fclose(f);
	}
	closedir(d);
	return sum;
}

static void
snap_take(const struct bench_env *e, struct snap *s)
{
	const struct dp_stats *d = &dp_stats[e->wlcore];
	struct ctl_stats c;

	ctl_stats_total(&c);
	s->tsc = rte_rdtsc();
	s->busy = d->c[DP_BUSY_CYCLES];
	s->rx = d->c[DP_RX_PACKETS];
	s->tx = d->c[DP_TX_PACKETS];
	s->ok = e->g->cnt.ok;
	s->failed = e->g->cnt.failed;
	s->opened = e->g->cnt.opened;
	s->ctl_ticks = ctl_ticks(e);
	s->spool_written = c.c[CTL_SPOOL_WRITTEN];
	s->rdns_req = c.c[CTL_RDNS_REQUESTS];
	s->rdns_cached = c.c[CTL_RDNS_CACHED];
}

static void
gen_spin(struct gen *g, double secs)
{
	uint64_t end = rte_rdtsc() + (uint64_t)(secs * (double)g->tsc_hz);
	uint64_t next_reap = rte_rdtsc() + g->tsc_hz / 10;

	while (!g_stop && rte_rdtsc() < end) {
		gen_turn(g);
		if (rte_rdtsc() > next_reap) {
			gen_reap(g, rte_rdtsc());
			next_reap = rte_rdtsc() + g->tsc_hz / 10;
		}
	}
}

static void
gen_reset_counts(struct gen *g, const struct gen_script *sc, unsigned conc)
{
	unsigned i;

	memset(&g->cnt, 0, sizeof(g->cnt));
	g->sc = sc;
	g->want = conc;
	g->n_addr = GEN_MAX_ADDR;
	for (i = 0; i < g->n_addr; i++) {
		static const uint8_t base[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0,
						  0,    0,    0,    0,    0, 1, 0, 0 };
		uint16_t low = (uint16_t)(sc->addr_first + i * sc->addr_step);

		memcpy(g->addrs[i], base, 16);
		wr16(g->addrs[i] + 14, low);
	}
}

/* Stop opening, let what is open finish (bounded), reset the rest. */
static void
gen_drain(struct gen *g)
{
	uint64_t end = rte_rdtsc() + g->tsc_hz * (g->stall_s + 2);

	g->opening = false;
	while (g->active && rte_rdtsc() < end) {
		gen_turn(g);
		gen_reap(g, rte_rdtsc());
	}
}

static void
describe_unexpected(const struct gen *g, char *out, size_t n)
{
	size_t used = 0;
	unsigned c;

	out[0] = 0;
	for (c = 0; c < 600 && used + 16 < n; c++)
		if (g->cnt.codes[c])
			used += (size_t)snprintf(out + used, n - used, "%s%u:%" PRIu64,
						 used ? "," : "", c, g->cnt.codes[c]);
}

static void
run_load(struct bench_env *e, const struct gen_script *sc, unsigned conc, double warm_s,
	 double secs, struct run_result *r)
{
	struct gen *g = e->g;
	struct snap a, b;
	double hz = (double)e->tsc_hz;
	long tick = sysconf(_SC_CLK_TCK);

	gen_reset_counts(g, sc, conc);
	g->opening = true;
	gen_spin(g, warm_s);
	snap_take(e, &a);
	gen_spin(g, secs);
	snap_take(e, &b);
	gen_drain(g);
	memset(r, 0, sizeof(*r));
	r->name = sc->name;
	r->conc = conc;
	r->wall_s = (double)(b.tsc - a.tsc) / hz;
	r->busy_s = (double)(b.busy - a.busy) / hz;
	r->ctl_cpu_s = (double)(b.ctl_ticks - a.ctl_ticks) / (double)tick;
	r->ok = b.ok - a.ok;
	r->failed = g->cnt.failed;
	r->stalled = g->cnt.stalled;
	r->reset = g->cnt.reset;
	r->packets = (b.rx - a.rx) + (b.tx - a.tx);
	r->spool_written = b.spool_written - a.spool_written;
	r->rdns_req = b.rdns_req - a.rdns_req;
	r->rdns_cached = b.rdns_cached - a.rdns_cached;
	if (r->ok) {
		r->per_s_wall = (double)r->ok / r->wall_s;
		r->per_s_core = (double)r->ok / r->busy_s;
		r->cycles_per_session = (double)(b.busy - a.busy) / (double)r->ok;
		r->packets_per_session = (double)r->packets / (double)r->ok;
	}
	if (r->packets)
		r->cycles_per_packet = (double)(b.busy - a.busy) / (double)r->packets;
	describe_unexpected(g, r->unexpected, sizeof(r->unexpected));
}

struct idle_result {
	unsigned wanted, held, worker_active;
	unsigned worker_max; /* the most sessions the worker held at once */
	double rss_per_session;
	uint64_t rss_delta;
	double open_s; /* to open them all */
};

static uint64_t
rss_bytes(void)
{
	unsigned long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Open n sessions to the greeting and hold them; count what the worker
 * holds; then reset them all and wait for the worker to let go. Opening
 * gets 30 s and a second more per 20,000 sessions. */
static void
run_idle(struct bench_env *e, unsigned n, struct idle_result *r)
{
	struct gen *g = e->g;
	uint64_t rss0 = rss_bytes(), t0 = rte_rdtsc(), end;
	uint32_t i;

	memset(r, 0, sizeof(*r));
	gen_reset_counts(g, &scripts[2], n);
	g->opening = true;
	end = t0 + e->tsc_hz * (30 + n / 20000);
	while (!g_stop && rte_rdtsc() < end) {
		unsigned held = 0, w;

		gen_spin(g, 0.05);
		for (i = 0; i < g->cap; i++)
			held += g->sess[i].state != GS_FREE && g->sess[i].held;
		r->held = held;
		w = worker_sessions(e->w);
		if (w > r->worker_max)
			r->worker_max = w;
		if (held >= n)
			break;
	}
	r->open_s = (double)(rte_rdtsc() - t0) / (double)e->tsc_hz;
	g->opening = false;
	gen_spin(g, 0.2);
	r->wanted = n;
	r->worker_active = worker_sessions(e->w);
	if (r->worker_active > r->worker_max)
		r->worker_max = r->worker_active;
	r->rss_delta = rss_bytes() > rss0 ? rss_bytes() - rss0 : 0;
	r->rss_per_session = r->held ? (double)r->rss_delta / r->held : 0;
	for (i = 0; i < g->cap; i++) {
		struct gen_sess *s = &g->sess[i];

		if (s->state == GS_FREE)
			continue;
		gen_emit(g, s, s->snd_nxt, TH_RST | TH_ACK, NULL, 0);
		gen_free(g, s);
	}
	end = rte_rdtsc() + e->tsc_hz * 5;
	while (worker_sessions(e->w) && rte_rdtsc() < end)
		gen_turn(g);
}

/* ---- the program ------------------------------------------------------- */

/* Most reject runs one invocation makes. */
#define REJECT_RUNS_MAX 32

struct bench_args {
	const char *config;
	unsigned reject_conc, accept_conc, idle_n;
	double secs, warm;
	unsigned reject_repeat;
	const char *body_file, *mail_domain; /* the accept run's message, sender */
	unsigned stall_s;
};

struct bench_out {
	struct run_result reject, accept;
	struct run_result reject_runs[REJECT_RUNS_MAX];
	unsigned n_reject_runs;
	struct idle_result idle;
	bool did_reject, did_accept, did_idle;
};

static struct bench_args g_args = { NULL, 256, 64, 4000, 3.0, 0.5, 5 };
static struct bench_out g_out;
static struct bench_env g_env;

static void
gen_body(struct gen *g)
{
	static const char hdr[] = "From: <bench@example.org>\r\nTo: <postmaster@example.net>\r\n"
				  "Subject: bench\r\n\r\n";
	uint32_t n = 0, cap = 4096;

	g->body = malloc(cap);
	n = (uint32_t)snprintf(g->body, cap, "%s", hdr);
	while (n < 2048 - 78) /* a 2 KB message: 76-character lines */
		n += (uint32_t)snprintf(
			g->body + n, cap - n, "%.76s\r\n",
			"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef");
	n += (uint32_t)snprintf(g->body + n, cap - n, ".\r\n");
	g->body_len = n;
}

/* The accept run's message from a file (e.g. one signed with DKIM): lines
 * ending in LF or CRLF, sent with CRLF, dot-stuffed, then the final dot. */
static int
gen_body_file(struct gen *g, const char *path)
{
	FILE *f = fopen(path, "rb");
	bool bol = true;
	uint32_t n = 0, cap;
	long size;
	int c;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		fprintf(stderr, "bench: --body %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	cap = (uint32_t)size * 2 + 8;
	g->body = malloc(cap);
	if (!g->body) {
		fclose(f);
		return -1;
	}
	while ((c = getc(f)) != EOF) {
		if (c == '\r')
			continue;
		if (bol && c == '.')
			g->body[n++] = '.';
		if (c == '\n')
			g->body[n++] = '\r';
		g->body[n++] = (char)c;
		bol = c == '\n';
	}
	fclose(f);
	if (!bol) {
		g->body[n++] = '\r';
		g->body[n++] = '\n';
	}
	memcpy(g->body + n, ".\r\n", 3);
	g->body_len = n + 3;
	return 0;
}

static void *
gen_main(void *arg)
{
	struct bench_env *e = arg;

	rte_thread_register();
	e->gen_tid = (pid_t)syscall(SYS_gettid);
	while (!e->worker_tid)
		rte_pause();
	if (g_args.reject_conc) {
		unsigned k;

		for (k = 0; k < g_args.reject_repeat && !g_stop; k++)
			run_load(e, &scripts[0], g_args.reject_conc, g_args.warm, g_args.secs,
				 &g_out.reject_runs[k]);
		g_out.n_reject_runs = k;
		g_out.did_reject = k > 0;
	}
	if (g_args.accept_conc && !g_stop) {
		run_load(e, &scripts[1], g_args.accept_conc, g_args.warm, g_args.secs,
			 &g_out.accept);
		g_out.did_accept = true;
	}
	if (g_args.idle_n && !g_stop) {
		run_idle(e, g_args.idle_n, &g_out.idle);
		g_out.did_idle = true;
	}
	g_stop = 1;
	rte_thread_unregister();
	return NULL;
}

static int
bench_worker(void *w)
{
	g_env.worker_tid = (pid_t)syscall(SYS_gettid);
	return worker_main(w);
}

static void
on_signal(int sig)
{
	g_stop = sig;
}

static int
parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "reject", required_argument, NULL, 'r' },
		{ "accept", required_argument, NULL, 'a' },
		{ "idle", required_argument, NULL, 'i' },
		{ "secs", required_argument, NULL, 's' },
		{ "warm", required_argument, NULL, 'w' },
		{ "repeat", required_argument, NULL, 'n' },
		{ "body", required_argument, NULL, 'b' },
		{ "mail-domain", required_argument, NULL, 'm' },
		{ "stall", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'c': g_args.config = optarg; break;
		case 'r': g_args.reject_conc = (unsigned)atoi(optarg); break;
		case 'a': g_args.accept_conc = (unsigned)atoi(optarg); break;
		case 'i': g_args.idle_n = (unsigned)atoi(optarg); break;
		case 's': g_args.secs = atof(optarg); break;
		case 'w': g_args.warm = atof(optarg); break;
		case 'n': g_args.reject_repeat = (unsigned)atoi(optarg); break;
		case 'b': g_args.body_file = optarg; break;
		case 'm': g_args.mail_domain = optarg; break;
		case 't': g_args.stall_s = (unsigned)atoi(optarg); break;
		default: return -1;
		}
	}
	if (!g_args.config || g_args.secs <= 0 || g_args.reject_repeat < 1 ||
	    g_args.reject_repeat > REJECT_RUNS_MAX) {
		fprintf(stderr,
			"usage: bench_inproc [EAL options] -- --config FILE "
			"[--reject CONC] [--accept CONC] [--idle N] [--secs S] [--warm S] "
			"[--repeat 1..%u (reject runs)] [--body FILE] [--mail-domain SUFFIX] [--stall S]\n",
			REJECT_RUNS_MAX);
		return -1;
	}
	return 0;
}

static uint64_t
heap_bytes(void)
{
	struct rte_malloc_socket_stats st;
	struct mallinfo2 mi = mallinfo2();
	uint64_t sum = mi.uordblks + mi.hblkhd;

	if (rte_malloc_get_socket_stats((int)rte_socket_id(), &st) == 0)
		sum += st.heap_allocsz_bytes;
	return sum;
}

static int
gen_create(struct gen *g, const struct edge_config *cfg, const struct port_state *ps,
	   struct rte_ring *to_w, struct rte_ring *from_w)
{
	uint32_t i, cap = RTE_MAX(g_args.reject_conc, g_args.accept_conc);

	cap = RTE_MAX(cap, g_args.idle_n);

	g->to_worker = to_w;
	g->from_worker = from_w;
	g->tsc_hz = rte_get_tsc_hz();
	memcpy(g->edge_mac, ps->mac, 6);
	memcpy(g->peer_mac, (const uint8_t[6]){ 0x02, 0, 0, 0xbe, 0x4c, 0x01 }, 6);
	memcpy(g->edge6, cfg->addr6, 16);
	g->pool = rte_pktmbuf_pool_create(
		"gen_mbufs", GEN_MBUFS, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	g->cap = cap ? cap : 1;
	g->sess = calloc(g->cap, sizeof(*g->sess));
	g->free_stack = calloc(g->cap, sizeof(uint32_t));
	g->map = calloc((size_t)GEN_MAX_ADDR * 65536u, sizeof(uint32_t));
	if (!g->pool || !g->sess || !g->free_stack || !g->map)
		return -1;
	for (i = 0; i < g->cap; i++)
		g->free_stack[g->n_free++] = g->cap - 1 - i;
	g->mail_domain = g_args.mail_domain;
	g->stall_s = g_args.stall_s ? g_args.stall_s : GEN_STALL_S;
	if (g_args.body_file)
		return gen_body_file(g, g_args.body_file);
	gen_body(g);
	return 0;
}

static void
gen_destroy(struct gen *g)
{
	while (g->ntx)
		rte_pktmbuf_free(g->txq[--g->ntx]);
	free(g->sess);
	free(g->free_stack);
	free(g->map);
	free(g->body);
	rte_mempool_free(g->pool);
}

static void
print_run(FILE *f, const struct run_result *r)
{
	fprintf(f,
		"%-7s conc=%-5u sessions=%-8" PRIu64 " wall=%.2fs  %10.0f/s wall  "
		"%10.0f/s per busy core  %7.0f cycles/session  %5.0f cycles/packet  "
		"%.1f packets/session  control cpu %.3fs  failed=%" PRIu64 " stalled=%" PRIu64
		" reset=%" PRIu64 " rdns %" PRIu64 " (cached %" PRIu64 ") spooled %" PRIu64
		"%s%s\n",
		r->name, r->conc, r->ok, r->wall_s, r->per_s_wall, r->per_s_core,
		r->cycles_per_session, r->cycles_per_packet, r->packets_per_session, r->ctl_cpu_s,
		r->failed, r->stalled, r->reset, r->rdns_req, r->rdns_cached, r->spool_written,
		r->unexpected[0] ? " unexpected=" : "", r->unexpected);
}

static void
json_run(FILE *f, const char *k, const struct run_result *r)
{
	fprintf(f,
		"\"%s\":{\"concurrency\":%u,\"sessions\":%" PRIu64 ",\"wall_s\":%.3f,"
		"\"busy_s\":%.4f,\"sessions_per_s_wall\":%.0f,\"sessions_per_s_per_core\":%.0f,"
		"\"cycles_per_session\":%.0f,\"cycles_per_packet\":%.0f,\"packets_per_session\":%.2f,"
		"\"control_cpu_s\":%.3f,\"failed\":%" PRIu64 ",\"stalled\":%" PRIu64
		",\"reset\":%" PRIu64 ",\"rdns_requests\":%" PRIu64 ",\"rdns_cached\":%" PRIu64
		",\"spooled\":%" PRIu64 ",\"unexpected\":\"%s\"},",
		k, r->conc, r->ok, r->wall_s, r->busy_s, r->per_s_wall, r->per_s_core,
		r->cycles_per_session, r->cycles_per_packet, r->packets_per_session, r->ctl_cpu_s,
		r->failed, r->stalled, r->reset, r->rdns_req, r->rdns_cached, r->spool_written,
		r->unexpected);
}

/* The median and the best of the reject runs. */
struct reject_summary {
	double per_s_median, per_s_best;
	double cycles_median, cycles_best;
};

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Summarises the runs, and makes the run with the median sessions per core
 * the "reject" run (the lower of the middle two when they are even). */
static void
reject_summarise(struct bench_out *o, struct reject_summary *sum)
{
	double per_s[REJECT_RUNS_MAX], cycles[REJECT_RUNS_MAX];
	unsigned i, n = o->n_reject_runs, mid = 0;

	for (i = 0; i < n; i++) {
		per_s[i] = o->reject_runs[i].per_s_core;
		cycles[i] = o->reject_runs[i].cycles_per_session;
	}
	sum->per_s_median = median(per_s, n);
	sum->per_s_best = per_s[n - 1];
	sum->cycles_median = median(cycles, n);
	sum->cycles_best = cycles[0];
	for (i = 0; i < n; i++)
		if (o->reject_runs[i].per_s_core == per_s[(n - 1) / 2])
			mid = i;
	o->reject = o->reject_runs[mid];
}

static void
json_reject_runs(FILE *f, const struct bench_out *o, const struct reject_summary *sum)
{
	unsigned i;

	fprintf(f,
		"\"reject_runs\":{\"runs\":%u,\"sessions_per_s_per_core_median\":%.0f,"
		"\"sessions_per_s_per_core_best\":%.0f,\"cycles_per_session_median\":%.0f,"
		"\"cycles_per_session_best\":%.0f,\"sessions_per_s_per_core\":[",
		o->n_reject_runs, sum->per_s_median, sum->per_s_best, sum->cycles_median,
		sum->cycles_best);
	for (i = 0; i < o->n_reject_runs; i++)
		fprintf(f, "%s%.0f", i ? "," : "", o->reject_runs[i].per_s_core);
	fprintf(f, "],\"cycles_per_session\":[");
	for (i = 0; i < o->n_reject_runs; i++)
		fprintf(f, "%s%.0f", i ? "," : "", o->reject_runs[i].cycles_per_session);
	fprintf(f, "]},");
}

static void
report(uint64_t heap_per_flow, uint32_t flows)
{
	struct reject_summary rs = { 0 };
	unsigned k;
	size_t slot = sess_layer_slot_bytes();
	const struct idle_result *i = &g_out.idle;

	if (g_out.did_reject) {
		reject_summarise(&g_out, &rs);
		for (k = 0; k < g_out.n_reject_runs; k++)
			print_run(stderr, &g_out.reject_runs[k]);
		fprintf(stderr,
			"reject  %u runs: %.0f/s per busy core median, %.0f best; "
			"%.0f cycles/session median, %.0f best\n",
			g_out.n_reject_runs, rs.per_s_median, rs.per_s_best, rs.cycles_median,
			rs.cycles_best);
	}
	if (g_out.did_accept)
		print_run(stderr, &g_out.accept);
	if (g_out.did_idle)
		fprintf(stderr,
			"idle    held=%u of %u (worker holds %u, at most %u; opened in %.1fs)  "
			"slot %zu B (%.0f sessions/GiB)  allocated per flow slot, all told %" PRIu64
			" B (%.0f/GiB, flows=%u)  rss +%.0f B/session\n",
			i->held, i->wanted, i->worker_active, i->worker_max, i->open_s, slot,
			1073741824.0 / (double)slot, heap_per_flow,
			1073741824.0 / (double)heap_per_flow, flows, i->rss_per_session);
	printf("BENCH_JSON {");
	if (g_out.did_reject) {
		json_run(stdout, "reject", &g_out.reject);
		json_reject_runs(stdout, &g_out, &rs);
	}
	if (g_out.did_accept)
		json_run(stdout, "accept", &g_out.accept);
	/* An idle session holds its slot and nothing else (no session
	 * buffer, no send or reorder chunk, no record), so what it costs is
	 * what a slot costs all told: everything the worker, the planes and
	 * the control plane allocated, less the body budget, per flow slot. */
	if (g_out.did_idle)
		printf("\"idle\":{\"wanted\":%u,\"held\":%u,\"worker_active\":%u,"
		       "\"rss_bytes_per_session\":%.0f,\"open_s\":%.2f},"
		       "\"idle_sessions_held\":%u,\"bytes_per_idle_session\":%" PRIu64 ","
		       "\"idle_sessions_per_gib\":%.0f,\"session_buffer_bytes\":%zu,",
		       i->wanted, i->held, i->worker_active, i->rss_per_session, i->open_s,
		       i->worker_max, heap_per_flow, 1073741824.0 / (double)heap_per_flow,
		       sess_layer_buffer_bytes());
	printf("\"slot_bytes\":%zu,\"allocated_bytes_per_flow\":%" PRIu64 ",\"flows\":%u,"
	       "\"tsc_hz\":%" PRIu64 "}\n",
	       slot, heap_per_flow, flows, g_env.tsc_hz);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	static struct edge_config cfg;
	static struct port_state port;
	static struct gen gen;
	static struct planes planes;
	struct rte_ring *to_w = NULL, *from_w = NULL;
	struct worker_params wp = { 0 };
	struct port_params pp = { 0 };
	struct ctlplane_params cp = { 0 };
	struct ctlplane *pool = NULL;
	struct worker *w = NULL;
	char err[512];
	pthread_t gt;
	uint64_t h0, h1, hc, heap_per_flow;
	int rc, sep, port_id, status = 1;

	for (sep = 1; sep < argc && strcmp(argv[sep], "--"); sep++)
		;
	if (sep == argc || parse_args(argc - sep, argv + sep) < 0)
		return 2;
	if (config_load(g_args.config, &cfg, stderr) < 0 || !cfg.has_addr6)
		return 2;
	rc = rte_eal_init(sep, argv);
	if (rc < 0 || rte_lcore_count() != 2) {
		fprintf(stderr, "bench: EAL init (two lcores: -l 0-1): %s\n",
			rte_strerror(rte_errno));
		return 1;
	}
	g_env.wlcore = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
	g_env.tsc_hz = rte_get_tsc_hz();
	to_w = rte_ring_create("bench_to_worker", GEN_RING, (int)rte_socket_id(),
			       RING_F_SP_ENQ | RING_F_SC_DEQ);
	from_w = rte_ring_create("bench_from_worker", GEN_RING, (int)rte_socket_id(),
				 RING_F_SP_ENQ | RING_F_SC_DEQ);
	port_id = to_w && from_w ?
			  rte_eth_from_rings("net_bench", &to_w, 1, &from_w, 1, rte_socket_id()) :
			  -1;
	if (port_id < 0) {
		fprintf(stderr, "bench: ring port: %s\n", rte_strerror(rte_errno));
		goto out;
	}
	pp.port_id = (uint16_t)port_id;
	pp.n_queues = 1;
	pp.mbufs = cfg.mbufs;
	pp.rx_desc = cfg.rx_desc;
	pp.tx_desc = cfg.tx_desc;
	pp.mtu = cfg.mtu;
	pp.ip6 = cfg.addr6;
	if (port_setup(&pp, &port) < 0)
		goto out;
	h0 = heap_bytes();
	if (planes_create(&cfg, 1, &planes) < 0)
		goto out;
	h1 = heap_bytes();
	policy_live_init(&cfg.policy);
	cp.cfg = &cfg;
	cp.n_workers = 1;
	cp.req = planes.req;
	cp.ver = planes.ver;
	cp.txrec_pool = planes.txrecs;
	cp.max_flows = cfg.flows;
	hc = heap_bytes();
	pool = ctlplane_create(&cp, err, sizeof(err));
	hc = heap_bytes() - hc; /* its per-slot state with the rest */
	if (!pool) {
		fprintf(stderr, "bench: %s\n", err);
		goto out;
	}
	planes.sess.spf_full = ctlplane_spf_full(pool);
	pkt_local_init(&wp.local, port.mac);
	wp.local.mtu = cfg.mtu;
	wp.local.has_ip6 = true;
	memcpy(wp.local.ip6, cfg.addr6, 16);
	wp.sess = &planes.sess;
	wp.faults = planes.faults;
	wp.port = &port;
	wp.lcore = g_env.wlcore;
	wp.req = planes.req[0];
	wp.ver = planes.ver[0];
	wp.txrecs = planes.txrecs;
	wp.tsc0 = rte_rdtsc();
	wp.tsc_hz = g_env.tsc_hz;
	wp.wall0_us = (uint64_t)time(NULL) * 1000000u;
	wp.secret_seed = rte_rand();
	{
		uint64_t hw = heap_bytes();

		w = worker_create(&wp);
		if (!w) {
			fprintf(stderr, "bench: worker: %s\n", rte_strerror(rte_errno));
			goto out;
		}
		/* What the worker, the planes and the control plane took,
		 * less the body budget (not per session), per flow slot. */
		heap_per_flow = (heap_bytes() - hw + (h1 - h0) + hc -
				 (uint64_t)cfg.body_budget_mb * 1048576u) /
				cfg.flows;
	}
	if (gen_create(&gen, &cfg, &port, to_w, from_w) < 0) {
		fprintf(stderr, "bench: generator: out of memory\n");
		goto out;
	}
	g_env.w = w;
	g_env.g = &gen;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	rte_eal_remote_launch(bench_worker, w, g_env.wlcore);
	if (pthread_create(&gt, NULL, gen_main, &g_env) != 0) {
		worker_stop_all();
		rte_eal_mp_wait_lcore();
		goto out;
	}
	ctlplane_run(pool, &g_stop);
	pthread_join(gt, NULL);
	worker_stop_all();
	rte_eal_mp_wait_lcore();
	report(heap_per_flow, cfg.flows);
	status = 0;
out:
	ctlplane_destroy(pool);
	worker_destroy(w);
	gen_destroy(&gen);
	planes_free(&planes);
	port_shutdown(&port);
	rte_ring_free(to_w);
	rte_ring_free(from_w);
	rte_eal_cleanup();
	return status;
}
