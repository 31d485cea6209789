/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/worker.c — a worker lcore's loop (DPDK's l2fwd shape): burst RX, classify
 * each frame, answer ARP/ND/echo in place, hand TCP to the session layer,
 * apply the control plane's verdicts, run the timers, burst TX. No system
 * calls, no locks, no allocation on this path; counters go to the lcore's
 * own block.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "dataplane/faults.h"
#include "dataplane/l23.h"
#include "dataplane/session.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"

#define BURST               32
#define TX_MAX              (BURST * 8)
#define HANDSHAKE_BUDGET_US 200 /* TLS handshake CPU per loop, about */

struct worker {
	uint16_t port_id, queue;
	uint32_t rx_trust;    /* PKT_RX_* flags the NIC can set */
	uint32_t tx_offloads; /* PKT_TX_* the port's TX queues do */
	uint16_t ip4_id;
	struct pkt_local local;
	struct rte_mempool *pool;
	struct dp_stats *st;
	struct sess_layer *sl;
	uint64_t now_us;
	struct faults rx_faults, tx_faults;
	uint16_t n_tx;
	struct rte_mbuf *tx[TX_MAX];
} __rte_cache_aligned;

static atomic_bool quit;

static bool emit_tcp(void *arg, const struct tcp_out *o);

void
worker_stop_all(void)
{
	atomic_store_explicit(&quit, true, memory_order_release);
}

struct worker *
worker_create(const struct worker_params *p)
{
	const struct worker_faults *f = &p->faults;
	struct sess_layer_params sp = {
		.sess = p->sess,
		.emit = emit_tcp,
		.worker_id = p->queue,
		.lcore = p->lcore,
		.req = p->req,
		.ver = p->ver,
		.txrecs = p->txrecs,
		.wall0_us = p->wall0_us,
		.tsc0 = p->tsc0,
		.tsc_hz = p->tsc_hz,
		.secret_seed = p->secret_seed,
		.tls_slot = p->tls_slot,
	};
	struct worker *w = rte_zmalloc("worker", sizeof(*w), RTE_CACHE_LINE_SIZE);

	if (!w) {
		rte_errno = ENOMEM;
		return NULL;
	}
	w->port_id = p->port->port_id;
	w->queue = p->queue;
	w->local = p->local;
	w->pool = p->port->pool;
	w->st = &dp_stats[p->lcore];
	if (p->port->rx_ip_cksum)
		w->rx_trust |= PKT_RX_IP_CKSUM_GOOD;
	if (p->port->rx_l4_cksum)
		w->rx_trust |= PKT_RX_L4_CKSUM_GOOD;
	if (p->port->tx_ip_cksum)
		w->tx_offloads |= PKT_TX_IP4_CKSUM;
	if (p->port->tx_tcp_cksum)
		w->tx_offloads |= PKT_TX_TCP_CKSUM;
	faults_init(&w->rx_faults, f->rx_drop, f->rx_dup, f->rx_reorder,
		    (uint64_t)f->seed * 2 + p->queue, w->pool);
	faults_init(&w->tx_faults, f->tx_drop, f->tx_dup, f->tx_reorder,
		    (uint64_t)f->seed * 2 + 1 + p->queue, w->pool);
	sp.emit_arg = w;
	w->sl = sess_layer_create(&sp);
	if (!w->sl) {
		rte_free(w);
		rte_errno = ENOMEM;
		return NULL;
	}
	return w;
}

void
worker_destroy(struct worker *w)
{
	if (!w)
		return;
	while (w->n_tx)
		rte_pktmbuf_free(w->tx[--w->n_tx]);
	faults_flush(&w->rx_faults);
	faults_flush(&w->tx_faults);
	sess_layer_destroy(w->sl);
	rte_free(w);
}

const struct tcp_engine *
worker_tcp(const struct worker *w)
{
	return sess_layer_tcp(w->sl);
}

const struct sess_layer *
worker_sessions_layer(const struct worker *w)
{
	return w->sl;
}

uint32_t
worker_sessions(const struct worker *w)
{
	return sess_layer_active(w->sl);
}

static void
tx_flush(struct worker *w)
{
	uint16_t sent, i;

	if (faults_enabled(&w->tx_faults))
		w->n_tx = faults_apply(&w->tx_faults, w->tx, w->n_tx, TX_MAX, w->st);
	if (w->n_tx == 0)
		return;
	sent = rte_eth_tx_burst(w->port_id, w->queue, w->tx, w->n_tx);
	for (i = 0; i < sent; i++)
		w->st->c[DP_TX_BYTES] += rte_pktmbuf_pkt_len(w->tx[i]);
	w->st->c[DP_TX_PACKETS] += sent;
	if (sent < w->n_tx) {
		w->st->c[DP_TX_DROPPED] += (uint64_t)(w->n_tx - sent);
		rte_pktmbuf_free_bulk(&w->tx[sent], w->n_tx - sent);
	}
	w->n_tx = 0;
}

static void
tx_queue(struct worker *w, struct rte_mbuf *m)
{
	if (w->n_tx == TX_MAX)
		tx_flush(w);
	w->tx[w->n_tx++] = m;
}

static uint64_t
mac_to_link(const uint8_t *mac)
{
	uint64_t v = 0;

	memcpy(&v, mac, 6);
	return v;
}

/* A TCP segment out: Ethernet and IP around it, checksums, onto the TX
 * burst. false when no mbuf was free (counted). The sessions' emit. */
static bool
emit_tcp(void *arg, const struct tcp_out *o)
{
	struct worker *w = arg;
	uint32_t l3 = o->family == 6 ? sizeof(struct rte_ipv6_hdr) : sizeof(struct rte_ipv4_hdr);
	uint32_t l4 = o->hdr_len + o->data_len[0] + o->data_len[1];
	struct rte_mbuf *m = rte_pktmbuf_alloc(w->pool);
	uint8_t *p, *ip, *tcp;
	uint64_t ol;

	if (!m) {
		w->st->c[DP_TX_NOMBUF]++;
		return false;
	}
	p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(RTE_ETHER_HDR_LEN + l3 + l4));
	if (!p) {
		rte_pktmbuf_free(m);
		w->st->c[DP_TX_NOMBUF]++;
		return false;
	}
	/* To the MAC the peer's frames came from (l23.h says why). */
	memcpy(p, &o->link, 6);
	memcpy(p + 6, w->local.mac, 6);
	ip = p + RTE_ETHER_HDR_LEN;
	tcp = ip + l3;
	memcpy(tcp, o->hdr, o->hdr_len);
	if (o->data_len[0])
		memcpy(tcp + o->hdr_len, o->data[0], o->data_len[0]);
	if (o->data_len[1])
		memcpy(tcp + o->hdr_len + o->data_len[0], o->data[1], o->data_len[1]);
	tcp[16] = tcp[17] = 0;
	if (o->family == 6) {
		struct rte_ipv6_hdr *h = (struct rte_ipv6_hdr *)ip;

		p[12] = 0x86;
		p[13] = 0xdd;
		h->vtc_flow = rte_cpu_to_be_32(6u << 28);
		h->payload_len = rte_cpu_to_be_16((uint16_t)l4);
		h->proto = IPPROTO_TCP;
		h->hop_limits = 64;
		memcpy(h->src_addr, o->saddr, 16);
		memcpy(h->dst_addr, o->daddr, 16);
	} else {
		struct rte_ipv4_hdr *h = (struct rte_ipv4_hdr *)ip;

		p[12] = 0x08;
		p[13] = 0x00;
		h->version_ihl = 0x45;
		h->type_of_service = 0;
		h->total_length = rte_cpu_to_be_16((uint16_t)(l3 + l4));
		h->packet_id = rte_cpu_to_be_16(w->ip4_id++);
		h->fragment_offset = RTE_BE16(RTE_IPV4_HDR_DF_FLAG);
		h->time_to_live = 64;
		h->next_proto_id = IPPROTO_TCP;
		memcpy(&h->src_addr, o->saddr, 4);
		memcpy(&h->dst_addr, o->daddr, 4);
		h->hdr_checksum = 0;
	}
	/* In software, or the pseudo-header sum and flags for the device. */
	ol = pkt_tx_cksum(ip, o->family == 6, tcp, l4, w->tx_offloads);
	if (ol != 0) {
		m->ol_flags |= ol;
		m->l2_len = RTE_ETHER_HDR_LEN;
		m->l3_len = l3;
	}
	tx_queue(w, m);
	return true;
}

static uint32_t
rx_flags(const struct worker *w, const struct rte_mbuf *m)
{
	uint32_t f = 0;

	if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
		f |= PKT_RX_IP_CKSUM_GOOD;
	if ((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
		f |= PKT_RX_L4_CKSUM_GOOD;
	return f & w->rx_trust;
}

static const enum dp_counter reply_counter[] = {
	[PKT_KIND_ARP_REQUEST] = DP_ARP_REPLIES,
	[PKT_KIND_ICMP4_ECHO] = DP_ECHO4_REPLIES,
	[PKT_KIND_ICMP6_ECHO] = DP_ECHO6_REPLIES,
	[PKT_KIND_ND_SOLICIT] = DP_ND_ADVERTS,
};

static void
handle_tcp(struct worker *w, const uint8_t *frame, const struct pkt_info *info)
{
	const uint8_t *ip = frame + info->l3_off;
	struct tcp_pkt pkt;

	memset(&pkt, 0, sizeof(pkt));
	if (info->kind == PKT_KIND_TCP6) {
		pkt.family = 6;
		memcpy(pkt.saddr, ip + 8, 16);
		memcpy(pkt.daddr, ip + 24, 16);
	} else {
		pkt.family = 4;
		memcpy(pkt.saddr, ip + 12, 4);
		memcpy(pkt.daddr, ip + 16, 4);
	}
	pkt.tcp = frame + info->l4_off;
	pkt.len = info->l4_len;
	pkt.link = mac_to_link(frame + 6);
	w->st->c[DP_TCP_SEGMENTS]++;
	sess_layer_input(w->sl, &pkt, w->now_us);
}

static void
handle_frame(struct worker *w, struct rte_mbuf *m)
{
	struct pkt_info info;
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	uint32_t len = rte_pktmbuf_data_len(m), out;

	w->st->c[DP_RX_BYTES] += rte_pktmbuf_pkt_len(m);
	if (m->nb_segs != 1) { /* no scatter configured: never ours */
		info.kind = PKT_KIND_DROP;
		info.drop = PKT_DROP_OVERSIZE;
	} else {
		pkt_classify(frame, len, rx_flags(w, m), &w->local, &info);
	}
	switch (info.kind) {
	case PKT_KIND_DROP:
		w->st->c[DP_RX_DROPPED]++;
		w->st->drop[info.drop]++;
		rte_pktmbuf_free(m);
		return;
	case PKT_KIND_TCP4:
	case PKT_KIND_TCP6:
		/* The engine copies what it keeps: the mbuf goes back now. */
		handle_tcp(w, frame, &info);
		rte_pktmbuf_free(m);
		return;
	default:
		out = l23_reply(frame, len, (uint32_t)(m->buf_len - m->data_off), &info, &w->local);
		if (out == 0) {
			w->st->c[DP_RX_DROPPED]++;
			w->st->drop[PKT_DROP_OVERSIZE]++;
			rte_pktmbuf_free(m);
			return;
		}
		w->st->c[reply_counter[info.kind]]++;
		m->data_len = (uint16_t)out;
		m->pkt_len = out;
		m->ol_flags = 0;
		tx_queue(w, m);
	}
}

int
worker_main(void *arg)
{
	struct worker *w = arg;
	struct rte_mbuf *rx[BURST * 2];
	uint64_t t0;
	uint16_t n, i;
	unsigned did;

	while (!atomic_load_explicit(&quit, memory_order_acquire)) {
		w->st->c[DP_POLLS]++;
		n = rte_eth_rx_burst(w->port_id, w->queue, rx, BURST);
		if (faults_enabled(&w->rx_faults))
			n = faults_apply(&w->rx_faults, rx, n, BURST * 2, w->st);
		t0 = rte_rdtsc();
		w->now_us = sess_layer_now_us(w->sl, t0);
		w->st->c[DP_RX_PACKETS] += n;
		for (i = 0; i < n; i++) {
			if (i + 1 < n)
				rte_prefetch0(rte_pktmbuf_mtod(rx[i + 1], void *));
			handle_frame(w, rx[i]);
		}
		did = sess_layer_poll(w->sl, w->now_us);
		/* Frames the test shim holds back go out on a later flush. */
		if (n == 0 && did == 0 && w->n_tx == 0 && !faults_holding(&w->tx_faults))
			continue;
		tx_flush(w);
		/* After the burst's replies are out: TLS handshakes, within a
		 * budget, so that none holds a plain session's reply back. */
		sess_layer_handshakes(w->sl, HANDSHAKE_BUDGET_US);
		w->st->c[DP_BUSY_POLLS]++;
		w->st->c[DP_BUSY_CYCLES] += rte_rdtsc() - t0;
	}
	tx_flush(w);
	return 0;
}
