#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The second rule, end to end: mail over IPv6 must pass SPF or DKIM.

unbound in the lab serves the SPF records of example.org (every lab peer
may send), spf-fail.example (nobody may), spf-temp.example (its zone is
refused: a temporary failure) and dkim.example (SPF -all, and the lab's DKIM
key under the selector `lab`). Messages are signed here with that key
(python3-dkim) and sent from the peer namespace.

DKIM's key records are fetched by the dispatcher as soon as a message's
header block has arrived, while its body is still coming, and the work
thread verifies from those answers: the counters show every key served from
the fetched set and none looked up by a work thread. A message whose body
is held back after its header block has its key query out before the end
of DATA, and a signed message's body is hashed while it arrives, chunk by
chunk, so that the end of DATA leaves little but the signature checks.
With the key records' answers held back by scripts/dnsdelay.py, signed
messages wait for their keys without a work thread each, so other senders'
mail goes through meanwhile, and the signed message still passes once its
key arrives.
"""
import hashlib
import json
import re
import subprocess
import threading
import time

import dkim

import labkit
from labkit import LAB, Edge, expect, in_peer, delta
from test_smtp import EDGE6, EDGE4, SPOOL, peer, spool_files, spooled_body
from test_slowdns import PROXY, proxied_conf

PTR6 = LAB["LAB_PEER6_PTR"]
FAIL_TEXT = "Service unavailable, message sent over IPv6 must pass either SPF or DKIM validation"


def message(sender, subject="auth test", extra=b""):
    return (f"From: <{sender}>\r\nTo: <bob@example.net>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@lab.example>\r\n").encode() + extra + \
        b"\r\nHello from the lab.\r\n.leading dot line\r\n"


def signed(msg, selector=LAB["LAB_DKIM_SELECTOR"]):
    key = open(LAB["LAB_DIR"] + "/dkim.key", "rb").read()
    sig = dkim.sign(msg, selector.encode(), b"dkim.example", key,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + msg


def send_bytes(msg, mail_from, src=PTR6, dst=EDGE6):
    path = LAB["LAB_DIR"] + "/msg.eml"
    with open(path, "wb") as f:
        f.write(msg)
    return peer("sendfile", src, dst, mail_from, "bob@example.net", path)


def stored(r):
    qid = r["text"].split()[-1]
    files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(600)]
    expect(len(files) == 1, f"queue id {qid}: {len(files)} files")
    return files[0]


def auth_results(path):
    data = open(path, "rb").read().decode("utf-8", "replace")
    m = re.search(r"Authentication-Results: mx\.lab\.example;\r\n((?:\t[^\r]*\r\n)+)", data)
    expect(m, f"no Authentication-Results of ours in {path}")
    return " ".join(l.strip() for l in m.group(1).split("\r\n"))


def test_spf_pass_gets_250_and_results_header():
    with Edge() as edge:
        msg = message("alice@example.org")
        r = send_bytes(msg, "alice@example.org")
        expect(r["code"] == 250, f"SPF pass: {r}")
        path = stored(r)
        ar = auth_results(path)
        expect("iprev=pass policy.iprev=2001:db8:1::10 (peer-ok.lab.example);" in ar, ar)
        expect("spf=pass smtp.mailfrom=alice@example.org;" in ar, ar)
        expect("dkim=none" in ar, ar)
        body, _ = spooled_body(path)
        expect(body == msg, "the delivered message differs from what was sent")
        expect(edge.stats()["auth_pass"] >= 1, "auth_pass not counted")
        log = edge.read_log()
        expect(re.search(r"peer=2001:db8:1::10 .* spf=pass dkim=none ipv6-auth=pass queue_id=", log),
               f"no auth fields in the log: {log[-1500:]}")


def test_spf_fail_without_dkim_gets_450():
    with Edge() as edge:
        before = spool_files()
        r = send_bytes(message("carol@spf-fail.example"), "carol@spf-fail.example")
        expect(r["code"] == 450 and r["text"] == "4.7.26 " + FAIL_TEXT, f"{r}")
        expect(spool_files() == before, "a refused message was spooled")
        expect(edge.stats()["auth_reject"] == 1, "auth_reject")


def test_hard_mode_554_live():
    with Edge() as edge:
        s = edge.ctl("policy", "set", "ipv6-auth", "reply=554")
        expect(s.stdout.strip() == "ipv6-auth: action=enforce reply=554", s.stdout)
        r = send_bytes(message("carol@spf-fail.example"), "carol@spf-fail.example")
        expect(r["code"] == 554 and r["text"] == "5.7.26 " + FAIL_TEXT, f"{r}")


def test_dkim_pass_with_spf_fail_gets_250():
    with Edge() as edge:
        before = edge.stats()
        msg = signed(message("dave@dkim.example", "signed"))
        r = send_bytes(msg, "dave@dkim.example")
        expect(r["code"] == 250, f"DKIM pass, SPF fail: {r}")
        # the key was fetched on the dispatcher and served to the work
        # thread from the fetched answers: no work thread asked DNS
        after = edge.stats()
        expect(delta(after, before, "dkim_key_queries") == 1, f"dkim_key_queries: {after}")
        expect(delta(after, before, "dkim_keys_served") == 1, f"dkim_keys_served: {after}")
        expect(delta(after, before, "dkim_keys_missing") == 0, f"dkim_keys_missing: {after}")
        path = stored(r)
        ar = auth_results(path)
        expect("spf=fail smtp.mailfrom=dave@dkim.example;" in ar, ar)
        expect("dkim=pass header.d=dkim.example header.s=lab header.a=rsa-sha256" in ar, ar)
        body, _ = spooled_body(path)
        expect(body == msg, "the signed message was changed")


def test_dkim_broken_and_spf_fail_gets_450():
    with Edge():
        msg = signed(message("dave@dkim.example", "tampered")).replace(b"Hello", b"Jello")
        r = send_bytes(msg, "dave@dkim.example")
        expect(r["code"] == 450, f"a changed body must not pass: {r}")


def test_dns_trouble_gives_451_never_5xx():
    with Edge() as edge:
        edge.ctl("policy", "set", "ipv6-auth", "reply=554")
        r = send_bytes(message("erin@spf-temp.example"), "erin@spf-temp.example")
        expect(r["code"] == 451 and r["text"].startswith("4.7.26 "), f"SPF temperror: {r}")
        expect(edge.stats()["auth_defer"] == 1, "auth_defer")


def test_action_log_delivers_and_logs():
    with Edge() as edge:
        edge.ctl("policy", "set", "ipv6-auth", "action=log")
        r = send_bytes(message("carol@spf-fail.example"), "carol@spf-fail.example")
        expect(r["code"] == 250, f"action=log: {r}")
        expect(re.search(r"spf=fail dkim=none ipv6-auth=logged", edge.read_log()), "not logged")


def test_ipv4_auth_is_off_by_default():
    with Edge():
        r = send_bytes(message("carol@spf-fail.example"), "carol@spf-fail.example",
                       src=LAB["LAB_PEER4_PTR"], dst=EDGE4)
        expect(r["code"] == 250, f"IPv4, rule off: {r}")


def test_forged_results_header_is_removed():
    with Edge():
        extra = (b"Authentication-Results: mx.lab.example; spf=pass smtp.mailfrom=forged@example.org\r\n"
                 b"Authentication-Results: (comment) MX.LAB.EXAMPLE 1;\r\n\tdkim=pass header.d=bank.example\r\n"
                 b"Authentication-Results: other.example; spf=fail\r\n")
        msg = message("alice@example.org", "forged", extra)
        r = send_bytes(msg, "alice@example.org")
        expect(r["code"] == 250, f"{r}")
        body, whole = spooled_body(stored(r))
        expect(b"forged@example.org" not in whole and b"bank.example" not in whole,
               "a forged Authentication-Results claiming our id survived")
        expect(b"Authentication-Results: other.example; spf=fail\r\n" in body,
               "someone else's Authentication-Results was removed")
        expect(body == msg.replace(extra, b"Authentication-Results: other.example; spf=fail\r\n"),
               "more than the forged fields changed")


def test_unconfirmed_ptr_name_is_not_passed_on():
    """fcrdns = no lets the mismatch peer send, but its PTR name
    (peer-mismatch.lab.example, whose AAAA is elsewhere) is anyone's to
    write: our headers must not present it as the client's name."""
    with Edge():
        msg = message("alice@example.org", "mismatch")
        r = send_bytes(msg, "alice@example.org", src=LAB["LAB_PEER6_MISMATCH"])
        expect(r["code"] == 250, f"mismatch peer, fcrdns=no: {r}")
        path = stored(r)
        whole = open(path, "rb").read()
        expect(whole.startswith(b"Received: from "), "no Received: first")
        first = whole.split(b"\r\n", 1)[0]
        expect(first.endswith(b" (unknown [IPv6:2001:db8:1::30])"), f"Received: {first!r}")
        expect(b"peer-mismatch" not in whole, "the unconfirmed PTR name was written")
        ar = auth_results(path)
        expect("iprev=fail policy.iprev=2001:db8:1::30;" in ar, ar)


def test_forged_results_header_every_form_is_removed():
    """Nested comments, quoted-pairs, a quoted authserv-id, folds, and a
    message with no body at all."""
    with Edge():
        extra = (b"Authentication-Results: (a (b) c) mx.lab.example; spf=pass smtp.mailfrom=n1@forged.example\r\n"
                 b"Authentication-Results: (x \\) y) mx.lab.example; dkim=pass header.d=n2.forged.example\r\n"
                 b"Authentication-Results:\r\n \"mx.lab.example\"\r\n 1; spf=pass smtp.mailfrom=n3@forged.example\r\n"
                 b"Authentication-Results: other.example; spf=fail\r\n")
        msg = message("alice@example.org", "forged forms", extra)
        r = send_bytes(msg, "alice@example.org")
        expect(r["code"] == 250, f"{r}")
        body, whole = spooled_body(stored(r))
        expect(b"forged.example" not in whole, "a forged Authentication-Results survived")
        expect(body == msg.replace(extra, b"Authentication-Results: other.example; spf=fail\r\n"),
               "more than the forged fields changed")
        headers_only = (b"From: <alice@example.org>\r\n"
                        b"Authentication-Results: mx.lab.example; spf=pass smtp.mailfrom=n4@forged.example\r\n"
                        b"Subject: no body\r\n")
        r = send_bytes(headers_only, "alice@example.org")
        expect(r["code"] == 250, f"{r}")
        data = open(stored(r), "rb").read()
        expect(b"forged.example" not in data, "headers only: the forged field survived")
        expect(data.endswith(b"From: <alice@example.org>\r\nSubject: no body\r\n"),
               f"headers only: {data[-200:]!r}")


# Signed messages, one session each, all at once from the peer namespace;
# each prints its index and its reply to the end of DATA as it comes.
SIGNED_CLIENT = r"""
import asyncio, json, sys
src, dst, mail_from, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            return "closed"
        if len(line) < 4 or line[3:4] != b"-":
            return line.decode().rstrip()
async def session(i, path):
    r, w = await asyncio.open_connection(dst, 25, local_addr=(src, 0))
    await reply(r)
    for cmd in ("EHLO client.lab.example", f"MAIL FROM:<{mail_from}>",
                "RCPT TO:<bob@example.net>", "DATA"):
        w.write(cmd.encode() + b"\r\n")
        await reply(r)
    data = open(path, "rb").read()
    w.write(b"".join(b"." + l if l.startswith(b".") else l
                     for l in data.splitlines(keepends=True)) + b".\r\n")
    got = await reply(r)
    print(json.dumps([i, got]), flush=True)
    w.write(b"QUIT\r\n")
    await reply(r)
    w.close()
async def main():
    await asyncio.gather(*(asyncio.wait_for(session(i, p), 120) for i, p in enumerate(paths)))
asyncio.run(main())
"""
# Held long enough that, on work threads waiting for keys, the others' mail
# would queue behind them; short of where the lab's libunbound gives up on
# its forwarder (about 4 s: SERVFAIL, a temperror).
KEY_SLOW_MS = 2000
SIGNED = 4  # more than the work threads (2)


def test_slow_dkim_keys_hold_no_work_thread():
    # Every key record's answer is held KEY_SLOW_MS. Message 0 is signed
    # with the lab's key, the others with selectors that do not exist (their
    # answers, NXDOMAIN, are just as slow). While they all wait for their
    # keys, other senders deliver; then message 0 passes DKIM (SPF fails
    # for dkim.example) and the others do not.
    cfg = proxied_conf("slowkeys")
    paths = []
    for i in range(SIGNED):
        msg = signed(message("dave@dkim.example", f"slow key {i}"),
                     f"none{i}" if i else LAB["LAB_DKIM_SELECTOR"])
        paths.append(LAB["LAB_DIR"] + f"/slowkey{i}.eml")
        with open(paths[-1], "wb") as f:
            f.write(msg)
    replies = {}
    with labkit.DnsDelay(PROXY, "_domainkey.dkim.example", KEY_SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", "-c", SIGNED_CLIENT,
             PTR6, EDGE6, "dave@dkim.example"] + paths,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def read():
            for line in proc.stdout:
                i, got = json.loads(line)
                replies[i] = got
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            waiting = labkit.wait_for(
                lambda: (lambda s: s if delta(s, before, "dkim_key_queries") >= SIGNED
                         else None)(edge.stats()), timeout=30)
            expect(waiting, f"the signed messages' key queries are not out: {edge.stats()}")
            before_files = spool_files()
            for k in range(2):
                r = peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net", "800",
                         str(k))
                expect(r["code"] == 250, f"other sender {k}: {r}")
                qid = r["text"].split()[-1]
                new = [p for p in spool_files() - before_files
                       if f"id {qid}".encode() in open(p, "rb").read(600)]
                expect(len(new) == 1, f"other sender {k}: queue id {qid}: {len(new)} files")
            answered = dict(replies)
            expect(not answered, f"signed messages answered before the others: {answered}")
            proc.wait(120)
            reader.join(5)
            expect(proc.returncode == 0, f"the signed sessions: {proc.stderr.read()[-1000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        expect(len(replies) == SIGNED, f"replies: {replies}")
        expect(replies[0].startswith("250 2.0.0 "), f"the signed message, once its key came: "
               f"{replies[0]}")
        for i in range(1, SIGNED):
            expect(replies[i].startswith("450 "), f"message {i}, no such key: {replies[i]}")
        after = edge.stats()
        expect(delta(after, before, "dkim_deliveries_parked") >= SIGNED,
               f"dkim_deliveries_parked: {after}")
        expect(delta(after, before, "dkim_keys_served") == SIGNED, f"dkim_keys_served: {after}")
        expect(delta(after, before, "dkim_keys_missing") == 0, f"dkim_keys_missing: {after}")
        qid = replies[0].split()[-1]
        files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(600)]
        expect(len(files) == 1, f"queue id {qid}: {len(files)} files")
        expect("dkim=pass header.d=dkim.example header.s=lab" in auth_results(files[0]),
               auth_results(files[0]))


# One signed message sent in two parts: the header block and the body's
# first line, then, when a line comes on stdin, the rest and the end of
# DATA. Prints "held" once the first part is out, then the reply.
HELD_CLIENT = r"""
import socket, sys
src, dst, mail_from, path, cut = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socket.create_connection((dst, 25), source_address=(src, 0), timeout=120)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if not line:
            return "closed"
        if len(line) < 4 or line[3:4] != b"-":
            return line.decode().rstrip()
reply()
for cmd in ("EHLO client.lab.example", f"MAIL FROM:<{mail_from}>",
            "RCPT TO:<bob@example.net>", "DATA"):
    s.sendall(cmd.encode() + b"\r\n")
    reply()
data = open(path, "rb").read()
wire = b"".join(b"." + l if l.startswith(b".") else l for l in data.splitlines(keepends=True))
s.sendall(wire[:cut])
print("held", flush=True)
sys.stdin.readline()
s.sendall(wire[cut:] + b".\r\n")
print(reply(), flush=True)
s.sendall(b"QUIT\r\n")
reply()
"""


def held_client(msg, name, cut):
    """HELD_CLIENT from the peer namespace, sending msg up to byte cut: it
    is returned once it says it holds the rest."""
    path = LAB["LAB_DIR"] + f"/{name}.eml"
    with open(path, "wb") as f:
        f.write(msg)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", "-c", HELD_CLIENT,
         PTR6, EDGE6, "dave@dkim.example", path, str(cut)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = proc.stdout.readline().strip()
    if held != "held":
        proc.kill()
        proc.wait()
        expect(False, f"the client: {held} {proc.stderr.read()[-1000:]}")
    return proc


def stats_when(edge, before, name, n):
    """The edge's stats once counter name has grown by n, or None after 30 s."""
    return labkit.wait_for(
        lambda: (lambda st: st if delta(st, before, name) >= n else None)(edge.stats()),
        timeout=30)


def test_dkim_keys_fetched_while_the_body_arrives():
    # The key record's answer is held KEY_SLOW_MS. The client sends the
    # header block and the body's first line, then holds the rest: the key
    # query must go out now, before the end of DATA, counted as fetched at
    # the header end. Then the rest of the body comes, and the message
    # passes DKIM (SPF fails for dkim.example) with the key fetched early.
    cfg = proxied_conf("earlykeys")
    msg = signed(message("dave@dkim.example", "early key"))
    cut = msg.index(b"\r\n\r\n") + 4 + len(b"Hello from the lab.\r\n")
    with labkit.DnsDelay(PROXY, "_domainkey.dkim.example", KEY_SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        proc = held_client(msg, "earlykey", cut)
        try:
            out = stats_when(edge, before, "dkim_key_queries", 1)
            expect(out, f"no key query before the end of DATA: {edge.stats()}")
            expect(delta(out, before, "dkim_keys_early") == 1, f"dkim_keys_early: {out}")
            expect(delta(out, before, "spool_requests") == 0, f"the delivery came early: {out}")
            # Past the key's delay: its answer is in before the body ends.
            time.sleep(KEY_SLOW_MS / 1000 + 1)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            got = proc.stdout.readline().strip()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        expect(got.startswith("250 2.0.0 "), f"the signed message: {got}")
        after = edge.stats()
        expect(delta(after, before, "dkim_key_queries") == 1, f"dkim_key_queries: {after}")
        expect(delta(after, before, "dkim_keys_early_used") == 1,
               f"dkim_keys_early_used: {after}")
        expect(delta(after, before, "dkim_keys_served") == 1, f"dkim_keys_served: {after}")
        expect(delta(after, before, "dkim_keys_missing") == 0, f"dkim_keys_missing: {after}")
        qid = got.split()[-1]
        files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(600)]
        expect(len(files) == 1, f"queue id {qid}: {len(files)} files")
        expect("dkim=pass header.d=dkim.example header.s=lab" in auth_results(files[0]),
               auth_results(files[0]))



def test_body_cut_after_its_header_block_comes_back():
    # The client sends the header block and the body's first line, then
    # hangs up: the body was lent to the dispatcher, which frees it (the
    # worker never does), and lets go of the key fetch. Every body chunk is
    # back in the budget afterwards.
    cfg = proxied_conf("cutbody")
    msg = signed(message("dave@dkim.example", "cut body"))
    cut = msg.index(b"\r\n\r\n") + 4 + len(b"Hello from the lab.\r\n")
    with labkit.DnsDelay(PROXY, "_domainkey.dkim.example", KEY_SLOW_MS), Edge(cfg) as edge:
        before = edge.stats()
        proc = held_client(msg, "cutbody", cut)
        try:
            out = stats_when(edge, before, "dkim_keys_early", 1)
            expect(out, f"no early fetch: {edge.stats()}")
        finally:
            proc.kill()  # the connection goes with it, the body half sent
            proc.wait()
        back = labkit.wait_for(
            lambda: (lambda st: st if delta(st, before, "bodies_returned") >= 1 and
                     st["pools"]["body_chunks_free"] == st["pools"]["body_chunks_total"]
                     else None)(edge.stats()), timeout=30)
        expect(back, f"the cut body's chunks are not back: {edge.stats()}")
        expect(delta(back, before, "dkim_keys_early_dropped") == 1,
               f"dkim_keys_early_dropped: {back}")
        expect(delta(back, before, "spool_requests") == 0, f"spool_requests: {back}")


def test_signed_body_hashed_while_it_arrives():
    # A signed message of many body chunks sent slowly: the header block
    # and half the body, a pause, then the rest. During the pause the
    # dispatcher, idle, has hashed every body chunk the worker filled
    # (before any delivery request); the rest comes in one burst, which the
    # dispatcher may leave to the work thread (it hashes only in rounds
    # with no request), and the message passes DKIM from the two parts.
    lines = b"".join(b"line %05d of a long signed body, hashed while it arrives\r\n" % i
                     for i in range(1600))
    msg = signed(message("dave@dkim.example", "hashed early", b"") + lines)
    eoh = msg.index(b"\r\n\r\n") + 4
    cut = eoh + (len(msg) - eoh) // 2
    with Edge() as edge:
        before = edge.stats()
        proc = held_client(msg, "hashearly", cut)
        try:
            # at least the chunks of half the body but the one being
            # filled: 8 KB chunks, minus their heads
            half = cut - eoh - 2 * 8192
            out = stats_when(edge, before, "dkim_body_bytes_early", half)
            expect(out, f"the body is not hashed while it arrives: {edge.stats()}")
            expect(delta(out, before, "dkim_hash_jobs") == 1, f"dkim_hash_jobs: {out}")
            expect(delta(out, before, "spool_requests") == 0, f"the delivery came early: {out}")
            expect(delta(out, before, "dkim_body_bytes_early") <= cut - eoh,
                   f"more hashed than sent: {out}")
            paused = delta(out, before, "dkim_body_bytes_early")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            got = proc.stdout.readline().strip()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        expect(got.startswith("250 2.0.0 "), f"the signed message: {got}")
        after = edge.stats()
        early = delta(after, before, "dkim_body_bytes_early")
        expect(paused <= early < len(msg) - eoh,
               f"the half hashed early, never the tail: {early} of {len(msg) - eoh}")
        expect(delta(after, before, "dkim_keys_early_used") == 1,
               f"dkim_keys_early_used: {after}")
        qid = got.split()[-1]
        files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(600)]
        expect(len(files) == 1, f"queue id {qid}: {len(files)} files")
        expect("dkim=pass header.d=dkim.example header.s=lab" in auth_results(files[0]),
               auth_results(files[0]))
        body, _ = spooled_body(files[0])
        expect(body == msg, "the signed message was changed")


if __name__ == "__main__":
    labkit.main(globals())
