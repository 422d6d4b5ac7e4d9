"""Frame relay without reassembly, and protocol violations from either side.

Violations: the offender gets 1002 (1009 for an oversize message); the peer gets 1001 when it
is the backend and 1011 when it is the client. After each, a normal client is still served.
"""

import pytest

from harness import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, EchoBackend,
                     RawClient, ScriptedBackend, assert_still_serving, async_test,
                     backend_accept, backend_expect_close, close_payload, encode_frame,
                     make_config, read_frame, recv, wait_ws_closed, ws_connect)

LIMIT = 4096
LIMITS = {"max_message_bytes": f"{LIMIT}"}


async def gate_with(gates, bad_backend=None):
    """wsgate with an echo pool for everything and, optionally, /bad -> scripted backend."""
    echo = await EchoBackend().start()
    pools = {"good": [echo.address]}
    routes = [{"pool": "good"}]
    if bad_backend is not None:
        pools = {"bad": [bad_backend.address], **pools}
        routes = [{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}]
    config = make_config(pools=pools, routes=routes, limits=LIMITS,
                         timeouts={"close": "2s"})
    return await gates.launch(config), echo


def frame_summary(frames):
    """(fin, opcode, payload) triples for comparing frame sequences."""
    return [(f.fin, f.opcode, f.payload) for f in frames]


# ------------------------------------------------------------------------------------------
# Fragmentation and control frames
# ------------------------------------------------------------------------------------------

@async_test(timeout=30)
async def test_fragmented_text_with_interleaved_pings_is_echoed(gates):
    """Fragments with pings between them: pongs come back, then the whole message."""
    gate, echo = await gate_with(gates)
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "Hel", fin=False)
    await client.send_frame(OP_PING, b"p1")
    await client.send_frame(OP_CONT, "lo ", fin=False)
    await client.send_frame(OP_PING, b"p2")
    await client.send_frame(OP_CONT, "wörld", fin=True)
    received = [await read_frame(client) for _ in range(3)]
    assert frame_summary(received) == [
        (True, OP_PONG, b"p1"), (True, OP_PONG, b"p2"), (True, OP_TEXT, "Hello wörld".encode())]
    assert not any(f.masked for f in received)
    assert echo.connections[0].messages == ["Hello wörld"]
    await client.send_frame(OP_CLOSE, close_payload(1000))
    close = await client.expect_close()
    assert close.close_code == 1000


@async_test(timeout=30)
async def test_fragmented_binary_with_empty_fragments_is_echoed(gates):
    """Many binary fragments, some empty, with a ping in the middle, echo as one message."""
    gate, echo = await gate_with(gates)
    client = await RawClient.connect(gate.port)
    await client.handshake()
    parts = [bytes([i]) * (i * 50) for i in range(12)]  # first part is empty; 3300 bytes
    await client.send_frame(OP_BINARY, parts[0], fin=False)
    for index, part in enumerate(parts[1:], start=1):
        if index == 6:
            await client.send_frame(OP_PING, b"mid")
        await client.send_frame(OP_CONT, part, fin=index == len(parts) - 1)
    pong = await read_frame(client)
    assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
    message = await read_frame(client)
    assert (message.fin, message.opcode, message.payload) == (True, OP_BINARY, b"".join(parts))


@async_test(timeout=30)
async def test_client_fragments_reach_backend_unreassembled(gates):
    """The backend sees exactly the client's fragments (boundaries kept), masked."""
    sent = [(False, OP_TEXT, b"one "), (True, OP_PING, b"ping!"), (False, OP_CONT, b""),
            (False, OP_CONT, b"two "), (True, OP_CONT, b"three"),
            (True, OP_BINARY, bytes(range(256))), (True, OP_PONG, b"unsolicited")]

    async def script(peer):
        await backend_accept(peer)
        frames = [await read_frame(peer) for _ in sent]
        await backend_expect_close(peer)
        return frames

    backend = await ScriptedBackend(script).start()
    gate, _ = await gate_with(gates, backend)
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/bad/fragments")
    for fin, opcode, payload in sent:
        await client.send_frame(opcode, payload, fin=fin)
    await client.send_frame(OP_CLOSE, close_payload(1000))
    [frames] = await backend.wait_results(1)
    assert frame_summary(frames) == sent
    assert all(f.masked for f in frames), "frames to the backend must be masked"
    assert (await client.expect_close()).close_code == 1000


@async_test(timeout=30)
async def test_backend_fragments_reach_client_unreassembled(gates):
    """The client sees the backend's fragments and ping as sent; its pong reaches the backend."""
    sent = [(False, OP_TEXT, b"a"), (True, OP_PING, b"are you there"), (False, OP_CONT, b"b"),
            (True, OP_CONT, b"c"), (False, OP_BINARY, b"\x00" * 200), (True, OP_CONT, b"\x01")]

    async def script(peer):
        await backend_accept(peer)
        for fin, opcode, payload in sent:
            await peer.write(encode_frame(opcode, payload, fin=fin, mask=False))
        pong = await read_frame(peer)
        await backend_expect_close(peer)
        return pong

    backend = await ScriptedBackend(script).start()
    gate, _ = await gate_with(gates, backend)
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/bad/fragments")
    received = [await read_frame(client) for _ in sent]
    assert frame_summary(received) == sent
    assert not any(f.masked for f in received), "frames to the client must not be masked"
    await client.send_frame(OP_PONG, b"are you there")
    await client.send_frame(OP_CLOSE, close_payload(1000))
    [pong] = await backend.wait_results(1)
    assert (pong.opcode, pong.payload, pong.masked) == (OP_PONG, b"are you there", True)


@async_test(timeout=30)
async def test_message_exactly_at_limit_passes(gates):
    """A message of exactly max_message_bytes (single or fragmented) is relayed."""
    gate, _ = await gate_with(gates)
    ws = await ws_connect(gate.url())
    await ws.send(b"x" * LIMIT)
    assert await recv(ws) == b"x" * LIMIT
    await ws.send(["a" * (LIMIT // 2), "b" * (LIMIT // 2)])
    assert await recv(ws) == "a" * (LIMIT // 2) + "b" * (LIMIT // 2)


# ------------------------------------------------------------------------------------------
# Client protocol violations
# ------------------------------------------------------------------------------------------

def client_frames(*frames):
    """Concatenate frames (tuples of encode_frame arguments) into bytes."""
    return b"".join(encode_frame(*f[:2], **(f[2] if len(f) > 2 else {})) for f in frames)


CLIENT_VIOLATIONS = {
    "unmasked_frame": (client_frames((OP_TEXT, "hi", {"mask": False})), 1002),
    "rsv1_without_extension": (client_frames((OP_TEXT, "hi", {"rsv": 4})), 1002),
    "rsv2": (client_frames((OP_BINARY, b"hi", {"rsv": 2})), 1002),
    "rsv3": (client_frames((OP_TEXT, "hi", {"rsv": 1})), 1002),
    "rsv_on_ping": (client_frames((OP_PING, b"hi", {"rsv": 4})), 1002),
    "opcode_3": (client_frames((0x3, b"hi")), 1002),
    "opcode_11": (client_frames((0xB, b"hi")), 1002),
    "ping_payload_126": (client_frames((OP_PING, b"p" * 126)), 1002),
    "close_payload_126": (client_frames((OP_CLOSE, close_payload(1000, "r" * 124))), 1002),
    "fragmented_ping": (client_frames((OP_PING, b"p", {"fin": False})), 1002),
    "continuation_without_start": (client_frames((OP_CONT, b"orphan")), 1002),
    "new_message_during_fragmented_one": (
        client_frames((OP_TEXT, "part", {"fin": False}), (OP_TEXT, "new")), 1002),
    "oversize_single_frame": (client_frames((OP_BINARY, b"z" * (LIMIT + 1))), 1009),
    "oversize_fragmented_message": (
        client_frames((OP_BINARY, b"z" * 2000, {"fin": False}),
                      (OP_CONT, b"z" * 2000, {"fin": False}),
                      (OP_CONT, b"z" * 2000)), 1009),
}


@pytest.mark.parametrize("name", list(CLIENT_VIOLATIONS))
@async_test(timeout=30)
async def test_client_violation_closes_both_sides(gates, name):
    """The offending client gets 1002/1009; the backend gets 1001; others keep working."""
    bad_bytes, expected_code = CLIENT_VIOLATIONS[name]
    gate, echo = await gate_with(gates)
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "warm-up")
    warm = await read_frame(client)
    assert warm.payload == b"warm-up"
    await client.write(bad_bytes)
    close = await client.expect_close()
    assert close.close_code == expected_code, (
        f"offender got close {close.close_code} {close.close_reason!r}")
    record = await echo.wait_closed_record(0)
    assert record.close_code == 1001, f"backend got close {record.close_code}"
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# Backend protocol violations
# ------------------------------------------------------------------------------------------

def server_frames(*frames):
    """Unmasked (server-side) frames unless a frame says mask=True."""
    out = b""
    for frame in frames:
        options = {"mask": False, **(frame[2] if len(frame) > 2 else {})}
        out += encode_frame(frame[0], frame[1], **options)
    return out


BACKEND_VIOLATIONS = {
    "masked_frame": (server_frames((OP_TEXT, "hi", {"mask": True})), 1002),
    "rsv1_without_extension": (server_frames((OP_TEXT, "hi", {"rsv": 4})), 1002),
    "rsv2": (server_frames((OP_BINARY, b"hi", {"rsv": 2})), 1002),
    "opcode_3": (server_frames((0x3, b"hi")), 1002),
    "opcode_15": (server_frames((0xF, b"hi")), 1002),
    "ping_payload_126": (server_frames((OP_PING, b"p" * 126)), 1002),
    "fragmented_ping": (server_frames((OP_PING, b"p", {"fin": False})), 1002),
    "continuation_without_start": (server_frames((OP_CONT, b"orphan")), 1002),
    "new_message_during_fragmented_one": (
        server_frames((OP_TEXT, "part", {"fin": False}), (OP_BINARY, b"new")), 1002),
    "oversize_single_frame": (server_frames((OP_TEXT, "z" * (LIMIT + 1))), 1009),
    "oversize_fragmented_message": (
        server_frames((OP_TEXT, "z" * 3000, {"fin": False}), (OP_CONT, "z" * 3000)), 1009),
}


@pytest.mark.parametrize("name", list(BACKEND_VIOLATIONS))
@async_test(timeout=30)
async def test_backend_violation_closes_both_sides(gates, name):
    """The offending backend gets 1002/1009; the client gets 1011; others keep working."""
    bad_bytes, expected_code = BACKEND_VIOLATIONS[name]

    async def script(peer):
        await backend_accept(peer)
        warm = await read_frame(peer)
        await peer.write(encode_frame(OP_TEXT, warm.payload, mask=False))
        await peer.write(bad_bytes)
        return await backend_expect_close(peer)

    backend = await ScriptedBackend(script).start()
    gate, _ = await gate_with(gates, backend)
    ws = await ws_connect(gate.url("/bad/violation"), max_size=None)
    await ws.send("warm-up")
    assert await recv(ws) == "warm-up"
    [close] = await backend.wait_results(1)
    assert close.close_code == expected_code, (
        f"offending backend got close {close.close_code} {close.close_reason!r}")
    await wait_ws_closed(ws)
    assert ws.close_code == 1011, f"client got close {ws.close_code} {ws.close_reason!r}"
    await assert_still_serving(gate)
