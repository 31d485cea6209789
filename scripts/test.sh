#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs every test of smtpedge, on a fresh Debian 12 machine as root:
# installs what is missing, builds the three builds, then runs
#   - the format check (scripts/check-format.sh),
#   - every suite on the normal build (unit, engines, auth, lab),
#   - the same again on the ASan+UBSan build,
#   - the libFuzzer targets for a bounded time,
#   - scripts/run.sh --once, the README's run command, as a smoke test.
# The lab is torn down on any exit. The last line counts the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh all
trap 'bash scripts/lab.sh down >/dev/null 2>&1 || true' EXIT

status=0
# The dialect (CONTRIBUTING.md): every C file as clang-format 14 writes it,
# an SPDX line on every source file, guards named after the path.
if bash scripts/check-format.sh; then
	echo "check-format: ok"
	format_ok=1
else
	echo "check-format: FAILED (scripts/format.sh fixes it)"
	format_ok=0
	status=1
fi
meson test -C build --print-errorlogs --num-processes 2 || status=1
meson test -C build-asan --print-errorlogs --num-processes 2 || status=1
meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2 || status=1
if bash scripts/run.sh --once > build/run-once.log 2>&1; then
	echo "run.sh --once: ok"
	run_ok=1
else
	echo "run.sh --once: FAILED"; tail -30 build/run-once.log
	run_ok=0
	status=1
fi

/usr/bin/python3 - "$run_ok" "$format_ok" <<'PY'
import json, sys
passed = failed = 0
for d in ("build", "build-asan", "build-fuzz"):
    try:
        with open(f"{d}/meson-logs/testlog.json") as f:
            for line in f:
                r = json.loads(line)
                if r["result"] in ("OK", "EXPECTEDFAIL", "SKIP"):
                    passed += r["result"] != "SKIP"
                else:
                    failed += 1
                    print(f"failed: {d}: {r['name']} ({r['result']})")
    except FileNotFoundError:
        pass
for ok in sys.argv[1:]:
    passed += int(ok); failed += 1 - int(ok)
print(f"tests: {passed} passed, {failed} failed")
PY
exit $status
