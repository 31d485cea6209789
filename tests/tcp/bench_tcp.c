/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/tcp/bench_tcp.c — how fast the TCP engine alone runs on one core.
 *
 * Prints figures, asserts nothing (DESIGN.md: performance is measured, not
 * asserted). Two loops: a SYN flood answered with cookies, and complete
 * short SMTP-like sessions (SYN, ACK + greeting, QUIT, 221 + FIN, FIN, ACK)
 * through the half-open path, many sessions in flight at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataplane/tcp.h"

static uint8_t g_pkt[128];
static uint32_t g_last_seq, g_last_len;
static uint8_t g_last_flags;
static uint64_t g_now = 1000000;

static uint64_t
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static void
wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static bool
b_output(void *ctx, const struct tcp_out *o)
{
	(void)ctx;
	g_last_seq = rd32(o->hdr + 4);
	g_last_flags = o->hdr[13];
	g_last_len = o->data_len[0] + o->data_len[1];
	return true;
}
static int g_dummy;
static void *
b_open(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *i)
{
	(void)ctx;
	(void)i;
	tcp_send(c, "220 mx ESMTP\r\n", 14);
	return c;
}
static uint32_t
b_recv(void *app, const uint8_t *p, uint32_t n)
{
	(void)p;
	tcp_send(app, "221 bye\r\n", 9);
	tcp_close(app);
	return n;
}
static void
b_closed(void *app, int reason)
{
	(void)app;
	g_dummy += reason;
}

static void
seg(struct tcp_engine *e, uint32_t peer, uint16_t port, uint8_t fl, uint32_t seq, uint32_t ack,
    const char *d, uint32_t n)
{
	struct tcp_pkt p;

	memset(&p, 0, sizeof(p));
	p.family = 6;
	p.saddr[0] = 0x20;
	p.saddr[1] = 0x01;
	wr32(p.saddr + 12, peer);
	p.daddr[0] = 0x20;
	p.daddr[1] = 0x01;
	p.daddr[15] = 1;
	wr16(g_pkt, port);
	wr16(g_pkt + 2, 25);
	wr32(g_pkt + 4, seq);
	wr32(g_pkt + 8, ack);
	g_pkt[12] = 0x50;
	g_pkt[13] = fl;
	wr16(g_pkt + 14, 65535);
	wr32(g_pkt + 16, 0);
	memcpy(g_pkt + 20, d, n);
	p.tcp = g_pkt;
	p.len = 20 + n;
	tcp_input(e, &p, g_now);
}

int
main(void)
{
	static const uint16_t ports[] = { 25 };
	const struct tcp_ops ops = {
		.output = b_output, .open = b_open, .recv = b_recv, .closed = b_closed
	};
	struct tcp_params prm = {
		.max_flows = 1 << 16,
		.ports = ports,
		.n_ports = 1,
		.mss4 = 1460,
		.mss6 = 1440,
		.sndbuf_bytes = 16384,
		.sndbuf_pool_bytes = 64 << 20,
		.ooo_max_bytes = 8192,
		.ooo_pool_bytes = 8 << 20,
		.handshake_timeout_ms = 10000,
		.idle_timeout_ms = 300000,
		.lifetime_ms = 600000,
		.rto_min_ms = 200,
		.rto_max_ms = 60000,
		.max_retries = 6,
		.halfopen_max = 0,
		.rst_rate_per_s = 1000,
		.secret_seed = 1,
	};
	struct tcp_engine *e = tcp_engine_create(&prm, &ops, NULL, g_now);
	const uint32_t n = 2000000, batch = 4096;
	uint64_t t0;

	if (!e)
		return 1;
	t0 = wall_ns();
	for (uint32_t i = 0; i < n; i++)
		seg(e, i, (uint16_t)(1024 + i % 60000), 0x02, i * 7919u, 0, NULL, 0);
	printf("SYN flood answered with cookies: %.2f M SYN/s (%llu cookies, %u TCBs)\n",
	       n / ((wall_ns() - t0) / 1e9) / 1e6,
	       (unsigned long long)tcp_engine_counters(e)->cookies_sent, tcp_engine_active(e));
	prm.halfopen_max = batch;
	tcp_engine_destroy(e);
	e = tcp_engine_create(&prm, &ops, NULL, g_now);
	t0 = wall_ns();
	for (uint32_t b = 0; b < n / batch; b++) {
		static uint32_t iss[4096];
		for (uint32_t i = 0; i < batch; i++) { /* SYNs */
			seg(e, b * batch + i, 2000, 0x02, i, 0, NULL, 0);
			iss[i] = g_last_seq;
		}
		for (uint32_t i = 0; i < batch; i++) /* ACK -> greeting */
			seg(e, b * batch + i, 2000, 0x10, i + 1, iss[i] + 1, NULL, 0);
		for (uint32_t i = 0; i < batch; i++) /* QUIT -> 221 + FIN */
			seg(e, b * batch + i, 2000, 0x18, i + 1, iss[i] + 15, "QUIT\r\n", 6);
		for (uint32_t i = 0; i < batch; i++) /* ACK of FIN + our FIN */
			seg(e, b * batch + i, 2000, 0x11, i + 7, iss[i] + 25, NULL, 0);
		g_now += 1000;
		tcp_engine_tick(e, g_now);
	}
	printf("sessions (SYN, greeting, QUIT, 221, FIN both ways): %.2f M/s, live TCBs left %u\n",
	       (n / batch * batch) / ((wall_ns() - t0) / 1e9) / 1e6, tcp_engine_active(e));
	tcp_engine_destroy(e);
	return g_dummy < 0;
}
