# SPDX-License-Identifier: BSD-3-Clause
"""What test_faults.py and test_hostile.py share: the peers they send
from, the pools they check, and the spool as they read it.

A spooled message is our Received: field, our Authentication-Results:
field (the README's "Headers"), then exactly the bytes the sender sent,
dot-unstuffed. The tests compare the SHA-256 of those bytes with what the
client sent.
"""
import glob
import hashlib
import ipaddress

from labkit import LAB, expect, wait_for

SPOOL = LAB["LAB_DIR"] + "/spool"
AUTHSERV = b"Authentication-Results: mx.lab.example;"
POOL_KEYS = ("mbufs_free", "txrecs_free", "body_chunks_free", "request_ring_used",
             "verdict_ring_used")


def even_bulk_peers():
    """The bulk peers with a forward-confirmed PTR (::1:2, ::1:4, ...): the
    PTR rule lets them send."""
    base = ipaddress.ip_address(LAB["LAB_BULK6_BASE"])
    return [str(base + i) for i in range(2, int(LAB["LAB_BULK6_COUNT"]) + 1, 2)]


def settled(edge, start, timeout=60):
    """Waits until no session is active and the pools are back at start;
    returns the last stats either way."""
    def done():
        s = edge.stats()
        ok = s["sessions_active"] == 0 and all(s["pools"][k] == start[k] for k in POOL_KEYS)
        return s if ok else None
    return wait_for(done, timeout=timeout, step=0.5) or edge.stats()


def new_files():
    return set(glob.glob(SPOOL + "/new/*"))


def index():
    """queue id -> path, for every message in spool/new."""
    idx = {}
    for p in new_files():
        with open(p, "rb") as f:
            head = f.read(1000)
        i = head.find(b"with ESMTP id ")
        if i >= 0:
            idx[head[i + 14:].split()[0].rstrip(b";").decode()] = p
    return idx


def sent_bytes(path):
    """The message as the sender sent it: the file without our two fields."""
    with open(path, "rb") as f:
        data = f.read()
    expect(data.startswith(b"Received: from "), f"{path} does not start with our Received:")
    lines = data.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    if lines[i].startswith(AUTHSERV):
        i += 1
        while lines[i].startswith(b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


def sha256(path):
    return hashlib.sha256(sent_bytes(path)).hexdigest()


def check(results):
    """Every result {"qid", "sha256", "size"} is spooled byte-exact: a list
    of what is not (empty when all are)."""
    idx, bad = index(), []
    for r in results:
        p = idx.get(r["qid"])
        if not p:
            bad.append(f"{r['qid']}: not in the spool")
        elif sha256(p) != r["sha256"]:
            bad.append(f"{r['qid']} ({r['size']} bytes): spooled copy differs")
    return bad
