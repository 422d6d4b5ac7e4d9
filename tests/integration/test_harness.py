"""Self-checks of the test helpers, run against the helpers themselves (no wsgate)."""

import pytest

from harness import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, EchoBackend, RawClient,
                     ScriptedBackend, async_test, backend_accept,
                     backend_expect_close, close_payload, encode_frame,
                     make_config, read_frame, recv, to_yaml, ws_connect)


def test_to_yaml_round_trips_through_a_real_parser():
    """The hand-written YAML emitter produces what a YAML parser reads back."""
    yaml = pytest.importorskip("yaml")
    config = make_config(
        pools={"chat": {"balance": "least_conn",
                        "backends": ["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 3}]},
               "default": ["127.0.0.1:9003"]},
        routes=[{"match": {"host": "chat.example.com", "path_prefix": "/chat"}, "pool": "chat"},
                {"pool": "default"}],
        limits={"max_header_bytes": "16KiB", "allowed_origins": ["http://a.example", "*"]},
        timeouts={"handshake": "10s", "idle": "0s"},
        retries=2)
    assert yaml.safe_load(to_yaml(config)) == config


@async_test(timeout=20)
async def test_raw_client_against_echo_backend_directly():
    """RawClient frames and the EchoBackend agree with each other."""
    backend = await EchoBackend().start()
    client = await RawClient.connect(backend.port)
    await client.handshake(path="/p", extra=[("Sec-WebSocket-Protocol", "chat")])
    await client.send_frame(OP_TEXT, "ab", fin=False)
    await client.send_frame(OP_PING, b"x")
    await client.send_frame(0, "cd", fin=True)
    pong = await read_frame(client)
    assert (pong.opcode, pong.payload, pong.masked) == (OP_PONG, b"x", False)
    text = await read_frame(client)
    assert (text.opcode, text.payload) == (OP_TEXT, b"abcd")
    await client.send_frame(OP_BINARY, bytes(70000))
    assert (await read_frame(client)).payload == bytes(70000)
    await client.send_frame(OP_CLOSE, close_payload(4000, "bye"))
    closing = await read_frame(client)
    assert closing.close_code == 4000
    assert await client.wait_eof()
    client.close()
    record = await backend.wait_closed_record()
    assert (record.close_code, record.close_reason, record.path) == (4000, "bye", "/p")


@async_test(timeout=20)
async def test_scripted_backend_records_bytes():
    """ScriptedBackend answers a correct 101 and records what follows."""
    async def script(peer):
        await backend_accept(peer)
        await peer.write(encode_frame(OP_TEXT, "hi", mask=False))
        frame = await read_frame(peer)
        await backend_expect_close(peer)
        return frame

    backend = await ScriptedBackend(script).start()
    ws = await ws_connect(f"ws://127.0.0.1:{backend.port}/")
    assert await recv(ws) == "hi"
    await ws.send("there")
    await ws.close()
    [frame] = await backend.wait_results(1)
    assert frame.masked and frame.payload == b"there"
    assert b"GET / HTTP/1.1" in backend.all_received()
