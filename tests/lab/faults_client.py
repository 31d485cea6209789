#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""SMTP clients for the fault tests; they run in the lab's peer namespace.

Linux's own TCP carries every session, so what the edge's engine gets
through its fault shim is what a real sender's stack does about loss,
duplication and reordering.

  run DST PLAN PARALLEL
      PLAN is a JSON file: a list of [SRC, SIZE, SEED]. One SMTP session
      per entry (greeting, EHLO, MAIL, RCPT, DATA, the message, QUIT), at
      most PARALLEL at once (asyncio, one process). Prints one JSON list,
      an object per entry: {"src", "size", "sha256", "code", "qid",
      "error"}: sha256 is of the bytes the spool must hold after our
      Received: header (the message, dot-unstuffed, CRLF), qid the queue id
      of the 250 to the end of DATA.
  stall SRC DST PARTIAL WAIT_S
      One session up to DATA, then PARTIAL bytes of body and no end; prints
      {"port": LOCAL_PORT} and then waits up to WAIT_S seconds for whatever
      the edge says. Prints {"replies": [...], "eof": bool, "waited": s}.
      The fault test kills it (the client vanishes mid-DATA) or lets the
      edge's idle timeout speak.
"""
import asyncio
import hashlib
import json
import random
import socket
import sys
import time

from peer import read_reply   # one SMTP reply, multi-line aware

ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .-,:;!?()"
TABLE = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))


def make_message(size, seed):
    """Headers and a body of SIZE bytes of CRLF lines, some starting with a
    dot (they need stuffing on the wire). Fast enough for 10 MB."""
    rng = random.Random(seed)
    head = (f"From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\n"
            f"Subject: fault lab message {seed} of {size} bytes\r\n\r\n").encode()
    raw = rng.randbytes(size).translate(TABLE)
    parts, pos = [], 0
    while pos < size:
        n = rng.randint(0, 200)
        line = raw[pos:pos + n]
        pos += n
        if rng.random() < 0.05:
            line = b"." + line[1:]
        parts.append(line)
    body = b"\r\n".join(parts) + b"\r\n" if size else b""
    return head + body


def stuff(msg):
    """Dot-stuffing (RFC 5321 4.5.2) and the end of data."""
    out = msg.replace(b"\r\n.", b"\r\n..")
    if out.startswith(b"."):
        out = b"." + out
    return out + b".\r\n"


async def reply(r, timeout=120):
    lines = []
    while True:
        line = await asyncio.wait_for(r.readline(), timeout)
        if not line:
            raise EOFError(f"closed after {lines!r}")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


async def expect(r, code, what):
    lines = await reply(r)
    if not lines[-1].startswith(code):
        raise RuntimeError(f"{what}: {lines!r}")
    return lines


async def one(dst, src, size, seed):
    msg = make_message(size, seed)
    res = {"src": src, "size": size, "sha256": hashlib.sha256(msg).hexdigest(),
           "code": None, "qid": None, "error": None}
    w, stage, t0 = None, "connect", time.time()
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(dst, 25, local_addr=(src, 0), limit=1 << 16), 60)
        res["port"] = w.get_extra_info("sockname")[1]
        stage = "greeting"
        await expect(r, "220", "greeting")
        for stage, line, code in (("EHLO", b"EHLO faults.lab.example", "250"),
                                  ("MAIL", b"MAIL FROM:<sender@example.org>", "250"),
                                  ("RCPT", b"RCPT TO:<rcpt@example.net>", "250"),
                                  ("DATA", b"DATA", "354")):
            w.write(line + b"\r\n")
            await expect(r, code, stage)
        stage = "body"
        w.write(stuff(msg))
        await w.drain()
        end = await reply(r, timeout=300)
        res["code"] = int(end[-1][:3])
        if res["code"] == 250:
            res["qid"] = end[-1].split()[-1]
        stage = "QUIT"
        w.write(b"QUIT\r\n")
        await expect(r, "221", "QUIT")
    except Exception as e:  # reported, not raised: the test judges
        res["error"] = f"{stage} after {time.time() - t0:.1f} s: {type(e).__name__}: {e}"[:300]
    finally:
        if w:
            w.close()
    return res


async def run_plan(dst, plan, parallel):
    sem = asyncio.Semaphore(parallel)

    async def go(entry):
        async with sem:
            return await one(dst, *entry)

    return await asyncio.gather(*(go(e) for e in plan))


def run(args):
    dst, plan_file, parallel = args[0], args[1], int(args[2])
    plan = json.load(open(plan_file))
    print(json.dumps(asyncio.run(run_plan(dst, plan, parallel))))


def stall(args):
    src, dst, partial, wait_s = args[0], args[1], int(args[2]), float(args[3])
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(60)
    s.bind((src, 0))
    s.connect((dst, 25))
    f = s.makefile("rb")
    read_reply(f)
    for line, code in ((b"EHLO stall.lab.example", "250"), (b"MAIL FROM:<sender@example.org>", "250"),
                       (b"RCPT TO:<rcpt@example.net>", "250"), (b"DATA", "354")):
        s.sendall(line + b"\r\n")
        got = read_reply(f)
        if not got.startswith(code):
            raise SystemExit(f"{line!r}: {got!r}")
    # A body that is never finished: no CRLF.CRLF.
    s.sendall(stuff(make_message(partial, 1))[:partial])
    print(json.dumps({"port": s.getsockname()[1]}), flush=True)
    t0 = time.time()
    replies, eof = [], False
    s.settimeout(wait_s)
    try:
        while True:
            replies.append(read_reply(f))
    except EOFError:
        eof = True
    except (socket.timeout, ConnectionError):
        pass
    print(json.dumps({"replies": replies, "eof": eof, "waited": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    {"run": run, "stall": stall}[sys.argv[1]](sys.argv[2:])
