#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Relay to a real downstream: Postfix's smtp-sink on the edge namespace's
loopback takes the mail ([relay] target); the sender's 250 comes only after
the downstream's, and a downstream that is down costs a 451, never a loss.
The relay is not bound to the work threads: with two of them and a slow
downstream, many messages are on their way to it at once."""
import json
import os
import re
import subprocess
import threading
import time

import labkit
from labkit import LAB, Edge, expect
from test_auth import PTR6, message, send_bytes
from test_smtp import EDGE6, PEER

SINK_DIR = LAB["LAB_DIR"] + "/sink"
PORT = 10025


def relay_conf(extra_relay="", extra=""):
    src = open(os.path.join(labkit.ROOT, "conf/lab.conf")).read()
    src, n = re.subn(r"^spool = .*$", f"target = 127.0.0.1:{PORT}" + extra_relay, src,
                     flags=re.M)
    expect(n == 1, "conf/lab.conf has no spool line")
    src += extra
    path = LAB["LAB_DIR"] + "/relay.conf"
    open(path, "w").write(src)
    return path


class Sink:
    def __init__(self, *opts):
        self.opts = list(opts)  # more smtp-sink options: ["-w", "2"] holds DATA's reply

    def __enter__(self):
        os.makedirs(SINK_DIR, exist_ok=True)
        self.log = open(LAB["LAB_DIR"] + "/sink.log", "ab")
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", LAB["LAB_EDGE_NS"], "/usr/sbin/smtp-sink", "-v", "-u", "root",
             "-d", SINK_DIR + "/%M."] + self.opts + [f"127.0.0.1:{PORT}", "20"],
            stdout=self.log, stderr=self.log)
        ok = labkit.wait_for(lambda: labkit.in_edge(
            "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{PORT}", check=False).returncode == 0,
            timeout=10)
        expect(ok, "smtp-sink did not start")
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait(10)
        self.log.close()


def dumps():
    return sorted(os.listdir(SINK_DIR)) if os.path.isdir(SINK_DIR) else []


def test_relay_delivers_with_our_headers():
    with Sink(), Edge(config=relay_conf()) as edge:
        before = dumps()
        msg = message("alice@example.org", "relayed")
        r = send_bytes(msg, "alice@example.org")
        expect(r["code"] == 250 and r["text"].startswith("2.0.0 Ok: queued as "), f"{r}")
        time.sleep(0.3)
        new = [d for d in dumps() if d not in before]
        expect(len(new) == 1, f"{len(new)} messages at the downstream")
        dump = open(os.path.join(SINK_DIR, new[0]), "rb").read()
        qid = r["text"].split()[-1]
        # smtp-sink stores lines with LF; our headers, then the message.
        expect(f"by mx.lab.example (smtpedge) with ESMTP id {qid}".encode() in dump, "no Received: of ours")
        expect(b"Authentication-Results: mx.lab.example;\n\tiprev=pass" in dump, "no Authentication-Results")
        expect(msg.replace(b"\r\n", b"\n") in dump, "the message is not whole at the downstream")
        expect(edge.stats()["relay_delivered"] == 1, "relay_delivered")


def test_unconfirmed_ptr_name_is_not_passed_on():
    """The mismatch peer (fcrdns = no lets it send): smtp-sink offers
    XCLIENT NAME, and gets [UNAVAILABLE], not the PTR name that does not
    resolve back; our Received: says unknown."""
    with Sink(), Edge(config=relay_conf()):
        before = dumps()
        log_at = os.path.getsize(LAB["LAB_DIR"] + "/sink.log")
        r = send_bytes(message("alice@example.org", "mismatch relayed"), "alice@example.org",
                       src=LAB["LAB_PEER6_MISMATCH"])
        expect(r["code"] == 250, f"{r}")
        time.sleep(0.3)
        new = [d for d in dumps() if d not in before]
        expect(len(new) == 1, f"{len(new)} messages at the downstream")
        dump = open(os.path.join(SINK_DIR, new[0]), "rb").read()
        expect(b"(unknown [IPv6:2001:db8:1::30])" in dump and b"peer-mismatch" not in dump,
               f"headers: {dump[:400]!r}")
        with open(LAB["LAB_DIR"] + "/sink.log", "rb") as f:
            f.seek(log_at)
            log = f.read()
        expect(b"XCLIENT NAME=[UNAVAILABLE]" in log and b"peer-mismatch" not in log,
               f"sink log: {log[-800:]!r}")


def test_downstream_down_gives_451_then_one_delivery():
    with Edge(config=relay_conf()) as edge:
        msg = message("alice@example.org", "retried")
        r = send_bytes(msg, "alice@example.org")
        expect(r["code"] == 451 and r["text"].startswith("4.4."), f"downstream down: {r}")
        expect(edge.stats()["relay_failed"] == 1, "relay_failed")
        with Sink():
            before = dumps()
            r = send_bytes(msg, "alice@example.org")      # the sender retries
            expect(r["code"] == 250, f"downstream back: {r}")
            time.sleep(0.3)
            new = [d for d in dumps() if d not in before]
            expect(len(new) == 1, f"{len(new)} copies delivered, want exactly 1")


class Sessions:
    """The downstream's sessions open at once: its established connections,
    counted every 100 ms while the test runs; the most seen."""

    def __init__(self):
        self.most = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.done.is_set():
            r = labkit.in_edge("ss", "-Htn", "state", "established", f"( sport = :{PORT} )",
                               check=False)
            self.most = max(self.most, len(r.stdout.splitlines()))
            self.done.wait(0.1)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        self.thread.join(10)
        return self.most


def test_ten_senders_at_once_with_two_work_threads():
    """Ten senders at once, two work threads, a downstream that holds each
    DATA reply 2 s: the work threads hand the messages over and go on, so
    more than two are in flight to the downstream at once (never more than
    [relay] connections), and every sender gets its 250 after the
    downstream's."""
    n, conns = 10, 8
    cfg = relay_conf(f"\nconnections = {conns}", "\n[control]\nthreads = 2\n")
    with Sink("-w", "2"), Edge(config=cfg) as edge:
        before = dumps()
        sessions = Sessions().start()
        procs = []
        for i in range(n):
            path = f"{LAB['LAB_DIR']}/concurrent{i}.eml"
            with open(path, "wb") as f:
                f.write(message("alice@example.org", f"concurrent {i}"))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", LAB["LAB_PEER_NS"], "/usr/bin/python3", PEER, "sendfile",
                 PTR6, EDGE6, "alice@example.org", "bob@example.net", path],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            expect(p.returncode == 0, f"peer.py sendfile failed: {err[-1000:]}")
            results.append(json.loads(out))
        most = sessions.stop()
        codes = [r["code"] for r in results]
        expect(codes == [250] * n, f"replies: {results}")
        expect(labkit.wait_for(lambda: len([d for d in dumps() if d not in before]) == n),
               f"{len([d for d in dumps() if d not in before])} messages at the downstream")
        expect(2 < most <= conns, f"{most} sessions at the downstream at once: want more than "
               f"the 2 work threads, at most {conns}")
        st = edge.stats()
        print(f"{n} senders, 2 work threads: {most} sessions at the downstream at once, "
              f"relay_inflight_max {st['relay_inflight_max']}")
        expect(2 < st["relay_inflight_max"] <= conns,
               f"relay_inflight_max {st['relay_inflight_max']}: want more than the 2 work "
               f"threads, at most {conns}")
        expect(2 < st["relay_connections_opened"] <= conns and
               st["relay_connections_open"] <= conns, f"connections: {st}")
        expect(st["relay_delivered"] == n and st["relay_failed"] == 0 and
               st["relay_pipelined"] == n and st["relay_inflight"] == 0 and
               st["relay_queued"] == 0, f"{st}")


if __name__ == "__main__":
    labkit.main(globals())
