#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The DPDK port answers on the wire: ARP, neighbour discovery, ping.

Linux in the peer namespace is the other end. Each test checks the replies
came and that smtpedge's counters say it sent them; the last shows that
with smtpedge stopped nobody answers, so the replies were its own.
"""
import labkit
from labkit import LAB, Edge, expect, in_peer, delta


def ping(addr, src=None, count=3, v6=None):
    cmd = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", "-n"]
    if v6 or ":" in addr:
        cmd.append("-6")
    if src:
        cmd += ["-I", src]
    return in_peer(*cmd, addr, check=False)


def received(r):
    for line in r.stdout.splitlines():
        if "packets transmitted" in line:
            return int(line.split(",")[1].split()[0])
    return -1


def flush_neighbours():
    in_peer("ip", "-6", "neigh", "flush", "dev", LAB["LAB_PEER_IF"], check=False)
    in_peer("ip", "-4", "neigh", "flush", "dev", LAB["LAB_PEER_IF"], check=False)


def test_ping6_and_neighbour_discovery():
    with Edge() as edge:
        flush_neighbours()
        before = edge.stats()
        r = ping(LAB["LAB_EDGE6"], count=5)
        expect(received(r) == 5, f"ping -6: {r.stdout} {r.stderr}")
        after = edge.stats()
        expect(delta(after, before, "echo6_replies") == 5, f"echo6_replies {after}")
        expect(delta(after, before, "nd_adverts") >= 1, "no neighbour advertisement counted")
        expect(delta(after, before, "tx_packets") >= 6, "tx_packets did not move")
        n = in_peer("ip", "-6", "neigh", "show", LAB["LAB_EDGE6"]).stdout
        expect("lladdr" in n, f"peer has no neighbour entry for the edge: {n}")


def test_ping4_and_arp():
    with Edge() as edge:
        flush_neighbours()
        before = edge.stats()
        r = ping(LAB["LAB_EDGE4"], count=5)
        expect(received(r) == 5, f"ping: {r.stdout} {r.stderr}")
        after = edge.stats()
        expect(delta(after, before, "echo4_replies") == 5, f"echo4_replies {after}")
        expect(delta(after, before, "arp_replies") >= 1, "no ARP reply counted")


def test_every_peer_address_is_answered():
    with Edge() as edge:
        before = edge.stats()
        for src in (LAB["LAB_PEER6_PTR"], LAB["LAB_PEER6_NOPTR"], LAB["LAB_PEER6_MISMATCH"]):
            expect(received(ping(LAB["LAB_EDGE6"], src=src, count=2)) == 2, f"from {src}")
        for src in (LAB["LAB_PEER4_PTR"], LAB["LAB_PEER4_NOPTR"], LAB["LAB_PEER4_MISMATCH"]):
            expect(received(ping(LAB["LAB_EDGE4"], src=src, count=2)) == 2, f"from {src}")
        after = edge.stats()
        expect(delta(after, before, "echo6_replies") == 6, "echo6_replies")
        expect(delta(after, before, "echo4_replies") == 6, "echo4_replies")


def test_link_local_ping():
    with Edge() as edge:
        mac = edge.ctl("config", "--json").stdout
        import json
        mac = json.loads(mac)["/smtpedge/config"]["mac"].split(":")
        b = [int(x, 16) for x in mac]
        ll = "fe80::%02x%02x:%02xff:fe%02x:%02x%02x" % (b[0] ^ 2, b[1], b[2], b[3], b[4], b[5])
        r = ping(f"{ll}%{LAB['LAB_PEER_IF']}", count=2, v6=True)
        expect(received(r) == 2, f"ping {ll}: {r.stdout} {r.stderr}")


def test_per_lcore_counters_and_cli():
    with Edge() as edge:
        ping(LAB["LAB_EDGE6"], count=2)
        s = edge.stats()
        lc = s["lcores"]
        expect(len(lc) == 1, f"one worker lcore expected: {lc}")
        one = next(iter(lc.values()))
        expect(one.get("echo6_replies", 0) == s["echo6_replies"], "per-lcore sum differs from the total")
        text = edge.ctl("stats").stdout
        expect(any(l.split() == ["echo6_replies", str(s["echo6_replies"])] for l in text.splitlines()),
               f"smtpedgectl stats for people lacks echo6_replies: {text}")
        cfg = edge.ctl("config").stdout
        expect("hostname" in cfg and "mx.lab.example" in cfg, cfg)


def test_clean_stop_logs_final_counters():
    edge = Edge().start()
    try:
        ping(LAB["LAB_EDGE6"], count=1)
        rc = edge.stop()
        log = edge.read_log()
        expect(rc == 0, f"exit code {rc}")
        expect("smtpedge: stopped rx_packets=" in log, f"no final counters: {log}")
    finally:
        edge.kill()


def test_nobody_answers_without_smtpedge():
    flush_neighbours()
    r = ping(LAB["LAB_EDGE6"], count=2)
    expect(received(r) == 0, f"something else answers {LAB['LAB_EDGE6']}: {r.stdout}")
    r = ping(LAB["LAB_EDGE4"], count=2)
    expect(received(r) == 0, f"something else answers {LAB['LAB_EDGE4']}: {r.stdout}")


def test_ctl_without_daemon_says_so():
    r = labkit.sh(labkit.SMTPEDGECTL, "--file-prefix", "se-nothing-here", "stats", check=False)
    expect(r.returncode == 1 and "cannot connect" in r.stderr and
           "is smtpedge running" in r.stderr, r.stderr)


if __name__ == "__main__":
    labkit.main(globals())
