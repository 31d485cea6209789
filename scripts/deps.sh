#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs, from Debian's archive, every package that building, running and
# testing smtpedge needs. Idempotent: a machine that has them all makes no
# apt call at all, so run.sh and test.sh can call it every time.
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config clang libclang-rt-14-dev clang-format
  # the dataplane and the checks
  libdpdk-dev dpdk libunbound-dev libspf2-dev libopendkim-dev libssl-dev libevent-dev
  # the lab: namespaces, veth, offloads, the test DNS server
  iproute2 iputils-ping ethtool unbound dnsutils procps psmisc
  # real clients, hostile packets, the downstream and the test harnesses
  python3 python3-scapy python3-yaml python3-dnspython python3-dkim openssl swaks libio-socket-inet6-perl libnet-ssleay-perl postfix
  # Exim's one library the above lacks; Exim itself conflicts with postfix,
  # so scripts/exim.sh unpacks it instead of installing it
  libidn12
  # benchmarks
  gnuplot-nox linux-perf valgrind
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix comes for smtp-source and smtp-sink only: no mail system is set up
# and no daemon starts listening on the machine's port 25.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# unbound's packaged service would compete with the lab's own instance.
systemctl disable --now unbound >/dev/null 2>&1 || true
pkill -x unbound 2>/dev/null || true
