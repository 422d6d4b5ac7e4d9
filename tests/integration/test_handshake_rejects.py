"""Client handshake validation: every bad request gets the exact status, then TCP close.

After each rejection a normal client must still be served by the same wsgate.
"""

import asyncio
import base64
import os
import time

import pytest

from harness import (EchoBackend, RawClient, accept_for, assert_rejected, assert_still_serving,
                     async_test, make_config, raw_echo_check, read_http_response,
                     request_key, upgrade_request, ws_connect)

LIMITS = {"max_request_line_bytes": "1KiB", "max_header_bytes": "4KiB"}


async def start_gate(gates, limits=None, routes=None, timeouts=None, pool="default"):
    """wsgate in front of one echo backend, with small head limits by default."""
    backend = await EchoBackend().start()
    config = make_config(pools={pool: [backend.address]}, routes=routes,
                         limits=limits or LIMITS, timeouts=timeouts)
    return await gates.launch(config), backend


def replace_line(request, old_prefix, new_line):
    """Replace the header line starting with ``old_prefix`` by ``new_line`` (bytes)."""
    lines = request.split(b"\r\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(old_prefix))
    lines[index] = new_line
    return b"\r\n".join(lines)


def insert_before_blank(request, raw_lines):
    """Insert raw header bytes right before the terminating blank line."""
    assert request.endswith(b"\r\n\r\n")
    return request[:-2] + raw_lines + b"\r\n"


def b64_of(count):
    """Base64 of ``count`` random bytes."""
    return base64.b64encode(os.urandom(count)).decode()


BAD_REQUESTS = {
    # name: (request bytes, expected status)
    # A plain GET without an upgrade is forwarded as HTTP now (test_http_forwarding.py).
    "method_post": (upgrade_request(method="POST"), 400),
    "method_head": (upgrade_request(method="HEAD"), 400),
    "http_1_0": (upgrade_request(version="HTTP/1.0"), 400),
    "missing_host": (upgrade_request(drop=["Host"]), 400),
    "duplicate_host": (upgrade_request(extra=[("Host", "other.example.com")]), 400),
    "duplicate_key": (upgrade_request(extra=[("Sec-WebSocket-Key", b64_of(16))]), 400),
    "connection_without_upgrade_token": (
        upgrade_request(replace={"Connection": "keep-alive"}), 400),
    "missing_connection": (upgrade_request(drop=["Connection"]), 400),
    "missing_key": (upgrade_request(drop=["Sec-WebSocket-Key"]), 400),
    "key_not_base64": (upgrade_request(key="not base64 at all!!"), 400),
    "key_15_bytes": (upgrade_request(key=b64_of(15)), 400),
    "key_17_bytes": (upgrade_request(key=b64_of(17)), 400),
    "key_empty": (upgrade_request(replace={"Sec-WebSocket-Key": ""}), 400),
    "obs_fold": (insert_before_blank(upgrade_request(), b"X-Folded: one\r\n  two\r\n"), 400),
    "obs_fold_tab": (insert_before_blank(upgrade_request(), b"X-Folded: one\r\n\ttwo\r\n"), 400),
    "bare_cr_in_header": (insert_before_blank(upgrade_request(), b"X-Bad: a\rb\r\n"), 400),
    "bare_lf_line_ending": (insert_before_blank(upgrade_request(), b"X-Lf: a\nX-Next: b\r\n"),
                            400),
    "bare_lf_everywhere": (upgrade_request().replace(b"\r\n", b"\n"), 400),
    "space_before_colon": (insert_before_blank(upgrade_request(), b"X-Space : v\r\n"), 400),
    "space_before_colon_host": (
        replace_line(upgrade_request(), b"Host:", b"Host : 127.0.0.1"), 400),
    "request_line_too_long": (upgrade_request(path="/" + "a" * 1100), 400),
    "content_length": (upgrade_request(extra=[("Content-Length", "0")]), 400),
    "transfer_encoding": (upgrade_request(extra=[("Transfer-Encoding", "chunked")]), 400),
    "head_too_large_one_header": (upgrade_request(extra=[("X-Big", "b" * 5000)]), 431),
    "head_too_large_many_headers": (
        upgrade_request(extra=[(f"X-H{i}", "v" * 60) for i in range(80)]), 431),
    "version_missing": (upgrade_request(drop=["Sec-WebSocket-Version"]), 426),
    "version_8": (upgrade_request(replace={"Sec-WebSocket-Version": "8"}), 426),
    "version_14": (upgrade_request(replace={"Sec-WebSocket-Version": "14"}), 426),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
@async_test(timeout=30)
async def test_bad_request_rejected_with_exact_status(gates, name):
    """Each malformed or unacceptable upgrade gets its status, Content-Length, close."""
    request, status = BAD_REQUESTS[name]
    gate, backend = await start_gate(gates)
    client = await RawClient.connect(gate.port)
    await client.write(request)
    response = await assert_rejected(client, status)
    if name.startswith("version_"):
        assert response.get("Sec-WebSocket-Version") == "13", response.raw_head
    assert backend.connections == [], "a rejected request reached the backend"
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_valid_request_gets_101_with_correct_accept(gates):
    """Control case: the canonical request is upgraded with the right accept value."""
    gate, _ = await start_gate(gates)
    client = await RawClient.connect(gate.port)
    request = upgrade_request(path="/ok")
    await client.write(request)
    response = await read_http_response(client)
    assert response.status == 101
    assert response.has_token("Upgrade", "websocket")
    assert response.has_token("Connection", "upgrade")
    assert response.get("Sec-WebSocket-Accept") == accept_for(request_key(request))


@async_test(timeout=30)
async def test_header_names_and_tokens_are_case_insensitive(gates):
    """Lower-case names, mixed-case tokens and a Connection list are accepted."""
    gate, _ = await start_gate(gates)
    key = b64_of(16)
    request = (f"GET /mixed HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n"
               f"connection: keep-alive, Upgrade\r\nsec-websocket-key: {key}\r\n"
               f"sec-websocket-version: 13\r\n\r\n").encode()
    client = await RawClient.connect(gate.port)
    await client.write(request)
    response = await read_http_response(client)
    assert response.status == 101, response.start_line
    assert response.get("Sec-WebSocket-Accept") == accept_for(key)


ORIGIN_LIMITS = dict(LIMITS, allowed_origins=["https://app.example.com"])


@pytest.mark.parametrize("origin, status", [
    ("https://app.example.com", 101),
    ("https://evil.example.com", 403),
    (None, 403),
], ids=["allowed", "not_allowed", "missing"])
@async_test(timeout=30)
async def test_allowed_origins(gates, origin, status):
    """With a non-empty allowed_origins, only listed Origins pass; missing Origin is 403."""
    gate, backend = await start_gate(gates, limits=ORIGIN_LIMITS)
    client = await RawClient.connect(gate.port)
    extra = [("Origin", origin)] if origin else []
    await client.write(upgrade_request(extra=extra))
    if status == 101:
        response = await read_http_response(client)
        assert response.status == 101
    else:
        await assert_rejected(client, status)
        assert backend.connections == []
    await assert_still_serving(gate, origin="https://app.example.com")


@async_test(timeout=30)
async def test_no_matching_route_is_404(gates):
    """A Host no route matches gets 404; a matching Host is still served."""
    routes = [{"match": {"host": "chat.example.com"}, "pool": "chat"}]
    gate, backend = await start_gate(gates, routes=routes, pool="chat")
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(host="other.example.com"))
    await assert_rejected(client, 404)
    assert backend.connections == []
    await raw_echo_check(gate, host="chat.example.com")


@async_test(timeout=30)
async def test_incomplete_head_times_out_with_408(gates):
    """A head not finished within timeouts.handshake gets 408."""
    gate, _ = await start_gate(gates, timeouts={"handshake": "1s"})
    client = await RawClient.connect(gate.port)
    started = time.monotonic()
    await client.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    await assert_rejected(client, 408, timeout=6)
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 5, f"408 after {elapsed:.2f}s with a 1s handshake timeout"
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_over_max_connections_is_503(gates):
    """With max_connections 2 and two open tunnels, a third client gets 503."""
    gate, _ = await start_gate(gates, limits=dict(LIMITS, max_connections=2))
    first = await ws_connect(gate.url())
    second = await ws_connect(gate.url())
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request())
    await assert_rejected(client, 503)
    await second.send("second still works")
    assert await asyncio.wait_for(second.recv(), 5) == "second still works"
    await first.close()

    # Once a slot is free again, a new client is served (wsgate may need a moment to notice).
    deadline = time.monotonic() + 5
    while True:
        probe = await RawClient.connect(gate.port)
        await probe.write(upgrade_request())
        response = await read_http_response(probe)
        if response.status == 101:
            break
        assert response.status == 503 and time.monotonic() < deadline, response.start_line
        await asyncio.sleep(0.05)
    await second.close()


@async_test(timeout=30)
async def test_request_sent_byte_by_byte_is_upgraded(gates):
    """A head that trickles in one byte per write is still parsed and upgraded."""
    gate, _ = await start_gate(gates)
    client = await RawClient.connect(gate.port)
    request = upgrade_request(path="/slow", extra=[("X-Padding", "p" * 40)])
    for index in range(len(request)):
        await client.write(request[index:index + 1])
    response = await read_http_response(client)
    assert response.status == 101, response.start_line
    assert response.get("Sec-WebSocket-Accept") == accept_for(request_key(request))
