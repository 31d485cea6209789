#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Every kind of bad configuration is refused with one clear line.

Runs the real daemon (`smtpedge -- --config FILE --check`): the config is
read before EAL starts, so no DPDK resources are needed. Each case starts
from a good file, changes one thing, and names the line smtpedge must print
(file, [section] key, and what is wrong) and that it exits 2.
"""
import os
import re
import subprocess
import sys
import tempfile

SMTPEDGE = sys.argv[1]

GOOD = """\
[edge]
hostname = mx.example.net
address6 = 2001:db8:1::1
address4 = 198.51.100.1
smtp_ports = 25
[dns]
server = 127.0.0.1@5353
[domains]
accept = example.net example.org
[relay]
spool = /var/spool/smtpedge
[dataplane]
mbufs = 8191
[log]
level = info
"""


def replace(key_line, new):
    """GOOD with the line starting with key_line replaced by new."""
    out = []
    for line in GOOD.splitlines():
        out.append(new if line.startswith(key_line) else line)
    return "\n".join(out) + "\n"


def add(section, line):
    return GOOD.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


def drop(key_line):
    return "\n".join(l for l in GOOD.splitlines() if not l.startswith(key_line)) + "\n"


# Certificates for the [tls] cases: ECDSA P-256, a second P-256 key, RSA.
TLS = tempfile.mkdtemp(prefix="test_config_tls.")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=mx.example.net", "-days", "2", "-keyout", TLS + "/ec.key", "-out", TLS + "/ec.crt")
openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", TLS + "/ec2.key")
openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", TLS + "/p384.key")
openssl("req", "-x509", "-key", TLS + "/p384.key", "-subj", "/CN=mx.example.net", "-days", "2",
        "-out", TLS + "/p384.crt")
openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.example.net", "-days", "2",
        "-keyout", TLS + "/rsa.key", "-out", TLS + "/rsa.crt")
with open(TLS + "/garbage.pem", "w") as f:
    f.write("not a certificate\n")


def tls(*lines):
    return GOOD + "[tls]\n" + "".join(l.format(d=TLS) + "\n" for l in lines)


# (name, file text or None for a missing file, regex the one line must match)
CASES = [
    ("tls key without cert", tls("key = {d}/ec.key"), r"^smtpedge: {f}: \[tls\] cert: missing \(key is given\)"),
    ("tls cert without key", tls("cert = {d}/ec.crt"), r"^smtpedge: {f}: \[tls\] key: missing \(cert is given\)"),
    ("tls cert missing", tls("cert = {d}/none.crt", "key = {d}/ec.key"), r"^smtpedge: {f}: \[tls\] cert: \".*/none.crt\" cannot be read"),
    ("tls cert not PEM", tls("cert = {d}/garbage.pem", "key = {d}/ec.key"), r"^smtpedge: {f}: \[tls\] cert: \".*/garbage.pem\" is not a readable PEM certificate"),
    ("tls key mismatch", tls("cert = {d}/ec.crt", "key = {d}/ec2.key"), r"^smtpedge: {f}: \[tls\] key: \".*/ec2.key\" does not match the certificate"),
    ("tls key not P-256", tls("cert = {d}/p384.crt", "key = {d}/p384.key"), r"^smtpedge: {f}: \[tls\] key: \".*/p384.key\" is not an ECDSA P-256 key"),
    ("tls RSA as the ECDSA pair", tls("cert = {d}/rsa.crt", "key = {d}/rsa.key"), r"^smtpedge: {f}: \[tls\] key: .* is not an ECDSA P-256 key"),
    ("tls rsa_key mismatch", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "rsa_cert = {d}/rsa.crt", "rsa_key = {d}/ec2.key"),
     r"^smtpedge: {f}: \[tls\] rsa_key: .* does not match the certificate"),
    ("tls rsa_cert without rsa_key", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "rsa_cert = {d}/rsa.crt"),
     r"^smtpedge: {f}: \[tls\] rsa_key: missing \(rsa_cert is given\)"),
    ("tls bad min_version", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "min_version = 1.1"),
     r"^smtpedge: {f}: \[tls\] min_version: \"1.1\" is neither 1.2 nor 1.3"),
    ("tls max_sessions 0", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "max_sessions = 0"),
     r"^smtpedge: {f}: \[tls\] max_sessions: 0 is out of range"),
    ("tls rotate too often", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "ticket_rotate_s = 1"),
     r"^smtpedge: {f}: \[tls\] ticket_rotate_s: 1 is out of range"),
    ("tls refuse yes/no", tls("cert = {d}/ec.crt", "key = {d}/ec.key", "refuse_before_handshake = maybe"),
     r"^smtpedge: {f}: \[tls\] refuse_before_handshake: \"maybe\" is neither yes nor no"),
    ("missing file", None, r"^smtpedge: {f}: cannot open: No such file"),
    ("line without =", GOOD + "hostname mx\n", r"^smtpedge: {f}:16: expected \"\[section\]\" or \"key = value\""),
    ("key before section", "x = 1\n" + GOOD, r"^smtpedge: {f}:1: key \"x\" before any \[section\]"),
    ("malformed section", GOOD + "[edge\n", r"^smtpedge: {f}:16: malformed section header"),
    ("empty value", replace("hostname", "hostname ="), r"^smtpedge: {f}:2: \[edge\] hostname: empty value"),
    ("value too long", replace("accept", "accept = " + "a" * 300 + ".net"), r"^smtpedge: {f}:9: \[domains\] accept: value longer than 255"),
    ("unknown section", GOOD + "[greylist]\ndelay = 60\n", r"^smtpedge: {f}: \[greylist\]: unknown section"),
    ("unknown smtp key", GOOD + "[smtp]\nbanner = hi\n", r"^smtpedge: {f}: \[smtp\] banner: unknown key"),
    ("bad rule reply", GOOD + "[ipv6-ptr]\nreply = 451\n", r"^smtpedge: {f}: \[ipv6-ptr\] reply: reply: \"451\" is not one of 550 450"),
    ("bad rule stage", GOOD + "[ipv4-ptr]\nstage = data\n", r"^smtpedge: {f}: \[ipv4-ptr\] stage: stage: \"data\" is not one of connect mail rcpt"),
    ("bad rule action", GOOD + "[ipv6-ptr]\naction = maybe\n", r"^smtpedge: {f}: \[ipv6-ptr\] action: action: \"maybe\" is not one of enforce log off"),
    ("bad fcrdns", GOOD + "[ipv6-ptr]\nfcrdns = sometimes\n", r"^smtpedge: {f}: \[ipv6-ptr\] fcrdns: fcrdns: \"sometimes\" is not one of yes no"),
    ("auth reply 550", GOOD + "[ipv6-auth]\nreply = 550\n", r"^smtpedge: {f}: \[ipv6-auth\] reply: reply: \"550\" is not one of 450 554"),
    ("auth has no stage", GOOD + "[ipv6-auth]\nstage = mail\n", r"^smtpedge: {f}: \[ipv6-auth\] stage: unknown key"),
    ("unknown rule key", GOOD + "[ipv6-ptr]\ntext = go away\n", r"^smtpedge: {f}: \[ipv6-ptr\] text: unknown key"),
    ("bad pregreet", GOOD + "[smtp]\npregreet = punish\n", r"^smtpedge: {f}: \[smtp\] pregreet: \"punish\" is neither record nor reject"),
    ("recipients below RFC minimum", GOOD + "[smtp]\nmax_recipients = 10\n", r"^smtpedge: {f}: \[smtp\] max_recipients: 10 is out of range \(100..10000\)"),
    ("command line below RFC minimum", GOOD + "[smtp]\nmax_cmd_line = 100\n", r"^smtpedge: {f}: \[smtp\] max_cmd_line: 100 is out of range \(512..2048\)"),
    ("idle timeout", GOOD + "[smtp]\nidle_timeout_s = 1\n", r"^smtpedge: {f}: \[smtp\] idle_timeout_s: 1 is out of range"),
    ("idle pressure 0", GOOD + "[smtp]\nidle_pressure_pct = 0\n", r"^smtpedge: {f}: \[smtp\] idle_pressure_pct: 0 is out of range \(1..100\)"),
    ("idle pressure above 100", GOOD + "[smtp]\nidle_pressure_pct = 101\n", r"^smtpedge: {f}: \[smtp\] idle_pressure_pct: 101 is out of range \(1..100\)"),
    ("shortest idle timeout 0", GOOD + "[smtp]\nidle_timeout_min_s = 0\n", r"^smtpedge: {f}: \[smtp\] idle_timeout_min_s: 0 is out of range \(1..3600\)"),
    ("shortest idle timeout above idle timeout", GOOD + "[smtp]\nidle_timeout_s = 60\nidle_timeout_min_s = 120\n", r"^smtpedge: {f}: \[smtp\] idle_timeout_min_s: 120 is above idle_timeout_s \(60\)$"),
    ("message size", GOOD + "[smtp]\nmax_message_mb = 0\n", r"^smtpedge: {f}: \[smtp\] max_message_mb: 0 is out of range \(1..1024\)"),
    ("no control threads", GOOD + "[control]\nthreads = 0\n", r"^smtpedge: {f}: \[control\] threads: 0 is out of range \(1..64\)"),
    ("no delivery deadline", GOOD + "[control]\ndelivery_timeout_s = 0\n", r"^smtpedge: {f}: \[control\] delivery_timeout_s: 0 is out of range \(1..540\)"),
    ("no SPF checks", GOOD + "[control]\nmax_spf_checks = 0\n", r"^smtpedge: {f}: \[control\] max_spf_checks: 0 is out of range \(1..1000000\)"),
    ("SPF checks not a number", GOOD + "[control]\nmax_spf_checks = many\n", r"^smtpedge: {f}: \[control\] max_spf_checks: "),
    ("fault too high", GOOD + "[faults]\nrx_drop_pct = 90\n", r"^smtpedge: {f}: \[faults\] rx_drop_pct: 90 is out of range \(0..50\)"),
    ("body budget", add("dataplane", "body_budget_mb = 1"), r"^smtpedge: {f}: \[dataplane\] body_budget_mb: 1 is out of range"),
    ("unknown key", add("edge", "greeting = hello"), r"^smtpedge: {f}: \[edge\] greeting: unknown key"),
    ("key given twice", add("edge", "hostname = mx2.example.net"), r"^smtpedge: {f}: \[edge\] hostname: given twice"),
    ("section given twice", GOOD + "[dns]\ntimeout_ms = 100\n", r"^smtpedge: {f}: \[dns\]: section given twice"),
    ("bad hostname", replace("hostname", "hostname = mx_.-bad..net"), r"^smtpedge: {f}: \[edge\] hostname: \"mx_.-bad..net\" is not a domain name"),
    ("hostname with space", replace("hostname", "hostname = mx example"), r"^smtpedge: {f}: \[edge\] hostname: .* is not a domain name"),
    ("bad address6", replace("address6", "address6 = 2001:db8::zz"), r"^smtpedge: {f}: \[edge\] address6: \"2001:db8::zz\" is not an IPv6 address"),
    ("multicast address6", replace("address6", "address6 = ff02::1"), r"^smtpedge: {f}: \[edge\] address6: \"ff02::1\" must be a global unicast address"),
    ("link-local address6", replace("address6", "address6 = fe80::1"), r"^smtpedge: {f}: \[edge\] address6: .* must be a global unicast address"),
    ("bad address4", replace("address4", "address4 = 198.51.100.300"), r"^smtpedge: {f}: \[edge\] address4: \"198.51.100.300\" is not an IPv4 address"),
    ("loopback address4", replace("address4", "address4 = 127.0.0.1"), r"^smtpedge: {f}: \[edge\] address4: .* must be a unicast address"),
    ("port 0", replace("smtp_ports", "smtp_ports = 0"), r"^smtpedge: {f}: \[edge\] smtp_ports: 0 is out of range \(1..65535\)"),
    ("port too big", replace("smtp_ports", "smtp_ports = 25 70000"), r"^smtpedge: {f}: \[edge\] smtp_ports: 70000 is out of range"),
    ("port not a number", replace("smtp_ports", "smtp_ports = smtp"), r"^smtpedge: {f}: \[edge\] smtp_ports: \"smtp\" is not a number"),
    ("port twice", replace("smtp_ports", "smtp_ports = 25 587 25"), r"^smtpedge: {f}: \[edge\] smtp_ports: port 25 is listed twice"),
    ("negative port", replace("smtp_ports", "smtp_ports = -25"), r"^smtpedge: {f}: \[edge\] smtp_ports: \"-25\" is not a number"),
    ("bad dns server", replace("server", "server = dns.example@53"), r"^smtpedge: {f}: \[dns\] server: \"dns.example@53\" is not an IP address"),
    ("bad dns port", replace("server", "server = 127.0.0.1@99999"), r"^smtpedge: {f}: \[dns\] server: 99999 is out of range"),
    ("dns timeout", add("dns", "timeout_ms = 5"), r"^smtpedge: {f}: \[dns\] timeout_ms: 5 is out of range \(100..60000\)"),
    ("trust anchor missing", add("dns", "trust_anchor = /nonexistent/root.key"), r"^smtpedge: {f}: \[dns\] trust_anchor: \"/nonexistent/root.key\" cannot be read"),
    ("bad domain", replace("accept", "accept = example.net exa$mple.org"), r"^smtpedge: {f}: \[domains\] accept: \"exa\$mple.org\" is not a domain name"),
    ("no accept", drop("accept"), r"^smtpedge: {f}: \[domains\] accept: missing"),
    ("relative spool", replace("spool", "spool = spool/dir"), r"^smtpedge: {f}: \[relay\] spool: \"spool/dir\" must be an absolute path"),
    ("target and spool", add("relay", "target = [::1]:10025"), r"^smtpedge: {f}: \[relay\] spool: give target or spool, not both"),
    ("neither target nor spool", drop("spool"), r"^smtpedge: {f}: \[relay\] target: missing"),
    ("bad target", replace("spool", "target = ::1:10025"), r"^smtpedge: {f}: \[relay\] target: \"::1:10025\": write an IPv6 address as \[addr\]:port"),
    ("target without port", replace("spool", "target = [::1]"), r"^smtpedge: {f}: \[relay\] target: .*is not a number|^smtpedge: {f}: \[relay\] target: .* is not host:port"),
    ("bad protocol", add("relay", "protocol = uucp"), r"^smtpedge: {f}: \[relay\] protocol: \"uucp\" is neither smtp nor lmtp"),
    ("no relay connections", replace("spool", "target = [::1]:10025\nconnections = 0"), r"^smtpedge: {f}: \[relay\] connections: 0 is out of range \(1..1024\)"),
    ("too many relay connections", replace("spool", "target = [::1]:10025\nconnections = 1025"), r"^smtpedge: {f}: \[relay\] connections: 1025 is out of range \(1..1024\)"),
    ("relay connections not a number", replace("spool", "target = [::1]:10025\nconnections = lots"), r"^smtpedge: {f}: \[relay\] connections: "),
    ("too few mbufs", replace("mbufs", "mbufs = 10"), r"^smtpedge: {f}: \[dataplane\] mbufs: 10 is out of range \(1023..4194303\)"),
    ("flows beyond memory_mb", add("dataplane", "flows = 1000000"),
     r"^smtpedge: {f}: \[dataplane\] flows: 1000000 flows and 8192 session buffers need \d+ MiB per worker, memory_mb is 512 \(it holds \d+ flows\)$"),
    ("flows beyond a smaller memory_mb", add("dataplane", "flows = 20000\nmemory_mb = 64"),
     r"^smtpedge: {f}: \[dataplane\] flows: 20000 flows and 1250 session buffers need \d+ MiB per worker, memory_mb is 64"),
    ("buffers beyond memory_mb", add("dataplane", "flows = 4096\nsession_buffers = 4096\nmemory_mb = 64"),
     r"^smtpedge: {f}: \[dataplane\] flows: 4096 flows and 4096 session buffers need \d+ MiB per worker, memory_mb is 64"),
    ("more buffers than flows", add("dataplane", "flows = 100\nsession_buffers = 101"),
     r"^smtpedge: {f}: \[dataplane\] session_buffers: 101 is more than flows \(100\)$"),
    ("memory_mb too small", add("dataplane", "memory_mb = 16"), r"^smtpedge: {f}: \[dataplane\] memory_mb: 16 is out of range \(32..1048576\)"),
    ("mtu too small", add("dataplane", "mtu = 576"), r"^smtpedge: {f}: \[dataplane\] mtu: 576 is out of range \(1280..9000\)"),
    ("bad log level", replace("level", "level = loud"), r"^smtpedge: {f}: \[log\] level: \"loud\" is not one of"),
    ("no hostname", drop("hostname"), r"^smtpedge: {f}: \[edge\] hostname: missing"),
    ("no address", drop("address6").replace("address4 = 198.51.100.1\n", ""), r"^smtpedge: {f}: \[edge\] address6: missing"),
]

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def run(args):
    return subprocess.run([SMTPEDGE] + args, capture_output=True, text=True, timeout=30)


with tempfile.TemporaryDirectory() as d:
    for name, text, pattern in CASES:
        path = os.path.join(d, "case.conf")
        if os.path.exists(path):
            os.unlink(path)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        r = run(["--", "--config", path, "--check"])
        lines = r.stderr.splitlines()
        want = pattern.format(f=re.escape(path))
        check(name, r.returncode == 2, f"exit {r.returncode}, want 2")
        check(name, len(lines) == 1, f"{len(lines)} lines on stderr: {r.stderr!r}")
        check(name, bool(lines) and re.search(want, lines[0]) is not None,
              f"stderr {r.stderr!r} does not match {want!r}")
        check(name, r.stdout == "", f"stdout {r.stdout!r}")

    # The good file and the example files in the repo pass --check.
    good = os.path.join(d, "good.conf")
    with open(good, "w") as f:
        f.write(GOOD)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(good + ".tls", "w") as f:
        f.write(tls("cert = {d}/ec.crt", "key = {d}/ec.key", "rsa_cert = {d}/rsa.crt",
                    "rsa_key = {d}/rsa.key", "chain = {d}/ec.crt", "min_version = 1.3",
                    "max_sessions = 10", "ticket_rotate_s = 600", "refuse_before_handshake = yes"))
    # An idle timeout below the shortest one's default takes it as the
    # shortest; both keys given within each other's bounds are good.
    with open(good + ".idle", "w") as f:
        f.write(GOOD + "[smtp]\nidle_timeout_s = 10\n")
    with open(good + ".pressure", "w") as f:
        f.write(GOOD + "[smtp]\nidle_timeout_s = 60\nidle_pressure_pct = 50\nidle_timeout_min_s = 60\n")
    with open(good + ".spf", "w") as f:
        f.write(GOOD + "[control]\nmax_spf_checks = 1\n")
    with open(good + ".relay", "w") as f:
        f.write(replace("spool", "target = [::1]:10025\nconnections = 1024"))
    for path in (good, good + ".tls", good + ".idle", good + ".pressure", good + ".spf",
                 good + ".relay",
                 os.path.join(here, "../../conf/smtpedge.conf"),
                 os.path.join(here, "../../conf/lab.conf")):
        r = run(["--", "--config", path, "--check"])
        check(f"good {path}", r.returncode == 0 and r.stdout.startswith("config ok"),
              f"exit {r.returncode} {r.stderr!r}")

    # flows and session_buffers follow memory_mb when not given: twice the
    # memory holds more than twice the flows (the worker's fixed part is
    # paid once), and the buffers are a sixteenth of the flows up to 8192.
    def sizes(extra):
        with open(good + ".mem", "w") as f:
            f.write(add("dataplane", extra) if extra else GOOD)
        r = run(["--", "--config", good + ".mem", "--check"])
        m = re.search(r"flows (\d+), session_buffers (\d+), memory_mb (\d+)", r.stdout)
        return tuple(int(x) for x in m.groups()) if m else None
    small, large, given = sizes("memory_mb = 64"), sizes(""), sizes("flows = 5000")
    check("flows from memory_mb", small and large and large[2] == 512 and
          large[0] > 8 * small[0] and small[1] == small[0] // 16 and large[1] == 8192,
          f"{small} {large}")
    check("flows given, buffers from it", given == (5000, 312, 512), f"{given}")

    # Our options.
    r = run(["--version"])
    check("--version", r.returncode == 0 and re.match(r"smtpedge \d+\.\d+", r.stdout), r.stdout)
    r = run(["--help"])
    check("--help", r.returncode == 0 and "--config FILE" in r.stdout, r.stdout)
    r = run(["--", "--bogus"])
    check("unknown option", r.returncode == 2 and r.stderr.strip() ==
          'smtpedge: unknown option "--bogus" (try --help)', r.stderr)
    r = run(["--"])
    check("no --config", r.returncode == 2 and "--config FILE is required" in r.stderr, r.stderr)
    r = run(["--", "--config", good, "extra"])
    check("stray argument", r.returncode == 2 and 'unexpected argument "extra"' in r.stderr, r.stderr)
    r = run(["--config", good])
    check("no EAL options", r.returncode == 2 and 'no EAL options' in r.stderr, r.stderr)

subprocess.run(["rm", "-rf", TLS], check=False)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
