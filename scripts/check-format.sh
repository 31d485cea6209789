#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# scripts/check-format.sh — fails, naming each file, when a tracked source file
# is not what scripts/format.sh would make of it (clang-format's output, an
# SPDX line at the top, the head comment and guard forms). Changes nothing.
set -euo pipefail
exec bash "$(dirname "$0")/format.sh" --check
