#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/spf/run_rfc7208.py — the RFC 7208 test suite against spf_check().

For each YAML document of the suite (a scenario: its zonedata and tests)
this serves the zone from a small DNS server on 127.0.0.1 (a port the
kernel picks), writes the cases to a file and runs spf_suite_driver, which
calls the real spf_check() through a libunbound context forwarding to
that server.  A test passes when the result is one of those the suite
accepts.  Explanations are compared too, but only reported: the suite
makes exp= optional.

The zone semantics are the suite's own conventions (see spf_zone.py).

usage: run_rfc7208.py DRIVER SUITE.yml [MIN_PASSED]
"""
import os
import subprocess
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from spf_zone import Server, Zone, raw

MIN_PASSED_DEFAULT = 185


def hexs(s):
    return raw(str(s)).hex()


def run_document(driver, doc):
    zone = Zone(doc.get('zonedata'))
    tests = doc.get('tests') or {}
    server = Server(zone)
    server.start()
    try:
        with tempfile.NamedTemporaryFile('w', suffix='.cases', delete=False) as f:
            for name, t in tests.items():
                f.write('\t'.join([hexs(name), hexs(t['host']), hexs(t.get('helo', '')),
                                   hexs(t.get('mailfrom', ''))]) + '\n')
            cases = f.name
        proc = subprocess.run([driver, str(server.port), cases], capture_output=True,
                              text=True, timeout=120)
        os.unlink(cases)
    finally:
        server.stop()
    got = {}
    for line in proc.stdout.splitlines():
        f = line.split('\t')
        if len(f) >= 4:
            got[f[0]] = (f[1], f[2], f[3])
    trouble = proc.returncode != 0 or proc.stderr.strip() != ''
    if trouble:
        # a crash or a sanitizer report fails the test whatever the count
        print('# driver exit %d: %s' % (proc.returncode, proc.stderr.strip()))
    return tests, got, trouble


def main():
    driver, suite = sys.argv[1], sys.argv[2]
    min_passed = int(sys.argv[3]) if len(sys.argv) > 3 else MIN_PASSED_DEFAULT
    passed = failed = exp_checked = exp_same = 0
    driver_trouble = False
    with open(suite, encoding='utf-8') as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        tests, got, trouble = run_document(driver, doc)
        driver_trouble = driver_trouble or trouble
        for name, t in tests.items():
            want = t['result'] if isinstance(t['result'], list) else [t['result']]
            res, mech, expl = got.get(name, ('(no answer)', '', ''))
            if res in want:
                passed += 1
            else:
                failed += 1
                print('FAIL %s: got %s (%s), want %s' % (name, res, mech, '/'.join(want)))
            if 'explanation' in t and t['explanation'] != 'DEFAULT' and res in want:
                exp_checked += 1
                if expl == t['explanation']:
                    exp_same += 1
                else:
                    print('# explanation of %s: got %r, want %r' % (name, expl, t['explanation']))
    print('# explanations: %d of %d match (informational; exp= is optional)'
          % (exp_same, exp_checked))
    print('%d passed, %d failed' % (passed, failed))
    return 0 if passed >= min_passed and not driver_trouble else 1


if __name__ == '__main__':
    sys.exit(main())
