#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Sends broken frames at smtpedge from the peer namespace (scapy).

usage: malformed.py kinds|garbage IFACE EDGE_MAC EDGE6 EDGE4 PEER6 PEER4 N SEED
kinds: N frames of each kind of breakage; prints a JSON object saying, for
each drop counter, how many frames sent must land in it.
garbage: 4*N random frames after a valid Ethernet header; prints
{"garbage": count}: each must be dropped, for whatever reason.
"""
import json
import random
import sys

from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6EchoReply,
                       ICMPv6EchoRequest,
                       ICMPv6ND_NS, IPOption_NOP, IPv6, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, conf, sendp)

mode, iface, mac, edge6, edge4, peer6, peer4, n, seed = sys.argv[1:10]
n = int(n)
rng = random.Random(int(seed))
conf.verb = 0

e = lambda: Ether(dst=mac)
i4 = lambda **kw: IP(src=peer4, dst=edge4, **kw)
i6 = lambda **kw: IPv6(src=peer6, dst=edge6, **kw)


def ip4_version():
    b = bytearray(bytes(e() / i4() / ICMP()))
    b[14] = 0x55
    return bytes(b)


def tcp_doff():
    b = bytearray(bytes(e() / i6() / TCP(dport=25, flags="S")))
    b[14 + 40 + 12] = 0xf0   # 60-byte header in a 20-byte segment
    return bytes(b)


# counter -> builders of frames that must be dropped for that reason
KINDS = {
    "drop_ip4_cksum": [lambda: e() / i4(chksum=0x1234) / ICMP()],
    # No IPv4 fragments here: the af_packet PMD joins a PACKET_FANOUT group
    # with the DEFRAG flag, so the kernel holds fragments for reassembly and
    # they never reach DPDK in the lab. tests/unit/test_pkt.c covers them.
    "drop_ip4_options": [lambda: e() / i4(options=[IPOption_NOP()] * 4) / ICMP()],
    "drop_ip4_hdr": [lambda: e() / i4(len=1000) / ICMP(), ip4_version],
    "drop_ip6_exthdr": [lambda: e() / i6() / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(),
                        lambda: e() / i6() / IPv6ExtHdrFragment() / ICMPv6EchoRequest()],
    "drop_ip6_hdr": [lambda: e() / i6(plen=500) / ICMPv6EchoRequest()],
    "drop_icmp6_cksum": [lambda: e() / i6() / ICMPv6EchoRequest(cksum=0x1234)],
    "drop_icmp_cksum": [lambda: e() / i4() / ICMP(chksum=0x1234)],
    "drop_tcp_cksum": [lambda: e() / i6() / TCP(dport=25, chksum=0x1234),
                       lambda: e() / i4() / TCP(dport=25, chksum=0x1234)],
    "drop_tcp_hdr": [tcp_doff],
    "drop_l4_proto": [lambda: e() / i6() / UDP(dport=53), lambda: e() / i4() / UDP(dport=53)],
    "drop_ethertype": [lambda: e() / Dot1Q(vlan=7) / i6() / ICMPv6EchoRequest()],
    "drop_arp_invalid": [lambda: Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(hwlen=8, pdst=edge4)],
    "drop_nd_invalid": [lambda: Ether(dst=mac) / IPv6(src=peer6, dst=edge6, hlim=64) / ICMPv6ND_NS(tgt=edge6)],
    # An unsolicited echo reply: valid checksum, a type we do not answer.
    "drop_icmp6_type": [lambda: e() / i6() / ICMPv6EchoReply()],
}

sent = {}
frames = []
if mode == "kinds":
    for counter, builders in KINDS.items():
        for k in range(n):
            frames.append(bytes(builders[k % len(builders)]()))
        sent[counter] = n
else:
    for _ in range(n * 4):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        ethertype = rng.choice([0x0800, 0x86dd, 0x0806, rng.getrandbits(16)])
        frames.append(bytes(Ether(dst=mac, type=ethertype)) + body)
    sent["garbage"] = len(frames)
rng.shuffle(frames)
sendp(frames, iface=iface)
print(json.dumps(sent))
