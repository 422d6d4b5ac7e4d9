"""Routing, balancing, retries and backend behaviour (good and bad) behind wsgate."""

import asyncio
import collections
import signal
import time

import pytest

from harness import (OP_CLOSE, OP_TEXT, DemoBackendProcess, EchoBackend, RawClient,
                     ScriptedBackend, accept_for, accept_then_drop, assert_rejected,
                     assert_still_serving, async_test, backend_accept, blackhole,
                     close_payload, closed_port, encode_frame, make_config, metric, read_frame,
                     read_http_request, read_http_response, read_until_close, recv,
                     request_key, start_echo_backends, upgrade_request, wait_ws_closed,
                     ws_connect)


async def greeting_of(gate, path="/", host="127.0.0.1"):
    """Open a raw tunnel and return (client, greeting text) from the backend."""
    client = await RawClient.connect(gate.port)
    await client.handshake(path=path, host=host)
    frame = await read_frame(client)
    assert frame.opcode == OP_TEXT
    return client, frame.payload.decode()


async def one_greeting(gate, path="/", host="127.0.0.1"):
    """Connect, read the greeting, close cleanly; return the backend name."""
    client, greeting = await greeting_of(gate, path, host)
    await client.send_frame(OP_CLOSE, close_payload(1000))
    await read_until_close(client)
    client.close()
    return greeting.removeprefix("hello from ")


def bad_and_good(bad_addresses, good, **options):
    """Config: /bad -> pool 'bad' (given addresses), everything else -> the good echo backend."""
    return make_config(pools={"bad": list(bad_addresses), "good": [good.address]},
                       routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"},
                               {"pool": "good"}], **options)


# ------------------------------------------------------------------------------------------
# Balancing and routing
# ------------------------------------------------------------------------------------------

@async_test(timeout=60)
async def test_round_robin_spreads_across_backends(gates):
    """Nine sequential connections over three round_robin backends: three each.

    One tunnel stays open on the first backend the whole time: round_robin ignores load, so
    that backend still gets its share (least_conn would avoid it).
    """
    backends = await start_echo_backends(3, greet=True)
    gate = await gates.launch(make_config(pools={"rr": {
        "balance": "round_robin", "backends": [b.address for b in backends]}}))
    _held, _ = await greeting_of(gate)
    names = [await one_greeting(gate) for _ in range(9)]
    assert collections.Counter(names) == {"b0": 3, "b1": 3, "b2": 3}, names
    # Consecutive connections never land on the same backend.
    assert all(a != b for a, b in zip(names, names[1:])), names


@async_test(timeout=60)
async def test_weighted_round_robin_follows_weights(gates):
    """Weights 2:1 give about two thirds of 30 connections to the heavier backend."""
    backends = await start_echo_backends(2, greet=True)
    gate = await gates.launch(make_config(pools={"rr": {"balance": "round_robin", "backends": [
        {"address": backends[0].address, "weight": 2},
        {"address": backends[1].address, "weight": 1}]}}))
    counts = collections.Counter([await one_greeting(gate) for _ in range(30)])
    assert 18 <= counts["b0"] <= 22 and counts["b0"] + counts["b1"] == 30, counts


@async_test(timeout=60)
async def test_least_conn_prefers_idle_backend(gates):
    """With one tunnel open on a backend, the next connection goes to the idle one."""
    backends = await start_echo_backends(2, greet=True)
    gate = await gates.launch(make_config(pools={"lc": {
        "balance": "least_conn", "backends": [b.address for b in backends]}}))
    _, first = await greeting_of(gate)
    _, second = await greeting_of(gate)
    assert first != second, "least_conn sent the second client to the busy backend"
    _, third = await greeting_of(gate)
    held_fourth, fourth = await greeting_of(gate)
    assert third != fourth, "least_conn did not balance the third and fourth clients"

    # Close the fourth tunnel: its backend now has one open, the other two. (Plain round
    # robin would pick the other backend next; least_conn must pick the freed one.)
    freed = fourth.removeprefix("hello from ")
    await held_fourth.send_frame(OP_CLOSE, close_payload(1000))
    await read_until_close(held_fourth)
    held_fourth.close()
    await gate.wait_for_access_lines(1)  # wsgate has finished the fourth client's session
    _, fifth = await greeting_of(gate)
    assert fifth.removeprefix("hello from ") == freed, (
        f"fifth client went to {fifth!r}, expected the less loaded {freed}")


ROUTES = [
    {"match": {"host": "chat.example.com", "path_prefix": "/chat"}, "pool": "chat"},
    {"match": {"path_prefix": "/api"}, "pool": "api"},
    {"pool": "default"},
]


@pytest.mark.parametrize("host, path, pool", [
    ("chat.example.com", "/chat", "chat"),
    ("CHAT.Example.COM:8080", "/chat/room?x=1", "chat"),
    ("chat.example.com", "/other", "default"),
    ("other.example.com", "/chat", "default"),
    ("other.example.com", "/api/v1", "api"),
    ("chat.example.com", "/api", "api"),
    ("127.0.0.1", "/", "default"),
])
@async_test(timeout=30)
async def test_host_and_path_routing(gates, host, path, pool):
    """Routes are tried in order; host is case-insensitive and ignores the port."""
    chat = await EchoBackend(name="chat", greet=True).start()
    api = await EchoBackend(name="api", greet=True).start()
    default = await EchoBackend(name="default", greet=True).start()
    gate = await gates.launch(make_config(
        pools={"chat": [chat.address], "api": [api.address], "default": [default.address]},
        routes=ROUTES))
    assert await one_greeting(gate, path=path, host=host) == pool


# ------------------------------------------------------------------------------------------
# Retries and upstream failures
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("balance", ["round_robin", "least_conn"])
@async_test(timeout=60)
async def test_refused_backend_is_skipped(gates, balance):
    """A pool member that refuses connections never costs a client its tunnel."""
    backends = await start_echo_backends(2, greet=True)
    addresses = [f"127.0.0.1:{closed_port()}"] + [b.address for b in backends]
    gate = await gates.launch(make_config(
        pools={"p": {"balance": balance, "backends": addresses}}, retries=2))
    names = [await one_greeting(gate) for _ in range(9)]
    assert set(names) <= {"b0", "b1"} and len(names) == 9
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=60)
async def test_all_backends_refusing_is_502(gates):
    """When every attempt is refused the client gets 502; later clients get 502 or 503."""
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good(
        [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"], good, retries=2))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad"))
    await assert_rejected(client, 502)
    again = await RawClient.connect(gate.port)
    await again.write(upgrade_request(path="/bad"))
    response = await read_http_response(again)
    assert response.status in (502, 503), response.start_line
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_backends_closing_without_answer_is_502(gates):
    """Backends that accept and close without a response: every attempt failed, 502."""
    droppers = [await ScriptedBackend(accept_then_drop).start() for _ in range(2)]
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good([d.address for d in droppers], good, retries=1))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad"))
    await assert_rejected(client, 502)
    assert all(len(d.peers) == 1 for d in droppers), "each backend should be tried once"
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_backend_handshake_timeout_is_504(gates):
    """Backends that accept TCP but never answer the upgrade give 504."""
    async def silent(peer):
        await peer.wait_eof(30)

    backends = [await ScriptedBackend(silent).start() for _ in range(2)]
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good(
        [b.address for b in backends], good, retries=1,
        timeouts={"backend_handshake": "500ms", "connect": "1s"}))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad"))
    await assert_rejected(client, 504, timeout=10)
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_backend_connect_timeout_is_504(gates):
    """Backends whose TCP connect never completes give 504 after the connect timeouts."""
    holes = [blackhole(), blackhole()]
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good(
        [h.address for h in holes], good, retries=1, timeouts={"connect": "300ms"}))
    client = await RawClient.connect(gate.port)
    started = time.monotonic()
    await client.write(upgrade_request(path="/bad"))
    await assert_rejected(client, 504, timeout=10)
    assert time.monotonic() - started >= 0.5, "504 came before two 300ms connect timeouts"
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_backend_timing_out_on_connect_is_skipped(gates):
    """A pool member whose connect hangs is retried elsewhere; every client is served."""
    backends = await start_echo_backends(2, greet=True)
    addresses = [blackhole().address] + [b.address for b in backends]
    gate = await gates.launch(make_config(
        pools={"p": {"balance": "round_robin", "backends": addresses}}, retries=2,
        timeouts={"connect": "300ms"}))
    names = [await one_greeting(gate) for _ in range(4)]
    assert set(names) <= {"b0", "b1"} and len(names) == 4


async def greeting_through_a_late_connect(gate, change_hole, path="/"):
    """Upgrade while the first backend tried is a blackhole that ``change_hole()`` alters 0.3 s
    in; return (client, greeting) once the upgrade and an echo went through.

    The backend connect stays in SYN_SENT (the hole drops SYNs), so the upgrade request cannot
    be written at once; the kernel retransmits the SYN about 1 s after the connect.
    """
    async def later():
        await asyncio.sleep(0.3)
        await change_hole()

    changing = asyncio.ensure_future(later())
    started = time.monotonic()
    client, greeting = await greeting_of(gate, path)
    elapsed = time.monotonic() - started
    await changing
    assert elapsed >= 0.8, f"upgraded after {elapsed:.2f}s: the hole did not hold the connect"
    await client.send_frame(OP_TEXT, b"made it late")
    assert (await read_frame(client)).payload == b"made it late"
    return client, greeting


@async_test(timeout=60)
async def test_connect_completing_after_a_syn_retransmit_is_served(gates):
    """The backend starts accepting while the connect is in SYN_SENT.

    On loopback the TCP handshake normally completes inside connect() and the upgrade request
    goes out at once; here the first write would block, so the request waits until the socket
    turns writable (BEV_EVENT_CONNECTED), and the upgrade then goes through within
    timeouts.connect.
    """
    hole = blackhole()
    late = EchoBackend(name="late", greet=True)
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good([hole.address], good, retries=0,
                                           timeouts={"connect": "5s"}))

    async def start_accepting():
        await late.start(sock=hole.release())

    client, greeting = await greeting_through_a_late_connect(gate, start_accepting, "/bad/late")
    assert greeting == "hello from late"
    await client.send_frame(OP_CLOSE, close_payload(1000))
    await read_until_close(client)
    client.close()
    [record] = await late.wait_connections(1)
    assert record.path == "/bad/late"
    await assert_still_serving(gate)
    await assert_still_serving(gate, path="/bad/again", greeting=True)


@async_test(timeout=60)
async def test_connect_refused_after_a_syn_retransmit_is_retried(gates):
    """The port closes while the connect is in SYN_SENT: the retransmitted SYN is refused.

    The refusal shows up on the socket's write event (reason "refused": no reset, no timeout),
    and the next backend is connected from inside that callback on the same socket object,
    usually under the same fd number, which the epoll changelist must register afresh.
    """
    hole = blackhole()
    good = await EchoBackend(name="good", greet=True).start()
    config = make_config(pools={"p": {"balance": "round_robin",  # the hole is picked first
                                      "backends": [hole.address, good.address]}},
                         retries=1, timeouts={"connect": "5s"})
    config["admin"] = {"address": "127.0.0.1:0"}
    gate = await gates.launch(config)

    async def close_hole():
        hole.close()

    _, greeting = await greeting_through_a_late_connect(gate, close_hole)
    assert greeting == "hello from good"
    failures = {reason: metric(gate, "wsgate_backend_connect_failures_total",
                               backend=hole.address, reason=reason)
                for reason in ("refused", "reset", "timeout")}
    assert failures == {"refused": 1, "reset": 0, "timeout": 0}, failures
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=30)
async def test_response_head_over_max_header_bytes_is_502_and_a_bad_response(gates):
    """A response head that outgrows limits.max_header_bytes gives 502 at once.

    Reading stops at the limit, so the verdict must come from the bytes read by then rather
    than from timeouts.backend_handshake. It is a failed attempt like a bad 101: counted as
    bad_response and towards outlier ejection (the next client finds no backend). A normal
    client is served afterwards.
    """
    async def oversized(peer):
        await read_http_request(peer)
        await peer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nX-Pad: " + b"p" * 6000 + b"\r\n\r\n")
        return await peer.wait_eof(10)

    backend = await ScriptedBackend(oversized).start()
    good = await EchoBackend().start()
    config = bad_and_good([backend.address], good,
                          limits={"max_header_bytes": "4KiB", "max_request_line_bytes": "1KiB"},
                          timeouts={"backend_handshake": "5s"})
    config["pools"][0]["outlier"] = {"consecutive_failures": 1}
    config["admin"] = {"address": "127.0.0.1:0"}
    gate = await gates.launch(config)
    client = await RawClient.connect(gate.port)
    started = time.monotonic()
    await client.write(upgrade_request(path="/bad/big-head"))
    await assert_rejected(client, 502, timeout=4)
    assert time.monotonic() - started < 2, "the 502 waited for a timeout"
    assert metric(gate, "wsgate_backend_connect_failures_total", backend=backend.address,
                  reason="bad_response") == 1
    again = await RawClient.connect(gate.port)
    await again.write(upgrade_request(path="/bad/again"))
    await assert_rejected(again, 503)
    assert len(backend.peers) == 1, "the backend was not ejected after its bad answer"
    await assert_still_serving(gate)


PIPELINED = b"GET /secret HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("status, reason, extra", [
    (200, "OK", "Content-Type: text/plain\r\n"),
    (426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n"),
])
@async_test(timeout=30)
async def test_non_101_answer_is_relayed_and_pipelined_bytes_stay_out(gates, status, reason,
                                                                    extra):
    """The client sees the backend's status and body; its pipelined request never arrives."""
    body = f"backend says {status}\n".encode()

    async def script(peer):
        await read_http_request(peer)
        await peer.write(f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {len(body)}\r\n"
                         f"\r\n".encode() + body)
        return await peer.wait_eof(5)

    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"bad": [backend.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}]))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad/upgrade") + PIPELINED)
    response = await read_http_response(client)
    assert response.status == status, response.start_line
    assert response.body == body
    assert await client.wait_eof(5), "client connection stayed open after the relayed answer"
    [backend_closed] = await backend.wait_results(1)
    assert backend_closed, "wsgate kept the backend connection open after relaying the answer"
    received = backend.all_received()
    assert b"/bad/upgrade" in received
    assert b"/secret" not in received, f"pipelined request reached the backend: {received!r}"
    await assert_still_serving(gate)


@pytest.mark.parametrize("variant", ["wrong_accept", "missing_upgrade_header"])
@async_test(timeout=30)
async def test_invalid_101_is_502_and_frames_stay_out(gates, variant):
    """A 101 with a wrong accept (or no Upgrade) gives 502; no client frame reaches it."""
    async def script(peer):
        request = await read_http_request(peer)
        key = request.get("Sec-WebSocket-Key", "")
        if variant == "wrong_accept":
            headers = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Accept: {accept_for(key + 'x')}\r\n")
        else:
            headers = f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_for(key)}\r\n"
        await peer.write(f"HTTP/1.1 101 Switching Protocols\r\n{headers}\r\n".encode())
        await peer.wait_eof(5)
        return peer.pending()

    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"bad": [backend.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}]))
    client = await RawClient.connect(gate.port)
    frame = encode_frame(OP_TEXT, "must not arrive")
    await client.write(upgrade_request(path="/bad/accept") + frame)
    await assert_rejected(client, 502)
    results = await backend.wait_results(len(backend.peers))
    for after_head in results:
        assert after_head == b"", f"client bytes reached the backend: {after_head!r}"
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_backend_killed_mid_connection_gives_client_1014(gates):
    """SIGKILL of the backend process: the client gets close 1014."""
    demo = await DemoBackendProcess(name="victim").start()
    good = await EchoBackend().start()
    gate = await gates.launch(bad_and_good([demo.address], good))
    ws = await ws_connect(gate.url("/bad/x"))
    assert await recv(ws) == f"hello from victim (port {demo.port}, path /bad/x)"
    await ws.send("echo me")
    assert await recv(ws) == "echo me"
    demo.proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(demo.proc.wait(), 5)
    await wait_ws_closed(ws)
    assert ws.close_code == 1014, f"client got close {ws.close_code} {ws.close_reason!r}"
    await assert_still_serving(gate)


@pytest.mark.parametrize("how", ["fin", "rst"])
@async_test(timeout=30)
async def test_backend_tcp_drop_gives_client_1014(gates, how):
    """A backend that drops TCP without a close frame makes the client see 1014."""
    async def script(peer):
        await backend_accept(peer)
        frame = await read_frame(peer)
        await peer.write(encode_frame(OP_TEXT, frame.payload, mask=False))
        peer.abort() if how == "rst" else peer.close()

    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"bad": [backend.address], "good": [good.address]},
        routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"}, {"pool": "good"}]))
    ws = await ws_connect(gate.url("/bad/drop"))
    await ws.send("last words")
    assert await recv(ws) == "last words"
    await wait_ws_closed(ws)
    assert ws.close_code == 1014, f"client got close {ws.close_code} {ws.close_reason!r}"
    await assert_still_serving(gate)


@pytest.mark.parametrize("how", ["fin", "rst"])
@async_test(timeout=30)
async def test_client_tcp_drop_gives_backend_1001(gates, how):
    """A client that drops TCP without a close frame makes the backend see 1001."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}))
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "bye for now")
    assert (await read_frame(client)).payload == b"bye for now"
    client.abort() if how == "rst" else client.close()
    record = await echo.wait_closed_record(0)
    assert record.close_code == 1001, f"backend got close {record.close_code}"
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# Request forwarding
# ------------------------------------------------------------------------------------------

def forwarded_elements(values):
    """Split Forwarded header values into a list of {param: value} dicts."""
    elements = []
    for value in values:
        for element in value.split(","):
            params = {}
            for pair in element.strip().split(";"):
                name, _, item = pair.strip().partition("=")
                params[name.lower()] = item.strip('"')
            elements.append(params)
    return elements


@async_test(timeout=30)
async def test_forwarding_headers_appended_and_others_pass_through(gates):
    """From a trusted proxy, X-Forwarded-For and Forwarded are appended; subprotocol,
    extensions, cookies, custom kept (untrusted peers: test_header_trust.py)."""
    echo = await EchoBackend().start()
    config = make_config(pools={"p": [echo.address]})
    config["trusted_proxies"] = ["127.0.0.1"]
    gate = await gates.launch(config)
    client = await RawClient.connect(gate.port)
    extra = [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"),
             ("Sec-WebSocket-Protocol", "chat, superchat"),
             ("Sec-WebSocket-Extensions", "x-webkit-test; foo=1"),
             ("Cookie", "session=abc123; theme=dark"), ("X-Custom-Thing", "hello world"),
             ("User-Agent", "wsgate-tests/1.0")]
    request = upgrade_request(path="/room/7?user=ann&x=%20y", host="app.example.com",
                              extra=extra)
    await client.write(request)
    response = await read_http_response(client)
    assert response.status == 101
    assert response.get("Sec-WebSocket-Accept") == accept_for(request_key(request))
    assert response.get("Sec-WebSocket-Protocol") == "chat"

    [record] = await echo.wait_connections(1)
    headers = record.headers
    assert record.path == "/room/7?user=ann&x=%20y"
    assert ", ".join(headers.get_all("X-Forwarded-For")) == "203.0.113.7, 127.0.0.1"
    assert headers.get_all("X-Forwarded-Proto") == ["http"]
    assert headers.get_all("X-Forwarded-Host") == ["app.example.com"]
    elements = forwarded_elements(headers.get_all("Forwarded"))
    assert elements == [{"for": "203.0.113.7"},
                        {"for": "127.0.0.1", "host": "app.example.com", "proto": "http"}]
    assert ", ".join(headers.get_all("Sec-WebSocket-Protocol")) == "chat, superchat"
    assert headers.get_all("Sec-WebSocket-Extensions") == ["x-webkit-test; foo=1"]
    assert headers.get_all("Cookie") == ["session=abc123; theme=dark"]
    assert headers.get_all("X-Custom-Thing") == ["hello world"]
    assert headers.get_all("User-Agent") == ["wsgate-tests/1.0"]


@async_test(timeout=30)
async def test_forwarding_headers_added_when_absent(gates):
    """Without incoming forwarding headers the backend sees only the proxy's own entries."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/plain", host="plain.example.com:8080")
    [record] = await echo.wait_connections(1)
    headers = record.headers
    assert headers.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert headers.get_all("X-Forwarded-Proto") == ["http"]
    assert headers.get_all("X-Forwarded-Host") == ["plain.example.com:8080"]
    assert forwarded_elements(headers.get_all("Forwarded")) == [
        {"for": "127.0.0.1", "host": "plain.example.com:8080", "proto": "http"}]
