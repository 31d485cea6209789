#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Memory follows activity, in the lab: an SMTP session holds a session
buffer (its reply queue, held input, command line) only while it has bytes
in flight, from a per-worker pool of [dataplane] session_buffers.

Idle sessions, greeted and past EHLO, must hold none. And when many
concurrent senders share a pool far smaller than they need, the ones that
find it dry wait (their TCP window closes) and go on when buffers come
back: every message still arrives byte-exact in the spool, every session
ends, and every buffer comes back. Clients that hold a buffer and go quiet
(half a command line) cannot pin the pool: a session that needs a buffer
and finds none gets the one of the session that held its buffer longest
without input, past a floor of 10 s, which is closed with 421 4.7.0.
Linux's own TCP in the peer namespace is every client.
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


# Connects N clients one after another, each greeted (the greeting may wait
# for a buffer), past EHLO and then holding half a MAIL command; prints
# "ready" with the time of each one's last byte, and on a line from stdin
# what each received after that and when, and whether it saw EOF.
PINNER = r"""
import json, socket, sys, threading, time
dst, srcs, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
recs = []

def readline(f):
    line = f.readline()
    if not line:
        raise EOFError("closed")
    return line

def watch(f, rec):
    try:
        line = f.readline()
        rec["t_after"] = time.monotonic()
        rec["after"] = line.decode()
        rec["eof"] = f.readline() == b""
    except OSError as e:
        rec["err"] = repr(e)

for i in range(n):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((srcs[i % len(srcs)], 0))
    s.settimeout(60)
    s.connect((dst, 25))
    f = s.makefile("rb")
    if not readline(f).startswith(b"220 "):
        sys.exit("no greeting")
    s.sendall(b"EHLO pinner.example.org\r\n")
    while True:
        line = readline(f)
        if not line.startswith(b"250"):
            sys.exit(f"EHLO: {line!r}")
        if line[3:4] == b" ":
            break
    s.sendall(b"MAIL FROM:<held@exa")
    rec = {"src": srcs[i % len(srcs)], "t_held": time.monotonic(), "after": "", "eof": False,
           "err": None, "t_after": None}
    recs.append(rec)
    s.settimeout(None)
    threading.Thread(target=watch, args=(f, rec), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
time.sleep(1)
print(json.dumps(recs), flush=True)
time.sleep(600)
"""
# The floor of dataplane/session.c: a holder whose latest input is younger
# is never closed for a waiting session.
HOLD_MIN_S = 10


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


def test_holders_cannot_pin_the_pool():
    """One buffer (the minimum) and three clients, one after another,
    each holding half a MAIL command: each that comes finds the pool dry
    and waits until the holder before it has been quiet for the floor; then
    a real sender does the same and delivers. The holders got 421 4.7.0
    and a FIN, oldest first, each no sooner than the floor after its last
    byte."""
    from test_smtp import peer, spool_files
    n = 3
    peers = even_bulk_peers()
    with Edge(config=conf(session_buffers=1)) as edge:
        before = edge.stats()
        p = subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                              "-c", PINNER, EDGE6, ",".join(peers[:n]), str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.kill()
                raise labkit.Failure(f"the holders did not get their buffers: "
                                     f"{p.communicate(timeout=10)[1][-1500:]}")
            spool_before = spool_files()
            res = peer("send", LAB["LAB_PEER6_PTR"], EDGE6, "alice@example.org",
                       "bob@example.net", "3000", "21", timeout=300)
            p.stdin.write("report\n")
            p.stdin.flush()
            recs = json.loads(p.stdout.readline())
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        expect(res["code"] == 250, f"the sender behind the pinned pool: {res}")
        new = spool_files() - spool_before
        expect(len(new) == 1, f"{len(new)} new spool files, want 1")
        after = settled(edge, before["pools"], timeout=20)
        evicted = delta(after, before, "sess_buffer_evicted")
        expect(evicted == n, f"sess_buffer_evicted {evicted}, want {n}")
        expect(delta(after, before, "session_buffers_empty") >= n,
               "the pool did not run dry for each newcomer")
        expect(after["session_buffers_held"] == 0, f"{after['session_buffers_held']} buffers held after")
    for rec in recs:
        expect(rec["err"] is None, f"{rec['src']}: {rec['err']}")
        expect(rec["after"].startswith("421 4.7.0 ") and rec["eof"],
               f"{rec['src']}: {rec['after']!r} eof={rec['eof']}")
        expect(rec["t_after"] - rec["t_held"] >= HOLD_MIN_S - 0.5,
               f"{rec['src']} closed {rec['t_after'] - rec['t_held']:.1f} s after its last byte, "
               f"inside the floor")
    order = [rec["t_after"] for rec in recs]
    expect(order == sorted(order), f"the 421s did not come oldest holder first: {order}")
    print(f"  {n} holders on 1 buffer: 421 after "
          + ", ".join(f"{rec['t_after'] - rec['t_held']:.1f} s" for rec in recs))


labkit.main(globals())
