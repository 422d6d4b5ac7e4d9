#!/usr/bin/env python3
"""Lean WebSocket peers for bench/migration.py: echo backends and timed echo clients.

A leaner relative of tests/integration/migrate_peer.py (the same minimal RFC 6455 on
asyncio.Protocol, one process drives thousands of connections), trimmed for measuring rather
than proving: it keeps counters and a few timestamps per message instead of full records, and
the backend echoes each client message at once, so the client can time every round trip and
see which backend answered.

Roles:

``server --name NAME``  a WebSocket backend on 127.0.0.1:0 (or ``--port``); prints
            ``listening PORT``. A connection to ``/s/ID`` answers every text message
            ``c ID SEQ`` with ``e ID SEQ NAME`` at once; it counts upgrades by their
            ``X-Wsgate-Resume`` header. Close frames are answered with the same code (then TCP
            is closed), pings with pongs.
``client``  opens ``--count`` sessions ``/s/FIRST`` .. on ``--port`` (at most
            ``--concurrency`` handshakes at once, source addresses 127.0.0.2 ... 127.0.0.251 in
            turn so ephemeral ports never run out), prints ``connected N`` (or ``failed ...``),
            then each session sends ``c ID SEQ`` every ``--interval`` seconds on a fixed grid
            with a random phase (no catch-up burst after a stall; 0: only when told). Every
            echo is checked on arrival: it must be the session's next sequence number (exactly
            once, in order); anything else is an error. Per message the send time, the arrival
            time and the answering backend are kept.

Commands on stdin, one per line, each answered by one stdout line:

``stats``   ``stats sent=S recv=R open=O closed=C errors=E switched=W silent=Q unanswered=N
            upgrades=U resumed=M`` (client: messages sent and echoed, sessions open and closed
            (by a close frame or TCP), errors, sessions answered by more than one backend,
            sessions without an echo yet, messages of open sessions not echoed yet; server:
            upgrades and resumed upgrades).
``kick``    (client) every open session sends one message now; ``kick N``.
``ids``     (server) ``ids ID,ID,...``: the sessions it has open.
``probe INTERVAL ID,ID,...``  (client) those of its sessions send every INTERVAL from now on;
            answered ``probe N`` (how many it has).
``quiet``   every session stops sending; answered like ``stats`` but ``quiet ...``.
``report [SINCE [UNTIL]]``  (client) ``report JSON``: ``{"switches": [[id, old, new, t1, a1,
            t2, a2], ...], "latency": [p50, p99], "probes": [id, ...], "closes": {code: n},
            "errors": [...]}``: for each change of answering backend, the last message answered
            by the old one (sent t1, echo arrived a1) and the first answered by the new one (t2,
            a2); round-trip percentiles (s) of the messages sent from SINCE until UNTIL (monotonic);
            close codes received (not errors here: the parent judges them); the first few
            errors.
``stop`` or EOF  prints ``done`` and exits.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), comparable across processes.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import struct
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x8, 0x9, 0xA
MAX_ERRORS = 20  # per process: the first few explain it


def mask(payload, key):
    """XOR ``payload`` with the 4-byte ``key``."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


def frame(opcode, payload, masked):
    """One final frame (payloads here are always < 126 bytes)."""
    assert len(payload) < 126
    if masked:
        key = os.urandom(4)
        return bytes((0x80 | opcode, 0x80 | len(payload))) + key + mask(payload, key)
    return bytes((0x80 | opcode, len(payload))) + payload


def accept_for(key):
    """Sec-WebSocket-Accept for a key (bytes)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Conn(asyncio.Protocol):
    """One WebSocket connection: a client session, or a backend's side of one."""

    def __init__(self, peer, conn_id=None):
        self.peer = peer
        self.is_client = peer.client
        self.id = conn_id
        self.transport = None
        self.buf = bytearray()
        self.upgraded = False
        self.key = None
        self.done = asyncio.get_running_loop().create_future() if self.is_client else None
        self.closed = False
        self.fragments = None
        # Client: the send schedule and what came back.
        self.interval = peer.interval
        self.timer = None
        self.next_at = None
        self.sent = []      # send time by seq
        self.arrived = []   # echo arrival time by seq
        self.answered = []  # backend name by seq (interned)

    # -- transport ----------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        if self.is_client:
            self.key = base64.b64encode(os.urandom(16))
            transport.write(b"GET /s/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                            b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.id, self.key))

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            if not self._handshake(head):
                return
        self._parse_frames()

    def connection_lost(self, exc):
        self._stop_sending()
        if self.upgraded and not self.closed:
            self.closed = True
            self.peer.closed += 1
            if self.is_client:
                codes = self.peer.close_codes
                codes["no close frame"] = codes.get("no close frame", 0) + 1
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"lost before 101 ({exc!r})"))
        if not self.is_client and self.id is not None:
            self.peer.open_ids.pop(self.id, None)

    # -- handshake ----------------------------------------------------------------------------

    def _handshake(self, head):
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.is_client:
            if lines[0].split(" ")[1:2] != ["101"] or \
                    headers.get("sec-websocket-accept", "").encode() != accept_for(self.key):
                self.done.set_exception(ConnectionError(f"bad upgrade answer {head[:200]!r}"))
                self.transport.abort()
                return False
            self.upgraded = True
            self.done.set_result(None)
            self._schedule(random.uniform(0, self.interval))
            return True
        parts = lines[0].split(" ")
        try:
            self.id = int(parts[1].rsplit("/", 1)[1])
        except (IndexError, ValueError):
            self.id = -1
        resume = headers.get("x-wsgate-resume")
        self.peer.upgrades += 1
        if resume is not None:
            self.peer.resumed += 1
        self.peer.open_ids[self.id] = self
        key = headers.get("sec-websocket-key", "").encode()
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                             % accept_for(key))
        self.upgraded = True
        return True

    # -- client: sending ----------------------------------------------------------------------

    def _schedule(self, delay):
        if self.peer.quiet or self.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        self.next_at = loop.time() + delay
        self.timer = loop.call_at(self.next_at, self._send_next)

    def send_one(self):
        """One message now; False if the session is closed."""
        if self.closed or not self.upgraded or self.transport.is_closing():
            return False
        seq = len(self.sent)
        self.transport.write(frame(OP_TEXT, b"c %d %d" % (self.id, seq), True))
        self.sent.append(time.monotonic())
        self.peer.sent += 1
        return True

    def _send_next(self):
        self.timer = None
        if not self.send_one():
            return
        loop = asyncio.get_running_loop()
        self.next_at = max(self.next_at + self.interval, loop.time())  # no bursts after a stall
        self.timer = loop.call_at(self.next_at, self._send_next)

    def set_interval(self, interval):
        """Send every ``interval`` from now on (the next message within one interval)."""
        self.interval = interval
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.upgraded and not self.closed:
            self._schedule(random.uniform(0, interval))

    def _stop_sending(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- receiving ----------------------------------------------------------------------------

    def _parse_frames(self):
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            masked = b1 & 0x80
            if masked:
                if len(buf) < pos + 4:
                    return
                key = bytes(buf[pos:pos + 4])
                pos += 4
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos:pos + length])
            del buf[:pos + length]
            if masked:
                payload = mask(payload, key)
            if bool(masked) == self.is_client:
                self.peer.error(f"session {self.id}: frame masking wrong for this side")
            self._on_frame(b0 & 0x80, b0 & 0x0F, payload)

    def _on_frame(self, fin, opcode, payload):
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload, self.is_client))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self._on_close(payload)
        elif opcode == OP_CONT or not fin:
            self.fragments = (self.fragments or b"") + payload
            if fin:
                payload, self.fragments = self.fragments, None
                self._on_message(payload)
        elif opcode == OP_TEXT:
            self._on_message(payload)
        else:
            self.peer.error(f"session {self.id}: unexpected opcode {opcode}")

    def _on_message(self, payload):
        parts = payload.split(b" ")
        if self.is_client:
            now = time.monotonic()
            if len(parts) != 4 or parts[0] != b"e" or parts[1] != b"%d" % self.id:
                self.peer.error(f"session {self.id}: unexpected message {payload[:60]!r}")
                return
            seq = int(parts[2])
            if seq != len(self.arrived):
                self.peer.error(f"session {self.id}: echo of {seq} where {len(self.arrived)} "
                                f"was due (sent {len(self.sent)})")
                return
            self.arrived.append(now)
            name = self.peer.intern.setdefault(parts[3], parts[3].decode())
            if self.answered and self.answered[-1] != name:
                self.peer.switched.add(self.id)
            self.answered.append(name)
            self.peer.received += 1
        else:
            if len(parts) != 3 or parts[0] != b"c":
                self.peer.error(f"backend: unexpected message {payload[:60]!r}")
                return
            self.transport.write(frame(OP_TEXT, b"e %s %s %s" % (parts[1], parts[2],
                                                                  self.peer.name), False))
            self.peer.received += 1

    def _on_close(self, payload):
        self._stop_sending()
        if not self.closed:
            self.closed = True
            self.peer.closed += 1
        code = payload[:2] if len(payload) >= 2 else b""
        if self.is_client:
            number = str(struct.unpack("!H", code)[0]) if code else "none"
            self.peer.close_codes[number] = self.peer.close_codes.get(number, 0) + 1
            self.transport.write(frame(OP_CLOSE, code, True))
            asyncio.get_running_loop().call_later(10, self.transport.abort)
        else:
            self.peer.open_ids.pop(self.id, None)
            self.transport.write(frame(OP_CLOSE, code, False))
            self.transport.close()  # the server closes TCP first (RFC 6455 7.1.1)


class Peer:
    """All connections of one role, and the counters."""

    def __init__(self, args):
        self.client = args.role == "client"
        self.name = args.name.encode()
        self.interval = args.interval
        self.quiet = False
        self.conns = {}
        self.open_ids = {}
        self.intern = {}
        self.switched = set()
        self.sent = self.received = self.closed = self.upgrades = self.resumed = 0
        self.errors = []
        self.error_count = 0
        self.close_codes = {}
        self.probes = []

    def error(self, text):
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def totals(self):
        opened = sum(1 for c in self.conns.values() if c.upgraded) if self.client else \
            len(self.open_ids)
        silent = unanswered = 0
        if self.client:
            opened -= self.closed
            live = [c for c in self.conns.values() if c.upgraded and not c.closed]
            silent = sum(1 for c in live if not c.arrived)
            unanswered = sum(len(c.sent) - len(c.arrived) for c in live)
        return (f"sent={self.sent} recv={self.received} open={opened} closed={self.closed} "
                f"errors={self.error_count} switched={len(self.switched)} silent={silent} "
                f"unanswered={unanswered} "
                f"upgrades={self.upgrades} resumed={self.resumed}")

    def report(self, since=0.0, until=float("inf")):
        switches = []
        latencies = []
        for conn in self.conns.values():
            arrived, sent, answered = conn.arrived, conn.sent, conn.answered
            latencies.extend(a - s for a, s in zip(arrived, sent) if since <= s < until)
            for seq in range(1, len(answered)):
                if answered[seq] != answered[seq - 1]:
                    switches.append([conn.id, answered[seq - 1], answered[seq], sent[seq - 1],
                                     arrived[seq - 1], sent[seq], arrived[seq]])
        latencies.sort()

        def pct(q):
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] \
                if latencies else None
        return json.dumps({"switches": switches, "latency": [pct(0.5), pct(0.99)],
                           "probes": self.probes, "closes": self.close_codes,
                           "errors": self.errors},
                          separators=(",", ":"))


async def run_client(peer, args):
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.concurrency)

    async def open_one(index):
        async with limit:
            conn = Conn(peer, index)
            peer.conns[index] = conn
            source = (f"127.0.0.{2 + index % 250}", 0)
            await asyncio.wait_for(loop.create_connection(lambda: conn, "127.0.0.1", args.port,
                                                          local_addr=source), 30)
            await asyncio.wait_for(conn.done, 30)

    ids = range(args.first_id, args.first_id + args.count)
    results = await asyncio.gather(*(open_one(i) for i in ids), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"failed {len(failures)} of {args.count}: {failures[0]!r}", flush=True)
    else:
        print(f"connected {args.count}", flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--name", default="client")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if " " in args.name:
        parser.error("--name must be one word")

    loop = asyncio.get_running_loop()
    peer = Peer(args)
    if args.role == "server":
        server = await loop.create_server(lambda: Conn(peer), "127.0.0.1", args.port,
                                          backlog=4096)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    else:
        asyncio.ensure_future(run_client(peer, args))

    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "stop":
            break
        command = words[0]
        if command == "quiet":
            peer.quiet = True
            for conn in list(peer.conns.values()):
                conn._stop_sending()
            print(f"quiet {peer.totals()}", flush=True)
        elif command == "stats":
            print(f"stats {peer.totals()}", flush=True)
        elif command == "kick":
            print(f"kick {sum(conn.send_one() for conn in list(peer.conns.values()))}",
                  flush=True)
        elif command == "ids":
            print("ids " + ",".join(str(i) for i in sorted(peer.open_ids)), flush=True)
        elif command == "probe" and len(words) == 3:
            interval = float(words[1])
            mine = [peer.conns[int(i)] for i in words[2].split(",") if int(i) in peer.conns]
            for conn in mine:
                conn.set_interval(interval)
                peer.probes.append(conn.id)
            print(f"probe {len(mine)}", flush=True)
        elif command == "report":
            window = [float(w) for w in words[1:3]]
            print(f"report {peer.report(*window)}", flush=True)
        else:
            print(f"unknown command {words!r}", flush=True)
    print("done", flush=True)
    os._exit(0)  # no orderly teardown of thousands of transports


if __name__ == "__main__":
    asyncio.run(main())
