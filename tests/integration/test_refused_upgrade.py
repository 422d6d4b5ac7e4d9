"""A backend that refuses the upgrade: its answer is relayed whole, framed as RFC 9112 says.

The body ends where its framing says (Content-Length, the last chunk, or the backend's close),
never at a timeout: the backend keeps its connection open in the framed cases, and the client
must still get the whole answer and its connection closed at once.
"""

import pytest

from harness import (EchoBackend, RawClient, ScriptedBackend, assert_still_serving, async_test,
                     make_config, metric, read_http_request)

# Long enough that an answer waiting for it would fail the deadlines below by far.
HANDSHAKE_TIMEOUT = "60s"
PROMPT = 20  # seconds; the answer and the close come at once, even on a slow machine


async def launch(gates, script):
    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    config = make_config(
        pools={"refusing": [backend.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/refused"}, "pool": "refusing"}, {"pool": "good"}],
        timeouts={"backend_handshake": HANDSHAKE_TIMEOUT})
    config["admin"] = {"address": "127.0.0.1:0"}
    gate = await gates.launch(config)
    return backend, gate


async def refused_answer(gate):
    """Send an upgrade to the refusing pool; return everything answered before the close."""
    client = await RawClient.connect(gate.port)
    await client.write(
        b"GET /refused HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert await client.wait_eof(PROMPT), (
        f"the client connection stayed open after the answer: {bytes(client.received)!r}")
    return bytes(client.received)


def keep_open_after(answer):
    async def script(peer):
        await read_http_request(peer)
        await peer.write(answer)
        return await peer.wait_eof(PROMPT)  # True once wsgate closed its side
    return script


@pytest.mark.parametrize("head, body", [
    (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 8\r\n\r\n", b"not here"),
], ids=["chunked", "content_length"])
@async_test(timeout=60)
async def test_framed_refusal_ends_where_its_framing_says(gates, head, body):
    """The backend keeps its connection open: the last chunk or the length ends the answer."""
    backend, gate = await launch(gates, keep_open_after(head + body))
    answer = await refused_answer(gate)
    status_line = head.split(b"\r\n")[0] + b"\r\n"
    assert answer.startswith(status_line), answer
    assert answer.endswith(b"\r\n\r\n" + body), answer
    [backend_closed] = await backend.wait_results(1)
    assert backend_closed, "wsgate kept the backend connection open after the answer ended"
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_close_delimited_refusal_ends_at_the_backend_close(gates):
    body = b"no length: read until the backend closes"

    async def script(peer):
        await read_http_request(peer)
        await peer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n" + body)
        peer.close()

    backend, gate = await launch(gates, script)
    answer = await refused_answer(gate)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"\r\n\r\n" + body), answer
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_refusal_with_contradictory_framing_is_502(gates):
    """Content-Length with Transfer-Encoding cannot be relayed safely: a bad response."""
    head = (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n")
    backend, gate = await launch(gates, keep_open_after(head))
    answer = await refused_answer(gate)
    assert answer.startswith(b"HTTP/1.1 502 "), answer
    assert b"hello" not in answer
    assert metric(gate, "wsgate_backend_connect_failures_total", backend=backend.address,
                  reason="bad_response") == 1
    await assert_still_serving(gate)
