#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/bench/accept_side_by_side.py — smtpedge and Postfix side by side on
the accept path, for scripts/bench.sh.

Both run in the lab's edge namespace and are driven, one after the other,
by Postfix's smtp-source from the peer namespace, from the lab's
forward-confirmed peer, with the same message: a 2 KB file signed with the
lab's DKIM key for dkim.example (smtp-source -F), MAIL FROM
bench@example.org (SPF pass), one recipient in example.net. Every session
is EHLO, MAIL, RCPT, DATA, the message, QUIT, and must get its 250.

Each server keeps the message on the same disk filesystem (the directory
given by --dir, under build-bench/): smtpedge in its spool (fsync per file,
renamed into new/, the directory fsync'd per group), Postfix in its hold
queue (smtpd alone, smtpd_client_restrictions =
reject_unknown_reverse_client_hostname as smtpedge's PTR rule,
smtpd_data_restrictions = check_client_access static:HOLD, so nothing is
delivered afterwards; cleanup fsyncs each queue file). Both resolve through
the same unbound (side_by_side.py's second instance on 127.0.0.1:53).
smtpedge checks SPF and DKIM as well; Postfix checks neither (it has no
SPF or DKIM of its own), which is in its favour.

smtpedge runs with the control plane's limits raised as a large MX would
raise them ([control] threads = 16, max_spf_checks = 100000).

CPU, neither the client's nor the DNS server's:
  Postfix  = utime+stime+cutime+cstime of master and every process below
             it (side_by_side.py's tree_ticks).
  smtpedge = every thread's utime+stime but the worker's, plus the worker
             thread's utime+stime weighed by the share of the run's wall
             time that busy_cycles covers (tls_side_by_side.py's measure: a
             poll-mode worker spins whatever the load). busy_cycles alone
             is also reported (_tsc).

Prints one JSON object on stdout.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side as sbs  # noqa: E402  (the lab, DNS and CPU helpers)
import tls_side_by_side as tsbs  # noqa: E402  (the worker's thread time)

E = os.environ
LAB_DIR = E["LAB_DIR"]
PTR6 = E["LAB_PEER6_PTR"]
THREADS, MAX_SPF = 16, 100000


def log(msg):
    print(f"accept_side_by_side: {msg}", file=sys.stderr, flush=True)


def source(dest, conc, msgs, msg_file):
    """smtp-source from the peer namespace; returns (seconds, its stderr)."""
    t0 = time.monotonic()
    r = sbs.in_peer("smtp-source", "-s", str(conc), "-m", str(msgs), "-M", "bench.example",
                    "-f", "bench@example.org", "-t", "postmaster@example.net",
                    "-F", msg_file, f"[{dest}]:25", check=False, timeout=900)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source: {r.returncode} {r.stderr[-500:]}")
    return dt, r.stderr


def point(name, conc, n, secs, accepted, cpu_s, **extra):
    d = {"server": name, "concurrency": conc, "sessions": n, "accepted": accepted,
         "wall_s": round(secs, 3), "sessions_per_s": round(accepted / secs, 1),
         "cpu_s": round(cpu_s, 4),
         "cpu_s_per_1k": round(cpu_s * 1000 / accepted, 4) if accepted else None}
    d.update(extra)
    log(f"{name:8} -s {conc:<3} {n} sessions {accepted} accepted {secs:6.2f}s "
        f"{accepted / secs:7.0f}/s cpu {cpu_s:.3f}s")
    return d


def count_files(d):
    return sum(len(fs) for _, _, fs in os.walk(d))


# ---- smtpedge ---------------------------------------------------------------

def run_smtpedge(args, concs):
    prefix = "smtpedge-benchacc" + E.get("LAB_ID", "")
    spool = os.path.join(args.dir, "edge-spool")
    shutil.rmtree(spool, ignore_errors=True)
    os.makedirs(spool)
    conf = f"{LAB_DIR}/bench-accept-edge.conf"
    with open(conf, "w") as f:
        f.write(f"""; written by tests/bench/accept_side_by_side.py
[edge]
hostname = mx.bench.example
address6 = {E["LAB_EDGE6"]}
smtp_ports = 25
[dns]
server = 127.0.0.1@53
[domains]
accept = example.net example.org
[relay]
spool = {spool}
[control]
threads = {THREADS}
max_spf_checks = {MAX_SPF}
[dataplane]
flows = 4096
body_budget_mb = 64
[log]
file = {LAB_DIR}/bench-accept-edge-txlog.log
level = notice
""")
    proc = sbs.start_edge(args, conf, prefix, f"{LAB_DIR}/bench-accept-edge.log")
    points = []
    try:
        source(sbs.EDGE6, 1, 5, args.msg)         # ND, the DNS caches
        for c in concs:
            s0, t0 = sbs.edge_stats(args.ctl, prefix), sbs.thread_ticks(proc.pid, "rte-worker")
            w0, m0 = tsbs.worker_ticks(proc.pid), time.monotonic()
            secs, err = source(sbs.EDGE6, c, args.msgs, args.msg)
            s1, t1 = sbs.edge_stats(args.ctl, prefix), sbs.thread_ticks(proc.pid, "rte-worker")
            w1, m1 = tsbs.worker_ticks(proc.pid), time.monotonic()
            busy = (s1["busy_cycles"] - s0["busy_cycles"]) / args.tsc_hz
            busy_cpu = (w1 - w0) / sbs.TICK * min(1.0, busy / (m1 - m0))
            ctl = (t1 - t0) / sbs.TICK
            written = s1["spool_written"] - s0["spool_written"]
            points.append(point("smtpedge", c, args.msgs, secs, written, busy_cpu + ctl,
                                cpu_tsc_s=round(busy + ctl, 4),
                                cpu_s_per_1k_tsc=round((busy + ctl) * 1000 / written, 4)
                                if written else None,
                                worker_busy_s=round(busy, 4), worker_busy_cpu_s=round(busy_cpu, 4),
                                worker_cpu_s=round((w1 - w0) / sbs.TICK, 3),
                                control_cpu_s=round(ctl, 3),
                                spool_groups=s1.get("spool_groups", 0) - s0.get("spool_groups", 0),
                                smtp_source_errors=err.count("error")))
        txlog = open(f"{LAB_DIR}/bench-accept-edge-txlog.log").read()
        dkim_pass = txlog.count("dkim=pass")
        spf_pass = txlog.count("spf=pass")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(spool, ignore_errors=True)
    return points, {"dkim_pass": dkim_pass, "spf_pass": spf_pass}


# ---- Postfix -----------------------------------------------------------------

MASTER_CF = sbs.postfix_master_cf("""\
smtp      inet  n       -       n       -       -       smtpd
""")


def postfix_dir(args):
    d = f"{LAB_DIR}/postfix-accept"
    queue = os.path.join(args.dir, "postfix-queue")
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(queue, ignore_errors=True)
    os.makedirs(queue)
    os.makedirs(f"{d}/data")
    for f in ("postfix-files", "dynamicmaps.cf"):
        shutil.copy(f"/etc/postfix/{f}", d)
    for f in ("postfix-files.d", "dynamicmaps.cf.d"):
        if os.path.isdir(f"/etc/postfix/{f}"):
            shutil.copytree(f"/etc/postfix/{f}", f"{d}/{f}")
    with open(f"{d}/main.cf", "w") as f:
        f.write(f"""# written by tests/bench/accept_side_by_side.py
compatibility_level = 3.6
queue_directory = {queue}
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
    return d, queue


def run_postfix(args, concs):
    d, queue = postfix_dir(args)
    points = []
    proc = None
    sbs.in_edge("sysctl", "-qw", f"net.ipv6.conf.{sbs.EDGE_IF}.disable_ipv6=0")
    try:
        sbs.in_edge("ip", "-6", "addr", "replace", f"{sbs.POSTFIX6}/64", "dev", sbs.EDGE_IF, "nodad")
        sbs.in_peer("ip", "-6", "route", "replace", f"{sbs.POSTFIX6}/128", "dev", sbs.PEER_IF,
                    "src", PTR6)
        sbs.in_edge("postfix", "-c", d, "check", check=False)      # makes the queue
        sbs.in_edge("postfix", "-c", d, "set-permissions", check=False)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", sbs.EDGE_NS, "unshare", "-m", "--propagation", "private",
             "sh", "-c", f"mount --bind {LAB_DIR}/resolv.conf /etc/resolv.conf && "
                         f"exec /usr/lib/postfix/sbin/master -c {d} -d"],
            stdout=open(f"{LAB_DIR}/bench-accept-postfix.log", "w"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if proc.poll() is not None:
                raise RuntimeError(f"postfix master exited: see {LAB_DIR}/bench-accept-postfix.log")
            r = sbs.in_edge("ss", "-ltnH", "( sport = :25 )", check=False)
            if sbs.POSTFIX6 in r.stdout or "[" in r.stdout:
                break
            time.sleep(0.1)
        source(sbs.POSTFIX6, 1, 5, args.msg)      # DNS cache, processes up
        time.sleep(0.5)
        for c in concs:
            h0 = count_files(f"{queue}/hold")
            t0 = sbs.tree_ticks(proc.pid)
            secs, err = source(sbs.POSTFIX6, c, args.msgs, args.msg)
            # cleanup may still be writing the last messages: wait for them
            # (bounded), so the CPU they cost is counted.
            for _ in range(100):
                if count_files(f"{queue}/hold") - h0 >= args.msgs:
                    break
                time.sleep(0.05)
            t1 = sbs.tree_ticks(proc.pid)
            held = count_files(f"{queue}/hold") - h0
            points.append(point("postfix", c, args.msgs, secs, held, (t1 - t0) / sbs.TICK,
                                smtp_source_errors=err.count("error")))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sbs.in_peer("ip", "-6", "route", "del", f"{sbs.POSTFIX6}/128", check=False)
        sbs.in_edge("ip", "-6", "addr", "del", f"{sbs.POSTFIX6}/64", "dev", sbs.EDGE_IF, check=False)
        sbs.in_edge("sysctl", "-qw", f"net.ipv6.conf.{sbs.EDGE_IF}.disable_ipv6=1", check=False)
        shutil.rmtree(queue, ignore_errors=True)
    return points


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpedge", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--tsc-hz", type=float, required=True)
    ap.add_argument("--msg", required=True, help="the message (LF lines), for smtp-source -F")
    ap.add_argument("--dir", required=True, help="a directory on a disk filesystem")
    ap.add_argument("--conc", default="10,50")
    ap.add_argument("--ratio-conc", type=int, default=50)
    ap.add_argument("--msgs", type=int, default=2000)
    args = ap.parse_args()
    args.msg, args.dir = os.path.abspath(args.msg), os.path.abspath(args.dir)
    concs = [int(c) for c in args.conc.split(",")]
    fs = sbs.sh("stat", "-f", "-c", "%T", args.dir).stdout.strip()
    t0 = time.monotonic()
    sbs.dns53_up()
    try:
        edge, checks = run_smtpedge(args, concs)
        log(f"smtpedge done at {time.monotonic() - t0:.1f}s")
        pfx = run_postfix(args, concs)
        log(f"postfix done at {time.monotonic() - t0:.1f}s")
    finally:
        sbs.dns53_down()
    out = {"smtpedge": edge, "postfix": pfx, "postfix_front": "smtpd (hold queue)",
           "filesystem": fs, "sessions_per_point": args.msgs, "ratio_concurrency": args.ratio_conc,
           "smtpedge_control_threads": THREADS, "smtpedge_max_spf_checks": MAX_SPF,
           "smtpedge_txlog": checks,
           "client": "smtp-source -F (a DKIM-signed 2 KB message), from the PTR peer"}
    e = next(p for p in edge if p["concurrency"] == args.ratio_conc)
    p = next(p for p in pfx if p["concurrency"] == args.ratio_conc)
    out["smtpedge_accept_sessions_per_s_lab"] = e["sessions_per_s"]
    out["postfix_accept_sessions_per_s"] = p["sessions_per_s"]
    out["accept_cpu_s_per_1k"] = {"smtpedge": e["cpu_s_per_1k"], "postfix": p["cpu_s_per_1k"],
                                  "smtpedge_tsc": e["cpu_s_per_1k_tsc"]}
    out["accept_cpu_ratio_vs_postfix"] = round(e["cpu_s_per_1k"] / p["cpu_s_per_1k"], 4) \
        if e["cpu_s_per_1k"] and p["cpu_s_per_1k"] else None
    out["accept_sessions_ratio_vs_postfix"] = round(e["sessions_per_s"] / p["sessions_per_s"], 2) \
        if p["sessions_per_s"] else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
