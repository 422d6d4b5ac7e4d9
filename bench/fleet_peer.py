#!/usr/bin/env python3
"""Peers for bench/fleet.py: an identity hook, a Pushpin origin and timed receiving clients.

The same minimal RFC 6455 on asyncio.Protocol as migration_peer.py (one process drives
thousands of connections), trimmed to what the fleet benchmark needs.

Roles:

``hook``    the auth hook: an HTTP/1.1 server on 127.0.0.1 (``--port``, 0 = any) that answers
            every request 200 with ``X-Wsgate-User: uN`` and ``X-Wsgate-Tags: all,gM`` (N counts
            the requests, M = N mod 100), so every connection gets its own user and two tags;
            prints ``listening PORT``; ``stop`` on stdin (or EOF) ends it.
``origin``  Pushpin's origin, WebSocket-over-HTTP (``over_http`` route): a POST whose events
            hold ``OPEN`` is answered with ``OPEN`` and a GRIP control message subscribing the
            connection to ``--channel`` (``Sec-WebSocket-Extensions: grip``); other events are
            acknowledged with an empty event list (``CLOSE`` with ``CLOSE``). Prints
            ``listening PORT``. Keep-alive. ``stop`` on stdin (or EOF) ends it.
``client``  opens ``--count`` WebSocket connections to ``/s/ID`` on ``--port`` (at most
            ``--concurrency`` handshakes at once, source addresses 127.0.0.2 ... 127.0.0.251 in
            turn; ``--attempts`` tries each, 0.5 s apart), prints ``connected N retried=R``
            (or ``failed ...``), then records the arrival time
            (time.monotonic(), one reading per socket read) of every text message ``p SEQ ...``.

Commands (client) on stdin, one per line, each answered by one stdout line:

``wait FIRST LAST TIMEOUT``  once every open connection has every message FIRST..LAST (or after
            TIMEOUT s): ``wait GOT EXPECTED`` (messages of that range received, and open
            connections × messages).
``times SEQ``  ``times JSON``: the arrival times of message SEQ (a list, one per connection).
``span FIRST LAST``  ``span JSON``: ``[received, first arrival, last arrival]`` over FIRST..LAST.
``stats``   ``stats open=O closed=C errors=E received=R``.
``forget``  drops the recorded times (answered ``forget``).
``stop`` or EOF  prints ``done`` and exits.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), comparable across processes.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_ERRORS = 20


def mask(payload, key):
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


def client_frame(opcode, payload):
    """One final masked frame (payloads here are < 126 bytes)."""
    key = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + mask(payload, key)


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


# --------------------------------------------------------------------------------------------
# HTTP servers: the hook and the origin
# --------------------------------------------------------------------------------------------

class HttpServer(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server; ``answer(head, body)`` -> (headers, body, close)."""

    def __init__(self, answer):
        self.answer = answer
        self.buf = bytearray()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            headers, payload, close = self.answer(head, body)
            close = close or "connection: close" in head.lower()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % (k, v) for k, v in headers)
                + b"Content-Length: %d\r\n" % len(payload)
                + (b"Connection: close\r\n" if close else b"") + b"\r\n" + payload)
            if close:
                self.transport.close()
                return


class Hook:
    def __init__(self):
        self.n = 0

    def answer(self, head, body):
        self.n += 1
        return ([(b"X-Wsgate-User", b"u%d" % self.n),
                 (b"X-Wsgate-Tags", b"all,g%d" % (self.n % 100))], b"", True)


class Origin:
    """WebSocket-over-HTTP: events are ``TYPE[ HEXLEN]\\r\\n[CONTENT\\r\\n]``."""

    def __init__(self, channel):
        control = b'c:{"type":"subscribe","channel":"%s"}' % channel.encode()
        self.on_open = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(control), control)
        self.opened = 0

    def answer(self, head, body):
        headers = [(b"Content-Type", b"application/websocket-events")]
        if body.startswith(b"OPEN\r\n"):
            self.opened += 1
            return headers + [(b"Sec-WebSocket-Extensions", b"grip")], self.on_open, False
        if b"CLOSE" in body:
            return headers, b"CLOSE\r\n", False
        return headers, b"", False


# --------------------------------------------------------------------------------------------
# The receiving clients
# --------------------------------------------------------------------------------------------

class Conn(asyncio.Protocol):
    def __init__(self, peer, conn_id):
        self.peer = peer
        self.id = conn_id
        self.transport = None
        self.buf = bytearray()
        self.upgraded = False
        self.closed = False
        self.key = base64.b64encode(os.urandom(16))
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
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
            accept = b""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-accept":
                    accept = value.strip().encode()
            if head.split(" ")[1:2] != ["101"] or accept != accept_for(self.key):
                self.done.set_exception(ConnectionError(f"bad upgrade answer {head[:200]!r}"))
                self.transport.abort()
                return
            self.upgraded = True
            self.done.set_result(None)
        self._frames(time.monotonic())

    def connection_lost(self, exc):
        if self.upgraded and not self.closed:
            self.closed = True
            self.peer.closed += 1
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost before 101 ({exc!r})"))

    def _frames(self, now):
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
            if b1 & 0x80:
                self.peer.error(f"conn {self.id}: masked server frame")
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos:pos + length])
            del buf[:pos + length]
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY) and b0 & 0x80:
                self.peer.message(payload, now)
            elif opcode == OP_PING:
                self.transport.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                if not self.closed:
                    self.closed = True
                    self.peer.closed += 1
                self.transport.write(client_frame(OP_CLOSE, payload[:2]))
            elif opcode != OP_PONG:
                self.peer.error(f"conn {self.id}: unexpected frame {b0:#x}")


class Clients:
    def __init__(self):
        self.conns = []
        self.closed = 0
        self.errors = []
        self.error_count = 0
        self.arrivals = {}  # seq -> [monotonic arrival, ...]
        self.received = 0
        self.retried = 0  # upgrades tried again after a failure

    def error(self, text):
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def message(self, payload, now):
        parts = payload.split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"p":
            self.error(f"unexpected message {payload[:60]!r}")
            return
        self.received += 1
        seq = int(parts[1])
        times = self.arrivals.get(seq)
        if times is None:
            self.arrivals[seq] = [now]
        else:
            times.append(now)

    def open_count(self):
        return sum(1 for c in self.conns if c.upgraded) - self.closed

    def got(self, first, last):
        return sum(len(self.arrivals.get(seq, ())) for seq in range(first, last + 1))


async def run_clients(peer, args):
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.concurrency)

    async def open_one(index):
        async with limit:
            for attempt in range(args.attempts):
                conn = Conn(peer, index)
                source = (f"127.0.0.{2 + index % 250}", 0)
                try:
                    await asyncio.wait_for(loop.create_connection(
                        lambda: conn, "127.0.0.1", args.port, local_addr=source), 30)
                    await asyncio.wait_for(conn.done, 30)
                    break
                except (OSError, ConnectionError, asyncio.TimeoutError):
                    if attempt + 1 == args.attempts:
                        raise
                    peer.retried += 1
                    await asyncio.sleep(0.5)
            peer.conns.append(conn)

    ids = range(args.first_id, args.first_id + args.count)
    results = await asyncio.gather(*(open_one(i) for i in ids), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"failed {len(failures)} of {args.count}: {failures[0]!r}", flush=True)
    else:
        print(f"connected {args.count} retried={peer.retried}", flush=True)


async def command_loop(peer):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "stop":
            break
        command = words[0]
        if command == "wait" and len(words) == 4:
            first, last, timeout = int(words[1]), int(words[2]), float(words[3])
            deadline = time.monotonic() + timeout
            while True:
                expected = peer.open_count() * (last - first + 1)
                got = peer.got(first, last)
                if got >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
            print(f"wait {got} {expected}", flush=True)
        elif command == "times" and len(words) == 2:
            print("times " + json.dumps(peer.arrivals.get(int(words[1]), [])), flush=True)
        elif command == "span" and len(words) == 3:
            first, last = int(words[1]), int(words[2])
            lo, hi, n = float("inf"), float("-inf"), 0
            for seq in range(first, last + 1):
                times = peer.arrivals.get(seq)
                if times:
                    n += len(times)
                    lo = min(lo, min(times))
                    hi = max(hi, max(times))
            print("span " + json.dumps([n, lo if n else None, hi if n else None]), flush=True)
        elif command == "stats":
            print(f"stats open={peer.open_count()} closed={peer.closed} "
                  f"errors={peer.error_count} received={peer.received} "
                  f"first_errors={json.dumps(peer.errors[:3])}", flush=True)
        elif command == "forget":
            peer.arrivals.clear()
            print("forget", flush=True)
        else:
            print(f"unknown command {words!r}", flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("hook", "origin", "client"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channel", default="all")
    parser.add_argument("--attempts", type=int, default=1,
                        help="client: tries per connection (a failed upgrade waits 0.5 s)")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    if args.role in ("hook", "origin"):
        handler = Hook() if args.role == "hook" else Origin(args.channel)
        server = await loop.create_server(lambda: HttpServer(handler.answer), "127.0.0.1",
                                          args.port, backlog=4096)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (await reader.readline()).strip() not in (b"", b"stop"):
            pass
        print("done", flush=True)
        os._exit(0)
    peer = Clients()
    asyncio.ensure_future(run_clients(peer, args))
    await command_loop(peer)
    print("done", flush=True)
    os._exit(0)  # no orderly teardown of thousands of transports


if __name__ == "__main__":
    asyncio.run(main())
