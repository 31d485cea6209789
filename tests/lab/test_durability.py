#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Nothing a sender was told is accepted is ever lost: smtpedge is killed
with SIGKILL at random moments while a client sends 1,000 messages one after
another (and restarted each time); afterwards every message that got a 250
is in the spool, whole."""
import hashlib
import json
import random
import signal
import subprocess
import time

import labkit
from labkit import LAB, Edge, expect
from test_smtp import EDGE6, PEER, spool_files, spooled_body


def test_kill_9_during_1000_transactions():
    rng = random.Random(9)
    client = subprocess.Popen(
        ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", PEER, "many",
         LAB["LAB_PEER6_PTR"], EDGE6, "1000", "9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    try:
        while client.poll() is None and kills < 8:
            edge = Edge(prefix=f"se-dur{LAB.get('LAB_ID', '')}").start()
            time.sleep(rng.uniform(1.0, 4.0))
            edge.proc.send_signal(signal.SIGKILL)   # no goodbye, no flush
            edge.proc.wait()
            kills += 1
            edge.kill()
        with Edge(prefix=f"se-dur{LAB.get('LAB_ID', '')}"):   # the rest of the run
            out, err = client.communicate(timeout=900)
    finally:
        if client.poll() is None:
            client.kill()
    expect(client.returncode == 0, f"client: {err[-1000:]}")
    r = json.loads(out)
    expect(kills >= 3, f"only {kills} kills happened")
    expect(len(r["accepted"]) > 500, f"only {len(r['accepted'])} of 1000 accepted")
    by_id = {}
    for path in spool_files():
        head = open(path, "rb").read(400)
        for qid, _ in r["accepted"]:
            if f"id {qid}".encode() in head:
                by_id[qid] = path
    lost = [qid for qid, _ in r["accepted"] if qid not in by_id]
    expect(not lost, f"{len(lost)} messages got a 250 but are not in the spool: {lost[:5]}")
    bad = [qid for qid, h in r["accepted"]
           if hashlib.sha256(spooled_body(by_id[qid])[0]).hexdigest() != h]
    expect(not bad, f"{len(bad)} spooled messages differ from what was sent: {bad[:5]}")
    print(f"  {kills} kills, {len(r['accepted'])} accepted, {r['failed']} failed and retried by no one")


if __name__ == "__main__":
    labkit.main(globals())
