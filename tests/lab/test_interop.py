#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Real senders' habits, end to end: a sender that half-closes.

Exim, the most deployed MTA, sends its last command (the final dot or BDAT
LAST, then QUIT) and shuts down its side of the connection at once (FIN),
still reading the replies. The edge must answer everything it received
before it closes: if the 250 never comes, the sender defers a message the
spool already holds, and it arrives twice.

Two clients: a scripted one (Python sockets, shutdown(SHUT_WR) after QUIT)
and Exim itself, Debian's exim4-daemon-light unpacked by scripts/exim.sh
(it conflicts with postfix, so it is never installed) and run once as a
client in the peer namespace.
"""
import os
import re
import subprocess
import tempfile
import uuid

import labkit
from labkit import LAB, Edge, expect, in_peer
from test_smtp import EDGE6, spool_files

PTR6 = LAB["LAB_PEER6_PTR"]

# Runs in the peer namespace: connect, send the whole of a transaction the
# way a pipelining sender does, QUIT, shutdown(SHUT_WR), then read until the
# edge closes. Prints every byte received.
HALF_CLOSE_CLIENT = r"""
import socket, sys
src, dst, mode, msgid = sys.argv[1:5]
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(30)
s.bind((src, 0))
s.connect((dst, 25))
f = s.makefile("rb")

def reply():
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise SystemExit("closed early: " + repr(lines))
        lines.append(l.decode())
        if l[3:4] != b"-":
            return "".join(lines)

out = [reply()]
s.sendall(b"EHLO client.lab.example\r\n")
out.append(reply())
body = ("From: <alice@example.org>\r\nTo: <bob@example.net>\r\n"
        "Subject: half-close " + mode + "\r\nMessage-ID: <" + msgid + ">\r\n"
        "\r\nOne message, answered before the close.\r\n").encode()
head = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
if mode == "data":
    s.sendall(head + b"DATA\r\n")
    out += [reply(), reply(), reply()]
    last = body + b".\r\nQUIT\r\n"
else:
    last = head + b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n"
s.sendall(last)
s.shutdown(socket.SHUT_WR)
rest = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    rest += b
sys.stdout.write("".join(out) + rest.decode())
"""


def spooled_with(msgid):
    """The spool files holding the message with this Message-ID."""
    mark = f"Message-ID: <{msgid}>".encode().lower()
    return [p for p in spool_files() if mark in open(p, "rb").read().lower()]


def half_close(mode):
    msgid = f"{uuid.uuid4().hex}@half-close.lab.example"
    r = in_peer("/usr/bin/python3", "-c", HALF_CLOSE_CLIENT, PTR6, EDGE6, mode, msgid,
                check=False, timeout=60)
    expect(r.returncode == 0, f"{mode}: the client failed: {r.stderr[-2000:]}")
    codes = [l[:4] for l in r.stdout.splitlines() if l[3:4] == " "]
    want = ["220 ", "250 ", "250 ", "250 ", "354 ", "250 ", "221 "] if mode == "data" else \
        ["220 ", "250 ", "250 ", "250 ", "250 ", "221 "]
    expect(codes == want, f"{mode}: replies {codes}, want {want}:\n{r.stdout}")
    expect(re.search(r"^250 2\.0\.0 Ok: queued as [0-9A-F]+\r?$", r.stdout, re.M),
           f"{mode}: no queued reply:\n{r.stdout}")
    expect(labkit.wait_for(lambda: len(spooled_with(msgid)) == 1, timeout=5),
           f"{mode}: {len(spooled_with(msgid))} spool files hold the message, want 1")


def test_half_close_after_dot_and_quit_gets_250_and_221():
    with Edge():
        half_close("data")


def test_half_close_after_bdat_last_and_quit_gets_250_and_221():
    with Edge():
        half_close("bdat")


# ------------------------------------------------------------------ Exim

EXIM_CONF = """\
exim_path = {bin}
keep_environment =
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
primary_hostname = client.lab.example
qualify_domain = example.org
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
host_lookup =
rfc1413_hosts =

begin routers
to_edge:
  driver = manualroute
  domains = *
  transport = to_edge
  route_list = * "<+ {edge}"
  self = send

begin transports
to_edge:
  driver = smtp
  port = 25
  interface = <; {src}
  hosts_try_chunking = {chunking}
  hosts_avoid_tls = *

begin retry
* * F,1h,1h
"""


def exim_binary():
    r = subprocess.run(["bash", os.path.join(labkit.ROOT, "scripts/exim.sh"),
                        os.path.join(os.path.dirname(os.path.dirname(labkit.SMTPEDGE)), "exim")],
                       capture_output=True, text=True, timeout=300)
    expect(r.returncode == 0, f"scripts/exim.sh failed: {r.stderr[-2000:]}")
    return r.stdout.strip()


def exim_send(chunking):
    """One message through Exim, delivered in the foreground to the edge.
    Returns Exim's exit status, its main log and the Message-ID sent."""
    binary = exim_binary()
    msgid = f"{uuid.uuid4().hex}@exim.lab.example"
    with tempfile.TemporaryDirectory(prefix="se-exim-", dir=LAB["LAB_DIR"]) as d:
        # The binary looks up its compiled-in user "Debian-exim" before it
        # reads any configuration, and the machine has no such user: Exim
        # runs in its own mount namespace where copies of /etc/passwd and
        # /etc/group name it (as nobody's ids), and nowhere else.
        for name, line in (("passwd", "Debian-exim:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"),
                           ("group", "Debian-exim:x:65534:\n")):
            with open(f"/etc/{name}") as src, open(f"{d}/{name}", "w") as dst:
                dst.write(src.read() + line)
        for sub in ("spool", "log"):
            os.makedirs(f"{d}/{sub}")
            os.chown(f"{d}/{sub}", 65534, 65534)
        os.chmod(d, 0o755)
        with open(f"{d}/exim.conf", "w") as f:
            f.write(EXIM_CONF.format(bin=binary, dir=d, edge=EDGE6, src=PTR6,
                                     chunking="*" if chunking else ""))
        msg = (f"From: <alice@example.org>\nTo: <bob@example.net>\n"
               f"Subject: from Exim, chunking {chunking}\nMessage-ID: <{msgid}>\n\n"
               f"Delivered on the first try.\n.leading dot\n")
        script = (f"mount --bind {d}/passwd /etc/passwd && mount --bind {d}/group /etc/group && "
                  f"exec {binary} -C {d}/exim.conf -odf -oi -f alice@example.org bob@example.net")
        r = subprocess.run(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "unshare", "-m",
                            "--propagation", "private", "sh", "-c", script],
                           input=msg, capture_output=True, text=True, timeout=120)
        try:
            log = open(f"{d}/log/mainlog").read()
        except OSError:
            log = ""
        try:
            log += open(f"{d}/log/paniclog").read()
        except OSError:
            pass
        return r.returncode, log + r.stderr, msgid


def exim_delivers_first_time(chunking):
    with Edge():
        rc, log, msgid = exim_send(chunking)
        expect(rc == 0, f"exim exited {rc}:\n{log}")
        expect(re.search(r' => bob@example\.net .*C="250 2\.0\.0 Ok: queued as ', log),
               f"no delivery with our 250 in Exim's log:\n{log}")
        k = re.search(r" => bob@example\.net .* K C=", log)
        expect(bool(k) == chunking, f"Exim {'did not use' if chunking else 'used'} BDAT:\n{log}")
        expect(" == " not in log and " ** " not in log, f"Exim deferred or bounced:\n{log}")
        expect(re.search(r" Completed$", log, re.M), f"message not completed:\n{log}")
        expect(labkit.wait_for(lambda: len(spooled_with(msgid)) == 1, timeout=5),
               f"{len(spooled_with(msgid))} spool files hold Exim's message, want 1")


def test_exim_delivers_on_first_try_with_bdat():
    exim_delivers_first_time(chunking=True)


def test_exim_delivers_on_first_try_with_data():
    exim_delivers_first_time(chunking=False)


if __name__ == "__main__":
    labkit.main(globals())
