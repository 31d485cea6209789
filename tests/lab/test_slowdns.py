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
"""
import json
import os
import signal
import subprocess

import labkit
from labkit import LAB, Edge, expect, wait_for, delta
from test_ctlplane import conf_with
from test_smtp import EDGE6, PEER, peer, spool_files

PTR6 = LAB["LAB_PEER6_PTR"]
PROXY = f"127.0.0.1@{int(LAB['LAB_DNS_PORT']) + 1}"
DNSDELAY = os.path.join(labkit.ROOT, "scripts/dnsdelay.py")
SLOW_MS = 4000
FLOOD = 16  # more than the work threads (2), fewer than peer.py's timeout allows
FAST = 4
MSG = "From: <x@lab.example>\r\nSubject: slow dns\r\n\r\nHello.\r\n."


class Proxy:
    """dnsdelay.py in the edge namespace, stopped by its own pid."""

    def __enter__(self):
        cmd = ["ip", "netns", "exec", LAB["LAB_EDGE_NS"], "/usr/bin/python3", DNSDELAY,
               "--listen", PROXY, "--upstream", f"127.0.0.1@{LAB['LAB_DNS_PORT']}",
               "--delay-ms", "0", "--slow", f"slow.example={SLOW_MS}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("dnsdelay: "):
            self.proc.kill()
            raise labkit.Failure(f"dnsdelay did not start: {line}")
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def flood_session(i):
    """One slow sender's whole dialogue, in the background."""
    return subprocess.Popen(
        ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", PEER, "dialogue", PTR6,
         EDGE6, "EHLO client.lab.example", f"MAIL FROM:<f{i}@f{i}-{os.getpid()}.slow.example>",
         "RCPT TO:<bob@example.net>", "DATA", MSG, "QUIT"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_slow_spf_flood_leaves_other_senders_unharmed():
    cfg = proxied_conf("slowdns")
    with Proxy(), Edge(cfg) as edge:
        before = edge.stats()
        flood = [flood_session(i) for i in range(FLOOD)]
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
            during = edge.stats()
            waiting = [i for i, p in enumerate(flood) if p.poll() is None]
            expect(during.get("spf_checks_inflight", 0) >= FLOOD,
                   f"the flood's checks ended before the fast senders: {during}")
            expect(len(waiting) == FLOOD,
                   f"flood sessions answered before the fast senders: "
                   f"{FLOOD - len(waiting)} of {FLOOD}")
            # and then the flood is answered too, each on its own check
            for i, p in enumerate(flood):
                out, err = p.communicate(timeout=120)
                expect(p.returncode == 0, f"flood session {i}: {err[-500:]}")
                replies = json.loads(out)["replies"]
                expect(replies[5].startswith("250 2.0.0 "), f"flood session {i}: {replies}")
        finally:
            for p in flood:
                if p.poll() is None:
                    p.kill()
                    p.wait()
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
    with Proxy(), Edge(cfg) as edge:
        before = edge.stats()
        flood = [flood_session(100 + i) for i in range(2)]
        try:
            expect(wait_for(lambda: edge.stats().get("spf_checks_inflight", 0) == 2,
                            timeout=30), f"two checks not in flight: {edge.stats()}")
            r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                     "MAIL FROM:<alice@example.org>", "QUIT")["replies"]
            expect(r[2].startswith("451 4.7.26 "), f"MAIL past the bound: {r}")
            mid = edge.stats()
            expect(delta(mid, before, "mail_spf_busy") == 1, f"mail_spf_busy: {mid}")
            for p in flood:
                p.communicate(timeout=120)
        finally:
            for p in flood:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        expect(wait_for(lambda: edge.stats().get("spf_checks_inflight", 1) == 0),
               f"checks left: {edge.stats()}")
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<alice@example.org>", "QUIT")["replies"]
        expect(r[2].startswith("250 "), f"MAIL after the bound: {r}")


if __name__ == "__main__":
    labkit.main(globals())
