#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Hostile packets against smtpedge's TCP, in the lab: a spoofed SYN flood
while real Linux clients deliver mail, blind RSTs, blind data injection and
bad checksums against a live session, SYNs to a closed port, and frames
from martian sources (loopback, embedded IPv4, multicast, the edge's own
addresses), which get no answer at all. The forged
frames come from scapy (or a raw socket, for the flood) in the peer
namespace: tests/lab/hostile_send.py. The real sessions are Linux's TCP.
"""
import json
import os
import random
import subprocess
import threading
import time

import faults_lab
import labkit
from labkit import LAB, Edge, expect, delta, in_peer

HERE = labkit.HERE
SEND = os.path.join(HERE, "hostile_send.py")
CLIENT = os.path.join(HERE, "faults_client.py")
EDGE6 = LAB["LAB_EDGE6"]
IFACE = LAB["LAB_PEER_IF"]
POOL_KEYS = faults_lab.POOL_KEYS
HALFOPEN = 4096 // 4 + 16      # conf/lab.conf's flows / 4 + 16


def edge_mac(edge):
    return json.loads(edge.ctl("config", "--json").stdout)["/smtpedge/config"]["mac"]


def run_peer(script, *args, timeout=300):
    r = in_peer("/usr/bin/python3", script, *args, check=False, timeout=timeout)
    if r.returncode != 0:
        raise labkit.Failure(f"{os.path.basename(script)} {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ping_ok():
    r = in_peer("ping", "-c", "3", "-i", "0.2", "-W", "1", "-n", EDGE6, check=False)
    return " 3 received" in r.stdout


class Sampler(threading.Thread):
    """Polls the stats while a load runs: the highest sessions_active seen,
    the lowest mbufs_free."""

    def __init__(self, edge):
        super().__init__(daemon=True)
        self.edge, self.stop, self.max_active, self.min_mbufs, self.n = edge, threading.Event(), 0, None, 0

    def run(self):
        while not self.stop.is_set():
            try:
                s = self.edge.stats()
            except Exception:
                continue
            self.n += 1
            self.max_active = max(self.max_active, s["sessions_active"])
            m = s["pools"]["mbufs_free"]
            self.min_mbufs = m if self.min_mbufs is None else min(self.min_mbufs, m)
            time.sleep(0.2)


def test_syn_flood_real_clients_still_served():
    n, parallel, pps = 200, 16, 5000
    rng = random.Random(5)
    peers = faults_lab.even_bulk_peers()
    plan = [[peers[(7 * i) % len(peers)], rng.randint(1, 4000), 5000 + i] for i in range(n)]
    plan_file = LAB["LAB_DIR"] + "/hostile-plan.json"
    json.dump(plan, open(plan_file, "w"))
    with Edge() as edge:
        before = edge.stats()
        start = before["pools"]
        flood = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", SEND, "flood",
             IFACE, edge_mac(edge), EDGE6, str(pps), "120", "9"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(edge)
        try:
            # The half-open table fills before the first real SYN.
            ok = labkit.wait_for(lambda: delta(edge.stats(), before, "tcp_cookies_sent") > 0, timeout=30)
            expect(ok, "the flood did not overflow the half-open table into cookies: "
                   + json.dumps({k: delta(edge.stats(), before, k) for k in
                                 ("rx_packets", "tcp_segments", "tcp_halfopen_created")})
                   + (flood.stderr.read()[-1500:] if flood.poll() is not None else ""))
            sampler.start()
            r = run_peer(CLIENT, "run", EDGE6, plan_file, str(parallel), timeout=600)
            pinged = ping_ok()
            mid = edge.stats()
        finally:
            sampler.stop.set()
            flood.terminate()
            out, err = flood.communicate(timeout=30)
        expect(flood.returncode == 0 and out, f"flood failed: {err[-1500:]}")
        fl = json.loads(out)
        bad = [x for x in r if x["error"] or x["code"] != 250]
        expect(not bad, f"{len(bad)} of {n} real sessions failed under the flood, e.g. {bad[:3]}")
        bad = faults_lab.check(r)
        expect(not bad, f"{len(bad)} messages not spooled byte-exact: {bad[:3]}")
        expect(pinged, "pings went unanswered during the flood")
        cookies = delta(mid, before, "tcp_cookies_sent")
        expect(cookies > HALFOPEN, f"tcp_cookies_sent {cookies}: the flood did not exceed the half-open table")
        # The real clients came in through cookies: the table was full.
        expect(delta(mid, before, "tcp_cookies_validated") >= 1, "no real client came in by a cookie")
        # Every real session, and nothing of the flood, became a session.
        expect(delta(mid, before, "tcp_opened") == n, f"tcp_opened {delta(mid, before, 'tcp_opened')} for {n} real sessions")
        expect(delta(mid, before, "sessions_opened") == n, "sessions_opened")
        # TCBs: the flood may hold the half-open table (its bound, renewed
        # each 10 s handshake timeout) and no more.
        ho = delta(mid, before, "tcp_halfopen_created")
        bound = HALFOPEN * (1 + int(fl["secs"] // 10) + 1)
        expect(ho <= bound, f"{ho} half-open TCBs in {fl['secs']} s: more than the table's {HALFOPEN}")
        expect(sampler.n >= 3 and sampler.max_active <= parallel,
               f"sessions_active reached {sampler.max_active} with {parallel} real clients ({sampler.n} samples)")
        after = faults_lab.settled(edge, start, timeout=30)
        expect(after["sessions_active"] == 0, f"sessions_active {after['sessions_active']} after the flood")
        for k in POOL_KEYS:
            expect(after["pools"][k] == start[k], f"pools.{k}: {start[k]} before, {after['pools'][k]} after")
        print(f"     {fl['sent']} spoofed SYNs in {fl['secs']} s; cookies {cookies}, half-open "
              f"{delta(mid, before, 'tcp_halfopen_created')}, validated {delta(mid, before, 'tcp_cookies_validated')}, "
              f"max sessions_active {sampler.max_active}, min mbufs_free {sampler.min_mbufs}", flush=True)


def attack(edge, kind, n, seed):
    before = edge.stats()
    r = run_peer(SEND, "session", IFACE, edge_mac(edge), LAB["LAB_PEER6_PTR"], EDGE6, kind,
                 str(n), str(seed), timeout=120)
    expect(r["code"] == 250, f"the session did not deliver after the {kind} attack: {r}")
    r["size"] = "?"
    expect(not faults_lab.check([r]), f"after the {kind} attack the message was not spooled byte-exact")
    expect(r["acks_to_forger"] == 0,
           f"{r['acks_to_forger']} of the edge's ACKs went to the forger's MAC")
    after = labkit.wait_for(lambda: (lambda s: s if s["sessions_active"] == 0 else None)(edge.stats()),
                            timeout=10) or edge.stats()
    expect(delta(after, before, "tcp_reset_by_peer") == 0, "a forged RST reset the session")
    expect(delta(after, before, "sessions_opened") == 1 and after["sessions_active"] == 0,
           "the session did not end cleanly")
    return r, before, after


def test_blind_rsts_in_and_out_of_window():
    with Edge() as edge:
        n = 40
        r, b, a = attack(edge, "rst", n, 1)
        chal = delta(a, b, "tcp_challenge_acks") + delta(a, b, "tcp_challenge_acks_limited")
        expect(chal == n, f"{chal} challenge ACKs (sent or limited) for {n} in-window RSTs")
        expect(delta(a, b, "tcp_challenge_acks") <= 10 * 2,
               f"challenge ACKs not rate-limited: {delta(a, b, 'tcp_challenge_acks')}")
        expect(r["acks_to_client"] >= 1, "no challenge ACK reached the real client")
        oow = delta(a, b, "tcp_drop_out_of_window")
        expect(oow >= n, f"tcp_drop_out_of_window {oow} for {n} out-of-window RSTs")


def test_blind_data_injection():
    with Edge() as edge:
        n = 40
        r, b, a = attack(edge, "inject", n, 2)
        oow = delta(a, b, "tcp_drop_out_of_window")
        expect(oow >= n, f"tcp_drop_out_of_window {oow} for {n} segments outside the window")
        acks = delta(a, b, "tcp_drop_bad_ack") + delta(a, b, "tcp_drop_old_ack")
        expect(acks == n, f"{acks} drops for {n} segments with a forged ACK")


def test_bad_checksums_dropped():
    with Edge() as edge:
        n = 40
        r, b, a = attack(edge, "cksum", n, 3)
        ck = delta(a, b, "drop_tcp_cksum")
        expect(ck == n, f"drop_tcp_cksum {ck} for {n} segments with a bad checksum")


def test_syn_to_closed_port_gets_rate_limited_rst():
    with Edge() as edge:
        before = edge.stats()
        n = 4000
        r = run_peer(SEND, "closed", IFACE, edge_mac(edge), LAB["LAB_PEER6_PTR"], EDGE6, "26", str(n))
        expect(r["rst"] == "RA" and r["rst_ack_ok"], f"no RST+ACK for a SYN to a closed port: {r}")
        after = labkit.wait_for(lambda: (lambda s: s if delta(s, before, "tcp_segments") >= 1 else None)(edge.stats()))
        segs = delta(after, before, "tcp_segments")
        sent, limited = delta(after, before, "tcp_rst_sent"), delta(after, before, "tcp_rst_rate_limited")
        expect(sent + limited == segs, f"{sent} RSTs + {limited} limited for {segs} segments to a closed port")
        expect(limited > 0, f"no RST was rate-limited: {sent} RSTs for {segs} SYNs in {r['secs']} s")
        expect(sent <= 1000 * (1 + r["secs"] + 1), f"{sent} RSTs in {r['secs']} s: more than the 1000/s limit")
        print(f"     {segs} SYNs to a closed port in {r['secs']} s: {sent} RSTs, {limited} limited", flush=True)


def test_martian_sources_get_no_answer():
    with Edge() as edge:
        before = edge.stats()
        r = run_peer(SEND, "martian", IFACE, edge_mac(edge), EDGE6, LAB["LAB_EDGE4"],
                     LAB["LAB_PEER6_PTR"])
        expect(r["control_answered"], f"the control echo from {LAB['LAB_PEER6_PTR']} was not answered: {r}")
        expect(not r["answers"], f"the edge answered martian sources: {r['answers'][:5]}")
        after = labkit.wait_for(lambda: (lambda s: s if all(
            delta(s, before, "drop_" + k) >= n for k, n in r["sent"].items()) else None)(edge.stats()))
        for k, n in r["sent"].items():
            got = delta(after, before, "drop_" + k)
            expect(got == n, f"drop_{k} {got} for {n} frames from martian sources")
        for k in ("tcp_segments", "tcp_rst_sent", "tcp_cookies_sent", "tcp_halfopen_created"):
            expect(delta(after, before, k) == 0, f"{k} moved: a martian frame reached TCP")
        print(f"     dropped, unanswered: {r['sent']}", flush=True)


labkit.main(globals())
