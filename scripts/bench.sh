#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# smtpedge's benchmarks: not part of the test run.
#
#   scripts/bench.sh [--quick]
#
# Installs what is missing (deps.sh), builds build-bench/, brings up a lab of
# its own (LAB_ID, default 3, so it never disturbs the tests' lab), then:
#   1. in-process (tests/bench/bench_inproc): the real worker on lcore 1
#      behind a net_ring port, the real control plane, a generator of
#      scripted IPv6 SMTP clients: the reject path (no PTR -> 550 5.7.25,
#      five runs: median and best), the accept path (PTR and SPF pass, 2 KB
#      to a spool on /dev/shm) and idle sessions: in a run of their own with
#      a million flows (the generator's 16 source addresses x 64,512 ports
#      bound it near 1.03 million), what one worker holds and what each costs;
#   1a. the accept path in-process at 1,000 concurrent sessions (PTR, SPF
#      and DKIM pass, 2 KB, to a spool on the disk under build-bench/) with
#      DNS answers delayed 0 and 50 ms by scripts/dnsdelay.py;
#   1b. TLS handshakes (bench_tls against openssl speed);
#   1c. instructions per refused session, which the load does not move:
#      the reject path's engines without DPDK (bench_reject_insns) under
#      valgrind's callgrind (this VM exposes no hardware counters);
#   2. side by side (tests/bench/side_by_side.py): smtpedge in the lab and
#      Postfix (postscreen + smtpd) driven by smtp-source from the peer
#      namespace with no-PTR sessions at 1, 5, 10 and 20 concurrent;
#      and over STARTTLS (tests/bench/tls_side_by_side.py): the accept path
#      in TLS, with the same certificate on both, at 1 and 10 concurrent;
#      and the accept path in clear (tests/bench/accept_side_by_side.py):
#      the same DKIM-signed message, queue and spool on the same disk, at
#      10 and 50 concurrent;
# prints a table, writes build-bench/bench.json and build-bench/bench.png,
# and names the JSON file on its last line. The whole run takes a few
# minutes; --quick shortens every phase (for trying the script).
#
#   scripts/bench.sh --reject-only
#
# runs the reject path alone: 1's five reject runs and 1c's instruction
# count, into build-bench/bench-reject.json (named on the last line), with
# the load average before and after, since the machine may be shared.
#
#   scripts/bench.sh --accept-only
#
# runs the accept path alone: 1a's runs at DNS +0 and +50 ms, into
# build-bench/bench-accept.json (named on the last line), with the load
# average before and after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export LAB_ID=${LAB_ID:-3}
build=$root/build-bench
quick=no reject_only=no accept_only=no
[ "${1:-}" = "--quick" ] && quick=yes
[ "${1:-}" = "--reject-only" ] && reject_only=yes
[ "${1:-}" = "--accept-only" ] && accept_only=yes

secs=5 msgs=3000 idle=1000000 reject_conc=256 accept_conc=64 tls_msgs=600 reject_runs=5
insn_sessions=3000 idle_flows=1048576 idle_memory_mb=2600 idle_eal_mb=2816
accept_secs=5 accept_msgs=2000
if [ $quick = yes ]; then
	secs=1 msgs=500 idle=20000 tls_msgs=150 insn_sessions=500
	idle_flows=65536 idle_memory_mb=256 idle_eal_mb=1024 accept_secs=2 accept_msgs=300
fi

bash "$here/deps.sh"
cd "$root"
[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
meson compile -C "$build" >/dev/null

set -a
. "$here/lab.env"
set +a
lab_was_up=no
LAB_ID=$LAB_ID bash "$here/lab.sh" status >/dev/null 2>&1 && lab_was_up=yes
LAB_ID=$LAB_ID bash "$here/lab.sh" up >/dev/null
dnsdelay_pid=
cleanup() {
	[ -z "$dnsdelay_pid" ] || kill "$dnsdelay_pid" 2>/dev/null || true
	rm -rf "/dev/shm/smtpedge-bench-spool$LAB_ID" "$build/bench-accept-spool"
	if [ $lab_was_up = no ]; then
		LAB_ID=$LAB_ID bash "$here/lab.sh" down >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

# ---- 1c. instructions per refused session (run below, or alone) ----------------
# Counted only inside the edge's entry points (the client's frames and the
# set-up are not), so the figure is the same on a loaded machine and an idle
# one: a change's effect shows in one run.
count_insns() {
	echo "bench: instructions per refused session (callgrind, $insn_sessions sessions) ..." >&2
	insn_out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		--toggle-collect=pkt_classify --toggle-collect=tcp_input \
		--toggle-collect=tcp_engine_tick '--toggle-collect=client_take*' \
		"$build/tests/bench/bench_reject_insns" "$insn_sessions" 2>&1) ||
		{ echo "bench: bench_reject_insns failed: $insn_out" >&2; exit 1; }
	insns=$(printf '%s\n' "$insn_out" | sed -n 's/.*Collected : *\([0-9][0-9]*\).*/\1/p')
	[ -n "$insns" ] || { echo "bench: callgrind printed no count: $insn_out" >&2; exit 1; }
	printf '{"instructions_per_reject_session": %d, "instructions_sessions": %d, "instructions_total": %d}\n' \
		$((insns / insn_sessions)) "$insn_sessions" "$insns" > "$build/bench-insns.json"
}

# ---- 1. in-process ----------------------------------------------------------
conf=$build/bench-inproc.conf
cat > "$conf" <<CONF
; written by scripts/bench.sh: the in-process benchmark's smtpedge
[edge]
hostname = mx.bench.example
address6 = $LAB_EDGE6
smtp_ports = 25
[dns]
server = 127.0.0.1@$LAB_DNS_PORT
[domains]
accept = example.net example.org
[relay]
; tmpfs: the benchmark measures smtpedge, not the disk's fsync
spool = /dev/shm/smtpedge-bench-spool$LAB_ID
[dataplane]
mbufs = 32767
flows = 16384
body_budget_mb = 64
[log]
file = $LAB_DIR/bench-inproc.log
level = notice
CONF
if [ $reject_only = yes ]; then
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	echo "bench: the reject path alone, $reject_runs runs of ${secs}s ..." >&2
	out=$(ip netns exec "$LAB_EDGE_NS" "$build/tests/bench/bench_inproc" \
		-l 0-1 --no-huge -m 1536 --no-pci --no-telemetry \
		--file-prefix "smtpedge-inproc$LAB_ID" -- --config "$conf" \
		--reject $reject_conc --repeat $reject_runs --accept 0 --idle 0 --secs $secs \
		2> "$build/bench-reject.stderr")
	grep -v '^EAL:' "$build/bench-reject.stderr" >&2 || true
	j=$(printf '%s\n' "$out" | sed -n 's/^BENCH_JSON //p')
	[ -n "$j" ] || { echo "bench: bench_inproc printed no result" >&2; exit 1; }
	count_insns
	load_after=$(cut -d' ' -f1-3 /proc/loadavg)
	/usr/bin/python3 - "$j" "$build/bench-insns.json" "$load_before" "$load_after" \
		> "$build/bench-reject.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r.update(json.load(open(sys.argv[2])))
r["loadavg_before"], r["loadavg_after"] = sys.argv[3], sys.argv[4]
print(json.dumps(r))
PY
	echo "$build/bench-reject.json"
	exit 0
fi
if [ $accept_only = no ]; then
	echo "bench: in-process runs (${secs}s each) ..." >&2
	inproc_out=$(ip netns exec "$LAB_EDGE_NS" "$build/tests/bench/bench_inproc" \
		-l 0-1 --no-huge -m 1536 --no-pci --no-telemetry \
		--file-prefix "smtpedge-inproc$LAB_ID" -- --config "$conf" \
		--reject $reject_conc --repeat $reject_runs --accept $accept_conc --idle 0 --secs $secs \
		2> "$build/bench-inproc.stderr")
	grep -v '^EAL:' "$build/bench-inproc.stderr" >&2 || true
	inproc_json=$(printf '%s\n' "$inproc_out" | sed -n 's/^BENCH_JSON //p')
	[ -n "$inproc_json" ] || { echo "bench: bench_inproc printed no result" >&2; exit 1; }
	printf '%s\n' "$inproc_json" > "$build/bench-inproc.json"

	# Idle sessions: the same edge with room for a million (memory_mb and -m
	# to match), nothing but the idle run; its figures join the in-process JSON.
	sed -e "s/^flows = .*/flows = $idle_flows\nmemory_mb = $idle_memory_mb/" \
		-e "s/^body_budget_mb = .*/body_budget_mb = 16/" "$conf" > "$build/bench-idle.conf"
	echo "bench: $idle idle sessions on one worker ..." >&2
	idle_out=$(ip netns exec "$LAB_EDGE_NS" "$build/tests/bench/bench_inproc" \
		-l 0-1 --no-huge -m $idle_eal_mb --no-pci --no-telemetry \
		--file-prefix "smtpedge-idle$LAB_ID" -- --config "$build/bench-idle.conf" \
		--reject 0 --accept 0 --idle $idle --secs 1 2> "$build/bench-idle.stderr")
	grep -v '^EAL:' "$build/bench-idle.stderr" >&2 || true
	printf '%s\n' "$idle_out" | sed -n 's/^BENCH_JSON //p' > "$build/bench-idle.json"
	/usr/bin/python3 - "$build/bench-inproc.json" "$build/bench-idle.json" <<'PY'
import json, sys
main, idle = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for k in ("idle", "idle_sessions_held", "bytes_per_idle_session", "idle_sessions_per_gib",
          "session_buffer_bytes"):
    main[k] = idle[k]
main["idle"].update(flows=idle["flows"], slot_bytes=idle["slot_bytes"])
json.dump(main, open(sys.argv[1], "w"))
PY
	tsc_hz=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tsc_hz"])' \
		"$build/bench-inproc.json")
fi

# ---- 1a. the accept path in-process, DNS delayed 0 and 50 ms ------------------
# Every session: a forward-confirmed bulk peer (the PTR cached after the
# first of each of the 16 peers), MAIL FROM a domain of its own under
# slow.example (SPF pass; no cache holds it, so every session's SPF record
# comes through the delay), a 2 KB message signed once with the lab's DKIM
# key for dkim.example (its key record cached after the first), to a spool
# on the disk. The control plane's limits are raised as a large MX would
# raise them: 16 work threads, 100,000 SPF checks in flight.
echo "bench: accept path in-process, 1,000 sessions, DNS +0 and +50 ms (${accept_secs}s each) ..." >&2
accept_conc_big=1000
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
dkim_msg=$build/bench-accept-signed.eml
/usr/bin/python3 - "$LAB_DIR/dkim.key" "$LAB_DKIM_SELECTOR" "$dkim_msg" <<'PY'
import dkim, sys
key, sel, out = open(sys.argv[1], "rb").read(), sys.argv[2].encode(), sys.argv[3]
msg = (b"From: <bench@dkim.example>\r\nTo: <postmaster@example.net>\r\n"
       b"Subject: bench, signed\r\nMessage-ID: <bench.signed@dkim.example>\r\n\r\n")
while len(msg) < 2048 - 160:  # 2 KB with the signature's header
    msg += b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"
sig = dkim.sign(msg, sel, b"dkim.example", key, canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[b"from", b"to", b"subject", b"message-id"])
open(out, "wb").write((sig + msg).replace(b"\r\n", b"\n"))
PY
accept_dns_port=$((LAB_DNS_PORT + 2))
accept_json='{'
for delay in 0 50; do
	ip netns exec "$LAB_EDGE_NS" /usr/bin/python3 "$here/dnsdelay.py" \
		--listen "127.0.0.1@$accept_dns_port" --upstream "127.0.0.1@$LAB_DNS_PORT" \
		--delay-ms $delay 2>> "$build/dnsdelay.log" &
	dnsdelay_pid=$!
	sleep 0.5
	rm -rf "$build/bench-accept-spool"
	mkdir -p "$build/bench-accept-spool"
	aconf=$build/bench-accept-dns$delay.conf
	cat > "$aconf" <<CONF
; written by scripts/bench.sh: the in-process accept path, DNS +$delay ms
[edge]
hostname = mx.bench.example
address6 = $LAB_EDGE6
smtp_ports = 25
[dns]
server = 127.0.0.1@$accept_dns_port
[domains]
accept = example.net example.org
[relay]
; the disk (build-bench/): fsync and group commit as in production
spool = $build/bench-accept-spool
[control]
threads = 16
max_spf_checks = 100000
[dataplane]
mbufs = 65535
flows = 16384
body_budget_mb = 256
[log]
file = $LAB_DIR/bench-accept.log
level = notice
CONF
	out=$(ip netns exec "$LAB_EDGE_NS" "$build/tests/bench/bench_inproc" \
		-l 0-1 --no-huge -m 2048 --no-pci --no-telemetry \
		--file-prefix "smtpedge-accept$LAB_ID" -- --config "$aconf" \
		--reject 0 --idle 0 --accept $accept_conc_big --secs $accept_secs --warm 5 --stall 30 \
		--body "$dkim_msg" --mail-domain slow.example \
		2> "$build/bench-accept-dns$delay.stderr") || true
	kill "$dnsdelay_pid" 2>/dev/null || true
	wait "$dnsdelay_pid" 2>/dev/null || true
	dnsdelay_pid=
	grep -v '^EAL:' "$build/bench-accept-dns$delay.stderr" | sed "s/^/dns+${delay}ms /" >&2 || true
	j=$(printf '%s\n' "$out" | sed -n 's/^BENCH_JSON //p')
	[ -n "$j" ] || { echo "bench: accept run (DNS +$delay ms) printed no result" >&2; exit 1; }
	accept_json="$accept_json\"dns$delay\":$j,"
done
printf '%s"concurrency":%d,"threads":16,"max_spf_checks":100000,"spool":"disk (build-bench/)"}\n' \
	"$accept_json" $accept_conc_big > "$build/bench-accept.json"
if [ $accept_only = yes ]; then
	/usr/bin/python3 - "$build/bench-accept.json" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["loadavg_before"], r["loadavg_after"] = sys.argv[2], sys.argv[3]
json.dump(r, open(sys.argv[1], "w"))
PY
	echo "$build/bench-accept.json"
	exit 0
fi

# ---- 1b. TLS handshakes -------------------------------------------------------
# What a STARTTLS handshake costs the worker's code (bench_tls, server side
# only), against what openssl speed says the signature and the key exchange
# alone allow on this machine, measured in the same run.
echo "bench: TLS handshakes ..." >&2
tlsdir=$build/tls
mkdir -p "$tlsdir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.bench.example \
	-days 2 -keyout "$tlsdir/ec.key" -out "$tlsdir/ec.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=mx.bench.example \
	-days 2 -keyout "$tlsdir/rsa.key" -out "$tlsdir/rsa.crt" 2>/dev/null
tls_out=$(taskset -c 1 "$build/tests/bench/bench_tls" "$tlsdir/ec.crt" "$tlsdir/ec.key" \
	"$tlsdir/rsa.crt" "$tlsdir/rsa.key" "$secs")
speed_out=$(taskset -c 1 openssl speed -seconds "$secs" ecdhx25519 ecdsap256 2>/dev/null)
# OpenSSL's own server as a reference: openssl s_server's CPU per full
# TLS 1.3 handshake (the same certificate, the kernel's TCP on the edge
# namespace's loopback), driven by s_time; the client's CPU is not counted.
ip netns exec "$LAB_EDGE_NS" ip link set lo up
ip netns exec "$LAB_EDGE_NS" taskset -c 1 openssl s_server -accept 127.0.0.1:4433 -quiet \
	-cert "$tlsdir/ec.crt" -key "$tlsdir/ec.key" -num_tickets 1 >/dev/null 2>&1 &
ssrv=$!
sleep 1
ticks0=$(awk '{print $14 + $15}' /proc/$ssrv/stat)
stime_out=$(ip netns exec "$LAB_EDGE_NS" taskset -c 0 openssl s_time -connect 127.0.0.1:4433 \
	-new -tls1_3 -time "$secs" 2>&1 || true)
ticks1=$(awk '{print $14 + $15}' /proc/$ssrv/stat)
kill $ssrv 2>/dev/null || true
wait $ssrv 2>/dev/null || true
/usr/bin/python3 - "$tls_out" "$speed_out" "$stime_out" "$((ticks1 - ticks0))" "$(getconf CLK_TCK)" \
	> "$build/bench-tls.json" <<'PY'
import json, re, sys
tls = json.loads(sys.argv[1].split("BENCH_TLS_JSON ", 1)[1])
sign = float(re.search(r"ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)", sys.argv[2]).group(1))
x25519 = float(re.search(r"ecdh \(X25519\)\s+\S+\s+([\d.]+)", sys.argv[2]).group(1))
# The issue's measure: one signature and one X25519 operation (openssl
# speed's op is the derivation alone).
ideal = 1 / (1 / sign + 1 / x25519)
# The server also generates its X25519 key pair (bench_tls times that
# through the EVP API, as libssl does it): the crypto floor of a handshake.
floor = 1 / (1 / sign + 1 / x25519 + 1 / tls["x25519_keygen_per_s"])
tls.update({"openssl_speed_ecdsap256_sign_per_s": sign, "openssl_speed_x25519_per_s": x25519,
            "tls_speed_handshakes_per_s": round(ideal),
            "tls_handshake_efficiency": round(tls["tls_full_handshakes_per_s_per_core"] / ideal, 3),
            "tls_crypto_floor_handshakes_per_s": round(floor),
            "tls_handshake_efficiency_vs_floor":
                round(tls["tls_full_handshakes_per_s_per_core"] / floor, 3)})
m = re.search(r"(\d+) connections in [\d.]+s", sys.argv[3])
if m and int(m.group(1)) > 0:
    n = int(m.group(1))
    tls["openssl_s_server_handshakes"] = n
    tls["openssl_s_server_full_handshake_us"] = round(int(sys.argv[4]) / int(sys.argv[5]) / n * 1e6, 1)
print(json.dumps(tls))
PY

# ---- 1c. instructions per refused session ------------------------------------
count_insns

# ---- 2. side by side -----------------------------------------------------------
echo "bench: side by side with Postfix ($msgs sessions per point) ..." >&2
/usr/bin/python3 "$root/tests/bench/side_by_side.py" \
	--smtpedge "$build/daemon/smtpedge" --ctl "$build/daemon/smtpedgectl" \
	--tsc-hz "$tsc_hz" --conc 1,5,10,20 --ratio-conc 10 --msgs $msgs \
	> "$build/bench-side.json"

# ---- 2b. side by side with STARTTLS ----------------------------------------------
# The accept path over TLS (EHLO, STARTTLS, a full handshake, EHLO, a 2 KB
# message, QUIT), smtpedge and Postfix (smtpd_tls_security_level = may) with
# the same certificate, driven by a Python smtplib client from the peer
# namespace whose own CPU is not counted.
echo "bench: side by side with Postfix over STARTTLS ($tls_msgs sessions per point) ..." >&2
/usr/bin/python3 "$root/tests/bench/tls_side_by_side.py" \
	--smtpedge "$build/daemon/smtpedge" --ctl "$build/daemon/smtpedgectl" \
	--tsc-hz "$tsc_hz" --cert "$tlsdir/ec.crt" --key "$tlsdir/ec.key" \
	--conc 1,10 --ratio-conc 10 --msgs $tls_msgs \
	> "$build/bench-tls-side.json"

# ---- 2c. side by side on the accept path -------------------------------------------
# The same DKIM-signed message (smtp-source -F) from the forward-confirmed
# peer to each, smtpedge's spool and Postfix's queue both on the disk
# under build-bench/, at 10 and 50 concurrent.
echo "bench: side by side with Postfix on the accept path ($accept_msgs sessions per point) ..." >&2
mkdir -p "$build/bench-accept-lab"
/usr/bin/python3 "$root/tests/bench/accept_side_by_side.py" \
	--smtpedge "$build/daemon/smtpedge" --ctl "$build/daemon/smtpedgectl" \
	--tsc-hz "$tsc_hz" --msg "$dkim_msg" --dir "$build/bench-accept-lab" \
	--conc 10,50 --ratio-conc 50 --msgs $accept_msgs \
	> "$build/bench-accept-side.json"

# ---- 3. the figures, the table, the chart --------------------------------------
/usr/bin/python3 "$root/tests/bench/report.py" \
	--inproc "$build/bench-inproc.json" --side "$build/bench-side.json" \
	--tls "$build/bench-tls.json" --tls-side "$build/bench-tls-side.json" \
	--insns "$build/bench-insns.json" \
	--accept "$build/bench-accept.json" --accept-side "$build/bench-accept-side.json" \
	--out "$build/bench.json" --dat "$build/bench-chart.dat" \
	--command "scripts/bench.sh${1:+ $1}"
gnuplot <<GP
set terminal pngcairo size 900,560 noenhanced
set output "$build/bench.png"
set title "no-PTR sessions refused per second against concurrent sessions (smtp-source, lab, this machine)"
set xlabel "concurrent sessions (smtp-source -s)"
set ylabel "sessions per second"
set key top left
set grid
set logscale x 2
set xtics (1, 5, 10, 20)
plot "$build/bench-chart.dat" using 1:2 with linespoints lw 2 pt 7 title "smtpedge (DPDK worker, af_packet lab port)", \
     "$build/bench-chart.dat" using 1:3 with linespoints lw 2 pt 5 title "Postfix (postscreen + smtpd)"
GP
echo "chart: $build/bench.png"
echo "$build/bench.json"
