#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""SMTP through the DPDK port, end to end: the IPv6 PTR rule, the spool,
live policy changes, and load from 1,000 peer addresses.

Linux's TCP in the peer namespace is the client (Python sockets, smtplib,
swaks); unbound in the edge namespace answers the lookups; the spool is the
Maildir of conf/lab.conf.
"""
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import labkit
from labkit import LAB, Edge, expect, in_peer, delta

PEER = os.path.join(labkit.HERE, "peer.py")
EDGE6, EDGE4 = LAB["LAB_EDGE6"], LAB["LAB_EDGE4"]
SPOOL = LAB["LAB_DIR"] + "/spool"
MAIL = "MAIL FROM:<alice@example.org>"
RCPT = "RCPT TO:<bob@example.net>"


def peer(*args, timeout=600):
    r = in_peer("/usr/bin/python3", PEER, *args, check=False, timeout=timeout)
    if r.returncode != 0:
        raise labkit.Failure(f"peer.py {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def talk(src, *lines, pipeline=False, dst=EDGE6):
    args = ["dialogue", src, dst] + (["--pipeline"] if pipeline else []) + list(lines)
    return peer(*args)["replies"]


def no_ptr_text(addr, code=550):
    enh = "5.7.25" if code == 550 else "4.7.25"
    fam = "IPv6" if ":" in addr else "IPv4"
    return f"{code} {enh} Service unavailable, sending {fam} address [{addr}] must have a reverse DNS record"


def spool_files():
    return set(glob.glob(SPOOL + "/new/*"))


def spooled_body(path):
    """The message as stored, without our Received: and
    Authentication-Results: headers (the first two fields)."""
    data = open(path, "rb").read()
    expect(data.startswith(b"Received: from "), f"{path} does not start with our Received:")
    lines = data.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    expect(lines[i].startswith(b"Authentication-Results: mx.lab.example;"),
           f"no Authentication-Results after our Received: {lines[i]!r}")
    i += 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:]), data


def test_ptr_ok_gets_250_and_message_is_spooled_byte_exact():
    with Edge() as edge:
        before = spool_files()
        sizes = [0, 1, 1000, 65536, 1 << 20]
        for i, size in enumerate(sizes):
            r = peer("send", LAB["LAB_PEER6_PTR"], EDGE6, "alice@example.org",
                     "bob@example.net", str(size), str(i))
            expect(r["code"] == 250 and re.match(r"2\.0\.0 Ok: queued as [0-9A-F]{17}$", r["text"]),
                   f"size {size}: {r}")
            qid = r["text"].split()[-1]
            new = [p for p in spool_files() - before if f"id {qid}".encode() in open(p, "rb").read(600)]
            expect(len(new) == 1, f"queue id {qid}: {len(new)} spool files")
            body, whole = spooled_body(new[0])
            expect(hashlib.sha256(body).hexdigest() == r["sha256"],
                   f"size {size}: spooled {len(body)} bytes, sent {r['size']}: not identical")
            expect(b"(peer-ok.lab.example [IPv6:2001:db8:1::10])" in whole[:300],
                   f"Received: header lacks the PTR name: {whole[:300]!r}")
        log = edge.read_log()
        expect(re.search(r"event=transaction peer=2001:db8:1::10 port=\d+ reply=250 replies=[0-9,]+ "
                         r"ptr=pass ipv6-ptr=pass .*queue_id=[0-9A-F]{17} .*ptr_name=peer-ok.lab.example ", log),
               f"no transaction log line: {log[-2000:]}")


def test_20mb_message_byte_exact():
    with Edge():
        r = peer("send", LAB["LAB_PEER6_PTR"], EDGE6, "alice@example.org", "bob@example.net",
                 str(20 << 20), "20")
        expect(r["code"] == 250, f"20 MB: {r}")
        qid = r["text"].split()[-1]
        new = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(600)]
        expect(len(new) == 1, f"queue id {qid}: {len(new)} spool files")
        body, _ = spooled_body(new[0])
        expect(hashlib.sha256(body).hexdigest() == r["sha256"], "20 MB message not identical")


def test_smtplib_pipelined_commands():
    script = f"""
import smtplib, json
c = smtplib.SMTP(timeout=30, source_address=("{LAB['LAB_PEER6_PTR']}", 0))
c.connect("{EDGE6}", 25)
c.ehlo("client.lab.example")
assert c.has_extn("pipelining")
c.send(b"MAIL FROM:<alice@example.org>\\r\\nRCPT TO:<bob@example.net>\\r\\n"
       b"RCPT TO:<nobody@elsewhere.example>\\r\\nDATA\\r\\n")
replies = [c.getreply() for _ in range(4)]
c.send(b"Subject: pipelined\\r\\n\\r\\nbody\\r\\n.\\r\\nQUIT\\r\\n")
replies += [c.getreply() for _ in range(2)]
print(json.dumps([[code, msg.decode()] for code, msg in replies]))
"""
    with Edge():
        r = in_peer("/usr/bin/python3", "-c", script, check=False, timeout=60)
        expect(r.returncode == 0, r.stderr[-1000:])
        codes = [c for c, _ in json.loads(r.stdout)]
        expect(codes == [250, 250, 550, 354, 250, 221], f"replies in order: {r.stdout}")


def test_smtp_source_concurrent_sessions():
    with Edge() as edge:
        before_files = len(spool_files())
        before = edge.stats()
        n = 500
        r = in_peer("smtp-source", "-s", "20", "-m", str(n), "-l", "2048", "-M", "source.lab.example",
                    "-f", "alice@example.org", "-t", "bob@example.net", f"[{EDGE6}]:25",
                    check=False, timeout=300)
        expect(r.returncode == 0 and not r.stderr.strip(), f"smtp-source: {r.returncode} {r.stderr[-1500:]}")
        after = edge.stats()
        expect(len(spool_files()) - before_files == n, f"{len(spool_files()) - before_files} messages spooled of {n}")
        expect(delta(after, before, "spool_written") == n, "spool_written")
        expect(delta(after, before, "sessions_opened") == n, "one session per message")
        # Concurrent senders share the disk's flushes: fewer groups than
        # messages, one fsync per file and one of new/ per group.
        groups = delta(after, before, "spool_groups")
        sizes = [delta(after, before, f"spool_group_{b}")
                 for b in ("1", "2_4", "5_16", "17_64", "65_up")]
        expect(sum(sizes) == groups, f"the group sizes {sizes} do not sum to {groups} groups")
        expect(0 < groups < n, f"{groups} groups for {n} messages")
        expect(delta(after, before, "spool_fsyncs") == n + groups,
               f"{delta(after, before, 'spool_fsyncs')} fsyncs for {n} messages in {groups} groups")
        print(f"  {n} messages in {groups} groups, sizes 1/2-4/5-16/17-64/65+: {sizes}")


def test_spool_unwritable_gives_451():
    with Edge() as edge:
        # The spool writes through the tmp/ it opened at start: removed,
        # it takes no file (and a file in its place changes nothing).
        tmp = SPOOL + "/tmp"
        shutil.rmtree(tmp)
        open(tmp, "w").close()
        try:
            before = len(spool_files())
            r = peer("send", LAB["LAB_PEER6_PTR"], EDGE6, "alice@example.org", "bob@example.net",
                     "100", "7")
            expect(r["code"] == 451 and r["text"].startswith("4.3.0 "), f"spool unwritable: {r}")
            expect(len(spool_files()) == before, "a file appeared in new/")
            expect(edge.stats()["spool_failed"] >= 1, "spool_failed not counted")
        finally:
            os.unlink(tmp)
            os.mkdir(tmp, 0o750)


def test_swaks_delivers():
    with Edge():
        r = in_peer("swaks", "--server", EDGE6, "--local-interface", LAB["LAB_PEER6_PTR"],
                    "--from", "alice@example.org", "--to", "bob@example.net",
                    "--helo", "client.lab.example", check=False, timeout=60)
        expect(r.returncode == 0 and re.search(r"<-  250 2\.0\.0 Ok: queued as", r.stdout),
               f"swaks: {r.stdout[-1500:]}")


def test_no_ptr_gets_550_at_mail():
    with Edge() as edge:
        before = edge.stats()
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO client.lab.example", MAIL, "QUIT")
        expect(r[0].startswith("220 mx.lab.example"), r[0])
        expect(r[2] == no_ptr_text(LAB["LAB_PEER6_NOPTR"]), f"MAIL got {r[2]!r}")
        expect(r[3].startswith("221 "), r[3])
        after = edge.stats()
        expect(delta(after, before, "ipv6_ptr_reject") == 1, "ipv6-ptr_reject not counted")
        expect(delta(after, before, "rdns_none") == 1, "rdns_none not counted")


def test_no_ptr_pipelined():
    with Edge():
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO client.lab.example", MAIL, RCPT, "DATA", "QUIT",
                 pipeline=True)
        expect(len(r) == 6, f"{len(r)} replies for 5 commands and a greeting: {r}")
        expect(r[2] == no_ptr_text(LAB["LAB_PEER6_NOPTR"]), f"MAIL got {r[2]!r}")
        expect(r[3].startswith("503 5.5.1"), f"RCPT without a sender: {r[3]!r}")
        expect(r[4][:3] in ("503", "554"), f"DATA without recipients: {r[4]!r}")
        expect(r[5].startswith("221 "), r[5])


def test_ptr_ok_pipelined_transaction():
    with Edge():
        r = talk(LAB["LAB_PEER6_PTR"], "EHLO client.lab.example", MAIL, RCPT,
                 "RCPT TO:<carol@example.org>", "RCPT TO:<mallory@elsewhere.example>", "NOOP",
                 pipeline=True)
        expect([x[:3] for x in r[2:]] == ["250", "250", "250", "550", "250"], f"{r}")
        expect(r[5].startswith("550 5.7.1"), f"relay to elsewhere: {r[5]!r}")


def test_mismatch_follows_fcrdns_setting():
    with Edge() as edge:
        r = talk(LAB["LAB_PEER6_MISMATCH"], "EHLO c", MAIL, "QUIT")
        expect(r[2].startswith("250"), f"fcrdns=no: a PTR is enough, got {r[2]!r}")
        s = edge.ctl("policy", "set", "ipv6-ptr", "fcrdns=yes")
        expect("fcrdns=yes" in s.stdout, s.stdout)
        r = talk(LAB["LAB_PEER6_MISMATCH"], "EHLO c", MAIL, "QUIT")
        expect(r[2] == no_ptr_text(LAB["LAB_PEER6_MISMATCH"]), f"fcrdns=yes: {r[2]!r}")


def test_dns_failure_gives_451_never_5xx():
    with Edge() as edge:
        r = talk(LAB["LAB_PEER6_DNSFAIL"], "EHLO c", MAIL, "QUIT")
        expect(r[2].startswith("451 4.7.25 ") and "[2001:db8:1::40]" in r[2], f"MAIL got {r[2]!r}")
        # Even with the hardest settings, a temporary failure stays a 4xx.
        edge.ctl("policy", "set", "ipv6-ptr", "reply=550", "fcrdns=yes", "stage=rcpt")
        r = talk(LAB["LAB_PEER6_DNSFAIL"], "EHLO c", MAIL, RCPT, "QUIT")
        expect(r[2].startswith("250") and r[3].startswith("451 4.7.25 "), f"{r}")


def test_unbound_stopped_gives_451():
    with Edge(config=lab_conf(timeout_ms=500)) as edge:
        pid = open(LAB["LAB_DIR"] + "/unbound.pid").read().strip()
        subprocess.run(["kill", pid], check=True)
        try:
            time.sleep(0.3)
            src = "2001:db8:1::1:3e7"     # a bulk peer no test has looked up
            r = talk(src, "EHLO c", MAIL, "QUIT")
            expect(r[2].startswith("451 4.7.25 "), f"MAIL with DNS down: {r[2]!r}")
            expect(edge.stats()["rdns_temperror"] >= 1, "rdns_temperror not counted")
        finally:
            labkit.lab_up()   # restarts unbound


def test_policy_set_reply_450_and_log_live():
    with Edge() as edge:
        r = edge.ctl("policy", "set", "ipv6-ptr", "reply=450")
        expect(r.stdout.strip() == "ipv6-ptr: action=enforce reply=450 stage=mail fcrdns=no", r.stdout)
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO c", MAIL, "QUIT")
        expect(r[2] == no_ptr_text(LAB["LAB_PEER6_NOPTR"], 450), f"after reply=450: {r[2]!r}")
        edge.ctl("policy", "set", "ipv6-ptr", "action=log")
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO c", MAIL, RCPT, "QUIT")
        expect(r[2].startswith("250") and r[3].startswith("250"), f"action=log: {r}")
        expect(edge.stats()["ipv6_ptr_logged"] >= 1, "ipv6-ptr_logged not counted")
        log = edge.read_log()
        expect('policy rule=ipv6-ptr was="action=enforce reply=450' in log, "the change was not logged")
        expect(re.search(r"peer=2001:db8:1::20 .*ptr=none ipv6-ptr=logged", log), "no logged verdict line")
        show = json.loads(edge.ctl("policy", "show", "--json").stdout)["/smtpedge/policy"]
        expect(show["ipv6-ptr"] == {"action": "log", "reply": "450", "stage": "mail", "fcrdns": "no"}, show)


def test_policy_set_refuses_bad_values_and_changes_nothing():
    with Edge() as edge:
        r = edge.ctl("policy", "set", "ipv6-ptr", "reply=451", check=False)
        expect(r.returncode == 1 and r.stderr.strip() ==
               'smtpedgectl: policy set ipv6-ptr: reply: "451" is not one of 550 450', r.stderr)
        r = edge.ctl("policy", "set", "ipv6-ptr", "stage=mail", "reply=999", check=False)
        expect(r.returncode == 1, "a half-bad set was accepted")
        show = json.loads(edge.ctl("policy", "show", "--json").stdout)["/smtpedge/policy"]
        expect(show["ipv6-ptr"]["reply"] == "550", f"a refused set changed the rule: {show}")
        r = edge.ctl("policy", "set", "ipv9-ptr", "reply=450", check=False)
        expect(r.returncode == 1 and "no such rule" in r.stderr, r.stderr)


def test_stage_connect_and_rcpt():
    with Edge() as edge:
        edge.ctl("policy", "set", "ipv6-ptr", "stage=connect")
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO c", "QUIT")
        expect(r[0] == no_ptr_text(LAB["LAB_PEER6_NOPTR"]), f"greeting at stage=connect: {r[0]!r}")
        expect(r[1].startswith("503"), f"EHLO after a refused greeting: {r[1]!r}")
        r = talk(LAB["LAB_PEER6_PTR"], "EHLO c", "QUIT")
        expect(r[0].startswith("220 "), f"a peer with PTR is greeted: {r[0]!r}")
        edge.ctl("policy", "set", "ipv6-ptr", "stage=rcpt")
        r = talk(LAB["LAB_PEER6_NOPTR"], "EHLO c", MAIL, RCPT, "QUIT")
        expect(r[2].startswith("250") and r[3] == no_ptr_text(LAB["LAB_PEER6_NOPTR"]), f"stage=rcpt: {r}")


def test_ipv4_rule_is_off_by_default_and_switchable():
    with Edge() as edge:
        r = talk(LAB["LAB_PEER4_NOPTR"], "EHLO c", MAIL, "QUIT", dst=EDGE4)
        expect(r[2].startswith("250"), f"ipv4-ptr is off by default: {r[2]!r}")
        edge.ctl("policy", "set", "ipv4-ptr", "action=enforce")
        r = talk(LAB["LAB_PEER4_NOPTR"], "EHLO c", MAIL, "QUIT", dst=EDGE4)
        expect(r[2] == no_ptr_text(LAB["LAB_PEER4_NOPTR"]), f"ipv4-ptr enforced: {r[2]!r}")
        r = talk(LAB["LAB_PEER4_PTR"], "EHLO c", MAIL, "QUIT", dst=EDGE4)
        expect(r[2].startswith("250"), f"IPv4 peer with PTR: {r[2]!r}")


def pools(edge):
    return edge.stats()["pools"]


def test_10000_sessions_from_1000_addresses():
    with Edge() as edge:
        start = pools(edge)
        before = edge.stats()
        n = 10000
        r = peer("bulk", EDGE6, LAB["LAB_BULK6_BASE"], LAB["LAB_BULK6_COUNT"], str(n), "64",
                 timeout=900)
        expect(not r["errors"], f"session errors: {r['errors']}")
        expect(r["even"] == {"250": n // 2}, f"peers with PTR: {r['even']}")
        expect(r["odd"] == {"550": n // 2}, f"peers without PTR: {r['odd']}")
        expect(r["bye"] == {"221": n}, f"QUIT replies: {r['bye']}")
        # Everything the sessions took comes back.
        ok = labkit.wait_for(lambda: edge.stats()["sessions_active"] == 0, timeout=30)
        after = edge.stats()
        expect(ok, f"sessions_active {after['sessions_active']} after the load")
        expect(delta(after, before, "sessions_opened") == n, "sessions_opened")
        expect(delta(after, before, "sessions_closed") == n, "sessions_closed")
        expect(delta(after, before, "ipv6_ptr_reject") == n // 2, "ipv6_ptr_reject")
        expect(delta(after, before, "ipv6_ptr_pass") == n // 2, "ipv6_ptr_pass")
        expect(delta(after, before, "rdns_requests") == n, "one lookup per session")
        expect(delta(after, before, "verdicts_stale") == 0, "stale verdicts")
        end = labkit.wait_for(lambda: pools(edge) if pools(edge)["txrecs_free"] == start["txrecs_free"] else None,
                              timeout=10) or pools(edge)
        for k in ("mbufs_free", "txrecs_free", "body_chunks_free", "request_ring_used",
                  "verdict_ring_used"):
            expect(end[k] == start[k], f"{k}: {start[k]} before, {end[k]} after")


def lab_conf(**changes):
    """conf/lab.conf with some keys (each unique in that file) changed."""
    src = open(os.path.join(labkit.ROOT, "conf/lab.conf")).read()
    for key, value in changes.items():
        src, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", src, flags=re.M)
        expect(n == 1, f"{key} is not a key of conf/lab.conf")
    path = LAB["LAB_DIR"] + "/test.conf"
    open(path, "w").write(src)
    return path


if __name__ == "__main__":
    labkit.main(globals())
