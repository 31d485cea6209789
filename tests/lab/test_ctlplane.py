#!/usr/bin/python3
"""The control plane against what goes wrong around it: an SPF request
lost between the planes, a spool that does not answer, the telemetry
socket's mode, and two operators changing policy at once.

The losses come from the test shim of [faults]: spf_lost_from_mail drops
the early SPF request of a session's later MAILs as a full request ring
would, and spool_stall_s holds every delivery for that long first.
"""
import os
import socket
import stat
import subprocess
import time

import labkit
from labkit import LAB, Edge, expect, in_peer, delta, wait_for
from test_smtp import EDGE6, peer, spool_files

PTR6 = LAB["LAB_PEER6_PTR"]
MSG = "From: <x@lab.example>\r\nSubject: ctl\r\n\r\nHello.\r\n."


def conf_with(name, **sections):
    """conf/lab.conf with more sections: {"faults": {"k": v}}."""
    text = open(os.path.join(labkit.ROOT, "conf/lab.conf")).read()
    for sec, keys in sections.items():
        text += f"\n[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    path = f"{LAB['LAB_DIR']}/{name}.conf"
    with open(path, "w") as f:
        f.write(text)
    return path


def test_lost_spf_request_is_not_another_mails_result():
    # The first MAIL (SPF pass) has its early check; the second, after
    # RSET, loses its request: its message must be judged on its own
    # MAIL FROM (spf-fail.example: 450), not on the first MAIL's pass.
    with Edge(conf_with("spf-lost", faults={"spf_lost_from_mail": 2})) as edge:
        before = edge.stats()
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<alice@example.org>", "RSET",
                 "MAIL FROM:<carol@spf-fail.example>", "RCPT TO:<bob@example.net>",
                 "DATA", MSG, "QUIT")["replies"]
        expect(r[2].startswith("250") and r[3].startswith("250"), f"{r}")
        expect(r[4].startswith("250") and r[6].startswith("354"), f"{r}")
        expect(r[7].startswith("450 4.7.26 "), f"the second MAIL's message: {r[7]}")
        after = wait_for(lambda: (lambda s: s if delta(s, before, "spf_checks_early") >= 1
                                  else None)(edge.stats()))
        expect(after and delta(after, before, "req_ring_full") == 1,
               f"the shim did not lose one request: {after}")
        expect(delta(after, before, "spf_checks_late") == 1, f"spf_checks_late: {after}")
        expect(delta(after, before, "auth_reject") == 1, f"auth_reject: {after}")


def test_same_transaction_uses_its_early_check():
    # Without a loss the message uses the check its MAIL started.
    with Edge() as edge:
        before = edge.stats()
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<carol@spf-fail.example>", "RSET",
                 "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>",
                 "DATA", MSG, "QUIT")["replies"]
        expect(r[7].startswith("250 2.0.0 "), f"{r}")
        after = edge.stats()
        expect(delta(after, before, "spf_checks_late") == 0, f"spf_checks_late: {after}")


def test_stalled_spool_gets_451_and_the_slot_waits():
    stall = 6
    cfg = conf_with("stall", control={"delivery_timeout_s": 1},
                    faults={"spool_stall_s": stall})
    with Edge(cfg) as edge:
        before_files = spool_files()
        before = edge.stats()
        t0 = time.time()
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>",
                 "DATA", MSG)["replies"]
        took = time.time() - t0
        expect(r[5].startswith("451 4.3.0 "), f"a stalled spool: {r}")
        expect(took < stall, f"the 451 came after the stall ({took:.1f}s): no deadline")
        mid = edge.stats()
        expect(delta(mid, before, "spool_timeouts") == 1, f"spool_timeouts: {mid}")
        expect(mid["sessions_active"] == 1, f"the slot must wait for the writer: {mid}")
        # The writer finishes: the message lands (it may arrive twice once
        # the sender retries, never not at all) and the slot comes back.
        expect(wait_for(lambda: len(spool_files() - before_files) == 1, timeout=stall + 10),
               "the stalled message was not written")
        expect(wait_for(lambda: edge.stats()["sessions_active"] == 0, timeout=10),
               f"the slot did not come back: {edge.stats()}")
        end = edge.stats()
        expect(delta(end, before, "sessions_closed") == 1, f"{end}")


if __name__ == "__main__":
    labkit.main(globals())
