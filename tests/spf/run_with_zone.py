#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/spf/run_with_zone.py — run a test program against a served zone.

usage: run_with_zone.py ZONE.yml PROGRAM [ARGS...]
Serves ZONE.yml (zonedata form, see spf_zone.py) on 127.0.0.1, runs
PROGRAM ARGS... PORT and exits with its status.
"""
import subprocess
import sys

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from spf_zone import Server, Zone


def main():
    with open(sys.argv[1], encoding='utf-8') as f:
        zone = Zone(yaml.safe_load(f))
    server = Server(zone)
    server.start()
    try:
        rc = subprocess.run(sys.argv[2:] + [str(server.port)], timeout=120).returncode
    finally:
        server.stop()
    return rc


if __name__ == '__main__':
    sys.exit(main())
