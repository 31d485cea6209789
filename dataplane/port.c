/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/port.c — device configuration for any ethdev: af_packet on a veth
 * in the lab, a real PMD on an appliance. Offloads and RSS are taken when the
 * device offers them and done in software when it does not, so the same
 * binary runs on both.
 */
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "dataplane/pkt.h"
#include "dataplane/port.h"

#define MBUF_CACHE 256

static uint64_t
want_offloads(uint64_t capa, uint64_t want)
{
	return capa & want;
}

/* Join the solicited-node groups of our addresses so a NIC that filters
 * multicast still passes neighbour solicitations; failing that, all
 * multicast. af_packet on a veth sees everything anyway. */
static void
join_multicast(const struct port_params *p, const uint8_t mac[6])
{
	struct rte_ether_addr mc[2];
	struct pkt_local l;
	const uint8_t *addrs[2] = { l.ip6_ll, p->ip6 };
	uint8_t sn[16];
	uint32_t n = 0, i;

	pkt_local_init(&l, mac);
	for (i = 0; i < 2; i++) {
		if (!addrs[i])
			continue;
		pkt_solicited_node(addrs[i], sn);
		mc[n].addr_bytes[0] = 0x33;
		mc[n].addr_bytes[1] = 0x33;
		memcpy(&mc[n].addr_bytes[2], sn + 12, 4);
		n++;
	}
	if (rte_eth_dev_set_mc_addr_list(p->port_id, mc, n) != 0)
		rte_eth_allmulticast_enable(p->port_id);
}

int
port_setup(const struct port_params *p, struct port_state *ps)
{
	struct rte_eth_conf conf = { 0 };
	struct rte_eth_dev_info info;
	struct rte_ether_addr mac;
	char name[RTE_MEMPOOL_NAMESIZE];
	uint16_t rxd = (uint16_t)p->rx_desc, txd = (uint16_t)p->tx_desc, q;
	int socket = rte_eth_dev_socket_id(p->port_id), rc;

	memset(ps, 0, sizeof(*ps));
	ps->port_id = p->port_id;
	if (socket < 0)
		socket = (int)rte_socket_id();
	if (rte_eth_dev_info_get(p->port_id, &info) != 0) {
		fprintf(stderr, "smtpedge: port %u: no device info\n", p->port_id);
		return -1;
	}
	snprintf(ps->driver, sizeof(ps->driver), "%s", info.driver_name);
	if (p->n_queues > info.max_rx_queues || p->n_queues > info.max_tx_queues) {
		fprintf(stderr,
			"smtpedge: port %u (%s): %u workers need %u queue pairs, the device has %u/%u\n",
			p->port_id, info.driver_name, p->n_queues, p->n_queues, info.max_rx_queues,
			info.max_tx_queues);
		return -1;
	}

	snprintf(name, sizeof(name), "mbuf_p%u", p->port_id);
	ps->pool = rte_pktmbuf_pool_create(
		name, p->mbufs, MBUF_CACHE, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
	if (!ps->pool) {
		fprintf(stderr,
			"smtpedge: port %u: mempool of %u mbufs: %s (more memory with -m, or fewer [dataplane] mbufs)\n",
			p->port_id, p->mbufs, rte_strerror(rte_errno));
		return -1;
	}

	if (p->n_queues > 1 && info.flow_type_rss_offloads) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads &
						   (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP);
		ps->rss = true;
	}
	conf.rxmode.offloads = want_offloads(
		info.rx_offload_capa, RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM);
	conf.txmode.offloads = want_offloads(
		info.tx_offload_capa, RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM);
	ps->rx_ip_cksum = conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
	ps->rx_l4_cksum = conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
	ps->tx_ip_cksum = conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
	ps->tx_tcp_cksum = conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
	if (p->n_queues > 1 && !ps->rss)
		fprintf(stderr, "smtpedge: port %u (%s): no RSS: only queue 0 will receive\n",
			p->port_id, info.driver_name);

	rc = rte_eth_dev_configure(p->port_id, p->n_queues, p->n_queues, &conf);
	if (rc == 0)
		rc = rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &rxd, &txd);
	for (q = 0; rc == 0 && q < p->n_queues; q++) {
		struct rte_eth_rxconf rxc = info.default_rxconf;
		struct rte_eth_txconf txc = info.default_txconf;

		rxc.offloads = conf.rxmode.offloads;
		txc.offloads = conf.txmode.offloads;
		rc = rte_eth_rx_queue_setup(p->port_id, q, rxd, (unsigned)socket, &rxc, ps->pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(p->port_id, q, txd, (unsigned)socket, &txc);
	}
	if (rc == 0 && p->mtu != 1500)
		rc = rte_eth_dev_set_mtu(p->port_id, (uint16_t)p->mtu);
	if (rc == 0)
		rc = rte_eth_dev_start(p->port_id);
	if (rc != 0) {
		fprintf(stderr, "smtpedge: port %u (%s): setup failed: %s\n", p->port_id,
			info.driver_name, rte_strerror(-rc));
		return -1;
	}
	rte_eth_macaddr_get(p->port_id, &mac);
	memcpy(ps->mac, mac.addr_bytes, 6);
	join_multicast(p, ps->mac);
	return 0;
}

void
port_shutdown(struct port_state *ps)
{
	if (!ps->pool)
		return;
	rte_eth_dev_stop(ps->port_id);
	rte_eth_dev_close(ps->port_id);
	rte_mempool_free(ps->pool);
	ps->pool = NULL;
}
