#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A plain session's reply latency on a worker that does TLS handshakes.

In the lab (LAB_ID honoured): smtpedge with one worker and [tls]; from the
peer namespace, PROCS processes make STARTTLS handshakes in a loop (EHLO,
STARTTLS, the handshake, QUIT) while one plain session sends NOOP every
5 ms and times each reply. Prints the plain session's p50/p99/max reply
time with no handshakes and under them, the handshakes per second the
worker did, and its handshake CPU per handshake (tls_handshake_cpu_us).

To tell the handshakes' CPU from the machine's scheduling, the same PROCS
processes also run once without TLS (EHLO and QUIT in a loop: the same
generator, plain sessions instead of handshakes), and each phase reports
the share of a core the worker thread was given (its utime+stime over the
phase's wall time; a poll-mode worker that is never preempted gets 1.0) and
the machine's load average.
A figure for the README, not a test: nothing here asserts a time.

usage: tls_latency.py [PROCS] [SECONDS]
"""
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../lab"))
import labkit  # noqa: E402
from labkit import LAB, Edge  # noqa: E402
import test_tls  # noqa: E402

CLIENT = r'''
import socket, ssl, sys, time
src, dst, mode, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def rd(f):
    while True:
        l = f.readline()
        if not l or l[3:4] != b"-":
            return l
end = time.time() + secs
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    n = 0
    while time.time() < end:
        s = socket.create_connection((dst, 25), source_address=(src, 0))
        f = s.makefile("rb")
        rd(f); s.sendall(b"EHLO c\r\n"); rd(f); s.sendall(b"STARTTLS\r\n"); rd(f)
        t = ctx.wrap_socket(s)
        t.sendall(b"QUIT\r\n")
        t.close()
        n += 1
    print(n)
elif mode == "plainload":
    n = 0
    while time.time() < end:
        s = socket.create_connection((dst, 25), source_address=(src, 0))
        f = s.makefile("rb")
        rd(f); s.sendall(b"EHLO c\r\n"); rd(f); s.sendall(b"QUIT\r\n"); rd(f)
        s.close()
        n += 1
    print(n)
else:
    s = socket.create_connection((dst, 25), source_address=(src, 0))
    f = s.makefile("rb")
    rd(f); s.sendall(b"EHLO c\r\n"); rd(f)
    lat = []
    while time.time() < end:
        t0 = time.perf_counter()
        s.sendall(b"NOOP\r\n"); rd(f)
        lat.append(time.perf_counter() - t0)
        time.sleep(0.005)
    lat.sort()
    print(" ".join(f"{x * 1e6:.0f}" for x in lat))
'''


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def plain(secs):
    r = labkit.in_peer("/usr/bin/python3", "-c", CLIENT, LAB["LAB_PEER6_PTR"], LAB["LAB_EDGE6"],
                       "plain", str(secs), timeout=secs + 60)
    xs = [int(x) for x in r.stdout.split()]
    return {"p50_us": pct(xs, 0.5), "p99_us": pct(xs, 0.99), "max_us": xs[-1], "n": len(xs)}


def worker_ticks(edge):
    total = 0
    task = f"/proc/{edge.proc.pid}/task"
    for tid in os.listdir(task):
        try:
            if not open(f"{task}/{tid}/comm").read().startswith("rte-worker"):
                continue
            s = open(f"{task}/{tid}/stat").read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        total += int(f[11]) + int(f[12])
    return total


def phase(edge, procs, secs, mode):
    """The plain session's latency while PROCS clients run in mode (None:
    no load), with what the worker did and was given meanwhile."""
    before, w0, t0 = edge.stats(), worker_ticks(edge), time.time()
    load = [subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                              "-c", CLIENT, LAB["LAB_BULK6_BASE"][:-1] + f"{2 * (i + 1):x}",
                              LAB["LAB_EDGE6"], mode, str(secs + 2)],
                             stdout=subprocess.PIPE, text=True) for i in range(procs if mode else 0)]
    if load:
        time.sleep(1)
    out = plain(secs)
    for p in load:
        p.communicate()
    after, w1, dt = edge.stats(), worker_ticks(edge), time.time() - t0
    full = after["tls_handshakes_full"] - before["tls_handshakes_full"]
    out.update({"worker_core_share": round((w1 - w0) / TICK / dt, 2),
                "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
                "sessions_per_s": round((after["sessions_opened"] - before["sessions_opened"]) / dt),
                "handshakes_per_s": round(full / dt)})
    if full:
        out["worker_handshake_cpu_us_each"] = round(
            (after["tls_handshake_cpu_us"] - before["tls_handshake_cpu_us"]) / full, 1)
        out["handshake_latency_buckets"] = {
            k: after[k] - before.get(k, 0) for k in after
            if k.startswith("tls_handshake_le") or k.startswith("tls_handshake_gt")}
    return out


def main():
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    labkit.lab_down()
    labkit.lab_up()
    try:
        with Edge(config=test_tls.conf(tls={"max_sessions": 4096})) as edge:
            out = {"plain_idle": phase(edge, 0, secs / 2, None),
                   "plain_under_plain_sessions": phase(edge, procs, secs, "plainload"),
                   "plain_under_handshakes": phase(edge, procs, secs, "tls"),
                   "client_procs": procs}
            print(json.dumps(out, indent=1))
    finally:
        labkit.lab_down()


if __name__ == "__main__":
    main()
