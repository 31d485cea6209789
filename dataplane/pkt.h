/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/pkt.h — validation and classification of received frames.
 *
 * The worker hands every frame to pkt_classify() before anything else looks
 * at it. It checks Ethernet, IPv4/IPv6, ARP and the ICMP/ICMPv6/TCP headers
 * strictly (versions, lengths, checksums unless the NIC verified them) and
 * says what the frame is for, or why it is dropped. It works on a flat byte
 * buffer, not an mbuf, so the unit tests and fuzzers feed it crafted frames
 * without EAL.
 */
#ifndef SMTPEDGE_DATAPLANE_PKT_H
#define SMTPEDGE_DATAPLANE_PKT_H

#include <stdbool.h>
#include <stdint.h>

/* Why a frame was dropped: one counter each, per lcore. */
#define PKT_DROP_REASONS(X)                                                       \
	X(RUNT, "runt")                 /* shorter than an Ethernet header */     \
	X(OVERSIZE, "oversize")         /* longer than the port MTU allows */     \
	X(ETHERTYPE, "ethertype")       /* not IPv4, IPv6 or ARP (VLAN too) */    \
	X(L2_NOT_OURS, "l2_not_ours")   /* unicast to another MAC */              \
	X(ARP_INVALID, "arp_invalid")   /* not Ethernet/IPv4 ARP, bad lengths */  \
	X(ARP_NOT_OURS, "arp_not_ours") /* a request for someone else, a reply */ \
	X(SRC_OURS, "src_ours")         /* our own IPv4/IPv6 address as source */ \
	X(IP4_HDR, "ip4_hdr")           /* version, IHL, total length */          \
	X(IP4_CKSUM, "ip4_cksum")                                                 \
	X(IP4_FRAG, "ip4_frag") /* fragments: never needed for SMTP */            \
	X(IP4_OPTIONS, "ip4_options")                                             \
	X(IP4_NOT_OURS, "ip4_not_ours")                                           \
	X(IP4_MARTIAN, "ip4_martian") /* source 0/8, 127/8, 224/4, 240/4 */       \
	X(IP6_HDR, "ip6_hdr")         /* version, payload length */               \
	X(IP6_EXTHDR, "ip6_exthdr")   /* any extension header */                  \
	X(IP6_NOT_OURS, "ip6_not_ours")                                           \
	X(IP6_SRC, "ip6_src")         /* multicast or unspecified source */       \
	X(IP6_MARTIAN, "ip6_martian") /* source ::1 or IPv4 inside IPv6 */        \
	X(L4_PROTO, "l4_proto")       /* UDP, SCTP, ...: nothing listens */       \
	X(ICMP_HDR, "icmp_hdr")       /* too short */                             \
	X(ICMP_CKSUM, "icmp_cksum")                                               \
	X(ICMP_TYPE, "icmp_type") /* not an echo request */                       \
	X(ICMP6_CKSUM, "icmp6_cksum")                                             \
	X(ICMP6_TYPE, "icmp6_type")   /* not echo request or NS */                \
	X(ND_INVALID, "nd_invalid")   /* RFC 4861 7.1.1 validity checks */        \
	X(ND_NOT_OURS, "nd_not_ours") /* NS for another target */                 \
	X(TCP_HDR, "tcp_hdr")         /* data offset, length */                   \
	X(TCP_CKSUM, "tcp_cksum")

enum pkt_drop {
	PKT_DROP_NONE = 0,
#define PKT_DROP_ENUM(id, name) PKT_DROP_##id,
	PKT_DROP_REASONS(PKT_DROP_ENUM)
#undef PKT_DROP_ENUM
		PKT_DROP__COUNT
};

/* What a valid frame is for. */
enum pkt_kind {
	PKT_KIND_DROP = 0,
	PKT_KIND_ARP_REQUEST,
	PKT_KIND_ICMP4_ECHO,
	PKT_KIND_ICMP6_ECHO,
	PKT_KIND_ND_SOLICIT,
	PKT_KIND_TCP4,
	PKT_KIND_TCP6,
};

/* The port's own identity, as pkt_classify() needs it. */
struct pkt_local {
	uint8_t mac[6];
	bool has_ip4;
	uint8_t ip4[4];
	bool has_ip6;
	uint8_t ip6[16];    /* global address */
	uint8_t ip6_ll[16]; /* link-local, from the MAC (EUI-64) */
	uint32_t mtu;       /* largest IP packet accepted */
};

/* Offloads the NIC already did for this frame. */
enum {
	PKT_RX_IP_CKSUM_GOOD = 1u << 0,
	PKT_RX_L4_CKSUM_GOOD = 1u << 1,
};

struct pkt_info {
	enum pkt_kind kind;
	enum pkt_drop drop; /* when kind is PKT_KIND_DROP */
	uint16_t l3_off;    /* always 14: VLAN tags are dropped */
	uint16_t l4_off;
	uint32_t l3_len; /* IP header + payload, padding excluded */
	uint32_t l4_len; /* L4 header + payload */
};

void pkt_local_init(struct pkt_local *l, const uint8_t mac[6]);
/* The solicited-node multicast address of addr (RFC 4291 2.7.1). */
void pkt_solicited_node(const uint8_t addr[16], uint8_t out[16]);

enum pkt_kind pkt_classify(const uint8_t *frame, uint32_t len, uint32_t rx_flags,
			   const struct pkt_local *local, struct pkt_info *info);

const char *pkt_drop_name(enum pkt_drop d);

#endif
