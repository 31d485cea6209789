# SPDX-License-Identifier: BSD-3-Clause
"""tests/lab/labkit.py — what the lab tests share: the lab, a running smtpedge, the peer.

A test script imports this, writes functions named test_*, and calls
labkit.main(globals()). The lab comes up before the first test and goes
down after the last, whatever happened in between, so a failed or
interrupted run leaves no namespace, process or file behind.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "../.."))
LAB_SH = os.path.join(ROOT, "scripts/lab.sh")


def lab_env():
    """scripts/lab.env's values, as bash sees them (LAB_ID applied)."""
    out = subprocess.run(["bash", "-c", f". {ROOT}/scripts/lab.env && "
                          'for v in ${!LAB_*}; do printf "%s=%s\\0" "$v" "${!v}"; done'],
                         capture_output=True, text=True, check=True).stdout
    return {k: v for k, _, v in (kv.partition("=") for kv in out.split("\0") if kv)}


LAB = lab_env()
SMTPEDGE = os.environ.get("SMTPEDGE", os.path.join(ROOT, "build/daemon/smtpedge"))
SMTPEDGECTL = os.environ.get("SMTPEDGECTL", os.path.join(ROOT, "build/daemon/smtpedgectl"))


def sh(*cmd, check=True, timeout=60, **kw):
    return subprocess.run(list(cmd), check=check, timeout=timeout,
                          capture_output=True, text=True, **kw)


def in_peer(*cmd, **kw):
    return sh("ip", "netns", "exec", LAB["LAB_PEER_NS"], *cmd, **kw)


def in_edge(*cmd, **kw):
    return sh("ip", "netns", "exec", LAB["LAB_EDGE_NS"], *cmd, **kw)


def lab_up():
    sh("bash", LAB_SH, "up")


def lab_down():
    sh("bash", LAB_SH, "down", check=False)


class Edge:
    """smtpedge on the lab's DPDK port, in the edge namespace."""

    def __init__(self, config=None, prefix=None, extra_eal=()):
        self.config = config or os.path.join(ROOT, "conf/lab.conf")
        self.prefix = prefix or f"se-test{LAB.get('LAB_ID', '')}-{os.getpid()}"
        self.extra_eal = list(extra_eal)
        self.proc = None
        self.log_path = f"/tmp/{self.prefix}.log"

    def start(self, timeout=20):
        os.makedirs(LAB["LAB_DIR"] + "/spool", exist_ok=True)
        # The lab's files live under LAB_DIR (another with LAB_ID set).
        text = open(self.config).read().replace("/run/smtpedge-lab/", LAB["LAB_DIR"] + "/")
        self.config = f"{LAB['LAB_DIR']}/{self.prefix}.conf"
        with open(self.config, "w") as f:
            f.write(text)
        cmd = ["ip", "netns", "exec", LAB["LAB_EDGE_NS"], SMTPEDGE,
               *shlex.split(LAB["LAB_EAL_ARGS"]), "--file-prefix", self.prefix,
               *self.extra_eal, "--", "--config", self.config]
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtpedge exited {self.proc.returncode}: {self.read_log()}")
            if "smtpedge: started" in self.read_log():
                r = self.ctl("version", check=False)
                if r.returncode == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"smtpedge did not start: {self.read_log()}")

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def ctl(self, *args, check=True):
        return sh(SMTPEDGECTL, "--file-prefix", self.prefix, *args, check=check)

    def stats(self):
        r = self.ctl("stats", "--json")
        return json.loads(r.stdout)["/smtpedge/stats"]

    def stop(self, sig=signal.SIGINT, timeout=15):
        """Stop it as an operator would; returns the exit code."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("smtpedge did not stop on a signal")
        finally:
            self.log.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.log.close()
        sh("rm", "-rf", f"/var/run/dpdk/{self.prefix}", check=False)
        self.check_sanitizers()

    def check_sanitizers(self):
        """A sanitizer build reports into the log: any report fails the test."""
        log = self.read_log()
        for mark in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if mark in log:
                raise Failure(f"sanitizer report in {self.log_path}:\n{log[-3000:]}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


def delta(after, before, key):
    return after.get(key, 0) - before.get(key, 0)


def wait_for(pred, timeout=10, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Failure(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


class DnsDelay:
    """scripts/dnsdelay.py in the edge namespace, listening on listen
    (addr@port) in front of the lab's unbound, holding back the answers for
    names under slow_suffix by slow_ms; stopped by its own pid."""

    def __init__(self, listen, slow_suffix, slow_ms):
        self.cmd = ["ip", "netns", "exec", LAB["LAB_EDGE_NS"], "/usr/bin/python3",
                    os.path.join(ROOT, "scripts/dnsdelay.py"), "--listen", listen,
                    "--upstream", f"127.0.0.1@{LAB['LAB_DNS_PORT']}", "--delay-ms", "0",
                    "--slow", f"{slow_suffix}={slow_ms}"]

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("dnsdelay: "):
            self.proc.kill()
            raise Failure(f"dnsdelay did not start: {line}")
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(tests):
    """Run every test_* in the caller's globals inside one lab."""
    names = [n for n in tests if n.startswith("test_") and callable(tests[n])]
    passed = failed = 0

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    lab_down()
    try:
        lab_up()
        for name in names:
            t0 = time.time()
            try:
                tests[name]()
                passed += 1
                print(f"ok   {name} ({time.time() - t0:.1f}s)", flush=True)
            except Exception as e:  # a failed test must not stop the others
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
    finally:
        lab_down()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not names else 0)
