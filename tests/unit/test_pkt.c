/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/unit/test_pkt.c — the frame classifier and the L2/L3 replies, on crafted
 * frames: each case builds a valid frame, optionally breaks one thing, and
 * names what pkt_classify() must say. Then the replies built from the good
 * frames are checked field by field, checksums included.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_mbuf_core.h>

#include "common/clock.h"

#include "dataplane/l23.h"
#include "dataplane/pkt.h"
#include "tests/check.h"

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x10 };
static const uint8_t other_mac[6] = { 0x02, 0, 0, 0, 0, 0x99 };
static struct pkt_local local;
static uint8_t our6[16], peer6[16], other6[16], mcast6[16], sn6[16], snll[16];
static const uint8_t our4[4] = { 198, 51, 100, 1 }, peer4[4] = { 198, 51, 100, 10 };
static const uint8_t other4[4] = { 198, 51, 100, 77 };

struct frame {
	uint8_t b[12000];
	uint32_t len;
};

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
eth(struct frame *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f->b, dst, 6);
	memcpy(f->b + 6, peer_mac, 6);
	put16(f->b + 12, type);
	f->len = 14;
}

/* IPv6 header + payload; the L4 checksum is computed when at csum_off. */
static void
ip6(struct frame *f, const uint8_t *src, const uint8_t *dst, uint8_t proto, uint8_t hop,
    const uint8_t *payload, uint32_t plen, int csum_off)
{
	uint8_t *h = f->b + 14;
	uint16_t c;

	eth(f, our_mac, 0x86dd);
	memset(h, 0, 40);
	h[0] = 0x60;
	put16(h + 4, (uint16_t)plen);
	h[6] = proto;
	h[7] = hop;
	memcpy(h + 8, src, 16);
	memcpy(h + 24, dst, 16);
	memcpy(h + 40, payload, plen);
	if (csum_off >= 0) {
		h[40 + csum_off] = h[41 + csum_off] = 0;
		c = rte_ipv6_udptcp_cksum((struct rte_ipv6_hdr *)h, h + 40);
		memcpy(h + 40 + csum_off, &c, 2);
	}
	f->len = 14 + 40 + plen;
}

static void
ip4(struct frame *f, const uint8_t *dst, uint8_t proto, const uint8_t *payload, uint32_t plen,
    int csum_off)
{
	uint8_t *h = f->b + 14;
	uint16_t c;

	eth(f, our_mac, 0x0800);
	memset(h, 0, 20);
	h[0] = 0x45;
	put16(h + 2, (uint16_t)(20 + plen));
	h[6] = 0x40; /* DF */
	h[8] = 64;
	h[9] = proto;
	memcpy(h + 12, peer4, 4);
	memcpy(h + 16, dst, 4);
	memcpy(h + 20, payload, plen);
	c = rte_ipv4_cksum((struct rte_ipv4_hdr *)h);
	memcpy(h + 10, &c, 2);
	if (csum_off == -2) { /* ICMP: checksum over the message only */
		h[22] = h[23] = 0;
		c = (uint16_t)~rte_raw_cksum(h + 20, plen);
		memcpy(h + 22, &c, 2);
	} else if (csum_off >= 0) {
		h[20 + csum_off] = h[21 + csum_off] = 0;
		c = rte_ipv4_udptcp_cksum((struct rte_ipv4_hdr *)h, h + 20);
		memcpy(h + 20 + csum_off, &c, 2);
	}
	f->len = 14 + 20 + plen;
}

static void
refresh_ip4_cksum(struct frame *f)
{
	uint8_t *h = f->b + 14;
	uint16_t c;

	h[10] = h[11] = 0;
	c = rte_ipv4_cksum((struct rte_ipv4_hdr *)h);
	memcpy(h + 10, &c, 2);
}

static const uint8_t echo_payload[16] = { 128, 0,   0,   0,   0x12, 0x34, 0,   1,
					  'p', 'i', 'n', 'g', '6',  '!',  '!', '!' };

static void
mk_echo6(struct frame *f)
{
	ip6(f, peer6, our6, 58, 64, echo_payload, sizeof(echo_payload), 2);
}

static void
mk_echo6_ll(struct frame *f)
{
	ip6(f, peer6, local.ip6_ll, 58, 64, echo_payload, sizeof(echo_payload), 2);
}

static void
mk_ns_to(struct frame *f, const uint8_t *src, const uint8_t *dst, const uint8_t *target, bool slla,
	 uint8_t hop)
{
	uint8_t ns[32] = { 135, 0 };

	memcpy(ns + 8, target, 16);
	ns[24] = 1;
	ns[25] = 1;
	memcpy(ns + 26, peer_mac, 6);
	ip6(f, src, dst, 58, hop, ns, slla ? 32 : 24, 2);
	memcpy(f->b, "\x33\x33", 2);
	memcpy(f->b + 2, dst + 12, 4);
}

static void
mk_ns(struct frame *f)
{
	mk_ns_to(f, peer6, sn6, our6, true, 255);
}
static void
mk_ns_ll(struct frame *f)
{
	mk_ns_to(f, peer6, snll, local.ip6_ll, true, 255);
}
static void
mk_ns_unicast(struct frame *f)
{
	mk_ns_to(f, peer6, our6, our6, true, 255);
}
static void
mk_ns_dad(struct frame *f)
{
	static const uint8_t unspec[16];
	mk_ns_to(f, unspec, sn6, our6, false, 255);
}

static const uint8_t icmp4_echo[12] = { 8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g' };

static void
mk_echo4(struct frame *f)
{
	ip4(f, our4, 1, icmp4_echo, sizeof(icmp4_echo), -2);
}

static void
mk_arp(struct frame *f)
{
	uint8_t *a = f->b + 14;
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	eth(f, bcast, 0x0806);
	put16(a, 1);
	put16(a + 2, 0x0800);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, 1);
	memcpy(a + 8, peer_mac, 6);
	memcpy(a + 14, peer4, 4);
	memset(a + 18, 0, 6);
	memcpy(a + 24, our4, 4);
	f->len = 14 + 28;
}

static uint8_t tcp_syn[24] = { 0x9c, 0x40, 0,    25,   0, 0, 0, 1, 0, 0, 0,    0,
			       0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0x05, 0xb4 };

static void
mk_tcp6(struct frame *f)
{
	ip6(f, peer6, our6, 6, 64, tcp_syn, 24, 16);
}
static void
mk_tcp4(struct frame *f)
{
	ip4(f, our4, 6, tcp_syn, 24, 16);
}

/* ---- the breakages ---- */
static void
none(struct frame *f)
{
	(void)f;
}
static void
runt(struct frame *f)
{
	f->len = 10;
}
static void
vlan(struct frame *f)
{
	put16(f->b + 12, 0x8100);
}
static void
to_other_mac(struct frame *f)
{
	memcpy(f->b, other_mac, 6);
}
static void
jumbo(struct frame *f)
{
	f->len = 9014;
}
static void
arp_other(struct frame *f)
{
	memcpy(f->b + 14 + 24, other4, 4);
}
static void
arp_reply(struct frame *f)
{
	put16(f->b + 14 + 6, 2);
}
static void
arp_hlen(struct frame *f)
{
	f->b[14 + 4] = 8;
}
static void
arp_short(struct frame *f)
{
	f->len = 14 + 20;
}
static void
ip4_version(struct frame *f)
{
	f->b[14] = 0x55;
	refresh_ip4_cksum(f);
}
static void
ip4_ihl(struct frame *f)
{
	f->b[14] = 0x44;
}
static void
ip4_totlen(struct frame *f)
{
	put16(f->b + 16, (uint16_t)(f->len - 14 + 1));
	refresh_ip4_cksum(f);
}
static void
ip4_totlen_short(struct frame *f)
{
	put16(f->b + 16, 19);
	refresh_ip4_cksum(f);
}
static void
ip4_cksum(struct frame *f)
{
	f->b[14 + 10] ^= 0x5a;
}
static void
ip4_mf(struct frame *f)
{
	f->b[14 + 6] = 0x20;
	refresh_ip4_cksum(f);
}
static void
ip4_offset(struct frame *f)
{
	f->b[14 + 7] = 0x08;
	refresh_ip4_cksum(f);
}
static void
ip4_dst(struct frame *f)
{
	memcpy(f->b + 14 + 16, other4, 4);
	refresh_ip4_cksum(f);
}
static void
ip4_udp(struct frame *f)
{
	f->b[14 + 9] = 17;
	refresh_ip4_cksum(f);
}
static void
ip4_pad(struct frame *f)
{
	memset(f->b + f->len, 0xee, 20);
	f->len += 20;
}
static void
ip4_options(struct frame *f)
{
	/* IHL 6 with a NOP option: valid IP, but options are refused. */
	memmove(f->b + 14 + 24, f->b + 14 + 20, f->len - 34);
	memset(f->b + 14 + 20, 1, 4);
	f->b[14] = 0x46;
	f->len += 4;
	put16(f->b + 16, (uint16_t)(f->len - 14));
	refresh_ip4_cksum(f);
}
static void
icmp4_cksum(struct frame *f)
{
	f->b[14 + 20 + 9] ^= 1;
}
static void
icmp4_type(struct frame *f) /* a timestamp request, checksum right */
{
	uint16_t c;

	f->b[34] = 13;
	f->b[36] = f->b[37] = 0;
	c = (uint16_t)~rte_raw_cksum(f->b + 34, f->len - 34);
	memcpy(f->b + 36, &c, 2);
}
static void
icmp4_short(struct frame *f)
{
	f->len = 14 + 20 + 4;
	put16(f->b + 16, 24);
	refresh_ip4_cksum(f);
}
static void
ip6_version(struct frame *f)
{
	f->b[14] = 0x40;
}
static void
ip6_plen_long(struct frame *f)
{
	put16(f->b + 14 + 4, (uint16_t)(f->len - 54 + 1));
}
static void
ip6_short_hdr(struct frame *f)
{
	f->len = 14 + 39;
}
static void
ip6_hbh_next(struct frame *f)
{
	f->b[14 + 6] = 0;
}
static void
ip6_frag(struct frame *f)
{
	f->b[14 + 6] = 44;
}
static void
ip6_dst(struct frame *f)
{
	memcpy(f->b + 14 + 24, other6, 16);
}
static void
ip6_src_mcast(struct frame *f)
{
	memcpy(f->b + 14 + 8, mcast6, 16);
}
static void
ip6_udp(struct frame *f)
{
	f->b[14 + 6] = 17;
}
static void
ip6_pad(struct frame *f)
{
	memset(f->b + f->len, 0, 6);
	f->len += 6;
}
static void
icmp6_cksum(struct frame *f)
{
	f->b[54 + 9] ^= 1;
}
static void
icmp6_ra(struct frame *f)
{
	f->b[54] = 134;
}
static void
ns_hop(struct frame *f)
{
	f->b[14 + 7] = 64;
}
static void
ns_target(struct frame *f)
{
	memcpy(f->b + 54 + 8, other6, 16);
}
static void
ns_optlen0(struct frame *f)
{
	f->b[54 + 25] = 0;
}
static void
ns_mcast_target(struct frame *f)
{
	f->b[54 + 8] = 0xff;
}
static void
echo6_mcast(struct frame *f)
{
	memcpy(f->b + 14 + 24, mcast6, 16);
	memcpy(f->b, "\x33\x33\0\0\0\1", 6);
}
static void
tcp_doff_small(struct frame *f)
{
	f->b[f->len - 24 + 12] = 0x40;
}
static void
tcp_doff_big(struct frame *f)
{
	f->b[f->len - 24 + 12] = 0xf0;
}
static void
tcp_cksum(struct frame *f)
{
	f->b[f->len - 1] ^= 0xff;
}
/* Martian sources: each breakage puts one in the source field and makes
 * every checksum right again, so that only the source is wrong. */
static void
set_src6(struct frame *f, const uint8_t *a)
{
	uint8_t *h = f->b + 14;
	int off = h[6] == 6 ? 16 : 2; /* TCP or ICMPv6 */
	uint16_t c;

	memcpy(h + 8, a, 16);
	h[40 + off] = h[41 + off] = 0;
	c = rte_ipv6_udptcp_cksum((struct rte_ipv6_hdr *)h, h + 40);
	memcpy(h + 40 + off, &c, 2);
}
static void
src6(struct frame *f, const char *text)
{
	uint8_t a[16];

	if (inet_pton(AF_INET6, text, a) != 1)
		abort();
	set_src6(f, a);
}
static void
src4(struct frame *f, uint8_t a0, uint8_t a1, uint8_t a2, uint8_t a3)
{
	uint8_t *h = f->b + 14;
	uint16_t c;

	h[12] = a0;
	h[13] = a1;
	h[14] = a2;
	h[15] = a3;
	refresh_ip4_cksum(f);
	if (h[9] == 6) { /* the ICMP checksum has no addresses */
		h[36] = h[37] = 0;
		c = rte_ipv4_udptcp_cksum((struct rte_ipv4_hdr *)h, h + 20);
		memcpy(h + 36, &c, 2);
	}
}
static void
src6_loopback(struct frame *f)
{
	src6(f, "::1");
}
static void
src6_compat(struct frame *f)
{
	src6(f, "::198.51.100.10");
}
static void
src6_mapped(struct frame *f)
{
	src6(f, "::ffff:198.51.100.10");
}
static void
src6_translated(struct frame *f)
{
	src6(f, "::ffff:0:198.51.100.10");
}
static void
src6_unspec(struct frame *f)
{
	src6(f, "::");
}
static void
src6_ours(struct frame *f)
{
	set_src6(f, our6);
}
static void
src6_ours_ll(struct frame *f)
{
	set_src6(f, local.ip6_ll);
}
static void
src6_near_mapped(struct frame *f)
{
	src6(f, "::fffe:198.51.100.10");
}
static void
src6_near_translated(struct frame *f)
{
	src6(f, "::1:ffff:0:c633:640a");
}
static void
src4_zero(struct frame *f)
{
	src4(f, 0, 0, 0, 0);
}
static void
src4_this_net(struct frame *f)
{
	src4(f, 0, 1, 2, 3);
}
static void
src4_loopback(struct frame *f)
{
	src4(f, 127, 0, 0, 1);
}
static void
src4_mcast(struct frame *f)
{
	src4(f, 224, 0, 0, 251);
}
static void
src4_reserved(struct frame *f)
{
	src4(f, 240, 1, 2, 3);
}
static void
src4_bcast(struct frame *f)
{
	src4(f, 255, 255, 255, 255);
}
static void
src4_ours(struct frame *f)
{
	src4(f, our4[0], our4[1], our4[2], our4[3]);
}
static void
src4_edge(struct frame *f)
{
	src4(f, 223, 255, 255, 254);
}
static void
arp_src_loopback(struct frame *f)
{
	memcpy(f->b + 14 + 14, "\x7f\0\0\1", 4);
}
static void
arp_src_ours(struct frame *f)
{
	memcpy(f->b + 14 + 14, our4, 4);
}
static void
arp_src_bcast(struct frame *f)
{
	memset(f->b + 14 + 14, 0xff, 4);
}
static void
arp_probe(struct frame *f)
{
	memset(f->b + 14 + 14, 0, 4);
}

static void
tcp_truncated(struct frame *f)
{
	/* IP says 19 bytes of TCP: shorter than its fixed header. */
	put16(f->b + 14 + 4, 19);
	f->len = 14 + 40 + 19;
}

struct pcase {
	const char *name;
	void (*make)(struct frame *f);
	void (*breakit)(struct frame *f);
	enum pkt_kind kind;
	enum pkt_drop drop;
	uint32_t rx_flags;
};

static const struct pcase cases[] = {
	{ "echo6", mk_echo6, none, PKT_KIND_ICMP6_ECHO, 0, 0 },
	{ "echo6 link-local", mk_echo6_ll, none, PKT_KIND_ICMP6_ECHO, 0, 0 },
	{ "echo6 with ethernet padding", mk_echo6, ip6_pad, PKT_KIND_ICMP6_ECHO, 0, 0 },
	{ "ns solicited-node", mk_ns, none, PKT_KIND_ND_SOLICIT, 0, 0 },
	{ "ns link-local", mk_ns_ll, none, PKT_KIND_ND_SOLICIT, 0, 0 },
	{ "ns unicast (NUD)", mk_ns_unicast, none, PKT_KIND_ND_SOLICIT, 0, 0 },
	{ "ns dad", mk_ns_dad, none, PKT_KIND_ND_SOLICIT, 0, 0 },
	{ "echo4", mk_echo4, none, PKT_KIND_ICMP4_ECHO, 0, 0 },
	{ "echo4 padded", mk_echo4, ip4_pad, PKT_KIND_ICMP4_ECHO, 0, 0 },
	{ "arp request", mk_arp, none, PKT_KIND_ARP_REQUEST, 0, 0 },
	{ "tcp6", mk_tcp6, none, PKT_KIND_TCP6, 0, 0 },
	{ "tcp4", mk_tcp4, none, PKT_KIND_TCP4, 0, 0 },
	{ "tcp6 bad cksum, NIC says good", mk_tcp6, tcp_cksum, PKT_KIND_TCP6, 0,
	  PKT_RX_L4_CKSUM_GOOD },
	{ "runt", mk_echo6, runt, PKT_KIND_DROP, PKT_DROP_RUNT, 0 },
	{ "jumbo", mk_echo6, jumbo, PKT_KIND_DROP, PKT_DROP_OVERSIZE, 0 },
	{ "vlan", mk_echo6, vlan, PKT_KIND_DROP, PKT_DROP_ETHERTYPE, 0 },
	{ "other mac", mk_echo6, to_other_mac, PKT_KIND_DROP, PKT_DROP_L2_NOT_OURS, 0 },
	{ "arp for other", mk_arp, arp_other, PKT_KIND_DROP, PKT_DROP_ARP_NOT_OURS, 0 },
	{ "arp reply", mk_arp, arp_reply, PKT_KIND_DROP, PKT_DROP_ARP_NOT_OURS, 0 },
	{ "arp hlen", mk_arp, arp_hlen, PKT_KIND_DROP, PKT_DROP_ARP_INVALID, 0 },
	{ "arp truncated", mk_arp, arp_short, PKT_KIND_DROP, PKT_DROP_ARP_INVALID, 0 },
	{ "ip4 version", mk_echo4, ip4_version, PKT_KIND_DROP, PKT_DROP_IP4_HDR, 0 },
	{ "ip4 ihl 4", mk_echo4, ip4_ihl, PKT_KIND_DROP, PKT_DROP_IP4_HDR, 0 },
	{ "ip4 total length past frame", mk_echo4, ip4_totlen, PKT_KIND_DROP, PKT_DROP_IP4_HDR, 0 },
	{ "ip4 total length < header", mk_echo4, ip4_totlen_short, PKT_KIND_DROP, PKT_DROP_IP4_HDR,
	  0 },
	{ "ip4 cksum", mk_echo4, ip4_cksum, PKT_KIND_DROP, PKT_DROP_IP4_CKSUM, 0 },
	{ "ip4 cksum, NIC says good", mk_echo4, ip4_cksum, PKT_KIND_ICMP4_ECHO, 0,
	  PKT_RX_IP_CKSUM_GOOD },
	{ "ip4 more fragments", mk_echo4, ip4_mf, PKT_KIND_DROP, PKT_DROP_IP4_FRAG, 0 },
	{ "ip4 fragment offset", mk_echo4, ip4_offset, PKT_KIND_DROP, PKT_DROP_IP4_FRAG, 0 },
	{ "ip4 options", mk_echo4, ip4_options, PKT_KIND_DROP, PKT_DROP_IP4_OPTIONS, 0 },
	{ "ip4 not ours", mk_echo4, ip4_dst, PKT_KIND_DROP, PKT_DROP_IP4_NOT_OURS, 0 },
	{ "ip4 udp", mk_echo4, ip4_udp, PKT_KIND_DROP, PKT_DROP_L4_PROTO, 0 },
	{ "icmp4 cksum", mk_echo4, icmp4_cksum, PKT_KIND_DROP, PKT_DROP_ICMP_CKSUM, 0 },
	{ "icmp4 timestamp", mk_echo4, icmp4_type, PKT_KIND_DROP, PKT_DROP_ICMP_TYPE, 0 },
	{ "icmp4 truncated", mk_echo4, icmp4_short, PKT_KIND_DROP, PKT_DROP_ICMP_HDR, 0 },
	{ "ip6 version", mk_echo6, ip6_version, PKT_KIND_DROP, PKT_DROP_IP6_HDR, 0 },
	{ "ip6 payload length past frame", mk_echo6, ip6_plen_long, PKT_KIND_DROP, PKT_DROP_IP6_HDR,
	  0 },
	{ "ip6 header truncated", mk_echo6, ip6_short_hdr, PKT_KIND_DROP, PKT_DROP_IP6_HDR, 0 },
	{ "ip6 hop-by-hop", mk_echo6, ip6_hbh_next, PKT_KIND_DROP, PKT_DROP_IP6_EXTHDR, 0 },
	{ "ip6 fragment header", mk_echo6, ip6_frag, PKT_KIND_DROP, PKT_DROP_IP6_EXTHDR, 0 },
	{ "ip6 not ours", mk_echo6, ip6_dst, PKT_KIND_DROP, PKT_DROP_IP6_NOT_OURS, 0 },
	{ "ip6 multicast source", mk_echo6, ip6_src_mcast, PKT_KIND_DROP, PKT_DROP_IP6_SRC, 0 },
	{ "ip6 udp", mk_echo6, ip6_udp, PKT_KIND_DROP, PKT_DROP_L4_PROTO, 0 },
	{ "icmp6 cksum", mk_echo6, icmp6_cksum, PKT_KIND_DROP, PKT_DROP_ICMP6_CKSUM, 0 },
	{ "icmp6 router advert", mk_echo6, icmp6_ra, PKT_KIND_DROP, PKT_DROP_ICMP6_CKSUM, 0 },
	{ "echo6 to multicast", mk_echo6, echo6_mcast, PKT_KIND_DROP, PKT_DROP_IP6_NOT_OURS, 0 },
	{ "ns hop limit 64", mk_ns, ns_hop, PKT_KIND_DROP, PKT_DROP_ND_INVALID, 0 },
	{ "ns other target", mk_ns, ns_target, PKT_KIND_DROP, PKT_DROP_ICMP6_CKSUM, 0 },
	{ "ns option length 0", mk_ns, ns_optlen0, PKT_KIND_DROP, PKT_DROP_ICMP6_CKSUM, 0 },
	{ "ns multicast target", mk_ns, ns_mcast_target, PKT_KIND_DROP, PKT_DROP_ICMP6_CKSUM, 0 },
	{ "tcp doff < 5", mk_tcp6, tcp_doff_small, PKT_KIND_DROP, PKT_DROP_TCP_HDR, 0 },
	{ "tcp doff past segment", mk_tcp6, tcp_doff_big, PKT_KIND_DROP, PKT_DROP_TCP_HDR, 0 },
	{ "tcp truncated", mk_tcp6, tcp_truncated, PKT_KIND_DROP, PKT_DROP_TCP_HDR, 0 },
	{ "tcp6 cksum", mk_tcp6, tcp_cksum, PKT_KIND_DROP, PKT_DROP_TCP_CKSUM, 0 },
	{ "tcp4 cksum", mk_tcp4, tcp_cksum, PKT_KIND_DROP, PKT_DROP_TCP_CKSUM, 0 },
	{ "tcp6 from ::1", mk_tcp6, src6_loopback, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN, 0 },
	{ "echo6 from ::1", mk_echo6, src6_loopback, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN, 0 },
	{ "tcp6 from IPv4-compatible", mk_tcp6, src6_compat, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN,
	  0 },
	{ "tcp6 from IPv4-mapped", mk_tcp6, src6_mapped, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN, 0 },
	{ "echo6 from IPv4-mapped", mk_echo6, src6_mapped, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN, 0 },
	{ "tcp6 from IPv4-translated", mk_tcp6, src6_translated, PKT_KIND_DROP,
	  PKT_DROP_IP6_MARTIAN, 0 },
	{ "tcp6 from ::", mk_tcp6, src6_unspec, PKT_KIND_DROP, PKT_DROP_IP6_SRC, 0 },
	{ "echo6 from ::", mk_echo6, src6_unspec, PKT_KIND_DROP, PKT_DROP_IP6_SRC, 0 },
	{ "tcp6 from our address", mk_tcp6, src6_ours, PKT_KIND_DROP, PKT_DROP_SRC_OURS, 0 },
	{ "echo6 from our link-local", mk_echo6, src6_ours_ll, PKT_KIND_DROP, PKT_DROP_SRC_OURS,
	  0 },
	{ "ns from our address", mk_ns, src6_ours, PKT_KIND_DROP, PKT_DROP_SRC_OURS, 0 },
	{ "ns from IPv4-mapped", mk_ns, src6_mapped, PKT_KIND_DROP, PKT_DROP_IP6_MARTIAN, 0 },
	{ "tcp6 from ::fffe:0:0/96 (not embedded IPv4)", mk_tcp6, src6_near_mapped, PKT_KIND_TCP6,
	  0, 0 },
	{ "tcp6 from ::1:ffff:0:0/96 (not embedded IPv4)", mk_tcp6, src6_near_translated,
	  PKT_KIND_TCP6, 0, 0 },
	{ "tcp4 from 0.0.0.0", mk_tcp4, src4_zero, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "tcp4 from 0/8", mk_tcp4, src4_this_net, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "tcp4 from 127/8", mk_tcp4, src4_loopback, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "echo4 from 127/8", mk_echo4, src4_loopback, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "tcp4 from multicast", mk_tcp4, src4_mcast, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "tcp4 from 240/4", mk_tcp4, src4_reserved, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "tcp4 from 255.255.255.255", mk_tcp4, src4_bcast, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN,
	  0 },
	{ "echo4 from 255.255.255.255", mk_echo4, src4_bcast, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN,
	  0 },
	{ "tcp4 from our address", mk_tcp4, src4_ours, PKT_KIND_DROP, PKT_DROP_SRC_OURS, 0 },
	{ "echo4 from our address", mk_echo4, src4_ours, PKT_KIND_DROP, PKT_DROP_SRC_OURS, 0 },
	{ "tcp4 from 223.255.255.254 (unicast)", mk_tcp4, src4_edge, PKT_KIND_TCP4, 0, 0 },
	{ "arp from 127/8", mk_arp, arp_src_loopback, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN, 0 },
	{ "arp from 255.255.255.255", mk_arp, arp_src_bcast, PKT_KIND_DROP, PKT_DROP_IP4_MARTIAN,
	  0 },
	{ "arp from our address", mk_arp, arp_src_ours, PKT_KIND_DROP, PKT_DROP_SRC_OURS, 0 },
	{ "arp probe from 0.0.0.0 (RFC 5227)", mk_arp, arp_probe, PKT_KIND_ARP_REQUEST, 0, 0 },
};

/* Breakages after the checksum was computed fail the checksum first; the
 * same breakages with a fresh checksum reach the check they aim at. */
static void
recompute_icmp6(struct frame *f)
{
	uint8_t *h = f->b + 14;
	uint16_t c;

	h[42] = h[43] = 0;
	c = rte_ipv6_udptcp_cksum((struct rte_ipv6_hdr *)h, h + 40);
	memcpy(h + 42, &c, 2);
}

static void
test_classify(void)
{
	static struct frame f;
	struct pkt_info info;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		enum pkt_kind k;

		memset(&f, 0, sizeof(f));
		c->make(&f);
		c->breakit(&f);
		k = pkt_classify(f.b, f.len, c->rx_flags, &local, &info);
		CHECK(k == c->kind && info.kind == k, "%s: kind %d, want %d (drop %s)", c->name, k,
		      c->kind, pkt_drop_name(info.drop));
		if (c->kind == PKT_KIND_DROP)
			CHECK(info.drop == c->drop, "%s: drop %s, want %s", c->name,
			      pkt_drop_name(info.drop), pkt_drop_name(c->drop));
		/* With the ICMPv6 checksum made right again, the ND and
		 * ICMPv6 breakages must hit their own check. */
		if (c->drop == PKT_DROP_ICMP6_CKSUM && c->breakit != icmp6_cksum) {
			enum pkt_drop want = c->make == mk_ns ? (c->breakit == ns_target ?
									 PKT_DROP_ND_NOT_OURS :
									 PKT_DROP_ND_INVALID) :
								PKT_DROP_ICMP6_TYPE;

			recompute_icmp6(&f);
			pkt_classify(f.b, f.len, 0, &local, &info);
			CHECK(info.drop == want, "%s (fresh cksum): drop %s, want %s", c->name,
			      pkt_drop_name(info.drop), pkt_drop_name(want));
		}
	}
}

/* Every prefix of every good frame is refused cleanly, never read past. */
static void
test_truncations(void)
{
	static struct frame f;
	struct pkt_info info;
	size_t i;
	uint32_t n, wrong = 0;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].breakit != none)
			continue;
		memset(&f, 0, sizeof(f));
		cases[i].make(&f);
		for (n = 0; n < f.len; n++) {
			uint8_t *copy = malloc(n ? n : 1); /* ASan sees overreads */

			memcpy(copy, f.b, n);
			pkt_classify(copy, n, 0, &local, &info);
			/* A 60-byte ARP frame is 42 bytes of ARP: shorter
			 * prefixes must all be dropped. */
			if (info.kind != PKT_KIND_DROP)
				wrong++;
			free(copy);
		}
	}
	CHECK(wrong == 0, "%u truncated frames were accepted", wrong);
}

static bool
icmp6_ok(const uint8_t *frame)
{
	return rte_ipv6_udptcp_cksum_verify(
		       (const struct rte_ipv6_hdr *)(frame + 14), frame + 54) == 0;
}

static void
test_replies(void)
{
	static struct frame f;
	struct pkt_info info;
	uint32_t n;
	static const uint8_t all_nodes[16] = { 0xff, 0x02, [15] = 1 };

	mk_ns(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	n = l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(n == 14 + 40 + 32, "NA length %u", n);
	CHECK(memcmp(f.b, peer_mac, 6) == 0 && memcmp(f.b + 6, our_mac, 6) == 0,
	      "NA goes to the frame's source MAC");
	CHECK(f.b[54] == 136 && f.b[54 + 4] == 0x60, "NA type %u flags %02x", f.b[54], f.b[58]);
	CHECK(f.b[14 + 7] == 255, "NA hop limit %u", f.b[21]);
	CHECK(memcmp(f.b + 54 + 8, our6, 16) == 0, "NA target");
	CHECK(memcmp(f.b + 14 + 24, peer6, 16) == 0 && memcmp(f.b + 14 + 8, our6, 16) == 0,
	      "NA addresses");
	CHECK(f.b[54 + 24] == 2 && f.b[54 + 25] == 1 && memcmp(f.b + 54 + 26, our_mac, 6) == 0,
	      "NA target link-layer option");
	CHECK(icmp6_ok(f.b), "NA checksum");

	mk_ns_dad(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	n = l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(n > 0 && memcmp(f.b + 14 + 24, all_nodes, 16) == 0 && f.b[58] == 0x20 &&
		      icmp6_ok(f.b),
	      "DAD is answered to all nodes, unsolicited");

	mk_echo6(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	n = l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(n == 14 + 40 + sizeof(echo_payload) && f.b[54] == 129 && icmp6_ok(f.b) &&
		      memcmp(f.b + 54 + 8, echo_payload + 8, 8) == 0 &&
		      memcmp(f.b + 14 + 24, peer6, 16) == 0,
	      "echo6 reply");

	mk_echo6_ll(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(memcmp(f.b + 14 + 8, local.ip6_ll, 16) == 0 && icmp6_ok(f.b),
	      "echo6 to link-local answered from link-local");

	mk_echo4(&f);
	ip4_pad(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	n = l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(n == 14 + 20 + sizeof(icmp4_echo), "echo4 reply drops the padding: %u", n);
	CHECK(f.b[34] == 0 && rte_raw_cksum(f.b + 34, sizeof(icmp4_echo)) == 0xffff &&
		      rte_raw_cksum(f.b + 14, 20) == 0xffff &&
		      memcmp(f.b + 14 + 16, peer4, 4) == 0 && memcmp(f.b + 14 + 12, our4, 4) == 0,
	      "echo4 reply fields and checksums");

	mk_arp(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	n = l23_reply(f.b, f.len, sizeof(f.b), &info, &local);
	CHECK(n == 42 && f.b[14 + 7] == 2 && memcmp(f.b + 14 + 8, our_mac, 6) == 0 &&
		      memcmp(f.b + 14 + 14, our4, 4) == 0 &&
		      memcmp(f.b + 14 + 18, peer_mac, 6) == 0 &&
		      memcmp(f.b + 14 + 24, peer4, 4) == 0 && memcmp(f.b, peer_mac, 6) == 0,
	      "arp reply");

	mk_ns(&f);
	pkt_classify(f.b, f.len, 0, &local, &info);
	CHECK(l23_reply(f.b, f.len, 14 + 40 + 24, &info, &local) == 0,
	      "no NA when the buffer has no room");
}

/* ------------------------------------------------------------ checksums */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* RFC 1071 as written: big-endian 16-bit words, a last odd byte padded
 * with zero, the carries folded back in. The fast sum is held to it. */
static uint16_t
ref_sum(const uint8_t *p, uint32_t n)
{
	uint32_t s = 0, i;

	for (i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* pkt_sum()'s result, folded, as the big-endian number RFC 1071 gives. */
static uint16_t
fast_sum(const uint8_t *p, uint32_t n, uint64_t seed)
{
	return rte_be_to_cpu_16(pkt_sum_fold(pkt_sum(p, n, seed)));
}

/* Every length up to 1,600 and a thousand random ones, at every alignment,
 * over random bytes, over 0xff runs (a carry out of nearly every add) and
 * over data that sums to 0xffff; and a sum carried on from a first block
 * of even length into the second. */
static void
test_cksum_sum(void)
{
	static uint8_t buf[2048 + 16];
	uint32_t bad = 0, runs = 0, n, a, k;

	for (k = 0; k < 2600; k++) {
		n = k < 1600 ? k : rng() % 2048;
		a = k % 8;
		for (uint32_t i = 0; i < n; i++)
			buf[a + i] = (uint8_t)rng();
		if (k % 3 == 0) /* carry-heavy */
			memset(buf + a, 0xff, n);
		else if (k % 3 == 1 && n >= 2) { /* ones' complement -0: all ones */
			uint16_t fix = (uint16_t)~ref_sum(buf + a + 2, n - 2);

			buf[a] = (uint8_t)(fix >> 8);
			buf[a + 1] = (uint8_t)fix;
		}
		runs++;
		if (fast_sum(buf + a, n, 0) != ref_sum(buf + a, n)) {
			if (bad++ < 5)
				CHECK(0, "pkt_sum, %u bytes at +%u: %04x, RFC 1071 says %04x", n, a,
				      fast_sum(buf + a, n, 0), ref_sum(buf + a, n));
		}
		if (n >= 2) {
			uint32_t first = (rng() % n) & ~1u;
			uint64_t part = pkt_sum(buf + a, first, 0);

			if (fast_sum(buf + a + first, n - first, part) != ref_sum(buf + a, n) &&
			    bad++ < 5)
				CHECK(0, "pkt_sum carried on after %u of %u bytes", first, n);
		}
	}
	CHECK(bad == 0, "pkt_sum agrees with RFC 1071's sum on %u buffers (%u wrong)", runs, bad);
	/* The fold alone: a sum made of carries. */
	CHECK(pkt_sum_fold(UINT64_MAX) == 0xffff, "fold(2^64 - 1) = %04x",
	      pkt_sum_fold(UINT64_MAX));
	CHECK(pkt_sum_fold(0x0001000000000000ull) == 1, "fold(2^48) = %04x",
	      pkt_sum_fold(0x0001000000000000ull));
	CHECK(pkt_sum_fold(0x00000001ffffffffull) == 1, "fold(2^33 - 1) = %04x",
	      pkt_sum_fold(0x00000001ffffffffull));
	CHECK(pkt_sum_fold(0xffffffffffff0001ull) == 1, "fold(2^64 - 2^16 + 1) = %04x",
	      pkt_sum_fold(0xffffffffffff0001ull)); /* a carry out of every step */
	CHECK(pkt_sum_fold(0) == 0, "fold(0)");
}

/* A TCP segment of n payload bytes (random) behind an IPv6 or IPv4 header
 * at f; returns the L4 offset. The checksum fields are 0. */
static uint32_t
tcp_frame(uint8_t *f, bool v6, uint32_t n)
{
	uint32_t l3 = v6 ? 40 : 20, i;

	memset(f, 0, l3 + 20);
	if (v6) {
		f[0] = 0x60;
		put16(f + 4, (uint16_t)(20 + n));
		f[6] = IPPROTO_TCP;
		f[7] = 64;
		memcpy(f + 8, peer6, 16);
		memcpy(f + 24, our6, 16);
		f[23] = (uint8_t)rng(); /* a varying source */
	} else {
		f[0] = 0x45;
		put16(f + 2, (uint16_t)(20 + 20 + n));
		f[8] = 64;
		f[9] = IPPROTO_TCP;
		memcpy(f + 12, peer4, 4);
		memcpy(f + 16, our4, 4);
		f[15] = (uint8_t)rng();
	}
	for (i = 0; i < 20 + n; i++)
		f[l3 + i] = (uint8_t)rng();
	f[l3 + 12] = 0x50;
	f[l3 + 16] = f[l3 + 17] = 0;
	return l3;
}

/* The L4 checksum against DPDK's own, and its check: right on what was
 * written, wrong after any one bit flips. */
static void
test_cksum_l4(void)
{
	static uint8_t f[2048];
	uint32_t bad = 0, flips_missed = 0, k;

	for (k = 0; k < 800; k++) {
		bool v6 = k & 1;
		uint32_t n = k < 400 ? k : rng() % 1400, l3 = tcp_frame(f, v6, n), l4 = 20 + n;
		uint16_t want, got = pkt_l4_cksum(f, v6, IPPROTO_TCP, f + l3, l4);

		want = v6 ? rte_ipv6_udptcp_cksum((const struct rte_ipv6_hdr *)f, f + l3) :
			    rte_ipv4_udptcp_cksum((const struct rte_ipv4_hdr *)f, f + l3);
		if (got != want && bad++ < 5)
			CHECK(0, "TCP%c checksum of %u bytes: %04x, DPDK says %04x", v6 ? '6' : '4',
			      l4, got, want);
		memcpy(f + l3 + 16, &got, 2);
		if (!pkt_l4_cksum_ok(f, v6, IPPROTO_TCP, f + l3, l4) && bad++ < 5)
			CHECK(0, "a right TCP%c checksum (%u bytes) fails its check",
			      v6 ? '6' : '4', l4);
		{
			uint32_t bit = rng() % (l4 * 8);

			f[l3 + bit / 8] ^= (uint8_t)(1u << (bit % 8));
			flips_missed += pkt_l4_cksum_ok(f, v6, IPPROTO_TCP, f + l3, l4);
		}
	}
	CHECK(bad == 0, "TCP checksums agree with DPDK's and pass their check (%u wrong)", bad);
	CHECK(flips_missed == 0, "%u one-bit flips passed the check", flips_missed);
}

/* What the TX path leaves to the device for each set of offloads: flags,
 * the IPv4 header's field, the TCP field (a full checksum in software, the
 * pseudo-header sum for the device). */
static void
test_cksum_tx(void)
{
	static const uint32_t masks[] = { 0, PKT_TX_IP4_CKSUM, PKT_TX_TCP_CKSUM,
					  PKT_TX_IP4_CKSUM | PKT_TX_TCP_CKSUM };
	static uint8_t f[256];
	uint32_t i;

	for (i = 0; i < 8; i++) {
		bool v6 = i & 1;
		uint32_t m = masks[i / 2], l3 = tcp_frame(f, v6, 37), l4 = 57;
		uint64_t want = 0, fl = pkt_tx_cksum(f, v6, f + l3, l4, m);
		uint16_t tcp_field, ip_field;
		struct rte_ipv4_hdr *h4 = (struct rte_ipv4_hdr *)f;
		struct rte_ipv6_hdr *h6 = (struct rte_ipv6_hdr *)f;

		memcpy(&tcp_field, f + l3 + 16, 2);
		if (!v6 && (m & PKT_TX_IP4_CKSUM))
			want |= RTE_MBUF_F_TX_IP_CKSUM;
		if (m & PKT_TX_TCP_CKSUM)
			want |= RTE_MBUF_F_TX_TCP_CKSUM;
		if (want)
			want |= v6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4;
		CHECK(fl == want, "IPv%c offloads %u: ol_flags %#llx, want %#llx", v6 ? '6' : '4',
		      m, (unsigned long long)fl, (unsigned long long)want);
		if (!v6) {
			ip_field = h4->hdr_checksum;
			h4->hdr_checksum = 0;
			if (m & PKT_TX_IP4_CKSUM)
				CHECK(ip_field == 0, "IPv4 header checksum left 0 for the device");
			else
				CHECK(ip_field == rte_ipv4_cksum(h4), "IPv4 header checksum %04x",
				      ip_field);
			h4->hdr_checksum = ip_field;
		}
		f[l3 + 16] = f[l3 + 17] = 0;
		if (m & PKT_TX_TCP_CKSUM)
			CHECK(tcp_field == (v6 ? rte_ipv6_phdr_cksum(h6, 0) :
						 rte_ipv4_phdr_cksum(h4, 0)),
			      "IPv%c: the TCP field holds the pseudo-header sum for the device",
			      v6 ? '6' : '4');
		else
			CHECK(tcp_field == (v6 ? rte_ipv6_udptcp_cksum(h6, f + l3) :
						 rte_ipv4_udptcp_cksum(h4, f + l3)),
			      "IPv%c: the TCP checksum in software", v6 ? '6' : '4');
	}
}

/* The worker's clock: right to the microsecond, and still right (and
 * moving forward) after years of TSC cycles. */
static void
test_clock(void)
{
	static const uint64_t hzs[] = { 1000000000ull, 2600000000ull, 3999999999ull };
	size_t i;

	for (i = 0; i < 3; i++) {
		uint64_t hz = hzs[i], m = clock_mult(hz);
		uint64_t three_hours = hz * 3 * 3600, ten_years = hz * 3600ull * 24 * 3650;

		CHECK(clock_us(hz, m) >= 999999 && clock_us(hz, m) <= 1000000,
		      "1 s at %llu Hz: %llu us", (unsigned long long)hz,
		      (unsigned long long)clock_us(hz, m));
		CHECK(clock_us(three_hours, m) / 1000000 == 3 * 3600 - 1 ||
			      clock_us(three_hours, m) / 1000000 == 3 * 3600,
		      "3 h: %llu us", (unsigned long long)clock_us(three_hours, m));
		CHECK(clock_us(ten_years + hz, m) > clock_us(ten_years, m),
		      "the clock runs backwards after ten years");
	}
}

int
main(void)
{
	inet_pton(AF_INET6, "2001:db8:1::1", our6);
	inet_pton(AF_INET6, "2001:db8:1::10", peer6);
	inet_pton(AF_INET6, "2001:db8:1::77", other6);
	inet_pton(AF_INET6, "ff02::1", mcast6);
	pkt_local_init(&local, our_mac);
	local.has_ip6 = local.has_ip4 = true;
	memcpy(local.ip6, our6, 16);
	memcpy(local.ip4, our4, 4);
	pkt_solicited_node(our6, sn6);
	pkt_solicited_node(local.ip6_ll, snll);

	test_classify();
	test_truncations();
	test_replies();
	test_clock();
	test_cksum_sum();
	test_cksum_l4();
	test_cksum_tx();
	return check_done();
}
