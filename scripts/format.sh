#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# scripts/format.sh — puts every tracked source file in the house dialect:
# clang-format (.clang-format) on each .c and .h, an SPDX line at the top of
# each C, Python, shell and meson file that lacks one, and header guards named
# after the path. It reports, and leaves to a person, C files whose head
# comment does not start with their path. Running it twice changes nothing
# the second time.
#
#   scripts/format.sh           rewrite the files in place
#   scripts/format.sh --check   change nothing; name each file that differs
#                               and exit 1 (scripts/check-format.sh)
#
# clang-format's output differs between releases, so the one named by
# $CLANG_FORMAT (default: clang-format-14, else clang-format) must be 14.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
*) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

SPDX_C='/* SPDX-License-Identifier: BSD-3-Clause */'
SPDX_HASH='# SPDX-License-Identifier: BSD-3-Clause'

cf=${CLANG_FORMAT:-$(command -v clang-format-14 || command -v clang-format || true)}
if [ -z "$cf" ]; then
	echo "format: clang-format not found (scripts/deps.sh installs it)" >&2
	exit 2
fi
ver=$("$cf" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p')
if [ "$ver" != 14 ]; then
	echo "format: $cf is release ${ver:-?}; the dialect is defined by clang-format 14" >&2
	exit 2
fi

# The tracked files of each kind (a file deleted in the work tree is skipped).
tracked() { git ls-files -z -- "$@" | while IFS= read -r -d '' f; do [ -f "$f" ] && echo "$f"; done; }
mapfile -t c_files < <(tracked '*.c' '*.h')
mapfile -t hash_files < <(tracked '*.py' '*.sh' '*.env' 'meson.build' '*/meson.build' \
	'meson_options.txt' '.ci/run')

# The line where the SPDX tag belongs: 1, or 2 after a "#!" line.
spdx_line() { # FILE
	if [ "$(head -c 2 "$1")" = '#!' ]; then echo 2; else echo 1; fi
}

bad=()

# 1. SPDX lines.
for f in "${c_files[@]}"; do
	[ "$(head -n 1 "$f")" = "$SPDX_C" ] && continue
	if [ $check = 1 ]; then
		bad+=("$f: no '$SPDX_C' on line 1")
	elif head -n 5 "$f" | grep -q 'SPDX-License-Identifier'; then
		echo "format: $f: an SPDX line not on line 1; fix it by hand" >&2
	else
		{ echo "$SPDX_C"; cat "$f"; } > "$f.fmt-tmp" && cat "$f.fmt-tmp" > "$f" && rm -f "$f.fmt-tmp"
	fi
done
for f in "${hash_files[@]}"; do
	n=$(spdx_line "$f")
	[ "$(sed -n "${n}p" "$f")" = "$SPDX_HASH" ] && continue
	if [ $check = 1 ]; then
		bad+=("$f: no '$SPDX_HASH' on line $n")
	elif head -n 5 "$f" | grep -q 'SPDX-License-Identifier'; then
		echo "format: $f: an SPDX line not on line $n; fix it by hand" >&2
	elif [ "$n" = 2 ]; then
		sed -i "1a\\$SPDX_HASH" "$f"
	else
		sed -i "1i\\$SPDX_HASH" "$f"
	fi
done

# 2. Each C file's head comment starts with its path and an em dash; each
# header is guarded by SMTPEDGE_ and its path in capitals. A wrong guard
# name is fixed; a head needs words only a person can write.
for f in "${c_files[@]}"; do
	head -n 4 "$f" | grep -qE "^(/\*| \*) $f — " ||
		bad+=("$f: the head comment does not start with '$f — '")
	case "$f" in *.h) ;; *) continue ;; esac
	want=SMTPEDGE_$(echo "$f" | tr 'a-z/.-' 'A-Z___')
	have=$(sed -n 's/^#ifndef \(SMTPEDGE_[A-Z0-9_]*\)$/\1/p' "$f" | head -n 1)
	[ "$have" = "$want" ] && continue
	if [ -z "$have" ]; then
		bad+=("$f: no '#ifndef $want' guard")
	elif [ $check = 1 ]; then
		bad+=("$f: guard $have, not $want")
	else
		sed -i "s/\b$have\b/$want/g" "$f"
	fi
done

# 3. clang-format. "cat >" keeps each file's mode and inode.
if [ ${#c_files[@]} -gt 0 ]; then
	if [ $check = 1 ]; then
		# --dry-run names the first place of each file it would change.
		while IFS= read -r f; do
			bad+=("$f: differs from clang-format's output")
		done < <(printf '%s\0' "${c_files[@]}" |
			xargs -0 "$cf" --style=file --dry-run --ferror-limit=1 2>&1 |
			sed -n 's/^\(.*\):[0-9]*:[0-9]*: warning: code should be clang-formatted.*/\1/p' |
			sort -u)
	else
		printf '%s\0' "${c_files[@]}" | xargs -0 -n 16 -P 2 "$cf" --style=file -i
	fi
fi

if [ ${#bad[@]} -gt 0 ]; then
	printf 'format: %s\n' "${bad[@]}" >&2
	if [ $check = 1 ]; then
		echo "format: ${#bad[@]} problem(s); scripts/format.sh fixes all but head comments" >&2
	else
		echo "format: ${#bad[@]} problem(s) left for a person" >&2
	fi
	exit 1
fi
