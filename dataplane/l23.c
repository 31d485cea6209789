/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/l23.c — in-place replies to ARP, neighbour solicitations and echo
 * requests (see l23.h for why replies go to the frame's source MAC).
 */
#include <string.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>

#include "dataplane/l23.h"

#define ETH_HLEN             14
#define ICMP6_ECHO_REPLY     129
#define ICMP6_ND_ADVERT      136
#define ND_NA_LEN            24
#define ND_OPT_TARGET_LLADDR 2
#define ND_NA_FLAG_SOLICITED 0x40
#define ND_NA_FLAG_OVERRIDE  0x20
#define ND_HOP_LIMIT         255 /* RFC 4861: ND packets are never routed */
#define ECHO_HOP_LIMIT       64  /* TTL and hop limit of echo replies, as hosts use */

static void
eth_return(uint8_t *frame, const struct pkt_local *l)
{
	memmove(frame, frame + 6, 6);
	memcpy(frame + 6, l->mac, 6);
}

static uint32_t
reply_arp(uint8_t *frame, const struct pkt_info *info, const struct pkt_local *l)
{
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(frame + info->l3_off);
	struct rte_arp_ipv4 *d = &arp->arp_data;

	eth_return(frame, l);
	arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REPLY);
	d->arp_tha = d->arp_sha;
	d->arp_tip = d->arp_sip;
	memcpy(&d->arp_sha, l->mac, 6);
	memcpy(&d->arp_sip, l->ip4, 4);
	return ETH_HLEN + (uint32_t)sizeof(*arp);
}

static uint32_t
reply_echo4(uint8_t *frame, const struct pkt_info *info, const struct pkt_local *l)
{
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(frame + info->l3_off);
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)(frame + info->l4_off);
	uint32_t sum;

	eth_return(frame, l);
	ip->dst_addr = ip->src_addr;
	memcpy(&ip->src_addr, l->ip4, 4);
	ip->time_to_live = ECHO_HOP_LIMIT;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	/* Type 8 -> 0: adjust the checksum incrementally (RFC 1624). */
	icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	sum = (uint32_t)(~rte_be_to_cpu_16(icmp->icmp_cksum) & 0xffff) +
	      (uint32_t)(~(RTE_IP_ICMP_ECHO_REQUEST << 8) & 0xffff);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	icmp->icmp_cksum = rte_cpu_to_be_16((uint16_t)~sum);
	return info->l3_off + info->l3_len;
}

/* Our source for a reply: the address the peer asked for. */
static void
ip6_return(struct rte_ipv6_hdr *ip, const uint8_t *src)
{
	memcpy(ip->dst_addr, ip->src_addr, 16);
	memcpy(ip->src_addr, src, 16);
}

static void
icmp6_cksum(struct rte_ipv6_hdr *ip, uint8_t *icmp)
{
	icmp[2] = icmp[3] = 0;
	uint16_t c = rte_ipv6_udptcp_cksum(ip, icmp);
	memcpy(icmp + 2, &c, 2);
}

static uint32_t
reply_echo6(uint8_t *frame, const struct pkt_info *info, const struct pkt_local *l)
{
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(frame + info->l3_off);
	uint8_t *icmp = frame + info->l4_off;
	uint8_t src[16];

	(void)l;
	memcpy(src, ip->dst_addr, 16);
	eth_return(frame, l);
	ip6_return(ip, src);
	ip->hop_limits = ECHO_HOP_LIMIT;
	icmp[0] = ICMP6_ECHO_REPLY;
	icmp6_cksum(ip, icmp);
	return info->l3_off + info->l3_len;
}

/* RFC 4861 7.2.4: a solicited advertisement with our link-layer address. */
static uint32_t
reply_ns(uint8_t *frame, uint32_t room, const struct pkt_info *info, const struct pkt_local *l)
{
	static const uint8_t unspec[16];
	static const uint8_t all_nodes[16] = { 0xff, 0x02, [15] = 0x01 };
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(frame + info->l3_off);
	uint8_t *na = frame + info->l4_off;
	uint8_t target[16];
	bool to_all = memcmp(ip->src_addr, unspec, 16) == 0;
	uint32_t need = info->l4_off + ND_NA_LEN + 8;

	if (need > room)
		return 0;
	memcpy(target, na + 8, 16);
	eth_return(frame, l);
	if (to_all) { /* DAD probe: answer all nodes, not solicited */
		memcpy(ip->dst_addr, all_nodes, 16);
		memcpy(frame, "\x33\x33\x00\x00\x00\x01", 6);
		memcpy(ip->src_addr, target, 16);
	} else {
		ip6_return(ip, target);
	}
	ip->hop_limits = ND_HOP_LIMIT;
	ip->payload_len = rte_cpu_to_be_16(ND_NA_LEN + 8);
	memset(na, 0, ND_NA_LEN + 8);
	na[0] = ICMP6_ND_ADVERT;
	na[4] = (uint8_t)((to_all ? 0 : ND_NA_FLAG_SOLICITED) | ND_NA_FLAG_OVERRIDE);
	memcpy(na + 8, target, 16);
	na[ND_NA_LEN] = ND_OPT_TARGET_LLADDR;
	na[ND_NA_LEN + 1] = 1;
	memcpy(na + ND_NA_LEN + 2, l->mac, 6);
	icmp6_cksum(ip, na);
	return need;
}

uint32_t
l23_reply(uint8_t *frame, uint32_t len, uint32_t room, const struct pkt_info *info,
	  const struct pkt_local *l)
{
	(void)len;
	switch (info->kind) {
	case PKT_KIND_ARP_REQUEST: return reply_arp(frame, info, l);
	case PKT_KIND_ICMP4_ECHO: return reply_echo4(frame, info, l);
	case PKT_KIND_ICMP6_ECHO: return reply_echo6(frame, info, l);
	case PKT_KIND_ND_SOLICIT: return reply_ns(frame, room, info, l);
	default: return 0;
	}
}
