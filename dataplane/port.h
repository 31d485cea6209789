/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/port.h — bring up the one DPDK port smtpedge serves: a queue pair
 * per worker lcore, RSS across them where the device has it, checksum
 * offloads where it has them, and the mempool its mbufs come from.
 */
#ifndef SMTPEDGE_DATAPLANE_PORT_H
#define SMTPEDGE_DATAPLANE_PORT_H

#include <stdbool.h>
#include <stdint.h>

struct rte_mempool;

struct port_params {
	uint16_t port_id;
	uint16_t n_queues; /* one RX/TX pair per worker */
	uint32_t mbufs;
	uint32_t rx_desc, tx_desc;
	uint32_t mtu;
	const uint8_t *ip6; /* our global address, or NULL */
};

struct port_state {
	uint16_t port_id;
	uint8_t mac[6];
	bool rss;
	bool rx_ip_cksum, rx_l4_cksum; /* the NIC verifies, we trust its flags */
	bool tx_ip_cksum, tx_tcp_cksum;
	struct rte_mempool *pool;
	char driver[32];
};

/* 0 on success; -1 with one line on stderr naming what failed. */
int port_setup(const struct port_params *p, struct port_state *out);
void port_shutdown(struct port_state *ps);

#endif
