#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""scripts/check_layers.py — fails when a file of one layer includes another layer's
header that the layer may not use.

Run by the build (the layer_check targets in the top meson.build), once per
layer: check_layers.py STAMP LAYER ALLOWED FILE... where ALLOWED is a comma-
separated list of the folders LAYER may include from (besides itself). Any
#include "folder/..." of one of our folders outside that list is an error;
system and library headers (<...>) and generated ones ("smtpedge_version.h")
are not ours and pass.
"""
import re
import sys

OURS = {"common", "tls", "dataplane", "dns", "auth", "control", "daemon"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/[^"]*"', re.M)


def main():
    stamp, layer, allowed = sys.argv[1], sys.argv[2], sys.argv[3]
    may = {layer} | {a for a in allowed.split(",") if a}
    bad = []
    for path in sys.argv[4:]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in INCLUDE.finditer(text):
            folder = m.group(1)
            if folder in OURS and folder not in may:
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path}:{line}: {layer}/ may not include "
                           f'"{folder}/...": it may use only '
                           f"{', '.join(sorted(may))}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 1
    with open(stamp, "w") as f:
        f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
