/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/pkt.h — validation and classification of received frames.
 *
 * The worker hands every frame to pkt_classify() before anything else looks
 * at it. It checks Ethernet, IPv4/IPv6, ARP and the ICMP/ICMPv6/TCP headers
 * strictly (versions, lengths, checksums unless the NIC verified them) and
 * says what the frame is for, or why it is dropped. It works on a flat byte
 * buffer, not an mbuf, so the unit tests and fuzzers feed it crafted frames
 * without EAL. The Internet checksums it verifies with are here too, with
 * the TX path's: what a segment out leaves to the device's offloads and
 * what is summed in software.
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

/*
 * Internet checksums (RFC 1071), summed eight bytes at a time into 64 bits
 * with the carries counted apart (2^64 = 1 in ones' complement arithmetic
 * over 16-bit words), so a sum is a handful of instructions per word, not
 * per byte, at any alignment.
 *
 * pkt_sum() adds len bytes to a partial sum; a partial sum may be carried
 * on into the next block only when every block before it has an even
 * length. pkt_sum_fold() folds a partial sum to 16 bits (not complemented).
 */
uint64_t pkt_sum(const void *p, uint32_t len, uint64_t sum);
uint16_t pkt_sum_fold(uint64_t sum);
/* The pseudo-header's partial sum (RFC 9293 3.1, RFC 8200 8.1) for l4_len
 * bytes of TCP (proto) under the IPv4 or IPv6 header at l3. */
uint64_t pkt_phdr_sum(const uint8_t *l3, bool v6, uint8_t proto, uint32_t l4_len);
/* The checksum to write into the L4 header at l4 (its checksum field 0),
 * complemented, 0 sent as 0xffff. */
uint16_t pkt_l4_cksum(const uint8_t *l3, bool v6, uint8_t proto, const uint8_t *l4,
		      uint32_t l4_len);
/* True when the L4 segment's checksum (field included) is right. */
bool pkt_l4_cksum_ok(const uint8_t *l3, bool v6, uint8_t proto, const uint8_t *l4, uint32_t l4_len);

/* Checksum offloads the port's TX queues were set up with. */
enum {
	PKT_TX_IP4_CKSUM = 1u << 0,
	PKT_TX_TCP_CKSUM = 1u << 1,
};

/*
 * The checksums of an outgoing TCP segment, its checksum field 0: l3 is
 * its IPv4 header (checksum field 0) or IPv6 header, l4 the TCP header
 * and payload. What tx_offloads names is left to the device, with the
 * field it expects (the IPv4 header's 0; TCP's the pseudo-header sum, not
 * complemented); the rest is done here. Returns the mbuf ol_flags
 * (RTE_MBUF_F_TX_*) that ask the device for its part, 0 when it has none;
 * with any, the caller also sets the mbuf's l2_len and l3_len.
 */
uint64_t pkt_tx_cksum(uint8_t *l3, bool v6, uint8_t *l4, uint32_t l4_len, uint32_t tx_offloads);

#endif
