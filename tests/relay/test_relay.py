#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/relay/test_relay.py — the 'relay' suite: control/relay.c against a scripted
fake downstream (fake_mta.py) and against Postfix's smtp-sink.

Each case runs relay_cli (a thin C wrapper around the library) against a
fresh fake MTA told how to answer, then checks the result line and what the
fake recorded: the commands and the message bytes after un-stuffing.

usage: test_relay.py RELAY_CLI
"""

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_mta import FakeMTA  # noqa: E402

CLI = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="relay-test-")
passed = failed = 0
PREFIX = (b"Received: from client.example (peer.example [IPv6:2001:db8::10])"
          b"\r\n\tby edge.test (smtpedge) with ESMTP id Q1;\r\n"
          b"\tSat, 28 Nov 2026 21:16:15 +0000\r\n")
BODY = b"Subject: hi\r\n\r\nHello.\r\n"


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


class Result:
    def __init__(self, line):
        parts = line.split(" ", 6)
        self.seq = parts[1]
        self.code = int(parts[2])
        self.enh = parts[3]
        self.delivered = int(parts[4])
        self.ms = float(parts[5])
        self.text = parts[6] if len(parts) > 6 else ""

    def __repr__(self):
        return f"<{self.code} {self.enh} d={self.delivered} {self.text!r}>"


def run(target, body=BODY, prefix=PREFIX, rcpts=("bob@example.net",),
        args=(), timeout=60):
    """Runs relay_cli; returns (results, stdout, returncode)."""
    bf = os.path.join(TMP, "body")
    pf = os.path.join(TMP, "prefix")
    with open(bf, "wb") as f:
        f.write(body)
    with open(pf, "wb") as f:
        f.write(prefix)
    cmd = [CLI, "--target", target, "--from", "alice@example.org",
           "--body-file", bf, "--prefix-file", pf] + list(args)
    for r in rcpts:
        cmd += ["--rcpt", r]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = p.stdout.decode()
    res = [Result(l) for l in out.splitlines() if l.startswith("RESULT ")]
    return res, out + p.stderr.decode(), p.returncode


def one(fake, name, body=BODY, prefix=PREFIX, rcpts=("bob@example.net",),
        args=(), v6=False):
    target = f"[::1]:{fake.port}" if v6 else f"127.0.0.1:{fake.port}"
    res, out, rc = run(target, body, prefix, rcpts, args)
    ok = len(res) == 1 and rc == 0
    check(ok, name + " ran", f"rc={rc} out={out!r}")
    return res[0] if res else None


def wire(prefix, body):
    """What the downstream stores: SMTP adds a CRLF to a message that does
    not end with one (it cannot carry it otherwise)."""
    s = prefix + body
    if s and not s.endswith(b"\n"):
        s += b"\r\n"
    return s


# --- byte-exact delivery ------------------------------------------------
def test_bytes():
    rnd = random.Random(7)
    lines = []
    size = 0
    while size < 5 * 1024 * 1024:
        n = rnd.randrange(0, 200)
        line = bytes(rnd.choice(b".abc .x\t") for _ in range(n)) + b"\r\n"
        lines.append(line)
        size += len(line)
    big = b"".join(lines)
    cases = [
        ("plain", PREFIX, BODY, ["--chunk", "8192"]),
        ("leading dots", PREFIX,
         b".\r\n..\r\n...x\r\n.foo\r\nbar\r\n.\r\n. \r\n", ["--chunk", "1"]),
        ("dots across chunks", b"", b"a\r\n.b\r\n.\r\n..\r\n",
         ["--chunk", "3"]),
        ("prefix ends a line, body starts with a dot", b"X-A: 1\r\n",
         b".hidden\r\n", ["--chunk", "2"]),
        ("no final CRLF", PREFIX, b"Subject: x\r\n\r\nlast line", []),
        ("no final CRLF, dot line", PREFIX, b"a\r\n.", ["--chunk", "1"]),
        ("ends with CR", PREFIX, b"a\r\nb\r", []),
        ("0 bytes", b"", b"", []),
        ("0-byte body after prefix", PREFIX, b"", []),
        ("5 MB", PREFIX, big, ["--chunk", "8000"]),
    ]
    for name, prefix, body, args in cases:
        with FakeMTA() as fake:
            r = one(fake, "bytes " + name, body, prefix, args=args)
            msgs = fake.all_msgs()
            check(r is not None and r.code == 250 and r.enh == "2.0.0"
                  and r.text.startswith("Ok: queued as FAKE"),
                  "bytes " + name + " 250", repr(r))
            check(len(msgs) == 1 and msgs[0] == wire(prefix, body),
                  "bytes " + name + " exact",
                  f"{len(msgs)} msgs, got {msgs[0][:80]!r}.. len "
                  f"{len(msgs[0])} want {len(wire(prefix, body))}"
                  if msgs else "none")
    # the same over IPv6
    with FakeMTA() as fake:
        r = one(fake, "bytes over ::1", v6=True)
        check(r and r.code == 250 and fake.all_msgs() == [PREFIX + BODY],
              "bytes over ::1", repr(r))


# --- XCLIENT ------------------------------------------------------------
def xclient_cmds(fake):
    return [c for s in fake.sessions for c in s.cmds
            if c.upper().startswith("XCLIENT")]


def test_xclient():
    full = ["PIPELINING", "XCLIENT NAME ADDR PROTO HELO"]
    with FakeMTA({"caps": full}) as fake:
        r = one(fake, "xclient v6", args=[
            "--client-addr", "2001:db8::10", "--ptr", "peer.example",
            "--client-helo", "client.example"])
        cmds = fake.sessions[0].cmds
        x = xclient_cmds(fake)
        check(r and r.code == 250, "xclient v6 delivered", repr(r))
        check(x == ["XCLIENT NAME=peer.example ADDR=IPV6:2001:db8::10 "
                    "PROTO=ESMTP HELO=client.example"],
              "xclient v6 attributes", repr(x))
        i = cmds.index(x[0]) if x else 0
        check(len(cmds) > i + 1 and cmds[i + 1] == "EHLO client.example"
              and cmds[0] == "EHLO edge.test",
              "xclient followed by EHLO under the client's name", repr(cmds))
        check(fake.all_msgs() == [PREFIX + BODY], "xclient v6 message")
    with FakeMTA({"caps": full}) as fake:
        one(fake, "xclient v4", args=["--client-addr", "198.51.100.10",
                                      "--client-helo", "odd helo+x=y"])
        x = xclient_cmds(fake)
        check(x == ["XCLIENT NAME=[UNAVAILABLE] ADDR=198.51.100.10 "
                    "PROTO=ESMTP HELO=odd+20helo+2Bx+3Dy"],
              "xclient v4, no name, xtext HELO", repr(x))
        cmds = fake.sessions[0].cmds
        check("EHLO edge.test" in cmds[1:] and
              cmds.index(x[0]) + 1 < len(cmds) and
              cmds[cmds.index(x[0]) + 1] == "EHLO edge.test",
              "unusable HELO name: EHLO under our own name", repr(cmds))
    with FakeMTA({"caps": ["XCLIENT ADDR"]}) as fake:
        one(fake, "xclient addr only", args=["--client-addr", "2001:db8::10",
                                             "--ptr", "peer.example"])
        x = xclient_cmds(fake)
        check(x == ["XCLIENT ADDR=IPV6:2001:db8::10"],
              "only the attributes offered", repr(x))
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        r = one(fake, "no xclient", args=["--client-addr", "2001:db8::10"])
        check(r and r.code == 250 and xclient_cmds(fake) == []
              and sum(c.startswith("EHLO") for c in fake.sessions[0].cmds)
              == 1, "no XCLIENT when not offered",
              repr(fake.sessions[0].cmds))
    long_helo = "h" * 250
    with FakeMTA({"caps": full}) as fake:
        one(fake, "xclient split", args=[
            "--client-addr", "2001:db8::10", "--ptr", "n" * 250,
            "--client-helo", long_helo])
        x = xclient_cmds(fake)
        check(len(x) == 2 and all(len(c) + 2 <= 512 for c in x)
              and x[1] == "XCLIENT HELO=" + long_helo,
              "xclient split under 512 bytes", repr([len(c) for c in x]))
    # two messages from two clients on one connection: XCLIENT each time
    with FakeMTA({"caps": full}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--client-addr", "2001:db8::10",
                                 "--count", "2"])
        check(len(res) == 2 and all(r.code == 250 for r in res) and
              len(fake.sessions) == 1 and len(xclient_cmds(fake)) == 2,
              "XCLIENT again for each message on a reused connection",
              repr([s.cmds for s in fake.sessions]))


# XCLIENT NAME: the forward-confirmed name only, as Postfix reads it.
def test_xclient_name():
    cases = [("pass", "NAME=peer.example"),
             ("mismatch", "NAME=[UNAVAILABLE]"),
             ("none", "NAME=[UNAVAILABLE]"),
             ("temperror", "NAME=[TEMPUNAVAIL]"),
             ("unknown", "NAME=[TEMPUNAVAIL]")]
    for result, want in cases:
        with FakeMTA({"caps": ["XCLIENT NAME ADDR"]}) as fake:
            r = one(fake, "xclient name " + result, args=[
                "--client-addr", "2001:db8:1::30", "--ptr", "peer.example",
                "--ptr-result", result])
            x = xclient_cmds(fake)
            check(r and r.code == 250 and
                  x == [f"XCLIENT {want} ADDR=IPV6:2001:db8:1::30"],
                  f"PTR {result}: XCLIENT {want}", repr(x))


# A pooled connection: XCLIENT, and its attributes, as the connection's
# first EHLO offered them, not as the EHLO after XCLIENT (answered to the
# client it names) does.
def test_xclient_pooled():
    two = ["--client-addr", "2001:db8::10", "--ptr", "peer.example",
           "--client-helo", "client.example", "--count", "2"]

    def deliver(sc, name):
        with FakeMTA(sc) as fake:
            res, out, rc = run(f"127.0.0.1:{fake.port}", args=two)
            check(len(res) == 2 and all(r.code == 250 for r in res),
                  name + ": both delivered", out)
            return fake.sessions, xclient_cmds(fake)

    sessions, x = deliver({"caps": ["PIPELINING", "XCLIENT NAME ADDR"],
                           "caps_after_xclient": ["PIPELINING"]},
                          "offered first only")
    check(len(sessions) == 1 and len(sessions[0].msgs) == 2 and
          x == ["XCLIENT NAME=peer.example ADDR=IPV6:2001:db8::10"] * 2,
          "XCLIENT offered by the first EHLO only: sent for both messages "
          "on the pooled connection", repr([s.cmds for s in sessions]))
    sessions, x = deliver({"caps": ["PIPELINING"],
                           "caps_after_xclient": ["XCLIENT NAME ADDR"]},
                          "not offered first")
    check(len(sessions) == 1 and len(sessions[0].msgs) == 2 and x == [],
          "XCLIENT not offered by the first EHLO: never sent",
          repr([s.cmds for s in sessions]))
    sessions, x = deliver({"caps": ["XCLIENT NAME ADDR"],
                           "caps_after_xclient": ["XCLIENT NAME ADDR PROTO HELO"]},
                          "more attributes later")
    check(len(sessions) == 1 and
          x == ["XCLIENT NAME=peer.example ADDR=IPV6:2001:db8::10"] * 2,
          "the attributes of the first EHLO, for every message", repr(x))
    # A reused connection that refuses the second XCLIENT: the message goes
    # over a fresh connection, as that client, not as the previous one.
    sessions, x = deliver({"caps": ["XCLIENT NAME ADDR"],
                           "replies": {"XCLIENT": [
                               "220 fake.test ESMTP",
                               "550 5.7.0 only once"]}},
                          "second XCLIENT refused")
    msgs = [(s.number, len(s.msgs)) for s in sessions]
    after = sessions[0].cmds[sessions[0].cmds.index("RSET"):] if sessions \
        and "RSET" in sessions[0].cmds else ["(no RSET)"]
    check(msgs == [(0, 1), (1, 1)] and len(x) == 3 and
          not any(c.startswith("MAIL") for c in after),
          "XCLIENT refused on a reused connection: the message on a fresh "
          "one, nothing of it on the old", repr([s.cmds for s in sessions]))


# --- MAIL parameters ----------------------------------------------------
def test_params():
    with FakeMTA({"caps": ["8BITMIME", "SMTPUTF8"]}) as fake:
        one(fake, "params offered", args=["--8bit", "--utf8"])
        m = [c for c in fake.sessions[0].cmds if c.startswith("MAIL")]
        check(m == ["MAIL FROM:<alice@example.org> BODY=8BITMIME SMTPUTF8"],
              "BODY=8BITMIME and SMTPUTF8 when offered", repr(m))
    with FakeMTA({"caps": []}) as fake:
        one(fake, "params not offered", args=["--8bit", "--utf8"])
        m = [c for c in fake.sessions[0].cmds if c.startswith("MAIL")]
        check(m == ["MAIL FROM:<alice@example.org>"],
              "no parameters the downstream did not offer", repr(m))


# --- pooling ------------------------------------------------------------
def test_pool():
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", args=["--count", "2"])
        cmds = fake.sessions[0].cmds if fake.sessions else []
        check(len(res) == 2 and all(r.code == 250 for r in res),
              "reuse: both delivered", out)
        check(len(fake.sessions) == 1 and len(fake.sessions[0].msgs) == 2,
              "reuse: one connection", repr(len(fake.sessions)))
        check(cmds.count("RSET") == 1 and cmds.index("RSET") >
              cmds.index("<DOT>") and cmds.index("RSET") <
              len(cmds) - 1 - cmds[::-1].index("MAIL FROM:<alice@example.org>"),
              "reuse: RSET between the messages", repr(cmds))
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--count", "2", "--pool", "0"])
        check(len(fake.sessions) == 2 and all(r.code == 250 for r in res),
              "pool 0: a connection per message", repr(len(fake.sessions)))
        check(fake.wait_ended() and fake.sessions[0].cmds[-1] == "QUIT",
              "pool 0: QUIT when not kept", repr(fake.sessions[0].cmds))
    # a connection idle longer than idle_max is not reused
    with FakeMTA() as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--count", "3", "--pause", "300",
                                 "--idle-max", "150"])
        check(len(res) == 3 and all(r.code == 250 for r in res) and
              fake.wait_ended() and len(fake.sessions) == 3 and
              all("RSET" not in s.cmds for s in fake.sessions),
              "idle too long: a fresh connection",
              repr([s.cmds for s in fake.sessions]))
    with FakeMTA() as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--count", "3", "--pause", "100",
                                 "--idle-max", "2000"])
        check(len(res) == 3 and len(fake.sessions) == 1,
              "idle within the limit: reused", repr(len(fake.sessions)))
    # the server times out the idle connection (421 and close)
    with FakeMTA({"idle_close_ms": 100}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--count", "2", "--pause", "400"])
        check(len(res) == 2 and all(r.code == 250 for r in res),
              "idle closed: both delivered", out)
        check(fake.wait_ended() and len(fake.sessions) == 2
              and fake.sessions[0].closed_by_peer
              and [len(s.msgs) for s in fake.sessions] == [1, 1]
              and "RSET" not in fake.sessions[0].cmds,
              "idle closed: detected before use, fresh connection",
              repr([s.cmds for s in fake.sessions]))
    # alive when taken, but the RSET meets a dropped connection
    with FakeMTA({"replies": {"RSET": "DROP"}}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", args=["--count", "2"])
        check(len(res) == 2 and all(r.code == 250 for r in res),
              "dead at RSET: retried", out)
        check(len(fake.sessions) == 2 and "RSET" in fake.sessions[0].cmds
              and [len(s.msgs) for s in fake.sessions] == [1, 1],
              "dead at RSET: second message on a fresh connection",
              repr([s.cmds for s in fake.sessions]))
    # a kept connection whose RSET is never answered: after the timeout
    # the message goes on a fresh one, with a wait of its own
    with FakeMTA({"replies": {"RSET": "HANG"}}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--count", "2", "--timeout", "300"])
        check(len(res) == 2 and all(r.code == 250 for r in res) and
              [len(s.msgs) for s in fake.sessions] == [1, 1],
              "RSET unanswered: retried on a fresh connection", out)
    # retried once only: a fresh connection that fails is the answer
    with FakeMTA({"replies": {"RSET": "DROP",
                              "MAIL": {1: "DROP"}}}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", args=["--count", "2"])
        check(len(res) == 2 and res[1].code == 451 and res[1].enh == "4.4.2"
              and len(fake.sessions) == 2,
              "retry happens once", f"{res} {len(fake.sessions)}")


# --- failure modes ------------------------------------------------------
FAILS = [
    # name, scenario replies, expected code, enh, text must contain
    ("MAIL 450", {"MAIL": "450 4.7.1 try later"}, 451, "4.7.1", "try later"),
    ("MAIL 550", {"MAIL": "550 5.7.1 sender refused"}, 550, "5.7.1",
     "sender refused"),
    ("RCPT 550", {"RCPT": "550 5.1.1 no such user"}, 550, "5.1.1",
     "no such user"),
    ("RCPT 452", {"RCPT": "452 4.2.2 over quota"}, 451, "4.2.2", "quota"),
    ("DATA 554", {"DATA": "554 5.5.1 no valid recipients"}, 554, "5.5.1",
     "no valid"),
    ("DATA 451", {"DATA": "451 4.3.0 busy"}, 451, "4.3.0", "busy"),
    ("dot 552", {"DOT": "552 5.3.4 too big"}, 552, "5.3.4", "too big"),
    ("dot 451", {"DOT": "451 4.3.0 disk full"}, 451, "4.3.0", "disk full"),
    ("4xx without enh", {"MAIL": "450 later"}, 451, "4.0.0", "later"),
    ("5xx without enh", {"RCPT": "550 nope"}, 550, "5.0.0", "nope"),
    ("EHLO 550 is no bounce", {"EHLO": "550 5.7.1 go away"}, 451, "4.7.1",
     "go away"),
    ("EHLO 421", {"EHLO": "421 4.3.2 shutting down"}, 451, "4.3.2",
     "shutting"),
    ("XCLIENT 550 is no bounce", {"XCLIENT": "550 5.7.0 not authorized"},
     451, "4.7.0", "XCLIENT"),
    ("drop at greeting", {}, 451, "4.4.2", "dropped"),
    ("drop at MAIL", {"MAIL": "DROP"}, 451, "4.4.2", "MAIL"),
    ("drop at RCPT", {"RCPT": "DROP"}, 451, "4.4.2", "RCPT"),
    ("drop at DATA", {"DATA": "DROP"}, 451, "4.4.2", "DATA"),
    ("drop after the dot", {"DOT": "DROP"}, 451, "4.4.2", "twice"),
    ("garbage", {"MAIL": "GARBAGE"}, 451, "4.5.0", "invalid"),
    ("250 to DATA", {"DATA": "250 2.0.0 Ok"}, 451, "4.5.0", "invalid"),
    ("354 to RCPT", {"RCPT": "354 what"}, 451, "4.5.0", "invalid"),
    ("endless reply", {"EHLO": "HUGE"}, 451, "4.5.0", "invalid"),
    ("endless line", {"RCPT": "LONGLINE"}, 451, "4.5.0", "invalid"),
]


def test_failures():
    for name, replies, code, enh, text in FAILS:
        sc = {"replies": replies, "caps": ["XCLIENT ADDR"]}
        if name == "drop at greeting":
            sc["greeting"] = "DROP"
        with FakeMTA(sc) as fake:
            r = one(fake, name, args=["--client-addr", "192.0.2.7"])
            check(r and r.code == code and r.enh == enh and text in r.text,
                  name, f"{r!r} want {code} {enh} ~{text!r}")
            dot = replies.get("DOT")
            if dot is None:
                check(fake.all_msgs() == [], name + ": nothing delivered",
                      repr(fake.all_msgs()))
    with FakeMTA({"greeting": "554 5.3.2 no service"}) as fake:
        r = one(fake, "greeting 554")
        check(r and r.code == 451 and r.enh == "4.3.2", "greeting 554 -> 451",
              repr(r))
    # a failed transaction leaves no connection behind in the pool
    with FakeMTA({"replies": {"MAIL": {0: "451 4.3.0 later"}}}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", args=["--count", "2"])
        check(len(res) == 2 and res[0].code == 451 and res[1].code == 250
              and len(fake.sessions) == 2,
              "the connection is dropped after an error", out)


def test_mixed_smtp():
    rc3 = ("a@example.net", "b@example.net", "c@example.net")
    with FakeMTA({"replies": {"RCPT": ["250 2.1.5 Ok", "550 5.1.1 no b",
                                       "250 2.1.5 Ok"]}}) as fake:
        r = one(fake, "smtp 2xx+5xx", rcpts=rc3)
        check(r and r.code == 550 and r.enh == "5.1.1" and r.delivered == 2
              and "delivered to 2 of 3" in r.text,
              "smtp 2xx+5xx: the 5xx, saying who has it", repr(r))
        check(fake.all_msgs() == [PREFIX + BODY],
              "smtp 2xx+5xx: the others get it once")
    with FakeMTA({"caps": ["PIPELINING"],
                  "replies": {"RCPT": ["250 2.1.5 Ok", "450 4.2.1 later",
                                       "250 2.1.5 Ok"]}}) as fake:
        r = one(fake, "smtp 2xx+4xx", rcpts=rc3)
        check(r and r.code == 451 and r.enh == "4.2.1" and r.delivered == 0,
              "smtp 2xx+4xx: 451", repr(r))
        # DATA went with the RCPTs (PIPELINING) and got its 354: the
        # transaction is cut by closing the connection, never by a dot.
        check(fake.wait_ended() and fake.all_msgs() == [] and
              "<DOT>" not in fake.sessions[0].cmds and
              fake.sessions[0].cmds[-1] == "DATA",
              "smtp 2xx+4xx pipelined: abandoned after DATA, no dot",
              repr(fake.sessions[0].cmds))
    with FakeMTA({"replies": {"RCPT": ["250 2.1.5 Ok", "450 4.2.1 later",
                                       "250 2.1.5 Ok"]}}) as fake:
        r = one(fake, "smtp 2xx+4xx, no pipelining", rcpts=rc3)
        check(r and r.code == 451 and r.enh == "4.2.1" and r.delivered == 0
              and fake.all_msgs() == [] and "DATA" not in fake.sessions[0].cmds,
              "smtp 2xx+4xx without PIPELINING: abandoned before DATA",
              f"{r!r} {fake.sessions[0].cmds!r}")
    with FakeMTA({"replies": {"RCPT": ["550 5.1.1 no a", "550 5.1.1 no b",
                                       "550 5.1.1 no c"]}}) as fake:
        r = one(fake, "smtp all 5xx", rcpts=rc3)
        check(r and r.code == 550 and "no a" in r.text and
              "DATA" not in fake.sessions[0].cmds,
              "smtp all 5xx: the first, no DATA", repr(r))
    # many recipients, pipelined in batches, all accepted
    many = [f"u{i}@example.net" for i in range(300)]
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        r = one(fake, "smtp 300 rcpts", rcpts=many)
        got = [c for c in fake.sessions[0].cmds if c.startswith("RCPT")]
        check(r and r.code == 250 and r.delivered == 300 and
              got == [f"RCPT TO:<{a}>" for a in many],
              "300 recipients pipelined", repr(r))
    with FakeMTA({"caps": []}) as fake:
        r = one(fake, "smtp no pipelining", rcpts=rc3)
        check(r and r.code == 250 and r.delivered == 3,
              "3 recipients without PIPELINING", repr(r))


# --- PIPELINING ---------------------------------------------------------
def test_pipelining():
    rc3 = ("a@example.net", "b@example.net", "c@example.net")
    group = b"".join(b"RCPT TO:<%s>\r\n" % a.encode() for a in rc3) + \
        b"DATA\r\n"
    for lmtp in (False, True):
        name = "LMTP" if lmtp else "SMTP"
        with FakeMTA({"caps": ["PIPELINING"], "lmtp": lmtp}) as fake:
            r = one(fake, f"{name} pipelined", rcpts=rc3,
                    args=["--lmtp"] if lmtp else [])
            mail = [b for c, b in fake.sessions[0].behind
                    if c.startswith("MAIL")]
            check(r and r.code == 250 and r.delivered == 3 and
                  fake.all_msgs() == [PREFIX + BODY],
                  f"{name} pipelined: delivered", repr(r))
            # MAIL, the RCPTs and DATA came in one write: all of them
            # were there before the fake answered MAIL.
            check(mail == [group], f"{name} pipelined: MAIL, RCPTs and DATA "
                  "in one write", repr(fake.sessions[0].behind))
    # a reused connection pipelines too, after its RSET
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", rcpts=rc3,
                           args=["--count", "2"])
        mail = [b for c, b in fake.sessions[0].behind if c.startswith("MAIL")]
        check(len(res) == 2 and all(r.code == 250 for r in res) and
              len(fake.sessions) == 1 and mail == [group, group] and
              "pipelined=2 " in out and "reused=1 " in out,
              "pipelined on a reused connection, counted",
              repr(fake.sessions[0].behind) + out[-200:])
    # without PIPELINING: one command, then its reply, then the next
    with FakeMTA({"caps": ["8BITMIME"]}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}", rcpts=rc3)
        b = fake.sessions[0].behind
        check(len(res) == 1 and res[0].code == 250 and
              [c for c, _ in b][:6] == ["EHLO edge.test",
                                        "MAIL FROM:<alice@example.org>"] +
              [f"RCPT TO:<{a}>" for a in rc3] + ["DATA"] and
              all(x == b"" for _, x in b[:6]) and "pipelined=0 " in out,
              "without PIPELINING: one command per reply", repr(b))
    # the refusals still count one by one: MAIL refused, the rest unused
    with FakeMTA({"caps": ["PIPELINING"],
                  "replies": {"MAIL": "550 5.7.1 sender refused"}}) as fake:
        r = one(fake, "pipelined MAIL 550", rcpts=rc3)
        check(r and r.code == 550 and r.enh == "5.7.1" and
              fake.all_msgs() == [], "pipelined MAIL 550", repr(r))
    with FakeMTA({"caps": ["PIPELINING"],
                  "replies": {"DATA": "554 5.5.1 no"}}) as fake:
        r = one(fake, "pipelined DATA 554", rcpts=rc3)
        check(r and r.code == 554 and fake.all_msgs() == [],
              "pipelined DATA 554", repr(r))


# --- many messages at once ----------------------------------------------
def test_concurrent():
    # 20 messages handed over at once by one thread; a downstream that
    # holds every reply 300 ms; at most 5 connections.
    with FakeMTA({"caps": ["PIPELINING"], "delay_ms": 300}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--submit", "20", "--connections", "5",
                                 "--seq", "--timeout", "20000"],
                           timeout=120)
        seqs = sorted(m.split(b"\r\n", 1)[0] for m in fake.all_msgs())
        want = sorted(f"X-Seq: 0.{i}".encode() for i in range(20))
        check(rc == 0 and len(res) == 20 and all(r.code == 250 for r in res)
              and seqs == want,
              "20 at once: each delivered exactly once", out[-600:])
        check(all(m.split(b"\r\n", 1)[1] == PREFIX + BODY
                  for m in fake.all_msgs()),
              "20 at once: each whole (the prefix was the relay's copy)")
        stats = dict(kv.split("=") for kv in
                     out.split("STATS ", 1)[1].split()) if "STATS " in out \
            else {}
        check(2 < fake.max_active <= 5 and len(fake.sessions) <= 5,
              "20 at once: more than 2 sessions at once, never more than 5",
              f"max {fake.max_active}, {len(fake.sessions)} sessions")
        check(stats.get("inflight_max") == "5" and
              int(stats.get("reused", 0)) >= 15 and
              stats.get("opened") == str(len(fake.sessions)) and
              stats.get("inflight") == "0" and stats.get("queued") == "0",
              "20 at once: the counters", repr(stats))
    # a message that finds no connection free in time: 451 4.4.5
    with FakeMTA({"delay_ms": 300}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--submit", "3", "--connections", "1",
                                 "--timeout", "1000"])
        codes = sorted((r.code, r.enh) for r in res)
        check(codes == [(250, "2.0.0"), (451, "4.4.5"), (451, "4.4.5")] and
              all("no connection free" in r.text for r in res
                  if r.code == 451) and len(fake.sessions) == 1,
              "queued past the timeout: 451 4.4.5", out)


def test_lmtp():
    rc3 = ("a@example.net", "b@example.net", "c@example.net")
    cases = [
        ("all 2xx", ["250 2.1.5 a ok", "250 2.1.5 b ok", "250 2.1.5 c ok"],
         None, 250, "2.1.5", 3, "a ok"),
        ("2xx+5xx", ["250 2.1.5 a ok", "552 5.2.2 b full", "250 2.1.5 c ok"],
         None, 552, "5.2.2", 2, "delivered to 2 of 3"),
        ("2xx+4xx", ["250 2.1.5 a ok", "452 4.2.2 b full", "250 2.1.5 c ok"],
         None, 451, "4.2.2", 2, "b full"),
        ("all 5xx", ["550 5.1.1 a gone", "551 5.1.6 b moved",
                     "550 5.1.1 c gone"], None, 550, "5.1.1", 0, "a gone"),
        ("4xx+5xx", ["451 4.3.0 a later", "550 5.1.1 b gone",
                     "250 2.1.5 c ok"], None, 550, "5.1.1", 1, "b gone"),
        ("RCPT 5xx then dot 2xx", ["250 2.1.5 a ok", "250 2.1.5 c ok"],
         ["250 2.1.5 Ok", "550 5.1.1 no b", "250 2.1.5 Ok"], 550, "5.1.1",
         2, "no b"),
        ("drop between replies", ["250 2.1.5 a ok", "DROP"], None, 451,
         "4.4.2", 1, "twice"),
    ]
    for name, dots, rcpt, code, enh, delivered, text in cases:
        replies = {"DOT": dots}
        if rcpt:
            replies["RCPT"] = rcpt
        with FakeMTA({"lmtp": True, "replies": replies,
                      "caps": ["PIPELINING"]}) as fake:
            r = one(fake, "lmtp " + name, rcpts=rc3, args=["--lmtp"])
            check(r and r.code == code and r.enh == enh and
                  r.delivered == delivered and text in r.text,
                  "lmtp " + name,
                  f"{r!r} want {code} {enh} d={delivered} ~{text!r}")
            check(fake.sessions and fake.sessions[0].cmds[0] ==
                  "LHLO edge.test" and len(fake.all_msgs()) == 1,
                  "lmtp " + name + ": LHLO, one message",
                  repr(fake.sessions[0].cmds if fake.sessions else None))


def test_unreachable_and_timeouts():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()           # nothing listens there now
    t0 = time.monotonic()
    res, out, rc = run(f"127.0.0.1:{port}")
    el = time.monotonic() - t0
    check(len(res) == 1 and res[0].code == 451 and res[0].enh == "4.4.1"
          and "unreachable" in res[0].text and el < 2,
          "unreachable: 451 4.4.1 quickly", f"{out!r} {el:.2f}s")
    res, out, rc = run("[::1]:" + str(port))
    check(len(res) == 1 and res[0].code == 451 and res[0].enh == "4.4.1",
          "unreachable over IPv6", out)
    res, out, rc = run("no-such-host.invalid:25")
    check(len(res) == 1 and res[0].code == 451 and res[0].enh == "4.4.1",
          "unresolvable name: 451 4.4.1", out)
    for step, replies, extra, lo, hi in [
        ("greeting", {}, ["--timeout", "300"], 0.25, 1.5),
        ("RCPT", {"RCPT": "HANG"}, ["--timeout", "300"], 0.25, 1.5),
        ("end of data", {"DOT": "HANG"},
         ["--timeout", "5000", "--final-timeout", "400"], 0.35, 1.5),
    ]:
        sc = {"replies": replies}
        if step == "greeting":
            sc["greeting"] = "HANG"
        with FakeMTA(sc) as fake:
            r = one(fake, "timeout " + step, args=extra)
            ok = (r and r.code == 451 and r.enh == "4.4.1" and
                  step in r.text and lo * 1000 <= r.ms <= hi * 1000)
            if step == "end of data":
                ok = ok and "twice" in r.text
            check(ok, "timeout at " + step, repr(r) + f" {r.ms if r else 0}")
    # a downstream that stops reading in the middle of the message: the
    # body outgrows both socket buffers and the write wait times out
    big = (b"y" * 998 + b"\r\n") * (32 * 1024)
    with FakeMTA({"replies": {"DATA": "STALL"}}) as fake:
        r = one(fake, "stalled reader", body=big, args=["--timeout", "300"])
        check(r and r.code == 451 and r.enh == "4.4.1" and
              "message" in r.text and r.ms < 3000 and fake.all_msgs() == [],
              "a downstream that stops reading is cut off", repr(r))


def test_threads():
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        t0 = time.monotonic()
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--threads", "4", "--count", "50", "--seq",
                                 "--pool", "4"], timeout=120)
        el = time.monotonic() - t0
        msgs = fake.all_msgs()
        seqs = sorted(m.split(b"\r\n", 1)[0] for m in msgs)
        want = sorted(f"X-Seq: {t}.{i}".encode() for t in range(4)
                      for i in range(50))
        check(rc == 0 and len(res) == 200 and
              all(r.code == 250 for r in res), "4x50: all 250",
              out[-500:])
        check(seqs == want, "4x50: each delivered exactly once",
              f"{len(msgs)} messages, {len(set(seqs))} distinct")
        check(all(m.split(b"\r\n", 1)[1] == PREFIX + BODY for m in msgs),
              "4x50: every message whole")
        check(len(fake.sessions) <= 8, "4x50: connections reused",
              f"{len(fake.sessions)} sessions")
        print(f"4 threads x 50 messages: {el:.2f}s, "
              f"{len(fake.sessions)} connections")
    # more threads than idle places: connections beyond the pool are closed
    with FakeMTA({"caps": ["PIPELINING"]}) as fake:
        res, out, rc = run(f"127.0.0.1:{fake.port}",
                           args=["--threads", "8", "--count", "25", "--seq",
                                 "--pool", "1"], timeout=120)
        seqs = sorted(m.split(b"\r\n", 1)[0] for m in fake.all_msgs())
        want = sorted(f"X-Seq: {t}.{i}".encode() for t in range(8)
                      for i in range(25))
        check(rc == 0 and len(res) == 200 and
              all(r.code == 250 for r in res) and seqs == want,
              "8x25 with a pool of 1: each delivered exactly once",
              f"{len(seqs)} messages")
        check(fake.wait_ended() and
              all(s.cmds[-1] == "QUIT" for s in fake.sessions),
              "8x25 with a pool of 1: every connection ends with QUIT",
              f"{len(fake.sessions)} sessions")


def test_targets():
    for bad in ["nohost", "[::1]", "::1:25", "host:0", "host:99999",
                "host:", ":25", "[::1]25", "host:2x"]:
        res, out, rc = run(bad)
        check(rc == 3 and "CREATE-FAILED" in out, "bad target " + bad, out)


def test_smtp_sink():
    sink = "/usr/sbin/smtp-sink"
    if not os.access(sink, os.X_OK):
        check(False, "smtp-sink", "not installed (package postfix)")
        return
    d = os.path.join(TMP, "sink")
    os.makedirs(d)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    args = [sink, "-v", "-d", d + "/%M."]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    log = open(os.path.join(TMP, "sink.log"), "wb")
    p = subprocess.Popen(args + [f"127.0.0.1:{port}", "10"],
                         stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        body = b"Subject: sink\r\n\r\n.dot line\r\n..two\r\n" + \
            b"x" * 900 + b"\r\n" + b"end\r\n"
        res, out, rc = run(f"127.0.0.1:{port}", body,
                           args=["--client-addr", "2001:db8::10",
                                 "--ptr", "peer.example",
                                 "--client-helo", "client.example",
                                 "--count", "2"])
        check(len(res) == 2 and all(r.code == 250 for r in res),
              "smtp-sink: 250 twice", out)
        time.sleep(0.3)
        files = sorted(os.listdir(d))
        check(len(files) == 2, "smtp-sink: two dump files", repr(files))
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                dump = fh.read()
            # smtp-sink's own headers end with its three-line Received:,
            # then the message as received (lines end in LF in its dump),
            # then an empty line.
            head, sep, rest = dump.partition(b"(smtp-sink) with ")
            rest = rest.split(b"\n", 2)[2] if sep else b""
            want = (PREFIX + body).replace(b"\r\n", b"\n") + b"\n"
            check(rest == want, "smtp-sink: message whole " + f,
                  f"{rest[:200]!r}")
            # smtp-sink's XCLIENT offers NAME and HELO only: the EHLO
            # after XCLIENT carries the client's name.
            check(b"X-Helo-Args: client.example" in head,
                  "smtp-sink: client's HELO seen", repr(head[:300]))
        time.sleep(0.1)
        with open(os.path.join(TMP, "sink.log"), "rb") as fh:
            sess = fh.read()
        check(sess.count(b": XCLIENT NAME=peer.example HELO=client.example\n")
              == 2 and sess.count(b": RSET\n") == 1
              and sess.count(b": EHLO edge.test\n") == 1,
              "smtp-sink: XCLIENT with the offered attributes, one "
              "connection reused", sess.decode(errors="replace")[-600:])
    finally:
        log.close()
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    t0 = time.monotonic()
    try:
        for t in [test_bytes, test_xclient, test_xclient_name,
                  test_xclient_pooled, test_params, test_pool,
                  test_failures, test_mixed_smtp, test_pipelining,
                  test_concurrent, test_lmtp,
                  test_unreachable_and_timeouts, test_threads, test_targets,
                  test_smtp_sink]:
            t()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print(f"relay tests took {time.monotonic() - t0:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
