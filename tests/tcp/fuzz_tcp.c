/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/tcp/fuzz_tcp.c — libFuzzer target for the TCP engine.
 *
 * The input is a program: each op byte picks a client (one of four peers)
 * and an action — a SYN with fuzzed options, the handshake ACK, in-order or
 * displaced data, RST, FIN, a raw segment with fuzzed header fields, a time
 * step, or an app action (send, close, abort, window change). The clients
 * track what the server sends so their segments are mostly plausible, which
 * takes the engine deep into its states. Checks beyond the sanitizers:
 * every payload byte handed to the app is the byte the client put at that
 * sequence number (so reordering, trimming and OOO reassembly never
 * corrupt), closed() comes exactly once and nothing after it, every
 * emitted header is well formed, and once all timers have run out no TCB is
 * left (no leak).
 */
#include <stdlib.h>
#include <string.h>

#include "dataplane/tcp.h"

#define NCLI 4
#define NAPP 16

struct fcli {
	uint8_t addr[16];
	uint16_t port;
	uint32_t isn, nxt, rnxt, tsval, tsecr;
	bool ts;
	uint8_t fam;
};

struct fapp {
	struct tcp_conn *c;
	uint32_t irs;
	uint64_t off;
	uint32_t space;
	uint8_t mode;
	bool live;
};

static struct fcli cli[NCLI];
static struct fapp apps[NAPP];
static uint64_t now;
static int opened, closed_n;
static uint8_t pkt[4096];

static uint8_t
stream_byte(uint32_t seq)
{
	uint32_t x = seq * 2654435761u;
	return (uint8_t)(x >> 24);
}

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
f_output(void *ctx, const struct tcp_out *o)
{
	uint32_t off = (uint32_t)(o->hdr[12] >> 4) * 4, len = o->data_len[0] + o->data_len[1];
	uint16_t dport = rd16(o->hdr + 2);

	(void)ctx;
	if (off != o->hdr_len || off < 20 || off > 60 || len > 2048 || rd16(o->hdr + 16))
		abort();
	for (int i = 0; i < 2; i++)
		if (o->data_len[i])
			(void)*(volatile const uint8_t *)&o->data[i][o->data_len[i] - 1];
	for (int i = 0; i < NCLI; i++) {
		struct fcli *k = &cli[i];
		uint32_t seq = rd32(o->hdr + 4), end = seq + len + !!(o->hdr[13] & 1);
		if (k->port != dport)
			continue;
		for (uint32_t j = 20; j + 10 <= off; j++)
			if (o->hdr[j] == 8 && o->hdr[j + 1] == 10) {
				k->tsecr = rd32(o->hdr + j + 2);
				break;
			}
		if (o->hdr[13] & 2) /* SYN-ACK */
			k->rnxt = seq + 1;
		else if (!(o->hdr[13] & 4) && (int32_t)(end - k->rnxt) > 0 &&
			 (int32_t)(seq - k->rnxt) <= 0)
			k->rnxt = end;
	}
	return (o->hdr[14] & 3) != 3 || (o->hdr[15] != 0x7f); /* sometimes "mbufs short" */
}

static void *
f_open(void *ctx, struct tcp_conn *c, const struct tcp_conn_info *info)
{
	(void)ctx;
	if (info->peer_port == 40003 && (opened & 1))
		return NULL; /* refusal path */
	for (int i = 0; i < NAPP; i++) {
		if (apps[i].live)
			continue;
		memset(&apps[i], 0, sizeof(apps[i]));
		apps[i].live = true;
		apps[i].c = c;
		apps[i].irs = info->irs;
		apps[i].space = 65536;
		apps[i].mode = (uint8_t)(info->peer_port & 3);
		opened++;
		tcp_send(c, "220 fuzz ESMTP\r\n", 16);
		return &apps[i];
	}
	return NULL;
}

/* Mode 0 takes at most 1,000 bytes a call: the engine must keep the rest
 * unACKed and deliver it again, still in order. */
static uint32_t
f_recv(void *p, const uint8_t *d, uint32_t n)
{
	struct fapp *a = p;

	if (!a->live)
		abort();
	if (a->mode == 0 && n > 1000)
		n = 1000;
	for (uint32_t i = 0; i < n; i++)
		if (d[i] != stream_byte(a->irs + 1 + (uint32_t)(a->off + i)))
			abort(); /* delivered bytes must be the peer's, in order */
	a->off += n;
	if (a->mode == 1)
		tcp_send(a->c, d, n > 300 ? 300 : n);
	else if (a->mode == 2 && a->off > 4000)
		tcp_abort(a->c);
	else if (a->mode == 3 && a->off > 100) {
		tcp_send(a->c, "221 bye\r\n", 9);
		tcp_close(a->c);
	}
	return n;
}

static uint32_t
f_space(void *p)
{
	return ((struct fapp *)p)->space;
}
static void
f_sent(void *p)
{
	if (!((struct fapp *)p)->live)
		abort();
}
static void
f_peer_fin(void *p)
{
	struct fapp *a = p;
	if (!a->live)
		abort();
	if (a->mode != 0)
		tcp_close(a->c);
}
static void
f_idle(void *p)
{
	struct fapp *a = p;
	if (a->mode & 1) {
		tcp_send(a->c, "421 idle\r\n", 10);
		tcp_close(a->c);
	}
}
static void
f_closed(void *p, int reason)
{
	struct fapp *a = p;
	if (!a->live || reason < 0 || reason >= TCP_CLOSE_REASON_COUNT)
		abort();
	a->live = false;
	a->c = NULL;
	closed_n++;
}

static const struct tcp_ops ops = {
	.output = f_output,
	.open = f_open,
	.recv = f_recv,
	.rcv_space = f_space,
	.sent = f_sent,
	.peer_fin = f_peer_fin,
	.idle = f_idle,
	.closed = f_closed,
};

static void
input(struct tcp_engine *e, struct fcli *k, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win,
      uint32_t len, const uint8_t *opts, uint32_t optlen)
{
	struct tcp_pkt p;
	uint32_t ol = optlen & ~3u;

	if (ol > 40)
		ol = 40;
	if (len > sizeof(pkt) - 60)
		len = sizeof(pkt) - 60;
	memset(&p, 0, sizeof(p));
	p.family = k->fam;
	memcpy(p.saddr, k->addr, 16);
	p.daddr[0] = k->fam == 4 ? 198 : 0x20;
	p.daddr[1] = k->fam == 4 ? 51 : 0x01;
	p.daddr[3] = 1;
	wr16(pkt, k->port);
	wr16(pkt + 2, 25);
	wr32(pkt + 4, seq);
	wr32(pkt + 8, ack);
	pkt[12] = (uint8_t)(((20 + ol) / 4) << 4);
	pkt[13] = flags;
	wr16(pkt + 14, win);
	wr32(pkt + 16, 0);
	if (ol)
		memcpy(pkt + 20, opts, ol);
	for (uint32_t i = 0; i < len; i++)
		pkt[20 + ol + i] = stream_byte(seq + i);
	p.tcp = pkt;
	p.len = 20 + ol + len;
	tcp_input(e, &p, now);
}

static uint32_t
ts_opt(struct fcli *k, uint8_t *o)
{
	if (!k->ts)
		return 0;
	o[0] = 1;
	o[1] = 1;
	o[2] = 8;
	o[3] = 10;
	wr32(o + 4, k->tsval);
	wr32(o + 8, k->tsecr);
	return 12;
}

static struct fapp *
app_for(struct fcli *k)
{
	for (int i = 0; i < NAPP; i++)
		if (apps[i].live && apps[i].c) {
			/* the conn belongs to k if k's port matches its open info;
			 * we stored none, so use index parity as a cheap mapping */
			if ((uint32_t)i % NCLI == (uint32_t)(k - cli))
				return &apps[i];
		}
	for (int i = 0; i < NAPP; i++)
		if (apps[i].live && apps[i].c)
			return &apps[i];
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int
LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const uint16_t ports[] = { 25 };
	struct tcp_params prm = {
		.max_flows = 6,
		.ports = ports,
		.n_ports = 1,
		.mss4 = 536,
		.mss6 = 1220,
		.sndbuf_bytes = 8192,
		.sndbuf_pool_bytes = 6 * 2048,
		.ooo_max_bytes = 2 * 2048,
		.ooo_pool_bytes = 5 * 2048,
		.handshake_timeout_ms = 1000,
		.idle_timeout_ms = 5000,
		.lifetime_ms = 20000,
		.rto_min_ms = 10,
		.rto_max_ms = 400,
		.max_retries = 3,
		.halfopen_max = 2,
		.rst_rate_per_s = 50,
		.secret_seed = 7,
		.fin_wait2_ms = 2000,
	};
	struct tcp_engine *e;
	size_t i = 0;
	uint8_t buf[64];

	memset(cli, 0, sizeof(cli));
	memset(apps, 0, sizeof(apps));
	opened = closed_n = 0;
	now = 1000000;
	for (int c = 0; c < NCLI; c++) {
		cli[c].fam = c & 1 ? 6 : 4;
		cli[c].addr[0] = 198;
		cli[c].addr[1] = 51;
		cli[c].addr[2] = 100;
		cli[c].addr[3] = (uint8_t)(10 + c);
		if (cli[c].fam == 6) {
			cli[c].addr[0] = 0x20;
			cli[c].addr[1] = 0x01;
			cli[c].addr[15] = (uint8_t)c;
		}
		cli[c].port = (uint16_t)(40000 + c);
		cli[c].isn = 0xfffffff0u - 1000u * (uint32_t)c;
		cli[c].nxt = cli[c].isn + 1;
		cli[c].tsval = 100;
	}
	e = tcp_engine_create(&prm, &ops, NULL, now);
	if (!e)
		abort();
	while (i + 2 <= n) {
		uint8_t op = d[i], arg = d[i + 1];
		struct fcli *k = &cli[(op >> 4) & 3];
		struct fapp *a;
		uint32_t ol;
		i += 2;
		k->tsval += arg & 7;
		switch (op & 15) {
		case 0: { /* SYN with options */
			uint32_t l = 0;
			buf[l++] = 2;
			buf[l++] = 4;
			wr16(buf + l, (uint16_t)(arg * 37));
			l += 2;
			if (arg & 1) {
				buf[l++] = 1;
				buf[l++] = 3;
				buf[l++] = 3;
				buf[l++] = (uint8_t)(arg >> 4);
			}
			if (arg & 2) {
				buf[l++] = 1;
				buf[l++] = 1;
				buf[l++] = 4;
				buf[l++] = 2;
			}
			k->ts = arg & 4;
			l += ts_opt(k, buf + l);
			if (arg & 8) {
				k->isn += arg;
				k->nxt = k->isn + 1;
			}
			input(e, k, 2, k->isn, 0, 65535, 0, buf, l);
			break;
		}
		case 1: /* the handshake ACK / plain ACK */
			ol = ts_opt(k, buf);
			input(e, k, 0x10, k->nxt, k->rnxt, (uint16_t)(arg << 8 | arg), 0, buf, ol);
			break;
		case 2: /* in-order data */
			ol = ts_opt(k, buf);
			input(e, k, 0x18, k->nxt, k->rnxt, 65535, (uint32_t)arg * 7, buf, ol);
			k->nxt += (uint32_t)arg * 7;
			break;
		case 3: { /* displaced data (reorder/dup/inject) */
			int32_t delta = (int8_t)arg * 97;
			ol = ts_opt(k, buf);
			input(e, k, 0x18, k->nxt + (uint32_t)delta, k->rnxt, 65535,
			      (arg & 63) * 13u + 1, buf, ol);
			break;
		}
		case 4: /* RST, near or exact */
			input(e, k, 4, k->nxt + (uint32_t)((arg & 0x80) ? 0 : arg * 31), 0, 0, 0,
			      NULL, 0);
			break;
		case 5: /* FIN with a little data */
			ol = ts_opt(k, buf);
			input(e, k, 0x11, k->nxt, k->rnxt, 65535, arg & 15, buf, ol);
			k->nxt += (arg & 15) + 1u;
			break;
		case 6: { /* raw header fields from the input */
			uint32_t seq, ack;
			uint8_t fl;
			if (i + 10 > n)
				goto done;
			seq = k->nxt + rd32(d + i) % 200000u - 100000u;
			ack = (arg & 1) ? k->rnxt + (uint32_t)(int8_t)d[i + 4] : rd32(d + i + 4);
			fl = d[i + 8];
			ol = d[i + 9] & 0x3c;
			i += 10;
			if (ol > n - i)
				ol = (uint32_t)(n - i) & ~3u;
			input(e, k, fl, seq, ack, (uint16_t)(arg * 101), arg & 0x70, d + i, ol);
			i += ol;
			break;
		}
		case 7: /* time passes */
			now += (uint64_t)arg * (arg & 0x80 ? 50000 : 1000) + 100;
			tcp_engine_tick(e, now);
			break;
		case 8: /* app writes */
			a = app_for(k);
			if (a) {
				static const uint8_t blob[3000];
				tcp_send(a->c, blob, (uint32_t)arg * 11);
			}
			break;
		case 9:
			a = app_for(k);
			if (a)
				tcp_close(a->c);
			break;
		case 10:
			a = app_for(k);
			if (a && (arg & 1))
				tcp_abort(a->c);
			break;
		case 11: /* app window changes */
			a = app_for(k);
			if (a) {
				a->space = (uint32_t)arg * arg * 4;
				tcp_rcv_window_update(a->c);
			}
			break;
		case 13: /* a lagging ACK (dupacks, partial acks) */
			ol = ts_opt(k, buf);
			input(e, k, 0x10, k->nxt, k->rnxt - (uint32_t)arg * 13, 65535, 0, buf, ol);
			break;
		case 12: /* a different port */ k->port = (uint16_t)(40000 + (arg & 7)); break;
		default:
			now += 1000;
			tcp_engine_tick(e, now);
			break;
		}
	}
done:
	/* everything times out in the end: no TCB may be left */
	for (int s = 0; s < 60; s++) {
		now += 1000000;
		tcp_engine_tick(e, now);
	}
	if (tcp_engine_active(e) != 0 || opened != closed_n)
		abort();
	tcp_engine_destroy(e);
	return 0;
}
