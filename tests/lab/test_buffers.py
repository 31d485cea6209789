#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Memory follows activity, in the lab: an SMTP session holds a session
buffer (its reply queue, held input, command line) only while it has bytes
in flight, from a per-worker pool of [dataplane] session_buffers.

Idle sessions, greeted and past EHLO, must hold none. And when many
concurrent senders share a pool far smaller than they need, the ones that
find it dry wait (their TCP window closes) and go on when buffers come
back: every message still arrives byte-exact in the spool, every session
ends, and every buffer comes back. Linux's own TCP in the peer namespace
is every client.
"""
import json
import os
import random
import subprocess

import faults_lab
import labkit
from labkit import LAB, Edge, expect, delta

CLIENT = os.path.join(labkit.HERE, "faults_client.py")
EDGE6 = LAB["LAB_EDGE6"]
POOL_KEYS = faults_lab.POOL_KEYS
settled, even_bulk_peers = faults_lab.settled, faults_lab.even_bulk_peers

# Holds N connections from SRC addresses, each greeted and past EHLO, then
# prints "ready" and sleeps until killed.
HOLDER = r"""
import socket, sys, time
dst, srcs, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((srcs[i % len(srcs)], 0))
    s.settimeout(20)
    s.connect((dst, 25))
    f = s.makefile("rb")
    if not f.readline().startswith(b"220 "):
        sys.exit("no greeting")
    s.sendall(b"EHLO idle.example.org\r\n")
    while True:
        line = f.readline()
        if not line.startswith(b"250"):
            sys.exit(f"EHLO: {line!r}")
        if line[3:4] == b" ":
            break
    socks.append((s, f))
print("ready", flush=True)
time.sleep(600)
"""


def conf(**dataplane):
    """conf/lab.conf with some [dataplane] keys added."""
    text = open(os.path.join(labkit.ROOT, "conf/lab.conf")).read()
    extra = "".join(f"{k} = {v}\n" for k, v in dataplane.items())
    text = text.replace("[dataplane]\n", "[dataplane]\n" + extra, 1)
    path = LAB["LAB_DIR"] + "/buffers.conf"
    with open(path, "w") as f:
        f.write(text)
    return path


def client(*args, timeout=600):
    r = labkit.in_peer("/usr/bin/python3", CLIENT, *args, check=False, timeout=timeout)
    if r.returncode != 0:
        raise labkit.Failure(f"faults_client.py {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def test_idle_sessions_hold_no_buffer():
    n = 200
    peers = even_bulk_peers()
    with Edge(config=conf(session_buffers=16)) as edge:
        before = edge.stats()
        p = subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                              "-c", HOLDER, EDGE6, ",".join(peers[:50]), str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.kill()
                raise labkit.Failure(f"the idle clients did not get past EHLO: {p.communicate(timeout=10)[1][-1500:]}")
            mid = edge.stats()
            # More idle sessions than buffers, all greeted and answered: none
            # holds one now.
            expect(mid["sessions_active"] - before["sessions_active"] == n,
                   f"{mid['sessions_active']} sessions active, want {n}")
            expect(mid["session_buffers_held"] == 0,
                   f"{mid['session_buffers_held']} buffers held by {n} idle sessions")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        after = settled(edge, before["pools"], timeout=20)
        expect(after["sessions_active"] == 0, f"sessions_active {after['sessions_active']} after")
        expect(after["session_buffers_held"] == 0, "buffers still held after the sessions ended")


def test_many_senders_share_a_tiny_pool_byte_exact():
    rng = random.Random(5)
    peers = even_bulk_peers()
    n, parallel = 300, 48
    # Mostly small messages, some of a few hundred KB: a sender holds its
    # buffer while its command lines and replies are in flight.
    sizes = [int(rng.choice([rng.uniform(1, 4096), rng.uniform(4096, 300000)])) for _ in range(n)]
    plan = [[peers[i % len(peers)], sizes[i], 5000 + i] for i in range(n)]
    plan_file = LAB["LAB_DIR"] + "/buffers-plan.json"
    json.dump(plan, open(plan_file, "w"))
    # Four buffers (and four buffers' worth of TCP send pool) for 48 senders.
    with Edge(config=conf(session_buffers=4)) as edge:
        before = edge.stats()
        start = before["pools"]
        res = client("run", EDGE6, plan_file, str(parallel), timeout=900)
        errors = [r for r in res if r["error"] or r["code"] != 250]
        expect(len(res) == n, f"{len(res)} results for {n} sessions")
        expect(not errors, f"{len(errors)} sessions failed, e.g. {errors[:5]}")
        bad = faults_lab.check(res)
        expect(not bad, f"{len(bad)} messages not byte-exact: {bad[:5]}")
        after = settled(edge, start)
        expect(delta(after, before, "session_buffers_empty") > 0,
               "the pool never ran dry: the test shows nothing")
        expect(after["session_buffers_held"] == 0, f"{after['session_buffers_held']} buffers still held")
        expect(after["sessions_active"] == 0, f"sessions_active {after['sessions_active']} after")
        for k in POOL_KEYS:
            expect(after["pools"][k] == start[k], f"pools.{k}: {start[k]} before, {after['pools'][k]} after")
        print(f"  {n} sessions, {parallel} at once, 4 buffers: "
              f"session_buffers_empty +{delta(after, before, 'session_buffers_empty')}, "
              f"tcp sndbuf_pool_empty +{delta(after, before, 'tcp_sndbuf_pool_empty')}, "
              f"drop_app_full +{delta(after, before, 'tcp_drop_app_full')}")


labkit.main(globals())
