/*
 * worker.c - a worker lcore's loop (DPDK's l2fwd shape): burst RX, classify
 * each frame, answer ARP/ND/echo in place, hand TCP to the engine, burst TX.
 * No system calls, no locks, no allocation on this path; counters go to the
 * lcore's own block.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "dataplane/l23.h"
#include "dataplane/stats.h"
#include "dataplane/worker.h"

#define BURST 32
#define TX_MAX (BURST * 4)

struct worker {
	uint16_t port_id, queue;
	uint32_t rx_trust;       /* PKT_RX_* flags the NIC can set */
	struct pkt_local local;
	struct rte_mempool *pool;
	struct dp_stats *st;
	uint16_t n_tx;
	struct rte_mbuf *tx[TX_MAX];
} __rte_cache_aligned;

static atomic_bool quit;

void
worker_stop_all(void)
{
	atomic_store_explicit(&quit, true, memory_order_release);
}

struct worker *
worker_create(const struct worker_params *p)
{
	struct worker *w = rte_zmalloc("worker", sizeof(*w), RTE_CACHE_LINE_SIZE);

	if (!w) {
		rte_errno = ENOMEM;
		return NULL;
	}
	w->port_id = p->port->port_id;
	w->queue = p->queue;
	w->local = p->local;
	w->pool = p->port->pool;
	if (p->port->rx_ip_cksum)
		w->rx_trust |= PKT_RX_IP_CKSUM_GOOD;
	if (p->port->rx_l4_cksum)
		w->rx_trust |= PKT_RX_L4_CKSUM_GOOD;
	return w;
}

void
worker_destroy(struct worker *w)
{
	if (!w)
		return;
	while (w->n_tx)
		rte_pktmbuf_free(w->tx[--w->n_tx]);
	rte_free(w);
}

static void
tx_flush(struct worker *w)
{
	uint16_t sent = 0, i;

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
handle_frame(struct worker *w, struct rte_mbuf *m)
{
	struct pkt_info info;
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	uint32_t len = rte_pktmbuf_data_len(m), out;

	w->st->c[DP_RX_BYTES] += rte_pktmbuf_pkt_len(m);
	if (m->nb_segs != 1) {   /* no scatter configured: never ours */
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
		/* The TCP engine is wired here (issue 3); until then TCP
		 * to our addresses is counted and dropped. */
		w->st->c[DP_TCP_SEGMENTS]++;
		rte_pktmbuf_free(m);
		return;
	default:
		out = l23_reply(frame, len, (uint32_t)(m->buf_len - m->data_off),
				&info, &w->local);
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
	struct rte_mbuf *rx[BURST];
	uint64_t t0;
	uint16_t n, i;

	w->st = &dp_stats[rte_lcore_id()];
	while (!atomic_load_explicit(&quit, memory_order_acquire)) {
		w->st->c[DP_POLLS]++;
		n = rte_eth_rx_burst(w->port_id, w->queue, rx, BURST);
		if (n == 0)
			continue;
		t0 = rte_rdtsc();
		w->st->c[DP_RX_PACKETS] += n;
		for (i = 0; i < n; i++) {
			if (i + 1 < n)
				rte_prefetch0(rte_pktmbuf_mtod(rx[i + 1], void *));
			handle_frame(w, rx[i]);
		}
		tx_flush(w);
		w->st->c[DP_BUSY_POLLS]++;
		w->st->c[DP_BUSY_CYCLES] += rte_rdtsc() - t0;
	}
	tx_flush(w);
	return 0;
}
