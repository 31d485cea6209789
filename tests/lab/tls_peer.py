#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""TLS clients that run inside the lab's peer namespace (ip netns exec).

Each mode prints one JSON object on stdout:

  send SRC DST FROM TO SIZE SEED [VERSION]
      One message of SIZE body bytes (tls_peer uses peer.py's generator)
      with smtplib after starttls(); VERSION 1.2 or 1.3 pins the protocol.
      Prints {"code", "text", "sha256", "size", "version", "cipher",
      "ehlo_before", "ehlo_after"}.
  inject SRC DST
      EHLO, then "STARTTLS" and plaintext commands in one write; after the
      220 the handshake, then MAIL FROM before any EHLO. Prints every reply.
  raw SRC DST HEX [WAIT [LINGER]]
      EHLO, STARTTLS, then the bytes HEX instead of a handshake; prints
      what came back (hex) within WAIT seconds and whether the edge closed,
      then keeps the connection open, silent, for LINGER seconds.
  hold SRC DST SECONDS
      A full handshake, then nothing for SECONDS, then EHLO and QUIT:
      prints the certificate's SHA-256 and the replies.
  starttls SRC DST [SLEEP]
      EHLO, (sleep), STARTTLS: prints the reply; no handshake.
"""
import hashlib
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import (DataReplySMTP, connect, make_message, read_reply,  # noqa: E402
                  send_and_quit)


def context(version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def send(args):
    src, dst, mail_from, rcpt, size, seed = args[:6]
    version = args[6] if len(args) > 6 else None
    msg = make_message(int(size), int(seed))
    c = DataReplySMTP(timeout=300, source_address=(src, 0))
    c.connect(dst, 25)
    c._host = "mx.lab.example"   # the SNI starttls() sends
    c.ehlo("client.lab.example")
    before = c.esmtp_features.copy()
    c.starttls(context=context(version))
    c.ehlo("client.lab.example")
    after = c.esmtp_features.copy()
    out = {"version": c.sock.version(), "cipher": c.sock.cipher()[0],
           "ehlo_before": sorted(before), "ehlo_after": sorted(after)}
    out.update(send_and_quit(c, mail_from, rcpt, msg))
    print(json.dumps(out))


def tls_lines(t, lines):
    f = t.makefile("rb")
    replies = []
    for line in lines:
        t.sendall((line + "\r\n").encode())
        replies.append(read_reply(f))
    return replies


def inject(args):
    src, dst = args
    s = connect(src, dst)
    f = s.makefile("rb")
    replies = [read_reply(f)]
    s.sendall(b"EHLO client.lab.example\r\n")
    replies.append(read_reply(f))
    s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\nRCPT TO:<bob@example.net>\r\n")
    replies.append(read_reply(f))
    # Nothing else may come before the handshake: the injected commands
    # got no reply.
    s.settimeout(1.0)
    extra = b""
    try:
        extra = s.recv(4096)
    except socket.timeout:
        pass
    s.settimeout(30)
    t = context().wrap_socket(s)
    replies += tls_lines(t, ["MAIL FROM:<alice@example.org>", "EHLO client.lab.example",
                             "STARTTLS", "QUIT"])
    print(json.dumps({"replies": replies, "extra": extra.hex()}))


def raw(args):
    src, dst, hexbytes = args[:3]
    wait = float(args[3]) if len(args) > 3 else 3.0
    s = connect(src, dst)
    f = s.makefile("rb")
    read_reply(f)
    s.sendall(b"EHLO client.lab.example\r\n")
    read_reply(f)
    s.sendall(b"STARTTLS\r\n")
    r = read_reply(f)
    s.sendall(bytes.fromhex(hexbytes))
    s.settimeout(wait)
    got, closed = b"", False
    deadline = time.time() + wait
    try:
        while time.time() < deadline:
            b = s.recv(4096)
            if not b:
                closed = True
                break
            got += b
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    sys.stdout.write(json.dumps({"starttls": r, "got": got.hex(), "closed": closed}) + "\n")
    sys.stdout.flush()
    if len(args) > 4:
        time.sleep(float(args[4]))


def hold(args):
    src, dst, seconds = args
    s = connect(src, dst)
    f = s.makefile("rb")
    read_reply(f)
    s.sendall(b"EHLO client.lab.example\r\n")
    read_reply(f)
    s.sendall(b"STARTTLS\r\n")
    read_reply(f)
    t = context().wrap_socket(s)
    cert = hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()
    sys.stdout.write(json.dumps({"cert": cert}) + "\n")
    sys.stdout.flush()
    time.sleep(float(seconds))
    replies = tls_lines(t, ["EHLO client.lab.example", "QUIT"])
    print(json.dumps({"cert": cert, "replies": replies}))


def starttls(args):
    src, dst = args[:2]
    s = connect(src, dst)
    f = s.makefile("rb")
    read_reply(f)
    s.sendall(b"EHLO client.lab.example\r\n")
    ehlo = read_reply(f)
    if len(args) > 2:
        time.sleep(float(args[2]))
    s.sendall(b"STARTTLS\r\n")
    r = read_reply(f)
    s.sendall(b"QUIT\r\n")
    print(json.dumps({"ehlo": ehlo, "starttls": r}))


if __name__ == "__main__":
    {"send": send, "inject": inject, "raw": raw, "hold": hold,
     "starttls": starttls}[sys.argv[1]](sys.argv[2:])
