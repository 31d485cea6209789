#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""SMTP clients that run inside the lab's peer namespace (ip netns exec).

Each mode prints one JSON object on stdout:

  dialogue SRC DST [--pipeline] [--port P] LINE...
      Connects from SRC, reads the greeting, sends each LINE (CRLF added),
      one reply at a time, or all at once with --pipeline; prints every
      reply in order: {"replies": ["220 ...", "250-...\\r\\n250 ...", ...]}.
  sendfile SRC DST FROM TO PATH
      The same with the message in PATH (CRLF line ends) sent as it is.
  send SRC DST FROM TO SIZE SEED
      Sends one message of SIZE body bytes with smtplib (EHLO, PIPELINING
      where offered); prints {"code", "text", "sha256", "size"} where
      sha256 is of the bytes the server must store (headers and body, CRLF).
  many SRC DST COUNT SEED
      COUNT messages one after another, going on past failures; prints the
      queue id and SHA-256 of every message that got a 250.
  bulk DST BASE COUNT SESSIONS PARALLEL
      SESSIONS sessions from the COUNT addresses after BASE, in turn, at
      most PARALLEL at once: greeting, EHLO, MAIL FROM, QUIT; half of them
      pipelined (MAIL and QUIT in one write). Prints per-address-parity
      counts of the first digit of each MAIL reply, and anything odd.
"""
import asyncio
import hashlib
import ipaddress
import json
import random
import smtplib
import socket
import sys


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed: " + repr(lines))
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "\r\n".join(lines)


def connect(src, dst, port=25):
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(30)
    s.bind((src, 0))
    s.connect((dst, port))
    return s


def dialogue(args):
    pipeline = "--pipeline" in args
    port = 25
    if "--port" in args:
        port = int(args[args.index("--port") + 1])
        args = args[:args.index("--port")] + args[args.index("--port") + 2:]
    args = [a for a in args if a != "--pipeline"]
    src, dst, lines = args[0], args[1], args[2:]
    s = connect(src, dst, port)
    f = s.makefile("rb")
    replies = [read_reply(f)]
    if pipeline:
        s.sendall("".join(l + "\r\n" for l in lines).encode())
        for _ in lines:
            replies.append(read_reply(f))
    else:
        for l in lines:
            s.sendall((l + "\r\n").encode())
            replies.append(read_reply(f))
    s.close()
    print(json.dumps({"replies": replies}))


def make_message(size, seed):
    rng = random.Random(seed)
    head = (f"From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\n"
            f"Subject: lab message {seed} of {size} bytes\r\n\r\n").encode()
    body = bytearray()
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .-"
    while len(body) < size:
        n = rng.randint(0, 120)
        line = bytes(rng.choice(alphabet) for _ in range(n))
        if rng.random() < 0.05:
            line = b"." + line          # needs dot-stuffing on the wire
        body += line + b"\r\n"
    body = bytes(body[:size])
    if size and not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"
    return head + body


class DataReplySMTP(smtplib.SMTP):
    """smtplib that keeps the reply to the end of DATA (it has the queue id)."""

    def data(self, msg):
        code, text = super().data(msg)
        self.last_data_reply = f"{code} {text.decode('utf-8', 'replace')}"
        return code, text


def send(args):
    src, dst, mail_from, rcpt, size, seed = args
    msg = make_message(int(size), int(seed))
    deliver(src, dst, mail_from, rcpt, msg)


def sendfile(args):
    src, dst, mail_from, rcpt, path = args
    deliver(src, dst, mail_from, rcpt, open(path, "rb").read())


def send_and_quit(c, mail_from, rcpt, msg):
    """One message on an open smtplib connection, then QUIT: the code and
    text of the reply that decided it, and what was sent."""
    try:
        c.sendmail(mail_from, [rcpt], msg)
        code, text = 250, c.last_data_reply[4:]
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error.decode("utf-8", "replace")
    except smtplib.SMTPRecipientsRefused as e:
        (code, text), = [(v[0], v[1].decode()) for v in e.recipients.values()]
    try:
        c.quit()
    except Exception:
        pass
    return {"code": code, "text": text, "sha256": hashlib.sha256(msg).hexdigest(),
            "size": len(msg)}


def deliver(src, dst, mail_from, rcpt, msg):
    c = DataReplySMTP(timeout=300, source_address=(src, 0))
    c.connect(dst, 25)
    c.ehlo("client.lab.example")
    print(json.dumps(send_and_quit(c, mail_from, rcpt, msg)))


async def one_session(src, dst, pipelined, results):
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(dst, 25, local_addr=(src, 0)), 30)
        async def reply():
            lines = []
            while True:
                line = await asyncio.wait_for(r.readline(), 60)
                if not line:
                    raise EOFError(lines)
                lines.append(line.decode())
                if len(line) < 4 or line[3:4] != b"-":
                    return lines
        await reply()                                   # greeting
        w.write(b"EHLO bulk.lab.example\r\n")
        await reply()
        if pipelined:
            w.write(b"MAIL FROM:<bulk@example.org>\r\nQUIT\r\n")
        else:
            w.write(b"MAIL FROM:<bulk@example.org>\r\n")
        mail = await reply()
        if not pipelined:
            w.write(b"QUIT\r\n")
        bye = await reply()
        w.close()
        results.append((src, mail[0][:3], bye[0][:3]))
    except Exception as e:  # counted, not raised: the test judges
        results.append((src, "err", repr(e)[:200]))


async def bulk_main(dst, base, count, sessions, parallel):
    b = ipaddress.ip_address(base)
    addrs = [str(b + i) for i in range(1, count + 1)]
    results = []
    sem = asyncio.Semaphore(parallel)

    async def run(k):
        async with sem:
            await one_session(addrs[k % count], dst, k % 2 == 1, results)

    await asyncio.gather(*(run(k) for k in range(sessions)))
    return results


def bulk(args):
    dst, base, count, sessions, parallel = args[0], args[1], int(args[2]), int(args[3]), int(args[4])
    results = asyncio.run(bulk_main(dst, base, count, sessions, parallel))
    b = int(ipaddress.ip_address(base))
    summary = {"even": {}, "odd": {}, "errors": [], "sessions": len(results), "bye": {}}
    for src, mail, bye in results:
        if mail == "err":
            summary["errors"].append(bye)
            continue
        n = int(ipaddress.ip_address(src)) - b
        side = summary["even" if n % 2 == 0 else "odd"]
        side[mail] = side.get(mail, 0) + 1
        summary["bye"][bye] = summary["bye"].get(bye, 0) + 1
    summary["errors"] = summary["errors"][:10] + ([f"... {len(summary['errors'])} in all"] if len(summary["errors"]) > 10 else [])
    print(json.dumps(summary))


def many(args):
    """COUNT messages one after another; a failed session is noted and the
    next goes on (the server may be down a while). Prints, for every message
    that got a 250, its queue id and the SHA-256 of what was sent."""
    src, dst, count, seed = args[0], args[1], int(args[2]), int(args[3])
    got, failed = [], 0
    rng = random.Random(seed)
    for i in range(count):
        msg = make_message(rng.choice([0, 10, 300, 4000, 70000]), seed * 100000 + i)
        try:
            c = DataReplySMTP(timeout=10, source_address=(src, 0))
            c.connect(dst, 25)
            c.ehlo("client.lab.example")
            c.sendmail("alice@example.org", ["bob@example.net"], msg)
            got.append([c.last_data_reply.split()[-1], hashlib.sha256(msg).hexdigest()])
            c.close()
        except Exception:
            failed += 1
    print(json.dumps({"accepted": got, "failed": failed}))


if __name__ == "__main__":
    {"dialogue": dialogue, "send": send, "sendfile": sendfile, "bulk": bulk,
     "many": many}[sys.argv[1]](sys.argv[2:])
