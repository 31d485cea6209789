/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/tcp/test_tcp.c — unit tests of the TCP engine (dataplane/tcp.c).
 *
 * A scripted client TCP crafts segments byte by byte, a virtual clock drives
 * the timers, a fake output captures what the engine sends and a fake app
 * records the events. No DPDK. Each test names the behaviour it checks and
 * fails without it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/tcp.h"
#include "dataplane/tcp_wire.h"
#include "tests/check.h"

struct oseg {
	uint8_t family, saddr[16], daddr[16];
	uint16_t sport, dport, win;
	uint32_t seq, ack;
	uint8_t flags;
	int mss, ws, sack, ts;
	uint32_t tsval, tsecr;
	int nsack;
	uint32_t sackb[4][2];
	uint32_t len;
	uint32_t hlen; /* TCP header with options */
	uint64_t link;
	uint8_t data[2048];
};

#define OUTQ 4096
static struct oseg g_out[OUTQ];
static int g_nout;
static bool g_output_fail;

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
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
fake_output(void *ctx, const struct tcp_out *o)
{
	struct oseg *s;
	uint32_t off, i;

	(void)ctx;
	if (g_output_fail)
		return false;
	if (g_nout >= OUTQ)
		g_nout = 0;
	s = &g_out[g_nout++];
	memset(s, 0, sizeof(*s));
	s->family = o->family;
	s->link = o->link;
	memcpy(s->saddr, o->saddr, 16);
	memcpy(s->daddr, o->daddr, 16);
	s->sport = rd16(o->hdr);
	s->dport = rd16(o->hdr + 2);
	s->seq = rd32(o->hdr + 4);
	s->ack = rd32(o->hdr + 8);
	s->flags = o->hdr[13];
	s->win = rd16(o->hdr + 14);
	s->ws = -1;
	off = (uint32_t)(o->hdr[12] >> 4) * 4;
	s->hlen = off;
	if (off != o->hdr_len || rd16(o->hdr + 16) != 0)
		abort(); /* header length must match, checksum left 0 */
	for (i = 20; i < off;) {
		uint8_t k = o->hdr[i];
		if (k == 0)
			break;
		if (k == 1) {
			i++;
			continue;
		}
		if (k == 2)
			s->mss = rd16(o->hdr + i + 2);
		if (k == 3)
			s->ws = o->hdr[i + 2];
		if (k == 4)
			s->sack = 1;
		if (k == 5)
			for (int b = 0; b < (o->hdr[i + 1] - 2) / 8 && b < 4; b++, s->nsack++) {
				s->sackb[b][0] = rd32(o->hdr + i + 2 + 8 * b);
				s->sackb[b][1] = rd32(o->hdr + i + 6 + 8 * b);
			}
		if (k == 8) {
			s->ts = 1;
			s->tsval = rd32(o->hdr + i + 2);
			s->tsecr = rd32(o->hdr + i + 6);
		}
		i += o->hdr[i + 1];
	}
	for (i = 0; i < 2; i++) {
		if (s->len + o->data_len[i] > sizeof(s->data))
			abort();
		if (o->data_len[i])
			memcpy(s->data + s->len, o->data[i], o->data_len[i]);
		s->len += o->data_len[i];
	}
	return true;
}

/* The fake app. */
enum { APP_PLAIN, APP_ECHO, APP_ABORT_IN_RECV, APP_CLOSE_IN_RECV };
struct app {
	struct tcp_conn *c;
	struct tcp_conn_info info;
	int mode;
	uint8_t rx[65536];
	uint32_t rxn;
	uint64_t rx_total, rx_sum;
	uint32_t space;
	uint32_t take; /* bytes recv() takes per call */
	uint32_t recv_calls;
	int peer_fin, closed, reason, sent, idle, idle_close;
	bool in_use;
};
#define NAPPS 16
static struct app g_apps[NAPPS];
static const char *g_greeting;
static int g_app_mode;
static bool g_refuse;
static uint32_t g_space = 65536;
static bool g_abort_in_open;
static int g_opened, g_closed;

static void *
fake_open(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *info)
{
	(void)ctx;
	if (g_refuse)
		return NULL;
	for (int i = 0; i < NAPPS; i++) {
		struct app *a = &g_apps[i];
		if (a->in_use)
			continue;
		memset(a, 0, sizeof(*a));
		a->in_use = true;
		a->c = c;
		a->info = *info;
		a->mode = g_app_mode;
		a->space = g_space;
		a->take = UINT32_MAX;
		a->reason = -1;
		g_opened++;
		if (g_greeting)
			tcp_send(c, g_greeting, (uint32_t)strlen(g_greeting));
		if (g_abort_in_open)
			tcp_abort(c);
		return a;
	}
	return NULL;
}

static uint32_t
fake_recv(void *p, const uint8_t *d, uint32_t n)
{
	struct app *a = p;

	if (a->closed)
		abort(); /* nothing after closed */
	a->recv_calls++;
	if (n > a->take)
		n = a->take;
	for (uint32_t i = 0; i < n; i++) {
		a->rx_sum = a->rx_sum * 31 + d[i];
		if (a->rxn < sizeof(a->rx))
			a->rx[a->rxn++] = d[i];
	}
	a->rx_total += n;
	if (a->mode == APP_ECHO)
		tcp_send(a->c, d, n);
	else if (a->mode == APP_ABORT_IN_RECV)
		tcp_abort(a->c);
	else if (a->mode == APP_CLOSE_IN_RECV) {
		tcp_send(a->c, "221 bye\r\n", 9);
		tcp_close(a->c);
	}
	return n;
}

static uint32_t
fake_space(void *p)
{
	return ((struct app *)p)->space;
}
static void
fake_sent(void *p)
{
	((struct app *)p)->sent++;
}
static void
fake_peer_fin(void *p)
{
	((struct app *)p)->peer_fin++;
}
static void
fake_idle(void *p)
{
	struct app *a = p;
	a->idle++;
	if (a->idle_close) {
		tcp_send(a->c, "421 4.4.2 idle\r\n", 16);
		tcp_close(a->c);
	}
}
static void
fake_closed(void *p, int reason)
{
	struct app *a = p;
	if (a->closed)
		abort(); /* closed exactly once */
	a->closed++;
	a->reason = reason;
	a->c = NULL;
	a->in_use = false;
	g_closed++;
}

static const struct tcp_ops g_ops = {
	.output = fake_output,
	.open = fake_open,
	.recv = fake_recv,
	.rcv_space = fake_space,
	.sent = fake_sent,
	.peer_fin = fake_peer_fin,
	.idle = fake_idle,
	.closed = fake_closed,
};

static const uint16_t g_ports[] = { 25, 587 };
static uint64_t g_now;

static struct tcp_params
default_params(void)
{
	struct tcp_params p = {
		.max_flows = 64,
		.ports = g_ports,
		.n_ports = 2,
		.mss4 = 1460,
		.mss6 = 1440,
		.sndbuf_bytes = 65536,
		.sndbuf_pool_bytes = 1 << 20,
		.ooo_max_bytes = 16384,
		.ooo_pool_bytes = 1 << 18,
		.handshake_timeout_ms = 10000,
		.idle_timeout_ms = 300000,
		.lifetime_ms = 600000,
		.rto_min_ms = 200,
		.rto_max_ms = 60000,
		.max_retries = 5,
		.halfopen_max = 16,
		.rst_rate_per_s = 100,
		.secret_seed = 42,
		.fin_wait2_ms = 10000,
	};
	return p;
}

static struct tcp_engine *
mk(const struct tcp_params *p)
{
	g_now = 1000000000ULL;
	g_nout = 0;
	g_output_fail = false;
	g_greeting = "220 mx.example ESMTP\r\n";
	g_app_mode = APP_PLAIN;
	g_refuse = false;
	g_space = 65536;
	g_abort_in_open = false;
	g_opened = g_closed = 0;
	memset(g_apps, 0, sizeof(g_apps));
	struct tcp_engine *e = tcp_engine_create(p, &g_ops, NULL, g_now);
	if (!e)
		abort();
	return e;
}

static struct tcp_engine *
mk_default(void)
{
	struct tcp_params p = default_params();
	return mk(&p);
}

/* Advance the virtual clock in 1 ms ticks. */
static void
advance(struct tcp_engine *e, uint32_t ms)
{
	for (uint32_t i = 0; i < ms; i++) {
		g_now += 1000;
		tcp_engine_tick(e, g_now);
	}
}

/* The scripted client. */
struct cli {
	uint8_t family, addr[16], srv[16];
	uint16_t port, sport;
	uint32_t isn, nxt; /* our next sequence number */
	uint32_t rnxt;     /* next byte expected from the server */
	bool ts;
	uint32_t tsval, tsecr;
	uint16_t win;
	uint64_t link; /* what the worker would say the frame came from */
};

struct synopt {
	int mss, ws, sack, ts;
};

static void
cli_init(struct cli *k, int family, int n)
{
	memset(k, 0, sizeof(*k));
	k->family = (uint8_t)family;
	if (family == 4) {
		uint8_t a[4] = { 198, 51, 100, (uint8_t)(10 + n) }, s[4] = { 198, 51, 100, 1 };
		memcpy(k->addr, a, 4);
		memcpy(k->srv, s, 4);
	} else {
		k->addr[0] = 0x20;
		k->addr[1] = 0x01;
		k->addr[2] = 0x0d;
		k->addr[3] = 0xb8;
		k->addr[15] = (uint8_t)(10 + n);
		memcpy(k->srv, k->addr, 16);
		k->srv[15] = 1;
	}
	k->port = (uint16_t)(40000 + n);
	k->sport = 25;
	k->isn = 1000000u * (uint32_t)(n + 1) + 0xfffff000u; /* crosses the wrap */
	k->nxt = k->isn;
	k->tsval = 5000;
	k->win = 65535;
}

static int
cli_raw(struct tcp_engine *e, struct cli *k, uint8_t flags, uint32_t seq, uint32_t ack,
	uint16_t win, const void *data, uint32_t len, const struct synopt *so)
{
	static uint8_t buf[65536 + 60];
	struct tcp_pkt pk;
	uint32_t ol = 0;
	uint8_t *o = buf + 20;

	memset(&pk, 0, sizeof(pk));
	pk.family = k->family;
	pk.link = k->link;
	memcpy(pk.saddr, k->addr, 16);
	memcpy(pk.daddr, k->srv, 16);
	if (so) {
		if (so->mss) {
			o[ol] = 2;
			o[ol + 1] = 4;
			wr16(o + ol + 2, (uint16_t)so->mss);
			ol += 4;
		}
		if (so->sack) {
			o[ol] = 1;
			o[ol + 1] = 1;
			o[ol + 2] = 4;
			o[ol + 3] = 2;
			ol += 4;
		}
		if (so->ws >= 0) {
			o[ol] = 1;
			o[ol + 1] = 3;
			o[ol + 2] = 3;
			o[ol + 3] = (uint8_t)so->ws;
			ol += 4;
		}
	}
	if ((so && so->ts) || (!so && k->ts)) {
		o[ol] = 1;
		o[ol + 1] = 1;
		o[ol + 2] = 8;
		o[ol + 3] = 10;
		wr32(o + ol + 4, k->tsval);
		wr32(o + ol + 8, k->tsecr);
		ol += 12;
	}
	wr16(buf, k->port);
	wr16(buf + 2, k->sport);
	wr32(buf + 4, seq);
	wr32(buf + 8, ack);
	buf[12] = (uint8_t)(((20 + ol) / 4) << 4);
	buf[13] = flags;
	wr16(buf + 14, win);
	wr16(buf + 16, 0);
	wr16(buf + 18, 0);
	if (len)
		memcpy(buf + 20 + ol, data, len);
	pk.tcp = buf;
	pk.len = 20 + ol + len;
	return tcp_input(e, &pk, g_now);
}

/* Send with the client's own sequence state (ACKing what it has seen). */
static int
cli_send(struct tcp_engine *e, struct cli *k, uint8_t flags, const void *d, uint32_t n)
{
	int r = cli_raw(e, k, flags | TH_ACK, k->nxt, k->rnxt, k->win, d, n, NULL);
	k->nxt += n + !!(flags & TH_FIN);
	return r;
}

static struct oseg *
last_out(void)
{
	return g_nout ? &g_out[g_nout - 1] : NULL;
}

/* Take in the server's segments: advance rnxt over in-order data, remember TS. */
static void
cli_absorb(struct cli *k, int from)
{
	for (int i = from; i < g_nout; i++) {
		struct oseg *s = &g_out[i];
		if (s->ts)
			k->tsecr = s->tsval;
		if (s->seq == k->rnxt)
			k->rnxt += s->len + !!(s->flags & TH_FIN);
	}
}

static const struct synopt SO_ALL = { 1460, 7, 1, 1 };
static const struct synopt SO_NONE = { 0, -1, 0, 0 };
static const struct synopt SO_MSS = { 1460, -1, 0, 0 };

/* Full handshake; returns the app (NULL on failure). */
static struct app *
cli_connect(struct tcp_engine *e, struct cli *k, const struct synopt *so)
{
	struct oseg *sa;
	int n0 = g_nout, opened = g_opened;

	k->ts = so->ts;
	cli_raw(e, k, TH_SYN, k->isn, 0, k->win, NULL, 0, so);
	if (g_nout != n0 + 1)
		return NULL;
	sa = last_out();
	if (sa->flags != (TH_SYN | TH_ACK) || sa->ack != k->isn + 1)
		return NULL;
	k->nxt = k->isn + 1;
	k->rnxt = sa->seq + 1;
	if (sa->ts)
		k->tsecr = sa->tsval;
	k->ts = so->ts && sa->ts;
	k->tsval++;
	n0 = g_nout;
	cli_send(e, k, 0, NULL, 0);
	cli_absorb(k, n0);
	if (g_opened != opened + 1)
		return NULL;
	for (int i = 0; i < NAPPS; i++)
		if (g_apps[i].in_use && g_apps[i].info.peer_port == k->port)
			return &g_apps[i];
	return NULL;
}

/* End a test's session unless the engine already closed it. */
static void
app_abort(struct app *a)
{
	if (a->in_use && a->c)
		tcp_abort(a->c);
}

static int
count_flags(int from, uint8_t mask, uint8_t want)
{
	int n = 0;
	for (int i = from; i < g_nout; i++)
		if ((g_out[i].flags & mask) == want)
			n++;
	return n;
}

/* ------------------------------------------------------------- tests */

static void
t_handshake_options(void)
{
	static const struct {
		int fam;
		struct synopt so;
	} rows[] = {
		{ 4, { 0, -1, 0, 0 } },    { 4, { 1460, -1, 0, 0 } }, { 4, { 1460, 7, 0, 0 } },
		{ 4, { 1460, -1, 1, 0 } }, { 4, { 1460, -1, 0, 1 } }, { 4, { 1400, 7, 1, 1 } },
		{ 6, { 0, -1, 0, 0 } },    { 6, { 1440, 2, 1, 1 } },  { 6, { 9000, 14, 0, 1 } },
		{ 4, { 536, 20, 1, 0 } },
	};
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		struct tcp_engine *e = mk_default();
		struct cli k;
		struct oseg *sa;
		struct app *a;
		const struct synopt *so = &rows[r].so;
		uint32_t peer_mss, big = 5000;
		static uint8_t blob[5000];

		cli_init(&k, rows[r].fam, 1);
		k.ts = so->ts;
		cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, so);
		CHECK_EQ_INT(g_nout, 1);
		sa = last_out();
		CHECK_EQ_INT(sa->flags, TH_SYN | TH_ACK);
		CHECK_EQ_INT(sa->ack, k.isn + 1);
		CHECK_EQ_INT(sa->mss, rows[r].fam == 4 ? 1460 : 1440);
		CHECK_EQ_INT(sa->ws, so->ws >= 0 ? 7 : -1);
		CHECK_EQ_INT(sa->sack, so->sack);
		CHECK_EQ_INT(sa->ts, so->ts);
		if (so->ts)
			CHECK_EQ_INT(sa->tsecr, k.tsval);
		CHECK(!memcmp(sa->daddr, k.addr, 16) && !memcmp(sa->saddr, k.srv, 16));
		CHECK_EQ_INT(sa->dport, k.port);
		CHECK_EQ_INT(tcp_engine_active(e), 1);
		/* ACK: established, app opened, greeting leaves at once */
		k.nxt = k.isn + 1;
		k.rnxt = sa->seq + 1;
		k.tsecr = sa->tsval;
		g_nout = 0;
		cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt, 1000, NULL, 0, NULL);
		CHECK_EQ_INT(g_opened, 1);
		a = &g_apps[0];
		CHECK_EQ_INT(a->info.family, rows[r].fam);
		CHECK_EQ_INT(a->info.peer_port, k.port);
		CHECK_EQ_INT(a->info.local_port, 25);
		CHECK(!memcmp(a->info.peer, k.addr, 16));
		CHECK(!a->info.from_cookie);
		CHECK_EQ_INT(g_nout, 1);
		CHECK_EQ_INT(g_out[0].len, strlen(g_greeting));
		CHECK_EQ_INT(g_out[0].seq, k.rnxt);
		CHECK_EQ_INT(g_out[0].ts, so->ts);
		/* window field: scaled by 2^7 when both offered window scaling */
		CHECK_EQ_INT(g_out[0].win, so->ws >= 0 ? 65536 / 128 : 65535);
		/* segment size: min(peer MSS, ours); the peer's window (scaled by its shift) bounds it */
		peer_mss = so->mss ? (uint32_t)so->mss : (rows[r].fam == 4 ? 536u : 1220u);
		if (peer_mss > (rows[r].fam == 4 ? 1460u : 1440u))
			peer_mss = rows[r].fam == 4 ? 1460u : 1440u;
		k.rnxt += g_out[0].len;
		g_nout = 0;
		cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt, 60000, NULL, 0, NULL);
		tcp_send(a->c, blob, big);
		{
			uint32_t sum = 0,
				 wnd = so->ws >= 0 ? 60000u << (so->ws > 14 ? 14 : so->ws) : 60000u;
			for (int i = 0; i < g_nout; i++) {
				CHECK(g_out[i].len <= peer_mss);
				sum += g_out[i].len;
			}
			CHECK_EQ_INT(sum, big < wnd ? big : wnd);
		}
		app_abort(a);
		CHECK_EQ_INT(tcp_engine_active(e), 0);
		tcp_engine_destroy(e);
	}
}

static void
t_mss_clamp_v6(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;

	p.mss6 = 1000; /* below the IPv6 minimum: raised to 1220 */
	e = mk(&p);
	cli_init(&k, 6, 1);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	CHECK_EQ_INT(last_out()->mss, 1220);
	tcp_engine_destroy(e);
}

static struct tcp_engine *
mk_cookie_only(void)
{
	struct tcp_params p = default_params();
	p.halfopen_max = 0;
	return mk(&p);
}

static void
t_cookie_valid(void)
{
	/* with timestamps: wscale and SACK ride in the TSval */
	struct tcp_engine *e = mk_cookie_only();
	struct cli k;
	struct app *a;
	static uint8_t blob[3000];
	struct synopt so = { 1460, 2, 1, 1 };

	cli_init(&k, 6, 1);
	k.win = 100;
	a = cli_connect(e, &k, &so);
	CHECK(a != NULL);
	if (!a)
		return;
	CHECK(a->info.from_cookie);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_sent, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_validated, 1);
	CHECK_EQ_INT(g_out[0].ws, 7);
	CHECK_EQ_INT(g_out[0].sack, 1);
	/* greeting went out with the ACK's processing */
	CHECK_EQ_INT(g_nout, 2);
	CHECK_EQ_INT(g_out[1].len, strlen(g_greeting));
	/* the peer's shift (2) was recovered: window 100 means 400 bytes */
	g_nout = 0;
	cli_send(e, &k, 0, NULL, 0);
	tcp_send(a->c, blob, 3000);
	{
		uint32_t sum = 0;
		for (int i = 0; i < g_nout; i++)
			sum += g_out[i].len;
		CHECK_EQ_INT(sum, 400);
		CHECK(g_out[0].ts);
	}
	app_abort(a);
	tcp_engine_destroy(e);

	/* without timestamps: the cookie SYN-ACK offers MSS only */
	e = mk_cookie_only();
	cli_init(&k, 4, 2);
	{
		struct synopt nots = { 1460, 7, 1, 0 };
		a = cli_connect(e, &k, &nots);
	}
	CHECK(a != NULL);
	CHECK_EQ_INT(g_out[0].ws, -1);
	CHECK_EQ_INT(g_out[0].sack, 0);
	CHECK_EQ_INT(g_out[0].ts, 0);
	CHECK_EQ_INT(g_out[0].mss, 1460);
	CHECK_EQ_INT(tcp_engine_active(e), 1);
	if (a)
		app_abort(a);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

/* SYN to a cookie-only engine; returns the cookie (our ISN). */
static uint32_t
cookie_syn(struct tcp_engine *e, struct cli *k, const struct synopt *so)
{
	cli_raw(e, k, TH_SYN, k->isn, 0, 1000, NULL, 0, so);
	k->nxt = k->isn + 1;
	k->rnxt = last_out()->seq + 1;
	k->tsecr = last_out()->tsval;
	k->ts = so->ts;
	return last_out()->seq;
}

static void
t_cookie_forged(void)
{
	struct tcp_engine *e = mk_cookie_only();
	struct cli k, other;
	uint32_t ck;
	int r;

	cli_init(&k, 4, 1);
	ck = cookie_syn(e, &k, &SO_NONE);
	CHECK_EQ_INT(tcp_engine_active(e), 0);    /* a SYN takes no memory */
	for (uint32_t bit = 0; bit < 32; bit++) { /* any flipped bit fails */
		g_nout = 0;
		r = cli_raw(e, &k, TH_ACK, k.nxt, (ck ^ (1u << bit)) + 1, 1000, NULL, 0, NULL);
		CHECK_EQ_INT(r, TCP_IN_STRAY);
		CHECK_EQ_INT(g_nout, 1);
		CHECK_EQ_INT(last_out()->flags, TH_RST);
		CHECK_EQ_INT(last_out()->seq, (ck ^ (1u << bit)) + 1);
	}
	/* right cookie, wrong peer ISN or another source port */
	r = cli_raw(e, &k, TH_ACK, k.nxt + 1, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(r, TCP_IN_STRAY);
	other = k;
	other.port++;
	r = cli_raw(e, &other, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(r, TCP_IN_STRAY);
	CHECK_EQ_INT(g_opened, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_rejected, 34);
	/* and the genuine one still works */
	r = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(r, TCP_IN_COOKIE_OK);
	CHECK_EQ_INT(g_opened, 1);
	app_abort(&g_apps[0]);
	tcp_engine_destroy(e);
}

static void
t_ipv4_addr_tail_ignored(void)
{
	/* IPv4 addresses live in the first 4 bytes; whatever follows is noise */
	struct tcp_engine *e = mk_cookie_only();
	struct cli k;
	uint32_t ck;
	int d;

	cli_init(&k, 4, 1);
	memset(k.addr + 4, 0xaa, 12);
	memset(k.srv + 4, 0x11, 12);
	ck = cookie_syn(e, &k, &SO_NONE);
	CHECK(!memcmp(last_out()->daddr, k.addr, 4));
	CHECK_EQ_INT(last_out()->daddr[4], 0);
	memset(k.addr + 4, 0x55, 12);
	memset(k.srv + 4, 0x22, 12);
	d = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(d, TCP_IN_COOKIE_OK);
	memset(k.addr + 4, 0x77, 12);
	k.rnxt = ck + 1;
	d = cli_send(e, &k, 0, "EHLO\r\n", 6);
	CHECK_EQ_INT(d, TCP_IN_CONN);
	CHECK_EQ_INT(g_apps[0].rxn, 6);
	app_abort(&g_apps[0]);
	tcp_engine_destroy(e);
}

static void
t_cookie_age(void)
{
	static const struct {
		uint32_t syn_at_s, ack_after_s;
		bool ok;
	} rows[] = {
		{ 0, 1, true },     /* same slot */
		{ 10, 70, true },   /* next slot: after one key rotation */
		{ 60, 10, true },   /* crosses a rotation */
		{ 10, 130, false }, /* two rotations: key gone */
		{ 0, 200, false },  /* expired */
	};
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		struct tcp_engine *e = mk_cookie_only();
		struct cli k;
		uint32_t ck;
		int d;

		struct cli flood;

		cli_init(&k, 6, 1);
		cli_init(&flood, 6, 2);
		g_now += (uint64_t)rows[r].syn_at_s * 1000000;
		tcp_engine_tick(e, g_now);
		ck = cookie_syn(e, &k, &SO_ALL);
		g_now += (uint64_t)rows[r].ack_after_s * 1000000 - 1000000;
		tcp_engine_tick(e, g_now);
		cookie_syn(e, &flood, &SO_ALL); /* still handing out cookies */
		g_now += 1000000;
		tcp_engine_tick(e, g_now);
		k.tsval += 100;
		d = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
		CHECK_EQ_INT(d, rows[r].ok ? TCP_IN_COOKIE_OK : TCP_IN_STRAY);
		CHECK_EQ_INT(g_opened, rows[r].ok ? 1 : 0);
		if (rows[r].ok && g_apps[0].c)
			app_abort(&g_apps[0]);
		CHECK_EQ_INT(tcp_engine_active(e), 0);
		tcp_engine_destroy(e);
	}
}

/* Every segment goes back where the peer's latest frame came from: the
 * worker keeps no neighbour table (dataplane/l23.h). */
static void
t_link_follows_peer(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e = mk(&p);
	struct cli k;
	struct app *a;
	int n0;

	cli_init(&k, 6, 1);
	k.link = 0xa1;
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	CHECK_EQ_INT(last_out()->link, 0xa1); /* half-open SYN-ACK */
	g_nout = 0;
	advance(e, 1000);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->link, 0xa1); /* retransmitted on a timer */
	tcp_engine_destroy(e);
	e = mk(&p);
	cli_init(&k, 6, 2);
	k.link = 0xb2;
	a = cli_connect(e, &k, &SO_ALL);
	CHECK(a != NULL);
	CHECK_EQ_INT(last_out()->link, 0xb2); /* the greeting */
	k.link = 0xc3;                        /* the router changed */
	n0 = g_nout;
	cli_send(e, &k, TH_PSH, "EHLO x\r\n", 8);
	tcp_send(a->c, "250 ok\r\n", 8);
	advance(e, 1);
	CHECK(g_nout > n0);
	CHECK_EQ_INT(last_out()->link, 0xc3);
	n0 = g_nout;
	advance(e, 5000); /* unacked: RTO resends */
	CHECK(g_nout > n0);
	CHECK_EQ_INT(last_out()->link, 0xc3);
	app_abort(a);
	tcp_engine_destroy(e);

	/* Stateless answers: a cookie SYN-ACK, a RST to a closed port. */
	p.halfopen_max = 0;
	e = mk(&p);
	cli_init(&k, 4, 3);
	k.link = 0xd4;
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_sent, 1);
	CHECK_EQ_INT(last_out()->link, 0xd4);
	k.sport = 9999;
	k.link = 0xe5;
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(last_out()->flags & TH_RST, TH_RST);
	CHECK_EQ_INT(last_out()->link, 0xe5);
	tcp_engine_destroy(e);
}

static void
t_halfopen_lost_ack(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	uint32_t iss;
	int d;

	cli_init(&k, 6, 1);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	iss = last_out()->seq;
	CHECK_EQ_INT(tcp_engine_counters(e)->halfopen_created, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_sent, 0);
	/* the final ACK is lost; the SYN-ACK comes again after the initial RTO */
	g_nout = 0;
	advance(e, 999);
	CHECK_EQ_INT(g_nout, 0);
	advance(e, 1);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->flags, TH_SYN | TH_ACK);
	CHECK_EQ_INT(last_out()->seq, iss);
	CHECK_EQ_INT(tcp_engine_counters(e)->synack_retransmits, 1);
	/* the client answers the retransmission; the greeting follows at once */
	k.nxt = k.isn + 1;
	k.rnxt = iss + 1;
	k.ts = true;
	k.tsecr = last_out()->tsval;
	g_nout = 0;
	d = cli_send(e, &k, 0, NULL, 0);
	CHECK_EQ_INT(d, TCP_IN_CONN);
	CHECK_EQ_INT(g_opened, 1);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].len, strlen(g_greeting));
	/* a retransmitted SYN in SYN_RCVD is answered with the same SYN-ACK */
	app_abort(&g_apps[0]);
	cli_init(&k, 4, 2);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	iss = last_out()->seq;
	g_nout = 0;
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->seq, iss);
	tcp_engine_destroy(e);
}

/* A client whose final ACK was lost is established and, SMTP being
 * server-speaks-first, silent: only our SYN-ACK retransmissions make it
 * resend that ACK. Within the handshake timeout (10 s) there are five of
 * them, not three (1, 2, 4 s), so a lossy path rarely leaves a client
 * waiting for a greeting that never comes (found by the lab's fault test). */
static void
t_halfopen_synack_schedule(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	uint32_t iss;
	int d;

	cli_init(&k, 6, 1);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	iss = last_out()->seq;
	g_nout = 0;
	advance(e, 9900);
	CHECK_EQ_INT(tcp_engine_counters(e)->synack_retransmits, 5);
	CHECK_EQ_INT(count_flags(0, 0xff, TH_SYN | TH_ACK), 5);
	CHECK(g_out[0].seq == iss && g_out[4].seq == iss);
	/* the ACK answering the fifth one gets through */
	k.nxt = k.isn + 1;
	k.rnxt = iss + 1;
	k.ts = true;
	k.tsecr = last_out()->tsval;
	d = cli_send(e, &k, 0, NULL, 0);
	CHECK_EQ_INT(d, TCP_IN_CONN);
	CHECK_EQ_INT(g_opened, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_handshake, 0);
	app_abort(&g_apps[0]);
	/* a longer handshake timeout keeps the plain doubling longer */
	tcp_engine_destroy(e);
	{
		struct tcp_params p = default_params();
		p.handshake_timeout_ms = 60000;
		e = mk(&p);
	}
	cli_init(&k, 6, 2);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	g_nout = 0;
	advance(e, 15000); /* 1, 3, 7, 15 s */
	CHECK_EQ_INT(g_nout, 4);
	advance(e, 12000); /* then every 12 s */
	CHECK_EQ_INT(g_nout, 5);
	tcp_engine_destroy(e);
}

static void
t_handshake_timeout(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;

	p.handshake_timeout_ms = 3000;
	p.max_retries = 10;
	e = mk(&p);
	cli_init(&k, 4, 1);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(tcp_engine_active(e), 1);
	advance(e, 2999);
	CHECK_EQ_INT(tcp_engine_active(e), 1);
	advance(e, 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_handshake, 1);
	CHECK_EQ_INT(g_opened, 0);
	/* the ACK arrives after all: the half-open ISN is not a cookie */
	k.rnxt = g_out[0].seq + 1;
	CHECK_EQ_INT(cli_raw(e, &k, TH_ACK, k.isn + 1, k.rnxt, 1000, NULL, 0, NULL), TCP_IN_STRAY);
	CHECK_EQ_INT(last_out()->flags, TH_RST);
	CHECK_EQ_INT(g_opened, 0);
	tcp_engine_destroy(e);
}

static struct app *
est(struct tcp_engine *e, struct cli *k, int n, const struct synopt *so)
{
	struct app *a;
	cli_init(k, 4, n);
	a = cli_connect(e, k, so);
	if (!a)
		abort();
	return a;
}

static void
t_data_in_order_coalesced(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a;

	g_app_mode = APP_ECHO;
	a = est(e, &k, 1, &SO_ALL);
	g_nout = 0;
	cli_send(e, &k, TH_PSH, "EHLO a\r\n", 8);
	CHECK_EQ_INT(a->rxn, 8);
	CHECK(!memcmp(a->rx, "EHLO a\r\n", 8));
	/* the echo and the ACK are one segment: no separate pure ACK */
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].len, 8);
	CHECK_EQ_INT(g_out[0].ack, k.nxt);
	CHECK(g_out[0].flags & TH_ACK);
	/* plain app: a pure ACK */
	a->mode = APP_PLAIN;
	g_nout = 0;
	cli_send(e, &k, TH_PSH, "MAIL", 4);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].len, 0);
	CHECK_EQ_INT(g_out[0].ack, k.nxt);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_reorder_and_duplicate(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_ALL);
	uint32_t base = k.nxt;

	g_nout = 0;
	cli_raw(e, &k, TH_ACK, base + 5, k.rnxt, k.win, "BBBBB", 5, NULL);
	cli_raw(e, &k, TH_ACK, base + 15, k.rnxt, k.win, "DDDDD", 5, NULL);
	CHECK_EQ_INT(a->rxn, 0);
	CHECK_EQ_INT(g_nout, 2);
	CHECK_EQ_INT(g_out[0].ack, base); /* duplicate ACKs for the gap */
	CHECK_EQ_INT(g_out[1].ack, base);
	/* with SACK blocks, the latest block first (RFC 2018) */
	CHECK_EQ_INT(g_out[0].nsack, 1);
	CHECK_EQ_INT(g_out[0].sackb[0][0], base + 5);
	CHECK_EQ_INT(g_out[0].sackb[0][1], base + 10);
	CHECK_EQ_INT(g_out[1].nsack, 2);
	CHECK_EQ_INT(g_out[1].sackb[0][0], base + 15);
	CHECK_EQ_INT(g_out[1].sackb[0][1], base + 20);
	CHECK_EQ_INT(g_out[1].sackb[1][0], base + 5);
	CHECK(g_out[1].ts);
	cli_raw(e, &k, TH_ACK, base, k.rnxt, k.win, "AAAAA", 5, NULL);
	CHECK_EQ_INT(a->rxn, 10);
	CHECK(!memcmp(a->rx, "AAAAABBBBB", 10));
	CHECK_EQ_INT(last_out()->ack, base + 10);
	CHECK_EQ_INT(last_out()->nsack, 1); /* only the D block is left */
	CHECK_EQ_INT(last_out()->sackb[0][0], base + 15);
	/* overlapping retransmission fills the second gap */
	cli_raw(e, &k, TH_ACK, base + 8, k.rnxt, k.win, "BBCCCCCDD", 9, NULL);
	CHECK_EQ_INT(a->rxn, 20);
	CHECK(!memcmp(a->rx, "AAAAABBBBBCCCCCDDDDD", 20));
	CHECK_EQ_INT(last_out()->ack, base + 20);
	CHECK_EQ_INT(last_out()->nsack, 0);
	/* a duplicate is ACKed, not delivered again */
	g_nout = 0;
	cli_raw(e, &k, TH_ACK, base, k.rnxt, k.win, "AAAAA", 5, NULL);
	CHECK_EQ_INT(a->rxn, 20);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].ack, base + 20);
	app_abort(a);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_ooo_limit(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;
	struct app *a;
	uint32_t base;

	p.ooo_max_bytes = 2 * 2048;
	e = mk(&p);
	a = est(e, &k, 1, &SO_NONE);
	base = k.nxt;
	cli_raw(e, &k, TH_ACK, base + 10, k.rnxt, k.win, "x", 1, NULL);
	cli_raw(e, &k, TH_ACK, base + 20, k.rnxt, k.win, "y", 1, NULL);
	cli_raw(e, &k, TH_ACK, base + 30, k.rnxt, k.win, "z", 1, NULL);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_ooo_limit, 1);
	cli_raw(e, &k, TH_ACK, base, k.rnxt, k.win, "0123456789", 10, NULL);
	CHECK_EQ_INT(a->rxn, 11);
	CHECK_EQ_INT(last_out()->ack, base + 11);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_retransmit_backoff_cap(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;
	struct app *a;
	uint32_t t = 0, last = 0, gaps[8], ng = 0;
	int seen;

	p.rto_max_ms = 1000;
	e = mk(&p);
	a = est(e, &k, 1, &SO_NONE); /* handshake RTT ~0: RTO = rto_min */
	cli_send(e, &k, 0, NULL, 0); /* ack the greeting */
	g_nout = 0;
	tcp_send(a->c, "250 ok\r\n", 8);
	CHECK_EQ_INT(g_nout, 1);
	seen = g_nout;
	while (t < 10000 && !a->closed) {
		advance(e, 1);
		t++;
		if (g_nout > seen) {
			if (g_out[seen].flags & TH_RST)
				break;
			CHECK_EQ_INT(g_out[seen].len, 8);
			CHECK_EQ_INT(g_out[seen].seq, g_out[0].seq);
			if (ng < 8)
				gaps[ng++] = t - last;
			last = t;
			seen = g_nout;
		}
	}
	CHECK_EQ_INT(ng, 5);
	CHECK_EQ_INT(gaps[0], 200);
	CHECK_EQ_INT(gaps[1], 400);
	CHECK_EQ_INT(gaps[2], 800);
	CHECK_EQ_INT(gaps[3], 1000);
	CHECK_EQ_INT(gaps[4], 1000);
	CHECK_EQ_INT(t - last, 1000); /* the 6th expiry aborts */
	CHECK(last_out()->flags & TH_RST);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_TIMEOUT_RTO);
	CHECK_EQ_INT(tcp_engine_counters(e)->retransmits, 5);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_rto, 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_loss_recovery_and_rtt(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_MSS);
	static uint8_t blob[4 * 1460];
	uint32_t una;

	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)i;
	cli_send(e, &k, 0, NULL, 0);
	una = k.rnxt;
	g_nout = 0;
	tcp_send(a->c, blob, sizeof(blob));
	CHECK_EQ_INT(g_nout, 4);
	/* segment 1 lost; 2..4 arrive: three duplicate ACKs -> fast retransmit */
	for (int i = 0; i < 3; i++)
		cli_raw(e, &k, TH_ACK, k.nxt, una, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(tcp_engine_counters(e)->fast_retransmits, 1);
	CHECK_EQ_INT(g_nout, 5);
	CHECK_EQ_INT(g_out[4].seq, una);
	CHECK(!memcmp(g_out[4].data, blob, 1460));
	/* all acked 30 ms later: RTT measured (Karn skips the resent one) */
	advance(e, 30);
	cli_raw(e, &k, TH_ACK, k.nxt, una + sizeof(blob), k.win, NULL, 0, NULL);
	CHECK(a->sent >= 1);
	CHECK_EQ_INT(tcp_send_space(a->c), 65536);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_rto_from_rtt(void)
{
	struct tcp_engine *e = mk_cookie_only(); /* no handshake RTT sample */
	struct cli k;
	struct app *a;
	uint32_t t = 0;
	int n0;

	cli_init(&k, 4, 1);
	a = cli_connect(e, &k, &SO_NONE);
	CHECK(a != NULL);
	if (!a)
		return;
	advance(e, 300);
	cli_send(e, &k, 0, NULL, 0); /* greeting acked after 300 ms */
	/* SRTT 300, RTTVAR 150: RTO = 300 + 4 * 150 = 900 ms (RFC 6298 2.2) */
	g_nout = 0;
	tcp_send(a->c, "250 ok\r\n", 8);
	n0 = g_nout;
	while (g_nout == n0 && t < 5000) {
		advance(e, 1);
		t++;
	}
	CHECK_EQ_INT(t, 900);
	CHECK_EQ_INT(last_out()->len, 8);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_persist_peer_gone(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);

	k.win = 0;
	cli_send(e, &k, 0, NULL, 0);
	tcp_send(a->c, "250 ok\r\n", 8);
	advance(e, 200 + 400 + 800 + 1600 + 3200 + 6399);
	CHECK(!a->closed);
	CHECK_EQ_INT(tcp_engine_counters(e)->persist_probes, 5);
	advance(e, 1); /* the 6th expiry: nobody answers */
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_TIMEOUT_RTO);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_ooo_pool_empty(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k1, k2;
	struct app *a1, *a2;

	p.ooo_pool_bytes = 2048; /* one chunk for the whole engine */
	e = mk(&p);
	a1 = est(e, &k1, 1, &SO_NONE);
	a2 = est(e, &k2, 2, &SO_NONE);
	cli_raw(e, &k1, TH_ACK, k1.nxt + 10, k1.rnxt, k1.win, "later", 5, NULL);
	cli_raw(e, &k2, TH_ACK, k2.nxt + 10, k2.rnxt, k2.win, "later", 5, NULL);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_ooo_pool, 1);
	/* in-order data still flows for both */
	cli_send(e, &k2, 0, "0123456789", 10);
	CHECK_EQ_INT(a2->rxn, 10);
	cli_send(e, &k1, 0, "0123456789", 10);
	CHECK_EQ_INT(a1->rxn, 15); /* the kept segment joined */
	/* the chunk came back: conn 2's retransmission can be kept now */
	cli_raw(e, &k2, TH_ACK, k2.nxt + 10, k2.rnxt, k2.win, "again", 5, NULL);
	cli_send(e, &k2, 0, "abcdefghij", 10);
	CHECK_EQ_INT(a2->rxn, 25);
	app_abort(a1);
	app_abort(a2);
	tcp_engine_destroy(e);
}

static void
t_cookie_ack_with_data_and_fin(void)
{
	/* A client that speaks first and closes, on the cookie path: the ACK
	 * that validates the cookie opens the connection, but its payload and
	 * FIN are not acted on; they count once the peer sends them again. */
	struct tcp_engine *e = mk_cookie_only();
	struct cli k;
	uint32_t ck;
	struct app *a;

	g_greeting = NULL;
	cli_init(&k, 6, 1);
	ck = cookie_syn(e, &k, &SO_NONE);
	g_nout = 0;
	cli_raw(e, &k, TH_ACK | TH_FIN, k.nxt, ck + 1, 1000, "HELO x\r\n", 8, NULL);
	CHECK_EQ_INT(g_opened, 1);
	a = &g_apps[0];
	CHECK_EQ_INT(a->recv_calls, 0);
	CHECK_EQ_INT(a->rxn, 0);
	CHECK_EQ_INT(a->peer_fin, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookie_data_dropped, 1);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "ESTABLISHED"), 0);
	tcp_send(a->c, "220 hi\r\n", 8);
	CHECK(g_nout >= 1);
	CHECK_EQ_INT(last_out()->ack, k.nxt); /* nothing of it ACKed */
	/* the retransmission is taken */
	cli_raw(e, &k, TH_ACK | TH_FIN, k.nxt, ck + 1, 1000, "HELO x\r\n", 8, NULL);
	CHECK_EQ_INT(a->rxn, 8);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(last_out()->ack, k.nxt + 9);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "CLOSE_WAIT"), 0);
	tcp_close(a->c);
	CHECK(last_out()->flags & TH_FIN);
	cli_raw(e, &k, TH_ACK, k.nxt + 9, ck + 1 + 8 + 1, 1000, NULL, 0, NULL);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_NORMAL);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_zero_window_persist(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);
	int n0;

	k.win = 0;
	cli_send(e, &k, 0, NULL, 0); /* ack the greeting, window 0 */
	g_nout = 0;
	CHECK_EQ_INT(tcp_send(a->c, "250 ok\r\n", 8), 8);
	CHECK_EQ_INT(g_nout, 0); /* the window is shut */
	advance(e, 200);
	CHECK_EQ_INT(g_nout, 1); /* persist probe */
	CHECK_EQ_INT(g_out[0].len, 0);
	CHECK_EQ_INT(g_out[0].seq, k.rnxt - 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->persist_probes, 1);
	cli_send(e, &k, 0, NULL, 0); /* still zero */
	advance(e, 400);
	CHECK_EQ_INT(tcp_engine_counters(e)->persist_probes, 2);
	/* probes answered do not exhaust the retry cap (5) */
	n0 = g_nout;
	for (int t = 0; t < 240000; t++) {
		advance(e, 1);
		if (g_nout > n0) {
			cli_send(e, &k, 0, NULL, 0);
			n0 = g_nout;
		}
	}
	CHECK(!a->closed);
	CHECK(tcp_engine_counters(e)->persist_probes > 6);
	/* the window opens: data flows */
	n0 = g_nout;
	k.win = 1000;
	cli_send(e, &k, 0, NULL, 0);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].len, 8);
	CHECK_EQ_INT(g_out[n0].seq, k.rnxt);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_receive_window(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a;
	static uint8_t blob[14600];
	uint32_t edge;
	int n0;

	g_space = 3000;              /* less than the SYN-ACK offered */
	a = est(e, &k, 1, &SO_NONE); /* no window scaling: exact windows */
	g_nout = 0;
	cli_send(e, &k, 0, "x", 1);
	/* the window shown keeps the SYN-ACK's right edge (never shrinks) */
	edge = g_out[0].ack + g_out[0].win;
	CHECK_EQ_INT(edge, k.isn + 1 + 14600);
	a->space = 0; /* a slow consumer */
	while (k.nxt != edge) {
		uint32_t n = edge - k.nxt > 1460 ? 1460 : edge - k.nxt;
		cli_send(e, &k, 0, blob, n);
		CHECK_EQ_INT(last_out()->ack + last_out()->win, edge);
	}
	CHECK_EQ_INT(last_out()->win, 0);
	CHECK_EQ_INT(a->rxn, 14600);
	/* beyond the window: not delivered, ACKed with window 0 */
	g_nout = 0;
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt, k.win, "zz", 2, NULL);
	CHECK_EQ_INT(a->rxn, 14600);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].win, 0);
	CHECK_EQ_INT(g_out[0].ack, edge);
	/* the app drains: an update from zero */
	a->space = 100;
	n0 = g_nout;
	tcp_rcv_window_update(a->c);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].win, 100);
	CHECK_EQ_INT(g_out[n0].flags, TH_ACK);
	n0 = g_nout;
	a->space = 120;
	tcp_rcv_window_update(a->c); /* +20: less than an MSS or half: no */
	CHECK_EQ_INT(g_nout, n0);
	a->space = 20000;
	tcp_rcv_window_update(a->c); /* an MSS more: yes */
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(last_out()->win, 20000);
	CHECK_EQ_INT(tcp_engine_counters(e)->window_updates, 2);
	/* and the peer's data flows again */
	cli_send(e, &k, 0, "zz", 2);
	CHECK_EQ_INT(a->rxn, 14602);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_big_transfer(void)
{
	/* 20 MB through a consumer whose space varies; every byte in order */
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_ALL);
	static uint8_t blob[1460];
	uint64_t total = 20u << 20, sent = 0, sum = 0;
	uint32_t step = 0;

	cli_send(e, &k, 0, NULL, 0);
	while (sent < total) {
		struct oseg *o = last_out();
		uint32_t edge = o->ack + ((uint32_t)o->win << 7);
		if (k.nxt == edge || step % 7 == 0) { /* app drains */
			a->space = 1460 * (1 + step % 40);
			a->rxn = 0;
			tcp_rcv_window_update(a->c);
			o = last_out();
			edge = o->ack + ((uint32_t)o->win << 7);
			if (k.nxt == edge) {
				a->space = 65536;
				tcp_rcv_window_update(a->c);
				continue;
			}
		}
		uint32_t n = edge - k.nxt;
		if (n > 1460)
			n = 1460;
		if (n > total - sent)
			n = (uint32_t)(total - sent);
		for (uint32_t i = 0; i < n; i++) {
			blob[i] = (uint8_t)((sent + i) * 7 + ((sent + i) >> 11));
			sum = sum * 31 + blob[i];
		}
		cli_send(e, &k, 0, blob, n);
		sent += n;
		step++;
		CHECK(last_out()->ack == k.nxt);
		if (last_out()->ack != k.nxt)
			break;
	}
	CHECK_EQ_INT(a->rx_total, total);
	CHECK(a->rx_sum == sum);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_rst_rules(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);
	int n0;

	/* in window but not exact: challenge ACK, the session lives */
	g_nout = 0;
	cli_raw(e, &k, TH_RST, k.nxt + 100, 0, 0, NULL, 0, NULL);
	CHECK(!a->closed);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].flags, TH_ACK);
	CHECK_EQ_INT(g_out[0].ack, k.nxt);
	CHECK_EQ_INT(tcp_engine_counters(e)->challenge_acks, 1);
	/* out of window: silently dropped */
	g_nout = 0;
	cli_raw(e, &k, TH_RST, k.nxt + 1000000, 0, 0, NULL, 0, NULL);
	cli_raw(e, &k, TH_RST, k.nxt - 1, 0, 0, NULL, 0, NULL);
	CHECK(!a->closed);
	CHECK_EQ_INT(g_nout, 0);
	/* challenge ACKs are rate-limited per connection */
	for (int i = 0; i < 30; i++)
		cli_raw(e, &k, TH_RST, k.nxt + 5, 0, 0, NULL, 0, NULL);
	CHECK_EQ_INT(g_nout, 9);
	CHECK_EQ_INT(tcp_engine_counters(e)->challenge_acks_limited, 21);
	/* the session still works */
	n0 = g_nout;
	cli_send(e, &k, 0, "NOOP\r\n", 6);
	CHECK_EQ_INT(a->rxn, 6);
	CHECK_EQ_INT(g_nout, n0 + 1);
	/* exact: reset */
	cli_raw(e, &k, TH_RST, k.nxt, 0, 0, NULL, 0, NULL);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_RESET);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_syn_on_established(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);

	g_nout = 0;
	cli_raw(e, &k, TH_SYN, k.nxt + 10, 0, 1000, NULL, 0, &SO_NONE);
	CHECK(!a->closed);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].flags, TH_ACK);
	CHECK_EQ_INT(g_out[0].ack, k.nxt);
	/* a SYN far out of window also gets an ACK and nothing else */
	cli_raw(e, &k, TH_SYN, k.isn - 5000000, 0, 1000, NULL, 0, &SO_NONE);
	CHECK(!a->closed);
	CHECK_EQ_INT(last_out()->flags, TH_ACK);
	CHECK_EQ_INT(tcp_engine_active(e), 1);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_injection(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_ALL);

	/* ACK of data never sent: dropped with its payload */
	g_nout = 0;
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt + 100000, k.win, "RSET\r\n", 6, NULL);
	CHECK_EQ_INT(a->rxn, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_bad_ack, 1);
	/* ACK far behind (older than the window): dropped */
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt - (1u << 30), k.win, "RSET\r\n", 6, NULL);
	CHECK_EQ_INT(a->rxn, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_old_ack, 1);
	/* data far outside the receive window */
	cli_raw(e, &k, TH_ACK, k.nxt + 3000000, k.rnxt, k.win, "QUIT\r\n", 6, NULL);
	cli_raw(e, &k, TH_ACK, k.nxt - 3000000, k.rnxt, k.win, "QUIT\r\n", 6, NULL);
	CHECK_EQ_INT(a->rxn, 0);
	/* answers to out-of-window segments are rate-limited per connection */
	g_nout = 0;
	for (int i = 0; i < 50; i++)
		cli_raw(e, &k, TH_ACK, k.nxt + 3000000, k.rnxt, k.win, "QUIT\r\n", 6, NULL);
	CHECK(g_nout <= 10);
	CHECK(g_nout >= 5);
	CHECK_EQ_INT(a->rxn, 0);
	advance(e, 1000);
	/* PAWS: an old timestamp is refused */
	k.tsval = 10;
	cli_send(e, &k, 0, "DATA\r\n", 6);
	CHECK_EQ_INT(a->rxn, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_paws, 1);
	k.nxt -= 6;
	k.tsval = 9000;
	cli_send(e, &k, 0, "HELO\r\n", 6);
	CHECK_EQ_INT(a->rxn, 6);
	CHECK(!a->closed);
	app_abort(a);
	tcp_engine_destroy(e);
}

/* Data we already have, arriving again (a duplicate on the wire, or the
 * peer resending because our ACK was lost), is ACKed every time: only that
 * ACK stops the peer's retransmissions. Under the shared 10-per-second
 * budget a lossy path stalled each such sender for its RTO (found by the
 * lab's fault test). Out-of-window segments ahead of the window stay under
 * the budget. */
static void
t_old_data_always_acked(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_ALL);
	uint32_t base = k.nxt;

	cli_send(e, &k, 0, "MAIL FROM:<a@b>\r\n", 17);
	CHECK_EQ_INT(a->rxn, 17);
	g_nout = 0;
	for (int i = 0; i < 30; i++) {
		k.tsval++;
		cli_raw(e, &k, TH_ACK | TH_PSH, base, k.rnxt, k.win, "MAIL FROM:<a@b>\r\n", 17,
			NULL);
	}
	CHECK_EQ_INT(g_nout, 30);
	CHECK_EQ_INT(count_flags(0, 0xff, TH_ACK), 30);
	CHECK_EQ_INT(g_out[29].ack, base + 17);
	CHECK_EQ_INT(a->rxn, 17); /* never delivered twice */
	CHECK_EQ_INT(tcp_engine_counters(e)->challenge_acks_limited, 0);
	/* a retransmitted FIN is old too */
	cli_send(e, &k, TH_FIN, NULL, 0);
	CHECK_EQ_INT(a->peer_fin, 1);
	g_nout = 0;
	for (int i = 0; i < 20; i++)
		cli_raw(e, &k, TH_ACK | TH_FIN, base + 17, k.rnxt, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(g_nout, 20);
	CHECK_EQ_INT(a->peer_fin, 1);
	/* segments ahead of the window keep their budget */
	g_nout = 0;
	for (int i = 0; i < 30; i++)
		cli_raw(e, &k, TH_ACK, k.nxt + 3000000, k.rnxt, k.win, "QUIT\r\n", 6, NULL);
	CHECK(g_nout <= 10);
	CHECK(tcp_engine_counters(e)->challenge_acks_limited >= 20);
	app_abort(a);
	tcp_engine_destroy(e);
}

/* A frame from another MAC that knows only the 4-tuple (a blind RST, data
 * outside the window, a forged ACK) does not move where our replies go: the
 * challenge ACK it provokes must reach the real peer (RFC 5961). An accepted
 * segment from a new MAC does move them. */
static void
t_link_not_moved_by_forgery(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a;
	int n0;

	cli_init(&k, 6, 1);
	k.link = 0xb2;
	a = cli_connect(e, &k, &SO_ALL);
	CHECK(a != NULL);
	k.link = 0xee; /* the forger */
	n0 = g_nout;
	cli_raw(e, &k, TH_RST, k.nxt + 100, 0, 0, NULL, 0, NULL);
	CHECK_EQ_INT(g_nout, n0 + 1);         /* challenge ACK ... */
	CHECK_EQ_INT(last_out()->link, 0xb2); /* ... to the real peer */
	cli_raw(e, &k, TH_ACK, k.nxt + 3000000, k.rnxt, k.win, "RSET\r\n", 6, NULL);
	CHECK_EQ_INT(last_out()->link, 0xb2);
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt + 100000, k.win, "RSET\r\n", 6, NULL);
	CHECK_EQ_INT(last_out()->link, 0xb2);
	cli_raw(e, &k, TH_SYN, k.nxt + 5, 0, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(last_out()->link, 0xb2);
	CHECK_EQ_INT(a->rxn, 0);
	n0 = g_nout;
	tcp_send(a->c, "250 ok\r\n", 8);
	advance(e, 1);
	CHECK(g_nout > n0);
	CHECK_EQ_INT(last_out()->link, 0xb2);
	k.link = 0xc3; /* the router changed */
	cli_send(e, &k, TH_PSH, "NOOP\r\n", 6);
	CHECK_EQ_INT(a->rxn, 6);
	CHECK_EQ_INT(last_out()->link, 0xc3);
	app_abort(a);
	tcp_engine_destroy(e);
}

static void
t_fin_peer_first(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);
	uint32_t fin;

	cli_send(e, &k, TH_FIN, "QUIT\r\n", 6);
	CHECK_EQ_INT(a->rxn, 6);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(last_out()->ack, k.nxt); /* the FIN is acknowledged */
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "CLOSE_WAIT"), 0);
	/* the peer did not hear our ACK: its FIN again is ACKed, not taken twice */
	g_nout = 0;
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt - 1, k.rnxt, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(g_out[0].ack, k.nxt);
	CHECK_EQ_INT(a->peer_fin, 1);
	g_nout = 0;
	tcp_send(a->c, "221 bye\r\n", 9);
	tcp_close(a->c);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "LAST_ACK"), 0);
	CHECK_EQ_INT(count_flags(0, TH_FIN, TH_FIN), 1);
	fin = last_out()->seq + last_out()->len;
	/* and once more in LAST_ACK */
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt - 1, k.rnxt, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(last_out()->ack, k.nxt);
	CHECK_EQ_INT(last_out()->flags, TH_ACK);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "LAST_ACK"), 0);
	g_nout = 0;
	/* our FIN is lost once: it comes again */
	advance(e, 1000);
	CHECK(count_flags(0, TH_FIN, TH_FIN) >= 2);
	cli_raw(e, &k, TH_ACK, k.nxt, fin + 1, k.win, NULL, 0, NULL);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_NORMAL);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_fin_server_first_no_time_wait(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a;
	int n0, d;

	g_app_mode = APP_CLOSE_IN_RECV;
	a = est(e, &k, 1, &SO_ALL);
	n0 = g_nout;
	cli_send(e, &k, 0, "QUIT\r\n", 6);
	/* 221 and FIN leave together, ACKing QUIT */
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].flags & (TH_FIN | TH_ACK), TH_FIN | TH_ACK);
	CHECK_EQ_INT(g_out[n0].len, 9);
	cli_absorb(&k, n0);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "FIN_WAIT_1"), 0);
	cli_send(e, &k, 0, NULL, 0); /* ACK of the FIN */
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "FIN_WAIT_2"), 0);
	n0 = g_nout;
	cli_send(e, &k, TH_FIN, NULL, 0);
	CHECK_EQ_INT(g_nout, n0 + 1); /* final ACK */
	CHECK_EQ_INT(g_out[n0].flags, TH_ACK);
	CHECK_EQ_INT(g_out[n0].ack, k.nxt);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_NORMAL);
	CHECK_EQ_INT(tcp_engine_active(e), 0); /* no TIME_WAIT TCB */
	/* our final ACK was lost: the retransmitted FIN is ACKed statelessly */
	n0 = g_nout;
	d = cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt - 1, k.rnxt, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(d, TCP_IN_STRAY);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].flags, TH_ACK);
	CHECK_EQ_INT(g_out[n0].ack, k.nxt);
	CHECK_EQ_INT(g_out[n0].seq, k.rnxt);
	CHECK_EQ_INT(tcp_engine_counters(e)->stray_fin_acked, 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_fin_simultaneous_and_combined(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);
	int n0;

	/* CLOSING: both FINs cross */
	cli_send(e, &k, 0, NULL, 0);
	tcp_close(a->c);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "FIN_WAIT_1"), 0);
	n0 = g_nout;
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt, k.rnxt, k.win, NULL, 0,
		NULL); /* does not ack our FIN */
	k.nxt++;
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "CLOSING"), 0);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(last_out()->ack, k.nxt);
	CHECK(g_nout > n0);
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt + 1, k.win, NULL, 0, NULL);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_NORMAL);
	CHECK_EQ_INT(tcp_engine_active(e), 0);

	/* FIN_WAIT_1 + FIN that also acks ours: straight to closed */
	a = est(e, &k, 2, &SO_NONE);
	cli_send(e, &k, 0, NULL, 0);
	tcp_close(a->c);
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt, k.rnxt + 1, k.win, NULL, 0, NULL);
	CHECK(a->closed);
	CHECK_EQ_INT(last_out()->ack, k.nxt + 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);

	/* a FIN beyond a gap is not taken */
	a = est(e, &k, 3, &SO_NONE);
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt + 5, k.rnxt, k.win, "abc", 3, NULL);
	CHECK_EQ_INT(a->peer_fin, 0);
	CHECK_EQ_INT(last_out()->ack, k.nxt);
	cli_raw(e, &k, TH_FIN | TH_ACK, k.nxt, k.rnxt, k.win, "01234abc", 8, NULL);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(a->rxn, 8);
	CHECK_EQ_INT(last_out()->ack, k.nxt + 9);
	app_abort(a);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_timeouts(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;
	struct app *a;
	int n0;

	p.idle_timeout_ms = 5000;
	p.lifetime_ms = 20000;
	p.fin_wait2_ms = 3000;
	e = mk(&p);

	/* idle: the app says 421 and closes */
	a = est(e, &k, 1, &SO_NONE);
	a->idle_close = 1;
	cli_send(e, &k, 0, NULL, 0);
	advance(e, 2000);
	cli_send(e, &k, 0, "NOOP\r\n", 6); /* data restarts the idle clock */
	n0 = g_nout;
	advance(e, 4999);
	CHECK_EQ_INT(a->idle, 0);
	advance(e, 1);
	CHECK_EQ_INT(a->idle, 1);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].len, 16);
	CHECK(g_out[n0].flags & TH_FIN);
	CHECK(!a->closed);
	app_abort(a);

	/* idle: the app does nothing, the engine aborts */
	a = est(e, &k, 2, &SO_NONE);
	advance(e, 5000);
	CHECK_EQ_INT(a->idle, 1);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_TIMEOUT_IDLE);
	CHECK(last_out()->flags & TH_RST);

	/* FIN_WAIT_2 bound */
	a = est(e, &k, 3, &SO_NONE);
	tcp_close(a->c);
	cli_send(e, &k, 0, NULL, 0);
	cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt + 1, k.win, NULL, 0, NULL);
	CHECK_EQ_INT(strcmp(tcp_conn_state_name(a->c), "FIN_WAIT_2"), 0);
	advance(e, 3000);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_TIMEOUT_FIN_WAIT2);

	/* lifetime: a busy session still ends */
	a = est(e, &k, 4, &SO_NONE);
	for (int i = 0; i < 7 && !a->closed; i++) {
		cli_send(e, &k, 0, "NOOP\r\n", 6);
		advance(e, 2500);
	}
	CHECK(!a->closed);
	cli_send(e, &k, 0, "NOOP\r\n", 6);
	advance(e, 2499);
	CHECK(!a->closed);
	advance(e, 1);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_TIMEOUT_LIFETIME);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_idle, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_fin_wait2, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->timeout_lifetime, 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_flow_table_full(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k1, k2, k3;
	struct app *a1, *a2;
	uint32_t ck;
	int d;

	p.max_flows = 2;
	e = mk(&p);
	a1 = est(e, &k1, 1, &SO_NONE);
	a2 = est(e, &k2, 2, &SO_NONE);
	cli_init(&k3, 4, 3);
	d = cli_raw(e, &k3, TH_SYN, k3.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(d, TCP_IN_SYN_COOKIE); /* still answered */
	CHECK_EQ_INT(tcp_engine_counters(e)->tcb_exhausted, 1);
	ck = last_out()->seq;
	d = cli_raw(e, &k3, TH_ACK, k3.isn + 1, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(d, TCP_IN_COOKIE_NO_TCB);
	CHECK_EQ_INT(last_out()->flags, TH_RST);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookie_no_tcb, 1);
	/* established sessions keep going */
	cli_send(e, &k1, 0, "a", 1);
	cli_send(e, &k2, 0, "b", 1);
	CHECK_EQ_INT(a1->rxn, 1);
	CHECK_EQ_INT(a2->rxn, 1);
	app_abort(a1);
	/* a slot is free again: the next cookie handshake gets a TCB */
	cli_init(&k3, 4, 4);
	d = cli_raw(e, &k3, TH_SYN, k3.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(d, TCP_IN_SYN_HALFOPEN);
	app_abort(a2);
	tcp_engine_destroy(e);
}

static void
t_halfopen_full_uses_cookies(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;

	p.halfopen_max = 3;
	e = mk(&p);
	for (int i = 0; i < 50; i++) { /* a SYN flood */
		cli_init(&k, 6, i);
		cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	}
	CHECK_EQ_INT(tcp_engine_active(e), 3);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_sent, 47);
	CHECK_EQ_INT(tcp_engine_counters(e)->halfopen_full, 47);
	advance(e, 10000);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_send_pool_empty(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k1, k2;
	struct app *a1, *a2;
	static uint8_t blob[4096];
	uint32_t n;

	p.sndbuf_pool_bytes = 3 * 2048;
	e = mk(&p);
	g_greeting = NULL;
	a1 = est(e, &k1, 1, &SO_NONE);
	a2 = est(e, &k2, 2, &SO_NONE);
	CHECK_EQ_INT(tcp_send(a1->c, blob, 4096), 4096);
	n = tcp_send(a2->c, blob, 4096);
	CHECK_EQ_INT(n, 2048);
	CHECK_EQ_INT(tcp_send_space(a2->c), 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->sndbuf_pool_empty, 1);
	/* conn 1's data is acknowledged: chunks return, conn 2 is told */
	cli_absorb(&k1, 0);
	cli_send(e, &k1, 0, NULL, 0);
	CHECK_EQ_INT(a1->sent, 1);
	advance(e, 10);
	CHECK(a2->sent >= 1);
	CHECK(tcp_send_space(a2->c) >= 2048);
	CHECK_EQ_INT(tcp_send(a2->c, blob, 2048), 2048);
	/* session 1 keeps working */
	cli_send(e, &k1, 0, "x", 1);
	CHECK_EQ_INT(a1->rxn, 1);
	app_abort(a1);
	app_abort(a2);
	tcp_engine_destroy(e);
}

static void
t_closed_port_and_rate_limit(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	int d, rst = 0;

	cli_init(&k, 4, 1);
	k.sport = 80;
	for (int i = 0; i < 150; i++) {
		d = cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
		CHECK_EQ_INT(d, TCP_IN_CLOSED_PORT);
	}
	rst = count_flags(0, TH_RST, TH_RST);
	CHECK_EQ_INT(rst, 100);
	CHECK_EQ_INT(last_out()->ack, k.isn + 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->rst_rate_limited, 50);
	advance(e, 100); /* 10 more tokens */
	for (int i = 0; i < 20; i++)
		cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	CHECK_EQ_INT(count_flags(0, TH_RST, TH_RST), 110);
	/* a RST is never answered */
	g_nout = 0;
	advance(e, 1000);
	cli_raw(e, &k, TH_RST, 1, 0, 0, NULL, 0, NULL);
	k.sport = 25;
	cli_raw(e, &k, TH_RST, 1, 0, 0, NULL, 0, NULL);
	CHECK_EQ_INT(g_nout, 0);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_callbacks_reentrancy(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a;
	int n0;

	/* abort inside recv: closed once, TCB freed after the stack unwinds */
	g_app_mode = APP_ABORT_IN_RECV;
	a = est(e, &k, 1, &SO_NONE);
	n0 = g_nout;
	cli_send(e, &k, 0, "EHLO\r\n", 6);
	CHECK(a->closed);
	CHECK_EQ_INT(a->reason, TCP_CLOSE_ABORT);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK(last_out()->flags & TH_RST);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	/* the app refuses the connection: RST, no closed() */
	g_app_mode = APP_PLAIN;
	g_refuse = true;
	cli_init(&k, 4, 2);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	k.rnxt = last_out()->seq + 1;
	cli_raw(e, &k, TH_ACK, k.isn + 1, k.rnxt, 1000, NULL, 0, NULL);
	CHECK(last_out()->flags & TH_RST);
	CHECK_EQ_INT(tcp_engine_counters(e)->refused, 1);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	/* the app aborts from inside open(): it still gets its closed() */
	g_refuse = false;
	g_abort_in_open = true;
	cli_init(&k, 4, 4);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_NONE);
	k.rnxt = last_out()->seq + 1;
	cli_raw(e, &k, TH_ACK, k.isn + 1, k.rnxt, 1000, NULL, 0, NULL);
	g_abort_in_open = false;
	CHECK_EQ_INT(g_opened, 2);
	CHECK_EQ_INT(g_closed, 2);
	CHECK(last_out()->flags & TH_RST);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	/* output refused by the port: counted and recovered by the RTO */
	g_refuse = false;
	a = est(e, &k, 3, &SO_NONE);
	cli_send(e, &k, 0, NULL, 0);
	g_output_fail = true;
	tcp_send(a->c, "250 x\r\n", 7);
	g_output_fail = false;
	CHECK_EQ_INT(tcp_engine_counters(e)->output_failed, 1);
	n0 = g_nout;
	advance(e, 200);
	CHECK_EQ_INT(g_nout, n0 + 1);
	CHECK_EQ_INT(g_out[n0].len, 7);
	app_abort(a);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

static void
t_create_and_destroy(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;

	tcp_engine_destroy(NULL);
	p.max_flows = 0;
	e = tcp_engine_create(&p, &g_ops, NULL, 0);
	CHECK(e == NULL);
	p = default_params();
	p.n_ports = 0;
	CHECK(tcp_engine_create(&p, &g_ops, NULL, 0) == NULL);
	CHECK(tcp_conn_size() <= 256);
	CHECK_EQ_INT(tcp_counter_count * sizeof(uint64_t), sizeof(struct tcp_counters));
	CHECK_EQ_INT(strcmp(tcp_counter_names[0], "opened"), 0);
}

/* Cookie ACKs are honoured only while the edge hands out cookies. */
static void
t_cookie_inactive(void)
{
	struct tcp_engine *e;
	struct cli k;
	uint32_t ck;
	int d;

	/* a valid cookie, but no cookie SYN-ACK has left for 9 s */
	e = mk_cookie_only();
	cli_init(&k, 4, 1);
	ck = cookie_syn(e, &k, &SO_NONE);
	advance(e, 9000);
	g_nout = 0;
	d = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(d, TCP_IN_STRAY);
	CHECK_EQ_INT(g_opened, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_inactive, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_validated, 0);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->flags, TH_RST);
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);

	/* within the bound it is honoured */
	e = mk_cookie_only();
	cli_init(&k, 4, 1);
	ck = cookie_syn(e, &k, &SO_NONE);
	advance(e, 7000);
	d = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, NULL, 0, NULL);
	CHECK_EQ_INT(d, TCP_IN_COOKIE_OK);
	CHECK_EQ_INT(g_opened, 1);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_inactive, 0);
	app_abort(&g_apps[0]);
	tcp_engine_destroy(e);

	/* An engine that has sent no cookie at all: the same seed and clock
	 * give the same key, so this cookie would pass its hash. */
	e = mk_cookie_only();
	cli_init(&k, 4, 1);
	ck = cookie_syn(e, &k, &SO_NONE);
	tcp_engine_destroy(e);
	e = mk_default();
	g_nout = 0;
	d = cli_raw(e, &k, TH_ACK, k.nxt, ck + 1, 1000, "MAIL FROM:<a@b>\r\n", 17, NULL);
	CHECK_EQ_INT(d, TCP_IN_STRAY);
	CHECK_EQ_INT(g_opened, 0);
	CHECK_EQ_INT(tcp_engine_counters(e)->cookies_inactive, 1);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->flags, TH_RST);
	tcp_engine_destroy(e);
}

/* All 29 bits above the MSS index carry the hash: over many cookies for
 * one 4-tuple each of them takes both values; the low 3 stay the MSS. */
static void
t_cookie_bits(void)
{
	struct tcp_engine *e = mk_cookie_only();
	struct cli k;
	uint32_t ones = 0, zeros = 0, first = 0;

	for (uint32_t i = 0; i < 64; i++) {
		uint32_t ck;
		cli_init(&k, 4, 1);
		k.isn += i * 7919u;
		ck = cookie_syn(e, &k, &SO_MSS);
		if (i == 0)
			first = ck;
		ones |= ck;
		zeros |= ~ck;
		CHECK_EQ_INT(ck & 7, first & 7);
	}
	CHECK_EQ_INT(ones & ~7u, ~7u);
	CHECK_EQ_INT(zeros & ~7u, ~7u);
	CHECK_EQ_INT(first & 7, 7); /* 1460: the last MSS of the table */
	CHECK_EQ_INT(tcp_engine_active(e), 0);
	tcp_engine_destroy(e);
}

/* The app takes fewer bytes than delivered: the ACK covers what it took,
 * and the peer's retransmission delivers the rest, in order; held
 * out-of-order data is handed up only as far as the app takes it. */
static void
t_app_takes_part(void)
{
	struct tcp_engine *e = mk_default();
	struct cli k;
	struct app *a = est(e, &k, 1, &SO_NONE);
	uint32_t base = k.nxt;

	a->take = 5;
	g_nout = 0;
	cli_raw(e, &k, TH_ACK, base, k.rnxt, k.win, "0123456789", 10, NULL);
	CHECK_EQ_INT(a->rxn, 5);
	CHECK_EQ_INT(g_nout, 1);
	CHECK_EQ_INT(last_out()->ack, base + 5);
	CHECK_EQ_INT(tcp_engine_counters(e)->drop_app_full, 1);
	/* a later segment is held out of order and not ACKed */
	cli_raw(e, &k, TH_ACK, base + 10, k.rnxt, k.win, "abcdefghij", 10, NULL);
	CHECK_EQ_INT(a->rxn, 5);
	CHECK_EQ_INT(last_out()->ack, base + 5);
	/* the retransmission from the ACK: 3 of 5 taken, the held data waits */
	a->take = 3;
	cli_raw(e, &k, TH_ACK, base + 5, k.rnxt, k.win, "56789", 5, NULL);
	CHECK_EQ_INT(a->rxn, 8);
	CHECK_EQ_INT(last_out()->ack, base + 8);
	/* the gap filled; the held chunk is taken only in part */
	a->take = 4;
	cli_raw(e, &k, TH_ACK, base + 8, k.rnxt, k.win, "89", 2, NULL);
	CHECK_EQ_INT(a->rxn, 14);
	CHECK_EQ_INT(last_out()->ack, base + 14);
	/* one byte more and the drain resumes inside the held chunk */
	a->take = UINT32_MAX;
	cli_raw(e, &k, TH_ACK, base + 14, k.rnxt, k.win, "e", 1, NULL);
	CHECK_EQ_INT(a->rxn, 20);
	CHECK_EQ_INT(last_out()->ack, base + 20);
	CHECK(!memcmp(a->rx, "0123456789abcdefghij", 20));
	/* a FIN behind bytes not taken waits for them */
	a->take = 1;
	cli_raw(e, &k, TH_ACK | TH_FIN, base + 20, k.rnxt, k.win, "xy", 2, NULL);
	CHECK_EQ_INT(a->rxn, 21);
	CHECK_EQ_INT(a->peer_fin, 0);
	CHECK_EQ_INT(last_out()->ack, base + 21);
	a->take = UINT32_MAX;
	cli_raw(e, &k, TH_ACK | TH_FIN, base + 21, k.rnxt, k.win, "y", 1, NULL);
	CHECK_EQ_INT(a->rxn, 22);
	CHECK_EQ_INT(a->peer_fin, 1);
	CHECK_EQ_INT(last_out()->ack, base + 23);
	CHECK(!memcmp(a->rx + 20, "xy", 2));
	app_abort(a);
	tcp_engine_destroy(e);
}

/* The window never offers more than the app takes: the SYN-ACK offers
 * params.synack_window, scaled windows are rounded down, and a shrinking
 * space keeps the edge already announced. */
static void
t_window_not_beyond_app(void)
{
	struct tcp_params p = default_params();
	struct tcp_engine *e;
	struct cli k;
	struct app *a;
	uint32_t edge;

	p.synack_window = 512;
	e = mk(&p);
	g_space = 1000;
	cli_init(&k, 4, 1);
	a = cli_connect(e, &k, &SO_ALL);
	CHECK(a != NULL);
	if (!a)
		return;
	CHECK_EQ_INT(g_out[0].flags, TH_SYN | TH_ACK);
	CHECK_EQ_INT(g_out[0].win, 512);
	/* 1,000 bytes at 2^7: 7 units (896 bytes), not 8 (1,024) */
	CHECK_EQ_INT(last_out()->win, 7);
	edge = last_out()->ack + (7u << 7);
	a->space = 100;
	cli_send(e, &k, 0, "abc", 3);
	CHECK((int32_t)(last_out()->ack + ((uint32_t)last_out()->win << 7) - edge) >= 0);
	CHECK_EQ_INT(a->rxn, 3);
	app_abort(a);
	tcp_engine_destroy(e);

	/* no parameter: 14,600 as before */
	e = mk_default();
	cli_init(&k, 4, 1);
	cli_raw(e, &k, TH_SYN, k.isn, 0, 1000, NULL, 0, &SO_ALL);
	CHECK_EQ_INT(last_out()->win, 14600);
	tcp_engine_destroy(e);
}

/* Every segment's IP packet (IP header, TCP header with options, payload)
 * fits the MTU the MSS was derived from (1,500: mss4 1460, mss6 1440),
 * with timestamps and with SACK blocks, first sends and resends alike. */
static int
oversize_from(int from, uint32_t iph, uint32_t *maxlen)
{
	int bad = 0;

	for (int i = from; i < g_nout; i++) {
		if (iph + g_out[i].hlen + g_out[i].len > 1500)
			bad++;
		if (g_out[i].len > *maxlen)
			*maxlen = g_out[i].len;
	}
	return bad;
}

static void
t_segments_fit_mtu(void)
{
	for (int fam = 4; fam <= 6; fam += 2) {
		struct tcp_engine *e = mk_default();
		struct cli k;
		struct app *a;
		static uint8_t blob[40000];
		uint32_t iph = fam == 4 ? 20 : 40, maxlen = 0, base;
		int n0;

		cli_init(&k, fam, 1);
		a = cli_connect(e, &k, &SO_ALL);
		CHECK(a != NULL);
		if (!a)
			continue;
		cli_send(e, &k, 0, NULL, 0);
		/* timestamps alone: 12 bytes of options */
		n0 = g_nout;
		CHECK_EQ_INT(tcp_send(a->c, blob, 20000), 20000);
		CHECK(g_nout > n0 + 1);
		CHECK(g_out[n0].ts);
		CHECK_EQ_INT(oversize_from(n0, iph, &maxlen), 0);
		CHECK_EQ_INT(maxlen, 1500 - iph - 20 - 12);
		cli_absorb(&k, n0);
		cli_send(e, &k, 0, NULL, 0);
		/* SACK blocks too: three out-of-order pieces, 40 bytes of options */
		base = k.nxt;
		cli_raw(e, &k, TH_ACK, base + 10, k.rnxt, k.win, "x", 1, NULL);
		cli_raw(e, &k, TH_ACK, base + 20, k.rnxt, k.win, "y", 1, NULL);
		cli_raw(e, &k, TH_ACK, base + 30, k.rnxt, k.win, "z", 1, NULL);
		n0 = g_nout;
		maxlen = 0;
		tcp_send(a->c, blob, 20000);
		CHECK(g_nout > n0 + 1);
		CHECK_EQ_INT(g_out[n0].nsack, 3);
		CHECK_EQ_INT(oversize_from(n0, iph, &maxlen), 0);
		CHECK_EQ_INT(maxlen, 1500 - iph - 20 - 40);
		/* resends: the retransmission timer and three duplicate ACKs */
		n0 = g_nout;
		advance(e, 3000);
		CHECK(g_nout > n0);
		CHECK_EQ_INT(oversize_from(n0, iph, &maxlen), 0);
		n0 = g_nout;
		for (int i = 0; i < 3; i++)
			cli_raw(e, &k, TH_ACK, k.nxt, k.rnxt, k.win, NULL, 0, NULL);
		CHECK_EQ_INT(oversize_from(n0, iph, &maxlen), 0);
		app_abort(a);
		tcp_engine_destroy(e);
	}
}

/* ------------------------------------------------------------- main */

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "handshake_options", t_handshake_options },
	{ "mss_clamp_v6", t_mss_clamp_v6 },
	{ "cookie_valid", t_cookie_valid },
	{ "cookie_forged", t_cookie_forged },
	{ "cookie_age_and_rotation", t_cookie_age },
	{ "ipv4_addr_tail_ignored", t_ipv4_addr_tail_ignored },
	{ "halfopen_lost_ack", t_halfopen_lost_ack },
	{ "link_follows_peer", t_link_follows_peer },
	{ "halfopen_synack_schedule", t_halfopen_synack_schedule },
	{ "handshake_timeout", t_handshake_timeout },
	{ "data_in_order_coalesced", t_data_in_order_coalesced },
	{ "reorder_and_duplicate", t_reorder_and_duplicate },
	{ "ooo_limit", t_ooo_limit },
	{ "retransmit_backoff_cap", t_retransmit_backoff_cap },
	{ "loss_recovery_and_rtt", t_loss_recovery_and_rtt },
	{ "rto_from_rtt", t_rto_from_rtt },
	{ "zero_window_persist", t_zero_window_persist },
	{ "persist_peer_gone", t_persist_peer_gone },
	{ "ooo_pool_empty", t_ooo_pool_empty },
	{ "cookie_ack_with_data_and_fin", t_cookie_ack_with_data_and_fin },
	{ "receive_window", t_receive_window },
	{ "big_transfer_20MB", t_big_transfer },
	{ "rst_rules", t_rst_rules },
	{ "syn_on_established", t_syn_on_established },
	{ "injection", t_injection },
	{ "old_data_always_acked", t_old_data_always_acked },
	{ "link_not_moved_by_forgery", t_link_not_moved_by_forgery },
	{ "fin_peer_first", t_fin_peer_first },
	{ "fin_server_first_no_time_wait", t_fin_server_first_no_time_wait },
	{ "fin_simultaneous_and_combined", t_fin_simultaneous_and_combined },
	{ "timeouts", t_timeouts },
	{ "flow_table_full", t_flow_table_full },
	{ "halfopen_full_uses_cookies", t_halfopen_full_uses_cookies },
	{ "send_pool_empty", t_send_pool_empty },
	{ "closed_port_and_rate_limit", t_closed_port_and_rate_limit },
	{ "callbacks_reentrancy", t_callbacks_reentrancy },
	{ "create_and_destroy", t_create_and_destroy },
	{ "cookie_inactive", t_cookie_inactive },
	{ "cookie_all_bits_hash", t_cookie_bits },
	{ "app_takes_part", t_app_takes_part },
	{ "window_not_beyond_app", t_window_not_beyond_app },
	{ "segments_fit_mtu", t_segments_fit_mtu },
};

int
main(int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (argc > 1 && strcmp(argv[1], tests[i].name))
			continue;
		check_case_begin();
		tests[i].fn();
		printf("%s %s\n", check_case_end() ? "ok  " : "FAIL", tests[i].name);
	}
	printf("TCB size %u bytes\n", tcp_conn_size());
	return check_done();
}
