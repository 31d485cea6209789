#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/dkim/dns_server.py — the DKIM tests' authoritative DNS on loopback.

Why not unbound: the tests also need a server that answers SERVFAIL, and
one that never answers, for chosen names. This one serves a small zone file
over UDP on 127.0.0.1, on a port the kernel picks, and prints that port on
its first line of output. It exits when its standard input closes, so it
cannot outlive the test that started it.

Zone file lines (# starts a comment):
    NAME TXT TEXT...    one TXT record; TEXT is cut into 255-byte strings
    NAME SERVFAIL       answer SERVFAIL
    NAME DROP           never answer
Any other name is NXDOMAIN. Needs python3-dnspython.
"""
import select
import socket
import sys

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT


def load(path):
    zone = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(" ", 2)
            name = parts[0].lower().rstrip(".") + "."
            kind = parts[1]
            if kind == "TXT":
                zone.setdefault(name, []).append(parts[2].encode("ascii"))
            else:
                zone[name] = kind
    return zone


def txt_rdata(text):
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT,
                                   chunks)


def answer(zone, wire):
    query = dns.message.from_wire(wire)
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA | dns.flags.RA
    question = query.question[0]
    entry = zone.get(question.name.to_text().lower())
    if entry == "DROP":
        return None
    if entry == "SERVFAIL":
        resp.set_rcode(dns.rcode.SERVFAIL)
    elif entry is None:
        resp.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.TXT:
        rrset = resp.find_rrset(resp.answer, question.name,
                                dns.rdataclass.IN, dns.rdatatype.TXT,
                                create=True)
        for text in entry:
            rrset.add(txt_rdata(text), ttl=60)
    limit = query.payload if query.edns >= 0 else 512
    return resp.to_wire(max_size=max(limit, 512))


def main():
    zone = load(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    # One write of the whole line: the test reads up to the newline.
    sys.stdout.buffer.write(b"%d\n" % sock.getsockname()[1])
    sys.stdout.buffer.flush()
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.buffer.read1(4096):
            return
        if sock in ready:
            wire, peer = sock.recvfrom(65535)
            try:
                reply = answer(zone, wire)
            except Exception as exc:  # a test server: say why, go on
                print("dns_server: %s" % exc, file=sys.stderr, flush=True)
                continue
            if reply is not None:
                sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
