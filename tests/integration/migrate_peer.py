#!/usr/bin/env python3
"""Many streaming WebSocket peers in one lean subprocess, for the session-migration tests.

The same approach as stream_peer.py (a minimal RFC 6455 on asyncio.Protocol, no per-message
coroutines, one process drives a thousand connections on a loaded 2-core machine), but every
message names its sender and everything is recorded, so the parent can join the records of
several backends per connection and check that each message arrived exactly once, in order,
across a move from one backend to another.

Roles:

``server --name NAME``  a WebSocket backend on 127.0.0.1:0 (or ``--host``, ``--port``).
            Prints ``listening PORT``. A connection to ``/s/ID`` (a *segment* of session ID)
            streams ``b ID NAME SEQ`` every ``--interval`` seconds, SEQ from 0 per segment, and
            records every ``c ID SEQ`` it receives. It records the upgrade's ``X-Wsgate-Resume``
            (None without one) and ``X-Wsgate-Connection-Id``. ``--subprotocol X`` answers X to an
            upgrade that offers any subprotocol (whether or not X is among them).
            ``--refuse-resume STATUS`` answers an upgrade carrying X-Wsgate-Resume with that
            HTTP status and closes (the attempt is recorded, ``refused`` = STATUS).
            ``--close-delay S`` keeps sending for S seconds after a close frame before it
            replies (default 0: stop sending, reply at once). A request without
            ``Upgrade: websocket`` (a health check) is answered 200 ``ok`` (503 after the
            ``unhealthy`` command) and closed; it is not a connection of the records.
``client``  opens ``--count`` connections to ``/s/FIRST`` .. ``/s/FIRST+N-1`` (``--first-id``,
            default 0) on ``--port``, offering ``--protocols`` if given. Prints ``connected N``
            once all are upgraded (``failed ...`` otherwise), then streams ``c ID SEQ`` every
            ``--interval`` and records every message received (backend name and seq), every
            close frame and the TCP close. A text message ``p ID K`` (a push through wsgate's
            connections API) is recorded apart, in ``pushes``.

``--fragment-gap S`` (either role, below ``--interval``): each message goes as two frames, the
second S seconds after the first, so that a message is often in flight. A close frame received,
``quiet`` or the next message sends a pending second half at once.

Either role answers a close frame with the same code (the server then closes TCP, the client
waits for the server's TCP close) and a ping with a pong.

Commands on stdin, one per line, each answered by one stdout line:

``stats``   ``stats sent=S recv=R open=O closed=C resumed=U refused=F health=H pushes=P``
            (totals over all connections: messages sent, messages received (pushes not
            counted), connections upgraded and still open, connections that got a close frame
            or lost TCP, upgrades with X-Wsgate-Resume, resumes refused, health checks
            answered, and pushes received).
``quiet``   every connection stops sending (for good); answered like ``stats`` but ``quiet ...``.
``detail``  ``detail JSON``: one row per connection (see ``Peer.detail``).
``ids``     ``ids JSON``: ``{session id: X-Wsgate-Connection-Id}`` of the open connections.
``unhealthy``, ``healthy``  the server answers health checks 503 (200) from now on; answered
            like ``stats``.
``stop`` or EOF  writes ``--results`` (JSON: one record per connection, see ``Conn.record``),
            prints ``done`` and exits.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), comparable with the parent process.
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
MAX_ERRORS = 5  # per connection: the first few explain it, the rest only cost memory


def mask(payload, key):
    """XOR ``payload`` with the 4-byte ``key``."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


def frame(opcode, payload, masked, fin=True):
    """One frame (payloads here are always < 126 bytes)."""
    assert len(payload) < 126
    first = (0x80 if fin else 0) | opcode
    if masked:
        key = os.urandom(4)
        return bytes((first, 0x80 | len(payload))) + key + mask(payload, key)
    return bytes((first, len(payload))) + payload


def accept_for(key):
    """Sec-WebSocket-Accept for a key (bytes)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Conn(asyncio.Protocol):
    """One WebSocket connection (a client session, or one backend segment of a session)."""

    def __init__(self, peer, conn_id=None):
        self.peer = peer
        self.is_client = peer.role == "client"
        self.id = conn_id
        self.transport = None
        self.buf = bytearray()
        self.upgraded = False
        self.key = None
        self.handshake_done = asyncio.get_running_loop().create_future() if self.is_client \
            else None
        self.quiet = False
        self.sent_times = []
        self.received = []  # client: [backend name, seq]; server: the client's seqs
        self.errors = []
        self.closes = []  # close codes received (a client should see none, or exactly one)
        self.close_time = None
        self.eof_time = None
        self.opened = None
        self.timer = None
        self.next_at = None
        self.continuation = None  # (timer, frame) of a message's second half, while due
        self.fragments = None
        self.linger = None
        # Upgrade details: the server's view of the request, the client's of the answer.
        self.path = None
        self.resume = None
        self.connection_id = None
        self.subprotocol = None
        self.refused = None
        self.plain = False  # a plain HTTP request (health check), answered and closed
        self.pushes = []  # client: the K of each push ``p ID K`` received

    # -- transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        if self.is_client:
            self.key = base64.b64encode(os.urandom(16))
            offer = b""
            if self.peer.protocols:
                offer = b"Sec-WebSocket-Protocol: %s\r\n" % self.peer.protocols.encode()
            transport.write(b"GET /s/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s"
                            b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.id, self.key, offer))

    def data_received(self, data):
        if self.refused is not None or self.plain:
            return
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
        self.eof_time = time.monotonic()
        self._stop_sending()
        if self.linger is not None:
            self.linger.cancel()
        if self.handshake_done is not None and not self.handshake_done.done():
            self.handshake_done.set_exception(ConnectionError(f"lost before 101 ({exc!r})"))
        self.peer.connection_ended(self)

    # -- handshake ----------------------------------------------------------------------------

    def _handshake(self, head):
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.is_client:
            ok = lines[0].split(" ")[1:2] == ["101"] and \
                headers.get("sec-websocket-accept", "").encode() == accept_for(self.key)
            if not ok:
                self.handshake_done.set_exception(ConnectionError(f"bad upgrade answer {head!r}"))
                self.transport.abort()
                return False
            self.subprotocol = headers.get("sec-websocket-protocol")
            self.handshake_done.set_result(None)
        else:
            if headers.get("upgrade", "").lower() != "websocket":
                self.plain = True
                self.peer.health_checks += 1
                status = b"503 Unhealthy" if self.peer.unhealthy else b"200 OK"
                body = b"unhealthy\n" if self.peer.unhealthy else b"ok\n"
                self.transport.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\n"
                                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                     % (status, len(body), body))
                self.transport.close()
                return False
            parts = lines[0].split(" ")
            self.path = parts[1] if len(parts) > 1 else ""
            try:
                self.id = int(self.path.rsplit("/", 1)[1])
            except (IndexError, ValueError):
                self.id = -1
            self.resume = headers.get("x-wsgate-resume")
            self.connection_id = headers.get("x-wsgate-connection-id")
            self.opened = time.monotonic()
            self.peer.register(self)
            if self.resume is not None and self.peer.refuse_resume:
                self.refused = self.peer.refuse_resume
                self.transport.write(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n" % self.refused)
                self.transport.close()
                return False
            protocol = b""
            if self.peer.subprotocol and "sec-websocket-protocol" in headers:
                self.subprotocol = self.peer.subprotocol
                protocol = b"Sec-WebSocket-Protocol: %s\r\n" % self.subprotocol.encode()
            key = headers.get("sec-websocket-key", "").encode()
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
                                 % (accept_for(key), protocol))
        self.upgraded = True
        if self.opened is None:
            self.opened = time.monotonic()
        self._start_sending()
        return True

    # -- sending ------------------------------------------------------------------------------

    def _start_sending(self):
        if self.peer.interval <= 0 or self.peer.quiet:
            return
        loop = asyncio.get_running_loop()
        self.next_at = loop.time() + random.uniform(0, self.peer.interval)
        self.timer = loop.call_at(self.next_at, self._send_next)

    def _send_next(self):
        self.timer = None
        if self.quiet or self.transport.is_closing():
            return
        if self.closes and self.linger is None:
            return
        self.finish_message()  # never two messages' frames interleaved
        seq = len(self.sent_times)
        if self.is_client:
            payload = b"c %d %d" % (self.id, seq)
        else:
            payload = b"b %d %s %d" % (self.id, self.peer.name, seq)
        loop = asyncio.get_running_loop()
        if self.peer.fragment_gap > 0:  # two frames, the second one --fragment-gap later
            cut = payload.rindex(b" ")
            self.transport.write(frame(OP_TEXT, payload[:cut], self.is_client, fin=False))
            rest = frame(OP_CONT, payload[cut:], self.is_client)
            self.continuation = (loop.call_later(self.peer.fragment_gap, self.finish_message),
                                 rest)
        else:
            self.transport.write(frame(OP_TEXT, payload, self.is_client))
        self.sent_times.append(time.monotonic())
        self.next_at += self.peer.interval
        self.next_at = max(self.next_at, loop.time())  # no bursts after a stall
        self.timer = loop.call_at(self.next_at, self._send_next)

    def finish_message(self):
        """Send the second half of a fragmented message now, if one is due."""
        if self.continuation is None:
            return
        timer, rest = self.continuation
        self.continuation = None
        timer.cancel()
        if not self.transport.is_closing():
            self.transport.write(rest)

    def _stop_sending(self):
        """No new message (one half sent is finished at once)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.finish_message()

    def go_quiet(self):
        """Stop sending for good."""
        self.quiet = True
        self._stop_sending()

    # -- receiving ----------------------------------------------------------------------------

    def _error(self, text):
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

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
                self._error(f"frame masking wrong for this side (masked={bool(masked)})")
            self._on_frame(b0 & 0x80, b0 & 0x0F, payload)

    def _on_frame(self, fin, opcode, payload):
        if self.closes:  # nothing may follow a close frame (RFC 6455 5.5.1)
            self._error(f"frame opcode {opcode} after the close frame")
            return
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload, self.is_client))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            self._on_close(payload)
            return
        if (opcode == OP_CONT) != (self.fragments is not None):
            self._error(f"continuation frame {payload[:40]!r} outside a fragmented message"
                        if opcode == OP_CONT else
                        f"frame opcode {opcode} {payload[:40]!r} inside the fragmented message "
                        f"{self.fragments[:40]!r}")
            return
        if opcode == OP_CONT or not fin:  # fragmented: reassemble
            self.fragments = (self.fragments or b"") + payload
            if not fin:
                return
            payload, self.fragments = self.fragments, None
        elif opcode != OP_TEXT:
            self._error(f"unexpected opcode {opcode}")
            return
        self._on_message(payload)

    def _on_message(self, payload):
        parts = payload.split(b" ")
        if self.is_client and parts[0] == b"p":  # a push: p ID K
            try:
                ok = len(parts) == 3 and int(parts[1]) == self.id
                if ok:
                    self.pushes.append(int(parts[2]))
            except ValueError:
                ok = False
            if not ok:
                self._error(f"unexpected push {payload[:60]!r}")
            return
        try:
            if self.is_client:
                kind, conn_id, name, seq = parts
                entry = [name.decode(), int(seq)]
            else:
                kind, conn_id, seq = parts
                entry = int(seq)
            ok = kind == (b"b" if self.is_client else b"c") and int(conn_id) == self.id
        except ValueError:
            ok = False
        if not ok:
            self._error(f"unexpected message {payload[:60]!r}")
            return
        self.received.append(entry)

    def _on_close(self, payload):
        self.close_time = time.monotonic()
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        self.closes.append(code)
        reply = frame(OP_CLOSE, payload[:2], self.is_client)
        if self.is_client:
            self._stop_sending()
            self.transport.write(reply)
            asyncio.get_running_loop().call_later(10, self.transport.abort)
            return

        def reply_and_close():
            self._stop_sending()
            if not self.transport.is_closing():
                self.transport.write(reply)
                self.transport.close()  # the server closes TCP first (RFC 6455 7.1.1)

        if self.peer.close_delay > 0:
            self.linger = asyncio.get_running_loop().call_later(self.peer.close_delay,
                                                                reply_and_close)
        else:
            reply_and_close()

    def record(self):
        """What the parent needs to know about this connection (or backend segment)."""
        return {"id": self.id, "name": self.peer.name_text, "path": self.path,
                "resume": self.resume, "connection_id": self.connection_id,
                "subprotocol": self.subprotocol, "refused": self.refused,
                "opened": self.opened, "upgraded": self.upgraded, "sent": len(self.sent_times),
                "sent_times": self.sent_times, "received": self.received,
                "errors": self.errors, "closes": self.closes, "close_time": self.close_time,
                "eof_time": self.eof_time, "pushes": self.pushes}


class Peer:
    """All connections of one role."""

    def __init__(self, args):
        self.role = args.role
        self.name_text = args.name
        self.name = args.name.encode()
        self.interval = args.interval
        self.subprotocol = args.subprotocol
        self.refuse_resume = args.refuse_resume
        self.close_delay = args.close_delay
        self.fragment_gap = args.fragment_gap
        self.protocols = args.protocols
        self.quiet = False
        self.unhealthy = False
        self.health_checks = 0
        self.conns = []

    def register(self, conn):
        self.conns.append(conn)

    def connection_ended(self, conn):
        pass

    def detail(self):
        """Per connection, for the parent's waits: a client lists every session as
        ``[id, sent, last backend name or null, last seq or -1, open 0/1]``, a server every
        open segment as ``[id, sent, last client seq or -1, messages received]``."""
        rows = []
        for c in self.conns:
            if not c.upgraded:
                continue
            is_open = c.eof_time is None and not c.closes
            if self.role == "client":
                last = c.received[-1] if c.received else [None, -1]
                rows.append([c.id, len(c.sent_times), last[0], last[1], int(is_open)])
            elif is_open:
                last = c.received[-1] if c.received else -1
                rows.append([c.id, len(c.sent_times), last, len(c.received)])
        return json.dumps(rows, separators=(",", ":"))

    def ids(self):
        """``{id: X-Wsgate-Connection-Id}`` of the open connections (server side)."""
        return json.dumps({c.id: c.connection_id for c in self.conns
                           if c.upgraded and c.eof_time is None and not c.closes})

    def totals(self):
        """The one-line summary ``stats`` and ``quiet`` print."""
        upgraded = [c for c in self.conns if c.upgraded]
        sent = sum(len(c.sent_times) for c in upgraded)
        received = sum(len(c.received) for c in upgraded)
        open_ = sum(1 for c in upgraded if c.eof_time is None and not c.closes)
        closed = sum(1 for c in upgraded if c.eof_time is not None or c.closes)
        resumed = sum(1 for c in self.conns if c.resume is not None)
        refused = sum(1 for c in self.conns if c.refused is not None)
        pushes = sum(len(c.pushes) for c in upgraded)
        return (f"sent={sent} recv={received} open={open_} closed={closed} resumed={resumed} "
                f"refused={refused} health={self.health_checks} pushes={pushes}")


async def run_client(peer, args):
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.concurrency)

    async def open_one(index):
        async with limit:
            conn = Conn(peer, index)
            peer.conns.append(conn)
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, args.host, args.port), 10)
            await asyncio.wait_for(conn.handshake_done, 10)

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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--protocols", default="")
    parser.add_argument("--subprotocol", default="")
    parser.add_argument("--refuse-resume", type=int, default=0)
    parser.add_argument("--close-delay", type=float, default=0.0)
    parser.add_argument("--fragment-gap", type=float, default=0.0)
    parser.add_argument("--results", required=True)
    args = parser.parse_args()
    if " " in args.name:
        parser.error("--name must be one word")

    loop = asyncio.get_running_loop()
    peer = Peer(args)
    if args.role == "server":
        server = await loop.create_server(lambda: Conn(peer), args.host, args.port,
                                          backlog=1024)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    else:
        asyncio.ensure_future(run_client(peer, args))

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).strip()
        if not line or line == b"stop":
            break
        if line == b"quiet":
            peer.quiet = True
            for conn in peer.conns:
                conn.go_quiet()
            print(f"quiet {peer.totals()}", flush=True)
        elif line == b"stats":
            print(f"stats {peer.totals()}", flush=True)
        elif line == b"detail":
            print(f"detail {peer.detail()}", flush=True)
        elif line == b"ids":
            print(f"ids {peer.ids()}", flush=True)
        elif line in (b"unhealthy", b"healthy"):
            peer.unhealthy = line == b"unhealthy"
            print(f"{line.decode()} {peer.totals()}", flush=True)
        else:
            print(f"unknown command {line!r}", flush=True)
    with open(args.results + ".tmp", "w") as f:
        json.dump([c.record() for c in peer.conns], f)
    os.replace(args.results + ".tmp", args.results)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
