# SPDX-License-Identifier: BSD-3-Clause
"""tests/relay/fake_mta.py — a scriptable downstream MTA for the relay tests.

An asyncio SMTP/LMTP server on 127.0.0.1 and ::1 (one port of its own, from
the kernel), run in a thread of the test process. Each test gives it a
scenario: what to offer in the EHLO reply and how to answer each command,
including misbehaviour (drop the connection, never answer, garbage, an
endless reply). It records every session: the command lines received and
each message's bytes after un-stuffing, so a test can compare them with
what was handed to the relay.

Scenario keys (all optional):
  greeting   reply to the connection            ("220 fake.test ESMTP")
  caps       EHLO keywords after the first line (["PIPELINING", "8BITMIME"])
  caps_after_xclient  the same for an EHLO after an XCLIENT in the session
             (Postfix answers it as the client XCLIENT named); default caps
  lmtp       expect LHLO; after the dot, one reply per accepted recipient
  replies    {VERB: reply or [reply, ...]} for EHLO/LHLO/XCLIENT/MAIL/RCPT/
             DATA/DOT/RSET; a list is indexed by the command's number in the
             transaction (RCPT), in the session (XCLIENT) or by the
             accepted recipient (LMTP DOT);
             a reply may also be a dict {connection number: reply}.
             Special replies: DROP (close without answering), HANG (never
             answer), STALL (354, then read nothing more), GARBAGE (a line that is no reply), HUGE (an endless
             multiline reply), LONGLINE (10 kB without a line end).
  idle_close_ms  after a message, a connection idle this long is given
             "421 4.4.2 timeout" and shut for writing (Postfix's smtpd
             closes); anything the client still sends is recorded
  delay_ms   hold every reply (the greeting too) this long: a slow
             downstream, so that sessions overlap

Besides the commands, each session records for each command line the
bytes that had already arrived behind it when it was read (`behind`): with
PIPELINING, the commands the client sent in the same write.  And the fake
counts its sessions open at once (max_active).
"""

import asyncio
import socket
import threading
import time

DEFAULTS = {
    "EHLO": None, "LHLO": None, "HELO": "250 fake.test",
    "XCLIENT": "220 fake.test ESMTP", "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok", "DATA": "354 End data with <CR><LF>.<CR><LF>",
    "DOT": "250 2.0.0 Ok: queued as FAKE{n}", "RSET": "250 2.0.0 Ok",
    "NOOP": "250 2.0.0 Ok", "QUIT": "221 2.0.0 Bye",
}


class Session:
    def __init__(self, number):
        self.number = number
        self.cmds = []          # command lines, decoded, without CRLF
        self.msgs = []          # message bytes, un-stuffed
        self.closed_by_peer = False
        self.xclients = 0       # XCLIENT commands received
        self.behind = []        # (command, bytes already received after it)


class FakeMTA:
    def __init__(self, scenario=None):
        self.sc = dict(scenario or {})
        self.sessions = []
        self.delivered = 0
        self.active = 0             # sessions not yet ended
        self.max_active = 0         # the most sessions open at once
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = None
        self.writers = set()
        self.thread.start()
        self.ready.wait(5)
        if self.port is None:
            raise RuntimeError("fake MTA did not start")

    # -- lifecycle -------------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()
        # Close what is left, so no task outlives the test.
        for w in list(self.writers):
            w.close()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(
            asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    async def _start(self):
        for _ in range(20):
            s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s6.bind(("::1", port))
            except OSError:
                s4.close()
                s6.close()
                continue
            self.servers = []
            for s in (s4, s6):
                srv = await asyncio.start_server(self._serve, sock=s,
                                                 limit=1 << 20)
                self.servers.append(srv)
            self.port = port
            return

    def close(self):
        def stop():
            for srv in self.servers:
                srv.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one session -----------------------------------------------------
    def _reply_for(self, verb, index, sess):
        r = self.sc.get("replies", {}).get(verb, DEFAULTS.get(verb))
        if isinstance(r, dict):
            r = r.get(sess.number, DEFAULTS.get(verb))
        if isinstance(r, list):
            r = r[index] if index < len(r) else r[-1]
        if r is None and verb in ("EHLO", "LHLO"):
            caps = self.sc.get("caps", [])
            if sess.xclients:
                caps = self.sc.get("caps_after_xclient", caps)
            lines = ["fake.test"] + list(caps)
            out = ["250-" + l for l in lines[:-1]] + ["250 " + lines[-1]]
            return "\r\n".join(out)
        if r is None:
            return "502 5.5.2 Error: command not recognized"
        return r

    async def _send(self, w, reply, sess):
        """Sends a reply; False when the session must end."""
        if self.sc.get("delay_ms"):
            await asyncio.sleep(self.sc["delay_ms"] / 1000)
        if reply == "DROP":
            sess.closed_by_peer = True
            w.close()
            return False
        if reply in ("HANG", "STALL"):
            if reply == "STALL":
                w.write(b"354 go ahead\r\n")
            await asyncio.sleep(3600)
            return False
        if reply == "GARBAGE":
            w.write(b"hello there\r\n")
        elif reply == "HUGE":
            try:
                for _ in range(20000):
                    w.write(b"250-" + b"x" * 60 + b"\r\n")
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            return False
        elif reply == "LONGLINE":
            w.write(b"250 " + b"y" * 10000)
        else:
            n = self.delivered
            w.write((reply.replace("{n}", str(n)) + "\r\n").encode())
        await w.drain()
        return True

    async def _read_data(self, r):
        out = bytearray()
        while True:
            line = await r.readuntil(b"\n")
            if line == b".\r\n":
                return bytes(out)
            if line.startswith(b"."):
                line = line[1:]
            out += line

    async def _serve(self, r, w):
        with self.lock:
            sess = Session(len(self.sessions))
            self.sessions.append(sess)
        self.writers.add(w)
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lmtp = self.sc.get("lmtp", False)
        rcpt_i = 0
        accepted = 0
        idle = self.sc.get("idle_close_ms")
        after_msg = False
        try:
            if not await self._send(w, self.sc.get(
                    "greeting", "220 fake.test ESMTP"), sess):
                return
            while True:
                if idle and after_msg:
                    try:
                        line = await asyncio.wait_for(r.readuntil(b"\n"),
                                                      idle / 1000)
                    except asyncio.TimeoutError:
                        w.write(b"421 4.4.2 fake.test Error: timeout\r\n")
                        await w.drain()
                        sess.closed_by_peer = True
                        # Only our side is shut: whatever the client still
                        # sends (it should send nothing) is recorded.
                        w.write_eof()
                        while True:
                            line = await asyncio.wait_for(
                                r.readuntil(b"\n"), 2)
                            sess.cmds.append(
                                line.rstrip(b"\r\n").decode("latin-1"))
                else:
                    line = await r.readuntil(b"\n")
                cmd = line.rstrip(b"\r\n").decode("latin-1")
                sess.cmds.append(cmd)
                # What the client sent with it and is already here (the
                # reader's buffer: no public way to look into it).
                sess.behind.append((cmd, bytes(r._buffer)))
                verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
                index = 0
                if verb == "MAIL":
                    rcpt_i = accepted = 0
                if verb == "RCPT":
                    index = rcpt_i
                    rcpt_i += 1
                if verb == "XCLIENT":
                    index = sess.xclients
                    sess.xclients += 1
                reply = self._reply_for(verb, index, sess)
                if verb == "RCPT" and reply[:1] == "2":
                    accepted += 1
                if verb == "QUIT":
                    await self._send(w, reply, sess)
                    return
                if verb in ("MAIL", "RSET", "XCLIENT", "EHLO", "LHLO"):
                    after_msg = False
                if not await self._send(w, reply, sess):
                    return
                if verb != "DATA" or not reply.startswith("354"):
                    continue
                data = await self._read_data(r)
                with self.lock:
                    sess.msgs.append(data)
                    self.delivered += 1
                sess.cmds.append("<DOT>")
                replies = range(accepted) if lmtp else range(1)
                for i in replies:
                    if not await self._send(
                            w, self._reply_for("DOT", i, sess), sess):
                        return
                after_msg = True
        except (asyncio.IncompleteReadError, ConnectionError, OSError,
                asyncio.LimitOverrunError, asyncio.CancelledError,
                asyncio.TimeoutError):
            pass
        finally:
            self.writers.discard(w)
            w.close()
            with self.lock:
                self.active -= 1

    # -- for the tests ---------------------------------------------------
    def wait_ended(self, timeout=5):
        """Waits until every session has ended (the client's last command
        may still be on its way when the client process exits)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.01)
        return False

    def all_msgs(self):
        with self.lock:
            return [m for s in self.sessions for m in s.msgs]
