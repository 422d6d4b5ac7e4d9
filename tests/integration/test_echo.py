"""Messages, subprotocols and close handshakes relayed through wsgate to an echo backend."""

import asyncio
import base64
import contextlib
import os

import pytest
import websockets

from harness import (MiB, EchoBackend, async_test, make_config, recv, wait_ws_closed,
                     ws_connect)

SIZES = [0, 125, 126, 65535, 65536, 1 * MiB, 16 * MiB]


def text_of_size(size):
    """A random ASCII string of exactly ``size`` bytes."""
    return base64.b64encode(os.urandom(size))[:size].decode("ascii")


async def start_echo_gate(gates, **backend_options):
    """One echo backend behind a fresh wsgate; returns (gate, backend)."""
    backend = await EchoBackend(**backend_options).start()
    gate = await gates.launch(make_config(pools={"default": [backend.address]}))
    return gate, backend


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
@async_test(timeout=90)
async def test_echo_message_of_size(gates, size, kind):
    """A message of each boundary size comes back byte-for-byte with its type kept."""
    gate, backend = await start_echo_gate(gates)
    ws = await ws_connect(gate.url("/echo"))
    message = text_of_size(size) if kind == "text" else os.urandom(size)
    await ws.send(message)
    echoed = await recv(ws, timeout=60)
    assert type(echoed) is type(message)
    assert len(echoed) == len(message)
    assert echoed == message
    assert backend.connections[0].messages[0] == message
    await ws.close()


@async_test(timeout=30)
async def test_echo_utf8_text(gates):
    """Multi-byte UTF-8 text survives the relay unchanged."""
    gate, _ = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    message = "grüße, мир, 世界, 🎉" * 1000
    await ws.send(message)
    assert await recv(ws) == message


@async_test(timeout=60)
async def test_many_messages_keep_order_both_ways(gates):
    """500 mixed messages sent back to back are echoed in order."""
    gate, _ = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    messages = [f"m{i}" if i % 2 else os.urandom(i % 300) for i in range(500)]
    for message in messages:
        await ws.send(message)
    for message in messages:
        assert await recv(ws) == message


@async_test(timeout=60)
async def test_concurrent_clients_are_isolated(gates):
    """Twenty clients at once each get only their own echoes."""
    gate, backend = await start_echo_gate(gates)

    async def one_client(index):
        ws = await ws_connect(gate.url(f"/client/{index}"))
        for round_ in range(20):
            message = f"client {index} round {round_} " + text_of_size(index * 100)
            await ws.send(message)
            assert await recv(ws) == message
        await ws.close()

    await asyncio.gather(*(one_client(i) for i in range(20)))
    assert len(backend.connections) == 20


@async_test(timeout=30)
async def test_backend_can_send_first(gates):
    """A message the backend sends on connect reaches the client."""
    gate, _ = await start_echo_gate(gates, greet=True, name="greeter")
    ws = await ws_connect(gate.url())
    assert await recv(ws) == "hello from greeter"


@async_test(timeout=30)
async def test_subprotocol_negotiation(gates):
    """Client offers chat, superchat; backend picks chat; the client sees chat."""
    gate, backend = await start_echo_gate(gates)
    ws = await ws_connect(gate.url(), subprotocols=["chat", "superchat"])
    assert ws.subprotocol == "chat"
    await ws.send("in chat")
    assert await recv(ws) == "in chat"
    [record] = backend.connections
    assert record.subprotocol == "chat"
    assert ", ".join(record.header_values("Sec-WebSocket-Protocol")) == "chat, superchat"


@async_test(timeout=30)
async def test_no_subprotocol_when_none_offered(gates):
    """Without an offer, no subprotocol is selected."""
    gate, _ = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    assert ws.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in ws.response_headers


@async_test(timeout=30)
async def test_client_close_code_and_reason_reach_backend(gates):
    """Client closes with 4000 "bye"; the backend sees 4000 "bye" and the client completes."""
    gate, backend = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    await ws.send("before close")
    assert await recv(ws) == "before close"
    await asyncio.wait_for(ws.close(4000, "bye"), 10)
    record = await backend.wait_closed_record()
    assert (record.close_code, record.close_reason) == (4000, "bye")
    assert ws.close_code == 4000


@async_test(timeout=30)
async def test_backend_close_code_and_reason_reach_client(gates):
    """Backend closes with 4001 "later"; the client sees 4001 "later"."""
    gate, backend = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    await ws.send("!close 4001 later")
    await wait_ws_closed(ws)
    assert (ws.close_code, ws.close_reason) == (4001, "later")
    record = await backend.wait_closed_record()
    assert record.close_code == 4001


@async_test(timeout=60)
async def test_permessage_deflate_negotiated_end_to_end(gates):
    """With permessage-deflate agreed by client and backend, compressed frames pass through."""
    gate, backend = await start_echo_gate(gates, compression="deflate")
    ws = await ws_connect(gate.url(), compression="deflate")
    assert [e.name for e in ws.extensions] == ["permessage-deflate"]
    messages = ["compress me " * 1000, os.urandom(5000), b"\x00" * 100000, ""]
    for message in messages:
        await ws.send(message)
        assert await recv(ws) == message
    assert "permessage-deflate" in backend.connections[0].headers["Sec-WebSocket-Extensions"]


@async_test(timeout=90)
async def test_message_over_default_limit_gets_1009(gates):
    """16 MiB + 1 byte exceeds the default max_message_bytes: client 1009, backend 1001."""
    gate, backend = await start_echo_gate(gates)
    ws = await ws_connect(gate.url())
    with contextlib.suppress(websockets.ConnectionClosed):  # wsgate may close mid-send
        await ws.send(os.urandom(16 * MiB + 1))
    await wait_ws_closed(ws, timeout=60)
    assert ws.close_code == 1009, f"client got close {ws.close_code} {ws.close_reason!r}"
    record = await backend.wait_closed_record(0)
    assert record.close_code == 1001
    assert record.messages == [], "the oversize message was delivered to the backend"


@async_test(timeout=60)
async def test_two_workers_serve_concurrent_clients(gates):
    """With workers: 2, many concurrent clients are all served correctly."""
    backend = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [backend.address]}, workers=2))

    async def one_client(index):
        ws = await ws_connect(gate.url(f"/w/{index}"))
        for round_ in range(10):
            message = f"{index}:{round_}:" + text_of_size(1000)
            await ws.send(message)
            assert await recv(ws) == message
        await ws.close()

    await asyncio.gather(*(one_client(i) for i in range(30)))
    assert len(backend.connections) == 30
