"""Backpressure: a fast sender and a stalled reader never make wsgate buffer without bound.

A raw backend floods binary frames as fast as TCP lets it while the client reads nothing (and
the mirror case). wsgate must stop reading from the sender once the reader's output passes the
high watermark, so its resident memory stays flat, the sender is held back by TCP, and once the
reader resumes every byte arrives intact and in order.
"""

import asyncio
import base64
import hashlib
import os
import struct

from harness import async_test, make_config, rss_kib, sanitized_build

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FRAME_PAYLOAD = 64 * 1024
TOTAL_FRAMES = 480  # 30 MiB: several times what kernel buffers and wsgate's watermarks hold


# The bound on wsgate's growth: two watermarks' worth of buffers plus allocator slack.
RSS_BOUND_KIB = None if sanitized_build() else 8 * 1024




def frame(payload, masked):
    """A FIN binary frame (64-bit length form for 64 KiB)."""
    head = bytes([0x82])
    length = len(payload)
    if length < 126:
        head += bytes([(0x80 if masked else 0) | length])
    elif length < 65536:
        head += bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    else:
        head += bytes([(0x80 if masked else 0) | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    data = bytearray(payload)
    for i in range(len(data)):
        data[i] ^= key[i % 4]
    return head + key + bytes(data)


def payload_for(index):
    """64 KiB whose content identifies the frame, so reordering or loss is caught."""
    stamp = struct.pack("!I", index)
    return (stamp * (FRAME_PAYLOAD // 4))


async def read_frames(reader, count, masked_expected):
    """Read |count| binary frames and check each one's payload."""
    for index in range(count):
        b0, b1 = await reader.readexactly(2)
        assert b0 == 0x82, hex(b0)
        assert bool(b1 & 0x80) == masked_expected
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        key = await reader.readexactly(4) if masked_expected else None
        data = bytearray(await reader.readexactly(length))
        if key:
            for i in range(len(data)):
                data[i] ^= key[i % 4]
        assert bytes(data) == payload_for(index), f"frame {index} corrupted or out of order"


class FloodBackend:
    """Answers the upgrade; then either floods the client or reads nothing while flooded."""

    def __init__(self, flood):
        self.flood = flood
        self.sent = 0
        self.reader = None
        self.writer = None
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.address = "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.reader, self.writer = reader, writer
        self.ready.set()
        if self.flood:
            for index in range(TOTAL_FRAMES):
                writer.write(frame(payload_for(index), masked=False))
                await writer.drain()  # blocks while TCP (and so wsgate) pushes back
                self.sent += 1
        await self.done.wait()

    async def stop(self):
        self.done.set()
        if self.writer:
            self.writer.close()
        self.server.close()


async def open_client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                 key + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def wait_plateau(value, settle=0.5, timeout=10):
    """Wait until |value()| stops changing for |settle| seconds; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = value(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= settle:
            return now
    raise AssertionError(f"{value} never settled (last {last})")


@async_test(timeout=90)
async def test_fast_backend_stalled_client_memory_stays_bounded(gates):
    backend = await FloodBackend(flood=True).start()
    gate = await gates.launch(make_config(pools={"p": [backend.address]},
                                          timeouts={"drain": "1s", "close": "1s"}))
    baseline = rss_kib(gate.proc.pid)
    reader, writer = await open_client(gate.port)
    await backend.ready.wait()
    # The client reads nothing: the backend must be held back long before 100 MiB.
    sent_while_stalled = await wait_plateau(lambda: backend.sent)
    grown = rss_kib(gate.proc.pid) - baseline
    assert sent_while_stalled < TOTAL_FRAMES // 2, f"backend was not held back ({sent_while_stalled})"
    if RSS_BOUND_KIB is not None:
        assert grown < RSS_BOUND_KIB, f"wsgate grew by {grown} KiB while the client stalled"
    # The client resumes: every frame arrives, intact and in order.
    await asyncio.wait_for(read_frames(reader, TOTAL_FRAMES, masked_expected=False), 60)
    assert backend.sent == TOTAL_FRAMES
    if RSS_BOUND_KIB is not None:
        assert rss_kib(gate.proc.pid) - baseline < RSS_BOUND_KIB
    print(f"\n[backpressure b->c] backend held at {sent_while_stalled} x 64 KiB frames; "
          f"wsgate RSS +{grown} KiB while stalled")
    writer.close()
    await backend.stop()


@async_test(timeout=90)
async def test_fast_client_stalled_backend_memory_stays_bounded(gates):
    backend = await FloodBackend(flood=False).start()
    gate = await gates.launch(make_config(pools={"p": [backend.address]},
                                          timeouts={"drain": "1s", "close": "1s"}))
    baseline = rss_kib(gate.proc.pid)
    reader, writer = await open_client(gate.port)
    await backend.ready.wait()
    sent = 0

    async def flood():
        nonlocal sent
        for index in range(TOTAL_FRAMES):
            writer.write(frame(payload_for(index), masked=True))
            await writer.drain()
            sent += 1

    flooding = asyncio.create_task(flood())
    sent_while_stalled = await wait_plateau(lambda: sent)
    grown = rss_kib(gate.proc.pid) - baseline
    assert sent_while_stalled < TOTAL_FRAMES // 2, f"client was not held back ({sent_while_stalled})"
    if RSS_BOUND_KIB is not None:
        assert grown < RSS_BOUND_KIB, f"wsgate grew by {grown} KiB while the backend stalled"
    await asyncio.wait_for(read_frames(backend.reader, TOTAL_FRAMES, masked_expected=True), 60)
    await flooding
    print(f"\n[backpressure c->b] client held at {sent_while_stalled} x 64 KiB frames; "
          f"wsgate RSS +{grown} KiB while stalled")
    writer.close()
    await backend.stop()
