#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/lab/test_idlepressure.py — idle connections cannot hold the flow table.

A small table (flows = 64) is filled with idle connections from the lab's
bulk addresses, each greeted and past EHLO, then left alone. A real sender
still delivers: each new connection that finds the table nearly full closes
the connection idle longest with 421 4.7.0, oldest first, and counts it
(sess_idle_evicted). Past [smtp] idle_pressure_pct of the table in use the
idle timeout falls towards idle_timeout_min_s (sess_idle_shortened, 421
4.4.2). A session whose message waits for the spool is never idle: it keeps
its slot and gets its 250 while younger idle ones are closed.

The holders run in the peer namespace as one process (HOLDER below), which
connects them one after another, waits for the greeting and the EHLO reply
of each, and then records whatever else each connection receives.
"""
import hashlib
import json
import os
import subprocess
import threading
import time

import labkit
from labkit import LAB, Edge, expect, wait_for
from test_smtp import EDGE6, peer, spool_files, spooled_body

ORIG_CONF = os.path.join(labkit.ROOT, "conf/lab.conf")
BULK = LAB["LAB_BULK6_BASE"]
PTR6 = LAB["LAB_PEER6_PTR"]
FLOWS = 64
# Free slots below which a new connection evicts: flows/64, at least 2
# (dataplane/session.c), so the table holds FLOWS - RESERVE idle sessions
# before the first eviction.
RESERVE = 2

HOLDER = r"""
import ipaddress, json, selectors, socket, sys, threading, time

dst, base, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
close_on_eof, pace_from = sys.argv[5] == "1", int(sys.argv[6])
sel = selectors.DefaultSelector()
lock = threading.Lock()
recs, seq = [], [0]

def reply(s):
    buf = b""
    while True:
        d = s.recv(4096)
        if not d:
            raise EOFError(buf)
        buf += d
        lines = buf.split(b"\r\n")
        if buf.endswith(b"\r\n") and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return buf.decode()

def watch():
    while True:
        with lock:
            ready = sel.select(0.05) if sel.get_map() else []
        if not ready:
            time.sleep(0.02)
        for key, _ in ready:
            rec = key.data
            try:
                d = key.fileobj.recv(4096)
            except OSError as e:
                d, rec["err"] = b"", repr(e)
            with lock:
                if d:
                    if not rec["after"]:
                        seq[0] += 1
                        rec["seq"] = seq[0]
                    rec["after"] += d.decode()
                    continue
                rec["eof"] = True
                sel.unregister(key.fileobj)
                if close_on_eof:
                    key.fileobj.close()

threading.Thread(target=watch, daemon=True).start()
held = []
for i in range(first, first + count):
    src = str(ipaddress.ip_address(base) + i)
    rec = {"src": src, "after": "", "eof": False, "err": None, "seq": 0}
    recs.append(rec)
    if len(recs) > pace_from:
        time.sleep(0.3)  # an evicted holder's close has reached the edge
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(10)
        s.bind((src, 0))
        s.connect((dst, 25))
        rec["greeting"] = reply(s)[:3]
        s.sendall(b"EHLO holder.lab.example\r\n")
        rec["ehlo"] = reply(s)[:3]
    except Exception as e:
        rec["err"] = repr(e)[:200]
        continue
    held.append(s)
    with lock:
        sel.register(s, selectors.EVENT_READ, rec)
print(json.dumps({"held": sum(1 for r in recs if not r["err"])}), flush=True)
sys.stdin.readline()
time.sleep(0.5)
with lock:
    print(json.dumps(recs), flush=True)
"""


class Holders:
    """count idle connections from the bulk addresses first.. on, held by one
    process in the peer namespace until report(). From the pace_from-th on,
    each waits a moment first, so that the one it evicted has closed: the
    lab's table keeps a reserve of only two slots for the FIN exchange."""

    def __init__(self, first, count, close_on_eof, pace_from=1 << 30):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", "-c", HOLDER,
             EDGE6, BULK, str(first), str(count), "1" if close_on_eof else "0",
             str(pace_from)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise labkit.Failure(f"holder: {self.proc.stderr.read()[-2000:]}")
        self.held = json.loads(line)["held"]

    def report(self):
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(30)
        return json.loads(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def conf(smtp=None, faults=None):
    text = open(ORIG_CONF).read().replace("flows = 4096", f"flows = {FLOWS}")
    expect(f"flows = {FLOWS}" in text, "conf/lab.conf has no flows line to change")
    if smtp:
        text += "\n[smtp]\n" + "".join(f"{k} = {v}\n" for k, v in smtp.items())
    if faults:
        text += "\n[faults]\n" + "".join(f"{k} = {v}\n" for k, v in faults.items())
    path = LAB["LAB_DIR"] + "/idlepressure.conf"
    with open(path, "w") as f:
        f.write(text)
    return path


def counters(edge):
    return edge.stats()


def spooled(r):
    """The message a 250 names is in the spool, byte-exact."""
    qid = r["text"].split()[-1]
    files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(800)]
    expect(len(files) == 1, f"queue id {qid}: {len(files)} spool files")
    body, _ = spooled_body(files[0])
    expect(hashlib.sha256(body).hexdigest() == r["sha256"],
           "the spooled message differs from the one sent")


def test_full_table_evicts_oldest_idle_and_sender_delivers():
    """70 idle holders in a table of 64, then a real sender: every
    connection from the 63rd on closes the oldest idle one."""
    n = FLOWS + 6
    with Edge(config=conf()) as edge:
        before = counters(edge)
        h = Holders(1, n, close_on_eof=True, pace_from=FLOWS - RESERVE)
        try:
            r = peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net", "3000", "15")
            expect(r["code"] == 250, f"the sender behind a full table: {r}")
            spooled(r)
            expect(h.held == n, f"{h.held} of {n} idle connections were greeted")
            recs = h.report()
        finally:
            h.kill()
        after = counters(edge)
    evicted = after["sess_idle_evicted"] - before.get("sess_idle_evicted", 0)
    want = n + 1 - (FLOWS - RESERVE)
    expect(evicted == want, f"sess_idle_evicted {evicted}, want {want}")
    expect(after["sessions_refused"] == before.get("sessions_refused", 0),
           f"sessions refused: {after['sessions_refused']}")
    got = [i for i, rec in enumerate(recs) if rec["after"]]
    expect(got == list(range(want)), f"closed: holders {got}, want the oldest {want}")
    for rec in recs[:want]:
        expect(rec["after"].startswith("421 4.7.0 ") and rec["after"].endswith("\r\n") and
               rec["after"].count("\r\n") == 1 and rec["eof"],
               f"{rec['src']}: {rec['after']!r} eof={rec['eof']}")
    order = [rec["seq"] for rec in recs[:want]]
    expect(order == sorted(order), f"421s not oldest first: {order}")
    for rec in recs[want:]:
        expect(not rec["eof"] and rec["err"] is None, f"{rec['src']} closed: {rec}")


def test_pending_delivery_is_never_evicted():
    """The oldest session waits for the spool (stalled 8 s): holders fill
    the table around it; the younger idle ones go, it gets its 250."""
    n = FLOWS - RESERVE + 3
    result = {}

    def send():
        result["r"] = peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net", "500",
                           "16")

    with Edge(config=conf(faults={"spool_stall_s": 8})) as edge:
        before = counters(edge)
        t = threading.Thread(target=send)
        t.start()
        expect(wait_for(lambda: counters(edge)["sessions_opened"] > before.get(
            "sessions_opened", 0), timeout=10), "the sender did not connect")
        time.sleep(1)  # its message is in; its 250 waits for the stalled spool
        h = Holders(1, n, close_on_eof=True, pace_from=FLOWS - RESERVE - 1)
        try:
            t.join(60)
            expect("r" in result, "the sender got no answer")
            recs = h.report()
        finally:
            h.kill()
        after = counters(edge)
    r = result["r"]
    expect(r["code"] == 250, f"the sender waiting for the spool: {r}")
    spooled(r)
    evicted = after["sess_idle_evicted"] - before.get("sess_idle_evicted", 0)
    # The sender holds a slot: one holder fewer fits before the evictions.
    want = n + 1 - (FLOWS - RESERVE)
    expect(evicted == want, f"sess_idle_evicted {evicted}, want {want}")
    got = [i for i, rec in enumerate(recs) if rec["after"]]
    expect(got == list(range(want)), f"closed: holders {got}, want the oldest {want}")


def test_idle_timeout_falls_with_the_fill():
    """62 of 64 slots held idle with idle_pressure_pct = 1 and a 60 s idle
    timeout: each is closed by the shortened timeout (421 4.4.2), none by
    the full one. The holders keep their end open, so the slots stay taken
    (FIN_WAIT_2) and the fill stays where it is while they go."""
    n = FLOWS - RESERVE
    with Edge(config=conf(smtp={"idle_timeout_s": 60, "idle_pressure_pct": 1,
                                "idle_timeout_min_s": 1})) as edge:
        before = counters(edge)
        h = Holders(1, n, close_on_eof=False)
        try:
            expect(h.held == n, f"{h.held} of {n} idle connections were greeted")
            done = wait_for(lambda: counters(edge)["sess_idle_shortened"] -
                            before.get("sess_idle_shortened", 0) >= n, timeout=55, step=0.5)
            recs = h.report()
        finally:
            h.kill()
        after = counters(edge)
    expect(done, f"sess_idle_shortened {after['sess_idle_shortened']}, want {n}")
    expect(after["sess_idle_shortened"] - before.get("sess_idle_shortened", 0) == n,
           f"sess_idle_shortened {after['sess_idle_shortened']}, want {n}")
    expect(after["sess_idle_evicted"] == before.get("sess_idle_evicted", 0),
           "a session was evicted")
    for rec in recs:
        expect(rec["after"].startswith("421 4.4.2 ") and rec["eof"],
               f"{rec['src']}: {rec['after']!r} eof={rec['eof']}")


if __name__ == "__main__":
    labkit.main(globals())
