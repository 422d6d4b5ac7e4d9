"""permessage-deflate against limits.max_message_bytes (limits.compression).

inspect (the default) inflates each compressed message only to count it: 1009 past the limit,
1007 for data that does not inflate, the backend never gets the message. strip removes the
offer so nothing is compressed; passthrough counts compressed bytes (the old behaviour)."""

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
import zlib

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from harness import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, EchoBackend,
                     RawClient, ScriptedBackend, admin_address, assert_rejected,
                     assert_still_serving,
                     async_test, backend_accept, encode_frame, make_config, metric, read_frame,
                     read_http_response,
                     read_until_close, recv, register_cleanup, upgrade_request, wait_until,
                     wait_ws_closed,
                     ws_connect)

KiB = 1024
MiB = 1024 * KiB
DEFLATE_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")


def deflate_message(data, wbits=15):
    """One message's payload as a permessage-deflate sender makes it (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def gate_config(backend, compression=None, limit=None, admin=False):
    limits = {}
    if compression:
        limits["compression"] = compression
    if limit:
        limits["max_message_bytes"] = limit
    config = make_config(pools={"p": [backend.address]}, limits=limits or None)
    if admin:
        config["admin"] = {"address": "127.0.0.1:0", "token": ""}
    return config


async def deflate_client(gate, path="/"):
    """A raw client that negotiated permessage-deflate through the gate."""
    client = await RawClient.connect(gate.port)
    response = await client.handshake(path=path, extra=[DEFLATE_OFFER])
    assert "permessage-deflate" in response.get("Sec-WebSocket-Extensions", ""), response
    return client


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@async_test(timeout=60)
async def test_inspect_relays_compressed_messages_under_the_limit_both_ways(gates):
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, limit="1MiB", admin=True))
    ws = await ws_connect(gate.url("/ok"), compression="deflate", max_size=None)
    assert [e.name for e in ws.extensions] == ["permessage-deflate"]
    # Compressible and incompressible, near the limit after inflating, and empty.
    messages = ["compress me " * 80000, os.urandom(200 * KiB), b"\x00" * (1 * MiB), "", "x"]
    for message in messages:
        await ws.send(message)
        assert await recv(ws) == message
    # Fragmented: the limit counts the whole message, which fits.
    await ws.send(["part " * 10000, "more " * 10000])
    assert await recv(ws) == "part " * 10000 + "more " * 10000
    assert "permessage-deflate" in backend.connections[0].headers["Sec-WebSocket-Extensions"]
    await ws.close()
    assert (await backend.wait_closed_record(0)).close_code == 1000
    # Without context takeover each message is inflated from a fresh state.
    fresh = ClientPerMessageDeflateFactory(client_no_context_takeover=True,
                                           server_no_context_takeover=True)
    ws = await ws_connect(gate.url("/fresh"), compression=None, extensions=[fresh],
                          max_size=None)
    assert ws.extensions[0].local_no_context_takeover
    assert ws.extensions[0].remote_no_context_takeover
    for message in messages[:2] * 2:
        await ws.send(message)
        assert await recv(ws) == message
    await ws.close()
    assert (await backend.wait_closed_record(1)).close_code == 1000
    # Every message went through the inflater both ways (the empty one inflates to nothing).
    total = sum(len(m.encode() if isinstance(m, str) else m) for m in messages + messages[:2] * 2)
    total += 100000
    for direction in ("client_to_backend", "backend_to_client"):
        assert metric(gate, "wsgate_inflated_bytes_total", direction=direction) == total
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_inspect_compressed_message_over_the_limit_gets_1009(gates):
    """300 KB of text compresses to well under 4 KiB, but inflates past it: 1009, and the
    backend never gets it (before, only compressed bytes were counted and it passed)."""
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, limit="4KiB", admin=True))
    ws = await ws_connect(gate.url("/big"), compression="deflate", max_size=None)
    await ws.send("a" * 4096)  # exactly the limit passes
    assert await recv(ws) == "a" * 4096
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send("a" * 300_000)
    await wait_ws_closed(ws)
    assert (ws.close_code, ws.close_reason) == (1009, "message too big")
    record = await backend.wait_closed_record(0)
    assert record.close_code == 1001, record.close_code
    assert record.messages == ["a" * 4096], "the oversized message reached the backend"
    assert metric(gate, "wsgate_closes_total", initiator="proxy", code="1009") == 1
    [line] = await gate.wait_for_access_lines(1)
    assert "close_code=1009" in line and "closed_by=proxy" in line, line
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_inspect_sums_fragments_of_a_compressed_message(gates):
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, limit="4KiB"))
    ws = await ws_connect(gate.url("/frag"), compression="deflate", max_size=None)
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(["b" * 3000, "b" * 3000, "b" * 3000])  # each fragment fits, the sum not
    await wait_ws_closed(ws)
    assert ws.close_code == 1009, ws.close_code
    record = await backend.wait_closed_record(0)
    assert record.messages == []
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_inspect_backend_message_over_the_limit(gates):
    """The limit holds backend -> client too: the backend gets 1009, the client 1011."""
    received = []

    async def handler(ws):
        if ws.path != "/down":
            async for message in ws:
                await ws.send(message)
            return
        await ws.send("z" * 300_000)
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.wait_closed()
        received.append(ws.close_code)

    server = await websockets.serve(handler, "127.0.0.1", 0, compression="deflate")
    try:
        port = server.sockets[0].getsockname()[1]
        gate = await gates.launch(make_config(pools={"p": [f"127.0.0.1:{port}"]},
                                              limits={"max_message_bytes": "4KiB"}))
        ws = await ws_connect(gate.url("/down"), compression="deflate", max_size=None)
        await wait_ws_closed(ws)
        assert ws.close_code == 1011, ws.close_code
        await wait_until(lambda: received, what="backend close")
        assert received == [1009]
        await assert_still_serving(gate, compression="deflate")
    finally:
        server.close()
        await server.wait_closed()


@async_test(timeout=60)
async def test_decompression_bomb_gets_1009_fast_with_bounded_memory(gates):
    """100 MB of zeros in one ~100 KB compressed frame (DEFLATE tops out near 1:1000). wsgate
    inflates only up to the limit, into a small scratch buffer: 1009 at once, RSS flat, and
    the backend never sees a byte of it."""
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, limit="1MiB"))
    bomb = deflate_message(b"\x00" * (100 * MiB))
    assert len(bomb) < 110 * KiB
    await assert_still_serving(gate, compression="deflate")  # warm up before measuring
    rss_before = hwm_kib(gate.proc.pid)
    client = await deflate_client(gate, "/bomb")
    started = time.monotonic()
    await client.send_frame(OP_BINARY, bomb, rsv=4)
    frame = await client.expect_close(timeout=10)
    elapsed = time.monotonic() - started
    assert frame.close_code == 1009, frame
    assert elapsed < 5, f"1009 took {elapsed:.1f}s"
    growth = hwm_kib(gate.proc.pid) - rss_before
    assert growth < 64 * 1024, f"wsgate peak RSS grew by {growth} KiB"
    record = await backend.wait_closed_record(1)
    assert record.messages == [] and record.close_code == 1001, record
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_frame_cut_by_inspection_ends_the_backend_connection(gates):
    """A compressed frame longer than the watermark is forwarded as it is inflated; when the
    limit is crossed after its start went to the backend, no close frame can follow it: the
    backend's connection ends without one, the client gets 1009, and the backend never gets
    the whole frame."""
    async def accept_deflate(peer):
        await backend_accept(peer, extra_headers=[("Sec-WebSocket-Extensions",
                                                   "permessage-deflate")])

    backend = await ScriptedBackend(accept_deflate).start()
    good = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(make_config(
        pools={"cut": [backend.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/cut"}, "pool": "cut"}, {"pool": "good"}],
        limits={"max_message_bytes": "1MiB"}))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(os.urandom(200 * KiB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    tail = compressor.compress(b"\x00" * (20 * MiB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = encode_frame(OP_BINARY, (head + tail)[:-4], rsv=4)
    first = len(frame) - len(tail) + 4  # the header and the incompressible start
    client = await deflate_client(gate, "/cut")
    await client.write(frame[:first])
    await wait_until(lambda: backend.peers and len(backend.peers[0].received) > 150 * KiB,
                     what="the frame's start at the backend")
    await client.write(frame[first:])
    close = await client.expect_close(timeout=10)
    assert close.close_code == 1009, close
    peer = backend.peers[0]
    assert await peer.wait_eof(10), "the backend connection stayed open"
    received = bytes(peer.received)
    relayed = received[received.index(b"\r\n\r\n") + 4:]
    # An exact prefix of the frame and nothing after it: no close frame inside the frame.
    assert len(relayed) < len(frame) and relayed == frame[:len(relayed)], len(relayed)
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_invalid_compressed_data_gets_1007(gates):
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend))
    client = await deflate_client(gate, "/garbage")
    await client.send_frame(OP_TEXT, b"\xff\xff\xff\xff garbage", rsv=4)  # BTYPE 11: reserved
    frame = await client.expect_close()
    assert (frame.close_code, frame.close_reason) == (1007, "invalid compressed data"), frame
    record = await backend.wait_closed_record(0)
    assert record.messages == [] and record.close_code == 1001, record
    # Valid compressed frames from a raw client pass, fragmented and with a ping between.
    client = await deflate_client(gate, "/fine")
    payload = deflate_message(b"hello " * 1000)
    await client.send_frame(OP_TEXT, payload[:10], fin=False, rsv=4)
    await client.send_frame(OP_PING, b"ping")
    await client.send_frame(OP_CONT, payload[10:])
    assert (await read_frame(client)).opcode == OP_PONG
    echoed = await read_frame(client)
    assert echoed.rsv == 4
    assert zlib.decompressobj(-15).decompress(echoed.payload + b"\x00\x00\xff\xff") == (
        b"hello " * 1000)
    await client.send_frame(OP_CLOSE, b"\x03\xe8")
    await read_until_close(client)
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_strip_removes_the_offer_and_counts_plain_bytes(gates):
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, compression="strip", limit="4KiB"))
    ws = await ws_connect(gate.url("/strip"), compression="deflate",
                          extra_headers={"Sec-WebSocket-Extensions": "x-other; a=1"})
    assert ws.extensions == []
    await ws.send("small message")
    assert await recv(ws) == "small message"
    headers = backend.connections[0].headers
    offered = ", ".join(headers.get_all("Sec-WebSocket-Extensions"))
    assert "deflate" not in offered and "x-other; a=1" in offered, offered
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send("a" * 300_000)
    await wait_ws_closed(ws)
    assert ws.close_code == 1009
    assert (await backend.wait_closed_record(0)).messages == ["small message"]
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_strip_refuses_a_backend_that_compresses_anyway(gates):
    answers = ["permessage-deflate", "x-webkit-deflate-frame; no_context_takeover"]

    async def accepts_deflate(peer):
        answer = answers.pop(0)
        await backend_accept(peer, extra_headers=[("Sec-WebSocket-Extensions", answer)])
        await peer.wait_eof(10)

    bad = await ScriptedBackend(accepts_deflate).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"bad": [bad.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}],
        limits={"compression": "strip"}, retries=0))
    for _ in range(2):
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path="/bad", extra=[DEFLATE_OFFER]))
        await assert_rejected(client, 502)
    lines = await gate.wait_for_access_lines(2)
    assert "101 accepts permessage-deflate, which wsgate did not offer" in lines[0], lines
    assert "101 accepts x-webkit-deflate-frame, which wsgate did not offer" in lines[1], lines
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_invalid_deflate_answer_from_backend_is_502(gates):
    async def bad_window(peer):
        await backend_accept(peer, extra_headers=[(
            "Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=16")])
        await peer.wait_eof(10)

    bad = await ScriptedBackend(bad_window).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"bad": [bad.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}],
        retries=0))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad", extra=[DEFLATE_OFFER]))
    await assert_rejected(client, 502)
    [line] = await gate.wait_for_access_lines(1)
    assert "server_max_window_bits must be 8..15" in line, line
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_passthrough_counts_compressed_bytes(gates):
    """The old behaviour, kept on request: the 300 KB message passes a 4 KiB limit."""
    backend = await EchoBackend(compression="deflate").start()
    gate = await gates.launch(gate_config(backend, compression="passthrough", limit="4KiB"))
    ws = await ws_connect(gate.url("/pass"), compression="deflate", max_size=None)
    await ws.send("a" * 300_000)
    assert await recv(ws) == "a" * 300_000
    assert backend.connections[0].messages == ["a" * 300_000]
    await ws.close()
    await assert_still_serving(gate, compression="deflate")


@async_test(timeout=60)
async def test_pushed_messages_pass_between_inspected_compressed_ones(gates):
    """A connections-API push is an uncompressed message inserted between the backend's: the
    inflater of that direction skips it and keeps its context for the next compressed one."""
    backend = await EchoBackend(compression="deflate").start()
    config = gate_config(backend, limit="1MiB")
    config["admin"] = {"address": "127.0.0.1:0", "token": "push-token"}
    gate = await gates.launch(config)
    ws = await ws_connect(gate.url("/push"), compression="deflate", max_size=None)
    text = "context " * 2000
    await ws.send(text)
    assert await recv(ws) == text
    connection_id = backend.connections[0].headers["X-Wsgate-Connection-Id"]
    host, port = admin_address(gate)

    def push():
        request = urllib.request.Request(
            f"http://{host}:{port}/connections/{connection_id}", data=b"pushed", method="POST",
            headers={"Authorization": "Bearer push-token",
                     "Content-Type": "text/plain; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    assert await asyncio.to_thread(push) == 200
    assert await recv(ws) == "pushed"
    for _ in range(3):  # back-references into the earlier messages still inflate
        await ws.send(text)
        assert await recv(ws) == text
    await ws.close()
    await assert_still_serving(gate, compression="deflate")



@async_test(timeout=60)
async def test_per_frame_deflate_cannot_bypass_the_inflated_limit(gates):
    """deflate-frame / x-webkit-deflate-frame (pre-RFC 7692 drafts, still accepted by Netty's
    default WebSocketServerCompressionHandler) compress frames with RSV1 too, but wsgate does
    not inflate them. Under inspect or strip their offers must not reach the backend, or a
    client could send a decompression bomb counted by its compressed size."""
    backend = await EchoBackend(compression="deflate").start()
    cases = (("inspect", "x-webkit-deflate-frame"),
             ("inspect", "deflate-frame, permessage-deflate"),
             ("strip", "deflate-frame; no_context_takeover, x-other"),
             ("strip", "perframe-deflate"))
    launched = {}
    for index, (compression, offer) in enumerate(cases):
        if compression not in launched:
            launched[compression] = await gates.launch(
                gate_config(backend, compression=compression, limit="4KiB"))
        gate = launched[compression]
        client = await RawClient.connect(gate.port)
        await client.handshake(path="/pf", extra=[("Sec-WebSocket-Extensions", offer)])
        await backend.wait_connections(index + 1)
        headers = backend.connections[index].headers
        offered = ", ".join(headers.get_all("Sec-WebSocket-Extensions"))
        assert "deflate-frame" not in offered, (compression, offer, offered)
        if compression == "inspect" and "permessage-deflate" in offer:
            assert "permessage-deflate" in offered, offered
        if "x-other" in offer:
            assert "x-other" in offered, offered
        await client.send_frame(OP_CLOSE, b"\x03\xe8")
        await client.expect_close()

    # A backend that accepts per-frame deflate although it was not offered is refused, as
    # under strip: otherwise the 4 KiB limit would count the bomb below by its 300 bytes.
    async def accepts_deflate_frame(peer):
        await backend_accept(peer, extra_headers=[("Sec-WebSocket-Extensions",
                                                   "x-webkit-deflate-frame")])
        await peer.wait_eof(10)

    bad = await ScriptedBackend(accepts_deflate_frame).start()
    gate = await gates.launch(make_config(pools={"bad": [bad.address]}, retries=0,
                                          limits={"max_message_bytes": "4KiB"}))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bomb", extra=[
        ("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")]))
    response = await read_http_response(client)
    if response.status == 101:
        await client.send_frame(OP_BINARY, deflate_message(b"\x00" * 300_000), rsv=4)
        await asyncio.sleep(0.5)
        received = bytes(bad.peers[0].received)
        raise AssertionError(f"per-frame deflate accepted under inspect; {len(received)} bytes "
                             "(a 300 KB message) reached the backend past a 4 KiB limit")
    assert response.status == 502, response.start_line


@async_test(timeout=60)
async def test_drain_finishes_a_held_compressed_frame_before_closing(gates):
    """A compressed frame held back to be inflated whole is a frame in flight: a drain that
    starts while it is arriving delivers it to the backend before the backend's close 1001,
    as it does for an uncompressed frame (before, the close went out at once and the frame was
    dropped)."""
    got = asyncio.get_running_loop().create_future()

    async def handler(ws):
        message = await ws.recv()
        code = None
        try:
            await ws.recv()
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        if not got.done():
            got.set_result((message, code))

    server = await websockets.serve(handler, "127.0.0.1", 0, max_size=None, compression="deflate")

    async def stop():
        server.close()
        await server.wait_closed()
    register_cleanup(stop)
    port = server.sockets[0].getsockname()[1]
    gate = await gates.launch(make_config(pools={"p": [f"127.0.0.1:{port}"]},
                                          timeouts={"drain": "300ms", "close": "10s"}))
    client = await deflate_client(gate, "/held")
    message = os.urandom(20 * KiB)  # incompressible: about 20 KiB on the wire, under the hold
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = encode_frame(OP_BINARY, payload, rsv=4)
    await client.write(frame[:len(frame) // 2])
    gate.proc.send_signal(signal.SIGTERM)
    close, _ = await read_until_close(client, 10)  # the drain has reached this connection
    assert close.close_code == 1001, close
    await client.write(frame[len(frame) // 2:])  # the frame ends, then the close reply
    await client.write(encode_frame(OP_CLOSE, close.payload[:2], mask=True))
    received, backend_close = await asyncio.wait_for(got, 20)
    assert received == message, "the held frame did not reach the backend whole"
    assert backend_close == 1001, backend_close
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, gate.proc.wait), 15)
    assert gate.proc.returncode == 0
