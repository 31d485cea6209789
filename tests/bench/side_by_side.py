#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/bench/side_by_side.py — smtpedge and Postfix on the same machine,
the same load and the same DNS, for scripts/bench.sh.

Both run in the lab's edge namespace and are driven, one after the other,
by Postfix's smtp-source from the peer namespace, always from the lab's
no-PTR peer, so every session is refused for its missing reverse DNS:
EHLO, MAIL, RCPT -> 550, RSET, QUIT (smtp-source -A carries on past the
refusal). Both resolve through the same unbound (a second instance of the
lab's zones on 127.0.0.1:53, because the libc resolver Postfix uses cannot
be given a port); smtpedge is told to refuse at RCPT (stage = rcpt), where
Postfix's smtpd_delay_reject refuses, so the dialogues are identical.

Postfix: postscreen in front of smtpd (smtpd_client_restrictions =
reject_unknown_reverse_client_hostname, unknown_client_reject_code = 550),
a private instance with its own config and queue directories under the
lab's run directory, on 2001:db8:1::2 on the edge's kernel interface (which
is given IPv6 only while Postfix runs; smtpedge is not running then).
postscreen's first test of the one peer (the greeting wait) is done in a
warm-up before anything is measured, as it would be for a returning sender.

CPU per run:
  smtpedge = the worker's busy_cycles / TSC Hz (a poll-mode worker spins at
             100% whatever the load; busy cycles are the polls that found
             work) + every other thread's utime+stime (/proc/PID/task/*).
  Postfix  = utime+stime+cutime+cstime of master and of every process below
             it, so processes that exit during the run (smtpd after
             max_use sessions) are counted through master's cutime/cstime.
Neither counts the DNS server or the client.

Prints one JSON object on stdout.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

E = os.environ
LAB_DIR = E["LAB_DIR"]
EDGE_NS, PEER_NS = E["LAB_EDGE_NS"], E["LAB_PEER_NS"]
EDGE_IF, PEER_IF = E["LAB_EDGE_IF"], E["LAB_PEER_IF"]
EDGE6, NOPTR6, PTR6 = E["LAB_EDGE6"], E["LAB_PEER6_NOPTR"], E["LAB_PEER6_PTR"]
POSTFIX6 = "2001:db8:1::2"         # Postfix's address in the edge namespace
DNS53 = f"{LAB_DIR}/unbound53"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"side_by_side: {msg}", file=sys.stderr, flush=True)


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def in_edge(*cmd, **kw):
    return sh("ip", "netns", "exec", EDGE_NS, *cmd, **kw)


def in_peer(*cmd, **kw):
    return sh("ip", "netns", "exec", PEER_NS, *cmd, **kw)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def dns53_up():
    """The lab's zones again on 127.0.0.1:53 (libc cannot use :5353)."""
    pidf = DNS53 + ".pid"
    if os.path.exists(pidf) and pid_alive(int(open(pidf).read().split()[0])):
        return
    conf = open(f"{LAB_DIR}/unbound.conf").read()
    conf = conf.replace("127.0.0.1@5353", "127.0.0.1@53")
    conf = re.sub(r"(?m)^  port: \d+", "  port: 53", conf)
    conf = conf.replace("unbound.pid", "unbound53.pid").replace("unbound.log", "unbound53.log")
    open(DNS53 + ".conf", "w").write(conf)
    in_edge("unbound", "-c", DNS53 + ".conf")
    for _ in range(50):
        r = in_edge("dig", "+short", "+time=1", "+tries=1", "-p", "53", "@127.0.0.1",
                    "-x", PTR6, check=False)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError("unbound on 127.0.0.1:53 did not answer")


def dns53_down():
    pidf = DNS53 + ".pid"
    if os.path.exists(pidf):
        try:
            os.kill(int(open(pidf).read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def source(dest, conc, msgs):
    """smtp-source from the peer namespace; returns (seconds, refusals)."""
    t0 = time.monotonic()
    r = in_peer("smtp-source", "-A", "-s", str(conc), "-m", str(msgs), "-M", "bench.example",
                "-f", "bench@example.org", "-t", "postmaster@example.net", f"[{dest}]:25",
                check=False, timeout=600)
    dt = time.monotonic() - t0
    refused = r.stderr.count("recipient rejected: 550")
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source: {r.returncode} {r.stderr[-500:]}")
    return dt, refused


def stat_fields(path):
    with open(path) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def thread_ticks(pid, skip_comm_prefix):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            if comm.startswith(skip_comm_prefix):
                continue
            f = stat_fields(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total


def tree_ticks(root):
    """utime+stime+cutime+cstime of root and every live descendant."""
    kids, ticks = {}, {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            f = stat_fields(f"/proc/{p}/stat")
        except OSError:
            continue
        kids.setdefault(int(f[1]), []).append(int(p))
        ticks[int(p)] = sum(int(x) for x in f[11:15])
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo.extend(kids.get(p, []))
    return total


def point(name, conc, msgs, secs, refused, cpu_s, **extra):
    d = {"server": name, "concurrency": conc, "sessions": msgs, "wall_s": round(secs, 3),
         "sessions_per_s": round(msgs / secs, 1), "refused_550": refused,
         "cpu_s": round(cpu_s, 4), "cpu_s_per_1k_sessions": round(cpu_s * 1000 / msgs, 4)}
    d.update(extra)
    log(f"{name:8} -s {conc:<3} {msgs} sessions {secs:6.2f}s {msgs / secs:8.0f}/s "
        f"cpu {cpu_s:.3f}s ({cpu_s * 1000 / msgs:.3f} s/1k) refused {refused}")
    return d


# ---- smtpedge ---------------------------------------------------------------

def edge_conf(path):
    open(path, "w").write(f"""; written by tests/bench/side_by_side.py
[edge]
hostname = mx.bench.example
address6 = {EDGE6}
smtp_ports = 25
[dns]
server = 127.0.0.1@53
[domains]
accept = example.net example.org
[relay]
spool = /dev/shm/smtpedge-bench-lab-spool
[ipv6-ptr]
stage = rcpt
[dataplane]
flows = 4096
body_budget_mb = 64
[log]
file = {LAB_DIR}/bench-edge-txlog.log
level = notice
""")


def edge_stats(ctl, prefix):
    r = sh(ctl, "--file-prefix", prefix, "stats", "--json")
    return json.loads(r.stdout)["/smtpedge/stats"]


def start_edge(args, conf, prefix, log_path):
    """smtpedge on the lab's port with conf, its output to log_path; returns
    once its CLI answers (RuntimeError if it exits first)."""
    logf = open(log_path, "w")
    proc = subprocess.Popen(["ip", "netns", "exec", EDGE_NS, args.smtpedge,
                             *shlex.split(E["LAB_EAL_ARGS"]), "--file-prefix", prefix,
                             "--", "--config", conf],
                            stdout=logf, stderr=subprocess.STDOUT)
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError("smtpedge exited: " + open(log_path).read()[-800:])
        if sh(args.ctl, "--file-prefix", prefix, "version", check=False).returncode == 0:
            break
        time.sleep(0.1)
    return proc


def run_smtpedge(args, concs):
    prefix = "smtpedge-bench" + E.get("LAB_ID", "")
    conf = f"{LAB_DIR}/bench-edge.conf"
    edge_conf(conf)
    proc = start_edge(args, conf, prefix, f"{LAB_DIR}/bench-edge.log")
    points = []
    try:
        in_peer("ip", "-6", "route", "replace", f"{EDGE6}/128", "dev", PEER_IF, "src", NOPTR6)
        source(EDGE6, 1, 5)                       # ND, the DNS cache
        for c in concs:
            s0, t0 = edge_stats(args.ctl, prefix), thread_ticks(proc.pid, "rte-worker")
            secs, refused = source(EDGE6, c, args.msgs)
            s1, t1 = edge_stats(args.ctl, prefix), thread_ticks(proc.pid, "rte-worker")
            busy = (s1["busy_cycles"] - s0["busy_cycles"]) / args.tsc_hz
            ctl = (t1 - t0) / TICK
            rej = s1["ipv6_ptr_reject"] - s0["ipv6_ptr_reject"]
            points.append(point("smtpedge", c, args.msgs, secs, refused, busy + ctl,
                                worker_busy_s=round(busy, 4), control_cpu_s=round(ctl, 3),
                                ipv6_ptr_reject=rej))
    finally:
        in_peer("ip", "-6", "route", "replace", f"{EDGE6}/128", "dev", PEER_IF, "src", PTR6,
                check=False)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree("/dev/shm/smtpedge-bench-lab-spool", ignore_errors=True)
    return points


# ---- Postfix -----------------------------------------------------------------

# The services every private Postfix instance of the benchmarks runs, after
# its front (postscreen or smtpd) and, with STARTTLS, tlsmgr.
POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_master_cf(front, tls=False):
    """master.cf: the front's lines, tlsmgr when TLS is on, then the rest."""
    tlsmgr = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
    return front + (tlsmgr if tls else "") + POSTFIX_SERVICES


MASTER_CF = postfix_master_cf("""\
smtp      inet  n       -       n       -       1       postscreen
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
""")


def postfix_dir():
    d = f"{LAB_DIR}/postfix"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(f"{d}/queue")
    os.makedirs(f"{d}/data")
    for f in ("postfix-files", "dynamicmaps.cf"):
        shutil.copy(f"/etc/postfix/{f}", d)
    for f in ("postfix-files.d", "dynamicmaps.cf.d"):
        if os.path.isdir(f"/etc/postfix/{f}"):
            shutil.copytree(f"/etc/postfix/{f}", f"{d}/{f}")
    open(f"{d}/main.cf", "w").write(f"""# written by tests/bench/side_by_side.py
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = {d}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.bench.example
mydestination =
relay_domains = example.net
inet_interfaces = {POSTFIX6}
inet_protocols = ipv6
mynetworks = [::1]/128
smtpd_client_restrictions = reject_unknown_reverse_client_hostname
unknown_client_reject_code = 550
smtpd_recipient_restrictions = reject_unauth_destination
postscreen_greet_wait = 1s
maillog_file = /dev/stdout
smtpd_banner = $myhostname ESMTP
biff = no
smtputf8_enable = no
""")
    open(f"{d}/master.cf", "w").write(MASTER_CF)
    open(f"{LAB_DIR}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
    shutil.chown(f"{d}/data", "postfix", "postfix")
    return d


def run_postfix(args, concs):
    d = postfix_dir()
    points = []
    proc = None
    in_edge("sysctl", "-qw", f"net.ipv6.conf.{EDGE_IF}.disable_ipv6=0")
    try:
        in_edge("ip", "-6", "addr", "replace", f"{POSTFIX6}/64", "dev", EDGE_IF, "nodad")
        in_edge("postfix", "-c", d, "check", check=False)      # makes the queue
        in_edge("postfix", "-c", d, "set-permissions", check=False)
        # Its own mount namespace, so /etc/resolv.conf (127.0.0.1) is
        # replaced for Postfix alone; master -d stays in the foreground.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", EDGE_NS, "unshare", "-m", "--propagation", "private",
             "sh", "-c", f"mount --bind {LAB_DIR}/resolv.conf /etc/resolv.conf && "
                         f"exec /usr/lib/postfix/sbin/master -c {d} -d"],
            stdout=open(f"{LAB_DIR}/bench-postfix.log", "w"), stderr=subprocess.STDOUT)
        in_peer("ip", "-6", "route", "replace", f"{POSTFIX6}/128", "dev", PEER_IF, "src", NOPTR6)
        for _ in range(100):
            if proc.poll() is not None:
                raise RuntimeError("postfix master exited: see " + LAB_DIR + "/bench-postfix.log")
            r = in_edge("ss", "-ltnH", f"( sport = :25 )", check=False)
            if POSTFIX6 in r.stdout or "[" in r.stdout:
                break
            time.sleep(0.1)
        source(POSTFIX6, 1, 5)            # postscreen has now seen the peer
        for c in concs:
            t0 = tree_ticks(proc.pid)
            secs, refused = source(POSTFIX6, c, args.msgs)
            t1 = tree_ticks(proc.pid)
            points.append(point("postfix", c, args.msgs, secs, refused, (t1 - t0) / TICK))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        in_peer("ip", "-6", "route", "del", f"{POSTFIX6}/128", check=False)
        in_edge("ip", "-6", "addr", "del", f"{POSTFIX6}/64", "dev", EDGE_IF, check=False)
        in_edge("sysctl", "-qw", f"net.ipv6.conf.{EDGE_IF}.disable_ipv6=1", check=False)
    return points


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpedge", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--tsc-hz", type=float, required=True)
    ap.add_argument("--conc", default="1,5,10,20")
    ap.add_argument("--ratio-conc", type=int, default=10)
    ap.add_argument("--msgs", type=int, default=3000)
    args = ap.parse_args()
    concs = [int(c) for c in args.conc.split(",")]
    t0 = time.monotonic()
    dns53_up()
    try:
        edge = run_smtpedge(args, concs)
        log(f"smtpedge done at {time.monotonic() - t0:.1f}s")
        pfx = run_postfix(args, concs)
        log(f"postfix done at {time.monotonic() - t0:.1f}s")
    finally:
        dns53_down()
    out = {"smtpedge": edge, "postfix": pfx, "postfix_front": "postscreen+smtpd",
           "sessions_per_point": args.msgs, "ratio_concurrency": args.ratio_conc}
    e = next(p for p in edge if p["concurrency"] == args.ratio_conc)
    p = next(p for p in pfx if p["concurrency"] == args.ratio_conc)
    out["smtpedge_cpu_s_per_1k_sessions"] = e["cpu_s_per_1k_sessions"]
    out["postfix_cpu_s_per_1k_sessions"] = p["cpu_s_per_1k_sessions"]
    out["cpu_ratio_vs_postfix"] = round(e["cpu_s_per_1k_sessions"] / p["cpu_s_per_1k_sessions"], 4) \
        if p["cpu_s_per_1k_sessions"] else None
    out["smtpedge_lab_sessions_per_s"] = e["sessions_per_s"]
    out["postfix_sessions_per_s"] = p["sessions_per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
