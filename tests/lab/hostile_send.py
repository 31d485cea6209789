#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Hostile TCP from the lab's peer namespace, for tests/lab/test_hostile.py.

Every mode prints one JSON object on stdout.

  flood IFACE EDGE_MAC EDGE6 PPS SECONDS SEED
      Spoofed SYNs to port 25, each from a random address of
      2001:db8:1::/64 (never one of the lab's peers: their interface ids
      start with a zero group, these never do) and a random port, PPS a
      second, until SECONDS pass or SIGTERM. Frames are built by hand and
      sent on a raw packet socket: scapy is too slow for a flood.
      Prints {"sent": N, "secs": T}.
  session IFACE EDGE_MAC SRC EDGE6 ATTACK N SEED
      A real session (Linux's TCP) from SRC: greeting, EHLO, MAIL FROM, and
      then, while the client waits, N forged segments of kind ATTACK for its
      4-tuple, from another MAC (the forger's); then RCPT, DATA, a message
      and QUIT. The sequence numbers the forgeries aim around are read off
      the wire (the segments of the session, sniffed). ATTACK:
        rst     N RSTs in the window (never at rcv_nxt exactly: that one
                is a true reset) and N outside it;
        inject  N segments carrying "RSET\\r\\nQUIT\\r\\n" outside the window
                with a right ACK, and N at rcv_nxt exactly with an ACK for
                data never sent or long acknowledged;
        cksum   N segments carrying "RSET\\r\\nQUIT\\r\\n" at rcv_nxt with the
                right ACK and a wrong checksum.
      Prints {"sent": {what: n}, "code", "qid", "sha256", "acks_to_forger",
      "acks_to_client"}: the last two count the edge's ACKs that reached
      each MAC during the attack.
  closed IFACE EDGE_MAC SRC EDGE6 PORT N
      One SYN to a port nobody listens on, sniffing for the RST; then N more
      as fast as the socket takes them. Prints {"rst": flags or null,
      "rst_ack_ok": bool, "sent": N + 1, "secs": T}.
  martian IFACE EDGE_MAC EDGE6 EDGE4 SRC6
      A TCP SYN to port 25 and an echo request from each martian source
      (IPv6 ::1, IPv4-compatible, -mapped and -translated, the edge's own
      global and link-local addresses; IPv4 0/8, 127/8, 224/4, 240/4,
      255.255.255.255, the edge's own), and an ARP request for EDGE4 from
      127.0.0.1 and from EDGE4; then one echo request from SRC6, which must
      be answered (the sniffer works). Prints {"sent": {drop reason: n},
      "answers": [summaries of frames from the edge to a martian address],
      "control_answered": bool}.
"""
import hashlib
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

from peer import read_reply   # one SMTP reply, multi-line aware

FORGER_MAC = "02:00:5e:00:53:66"
PAYLOAD = b"RSET\r\nQUIT\r\n"


def scapy():
    """scapy, imported only by the modes that use it: it takes seconds to
    load, and the flood must start at once."""
    import scapy.all as sc
    sc.conf.verb = 0
    return sc


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def iface_mac(iface):
    return open(f"/sys/class/net/{iface}/address").read().strip()


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def syn_frame(dmac, smac, src, dst, sport, dport, seq):
    """Ethernet + IPv6 + TCP SYN with an MSS option, checksum right."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, 0x02, 64240, 0, 0)
    tcp += struct.pack("!BBH", 2, 4, 1440)
    pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
    c = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    return dmac + smac + b"\x86\xdd" + ip6 + tcp


def raw_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    return s


def flood(args):
    iface, edge_mac, edge6, pps, secs, seed = args[0], args[1], args[2], int(args[3]), float(args[4]), int(args[5])
    rng = random.Random(seed)
    dmac, smac = mac_bytes(edge_mac), mac_bytes(iface_mac(iface))
    dst = socket.inet_pton(socket.AF_INET6, edge6)
    prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:1::")[:8]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    s = raw_socket(iface)
    sent, t0, batch = 0, time.time(), max(pps // 100, 1)
    while not stop.is_set() and time.time() - t0 < secs:
        for _ in range(batch):
            iid = struct.pack("!HHI", rng.randint(0x1000, 0xffff), rng.getrandbits(16), rng.getrandbits(32))
            s.send(syn_frame(dmac, smac, prefix + iid, dst, rng.randint(1024, 65535), 25,
                             rng.getrandbits(32)))
            sent += 1
        # Pace to PPS: sleep until this batch is due.
        ahead = sent / pps - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)
    print(json.dumps({"sent": sent, "secs": round(time.time() - t0, 2)}))


def command(s, f, line, code):
    s.sendall(line + b"\r\n")
    got = read_reply(f)
    if not got.startswith(code):
        raise SystemExit(f"{line!r}: {got!r}")
    return got


def wire_state(pkts, cport, edge_ws):
    """rcv_nxt, window and snd_nxt of the edge for this session, from the
    segments seen on the wire."""
    TCP = scapy().TCP
    rcv_nxt = snd_nxt = wnd = None
    for p in pkts:
        t = p[TCP]
        n = len(bytes(t.payload)) + (1 if t.flags & 0x03 else 0)
        if t.sport == cport:                       # client -> edge
            rcv_nxt = (t.seq + n) & 0xffffffff
        elif t.dport == cport:                     # edge -> client
            snd_nxt = (t.seq + n) & 0xffffffff
            wnd = t.window << (0 if t.flags & 0x02 else edge_ws)
    return rcv_nxt, wnd, snd_nxt


def make_message(seed, size=20000):
    rng = random.Random(seed)
    head = f"From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: hostile {seed}\r\n\r\n".encode()
    body = b"".join(bytes(rng.choice(b"abcdefghij .-") for _ in range(rng.randint(0, 70))) + b"\r\n"
                    for _ in range(size // 36))
    return head + body


def session(args):
    iface, edge_mac, src, edge6, attack, n, seed = args[0], args[1], args[2], args[3], args[4], int(args[5]), int(args[6])
    sc = scapy()
    IPv6, TCP, Ether = sc.IPv6, sc.TCP, sc.Ether
    rng = random.Random(seed)
    client_mac = iface_mac(iface)
    seen = []

    def ours(p):
        return p.haslayer(TCP) and p.haslayer(IPv6) and cport and cport in (p[TCP].sport, p[TCP].dport)

    cport = None
    sniffer = sc.AsyncSniffer(iface=iface, store=False, prn=lambda p: seen.append(p) if ours(p) else None)
    sniffer.start()
    time.sleep(0.5)
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(30)
    s.bind((src, 0))
    cport = s.getsockname()[1]
    s.connect((edge6, 25))
    f = s.makefile("rb")
    read_reply(f)
    command(s, f, b"EHLO hostile.lab.example", "250")
    command(s, f, b"MAIL FROM:<a@example.org>", "250")
    time.sleep(0.3)                                # the wire is quiet now
    syn_ack = [p for p in seen if p[TCP].dport == cport and p[TCP].flags & 0x12 == 0x12]
    ws = dict((o[0], o[1]) for o in syn_ack[0][TCP].options).get("WScale", 0) if syn_ack else 0
    rcv_nxt, wnd, snd_nxt = wire_state(list(seen), cport, ws)
    if None in (rcv_nxt, wnd, snd_nxt) or wnd < 2:
        raise SystemExit(f"could not read the session's state off the wire: {rcv_nxt} {wnd} {snd_nxt}")
    mark = len(seen)
    ip = IPv6(src=src, dst=edge6)
    eth = Ether(src=FORGER_MAC, dst=edge_mac)
    frames, sent = [], {}

    def seg(flags, seq, ack=0, data=b"", **kw):
        return eth / ip / TCP(sport=cport, dport=25, flags=flags, seq=seq & 0xffffffff,
                              ack=ack & 0xffffffff, window=502, **kw) / data

    if attack == "rst":
        for _ in range(n):
            frames.append(seg("R", rcv_nxt + rng.randint(1, wnd - 1)))
            frames.append(seg("R", rcv_nxt + rng.randint(wnd, (1 << 32) - 1)))
        sent = {"rst_in_window": n, "rst_out_of_window": n}
    elif attack == "inject":
        for _ in range(n):
            frames.append(seg("PA", rcv_nxt + rng.randint(wnd, (1 << 32) - len(PAYLOAD) - 1), snd_nxt, PAYLOAD))
            frames.append(seg("PA", rcv_nxt, snd_nxt + rng.choice([1 << 20, -(1 << 30)]), PAYLOAD))
        sent = {"data_out_of_window": n, "data_bad_ack": n}
    elif attack == "cksum":
        for _ in range(n):
            good = seg("PA", rcv_nxt, snd_nxt, PAYLOAD)
            c = Ether(bytes(good))[TCP].chksum
            frames.append(seg("PA", rcv_nxt, snd_nxt, PAYLOAD, chksum=c ^ rng.randint(1, 0xffff)))
        sent = {"bad_cksum": n}
    else:
        raise SystemExit(f"no attack {attack}")
    rng.shuffle(frames)
    sc.sendp(frames, iface=iface)
    time.sleep(0.5)
    during = seen[mark:]
    acks = [p for p in during if p[TCP].dport == cport]
    to_forger = sum(1 for p in acks if p[Ether].dst.lower() == FORGER_MAC)
    to_client = sum(1 for p in acks if p[Ether].dst.lower() == client_mac.lower())
    # The session goes on as if nothing happened.
    msg = make_message(seed)
    command(s, f, b"RCPT TO:<b@example.net>", "250")
    command(s, f, b"DATA", "354")
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    s.sendall(stuffed + b".\r\n")
    end = read_reply(f)
    command(s, f, b"QUIT", "221")
    s.close()
    sniffer.stop()
    print(json.dumps({"sent": sent, "code": int(end[:3]), "qid": end.split()[-1],
                      "sha256": hashlib.sha256(msg).hexdigest(), "acks_to_forger": to_forger,
                      "acks_to_client": to_client, "port": cport}))


def closed(args):
    iface, edge_mac, src, edge6, port, n = args[0], args[1], args[2], args[3], int(args[4]), int(args[5])
    sc = scapy()
    TCP = sc.TCP
    got = []
    sniffer = sc.AsyncSniffer(iface=iface, store=False,
                           prn=lambda p: got.append(p) if p.haslayer(TCP) and p[TCP].sport == port else None)
    sniffer.start()
    time.sleep(0.5)
    dmac, smac = mac_bytes(edge_mac), mac_bytes(iface_mac(iface))
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, edge6)
    rs = raw_socket(iface)
    rs.send(syn_frame(dmac, smac, s6, d6, 40000, port, 1000))
    deadline = time.time() + 3
    while not got and time.time() < deadline:
        time.sleep(0.05)
    first = got[0][TCP] if got else None
    rng = random.Random(5)
    frames = [syn_frame(dmac, smac, s6, d6, rng.randint(1024, 65535), port, rng.getrandbits(32))
              for _ in range(n)]
    t0 = time.time()
    for fr in frames:
        rs.send(fr)
    secs = time.time() - t0
    time.sleep(0.5)
    sniffer.stop()
    print(json.dumps({"rst": str(first.flags) if first else None,
                      "rst_ack_ok": bool(first and first.ack == 1001 and first.dport == 40000),
                      "sent": n + 1, "secs": round(secs, 3)}))


def link_local(mac):
    """fe80::/64 with the modified EUI-64 of MAC, as the edge forms it."""
    m = mac_bytes(mac)
    iid = bytes([m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
    return socket.inet_ntop(socket.AF_INET6, b"\xfe\x80" + b"\0" * 6 + iid)


def martian(args):
    iface, edge_mac, edge6, edge4, src6 = args[:5]
    sc = scapy()
    Ether, IPv6, IP, TCP, ICMP, ARP = sc.Ether, sc.IPv6, sc.IP, sc.TCP, sc.ICMP, sc.ARP
    Echo6, Reply6 = sc.ICMPv6EchoRequest, sc.ICMPv6EchoReply
    mine = iface_mac(iface)
    from_edge = []
    sniffer = sc.AsyncSniffer(iface=iface, store=False,
                              prn=lambda p: from_edge.append(p) if p[Ether].src.lower() == edge_mac.lower() else None)
    sniffer.start()
    time.sleep(0.5)
    eth = Ether(src=mine, dst=edge_mac)
    v6 = {"ip6_martian": ["::1", "::198.51.100.10", "::ffff:198.51.100.10", "::ffff:0:198.51.100.10"],
          "src_ours": [edge6, link_local(edge_mac)]}
    v4 = {"ip4_martian": ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255"],
          "src_ours": [edge4]}
    frames, sent = [], {}
    for why, srcs in v6.items():
        for a in srcs:
            frames.append(eth / IPv6(src=a, dst=edge6) / TCP(sport=40000, dport=25, flags="S", seq=1000))
            frames.append(eth / IPv6(src=a, dst=edge6) / Echo6(id=0x4d41, seq=1))
            sent[why] = sent.get(why, 0) + 2
    for why, srcs in v4.items():
        for a in srcs:
            frames.append(eth / IP(src=a, dst=edge4) / TCP(sport=40000, dport=25, flags="S", seq=1000))
            frames.append(eth / IP(src=a, dst=edge4) / ICMP(type=8, id=0x4d41, seq=1))
            sent[why] = sent.get(why, 0) + 2
    for why, a in (("ip4_martian", "127.0.0.1"), ("src_ours", edge4)):
        frames.append(Ether(src=mine, dst="ff:ff:ff:ff:ff:ff") /
                      ARP(op=1, hwsrc=mine, psrc=a, pdst=edge4))
        sent[why] += 1
    sc.sendp(frames, iface=iface)
    time.sleep(1.0)
    # An answer is a frame from the edge to one of those sources (the peer's
    # kernel may meanwhile ask the edge for its address, and be answered).
    martians6 = {socket.inet_pton(socket.AF_INET6, a) for srcs in v6.values() for a in srcs}
    martians4 = {a for srcs in v4.values() for a in srcs} | {"127.0.0.1", edge4}

    def to_martian(p):
        if p.haslayer(IPv6):
            return socket.inet_pton(socket.AF_INET6, p[IPv6].dst) in martians6
        return (p.haslayer(IP) and p[IP].dst in martians4) or \
            (p.haslayer(ARP) and p[ARP].pdst in martians4)
    answers = [p.summary() for p in from_edge if to_martian(p)]
    # The control: an ordinary source is answered.
    sc.sendp(eth / IPv6(src=src6, dst=edge6) / Echo6(id=0x4f4b, seq=1), iface=iface)
    deadline = time.time() + 3
    control = False
    while time.time() < deadline and not control:
        control = any(p.haslayer(Reply6) and p[Reply6].id == 0x4f4b for p in from_edge)
        time.sleep(0.05)
    sniffer.stop()
    print(json.dumps({"sent": sent, "answers": answers, "control_answered": control}))


if __name__ == "__main__":
    {"flood": flood, "session": session, "closed": closed, "martian": martian}[sys.argv[1]](sys.argv[2:])
