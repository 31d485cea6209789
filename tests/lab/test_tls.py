#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""STARTTLS through the DPDK port, with real clients: openssl s_client
(TLS 1.2 and 1.3, ECDSA and RSA, resumption), swaks, Python's smtplib;
messages byte-exact over TLS, also through the fault shim; the PTR rule
over TLS; hostile handshakes; max_sessions; tls reload.

Postfix as a sender (its own instance in the peer namespace, relayhost =
the edge) with smtp_tls_security_level = encrypt and = secure delivers,
and defers when no STARTTLS is offered.

The certificates (a self-signed ECDSA P-256 and an RSA 2048) are made in
LAB_DIR/tls when the tests start.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import labkit
from labkit import LAB, Edge, expect, in_peer, delta, wait_for
from test_smtp import EDGE6, EDGE4, spool_files, spooled_body

TLS_PEER = os.path.join(labkit.HERE, "tls_peer.py")
PTR6, NOPTR6 = LAB["LAB_PEER6_PTR"], LAB["LAB_PEER6_NOPTR"]
PTR4 = LAB["LAB_PEER4_PTR"]
TLSDIR = LAB["LAB_DIR"] + "/tls"
ORIG_CONF = os.path.join(labkit.ROOT, "conf/lab.conf")


def openssl(*args):
    labkit.sh("openssl", *args)


def make_certs():
    os.makedirs(TLSDIR, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=mx.lab.example", "-days", "2",
            "-keyout", TLSDIR + "/ec.key", "-out", TLSDIR + "/ec.crt")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.lab.example",
            "-days", "2", "-keyout", TLSDIR + "/rsa.key", "-out", TLSDIR + "/rsa.crt")


def conf(tls=None, smtp=None, faults=None, extra=""):
    """conf/lab.conf with a [tls] section (and [smtp], [faults] if asked)."""
    make_certs() if not os.path.exists(TLSDIR + "/ec.crt") else None
    t = {"cert": TLSDIR + "/ec.crt", "key": TLSDIR + "/ec.key",
         "rsa_cert": TLSDIR + "/rsa.crt", "rsa_key": TLSDIR + "/rsa.key"}
    t.update(tls or {})
    text = open(ORIG_CONF).read() + "\n[tls]\n" + "".join(f"{k} = {v}\n" for k, v in t.items())
    if smtp:
        text += "\n[smtp]\n" + "".join(f"{k} = {v}\n" for k, v in smtp.items())
    if faults:
        text += "\n[faults]\n" + "".join(f"{k} = {v}\n" for k, v in faults.items())
    text += extra
    path = LAB["LAB_DIR"] + "/tls.conf"
    with open(path, "w") as f:
        f.write(text)
    return path


def tls_peer(*args, timeout=600):
    r = in_peer("/usr/bin/python3", TLS_PEER, *args, check=False, timeout=timeout)
    if r.returncode != 0:
        raise labkit.Failure(f"tls_peer.py {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def s_client(*args, stdin="EHLO client.lab.example\nQUIT\n", src=PTR6, dst=EDGE6):
    r = in_peer("openssl", "s_client", "-starttls", "smtp", "-connect", f"[{dst}]:25",
                "-bind", f"[{src}]:0", "-crlf", "-ign_eof", *args,
                input=stdin, check=False, timeout=60)
    return r.stdout + r.stderr


def stored(text):
    qid = text.split()[-1]
    files = [p for p in spool_files() if f"id {qid}".encode() in open(p, "rb").read(800)]
    expect(len(files) == 1, f"queue id {qid}: {len(files)} files")
    return files[0]


def tls_gauge_zero(edge):
    return wait_for(lambda: edge.stats().get("tls_sessions", -1) == 0, timeout=30)


def test_s_client_tls13_tls12_ecdsa_rsa():
    with Edge(config=conf()) as edge:
        out = s_client("-tls1_3")
        expect("Protocol  : TLSv1.3" in out or "TLSv1.3" in out, f"1.3: {out[-1500:]}")
        expect("Peer signature type: ECDSA" in out, f"1.3 ECDSA: {out[-1500:]}")
        expect("221 2.0.0" in out, f"1.3 QUIT answered: {out[-800:]}")
        out = s_client("-tls1_2")
        expect(re.search(r"New, TLSv1\.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384", out),
               f"1.2 ECDSA: {out[-1500:]}")
        out = s_client("-tls1_2", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
        expect(re.search(r"New, TLSv1\.2, Cipher is ECDHE-RSA-AES256-GCM-SHA384", out),
               f"1.2 RSA: {out[-1500:]}")
        out = s_client("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")
        expect("Peer signature type: RSA-PSS" in out and "TLSv1.3" in out, f"1.3 RSA: {out[-1500:]}")
        # After the handshake: EHLO again, STARTTLS no longer offered.
        out = s_client("-tls1_3", stdin="EHLO client.lab.example\nSTARTTLS\nQUIT\n")
        after = out[out.find("250-mx.lab.example", out.find("---\n", out.find("SSL-Session"))):]
        expect("250-STARTTLS" not in after and "503 5.5.1 Error: TLS already active" in out,
               f"second STARTTLS: {out[-1500:]}")
        st = edge.stats()
        expect(st["tls_handshakes_full"] >= 5, f"handshakes not counted: {st['tls_handshakes_full']}")
        expect(tls_gauge_zero(edge), "tls_sessions did not return to 0")


def test_s_client_resumption_tls13_and_tls12():
    with Edge(config=conf()) as edge:
        for v in ("-tls1_3", "-tls1_2"):
            sess = LAB["LAB_DIR"] + f"/sess{v}"
            out = s_client(v, "-sess_out", sess)
            expect(re.search(r"\nNew, TLSv1\.[23]", out), f"{v} first: {out[-1200:]}")
            out = s_client(v, "-sess_in", sess)
            expect(re.search(r"\nReused, TLSv1\.[23]", out), f"{v} not resumed: {out[-1500:]}")
        st = edge.stats()
        expect(st["tls_handshakes_resumed"] >= 2, f"resumed: {st['tls_handshakes_resumed']}")


def test_swaks_tls():
    with Edge(config=conf()) as edge:
        r = in_peer("swaks", "--server", EDGE6, "--tls", "--from", "alice@example.org",
                    "--to", "bob@example.net", "--local-interface", PTR6,
                    "--tls-protocol", "tlsv1_3", check=False, timeout=60)
        expect(r.returncode == 0 and "250 2.0.0 Ok: queued as" in r.stdout,
               f"swaks: {r.returncode} {r.stdout[-1500:]}")
        path = stored(re.search(r"250 2\.0\.0 Ok: queued as \S+", r.stdout).group(0))
        head = open(path, "rb").read(600).decode()
        expect(re.search(r"\r\n\t\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256/256 bits\)\)\r\n"
                         r"\tby mx\.lab\.example \(smtpedge\) with ESMTPS id ", head),
               f"Received: {head}")
        log = edge.read_log()
        expect(re.search(r"event=transaction .* tls=TLSv1\.3 cipher=TLS_AES_256_GCM_SHA384 ", log),
               f"no tls= in the log: {log[-1500:]}")


def test_smtplib_byte_exact_0_to_10mb():
    with Edge(config=conf()) as edge:
        for i, size in enumerate([0, 1, 1000, 65536, 1 << 20, 10 << 20]):
            r = tls_peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net",
                         str(size), str(i), "1.2" if i % 2 else "1.3")
            expect(r["code"] == 250, f"size {size}: {r}")
            expect("starttls" in r["ehlo_before"] and "starttls" not in r["ehlo_after"],
                   f"STARTTLS offered before and only before: {r}")
            body, _ = spooled_body(stored(r["text"]))
            expect(hashlib.sha256(body).hexdigest() == r["sha256"],
                   f"size {size}: spooled {len(body)} bytes, sent {r['size']}: not identical")
        r = tls_peer("send", PTR4, EDGE4, "alice@example.org", "bob@example.net", "5000", "9")
        expect(r["code"] == 250, f"IPv4: {r}")
        expect(tls_gauge_zero(edge), "tls_sessions did not return to 0")


def test_byte_exact_through_fault_shim():
    faults = {"rx_drop_pct": 3, "rx_dup_pct": 2, "rx_reorder_pct": 3,
              "tx_drop_pct": 3, "tx_dup_pct": 2, "tx_reorder_pct": 3, "seed": 7}
    with Edge(config=conf(faults=faults)) as edge:
        before = edge.stats()
        for i, size in enumerate([0, 3000, 200000, 2 << 20]):
            r = tls_peer("send", PTR6, EDGE6, "alice@example.org", "bob@example.net",
                         str(size), str(100 + i))
            expect(r["code"] == 250, f"size {size} under faults: {r}")
            body, _ = spooled_body(stored(r["text"]))
            expect(hashlib.sha256(body).hexdigest() == r["sha256"], f"size {size}: not identical")
        after = edge.stats()
        for k in ("fault_dropped", "fault_duplicated", "fault_reordered"):
            expect(delta(after, before, k) > 0, f"{k} did not move")
        expect(tls_gauge_zero(edge), "tls_sessions did not return to 0")


def test_ptr_and_auth_rules_over_tls():
    with Edge(config=conf()) as edge:
        r = tls_peer("send", NOPTR6, EDGE6, "alice@example.org", "bob@example.net", "100", "1")
        expect(r["code"] == 550 and "must have a reverse DNS record" in r["text"],
               f"the PTR rule over TLS: {r}")
        r = tls_peer("send", PTR6, EDGE6, "carol@spf-fail.example", "bob@example.net", "100", "2")
        expect(r["code"] == 450, f"the auth rule over TLS: {r}")
        expect(edge.stats()["tls_handshakes_full"] >= 2, "not over TLS")


def test_refuse_before_handshake():
    with Edge(config=conf(tls={"refuse_before_handshake": "yes"})) as edge:
        r = tls_peer("starttls", NOPTR6, EDGE6, "1.0")
        expect(r["starttls"].startswith("550 5.7.25 ") and "reverse DNS" in r["starttls"],
               f"refused peer: {r}")
        r = tls_peer("starttls", PTR6, EDGE6, "1.0")
        expect(r["starttls"] == "220 2.0.0 Ready to start TLS", f"a good peer: {r}")
        st = edge.stats()
        expect(st["tls_refused_rule"] == 1, f"tls_refused_rule {st['tls_refused_rule']}")
    with Edge(config=conf()) as edge:
        r = tls_peer("starttls", NOPTR6, EDGE6, "1.0")
        expect(r["starttls"] == "220 2.0.0 Ready to start TLS", f"default no: {r}")


def test_injection_after_starttls_never_runs():
    with Edge(config=conf()) as edge:
        before = edge.stats()
        r = tls_peer("inject", PTR6, EDGE6)
        rep = r["replies"]
        expect(rep[2] == "220 2.0.0 Ready to start TLS" and r["extra"] == "",
               f"the 220 alone: {r}")
        expect(rep[3].startswith("503 5.5.1 Error: send HELO/EHLO first"),
               f"the session started over, the injected MAIL did not run: {rep}")
        expect(rep[5] == "503 5.5.1 Error: TLS already active", f"second STARTTLS: {rep}")
        expect(rep[6].startswith("221 "), f"QUIT: {rep}")
        after = edge.stats()
        n = len("MAIL FROM:<injected@example.org>\r\nRCPT TO:<bob@example.net>\r\n")
        expect(delta(after, before, "tls_discarded_bytes") == n,
               f"discarded {delta(after, before, 'tls_discarded_bytes')}, want {n}")


def test_hostile_handshakes():
    with Edge(config=conf(smtp={"idle_timeout_s": 10})) as edge:
        before = edge.stats()
        # Garbage instead of a ClientHello: not TLS, closed at once (no
        # record to put an alert in), never read as commands.
        r = tls_peer("raw", PTR6, EDGE6, b"MAIL FROM:<x@y>\r\nRCPT TO:<a@b>\r\n".hex())
        expect(r["starttls"].startswith("220 ") and r["closed"] and "3235" not in r["got"],
               f"garbage: {r}")
        # A truncated record: the handshake waits for the rest.
        r = tls_peer("raw", PTR6, EDGE6, "160301020001", "1")
        expect(r["got"] == "" and not r["closed"], f"truncated record waits: {r}")
        # A fatal alert mid-handshake.
        r = tls_peer("raw", PTR6, EDGE6, "15030300020228")
        expect(r["closed"], f"alert: {r}")
        # A TLS 1.0 hello: refused with a protocol_version alert (70).
        out = s_client("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
        expect("alert protocol version" in out or "tlsv1 alert protocol version" in out,
               f"TLS 1.0: {out[-1500:]}")
        # Renegotiation (s_client's R command, which needs stdin open and
        # no -ign_eof): refused with a no_renegotiation alert.
        r = in_peer("bash", "-c", "(sleep 1; echo R; sleep 2; echo QUIT; sleep 1) | "
                    f"openssl s_client -starttls smtp -connect [{EDGE6}]:25 -bind [{PTR6}]:0 "
                    "-crlf -tls1_2 2>&1", check=False, timeout=60)
        expect("RENEGOTIATING" in r.stdout and "no renegotiation" in r.stdout,
               f"renegotiation: {r.stdout[-1500:]}")
        after = edge.stats()
        expect(delta(after, before, "tls_failed_protocol") >= 1, "garbage not counted")
        expect(delta(after, before, "tls_failed_peer_alert") >= 1, "alert not counted")
        expect(delta(after, before, "tls_failed_version") >= 1, "TLS 1.0 not counted")
        expect(delta(after, before, "tls_alerts_sent") >= 3, "alerts sent not counted")
        expect(wait_for(lambda: edge.stats()["tls_sessions"] == 0, timeout=30),
               f"tls_sessions stays at {edge.stats()['tls_sessions']}")


def test_client_stops_mid_handshake_and_max_sessions():
    with Edge(config=conf(tls={"max_sessions": 1}, smtp={"idle_timeout_s": 10})) as edge:
        # One session in TLS holds the only place: the next STARTTLS is 454.
        hold = subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                                 TLS_PEER, "hold", PTR6, EDGE6, "3"],
                                stdout=subprocess.PIPE, text=True)
        try:
            first = json.loads(hold.stdout.readline())
            expect(first["cert"], "no certificate")
            r = tls_peer("starttls", PTR6, EDGE6)
            expect(r["starttls"].startswith("454 4.7.0 "), f"past max_sessions: {r}")
            out, _ = hold.communicate(timeout=30)
            last = json.loads(out.splitlines()[-1])
            expect(last["replies"][1].startswith("221 "), f"the held session: {last}")
        finally:
            if hold.poll() is None:
                hold.kill()
        expect(edge.stats()["tls_refused_full"] == 1, "tls_refused_full")
        expect(tls_gauge_zero(edge), "tls_sessions did not return to 0")
        # Part of a ClientHello and then silence, the connection open:
        # the idle timeout frees the TLS state and the session.
        before = edge.stats()
        stopped = subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                                    TLS_PEER, "raw", PTR6, EDGE6, "16030100", "1", "40"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            r = json.loads(stopped.stdout.readline())
            expect(not r["closed"], f"closed at once: {r}")
            expect(edge.stats()["tls_sessions"] == 1, "the stopped client is in TLS")
            expect(wait_for(lambda: edge.stats()["tls_sessions"] == 0, timeout=30),
                   "the stopped client was not freed")
            after = edge.stats()
            expect(delta(after, before, "tls_failed_timeout") == 1, "timeout not counted")
            expect(delta(after, before, "sessions_closed") == 1, "the session was not closed")
        finally:
            stopped.kill()
            stopped.wait()


def test_postfix_tls_client_encrypt():
    """Postfix's own TLS client (posttls-finger, the smtp client's TLS code)
    at security level encrypt: STARTTLS, the handshake, EHLO again, QUIT."""
    d = LAB["LAB_DIR"] + "/postfix-client"
    os.makedirs(d, exist_ok=True)
    with open(d + "/main.cf", "w") as f:
        f.write("compatibility_level = 3.6\ninet_protocols = ipv6\n")
    with Edge(config=conf()) as edge:
        r = in_peer("env", f"MAIL_CONFIG={d}", "posttls-finger", "-l", "encrypt", "-c", "-L", "summary",
                    "-o", f"smtp_bind_address6={PTR6}",
                    f"[{EDGE6}]:25", check=False, timeout=60)
        out = r.stdout + r.stderr
        expect(re.search(r"TLS connection established to .*: TLSv1\.3 with cipher "
                         r"TLS_AES_256_GCM_SHA384 \(256/256 bits\)", out),
               f"posttls-finger: {r.returncode} {out[-1500:]}")
        expect(edge.stats()["tls_handshakes_full"] == 1, "no handshake counted")


POSTFIX_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixSender:
    """A Postfix instance of its own in the peer namespace (its own config
    and queue directories under the lab directory, no listener) that sends
    everything to the edge: relayhost = [edge]:25, TLS at `level`."""

    def __init__(self, level, dst, src, name="postfix-sender", policy=""):
        self.d = f"{LAB['LAB_DIR']}/{name}"
        self.dst, self.level = dst, level
        subprocess.run(["rm", "-rf", self.d], check=True)
        os.makedirs(self.d + "/queue")
        os.makedirs(self.d + "/data")
        for f in ("postfix-files", "dynamicmaps.cf"):
            shutil.copy(f"/etc/postfix/{f}", self.d)
        for f in ("postfix-files.d", "dynamicmaps.cf.d"):
            if os.path.isdir(f"/etc/postfix/{f}"):
                shutil.copytree(f"/etc/postfix/{f}", f"{self.d}/{f}")
        v6 = ":" in dst
        relay = f"[ipv6:{dst}]:25" if v6 else f"[{dst}]:25"
        # The lab's certificates are self-signed: each is its own CA.
        with open(self.d + "/ca.pem", "w") as f:
            f.write(open(TLSDIR + "/ec.crt").read() + open(TLSDIR + "/rsa.crt").read())
        maps = ""   # no CA file at encrypt: the certificate goes unchecked
        if policy:
            with open(self.d + "/tls_policy", "w") as f:
                f.write(f"{relay} {policy}\n")
            maps = (f"smtp_tls_policy_maps = texthash:{self.d}/tls_policy\n"
                    f"smtp_tls_CAfile = {self.d}/ca.pem\n")
        with open(self.d + "/main.cf", "w") as f:
            f.write(f"""# written by tests/lab/test_tls.py
compatibility_level = 3.6
queue_directory = {self.d}/queue
data_directory = {self.d}/data
meta_directory = {self.d}
mail_owner = postfix
setgid_group = postdrop
myhostname = client.lab.example
mydomain = lab.example
myorigin = example.org
mydestination =
inet_interfaces = loopback-only
inet_protocols = {"ipv6" if v6 else "ipv4"}
mynetworks = 127.0.0.0/8 [::1]/128
relayhost = {relay}
smtp_bind_address6 = {PTR6}
smtp_bind_address = {PTR4}
smtp_dns_support_level = disabled
smtp_tls_security_level = {level}
smtp_tls_loglevel = 1
{maps}maillog_file = {self.d}/maillog
maillog_file_prefixes = {self.d}
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
""")
        with open(self.d + "/master.cf", "w") as f:
            f.write(POSTFIX_MASTER_CF)
        in_peer("postfix", "-c", self.d, "check", check=False)  # makes the queue
        in_peer("postfix", "-c", self.d, "set-permissions", check=False)
        shutil.chown(self.d + "/data", "postfix", "postfix")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/lib/postfix/sbin/master",
             "-c", self.d, "-d"],
            stdout=open(self.d + "/master.out", "w"), stderr=subprocess.STDOUT)

    def sendmail(self, message):
        r = in_peer("/usr/sbin/sendmail", "-C", self.d, "-i", "-f", "alice@example.org",
                    "bob@example.net", input=message.decode(), check=False, timeout=60)
        expect(r.returncode == 0, f"sendmail: {r.returncode} {r.stderr}")

    def log(self):
        try:
            with open(self.d + "/maillog") as f:
                return f.read()
        except OSError:
            return ""

    def flush(self):
        in_peer("postqueue", "-c", self.d, "-f", check=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def postfix_message(tag):
    """A message with its own header fields (so Postfix's cleanup adds only
    its Received:), dot-stuffing and 200 KB of lines."""
    lines = [f"From: alice@example.org", "To: bob@example.net",
             f"Subject: postfix over TLS {tag}", f"Message-ID: <{tag}@client.lab.example>",
             "Date: Thu, 03 Dec 2026 10:00:00 +0000", "", "first line", ".a leading dot",
             "..two dots", "."]
    lines += [hashlib.sha256(f"{tag}{i}".encode()).hexdigest() * 2 for i in range(1600)]
    return ("\n".join(lines) + "\nlast line\n").encode()


def spooled_with(marker):
    files = [p for p in spool_files() if marker in open(p, "rb").read()]
    expect(len(files) == 1, f"{marker!r}: {len(files)} spool files")
    return files[0]


def test_postfix_sender_tls_enforced_delivers():
    """A Postfix sender with smtp_tls_security_level = encrypt (IPv6 and
    IPv4), and = secure against the lab's certificates (the certificate
    verified, its name matched), delivers through smtpedge: Postfix logs
    status=sent over an established TLS connection, the spool holds the
    message byte-exact under a Received: with ESMTPS and the cipher."""
    cases = [("encrypt", EDGE6, "", "Untrusted TLS connection established to"),
             ("encrypt", EDGE4, "", "Untrusted TLS connection established to"),
             ("secure", EDGE6, "secure match=mx.lab.example",
              "Verified TLS connection established to")]
    with Edge(config=conf()) as edge:
        for i, (level, dst, policy, established) in enumerate(cases):
            tag = f"pf{i}-{os.getpid()}"
            msg = postfix_message(tag)
            with PostfixSender(level, dst, PTR6, policy=policy) as pf:
                pf.sendmail(msg)
                ok = wait_for(lambda: "status=sent" in pf.log() or "status=deferred" in pf.log(),
                              timeout=60, step=0.5)
                log = pf.log()
                expect(ok and "status=sent" in log, f"{level} to {dst}: not sent: {log[-2000:]}")
                expect(re.search(established + r" \S+: TLSv1\.3 with cipher "
                                 r"TLS_AES_256_GCM_SHA384 \(256/256 bits\)", log),
                       f"{level} to {dst}: no TLS connection logged: {log[-2000:]}")
                expect(re.search(r"status=sent \(250 2\.0\.0 Ok: queued as ", log),
                       f"{level}: {log[-1500:]}")
            path = spooled_with(f"<{tag}@client.lab.example>".encode())
            body, data = spooled_body(path)
            wire = msg.replace(b"\n", b"\r\n")
            # Postfix's cleanup put its own Received: first; what follows
            # is the submitted message, byte for byte.
            expect(body.startswith(b"Received: by client.lab.example (Postfix, from userid 0)"),
                   f"{level}: {body[:300]!r}")
            expect(body.endswith(wire) and body.count(b"\r\nFrom: alice@") == 1,
                   f"{level} to {dst}: spooled message differs from the submitted one")
            head = data[:600].decode()
            expect(re.search(r"^Received: from client\.lab\.example \(peer-ok\.lab\.example "
                             r"\[(?:IPv6:)?[0-9a-f.:]+\]\)\r\n"
                             r"\t\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256/256 bits\)\)\r\n"
                             r"\tby mx\.lab\.example \(smtpedge\) with ESMTPS id ", head),
                   f"{level}: Received: {head}")
        expect(edge.stats()["tls_handshakes_full"] >= len(cases), "handshakes not counted")


def test_postfix_sender_tls_enforced_defers_without_starttls():
    """No certificate, so no STARTTLS: Postfix with encrypt defers the
    message and sends nothing in plaintext; the spool stays empty."""
    before = spool_files()
    with Edge() as edge:
        with PostfixSender("encrypt", EDGE6, PTR6, name="postfix-sender-plain") as pf:
            pf.sendmail(postfix_message(f"plain-{os.getpid()}"))
            ok = wait_for(lambda: "status=" in pf.log(), timeout=60, step=0.5)
            log = pf.log()
            expect(ok and "status=deferred" in log and "status=sent" not in log,
                   f"not deferred: {log[-2000:]}")
            expect("TLS is required, but was not offered by host" in log,
                   f"deferred for another reason: {log[-2000:]}")
        expect(spool_files() == before, "something reached the spool")
        st = edge.stats()
        expect(st.get("tls_starttls", 0) == 0 and st["tls_handshakes_full"] == 0,
               "TLS without a certificate")


def test_tls_reload_keeps_old_sessions():
    with Edge(config=conf()) as edge:
        hold = subprocess.Popen(["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3",
                                 TLS_PEER, "hold", PTR6, EDGE6, "3"],
                                stdout=subprocess.PIPE, text=True)
        try:
            old = json.loads(hold.stdout.readline())["cert"]
            # New certificate files in place, then reload.
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=mx.lab.example", "-days", "3",
                    "-keyout", TLSDIR + "/ec.key", "-out", TLSDIR + "/ec.crt")
            r = edge.ctl("tls", "reload", check=False)
            expect(r.returncode == 0 and "reloaded" in r.stdout, f"reload: {r.stdout} {r.stderr}")
            r = tls_peer("hold", PTR6, EDGE6, "0")
            expect(r["cert"] != old and r["replies"][1].startswith("221 "), f"new certificate: {r}")
            out, _ = hold.communicate(timeout=30)
            last = json.loads(out.splitlines()[-1])
            expect(last["cert"] == old and last["replies"][1].startswith("221 "),
                   f"the session from before the reload: {last}")
        finally:
            if hold.poll() is None:
                hold.kill()
        # A broken key: refused with its line, the loaded certificate stays.
        with open(TLSDIR + "/ec.key", "w") as f:
            f.write("broken\n")
        r = edge.ctl("tls", "reload", check=False)
        expect(r.returncode == 1 and "[tls] key:" in r.stderr, f"broken reload: {r.stderr}")
        r = tls_peer("hold", PTR6, EDGE6, "0")
        expect(r["replies"][1].startswith("221 "), "still serving after a failed reload")
        os.unlink(TLSDIR + "/ec.crt")   # the next test makes new ones


if __name__ == "__main__":
    labkit.main(globals())
