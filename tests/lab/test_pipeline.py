#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Pipelined commands and long replies through the DPDK port.

The client is Linux's TCP in the peer namespace (peer.py dialogue
--pipeline): every command in one write, then one reply read for each, so
a reply lost, doubled or out of step shows as a wrong code at its place.

While a verdict is awaited the SMTP engine holds at most 4 KiB of input;
TCP must not acknowledge a byte it did not take (else later commands are
lost, spliced, and the replies fall out of step) and must not offer a
window larger than it can take.

The veth pair has an MTU of 1,500 and a veth drops a frame longer than
MTU + 14 that it receives: a segment too large for the MTU never reaches
the client, nor do its retransmissions, and the client waits for ever. So
"every reply came" also says "every segment fit the MTU".
"""
import json
import os
import random

import labkit
from labkit import LAB, Edge, expect, in_peer, delta

PEER = os.path.join(labkit.HERE, "peer.py")
EDGE6 = LAB["LAB_EDGE6"]
CODES = {"NOOP": "250 2.0.0 Ok", "HELP": "214 2.0.0 Commands:", "VRFY x@example.net": "252 2.0.0 Cannot VRFY"}


def talk_pipelined(src, lines):
    r = in_peer("/usr/bin/python3", PEER, "dialogue", src, EDGE6, "--pipeline", *lines,
                check=False, timeout=300)
    if r.returncode != 0:
        raise labkit.Failure(f"peer.py dialogue failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)["replies"]


def mixed(n, seed):
    """n commands with different replies, in a random order."""
    rng = random.Random(seed)
    return [rng.choice(list(CODES)) for _ in range(n)]


def check_in_step(replies, cmds, first):
    """replies[first:] answer cmds one to one, in order."""
    for i, c in enumerate(cmds):
        got = replies[first + i]
        if not got.startswith(CODES[c]):
            raise labkit.Failure(f"command {i} ({c}) got {got[:80]!r}, "
                                 f"the replies before it: {[x[:20] for x in replies[max(0, first + i - 3):first + i]]}")


def test_long_replies_fit_the_mtu():
    # 300 short commands (under 2.5 KB, one segment) answered by about
    # 15 KB of replies: full-sized segments, with the timestamp option.
    cmds = mixed(300, 1)
    with Edge() as edge:
        before = edge.stats()
        r = talk_pipelined(LAB["LAB_PEER6_PTR"], ["EHLO pipe.lab.example"] + cmds + ["QUIT"])
        expect(len(r) == len(cmds) + 3, f"{len(r)} replies for {len(cmds) + 2} commands and the greeting")
        expect(r[0].startswith("220 ") and r[1].startswith("250"), f"greeting/EHLO: {r[:2]}")
        check_in_step(r, cmds, 2)
        expect(r[-1].startswith("221 "), f"QUIT got {r[-1]!r}")
        after = edge.stats()
        expect(delta(after, before, "sessions_opened") == 1, "one session")
        print(f"     {sum(len(x) + 2 for x in r)} bytes of replies to {len(cmds)} pipelined commands", flush=True)


def test_pipelined_past_the_held_input():
    # MAIL awaits its verdict (PTR, SPF) while 2,000 more commands (about
    # 14 KB, more than three times the held-input bound) follow in the same
    # write; then RCPT and QUIT. Each is answered exactly once, in order.
    cmds = mixed(2000, 2)
    lines = ["EHLO pipe.lab.example", "MAIL FROM:<alice@example.org>"] + cmds + \
            ["RCPT TO:<bob@example.net>", "QUIT"]
    expect(sum(len(x) + 2 for x in cmds) > 3 * 4096, "the commands must exceed the held input")
    with Edge() as edge:
        before = edge.stats()
        r = talk_pipelined(LAB["LAB_PEER6_PTR"], lines)
        expect(len(r) == len(lines) + 1, f"{len(r)} replies for {len(lines)} commands and the greeting")
        expect(r[0].startswith("220 ") and r[1].startswith("250"), f"greeting/EHLO: {r[:2]}")
        expect(r[2].startswith("250"), f"MAIL got {r[2]!r}")
        check_in_step(r, cmds, 3)
        expect(r[-2].startswith("250"), f"RCPT got {r[-2]!r}")
        expect(r[-1].startswith("221 "), f"QUIT got {r[-1]!r}")
        after = edge.stats()
        expect(delta(after, before, "sessions_opened") == 1, "one session")
        print(f"     {sum(len(x) + 2 for x in lines)} bytes pipelined, {len(r)} replies in order; "
              f"tcp_drop_app_full {delta(after, before, 'tcp_drop_app_full')}", flush=True)


labkit.main(globals())
