#!/usr/bin/python3
"""A minimal client of the CRI streaming server (`kubectl exec -it`, `kubectl attach`): one WebSocket session.

    stream.py URL STEPS_JSON

URL is what a CRI Exec or Attach call returned (containerd's streaming server, plain http). The session speaks
Kubernetes' channel protocol over WebSocket (RFC 6455), offering `v5.channel.k8s.io` (which can close stdin on its
own) before `v4.channel.k8s.io`: every message is a channel byte and data; channels 0 stdin, 1 stdout, 2 stderr,
3 the error channel (a metav1.Status in JSON when the process ends), 4 terminal resizes; v5's channel 255 closes
the stream whose number follows. STEPS_JSON is a list of steps run in order:

    {"send": TEXT}                   write TEXT to stdin
    {"expect": TEXT, "timeout": S}   wait until stdout + stderr so far contain TEXT (fails the session after S s)
    {"resize": [WIDTH, HEIGHT]}      resize the terminal
    {"close_stdin": true}            end stdin (v5 only; the step fails on v4)
    {"close": true}                  close the connection (what a client's exit or ^C does)
    {"wait": S}                      wait until the server ends the session (at most S s)

Prints one JSON object: the protocol the server chose, stdout and stderr (text, lossy), the status the error
channel carried (null if none), whether the server closed the session, and the failed step if one failed
("failed": null when all ran; exit 1 then). Python's standard library only.
"""

import base64
import json
import os
import select
import socket
import struct
import sys
import time
import urllib.parse

PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
# A session that a test drives must end: no step waits longer than this, whatever it asks.
MAX_WAIT = 120.0


class Session:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise ValueError(f"not a plain http URL: {url!r}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=30)
        path = u.path + (("?" + u.query) if u.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {', '.join(PROTOCOLS)}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the server closed the handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"no upgrade: {head!r}")
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        self.protocol = headers.get("sec-websocket-protocol", "")
        self.out = {1: b"", 2: b""}
        self.status = None
        self.closed = False
        self.hung_up = False
        self.sock.setblocking(False)

    def send(self, channel, data, opcode=2):
        payload = bytes([channel]) + data
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.setblocking(True)
        try:
            self.sock.sendall(head + mask + masked)
        finally:
            self.sock.setblocking(False)

    def frame(self):
        """One whole frame from the buffer, or None: (opcode, payload)."""
        b = self.buf
        if len(b) < 2:
            return None
        opcode, n, at = b[0] & 0x0F, b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack("!Q", b[2:10])[0], 10
        if b[1] & 0x80:
            at += 4  # a server never masks; skip a key if one did
        if len(b) < at + n:
            return None
        self.buf = b[at + n:]
        return opcode, b[at:at + n]

    def pump(self, timeout):
        """Reads what arrives within `timeout` seconds; False once the server has closed the session."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if ready:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                chunk = None
            except ConnectionError:
                chunk = b""
            if chunk == b"":
                self.closed = True
            elif chunk:
                self.buf += chunk
        while True:
            f = self.frame()
            if f is None:
                break
            opcode, payload = f
            if opcode == 8:
                self.closed = True
            elif opcode == 9:
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80) + os.urandom(4))
            elif opcode in (0, 1, 2) and payload:
                channel, data = payload[0], payload[1:]
                if "base64" in self.protocol:
                    data = base64.b64decode(data)
                if channel in self.out:
                    self.out[channel] += data
                elif channel == 3 and data:
                    try:
                        self.status = json.loads(data)
                    except ValueError:
                        self.status = {"raw": data.decode("utf-8", "replace")}
        return not self.closed

    def text(self):
        return (self.out[1] + self.out[2]).decode("utf-8", "replace")


def run(session, steps):
    for i, step in enumerate(steps):
        if "send" in step:
            session.send(0, step["send"].encode())
        elif "expect" in step:
            deadline = time.monotonic() + min(float(step.get("timeout", 20)), MAX_WAIT)
            while step["expect"] not in session.text():
                left = deadline - time.monotonic()
                if left <= 0 or (not session.pump(min(left, 0.2)) and step["expect"] not in session.text()):
                    return f"step {i}: {step['expect']!r} never came"
        elif "resize" in step:
            w, h = step["resize"]
            session.send(4, json.dumps({"Width": w, "Height": h}).encode())
        elif "close_stdin" in step:
            if not session.protocol.startswith("v5"):
                return f"step {i}: {session.protocol!r} cannot close stdin alone"
            session.send(255, bytes([0]))
        elif "close" in step:
            session.sock.close()
            session.closed = session.hung_up = True
        elif "wait" in step:
            deadline = time.monotonic() + min(float(step["wait"]), MAX_WAIT)
            while session.pump(min(deadline - time.monotonic(), 0.2)):
                if time.monotonic() >= deadline:
                    return f"step {i}: the session did not end within {step['wait']} s"
        else:
            return f"step {i}: unknown step {step!r}"
        session.pump(0)
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    session = Session(sys.argv[1])
    failed = run(session, json.loads(sys.argv[2]))
    print(json.dumps({
        "protocol": session.protocol,
        "stdout": session.out[1].decode("utf-8", "replace"),
        "stderr": session.out[2].decode("utf-8", "replace"),
        "status": session.status,
        "server_closed": session.closed and not session.hung_up,
        "failed": failed,
    }))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
