#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""TCP under faults, in the lab: smtpedge's fault shim ([faults], see
dataplane/faults.c) drops, duplicates and reorders frames around the
worker's RX and TX bursts, and Linux's own TCP in the peer namespace is the
other end. Every message must still arrive byte-exact, every session must
end, and everything the sessions took must come back.
"""
import json
import math
import os
import random
import subprocess
import time

import faults_lab
import labkit
from labkit import LAB, Edge, expect, delta

CLIENT = os.path.join(labkit.HERE, "faults_client.py")
EDGE6 = LAB["LAB_EDGE6"]
POOL_KEYS = faults_lab.POOL_KEYS
settled, even_bulk_peers = faults_lab.settled, faults_lab.even_bulk_peers

# 5% loss, 2% duplication, 5% reordering, both ways.
FAULTS = dict(rx_drop_pct=5, rx_dup_pct=2, rx_reorder_pct=5,
              tx_drop_pct=5, tx_dup_pct=2, tx_reorder_pct=5, seed=3)


def faults_conf(smtp=None, **faults):
    """conf/lab.conf with a [faults] section (and an [smtp] one if asked)."""
    text = open(os.path.join(labkit.ROOT, "conf/lab.conf")).read()
    text += "\n[faults]\n" + "".join(f"{k} = {v}\n" for k, v in faults.items())
    if smtp:
        text += "\n[smtp]\n" + "".join(f"{k} = {v}\n" for k, v in smtp.items())
    path = LAB["LAB_DIR"] + "/faults.conf"
    with open(path, "w") as f:
        f.write(text)
    return path


def plan_sizes(n, rng):
    """Mostly small, log-uniform from 1 byte, a few multi-MB, one 10 MB."""
    sizes = [10 << 20, 6 << 20, 4 << 20, 3 << 20, 2 << 20]
    while len(sizes) < n:
        top = 64 << 10 if rng.random() < 0.92 else 2 << 20
        sizes.append(int(math.exp(rng.uniform(0, math.log(top)))))
    rng.shuffle(sizes)
    return sizes


def client(*args, timeout=600):
    r = labkit.in_peer("/usr/bin/python3", CLIENT, *args, check=False, timeout=timeout)
    if r.returncode != 0:
        raise labkit.Failure(f"faults_client.py {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def test_1000_sessions_byte_exact_through_loss_dup_reorder():
    rng = random.Random(11)
    peers = even_bulk_peers()
    n = 1000
    sizes = plan_sizes(n, rng)
    plan = [[peers[i % len(peers)], sizes[i], 1000 + i] for i in range(n)]
    plan_file = LAB["LAB_DIR"] + "/faults-plan.json"
    json.dump(plan, open(plan_file, "w"))
    with Edge(config=faults_conf(**FAULTS), prefix=f"se-faults{LAB.get('LAB_ID', '')}-{os.getpid()}-bulk") as edge:
        before = edge.stats()
        start = before["pools"]
        t0 = time.time()
        res = client("run", EDGE6, plan_file, "24", timeout=900)
        took = time.time() - t0
        errors = [r for r in res if r["error"] or r["code"] != 250]
        expect(len(res) == n, f"{len(res)} results for {n} sessions")
        if errors:
            now = edge.stats()
            raise labkit.Failure(f"{len(errors)} sessions failed, e.g. {errors[:5]}; TCP: " + " ".join(
                f"{k}={delta(now, before, k)}" for k in now if k.startswith("tcp_") and delta(now, before, k)))
        bad = faults_lab.check(res)
        expect(not bad, f"{len(bad)} messages not byte-exact: {bad[:5]}")
        after = settled(edge, start)
        for k in ("fault_dropped", "fault_duplicated", "fault_reordered",
                  "tcp_retransmits"):
            expect(delta(after, before, k) > 0, f"{k} did not move: the faults did not happen")
        expect(after["sessions_active"] == 0, f"sessions_active {after['sessions_active']} afterwards")
        for k in POOL_KEYS:
            expect(after["pools"][k] == start[k], f"pools.{k}: {start[k]} before, {after['pools'][k]} after")
        print(f"     {n} sessions, {sum(r['size'] for r in res) >> 20} MiB in {took:.0f} s; "
              + " ".join(f"{k}={delta(after, before, k)}" for k in
                         ("fault_dropped", "fault_duplicated", "fault_reordered",
                          "tcp_retransmits", "tcp_synack_retransmits", "tcp_dup_segments",
                          "tcp_ooo_segments")), flush=True)


def stall(src, partial, wait_s):
    return subprocess.Popen(
        ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", CLIENT, "stall",
         src, EDGE6, str(partial), str(wait_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(p):
    """The stalled client's first line: it is mid-DATA now."""
    line = p.stdout.readline()
    if not line.startswith("{"):
        p.kill()
        _, err = p.communicate(timeout=10)
        raise labkit.Failure(f"a stalled client did not get to DATA: {line!r} {err[-1500:]}")
    return json.loads(line)


def reap(clients):
    for p in clients:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_idle_timeout_mid_data_under_faults():
    peers = even_bulk_peers()
    idle = 10
    with Edge(config=faults_conf(smtp={"idle_timeout_s": idle}, **FAULTS)) as edge:
        before = edge.stats()
        start = before["pools"]
        spool0 = faults_lab.new_files()
        clients = [stall(peers[i], 30000 + 7000 * i, idle * 4) for i in range(4)]
        try:
            for p in clients:
                wait_ready(p)
            t0 = time.time()
            mid = edge.stats()
            expect(mid["sessions_active"] >= 4, f"sessions_active {mid['sessions_active']} mid-DATA")
            outs = [json.loads(p.communicate(timeout=idle * 6)[0].splitlines()[-1]) for p in clients]
        finally:
            reap(clients)
        for o in outs:
            expect(o["replies"] and o["replies"][0].startswith("421 4.4.2"),
                   f"no 421 4.4.2 after {idle} s idle: {o}")
            expect(o["eof"], f"the edge did not close after its 421: {o}")
            expect(o["waited"] >= idle - 1, f"closed after {o['waited']} s, before the idle timeout")
        after = settled(edge, start)
        expect(after["sessions_active"] == 0, f"sessions_active {after['sessions_active']} after the timeouts")
        for k in POOL_KEYS:
            expect(after["pools"][k] == start[k], f"pools.{k}: {start[k]} before, {after['pools'][k]} after")
        expect(faults_lab.new_files() == spool0, "a half-sent message reached spool/new")
        expect(delta(after, before, "fault_dropped") > 0, "no fault happened")
        print(f"     4 stalled sessions closed {time.time() - t0:.0f} s after they stalled", flush=True)


def test_client_vanishes_mid_data_under_faults():
    peers = even_bulk_peers()
    with Edge(config=faults_conf(smtp={"idle_timeout_s": 30}, **FAULTS)) as edge:
        before = edge.stats()
        start = before["pools"]
        spool0 = faults_lab.new_files()
        clients = [stall(peers[10 + i], 20000 + 150000 * i, 300) for i in range(6)]
        try:
            for p in clients:
                wait_ready(p)
            mid = edge.stats()
            expect(mid["sessions_active"] >= 6, f"sessions_active {mid['sessions_active']} mid-DATA")
            expect(mid["sessions_active"] - before["sessions_active"] == 6, "not all six are open")
        finally:
            # ip netns exec execs python: the pid is the client itself, and
            # SIGKILL leaves its socket to the kernel, which sends a FIN.
            reap(clients)
        # Well inside the 30 s idle timeout: the close, not a timer, ends them.
        after = settled(edge, start, timeout=20)
        expect(after["sessions_active"] == 0,
               f"sessions_active {after['sessions_active']} 20 s after the clients vanished")
        for k in POOL_KEYS:
            expect(after["pools"][k] == start[k], f"pools.{k}: {start[k]} before, {after['pools'][k]} after")
        expect(faults_lab.new_files() == spool0, "a half-sent message reached spool/new")
        expect(delta(after, before, "tcp_timeout_idle") == 0, "the idle timer, not the close, ended them")
        expect(delta(after, before, "fault_dropped") > 0, "no fault happened")


labkit.main(globals())
