#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A few thousand broken frames: each counted by its reason, none answered
wrongly, and smtpedge still answers pings during and after the storm."""
import json
import subprocess

import labkit
from labkit import LAB, Edge, expect, in_peer, delta

N = 150   # frames of each kind; four times that of random garbage


def edge_mac(edge):
    return json.loads(edge.ctl("config", "--json").stdout)["/smtpedge/config"]["mac"]


def ping_ok(addr):
    r = in_peer("ping", "-c", "2", "-i", "0.2", "-W", "1", "-n", addr, check=False)
    return " 2 received" in r.stdout


def storm(edge, mode):
    return subprocess.Popen(
        ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
         labkit.HERE + "/malformed.py", mode, LAB["LAB_PEER_IF"], edge_mac(edge),
         LAB["LAB_EDGE6"], LAB["LAB_EDGE4"], LAB["LAB_PEER6_PTR"],
         LAB["LAB_PEER4_PTR"], str(N), "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pings_ok():
    return ping_ok(LAB["LAB_EDGE6"]) and ping_ok(LAB["LAB_EDGE4"])


def finish(p):
    out, err = p.communicate(timeout=300)
    expect(p.returncode == 0, f"scapy failed: {err}")
    return json.loads(out)


def test_each_breakage_is_counted_by_its_reason():
    with Edge() as edge:
        expect(pings_ok(), "no ping reply before the storm")
        before = edge.stats()
        p = storm(edge, "kinds")
        during = pings_ok()
        sent = finish(p)
        expect(during, "pings went unanswered during the storm")
        expect(pings_ok(), "pings went unanswered after the storm")
        after = edge.stats()
        for counter, n in sent.items():
            got = delta(after, before, counter)
            expect(got == n, f"{counter}: {got} counted, {n} sent")
        # Nothing broken earns a reply: only the 8 pings got echoes.
        echoes = delta(after, before, "echo6_replies") + delta(after, before, "echo4_replies")
        expect(echoes == 8, f"{echoes} echo replies for 8 pings")


def test_random_garbage_is_dropped_and_survived():
    with Edge() as edge:
        before = edge.stats()
        p = storm(edge, "garbage")
        during = pings_ok()
        sent = finish(p)["garbage"]
        expect(during and pings_ok(), "pings went unanswered")
        after = edge.stats()
        # Random bytes cannot form a valid frame for us (that would take our
        # exact address and valid checksums): every one is dropped.
        dropped = delta(after, before, "rx_dropped")
        expect(dropped >= sent, f"rx_dropped {dropped} for {sent} random frames")
        expect(edge.proc.poll() is None, "smtpedge died")


if __name__ == "__main__":
    labkit.main(globals())
