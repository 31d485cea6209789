#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/lab/test_slowdns.py — slow DNS for some senders must not hold up the others.

smtpedge's [dns] server is scripts/dnsdelay.py, in front of the lab's
unbound: answers come back at once, except those for names under
slow.example, which are held for seconds. A flood of sessions whose MAIL
FROM domains are under slow.example (each its own, so no cache helps) sends
a message each; their SPF checks wait on the slow answers, and their end
of DATA waits for the checks. Meanwhile other senders, whose domain
answers at once (SPF pass), deliver: every one of them must get its 250,
and its message must be in the spool, while the flood's checks are still
in flight (the spf_checks_inflight gauge) and no flood session has had its
reply yet. Afterwards the flood's messages are accepted too.

On a control plane whose work threads wait for SPF, the flood's checks
take every work thread and the others' deliveries queue behind them.

The same holds for reverse DNS: with one peer's PTR answers held back, its
sessions wait at MAIL for their verdict while other senders deliver, and
the dispatcher, polling the one dnsq that carries both kinds of query,
answers each in turn.
"""
import ipaddress
import json
import os
import subprocess
import threading

import labkit
from labkit import LAB, Edge, expect, wait_for, delta
from test_ctlplane import conf_with
from test_smtp import EDGE6, peer, spool_files

PTR6 = LAB["LAB_PEER6_PTR"]
NOPTR6 = LAB["LAB_PEER6_NOPTR"]
PROXY = f"127.0.0.1@{int(LAB['LAB_DNS_PORT']) + 1}"
SLOW_MS = 6000
FLOOD = 16  # more than the work threads (2), fewer than peer.py's timeout allows
FAST = 4


def proxied_conf(name, **sections):
    """conf/lab.conf (and sections) with the proxy as the one DNS server, and
    a query deadline longer than the slow answers take."""
    path = conf_with(name, **sections)
    text = open(path).read()
    for old, new in (("server = 127.0.0.1@5353", f"server = {PROXY}"),
                     ("timeout_ms = 3000", "timeout_ms = 30000")):
        expect(old in text, f"conf/lab.conf has no '{old}'")
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)
    return path


# The flood, as one process in the peer namespace: every session at once,
# each printing its index and its reply to the end of DATA as it comes.
FLOOD_CLIENT = r"""
import asyncio, json, sys
src, dst, first, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            return "closed"
        if len(line) < 4 or line[3:4] != b"-":
            return line.decode().rstrip()
async def session(i):
    r, w = await asyncio.open_connection(dst, 25, local_addr=(src, 0))
    await reply(r)
    for cmd in ("EHLO client.lab.example", f"MAIL FROM:<f{i}@f{i}-{tag}.slow.example>",
                "RCPT TO:<bob@example.net>", "DATA"):
        w.write(cmd.encode() + b"\r\n")
        await reply(r)
    w.write(b"From: <x@lab.example>\r\nSubject: slow dns\r\n\r\nHello.\r\n.\r\n")
    got = await reply(r)
    print(json.dumps([i, got]), flush=True)
    w.write(b"QUIT\r\n")
    await reply(r)
    w.close()
async def main():
    await asyncio.gather(*(asyncio.wait_for(session(i), 120) for i in range(first, first + n)))
asyncio.run(main())
"""


class Flood:
    """FLOOD_CLIENT running; .replies maps a session to its DATA reply."""

    def __init__(self, first, n):
        self.replies = {}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", "-c", FLOOD_CLIENT,
             PTR6, EDGE6, str(first), str(n), str(os.getpid())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            i, reply = json.loads(line)
            self.replies[i] = reply

    def wait(self, timeout=150):
        self.proc.wait(timeout)
        self.reader.join(5)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_slow_spf_flood_leaves_other_senders_unharmed():
    cfg = proxied_conf("slowdns")
    with labkit.DnsDelay(PROXY, "slow.example", SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        flood = Flood(0, FLOOD)
        try:
            inflight = wait_for(lambda: (lambda s: s if s.get("spf_checks_inflight", 0) >= FLOOD
                                         else None)(edge.stats()), timeout=30)
            expect(inflight, f"the flood's checks are not in flight: {edge.stats()}")
            before_files = spool_files()
            for k in range(FAST):
                r = peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net", "800",
                         str(k))
                expect(r["code"] == 250, f"fast sender {k}: {r}")
                qid = r["text"].split()[-1]
                new = [p for p in spool_files() - before_files
                       if f"id {qid}".encode() in open(p, "rb").read(600)]
                expect(len(new) == 1, f"fast sender {k}: queue id {qid}: {len(new)} files")
            # all of that happened while the flood's checks were waiting
            answered = dict(flood.replies)
            during = edge.stats()
            expect(during.get("spf_checks_inflight", 0) >= FLOOD,
                   f"the flood's checks ended before the fast senders: {during}")
            expect(not answered, f"flood sessions answered before the fast senders: {answered}")
            # and then the flood is answered too, each on its own check
            expect(flood.wait() == 0, f"the flood: {flood.proc.stderr.read()[-1000:]}")
            expect(len(flood.replies) == FLOOD and
                   all(r.startswith("250 2.0.0 ") for r in flood.replies.values()),
                   f"the flood's replies: {flood.replies}")
        finally:
            flood.stop()
        after = wait_for(lambda: (lambda s: s if s.get("spf_checks_inflight", 1) == 0
                                  else None)(edge.stats()))
        expect(after, f"checks left in flight: {edge.stats()}")
        expect(delta(after, before, "spf_deliveries_parked") >= FLOOD,
               f"spf_deliveries_parked: {after}")
        expect(delta(after, before, "spf_checks_early") >= FLOOD + FAST,
               f"spf_checks_early: {after}")
        expect(delta(after, before, "spf_passes") >= 2 * (FLOOD + FAST),
               f"spf_passes: {after}")


def test_max_spf_checks_answers_451_past_the_bound():
    # With room for two checks, two slow MAILs fill it: the next MAIL gets
    # the temporary 451 4.7.26, counted, and once they are done MAIL works
    # again.
    cfg = proxied_conf("slowdns-bound", control={"max_spf_checks": 2})
    with labkit.DnsDelay(PROXY, "slow.example", SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        flood = Flood(100, 2)
        try:
            expect(wait_for(lambda: edge.stats().get("spf_checks_inflight", 0) == 2,
                            timeout=30), f"two checks not in flight: {edge.stats()}")
            r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                     "MAIL FROM:<alice@example.org>", "QUIT")["replies"]
            expect(r[2].startswith("451 4.7.26 "), f"MAIL past the bound: {r}")
            mid = edge.stats()
            expect(delta(mid, before, "mail_spf_busy") == 1, f"mail_spf_busy: {mid}")
            expect(flood.wait() == 0, f"the flood: {flood.proc.stderr.read()[-1000:]}")
        finally:
            flood.stop()
        expect(wait_for(lambda: edge.stats().get("spf_checks_inflight", 1) == 0),
               f"checks left: {edge.stats()}")
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<alice@example.org>", "QUIT")["replies"]
        expect(r[2].startswith("250 "), f"MAIL after the bound: {r}")


def test_rset_cancels_the_transactions_spf_check():
    # MAIL+RSET pairs from one session against slow domains: each RSET lets
    # go of its transaction's check, so none is left in flight, and every
    # one is counted cancelled (the last one too, which no later MAIL
    # would cancel).
    pairs = 5
    cfg = proxied_conf("slowdns-rset")
    with labkit.DnsDelay(PROXY, "slow.example", SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        cmds = ["EHLO client.lab.example"]
        for i in range(pairs):
            cmds += [f"MAIL FROM:<r{i}@r{i}-{os.getpid()}.slow.example>", "RSET"]
        r = peer("dialogue", PTR6, EDGE6, *cmds, "QUIT")["replies"]
        expect(all(x.startswith("250 ") for x in r[2:2 + 2 * pairs]), f"replies: {r}")
        after = wait_for(lambda: (lambda s: s if delta(s, before, "spf_checks_cancelled") >= pairs
                                  else None)(edge.stats()), timeout=30)
        expect(after, f"spf_checks_cancelled: {edge.stats()}")
        expect(delta(after, before, "spf_checks_cancelled") == pairs,
               f"spf_checks_cancelled: {after}")
        expect(after.get("spf_checks_inflight", 1) == 0, f"checks left in flight: {after}")


def rdns_out(now, before):
    """Lookups asked for since before and not answered yet."""
    done = sum(delta(now, before, k) for k in
               ("rdns_pass", "rdns_none", "rdns_mismatch", "rdns_temperror", "rdns_busy"))
    return delta(now, before, "rdns_requests") - done


def test_slow_ptr_answers_leave_other_senders_unharmed():
    # The no-PTR peer's reverse name answers SLOW_MS late: its sessions
    # wait at MAIL while a sender whose PTR answers at once delivers, and
    # only then do they get the no-PTR refusal.
    sessions = 4
    rev = ipaddress.ip_address(NOPTR6).reverse_pointer
    cfg = proxied_conf("slowdns-ptr")
    with labkit.DnsDelay(PROXY, rev, SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        replies = {}

        def slow(i):
            replies[i] = peer("dialogue", NOPTR6, EDGE6, "EHLO client.lab.example",
                              "MAIL FROM:<alice@example.org>", "QUIT")["replies"]

        threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(sessions)]
        for t in threads:
            t.start()
        out = wait_for(lambda: (lambda s: s if rdns_out(s, before) >= sessions else None)(
            edge.stats()), timeout=30)
        expect(out, f"the slow lookups are not in flight: {edge.stats()}")
        for k in range(FAST):
            r = peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net", "800",
                     str(100 + k))
            expect(r["code"] == 250, f"fast sender {k}: {r}")
        during = edge.stats()
        answered = dict(replies)
        expect(rdns_out(during, before) >= sessions,
               f"the slow lookups ended before the fast senders: {during}")
        expect(not answered, f"slow-PTR sessions answered before the fast senders: {answered}")
        for t in threads:
            t.join(60)
        expect(len(replies) == sessions and
               all(r[2].startswith("550 5.7.25 ") for r in replies.values()),
               f"the slow-PTR sessions' MAIL replies: {replies}")
        after = edge.stats()
        expect(rdns_out(after, before) == 0, f"lookups left in flight: {after}")
        expect(delta(after, before, "rdns_none") >= sessions, f"rdns_none: {after}")


if __name__ == "__main__":
    labkit.main(globals())
