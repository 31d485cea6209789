#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Builds smtpedge: build/ (the daemon and the CLI, -O2 -g), and with
# "all", build-asan/ (ASan+UBSan) and build-fuzz/ (clang, libFuzzer) too.
# Installs missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

setup() {  # setup DIR [meson options...]
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		rm -rf "$dir"
		meson setup "$dir" "$@" >/dev/null
	fi
	meson compile -C "$dir" >/dev/null || meson compile -C "$dir"
}

setup build
if [ "${1:-}" = all ]; then
	setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
	CC=clang setup build-fuzz -Dfuzz=true -Db_lundef=false
fi
