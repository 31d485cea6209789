#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/bench/report.py — the benchmark's figures in one place, for
scripts/bench.sh: merges bench_inproc's and side_by_side.py's results with
the machine's description into one JSON file (the headline figures at the
top, the details below them), prints the table, and writes the chart's data
(concurrency, smtpedge sessions/s, Postfix sessions/s).
"""
import argparse
import datetime
import json
import os
import subprocess

GIB = 1 << 30


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def git_rev(root):
    r = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inproc", required=True)
    ap.add_argument("--side", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dat", required=True)
    ap.add_argument("--command", default="scripts/bench.sh")
    ap.add_argument("--tls", help="bench-tls.json (bench_tls and openssl speed)")
    ap.add_argument("--tls-side", help="bench-tls-side.json (tls_side_by_side.py)")
    ap.add_argument("--insns", help="bench-insns.json (bench_reject_insns under callgrind)")
    ap.add_argument("--accept", help="bench-accept.json (bench_inproc's accept runs, DNS +0/+50 ms)")
    ap.add_argument("--accept-side", help="bench-accept-side.json (accept_side_by_side.py)")
    a = ap.parse_args()
    ip = json.load(open(a.inproc))
    tls = json.load(open(a.tls)) if a.tls else {}
    tsd = json.load(open(a.tls_side)) if a.tls_side else {}
    insns = json.load(open(a.insns)) if a.insns else {}
    accd = json.load(open(a.accept)) if a.accept else {}
    asd = json.load(open(a.accept_side)) if a.accept_side else {}
    sd = json.load(open(a.side))
    rej, acc, idle = ip.get("reject", {}), ip.get("accept", {}), ip.get("idle", {})
    # Five runs or more of the reject path: the median and the best, since
    # one run on a shared machine measures the neighbours too.
    runs = ip.get("reject_runs", {})
    inproc_cpu = round((rej["busy_s"] + rej["control_cpu_s"]) * 1000 / rej["sessions"], 5) \
        if rej.get("sessions") else None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = {
        "reject_sessions_per_s_per_core": {
            "median": runs.get("sessions_per_s_per_core_median"),
            "best": runs.get("sessions_per_s_per_core_best"),
            "runs": runs.get("sessions_per_s_per_core")},
        "cycles_per_reject_session": {
            "median": runs.get("cycles_per_session_median"),
            "best": runs.get("cycles_per_session_best"),
            "runs": runs.get("cycles_per_session")},
        "instructions_per_reject_session": insns.get("instructions_per_reject_session"),
        "accept_sessions_per_s_per_core": acc.get("sessions_per_s_per_core"),
        "cycles_per_reject_packet": rej.get("cycles_per_packet"),
        "cycles_per_accept_session": acc.get("cycles_per_session"),
        "idle_sessions_per_gib": int(GIB / ip["allocated_bytes_per_flow"]),
        "idle_sessions_per_gib_slot_only": int(GIB / ip["slot_bytes"]),
        "postfix_cpu_s_per_1k_sessions": sd["postfix_cpu_s_per_1k_sessions"],
        "smtpedge_cpu_s_per_1k_sessions": sd["smtpedge_cpu_s_per_1k_sessions"],
        "cpu_ratio_vs_postfix": sd["cpu_ratio_vs_postfix"],
        # In-process, no kernel on the path: worker busy + control CPU per
        # 1,000 refused sessions, and that against Postfix's lab figure.
        "inproc_cpu_s_per_1k_reject_sessions": inproc_cpu,
        "inproc_cpu_ratio_vs_postfix": round(inproc_cpu / sd["postfix_cpu_s_per_1k_sessions"], 4)
        if inproc_cpu is not None and sd["postfix_cpu_s_per_1k_sessions"] else None,
        "smtpedge_lab_sessions_per_s": sd["smtpedge_lab_sessions_per_s"],
        "postfix_sessions_per_s": sd["postfix_sessions_per_s"],
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "targets": {"reject_sessions_per_s_per_core": 500000, "cpu_ratio_vs_postfix": 0.2},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": a.command,
        "revision": git_rev(root),
        "inproc": ip,
        "side_by_side": sd,
    }
    out.update(tls)   # tls_* figures, when measured
    if accd:
        # The in-process accept path at 1,000 concurrent, DNS answers
        # delayed 0 and 50 ms: how much of the delay the control plane hides.
        a0 = accd["dns0"]["accept"]["sessions_per_s_wall"]
        a50 = accd["dns50"]["accept"]["sessions_per_s_wall"]
        out["accept_sessions_per_s_wall_dns0"] = a0
        out["accept_sessions_per_s_wall_dns50"] = a50
        out["dns_latency_hiding"] = round(a50 / a0, 3) if a0 else None
        out["accept_inproc"] = accd
        out["targets"].update({"dns_latency_hiding": 0.5, "accept_sessions_per_s_wall_dns50": 5000})
    if asd:
        out["postfix_accept_sessions_per_s"] = asd["postfix_accept_sessions_per_s"]
        out["smtpedge_accept_sessions_per_s_lab"] = asd["smtpedge_accept_sessions_per_s_lab"]
        out["accept_cpu_s_per_1k"] = asd["accept_cpu_s_per_1k"]
        out["accept_cpu_ratio_vs_postfix"] = asd["accept_cpu_ratio_vs_postfix"]
        out["accept_side_by_side"] = asd
        out["targets"].update({"accept_sessions_ratio_vs_postfix": 5,
                               "accept_cpu_ratio_vs_postfix": 0.1})
    if tsd:
        out["tls_side_by_side"] = tsd
        out.update({k: v for k, v in tsd.items() if k.startswith("tls_")})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    by_c = {}
    for p in sd["smtpedge"] + sd["postfix"]:
        by_c.setdefault(p["concurrency"], {})[p["server"]] = p
    with open(a.dat, "w") as f:
        f.write("# concurrency smtpedge_sessions_per_s postfix_sessions_per_s\n")
        for c in sorted(by_c):
            f.write(f"{c} {by_c[c]['smtpedge']['sessions_per_s']} {by_c[c]['postfix']['sessions_per_s']}\n")

    def row(k, v, note=""):
        print(f"  {k:<44} {v:>14}  {note}")

    print(f"smtpedge benchmark, {out['date']}, {out['cpu_model']}, {out['cores']} cores, {out['revision']}")
    print("in-process (net_ring port, worker on one core; per core = sessions / worker busy seconds)")
    if runs:
        row("reject: sessions/s per worker core, median / best",
            f"{runs['sessions_per_s_per_core_median']:,.0f} / {runs['sessions_per_s_per_core_best']:,.0f}",
            f"{runs['runs']} runs: " + ", ".join(f"{v:,.0f}" for v in runs["sessions_per_s_per_core"]))
        row("reject: cycles per session, median / best",
            f"{runs['cycles_per_session_median']:,.0f} / {runs['cycles_per_session_best']:,.0f}",
            "the median run's details below")
    if insns:
        row("reject: instructions per session (callgrind)",
            f"{insns['instructions_per_reject_session']:,}",
            f"engines without DPDK, {insns['instructions_sessions']:,} sessions; load-independent")
    for name, r in (("reject", rej), ("accept", acc)):
        if r:
            row(f"{name}: sessions/s per worker core", f"{r['sessions_per_s_per_core']:,.0f}",
                f"wall {r['sessions_per_s_wall']:,.0f}/s at {r['concurrency']} concurrent, "
                f"failed {r['failed']}")
            row(f"{name}: cycles per session / per packet",
                f"{r['cycles_per_session']:,.0f} / {r['cycles_per_packet']:,.0f}",
                f"{r['packets_per_session']} packets per session")
    row("idle sessions per GiB (allocated per slot)", f"{out['idle_sessions_per_gib']:,}",
        f"{ip['allocated_bytes_per_flow']} B per flow slot; sess_layer_slot_bytes() "
        f"{ip['slot_bytes']} B -> {out['idle_sessions_per_gib_slot_only']:,}/GiB")
    if idle:
        row("idle sessions held", f"{idle['held']:,}", f"of {idle['wanted']:,}; worker holds {idle['worker_active']:,}")
    print(f"side by side (lab, smtp-source from a no-PTR peer, {sd['sessions_per_point']} sessions per point)")
    print(f"  {'concurrent':>10} {'smtpedge/s':>11} {'Postfix/s':>10} {'smtpedge cpu s/1k':>18} {'Postfix cpu s/1k':>17}")
    for c in sorted(by_c):
        e, p = by_c[c]["smtpedge"], by_c[c]["postfix"]
        print(f"  {c:>10} {e['sessions_per_s']:>11,.0f} {p['sessions_per_s']:>10,.0f} "
              f"{e['cpu_s_per_1k_sessions']:>18.3f} {p['cpu_s_per_1k_sessions']:>17.3f}")
    row(f"CPU ratio smtpedge/Postfix at {sd['ratio_concurrency']} concurrent",
        f"{out['cpu_ratio_vs_postfix']}", "target <= 0.2")
    row("in-process CPU s/1k refused (worker+control)", f"{out['inproc_cpu_s_per_1k_reject_sessions']}",
        f"vs Postfix: {out['inproc_cpu_ratio_vs_postfix']} (no af_packet/veth on the path)")
    best = out["reject_sessions_per_s_per_core"]["best"]
    row("in-process reject per core (best) vs target", f"{best:,.0f}" if best else "-",
        "target >= 500,000")
    if tls:
        row("TLS full handshakes/s per core (ECDSA P-256, X25519)",
            f"{tls['tls_full_handshakes_per_s_per_core']:,.0f}",
            f"RSA {tls['tls_full_handshakes_per_s_per_core_rsa']:,.0f}, resumed "
            f"{tls['tls_resumed_handshakes_per_s_per_core']:,.0f}")
        row("TLS handshake efficiency vs openssl speed", f"{tls['tls_handshake_efficiency']}",
            f"speed allows {tls['tls_speed_handshakes_per_s']:,}/s; target >= 0.7")
        if "tls_handshake_efficiency_vs_floor" in tls:
            row("TLS handshake efficiency vs sign + X25519 keygen + derive",
                f"{tls['tls_handshake_efficiency_vs_floor']}",
                f"floor {tls['tls_crypto_floor_handshakes_per_s']:,}/s; openssl s_server "
                f"{tls.get('openssl_s_server_full_handshake_us', '-')} us/handshake")
    if tsd:
        print(f"side by side over STARTTLS (accept path, {tsd['sessions_per_point']} sessions per point)")
        print(f"  {'concurrent':>10} {'smtpedge/s':>11} {'Postfix/s':>10} {'smtpedge cpu s/1k':>18} "
              f"{'(tsc)':>7} {'Postfix cpu s/1k':>17}")
        for e, p in zip(tsd["smtpedge"], tsd["postfix"]):
            print(f"  {e['concurrency']:>10} {e['sessions_per_s']:>11,.0f} {p['sessions_per_s']:>10,.0f} "
                  f"{e['cpu_s_per_1k_sessions']:>18.3f} {e['cpu_s_per_1k_sessions_tsc']:>7.3f} "
                  f"{p['cpu_s_per_1k_sessions']:>17.3f}")
        row(f"TLS CPU ratio smtpedge/Postfix at {tsd['ratio_concurrency']} concurrent",
            f"{tsd['tls_cpu_ratio_vs_postfix']}",
            f"busy cycles alone: {tsd['tls_cpu_ratio_vs_postfix_tsc']}; target <= 0.33")
    if accd:
        print(f"accept path in-process ({accd['concurrency']:,} concurrent, DKIM-signed 2 KB, "
              f"spool on {accd['spool']}, {accd['threads']} work threads)")
        for k in ("dns0", "dns50"):
            r = accd[k]["accept"]
            row(f"accept, DNS +{k[3:]} ms: sessions/s wall", f"{r['sessions_per_s_wall']:,.0f}",
                f"failed {r['failed']}, stalled {r['stalled']}, spooled {r['spooled']}"
                + (", target >= 5,000" if k == "dns50" else ""))
        row("dns_latency_hiding (+50 ms / +0 ms)", f"{out['dns_latency_hiding']}", "target >= 0.5")
    if asd:
        print(f"side by side on the accept path (lab, smtp-source -F, {asd['sessions_per_point']} "
              f"sessions per point, queue and spool on {asd['filesystem']})")
        print(f"  {'concurrent':>10} {'smtpedge/s':>11} {'Postfix/s':>10} {'smtpedge cpu s/1k':>18} "
              f"{'(tsc)':>7} {'Postfix cpu s/1k':>17}")
        for e, p in zip(asd["smtpedge"], asd["postfix"]):
            print(f"  {e['concurrency']:>10} {e['sessions_per_s']:>11,.0f} {p['sessions_per_s']:>10,.0f} "
                  f"{e['cpu_s_per_1k'] or 0:>18.3f} {e['cpu_s_per_1k_tsc'] or 0:>7.3f} "
                  f"{p['cpu_s_per_1k'] or 0:>17.3f}")
        row(f"accept sessions/s smtpedge/Postfix at {asd['ratio_concurrency']} concurrent",
            f"{asd['accept_sessions_ratio_vs_postfix']}", "target >= 5")
        row(f"accept CPU ratio smtpedge/Postfix at {asd['ratio_concurrency']} concurrent",
            f"{asd['accept_cpu_ratio_vs_postfix']}", "target <= 0.1")


if __name__ == "__main__":
    main()
