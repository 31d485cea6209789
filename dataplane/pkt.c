/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dataplane/pkt.c — strict validation and classification of received frames.
 *
 * Everything that reaches a worker from the wire passes through here first,
 * so this is the code that hostile packets hit. It trusts no length field:
 * each header is checked against the bytes actually received before it is
 * read, and every rejection names its reason so the worker can count it.
 *
 * Choices:
 * - VLAN tags, IPv4 fragments and options, and IPv6 extension headers are
 *   dropped. An SMTP edge needs none of them, and each is a classic way to
 *   smuggle data past a parser.
 * - Checksums are verified in software unless the NIC flagged them good,
 *   by pkt_sum(): eight bytes a step, as the TX path sums what it sends.
 * - Ethernet padding after the IP packet is ignored, as it must be: a
 *   60-byte minimum frame often carries a shorter IP packet.
 * - Martian sources get no answer at all (no RST, no ARP, ND or echo
 *   reply), only a counted drop: no host on the internet has them, so a
 *   frame from one is forged, and an answer would go to a victim or loop
 *   back to us. IPv4: 0/8, 127/8, 224/4 (multicast), 240/4 (reserved, and
 *   255.255.255.255), our own address (ip4_martian, src_ours). IPv6:
 *   multicast and :: as before (ip6_src; :: only for duplicate address
 *   detection), ::1 and the forms that carry an IPv4 address, ::/96
 *   (IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped), ::ffff:0:0:0/96
 *   (IPv4-translated) (ip6_martian), and our own addresses (src_ours).
 *   An ARP request's sender address is held to the same IPv4 rule, except
 *   0.0.0.0: that is an address probe (RFC 5227), answered so that the
 *   prober sees the address is taken.
 */
#include <stddef.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf_core.h>
#include <rte_tcp.h>

#include "dataplane/pkt.h"

#define ETH_HLEN             14
#define ICMP6_ECHO_REQUEST   128
#define ICMP6_ND_SOLICIT     135
#define ND_NS_LEN            24 /* type, code, cksum, reserved, target */
#define ND_OPT_SOURCE_LLADDR 1
#define ND_HOP_LIMIT         255 /* RFC 4861: ND packets are never routed */
#define IP6_NH_HIP           139 /* RFC 7401 Host Identity Protocol */
#define IP6_NH_SHIM6         140 /* RFC 5533 shim6 */

static const char *const drop_names[PKT_DROP__COUNT] = { [PKT_DROP_NONE] = "none",
#define PKT_DROP_NAME(id, name) [PKT_DROP_##id] = name,
							 PKT_DROP_REASONS(PKT_DROP_NAME)
#undef PKT_DROP_NAME
};

const char *
pkt_drop_name(enum pkt_drop d)
{
	return (unsigned)d < PKT_DROP__COUNT ? drop_names[d] : "?";
}

/* ------------------------------------------------------------ checksums */

/* Adds b to a with the end-around carry: a ones' complement sum in 64 bits. */
static inline uint64_t
sum_add(uint64_t a, uint64_t b)
{
	a += b;
	return a + (a < b);
}

/* pkt_sum(), inlined where the length is known (the pseudo-header's
 * addresses), so that no loop or tail test is left there. */
static inline __attribute__((always_inline)) uint64_t
sum_bytes(const uint8_t *p, uint32_t len, uint64_t sum)
{
	uint64_t w0, w1, w2, w3, carry = 0;

	/* Four words a turn, each carry out of the 64 bits counted. */
	for (; len >= 32; p += 32, len -= 32) {
		memcpy(&w0, p, 8);
		memcpy(&w1, p + 8, 8);
		memcpy(&w2, p + 16, 8);
		memcpy(&w3, p + 24, 8);
		sum += w0;
		carry += sum < w0;
		sum += w1;
		carry += sum < w1;
		sum += w2;
		carry += sum < w2;
		sum += w3;
		carry += sum < w3;
	}
	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w0, p, 8);
		sum += w0;
		carry += sum < w0;
	}
	/* The tail: each piece starts at an even offset, so it adds as the
	 * 16-bit words it holds; a last odd byte is the high-order byte of
	 * a word padded with zero (RFC 1071 4.1). */
	w0 = 0;
	if (len & 4) {
		uint32_t v;

		memcpy(&v, p, 4);
		w0 += v;
		p += 4;
	}
	if (len & 2) {
		uint16_t v;

		memcpy(&v, p, 2);
		w0 += v;
		p += 2;
	}
	if (len & 1) {
		uint8_t pad[2] = { p[0], 0 };
		uint16_t v;

		memcpy(&v, pad, 2);
		w0 += v;
	}
	return sum_add(sum_add(sum, w0), carry);
}

uint64_t
pkt_sum(const void *p, uint32_t len, uint64_t sum)
{
	return sum_bytes(p, len, sum);
}

static inline uint16_t
fold16(uint64_t sum)
{
	sum = (sum & 0xffffffffu) + (sum >> 32); /* < 2^33 */
	sum = (sum & 0xffffffffu) + (sum >> 32); /* < 2^32 */
	sum = (sum & 0xffffu) + (sum >> 16);     /* < 2^17 */
	sum = (sum & 0xffffu) + (sum >> 16);
	return (uint16_t)sum;
}

uint16_t
pkt_sum_fold(uint64_t sum)
{
	return fold16(sum);
}

uint64_t
pkt_phdr_sum(const uint8_t *l3, bool v6, uint8_t proto, uint32_t l4_len)
{
	/* Length and protocol as the big-endian words they are on the wire;
	 * then the two addresses, which stand together in both headers. */
	uint64_t sum = (uint64_t)rte_cpu_to_be_32(l4_len) + rte_cpu_to_be_32(proto);

	if (v6)
		return sum_bytes(l3 + offsetof(struct rte_ipv6_hdr, src_addr), 32, sum);
	return sum_bytes(l3 + offsetof(struct rte_ipv4_hdr, src_addr), 8, sum);
}

uint16_t
pkt_l4_cksum(const uint8_t *l3, bool v6, uint8_t proto, const uint8_t *l4, uint32_t l4_len)
{
	uint16_t c = (uint16_t)~fold16(sum_bytes(l4, l4_len, pkt_phdr_sum(l3, v6, proto, l4_len)));

	return c == 0 ? 0xffff : c;
}

bool
pkt_l4_cksum_ok(const uint8_t *l3, bool v6, uint8_t proto, const uint8_t *l4, uint32_t l4_len)
{
	return fold16(sum_bytes(l4, l4_len, pkt_phdr_sum(l3, v6, proto, l4_len))) == 0xffff;
}

uint64_t
pkt_tx_cksum(uint8_t *l3, bool v6, uint8_t *l4, uint32_t l4_len, uint32_t tx_offloads)
{
	uint64_t fl = 0;
	uint16_t c;

	if (!v6) {
		if (tx_offloads & PKT_TX_IP4_CKSUM) {
			fl |= RTE_MBUF_F_TX_IP_CKSUM;
		} else {
			c = (uint16_t)~fold16(sum_bytes(l3, sizeof(struct rte_ipv4_hdr), 0));
			memcpy(l3 + offsetof(struct rte_ipv4_hdr, hdr_checksum), &c, 2);
		}
	}
	if (tx_offloads & PKT_TX_TCP_CKSUM) {
		fl |= RTE_MBUF_F_TX_TCP_CKSUM;
		c = fold16(pkt_phdr_sum(l3, v6, IPPROTO_TCP, l4_len));
	} else {
		c = pkt_l4_cksum(l3, v6, IPPROTO_TCP, l4, l4_len);
	}
	memcpy(l4 + offsetof(struct rte_tcp_hdr, cksum), &c, 2);
	if (fl != 0)
		fl |= v6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4;
	return fl;
}

/* ---------------------------------------------------------- classifying */

void
pkt_solicited_node(const uint8_t addr[16], uint8_t out[16])
{
	static const uint8_t prefix[13] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff };
	memcpy(out, prefix, sizeof(prefix));
	memcpy(out + 13, addr + 13, 3);
}

void
pkt_local_init(struct pkt_local *l, const uint8_t mac[6])
{
	memset(l, 0, sizeof(*l));
	memcpy(l->mac, mac, 6);
	l->mtu = 1500;
	/* fe80::/64 with the modified EUI-64 interface identifier. */
	l->ip6_ll[0] = 0xfe;
	l->ip6_ll[1] = 0x80;
	l->ip6_ll[8] = mac[0] ^ 0x02;
	l->ip6_ll[9] = mac[1];
	l->ip6_ll[10] = mac[2];
	l->ip6_ll[11] = 0xff;
	l->ip6_ll[12] = 0xfe;
	l->ip6_ll[13] = mac[3];
	l->ip6_ll[14] = mac[4];
	l->ip6_ll[15] = mac[5];
}

static enum pkt_kind
drop(struct pkt_info *info, enum pkt_drop why)
{
	info->kind = PKT_KIND_DROP;
	info->drop = why;
	return PKT_KIND_DROP;
}

static bool
is_ours6(const struct pkt_local *l, const uint8_t *a)
{
	return (l->has_ip6 && memcmp(a, l->ip6, 16) == 0) || memcmp(a, l->ip6_ll, 16) == 0;
}

/* 0/8, 127/8, 224/4 and 240/4: never the source of a real packet. */
static bool
is_martian4(const uint8_t *a)
{
	return a[0] == 0 || a[0] == 127 || a[0] >= 224;
}

/* ::1, ::/96, ::ffff:0:0/96 and ::ffff:0:0:0/96; :: itself is the caller's
 * to judge (it is valid for duplicate address detection). */
/* ::, tested as two words rather than through memcmp on every frame. */
static bool
addr6_is_unspec(const uint8_t *a)
{
	uint64_t w0, w1;

	memcpy(&w0, a, 8);
	memcpy(&w1, a + 8, 8);
	return (w0 | w1) == 0;
}

static bool
is_martian6(const uint8_t *a)
{
	static const uint8_t zero[10];

	if (memcmp(a, zero, 8) != 0)
		return false;
	if (a[8] == 0 && a[9] == 0) /* ::/96 (with ::1), ::ffff:0:0/96 */
		return (a[10] == 0 && a[11] == 0) || (a[10] == 0xff && a[11] == 0xff);
	return a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0;
}

static bool
is_solicited_ours(const struct pkt_local *l, const uint8_t *a)
{
	uint8_t sn[16];

	if (a[0] != 0xff) /* not multicast: the unicast frame's usual case */
		return false;
	if (l->has_ip6) {
		pkt_solicited_node(l->ip6, sn);
		if (memcmp(a, sn, 16) == 0)
			return true;
	}
	pkt_solicited_node(l->ip6_ll, sn);
	return memcmp(a, sn, 16) == 0;
}

static uint16_t
load_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static enum pkt_kind
classify_arp(const uint8_t *p, uint32_t len, const struct pkt_local *l, struct pkt_info *info)
{
	const struct rte_arp_hdr *arp = (const struct rte_arp_hdr *)p;

	if (len < sizeof(*arp))
		return drop(info, PKT_DROP_ARP_INVALID);
	if (arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) ||
	    arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) || arp->arp_hlen != 6 ||
	    arp->arp_plen != 4)
		return drop(info, PKT_DROP_ARP_INVALID);
	if (arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REQUEST) || !l->has_ip4 ||
	    memcmp(&arp->arp_data.arp_tip, l->ip4, 4) != 0)
		return drop(info, PKT_DROP_ARP_NOT_OURS);
	if (memcmp(&arp->arp_data.arp_sip, l->ip4, 4) == 0)
		return drop(info, PKT_DROP_SRC_OURS);
	if (arp->arp_data.arp_sip != 0 && is_martian4((const uint8_t *)&arp->arp_data.arp_sip))
		return drop(info, PKT_DROP_IP4_MARTIAN);
	info->l4_off = info->l3_off;
	info->l3_len = info->l4_len = sizeof(*arp);
	info->kind = PKT_KIND_ARP_REQUEST;
	return info->kind;
}

static enum pkt_kind
classify_icmp4(const uint8_t *p, uint32_t len, uint32_t rx_flags, struct pkt_info *info)
{
	const struct rte_icmp_hdr *icmp = (const struct rte_icmp_hdr *)p;

	if (len < sizeof(*icmp))
		return drop(info, PKT_DROP_ICMP_HDR);
	if (!(rx_flags & PKT_RX_L4_CKSUM_GOOD) && pkt_sum_fold(pkt_sum(p, len, 0)) != 0xffff)
		return drop(info, PKT_DROP_ICMP_CKSUM);
	if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0)
		return drop(info, PKT_DROP_ICMP_TYPE);
	info->kind = PKT_KIND_ICMP4_ECHO;
	return info->kind;
}

static enum pkt_kind
classify_tcp(const uint8_t *l3, const uint8_t *p, uint32_t len, bool v6, uint32_t rx_flags,
	     struct pkt_info *info)
{
	const struct rte_tcp_hdr *tcp = (const struct rte_tcp_hdr *)p;
	uint32_t doff;

	if (len < sizeof(*tcp))
		return drop(info, PKT_DROP_TCP_HDR);
	doff = (uint32_t)(tcp->data_off >> 4) * 4;
	if (doff < sizeof(*tcp) || doff > len)
		return drop(info, PKT_DROP_TCP_HDR);
	if (!(rx_flags & PKT_RX_L4_CKSUM_GOOD) && !pkt_l4_cksum_ok(l3, v6, IPPROTO_TCP, p, len))
		return drop(info, PKT_DROP_TCP_CKSUM);
	info->kind = v6 ? PKT_KIND_TCP6 : PKT_KIND_TCP4;
	return info->kind;
}

static enum pkt_kind
classify_ip4(const uint8_t *p, uint32_t len, uint32_t rx_flags, const struct pkt_local *l,
	     struct pkt_info *info)
{
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)p;
	uint32_t hlen, tlen;

	if (len < sizeof(*ip) || (ip->version_ihl >> 4) != 4)
		return drop(info, PKT_DROP_IP4_HDR);
	hlen = (uint32_t)(ip->version_ihl & 0xf) * 4;
	tlen = rte_be_to_cpu_16(ip->total_length);
	if (hlen < sizeof(*ip) || tlen < hlen || tlen > len)
		return drop(info, PKT_DROP_IP4_HDR);
	if (tlen > l->mtu)
		return drop(info, PKT_DROP_OVERSIZE);
	if (!(rx_flags & PKT_RX_IP_CKSUM_GOOD) && pkt_sum_fold(pkt_sum(p, hlen, 0)) != 0xffff)
		return drop(info, PKT_DROP_IP4_CKSUM);
	if (hlen != sizeof(*ip))
		return drop(info, PKT_DROP_IP4_OPTIONS);
	if (!l->has_ip4 || memcmp(&ip->dst_addr, l->ip4, 4) != 0)
		return drop(info, PKT_DROP_IP4_NOT_OURS);
	if (is_martian4((const uint8_t *)&ip->src_addr))
		return drop(info, PKT_DROP_IP4_MARTIAN);
	if (memcmp(&ip->src_addr, l->ip4, 4) == 0)
		return drop(info, PKT_DROP_SRC_OURS);
	/* MF set or a non-zero offset: a fragment. DF alone is fine. */
	if (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
		return drop(info, PKT_DROP_IP4_FRAG);

	info->l4_off = (uint16_t)(info->l3_off + hlen);
	info->l3_len = tlen;
	info->l4_len = tlen - hlen;
	switch (ip->next_proto_id) {
	case IPPROTO_ICMP: return classify_icmp4(p + hlen, info->l4_len, rx_flags, info);
	case IPPROTO_TCP: return classify_tcp(p, p + hlen, info->l4_len, false, rx_flags, info);
	default: return drop(info, PKT_DROP_L4_PROTO);
	}
}

/* RFC 4861 7.1.1: what makes a Neighbor Solicitation valid. */
static enum pkt_kind
classify_ns(const struct rte_ipv6_hdr *ip, const uint8_t *p, uint32_t len,
	    const struct pkt_local *l, struct pkt_info *info)
{
	static const uint8_t unspec[16];
	bool from_unspec = memcmp(ip->src_addr, unspec, 16) == 0;
	uint32_t off;

	if (ip->hop_limits != ND_HOP_LIMIT || p[1] != 0 || len < ND_NS_LEN ||
	    (p[8] == 0xff)) /* target must not be multicast */
		return drop(info, PKT_DROP_ND_INVALID);
	/* Options: each has a non-zero length; from ::, the destination is a
	 * solicited-node address and no source link-layer option is allowed. */
	for (off = ND_NS_LEN; off < len;) {
		if (len - off < 2 || p[off + 1] == 0 || (uint32_t)p[off + 1] * 8 > len - off)
			return drop(info, PKT_DROP_ND_INVALID);
		if (from_unspec && p[off] == ND_OPT_SOURCE_LLADDR)
			return drop(info, PKT_DROP_ND_INVALID);
		off += (uint32_t)p[off + 1] * 8;
	}
	if (from_unspec && ip->dst_addr[0] != 0xff)
		return drop(info, PKT_DROP_ND_INVALID);
	if (!is_ours6(l, p + 8))
		return drop(info, PKT_DROP_ND_NOT_OURS);
	info->kind = PKT_KIND_ND_SOLICIT;
	return info->kind;
}

static enum pkt_kind
classify_icmp6(const struct rte_ipv6_hdr *ip, const uint8_t *p, uint32_t len, uint32_t rx_flags,
	       const struct pkt_local *l, struct pkt_info *info)
{
	if (len < 4)
		return drop(info, PKT_DROP_ICMP_HDR);
	if (!(rx_flags & PKT_RX_L4_CKSUM_GOOD) &&
	    !pkt_l4_cksum_ok((const uint8_t *)ip, true, IPPROTO_ICMPV6, p, len))
		return drop(info, PKT_DROP_ICMP6_CKSUM);
	switch (p[0]) {
	case ICMP6_ND_SOLICIT: return classify_ns(ip, p, len, l, info);
	case ICMP6_ECHO_REQUEST:
		if (p[1] != 0 || len < 8)
			return drop(info, PKT_DROP_ICMP_HDR);
		if (ip->dst_addr[0] == 0xff) /* no echo to multicast */
			return drop(info, PKT_DROP_ICMP6_TYPE);
		info->kind = PKT_KIND_ICMP6_ECHO;
		return info->kind;
	default: return drop(info, PKT_DROP_ICMP6_TYPE);
	}
}

static enum pkt_kind
classify_ip6(const uint8_t *p, uint32_t len, uint32_t rx_flags, const struct pkt_local *l,
	     struct pkt_info *info)
{
	const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)p;
	uint32_t plen;
	bool nd_dst, from_unspec;

	if (len < sizeof(*ip) || (p[0] >> 4) != 6)
		return drop(info, PKT_DROP_IP6_HDR);
	plen = rte_be_to_cpu_16(ip->payload_len);
	if (plen > len - sizeof(*ip))
		return drop(info, PKT_DROP_IP6_HDR);
	if (plen + sizeof(*ip) > l->mtu)
		return drop(info, PKT_DROP_OVERSIZE);
	nd_dst = is_solicited_ours(l, ip->dst_addr);
	if (!is_ours6(l, ip->dst_addr) && !nd_dst)
		return drop(info, PKT_DROP_IP6_NOT_OURS);
	from_unspec = addr6_is_unspec(ip->src_addr);
	if (ip->src_addr[0] == 0xff || (!nd_dst && from_unspec))
		return drop(info, PKT_DROP_IP6_SRC);
	if (!from_unspec && is_martian6(ip->src_addr))
		return drop(info, PKT_DROP_IP6_MARTIAN);
	if (is_ours6(l, ip->src_addr))
		return drop(info, PKT_DROP_SRC_OURS);

	info->l4_off = (uint16_t)(info->l3_off + sizeof(*ip));
	info->l3_len = (uint32_t)sizeof(*ip) + plen;
	info->l4_len = plen;
	switch (ip->proto) {
	case IPPROTO_ICMPV6: return classify_icmp6(ip, p + sizeof(*ip), plen, rx_flags, l, info);
	case IPPROTO_TCP:
		if (nd_dst) /* TCP to a multicast group */
			return drop(info, PKT_DROP_IP6_NOT_OURS);
		return classify_tcp(p, p + sizeof(*ip), plen, true, rx_flags, info);
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_DSTOPTS:
	case IPPROTO_AH:
	case IPPROTO_ESP:
	case IPPROTO_MH:
	case IP6_NH_HIP:
	case IP6_NH_SHIM6:
	case IPPROTO_NONE: return drop(info, PKT_DROP_IP6_EXTHDR);
	default: return drop(info, PKT_DROP_L4_PROTO);
	}
}

enum pkt_kind
pkt_classify(const uint8_t *frame, uint32_t len, uint32_t rx_flags, const struct pkt_local *l,
	     struct pkt_info *info)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const uint8_t *dst = frame;
	uint16_t type;

	memset(info, 0, sizeof(*info));
	info->l3_off = ETH_HLEN;
	if (len < ETH_HLEN)
		return drop(info, PKT_DROP_RUNT);
	if (len > ETH_HLEN + l->mtu)
		return drop(info, PKT_DROP_OVERSIZE);
	/* Ours, broadcast, or multicast (group bit): the IP layer decides. */
	if (memcmp(dst, l->mac, 6) != 0 && memcmp(dst, bcast, 6) != 0 && !(dst[0] & 1))
		return drop(info, PKT_DROP_L2_NOT_OURS);

	type = load_be16(frame + 12);
	frame += ETH_HLEN;
	len -= ETH_HLEN;
	switch (type) {
	case RTE_ETHER_TYPE_IPV6: return classify_ip6(frame, len, rx_flags, l, info);
	case RTE_ETHER_TYPE_IPV4: return classify_ip4(frame, len, rx_flags, l, info);
	case RTE_ETHER_TYPE_ARP: return classify_arp(frame, len, l, info);
	default: return drop(info, PKT_DROP_ETHERTYPE);
	}
}
