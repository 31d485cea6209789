#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""scripts/dnsdelay.py — a DNS forwarder that answers late, for tests and benchmarks.

The lab's unbound answers in microseconds; resolvers on the internet miss
their caches and take tens or hundreds of milliseconds, more for a slow
domain. This proxy sits in front of a real server (UDP and TCP on the same
port) and holds every answer for --delay-ms before it goes back; a query
whose name is under a --slow SUFFIX=MS suffix is held MS instead. The
answer itself is the server's, byte for byte: only its timing changes.

The delay runs from the first time a question (name and type) is asked:
a resolver that retransmits while it waits (unbound does, from a timeout
learned on the fast answers) gets its later copies answered at that same
moment, not D ms after each copy. Otherwise every copy would start the
wait again and a slow name would look dead to the resolver, as a slow
authoritative server does not.

usage: dnsdelay.py --listen 127.0.0.1@5354 --upstream 127.0.0.1@5353
                   [--delay-ms D] [--slow SUFFIX=MS]... [--pidfile PATH]

It runs until SIGTERM or SIGINT. Each query is forwarded on its own socket
(UDP) or connection (TCP), so a held answer holds nothing else.
"""
import argparse
import asyncio
import os
import signal
import socket
import struct
import sys
import time

UPSTREAM_TIMEOUT_S = 10
FIRST_ASKED_KEEP_S = 60  # a question's first time is forgotten after this


def question(msg):
    """The question's name (lower case, no final dot) and type; ("", 0)
    when the message is too short or malformed to tell."""
    labels, off = [], 12
    try:
        if len(msg) < 12 or struct.unpack("!H", msg[4:6])[0] < 1:
            return "", 0
        while True:
            n = msg[off]
            if n == 0:
                break
            if n & 0xC0:  # no compression in a question we can use
                return "", 0
            labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
            off += 1 + n
        qtype = struct.unpack("!H", msg[off + 1:off + 3])[0]
    except (IndexError, struct.error):
        return "", 0
    return ".".join(labels).lower(), qtype


def addr(text):
    host, _, port = text.rpartition("@")
    return (host, int(port)) if host else (text, 53)


class Delays:
    def __init__(self, default_ms, slow):
        self.default_ms = default_ms
        self.slow = []
        for item in slow:
            suffix, _, ms = item.partition("=")
            if not suffix or not ms.isdigit():
                raise SystemExit(f"dnsdelay: --slow {item!r}: want SUFFIX=MS")
            self.slow.append((suffix.lower().strip("."), int(ms)))

        self.first = {}  # (name, type) -> when first asked

    def of(self, msg):
        """Seconds to hold this message's answer from now."""
        name, qtype = question(msg)
        delay = self.default_ms / 1000
        for suffix, ms in self.slow:
            if name == suffix or name.endswith("." + suffix):
                delay = ms / 1000
                break
        now = time.monotonic()
        if len(self.first) > 10000:
            self.first = {k: t for k, t in self.first.items()
                          if now - t < FIRST_ASKED_KEEP_S}
        first = self.first.get((name, qtype))
        if first is None or now - first >= FIRST_ASKED_KEEP_S:
            first = self.first[(name, qtype)] = now
        return max(0.0, first + delay - now)


async def ask_udp(upstream, msg):
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, upstream)
        await loop.sock_sendall(s, msg)
        return await asyncio.wait_for(loop.sock_recv(s, 65535), UPSTREAM_TIMEOUT_S)
    finally:
        s.close()


async def ask_tcp(upstream, msg):
    r, w = await asyncio.wait_for(asyncio.open_connection(*upstream), UPSTREAM_TIMEOUT_S)
    try:
        w.write(struct.pack("!H", len(msg)) + msg)
        await w.drain()
        n = struct.unpack("!H", await asyncio.wait_for(r.readexactly(2), UPSTREAM_TIMEOUT_S))[0]
        return await asyncio.wait_for(r.readexactly(n), UPSTREAM_TIMEOUT_S)
    finally:
        w.close()


class UdpFront(asyncio.DatagramProtocol):
    def __init__(self, upstream, delays):
        self.upstream, self.delays = upstream, delays

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, peer):
        asyncio.ensure_future(self.answer(data, peer))

    async def answer(self, data, peer):
        delay = self.delays.of(data)
        try:
            reply = await ask_udp(self.upstream, data)
        except (OSError, asyncio.TimeoutError):
            return  # the client retries, as it would on the internet
        await asyncio.sleep(delay)
        self.transport.sendto(reply, peer)


def tcp_front(upstream, delays):
    async def serve(r, w):
        try:
            while True:
                n = struct.unpack("!H", await r.readexactly(2))[0]
                msg = await r.readexactly(n)
                delay = delays.of(msg)
                reply = await ask_tcp(upstream, msg)
                await asyncio.sleep(delay)
                w.write(struct.pack("!H", len(reply)) + reply)
                await w.drain()
        except (asyncio.IncompleteReadError, OSError, asyncio.TimeoutError):
            pass
        finally:
            w.close()
    return serve


async def run(args):
    loop = asyncio.get_running_loop()
    delays = Delays(args.delay_ms, args.slow)
    listen, upstream = addr(args.listen), addr(args.upstream)
    fam = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    udp, _ = await loop.create_datagram_endpoint(
        lambda: UdpFront(upstream, delays), local_addr=listen, family=fam)
    tcp = await asyncio.start_server(tcp_front(upstream, delays), *listen)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    print(f"dnsdelay: {args.listen} -> {args.upstream}, {args.delay_ms} ms"
          + "".join(f", {s}" for s in args.slow), flush=True)
    await stop
    udp.close()
    tcp.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="address@port to serve on")
    p.add_argument("--upstream", required=True, help="address@port of the real server")
    p.add_argument("--delay-ms", type=int, default=0, help="every answer held this long")
    p.add_argument("--slow", action="append", default=[], metavar="SUFFIX=MS",
                   help="names under SUFFIX held MS instead (may be repeated)")
    p.add_argument("--pidfile")
    args = p.parse_args()
    if args.delay_ms < 0:
        sys.exit("dnsdelay: --delay-ms must not be negative")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
