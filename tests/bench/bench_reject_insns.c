/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/bench/bench_reject_insns.c — the reject path's engines, without DPDK,
 * for counting instructions per refused session under valgrind.
 *
 * Why: cycles per session measured on a shared machine move by a factor of
 * three with the load; an instruction count does not. This VM exposes no
 * hardware counters (perf_event_open's instructions event is "not
 * supported"), so scripts/bench.sh runs this program under callgrind,
 * collecting only inside the edge's entry points (pkt_classify,
 * tcp_input, tcp_engine_tick) and not inside client_take or a clone of it
 * (the client reading our segments), and divides by the sessions. The client's own
 * frames and checksums and the setup are not counted.
 *
 * What one session runs here is what the worker runs for it, less DPDK's
 * part (mbufs, rings, the PMD) and the session layer's glue: each client
 * frame (Ethernet, IPv6, TCP, its checksum) through pkt_classify(), the TCP
 * engine, the SMTP engine, the PTR rule's 550 5.7.25 text from
 * policy_ptr() (the address has no PTR), and each segment out built into a
 * frame with its checksum, as the worker's emit does. The dialogue is the
 * in-process benchmark's reject script: SYN; ACK; EHLO; MAIL -> 550; QUIT
 * -> 221 and FIN; the client's FIN, which acknowledges ours.
 *
 * Usage: bench_reject_insns SESSIONS. Prints "sessions N ok M segments in
 * I out O per session" on stdout: M is how many got 550 to MAIL and 221 to
 * QUIT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ip.h>

#include "common/rules.h"

#include "dataplane/pkt.h"
#include "dataplane/smtp.h"
#include "dataplane/tcp.h"
#include "dataplane/tcp_wire.h"

#define BATCH     256 /* sessions in flight at once */
#define ETH_LEN   14
#define IP6_LEN   40
#define FRAME_MAX 2048

struct conn {
	struct tcp_conn *tcp;
	struct smtp_session *smtp;
	struct smtp_peer peer;
	uint32_t snd_nxt, rcv_nxt; /* the client's */
	uint32_t got_550, got_221;
	bool fin_seen;
};

static struct tcp_engine *g_tcp;
static struct pkt_local g_local;
static struct conn g_conns[BATCH];
static uint8_t *g_smtp_mem;
static size_t g_smtp_size;
static struct smtp_params g_smtp_params = { .hostname = "mx.bench.example" };
static const struct policy_rule g_rule = {
	.action = POLICY_ENFORCE, .stage = POLICY_AT_MAIL, .fcrdns = true, .reply = 550
};
static struct policy_reply g_reply;
static uint8_t g_frame[FRAME_MAX], g_out[FRAME_MAX];
static uint64_t g_now = 1000000;
static uint32_t g_cur; /* the connection a segment out belongs to */
static uint64_t g_segs_in, g_segs_out;
static const uint8_t g_edge6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 1, [15] = 1 };

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* What the client reads from a segment of ours. Not inlined: the count
 * leaves it out (see the head comment; the toggle is a pattern, since GCC
 * may call it through a clone named client_take.constprop.0). */
static __attribute__((noinline)) void
client_take(struct conn *c, const uint8_t *tcp, uint32_t len)
{
	uint32_t hl = (uint32_t)(tcp[12] >> 4) * 4u, n = len - hl;
	const char *d = (const char *)tcp + hl;

	if (tcp[13] & TH_SYN)
		c->rcv_nxt = rd32(tcp + 4) + 1;
	if (n > 0 && rd32(tcp + 4) == c->rcv_nxt) {
		c->rcv_nxt += n;
		c->got_550 += n >= 4 && memcmp(d, "550 ", 4) == 0;
		c->got_221 += n >= 4 && memcmp(d, "221 ", 4) == 0;
	}
	if (tcp[13] & TH_FIN) {
		c->rcv_nxt++;
		c->fin_seen = true;
	}
}

/* The worker's emit: a frame around the segment, its checksum. */
static bool
out(void *ctx, const struct tcp_out *o)
{
	struct rte_ipv6_hdr *h = (struct rte_ipv6_hdr *)(g_out + ETH_LEN);
	uint8_t *tcp = g_out + ETH_LEN + IP6_LEN;
	uint32_t l4 = o->hdr_len + o->data_len[0] + o->data_len[1];

	(void)ctx;
	memcpy(g_out, &o->link, 6);
	memcpy(g_out + 6, g_local.mac, 6);
	g_out[12] = 0x86;
	g_out[13] = 0xdd;
	memcpy(tcp, o->hdr, o->hdr_len);
	if (o->data_len[0])
		memcpy(tcp + o->hdr_len, o->data[0], o->data_len[0]);
	if (o->data_len[1])
		memcpy(tcp + o->hdr_len + o->data_len[0], o->data[1], o->data_len[1]);
	tcp[16] = tcp[17] = 0;
	h->vtc_flow = rte_cpu_to_be_32(6u << 28);
	h->payload_len = rte_cpu_to_be_16((uint16_t)l4);
	h->proto = IPPROTO_TCP;
	h->hop_limits = 64;
	memcpy(h->src_addr, o->saddr, 16);
	memcpy(h->dst_addr, o->daddr, 16);
	pkt_tx_cksum((uint8_t *)h, true, tcp, l4, 0); /* no offloads, as net_ring */
	client_take(&g_conns[g_cur], tcp, l4);
	g_segs_out++;
	return true;
}

/* ------------------------------------------------ the SMTP engine's glue */

static uint32_t
s_write(void *ctx, const void *p, uint32_t n)
{
	struct conn *c = ctx;

	return tcp_send(c->tcp, p, n);
}

static void
s_close(void *ctx)
{
	tcp_close(((struct conn *)ctx)->tcp);
}

static int
s_check(void *ctx, const struct smtp_check *chk, struct smtp_verdict *v)
{
	struct conn *c = ctx;

	if (chk->stage != SMTP_STAGE_MAIL)
		return SMTP_CHECK_DONE;
	if (policy_ptr(&g_rule, PTR_NONE, 6, c->peer.addr, &g_reply) == POLICY_REJECT) {
		v->code = g_reply.code;
		memcpy(v->enh, g_reply.enh, sizeof(v->enh));
		v->text = g_reply.text;
	}
	return SMTP_CHECK_DONE;
}

static void *
s_chunk_get(void *ctx, uint32_t *cap)
{
	(void)ctx;
	(void)cap;
	return NULL; /* a refused session keeps no body */
}

static void
s_chunk_put(void *ctx, void *chunk)
{
	(void)ctx;
	(void)chunk;
}

/* Session buffers as the worker lends them: a LIFO free list, the one
 * given back last lent first. */
static void **g_buf_free;
static uint32_t g_buf_nfree;

static void *
s_buf_get(void *ctx)
{
	(void)ctx;
	return g_buf_nfree ? g_buf_free[--g_buf_nfree] : NULL;
}

static void
s_buf_put(void *ctx, void *buf)
{
	(void)ctx;
	g_buf_free[g_buf_nfree++] = buf;
}

static const struct smtp_ops smtp_ops = {
	.write = s_write,
	.close = s_close,
	.check = s_check,
	.chunk_get = s_chunk_get,
	.chunk_put = s_chunk_put,
	.buf_get = s_buf_get,
	.buf_put = s_buf_put,
};

/* ------------------------------------------------- the TCP engine's glue */

static void *
t_open(void *ctx, struct tcp_conn *tc, const struct tcp_conn_info *info)
{
	struct conn *c = &g_conns[g_cur];

	(void)ctx;
	c->tcp = tc;
	c->peer.family = 6;
	memcpy(c->peer.addr, info->peer, 16);
	c->peer.port = info->peer_port;
	c->smtp = smtp_session_init(g_smtp_mem + (size_t)g_cur * g_smtp_size, g_smtp_size,
				    &g_smtp_params, &smtp_ops, c, &c->peer);
	smtp_session_start(c->smtp);
	return c;
}

static uint32_t
t_recv(void *app, const uint8_t *p, uint32_t n)
{
	return smtp_session_feed(((struct conn *)app)->smtp, p, n);
}

static uint32_t
t_rcv_space(void *app)
{
	return smtp_session_rcv_space(((struct conn *)app)->smtp);
}

static void
t_sent(void *app)
{
	smtp_session_writable(((struct conn *)app)->smtp);
}

static void
t_peer_fin(void *app)
{
	smtp_session_peer_closed(((struct conn *)app)->smtp);
}

static void
t_closed(void *app, int reason)
{
	struct conn *c = app;

	(void)reason;
	smtp_session_fini(c->smtp);
	c->tcp = NULL;
}

static const struct tcp_ops tcp_ops = {
	.output = out,
	.open = t_open,
	.recv = t_recv,
	.rcv_space = t_rcv_space,
	.sent = t_sent,
	.peer_fin = t_peer_fin,
	.closed = t_closed,
};

/* ------------------------------------------------------------- the client */

/* One client segment as a frame, checksummed, through the classifier and
 * into the engine. */
static void
client_send(uint32_t i, uint8_t flags, const char *data)
{
	struct conn *c = &g_conns[i];
	struct rte_ipv6_hdr *h = (struct rte_ipv6_hdr *)(g_frame + ETH_LEN);
	uint8_t *tcp = g_frame + ETH_LEN + IP6_LEN;
	uint32_t n = data ? (uint32_t)strlen(data) : 0;
	uint32_t hl = flags & TH_SYN ? 24 : 20;
	struct pkt_info info;
	struct tcp_pkt pkt;
	uint16_t ck;

	memcpy(g_frame, g_local.mac, 6);
	memcpy(g_frame + 6, (const uint8_t[6]){ 0x02, 0, 0, 0xbe, 0x4c, 0x01 }, 6);
	g_frame[12] = 0x86;
	g_frame[13] = 0xdd;
	h->vtc_flow = rte_cpu_to_be_32(6u << 28);
	h->payload_len = rte_cpu_to_be_16((uint16_t)(hl + n));
	h->proto = IPPROTO_TCP;
	h->hop_limits = 64;
	memcpy(h->src_addr, c->peer.addr, 16);
	memcpy(h->dst_addr, g_edge6, 16);
	memset(tcp, 0, hl);
	tcp[0] = (uint8_t)(c->peer.port >> 8);
	tcp[1] = (uint8_t)c->peer.port;
	tcp[3] = 25;
	wr32(tcp + 4, c->snd_nxt);
	wr32(tcp + 8, flags & TH_ACK ? c->rcv_nxt : 0);
	tcp[12] = (uint8_t)((hl / 4) << 4);
	tcp[13] = flags;
	tcp[14] = 0xff;
	tcp[15] = 0xff;
	if (flags & TH_SYN) { /* MSS 1440 */
		tcp[20] = 2;
		tcp[21] = 4;
		tcp[22] = 1440 >> 8;
		tcp[23] = 1440 & 0xff;
	}
	memcpy(tcp + hl, data ? data : "", n);
	ck = rte_ipv6_udptcp_cksum(h, tcp);
	memcpy(tcp + 16, &ck, 2);
	c->snd_nxt += n + ((flags & (TH_SYN | TH_FIN)) ? 1 : 0);
	if (pkt_classify(g_frame, ETH_LEN + IP6_LEN + hl + n, 0, &g_local, &info) != PKT_KIND_TCP6)
		return;
	memset(&pkt, 0, sizeof(pkt));
	pkt.family = 6;
	memcpy(pkt.saddr, h->src_addr, 16);
	memcpy(pkt.daddr, h->dst_addr, 16);
	pkt.tcp = g_frame + info.l4_off;
	pkt.len = info.l4_len;
	memcpy(&pkt.link, g_frame + 6, 6);
	g_cur = i;
	g_segs_in++;
	tcp_input(g_tcp, &pkt, g_now);
}

/* Each step for every connection of the batch in turn, as many clients
 * interleave on the wire. */
static uint32_t
run_batch(uint32_t base, uint32_t n)
{
	static const struct {
		uint8_t flags;
		const char *data;
	} steps[] = {
		{ TH_SYN, NULL },
		{ TH_ACK, NULL },
		{ TH_ACK | TH_PSH, "EHLO client.bench.example\r\n" },
		{ TH_ACK | TH_PSH, "MAIL FROM:<bench@example.org>\r\n" },
		{ TH_ACK | TH_PSH, "QUIT\r\n" },
		{ TH_ACK | TH_FIN, NULL }, /* acks ours: the edge frees the TCB */
	};
	uint32_t i, k, ok = 0;

	for (i = 0; i < n; i++) {
		struct conn *c = &g_conns[i];
		uint32_t a = base + i;

		memset(c, 0, sizeof(*c));
		memcpy(c->peer.addr, g_edge6, 8);
		c->peer.addr[8] = 0x0a;
		wr32(c->peer.addr + 12, a);
		c->peer.port = (uint16_t)(1024 + a % 60000);
		c->snd_nxt = a * 2654435761u;
	}
	for (k = 0; k < sizeof(steps) / sizeof(steps[0]); k++)
		for (i = 0; i < n; i++)
			client_send(i, steps[k].flags, steps[k].data);
	for (i = 0; i < n; i++)
		ok += g_conns[i].got_550 == 1 && g_conns[i].got_221 == 1 && g_conns[i].fin_seen &&
		      g_conns[i].tcp == NULL;
	g_now += 1000;
	tcp_engine_tick(g_tcp, g_now);
	return ok;
}

int
main(int argc, char **argv)
{
	static const uint16_t ports[] = { 25 };
	struct tcp_params prm = {
		.max_flows = BATCH * 2,
		.ports = ports,
		.n_ports = 1,
		.mss4 = 1460,
		.mss6 = 1440,
		.sndbuf_bytes = 16384,
		.sndbuf_pool_bytes = BATCH * 4096,
		.ooo_max_bytes = 65536,
		.ooo_pool_bytes = 1 << 20,
		.handshake_timeout_ms = 10000,
		.idle_timeout_ms = 300000,
		.lifetime_ms = 3600000,
		.rto_min_ms = 200,
		.rto_max_ms = 60000,
		.max_retries = 8,
		.halfopen_max = BATCH * 2,
		.rst_rate_per_s = 1000,
		.secret_seed = 1,
		.synack_window = SMTP_PENDING_CAP,
	};
	uint32_t sessions, done = 0, ok = 0;

	if (argc != 2 || (sessions = (uint32_t)strtoul(argv[1], NULL, 10)) == 0) {
		fprintf(stderr, "usage: bench_reject_insns SESSIONS\n");
		return 2;
	}
	pkt_local_init(&g_local, (const uint8_t[6]){ 0x02, 0, 0, 0xed, 0x9e, 0x01 });
	g_local.mtu = 1500;
	g_local.has_ip6 = true;
	memcpy(g_local.ip6, g_edge6, 16);
	g_smtp_size = (smtp_session_size() + 63) & ~(size_t)63;
	g_smtp_mem = aligned_alloc(64, g_smtp_size * BATCH);
	{
		size_t bsz = (smtp_buf_size() + 63) & ~(size_t)63;
		uint8_t *bufs = aligned_alloc(64, bsz * BATCH);

		g_buf_free = malloc(sizeof(*g_buf_free) * BATCH);
		if (!bufs || !g_buf_free) {
			fprintf(stderr, "bench_reject_insns: out of memory\n");
			return 1;
		}
		for (g_buf_nfree = 0; g_buf_nfree < BATCH; g_buf_nfree++)
			g_buf_free[g_buf_nfree] = bufs + bsz * (BATCH - 1 - g_buf_nfree);
	}
	g_tcp = tcp_engine_create(&prm, &tcp_ops, NULL, g_now);
	if (!g_smtp_mem || !g_tcp)
		return 1;
	while (done < sessions) {
		uint32_t n = sessions - done < BATCH ? sessions - done : BATCH;

		ok += run_batch(done, n);
		done += n;
	}
	printf("sessions %u ok %u segments in %.2f out %.2f per session\n", sessions, ok,
	       (double)g_segs_in / sessions, (double)g_segs_out / sessions);
	tcp_engine_destroy(g_tcp);
	free(g_smtp_mem);
	return ok == sessions ? 0 : 1;
}
