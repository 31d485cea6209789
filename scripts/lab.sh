#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The test lab: two network namespaces joined by a veth pair.
#
#   se-peer  [se-peer0: 2001:db8:1::10/20/30, 198.51.100.10/20/30]
#      |  veth
#   se-edge  [se-edge0: no kernel addresses; smtpedge's DPDK port (af_packet)]
#            [lo: unbound on 127.0.0.1@5353 serving the test zones]
#
# smtpedge runs inside se-edge, so the DPDK end of the veth and the DNS
# server live in a namespace of their own and the root namespace gets no
# address, no route and no interface of the lab's. The kernel on se-edge0
# has IPv6 disabled and no IPv4 address, so only smtpedge answers there.
#
# usage: lab.sh up | down | status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lab.env"

in_peer() { ip netns exec "$LAB_PEER_NS" "$@"; }
in_edge() { ip netns exec "$LAB_EDGE_NS" "$@"; }

rev6() {  # nibble-reversed ip6.arpa name of an IPv6 address
	/usr/bin/python3 -c 'import ipaddress,sys; print(ipaddress.ip_address(sys.argv[1]).reverse_pointer + ".")' "$1"
}
rev4() { rev6 "$1"; }
bulk6() {  # "N address" for each bulk peer
	/usr/bin/python3 -c 'import ipaddress,sys
b = ipaddress.ip_address(sys.argv[1])
for i in range(1, int(sys.argv[2]) + 1): print(i, b + i)' "$LAB_BULK6_BASE" "$LAB_BULK6_COUNT"
}
revzone64() {  # the ip6.arpa zone of the /64 that holds an address
	rev6 "$1" | cut -d. -f17-
}

write_unbound_conf() {
	local c=$LAB_DIR/unbound.conf
	cat > "$c" <<CONF
server:
  interface: 127.0.0.1@$LAB_DNS_PORT
  port: $LAB_DNS_PORT
  do-ip6: no
  do-daemonize: yes
  username: ""
  chroot: ""
  directory: "$LAB_DIR"
  pidfile: "$LAB_DIR/unbound.pid"
  use-syslog: no
  logfile: "$LAB_DIR/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  cache-max-ttl: 5
  # the lab's reverse zones: a name without local-data is NXDOMAIN
  local-zone: "$(revzone64 $LAB_EDGE6)" static
  local-zone: "100.51.198.in-addr.arpa." static
  local-zone: "lab.example." static
  local-data: "$(rev6 $LAB_PEER6_PTR) 300 IN PTR peer-ok.lab.example."
  local-data: "$(rev4 $LAB_PEER4_PTR) 300 IN PTR peer-ok.lab.example."
  local-data: "peer-ok.lab.example. 300 IN AAAA $LAB_PEER6_PTR"
  local-data: "peer-ok.lab.example. 300 IN A $LAB_PEER4_PTR"
  local-data: "$(rev6 $LAB_PEER6_MISMATCH) 300 IN PTR peer-mismatch.lab.example."
  local-data: "$(rev4 $LAB_PEER4_MISMATCH) 300 IN PTR peer-mismatch.lab.example."
  local-data: "peer-mismatch.lab.example. 300 IN AAAA 2001:db8:99::1"
  local-data: "peer-mismatch.lab.example. 300 IN A 198.51.100.99"
  local-zone: "$(rev6 $LAB_PEER6_DNSFAIL)" refuse
  # Sender domains for SPF and DKIM: every lab peer may send for
  # example.org; spf-fail.example allows nobody; spf-temp.example fails to
  # resolve; dkim.example allows nobody but publishes the lab's DKIM key.
  # Every name under slow.example has the apex's records (a redirect zone),
  # so each session of a flood can have a domain of its own that no cache
  # holds: the DNS-delay test (test_slowdns.py) holds those answers back.
  local-zone: "example.org." static
  local-data: 'example.org. 300 IN TXT "v=spf1 ip6:2001:db8:1::/64 ip4:198.51.100.0/24 -all"'
  local-zone: "example.net." static
  local-zone: "spf-fail.example." static
  local-data: 'spf-fail.example. 300 IN TXT "v=spf1 -all"'
  local-zone: "spf-temp.example." refuse
  local-zone: "dkim.example." static
  local-data: 'dkim.example. 300 IN TXT "v=spf1 -all"'
  local-data: '$LAB_DKIM_SELECTOR._domainkey.dkim.example. 300 IN TXT $(dkim_txt)'
  local-zone: "slow.example." redirect
  local-data: 'slow.example. 300 IN TXT "v=spf1 ip6:2001:db8:1::/64 ip4:198.51.100.0/24 -all"'
CONF
	bulk6 | while read -r i a; do
		if [ $((i % 2)) = 0 ]; then
			echo "  local-data: \"$(rev6 "$a") 300 IN PTR bulk-$i.lab.example.\""
			echo "  local-data: \"bulk-$i.lab.example. 300 IN AAAA $a\""
		fi
	done >> "$c"
}

# The lab's DKIM key: made once per lab, published as TXT strings of at
# most 255 characters.
dkim_key() {
	[ -f "$LAB_DIR/dkim.key" ] ||
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
			-out "$LAB_DIR/dkim.key" 2>/dev/null
}
dkim_txt() {
	local p
	p=$(openssl pkey -in "$LAB_DIR/dkim.key" -pubout -outform DER 2>/dev/null | base64 -w0)
	echo "\"v=DKIM1; k=rsa; \" $(echo "p=$p" | fold -w 250 | sed 's/.*/"&"/' | tr '\n' ' ')"
}

up() {
	mkdir -p "$LAB_DIR"
	dkim_key
	ip netns list | grep -qw "$LAB_PEER_NS" || ip netns add "$LAB_PEER_NS"
	ip netns list | grep -qw "$LAB_EDGE_NS" || ip netns add "$LAB_EDGE_NS"
	if ! in_peer ip link show "$LAB_PEER_IF" >/dev/null 2>&1; then
		ip link add "$LAB_PEER_IF" netns "$LAB_PEER_NS" type veth \
			peer name "$LAB_EDGE_IF" netns "$LAB_EDGE_NS"
	fi
	in_edge sysctl -qw "net.ipv6.conf.$LAB_EDGE_IF.disable_ipv6=1"
	in_edge ip link set lo up
	in_edge ip link set "$LAB_EDGE_IF" up
	in_edge ethtool -K "$LAB_EDGE_IF" gro off >/dev/null 2>&1 || true
	in_peer ip link set lo up
	# Full checksums and no super-segments in the frames DPDK sees.
	in_peer ethtool -K "$LAB_PEER_IF" tx off tso off gso off >/dev/null
	in_peer ip link set "$LAB_PEER_IF" up
	for a in $LAB_PEER6_PTR $LAB_PEER6_NOPTR $LAB_PEER6_MISMATCH $LAB_PEER6_DNSFAIL; do
		in_peer ip -6 addr replace "$a/64" dev "$LAB_PEER_IF" nodad
	done
	bulk6 | while read -r _ a; do
		echo "addr replace $a/64 dev $LAB_PEER_IF nodad"
	done | in_peer ip -6 -batch -
	for a in $LAB_PEER4_PTR $LAB_PEER4_NOPTR $LAB_PEER4_MISMATCH; do
		in_peer ip -4 addr replace "$a/24" dev "$LAB_PEER_IF"
	done
	# Clients that do not bind (smtp-source) speak from the peer with a PTR.
	in_peer ip -6 route replace "$LAB_EDGE6/128" dev "$LAB_PEER_IF" src "$LAB_PEER6_PTR"
	in_peer ip -4 route replace "$LAB_EDGE4/32" dev "$LAB_PEER_IF" src "$LAB_PEER4_PTR"
	if ! { [ -f "$LAB_DIR/unbound.pid" ] && kill -0 "$(cat "$LAB_DIR/unbound.pid")" 2>/dev/null; }; then
		write_unbound_conf
		unbound-checkconf "$LAB_DIR/unbound.conf" >/dev/null
		in_edge unbound -c "$LAB_DIR/unbound.conf"
		for _ in $(seq 50); do
			in_edge dig +short +time=1 +tries=1 -p "$LAB_DNS_PORT" @127.0.0.1 \
				peer-ok.lab.example AAAA 2>/dev/null | grep -q . && break
			sleep 0.1
		done
	fi
	echo "lab up: peers in netns $LAB_PEER_NS ($LAB_PEER_IF), smtpedge's port $LAB_EDGE_IF and unbound 127.0.0.1@$LAB_DNS_PORT in netns $LAB_EDGE_NS"
}

down() {
	if [ -f "$LAB_DIR/unbound.pid" ]; then
		kill "$(cat "$LAB_DIR/unbound.pid")" 2>/dev/null || true
	fi
	# Anything still running in the lab's namespaces goes with them.
	for ns in "$LAB_EDGE_NS" "$LAB_PEER_NS"; do
		if ip netns list | grep -qw "$ns"; then
			ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
			ip netns del "$ns"
		fi
	done
	rm -rf "$LAB_DIR"
	echo "lab down"
}

status() {
	ip netns list | grep -E "^($LAB_PEER_NS|$LAB_EDGE_NS)( |$)" || { echo "lab is down"; return 1; }
	in_peer ip -br addr show dev "$LAB_PEER_IF"
	in_edge dig +short -p "$LAB_DNS_PORT" @127.0.0.1 -x "$LAB_PEER6_PTR"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
