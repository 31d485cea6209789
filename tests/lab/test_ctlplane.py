#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The control plane against what goes wrong around it: an SPF request
lost between the planes, a spool that does not answer, the telemetry
socket's mode, and two operators changing policy at once.

The losses come from the test shim of [faults]: spf_lost_from_mail drops
the early SPF request of a session's later MAILs as a full request ring
would, and spool_stall_s holds every delivery for that long first.
"""
import json
import os
import re
import socket
import stat
import subprocess

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
        # the first MAIL's check is over: done, or cancelled when the
        # message of the next transaction came before its answer
        after = wait_for(lambda: (lambda s: s if delta(s, before, "spf_checks_early") +
                                  delta(s, before, "spf_checks_cancelled") >= 1
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
    stall = 10
    cfg = conf_with("stall", control={"delivery_timeout_s": 1},
                    faults={"spool_stall_s": stall})
    with Edge(cfg) as edge:
        before_files = spool_files()
        before = edge.stats()
        r = peer("dialogue", PTR6, EDGE6, "EHLO client.lab.example",
                 "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>",
                 "DATA", MSG)["replies"]
        expect(r[5].startswith("451 4.3.0 "), f"a stalled spool: {r}")
        expect(spool_files() == before_files, "the 451 came after the write: no deadline")
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
        # The 451 went through the SMTP engine (in order, logged as the
        # transaction's reply), and the late answer names the copy that was
        # written after it.
        expect(re.search(r"event=transaction .*reply=451 replies=[0-9,]*354,451 ", edge.read_log()),
               f"no transaction line with the 451: {edge.read_log()[-1500:]}")
        path = (spool_files() - before_files).pop()
        qid = re.search(rb"with ESMTP id ([0-9A-F]+)", open(path, "rb").read(600)).group(1).decode()
        expect(wait_for(lambda: re.search(r"event=transaction .*reply=451 .*queue_id=" + qid +
                                          r" .*flags=late_write", edge.read_log())),
               f"no late_write line with queue_id={qid}: {edge.read_log()[-1500:]}")



def socket_path(edge):
    return f"/var/run/dpdk/{edge.prefix}/dpdk_telemetry.v2"


def test_telemetry_socket_is_the_owners_alone():
    # Under the most permissive umask the socket must still be 0600:
    # through it, policy changes what the edge does.
    old = os.umask(0)
    try:
        edge = Edge().start()
    finally:
        os.umask(old)
    try:
        mode = stat.S_IMODE(os.stat(socket_path(edge)).st_mode)
        expect(mode == 0o600, f"telemetry socket mode {mode:o}, want 600")
        expect(edge.ctl("version").returncode == 0, "the owner can still use it")
    finally:
        edge.kill()


# Settings that differ from the defaults, each a separate change; and the
# defaults to go back to between rounds.
CHANGES = [("ipv6-ptr", "reply=450"), ("ipv6-ptr", "fcrdns=yes"),
           ("ipv6-ptr", "stage=rcpt"), ("ipv4-ptr", "action=log"),
           ("ipv6-auth", "reply=554"), ("ipv4-auth", "action=log")]
DEFAULTS = [("ipv6-ptr", "action=enforce reply=550 stage=mail fcrdns=no"),
            ("ipv4-ptr", "action=off reply=550 stage=mail fcrdns=no"),
            ("ipv6-auth", "action=enforce reply=450"),
            ("ipv4-auth", "action=off reply=450")]


def policy_now(edge):
    r = edge.ctl("policy", "show", "--json")
    return json.loads(r.stdout)["/smtpedge/policy"]


def all_changes_in(policy):
    missing = []
    for rule, kv in CHANGES:
        k, v = kv.split("=")
        if str(policy[rule][k]) != v:
            missing.append(f"{rule} {kv}")
    return missing


def ask_at_once(path, cmds):
    """Every command on its own connection, sent back to back, so the
    server's handler threads run them at the same moment."""
    socks = []
    for _ in cmds:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        s.recv(4096)                  # the greeting
        socks.append(s)
    for s, c in zip(socks, cmds):
        s.send(c.encode())
    replies = [json.loads(s.recv(4096)) for s in socks]
    for s in socks:
        s.close()
    return replies


def test_concurrent_policy_sets_all_stay():
    with Edge() as edge:
        path = socket_path(edge)
        for rnd in range(200):
            for rule, kvs in DEFAULTS:
                edge.ctl("policy", "set", rule, *kvs.split())
            replies = ask_at_once(path, [f"/smtpedge/policy/set,{rule} {kv}"
                                         for rule, kv in CHANGES])
            for r in replies:
                expect("error" not in r["/smtpedge/policy/set"], f"{r}")
            missing = all_changes_in(policy_now(edge))
            expect(not missing, f"round {rnd}: changes lost: {missing}")
        # And as an operator does it: smtpedgectl processes at once.
        for rnd in range(10):
            for rule, kvs in DEFAULTS:
                edge.ctl("policy", "set", rule, *kvs.split())
            procs = [subprocess.Popen([labkit.SMTPEDGECTL, "--file-prefix", edge.prefix,
                                       "policy", "set", rule, kv],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for rule, kv in CHANGES]
            for p in procs:
                expect(p.wait(30) == 0, f"smtpedgectl: {p.stderr.read()}")
            missing = all_changes_in(policy_now(edge))
            expect(not missing, f"smtpedgectl round {rnd}: changes lost: {missing}")


if __name__ == "__main__":
    labkit.main(globals())
