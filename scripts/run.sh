#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs smtpedge on its lab, on a fresh Debian 12 machine as root: installs
# what is missing, builds, brings up the lab (scripts/lab.sh), starts
# smtpedge on the lab's DPDK port with conf/lab.conf, and shows it working
# from a peer. Then it stays up until Ctrl-C (or, with --once, stops after
# the demonstration), and takes the lab down on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lab.env
once=0
[ "${1:-}" = "--once" ] && once=1

bash scripts/build.sh
bash scripts/lab.sh up
PREFIX=smtpedge-lab${LAB_ID:-}
LOG=$LAB_DIR/smtpedge.log
CONF=$LAB_DIR/smtpedge.conf
mkdir -p "$LAB_DIR/spool"
# The lab's files live under LAB_DIR (another with LAB_ID set).
sed "s|/run/smtpedge-lab/|$LAB_DIR/|" conf/lab.conf > "$CONF"

pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -INT "$pid"; wait "$pid" || true
		tail -1 "$LOG"
	fi
	bash scripts/lab.sh down >/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086 # LAB_EAL_ARGS is a list of words
ip netns exec "$LAB_EDGE_NS" build/daemon/smtpedge $LAB_EAL_ARGS --file-prefix "$PREFIX" \
	-- --config "$CONF" > "$LOG" 2>&1 &
pid=$!
for _ in $(seq 100); do
	grep -q "smtpedge: started" "$LOG" && build/daemon/smtpedgectl --file-prefix "$PREFIX" version >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$LOG"; exit 1; }
	sleep 0.1
done
grep "smtpedge: started" "$LOG"

peer() { ip netns exec "$LAB_PEER_NS" "$@"; }
echo
echo "== from the peer namespace: ping the DPDK port"
peer ping -6 -c 3 -i 0.2 -W 1 "$LAB_EDGE6" | tail -2
peer ping -c 3 -i 0.2 -W 1 "$LAB_EDGE4" | tail -2
swaks_from() {  # swaks_from SRC FROM: one message to the edge over IPv6
	peer swaks --server "$LAB_EDGE6" --local-interface "$1" --from "$2" \
		--to bob@example.net --helo client.lab.example \
		--header "Subject: smtpedge demo from $1" 2>&1 |
		grep -E '^(<-|<\*\*|\*\*\*) ' | grep -vE '^<-  250-' || true
}
echo
echo "== SMTP from $LAB_PEER6_PTR (PTR, SPF pass): accepted into the spool"
ok=$(swaks_from "$LAB_PEER6_PTR" alice@example.org)
echo "$ok"
echo
echo "== SMTP from $LAB_PEER6_NOPTR (no PTR): refused at MAIL FROM"
refused=$(swaks_from "$LAB_PEER6_NOPTR" alice@example.org)
echo "$refused"
echo
echo "== SMTP from $LAB_PEER6_PTR, sender spf-fail.example (neither SPF nor DKIM): 450"
soft=$(swaks_from "$LAB_PEER6_PTR" carol@spf-fail.example)
echo "$soft"
echo
echo "== the spooled message ($LAB_DIR/spool/new)"
f=$(ls -t "$LAB_DIR"/spool/new/* 2>/dev/null | head -1)
[ -n "$f" ] && sed -n '1,12p' "$f"
echo
echo "== the transaction log"
grep 'event=transaction' "$LOG" || true
echo
echo "== smtpedgectl --file-prefix $PREFIX stats (non-zero counters)"
build/daemon/smtpedgectl --file-prefix "$PREFIX" stats | awk '$2 != "0"'

if [ $once = 1 ]; then
	# The demonstration must have been answered by smtpedge itself.
	build/daemon/smtpedgectl --file-prefix "$PREFIX" stats --json |
		/usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)["/smtpedge/stats"]; sys.exit(0 if s["echo6_replies"] >= 3 and s["echo4_replies"] >= 3 else 1)'
	echo "$ok" | grep -q '<-  250 2.0.0 Ok: queued as'
	echo "$refused" | grep -q '550 5.7.25 Service unavailable, sending IPv6 address \[2001:db8:1::20\] must have a reverse DNS record'
	echo "$soft" | grep -q '450 4.7.26 Service unavailable, message sent over IPv6 must pass either SPF or DKIM validation'
	exit 0
fi
echo
echo "smtpedge is running in netns $LAB_EDGE_NS (log: $LOG)."
echo "Try: ip netns exec $LAB_PEER_NS ping -6 $LAB_EDGE6"
echo "     build/daemon/smtpedgectl --file-prefix $PREFIX stats"
echo "Ctrl-C stops smtpedge and takes the lab down."
wait "$pid"
