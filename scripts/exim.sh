#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Unpacks Debian's Exim (exim4-daemon-light) into DIR (default build/exim)
# for the interoperability lab test, and prints the path of its binary.
#
# Exim conflicts with postfix, which the lab needs (smtp-source, smtp-sink),
# so it is never installed: the .debs are fetched with apt-get download and
# unpacked with dpkg -x. The libraries it needs are installed (deps.sh): the
# binary is setuid and re-executes itself without root, so the loader would
# ignore an LD_LIBRARY_PATH.
# Idempotent: nothing is fetched when the binary is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${1:-build/exim}")
BIN=$DIR/root/usr/sbin/exim4
DEBS=(exim4-daemon-light exim4-base)

if [ ! -x "$BIN" ]; then
	rm -rf "$DIR/debs"
	mkdir -p "$DIR/debs"
	cd "$DIR/debs"
	# _apt cannot write here; apt-get then downloads as root (a warning).
	if ! apt-get download "${DEBS[@]}" >/dev/null 2>&1; then
		apt-get update -qq
		apt-get download "${DEBS[@]}" >/dev/null 2>&1
	fi
	rm -rf "$DIR/root"
	for d in "$DIR"/debs/*.deb; do
		dpkg -x "$d" "$DIR/root"
	done
	cd - >/dev/null
fi
[ -x "$BIN" ] || { echo "exim.sh: no $BIN after unpacking" >&2; exit 1; }
echo "$BIN"
