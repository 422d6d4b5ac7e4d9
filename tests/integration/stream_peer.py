#!/usr/bin/env python3
"""Many streaming WebSocket peers in one lean subprocess, for the wsgate drain tests.

A minimal RFC 6455 implementation on asyncio.Protocol (no per-message Python coroutines), so
one process can drive a thousand connections that each send a numbered text message every
``--interval`` seconds, on a loaded 2-core machine.

Roles:

``server``  a WebSocket backend on 127.0.0.1:0. Prints ``listening PORT``. A connection to
            ``/s/ID`` streams messages ``b ID SEQ`` and checks it receives ``c ID 0..`` in order.
``client``  opens ``--count`` connections to ``/s/0`` .. ``/s/N-1`` on ``--port``. Prints
            ``connected N`` once all are upgraded (``failed ...`` and exit 1 otherwise), then
            streams ``c ID SEQ`` and checks it receives ``b ID 0..`` in order. Prints
            ``closed N`` once every connection has ended.

A close frame from the peer stops that connection's sender; it is answered with the same code
(the server side then closes TCP, the client side waits for the TCP close). On ``stop`` (or EOF)
on stdin, the process writes ``--results`` (JSON: one record per connection, see
``Conn.record``), prints ``done`` and exits. Times are ``time.monotonic()`` (CLOCK_MONOTONIC),
comparable with the parent process.
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
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


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
    """One WebSocket connection, either role."""

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
        self.sent_times = []
        self.recv_count = 0
        self.errors = []
        self.close_code = None
        self.close_time = None
        self.eof_time = None
        self.opened = None
        self.timer = None
        self.next_at = None
        self.fragments = None

    # -- transport callbacks ------------------------------------------------------------------

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
        self.eof_time = time.monotonic()
        self._stop_sending()
        if self.close_code is None and self.upgraded:
            self.errors.append(f"connection lost without a close frame ({exc!r})")
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
            self.handshake_done.set_result(None)
        else:
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else ""
            try:
                self.id = int(path.rsplit("/", 1)[1])
            except (IndexError, ValueError):
                self.id = -1
            key = headers.get("sec-websocket-key", "").encode()
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                                 % accept_for(key))
            self.peer.register(self)
        self.upgraded = True
        self.opened = time.monotonic()
        self._start_sending()
        return True

    # -- sending ------------------------------------------------------------------------------

    def _start_sending(self):
        if self.peer.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        self.next_at = loop.time() + random.uniform(0, self.peer.interval)
        self.timer = loop.call_at(self.next_at, self._send_next)

    def _send_next(self):
        self.timer = None
        if self.close_code is not None or self.transport.is_closing():
            return
        seq = len(self.sent_times)
        payload = b"%s %d %d" % (b"c" if self.is_client else b"b", self.id, seq)
        self.transport.write(frame(OP_TEXT, payload, self.is_client))
        self.sent_times.append(time.monotonic())
        loop = asyncio.get_running_loop()
        self.next_at += self.peer.interval
        self.next_at = max(self.next_at, loop.time())  # no bursts after a stall
        self.timer = loop.call_at(self.next_at, self._send_next)

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
            if masked == self.is_client:
                self.errors.append(f"frame masking wrong for this side (masked={bool(masked)})")
            self._on_frame(b0 & 0x80, b0 & 0x0F, payload)

    def _on_frame(self, fin, opcode, payload):
        if self.close_code is not None:
            if opcode != OP_CLOSE:
                self.errors.append(f"frame opcode {opcode} after the close frame")
            return
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload, self.is_client))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            self.close_time = time.monotonic()
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self._stop_sending()
            code = payload[:2] if len(payload) >= 2 else b""
            self.transport.write(frame(OP_CLOSE, code, self.is_client))
            if not self.is_client:
                self.transport.close()  # the server closes TCP first (RFC 6455 7.1.1)
            else:
                asyncio.get_running_loop().call_later(10, self.transport.abort)
            return
        if opcode == 0x0 or not fin:  # fragmented: reassemble
            self.fragments = (self.fragments or b"") + payload
            if not fin:
                return
            payload, self.fragments = self.fragments, None
        elif opcode != OP_TEXT:
            self.errors.append(f"unexpected opcode {opcode}")
            return
        expected = b"%s %d %d" % (b"b" if self.is_client else b"c", self.id, self.recv_count)
        if payload != expected and len(self.errors) < 5:
            self.errors.append(f"got {payload!r}, expected {expected!r}")
        self.recv_count += 1

    def record(self):
        """What the parent needs to know about this connection."""
        return {"id": self.id, "opened": self.opened, "sent_times": self.sent_times,
                "recv": self.recv_count, "errors": self.errors, "close_code": self.close_code,
                "close_time": self.close_time, "eof_time": self.eof_time}


class Peer:
    """All connections of one role."""

    def __init__(self, args):
        self.role = args.role
        self.interval = args.interval
        self.conns = []
        self.ended = 0
        self.expected = args.count if args.role == "client" else None

    def register(self, conn):
        self.conns.append(conn)

    def connection_ended(self, conn):
        if conn.upgraded:
            self.ended += 1
            if self.expected is not None and self.ended == self.expected:
                print(f"closed {self.ended}", flush=True)


async def run_client(peer, args):
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.concurrency)

    async def open_one(index):
        async with limit:
            conn = Conn(peer, index)
            peer.conns.append(conn)
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, "127.0.0.1", args.port), 10)
            await asyncio.wait_for(conn.handshake_done, 10)

    results = await asyncio.gather(*(open_one(i) for i in range(args.count)),
                                   return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"failed {len(failures)} of {args.count}: {failures[0]!r}", flush=True)
    else:
        print(f"connected {args.count}", flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--results", required=True)
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    peer = Peer(args)
    if args.role == "server":
        server = await loop.create_server(lambda: Conn(peer), "127.0.0.1", args.port,
                                          backlog=1024)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    else:
        asyncio.ensure_future(run_client(peer, args))

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line or line.strip() == b"stop":
            break
    with open(args.results + ".tmp", "w") as f:
        json.dump([c.record() for c in peer.conns], f)
    os.replace(args.results + ".tmp", args.results)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
