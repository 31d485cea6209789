#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/bench/tls_side_by_side.py — smtpedge and Postfix side by side with
STARTTLS, for scripts/bench.sh: the accept path over TLS.

Both serve the same ECDSA P-256 certificate; Postfix with
smtpd_tls_security_level = may (smtpd alone, no postscreen), smtpedge with
[tls] cert/key. Every session comes from the lab's forward-confirmed peer
and is the same dialogue: EHLO, STARTTLS, a full TLS 1.3 handshake (X25519,
no resumption: each session is a new client), EHLO, MAIL, RCPT, DATA with 2
KB, QUIT. Each server keeps the message: smtpedge in its spool (on
/dev/shm), Postfix in its hold queue (check_client_access static:HOLD, so
nothing is delivered afterwards; the queue is under the lab's run
directory, a tmpfs, as smtpedge's spool is). Both resolve the peer through
the same unbound (side_by_side.py's second instance on 127.0.0.1:53).

The client is this script: one thread per concurrent session, each running
Python's smtplib with starttls() (OpenSSL underneath) session after
session. Its CPU is not counted; neither is the DNS server's.

CPU: Postfix's as side_by_side.py counts it (utime+stime of master and
every process below it, those that exited included). smtpedge's worker
spins, so its CPU time is the run's length whatever the load; the busy
part of it is estimated as the worker threads' utime+stime times the share
of the run's wall time that busy_cycles (TSC) covers, plus every other
thread's utime+stime. busy_cycles alone (side_by_side.py's measure) is
also reported (_tsc): it counts wall time, so time the kernel gives other
processes in the middle of a poll that found work is counted as smtpedge's
work, and a handshake makes such polls long. On a loaded machine the _tsc
figure is the larger one; on an idle one the two agree.

Prints one JSON object on stdout.
"""
import argparse
import json
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side as sbs  # noqa: E402  (the lab, DNS and CPU helpers)

E = os.environ
LAB_DIR = E["LAB_DIR"]
PTR6 = E["LAB_PEER6_PTR"]
BODY = ("Subject: bench over TLS\r\n\r\n" + ("x" * 76 + "\r\n") * 26).encode()  # ~2 KB


def log(msg):
    print(f"tls_side_by_side: {msg}", file=sys.stderr, flush=True)


def sessions(dest, conc, total):
    """total sessions from the peer namespace (this script again, as the
    client); returns (seconds, failures)."""
    r = sbs.in_peer("/usr/bin/python3", os.path.abspath(__file__), "--client", dest,
                    str(conc), str(total), check=False, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"client: {r.returncode} {r.stderr[-800:]}")
    res = json.loads(r.stdout.splitlines()[-1])
    if res["failed"]:
        log(f"{res['failed']} failed sessions, first: {res['first_error']}")
    if res["failed"] > total // 100:
        raise RuntimeError(f"{res['failed']} of {total} sessions to {dest} failed")
    return res["wall_s"], res["failed"]


def client(dest, conc, total):
    """The client, in the peer namespace: total sessions over conc threads."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET   # every session a full handshake
    left = [total]
    failed = []
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                with smtplib.SMTP(dest, 25, local_hostname="client.lab.example",
                                  source_address=(PTR6, 0), timeout=30) as s:
                    s.ehlo()
                    s.starttls(context=ctx)
                    s.ehlo()
                    refused = s.sendmail("alice@example.org", ["bob@example.net"], BODY)
                    if refused:
                        raise RuntimeError(f"refused {refused}")
            except Exception as e:  # counted, and the run goes on
                with lock:
                    failed.append(repr(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"wall_s": time.monotonic() - t0, "failed": len(failed),
                      "first_error": failed[0] if failed else None}))


def point(name, conc, n, secs, failed, cpu_s, **extra):
    d = {"server": name, "concurrency": conc, "sessions": n, "failed": failed,
         "wall_s": round(secs, 3), "sessions_per_s": round(n / secs, 1),
         "cpu_s": round(cpu_s, 4), "cpu_s_per_1k_sessions": round(cpu_s * 1000 / n, 4)}
    d.update(extra)
    log(f"{name:8} x{conc:<3} {n} TLS sessions {secs:6.2f}s {n / secs:7.0f}/s "
        f"cpu {cpu_s:.3f}s ({cpu_s * 1000 / n:.3f} s/1k) failed {failed}")
    return d


# ---- smtpedge ---------------------------------------------------------------

def worker_ticks(pid):
    """utime+stime of the worker threads (they spin: this is their share of
    a core while the run lasts, time they were preempted excluded)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if not open(f"/proc/{pid}/task/{tid}/comm").read().startswith("rte-worker"):
                continue
            f = sbs.stat_fields(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total


SPOOL = "/dev/shm/smtpedge-bench-tls-spool"


def run_smtpedge(args, concs):
    prefix = "smtpedge-benchtls" + E.get("LAB_ID", "")
    conf = f"{LAB_DIR}/bench-tls-edge.conf"
    with open(conf, "w") as f:
        f.write(f"""; written by tests/bench/tls_side_by_side.py
[edge]
hostname = mx.bench.example
address6 = {E["LAB_EDGE6"]}
smtp_ports = 25
[dns]
server = 127.0.0.1@53
[domains]
accept = example.net example.org
[relay]
spool = {SPOOL}
[dataplane]
flows = 4096
body_budget_mb = 64
[tls]
cert = {args.cert}
key = {args.key}
[log]
file = {LAB_DIR}/bench-tls-edge-txlog.log
level = notice
""")
    proc = sbs.start_edge(args, conf, prefix, f"{LAB_DIR}/bench-tls-edge.log")
    points = []
    try:
        sessions(sbs.EDGE6, 1, 5)                 # ND, the DNS cache
        for c in concs:
            s0, t0 = sbs.edge_stats(args.ctl, prefix), sbs.thread_ticks(proc.pid, "rte-worker")
            w0, m0 = worker_ticks(proc.pid), time.monotonic()
            secs, failed = sessions(sbs.EDGE6, c, args.msgs)
            s1, t1 = sbs.edge_stats(args.ctl, prefix), sbs.thread_ticks(proc.pid, "rte-worker")
            w1, m1 = worker_ticks(proc.pid), time.monotonic()
            busy = (s1["busy_cycles"] - s0["busy_cycles"]) / args.tsc_hz
            busy_cpu = (w1 - w0) / sbs.TICK * min(1.0, busy / (m1 - m0))
            ctl = (t1 - t0) / sbs.TICK
            full = s1["tls_handshakes_full"] - s0["tls_handshakes_full"]
            points.append(point("smtpedge", c, args.msgs, secs, failed, busy_cpu + ctl,
                                cpu_tsc_s=round(busy + ctl, 4),
                                cpu_s_per_1k_sessions_tsc=round((busy + ctl) * 1000 / args.msgs, 4),
                                worker_busy_s=round(busy, 4), worker_busy_cpu_s=round(busy_cpu, 4),
                                worker_cpu_s=round((w1 - w0) / sbs.TICK, 3),
                                control_cpu_s=round(ctl, 3),
                                tls_handshakes_full=full,
                                tls_handshake_cpu_us=s1["tls_handshake_cpu_us"] -
                                s0["tls_handshake_cpu_us"]))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(SPOOL, ignore_errors=True)
    return points


# ---- Postfix -----------------------------------------------------------------

MASTER_CF = sbs.postfix_master_cf("""\
smtp      inet  n       -       n       -       -       smtpd
""", tls=True)


def postfix_dir(args):
    d = f"{LAB_DIR}/postfix-tls"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(f"{d}/queue")
    os.makedirs(f"{d}/data")
    for f in ("postfix-files", "dynamicmaps.cf"):
        shutil.copy(f"/etc/postfix/{f}", d)
    for f in ("postfix-files.d", "dynamicmaps.cf.d"):
        if os.path.isdir(f"/etc/postfix/{f}"):
            shutil.copytree(f"/etc/postfix/{f}", f"{d}/{f}")
    with open(f"{d}/main.cf", "w") as f:
        f.write(f"""# written by tests/bench/tls_side_by_side.py
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = {d}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.bench.example
mydestination =
relay_domains = example.net
inet_interfaces = {sbs.POSTFIX6}
inet_protocols = ipv6
mynetworks = [::1]/128
smtpd_client_restrictions = reject_unknown_reverse_client_hostname
smtpd_recipient_restrictions = reject_unauth_destination
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_tls_security_level = may
smtpd_tls_chain_files = {args.key}, {args.cert}
maillog_file = /dev/stdout
smtpd_banner = $myhostname ESMTP
biff = no
smtputf8_enable = no
""")
    with open(f"{d}/master.cf", "w") as f:
        f.write(MASTER_CF)
    with open(f"{LAB_DIR}/resolv.conf", "w") as f:
        f.write("nameserver 127.0.0.1\n")
    shutil.chown(f"{d}/data", "postfix", "postfix")
    return d


def run_postfix(args, concs):
    d = postfix_dir(args)
    points = []
    proc = None
    held0 = 0
    sbs.in_edge("sysctl", "-qw", f"net.ipv6.conf.{sbs.EDGE_IF}.disable_ipv6=0")
    try:
        sbs.in_edge("ip", "-6", "addr", "replace", f"{sbs.POSTFIX6}/64", "dev", sbs.EDGE_IF, "nodad")
        sbs.in_edge("postfix", "-c", d, "check", check=False)      # makes the queue
        sbs.in_edge("postfix", "-c", d, "set-permissions", check=False)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", sbs.EDGE_NS, "unshare", "-m", "--propagation", "private",
             "sh", "-c", f"mount --bind {LAB_DIR}/resolv.conf /etc/resolv.conf && "
                         f"exec /usr/lib/postfix/sbin/master -c {d} -d"],
            stdout=open(f"{LAB_DIR}/bench-tls-postfix.log", "w"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if proc.poll() is not None:
                raise RuntimeError(f"postfix master exited: see {LAB_DIR}/bench-tls-postfix.log")
            r = sbs.in_edge("ss", "-ltnH", "( sport = :25 )", check=False)
            if sbs.POSTFIX6 in r.stdout or "[" in r.stdout:
                break
            time.sleep(0.1)
        sessions(sbs.POSTFIX6, 1, 5)              # DNS cache, tlsmgr, processes up
        for c in concs:
            t0 = sbs.tree_ticks(proc.pid)
            secs, failed = sessions(sbs.POSTFIX6, c, args.msgs)
            t1 = sbs.tree_ticks(proc.pid)
            points.append(point("postfix", c, args.msgs, secs, failed, (t1 - t0) / sbs.TICK))
        held0 = sum(len(fs) for _, _, fs in os.walk(f"{d}/queue/hold"))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sbs.in_edge("ip", "-6", "addr", "del", f"{sbs.POSTFIX6}/64", "dev", sbs.EDGE_IF, check=False)
        sbs.in_edge("sysctl", "-qw", f"net.ipv6.conf.{sbs.EDGE_IF}.disable_ipv6=1", check=False)
    tls_lines = open(f"{LAB_DIR}/bench-tls-postfix.log").read().count("TLS connection established")
    return points, held0, tls_lines


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpedge", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--tsc-hz", type=float, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--conc", default="1,10")
    ap.add_argument("--ratio-conc", type=int, default=10)
    ap.add_argument("--msgs", type=int, default=600)
    args = ap.parse_args()
    args.cert, args.key = os.path.abspath(args.cert), os.path.abspath(args.key)  # [tls] wants them
    concs = [int(c) for c in args.conc.split(",")]
    t0 = time.monotonic()
    sbs.dns53_up()
    try:
        edge = run_smtpedge(args, concs)
        log(f"smtpedge done at {time.monotonic() - t0:.1f}s")
        pfx, held, tls_lines = run_postfix(args, concs)
        log(f"postfix done at {time.monotonic() - t0:.1f}s ({held} messages held)")
    finally:
        sbs.dns53_down()
    out = {"smtpedge": edge, "postfix": pfx, "postfix_front": "smtpd (tls may)",
           "postfix_messages_held": held, "sessions_per_point": args.msgs,
           "ratio_concurrency": args.ratio_conc,
           "client": "python smtplib starttls, one thread per concurrent session"}
    e = next(p for p in edge if p["concurrency"] == args.ratio_conc)
    p = next(p for p in pfx if p["concurrency"] == args.ratio_conc)
    out["tls_smtpedge_sessions_per_s"] = e["sessions_per_s"]
    out["tls_postfix_sessions_per_s"] = p["sessions_per_s"]
    out["tls_smtpedge_cpu_s_per_1k_sessions"] = e["cpu_s_per_1k_sessions"]
    out["tls_postfix_cpu_s_per_1k_sessions"] = p["cpu_s_per_1k_sessions"]
    out["tls_cpu_ratio_vs_postfix"] = round(e["cpu_s_per_1k_sessions"] /
                                            p["cpu_s_per_1k_sessions"], 4) \
        if p["cpu_s_per_1k_sessions"] else None
    out["tls_smtpedge_cpu_s_per_1k_sessions_tsc"] = e["cpu_s_per_1k_sessions_tsc"]
    out["tls_cpu_ratio_vs_postfix_tsc"] = round(e["cpu_s_per_1k_sessions_tsc"] /
                                                p["cpu_s_per_1k_sessions"], 4) \
        if p["cpu_s_per_1k_sessions"] else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
