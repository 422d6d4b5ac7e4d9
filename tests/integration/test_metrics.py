"""Observability: GET /metrics on the admin listener, /readyz, promtool, a real Prometheus
server scraping wsgate, and the Grafana dashboard in examples/grafana.

Every counter check is an exact delta between two scrapes of one wsgate, computed from the
frames the test itself put on the wire. Frame sizes on the wire: 2 header bytes, plus 2 (payload
126..65535) or 8 (larger) extended length bytes, plus 4 mask bytes on client-to-backend frames.
wsgate counts what it relays: frames it writes itself (a close it inserts after a TCP drop) and
frames it drops (towards a side that is gone) are not counted.
"""

import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, SOURCE_DIR, WAIT,
                     EchoBackend, RawClient, ScriptedBackend, admin_address, assert_rejected,
                     assert_still_serving, async_test, backend_accept, close_payload, closed_port,
                     encode_frame, make_config, parse_head, read_frame, read_http_request,
                     read_http_response, read_until_close, recv, register_cleanup,
                     upgrade_request, wait_until, ws_connect)

DASHBOARD = os.path.join(SOURCE_DIR, "examples", "grafana", "wsgate-dashboard.json")

C2B, B2C = "client_to_backend", "backend_to_client"
OPCODES = ("text", "binary", "continuation", "ping", "pong", "close")
RESULTS = ("upgraded", "bad_request", "forbidden", "too_large", "timeout", "no_backend",
           "backend_failed", "backend_rejected", "tls_failed", "over_limit", "not_found")


# ------------------------------------------------------------------------------------------
# Helpers: admin HTTP, the exposition format, wire sizes
# ------------------------------------------------------------------------------------------

def metrics_config(pools, admin=True, **kwargs):
    """make_config plus an admin listener on a free loopback port."""
    config = make_config(pools=pools, **kwargs)
    if admin:
        config["admin"] = {"address": "127.0.0.1:0"}
    return config


async def http_get(address, path, method="GET", timeout=WAIT):
    """One HTTP/1.1 request with Connection: close; return (status, body text)."""
    host, port = address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write((f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Connection: close\r\nContent-Length: 0\r\n\r\n").encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    end = data.find(b"\r\n\r\n")
    assert end >= 0, f"no complete HTTP response to {path}: {data[:300]!r}"
    return parse_head(data[:end + 4]).status, data[end + 4:].decode("utf-8", "replace")


async def admin(gate, method, path):
    """(status, body) of an admin request."""
    return await http_get(admin_address(gate), path, method)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


class Scrape:
    """One parsed /metrics answer."""

    def __init__(self, text):
        self.text = text
        self.samples = []  # (name, {label: value}, float)
        self.types = {}  # family name -> type
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind
                continue
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            assert match, f"unparsable exposition line: {line!r}"
            name, raw_labels, value = match.groups()
            labels = {}
            if raw_labels:
                pos = 0
                while pos < len(raw_labels):
                    label = _LABEL.match(raw_labels, pos)
                    assert label, f"unparsable labels in {line!r}"
                    labels[label.group(1)] = label.group(2)
                    pos = label.end()
            self.samples.append((name, labels, float(value)))

    def series(self, name, **labels):
        """[(labels, value)] of the samples of ``name`` whose labels include ``labels``."""
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in labels.items())]

    def get(self, name, **labels):
        """Sum over the matching series (0 when there is none: wsgate omits zero closes)."""
        return sum(v for _, v in self.series(name, **labels))

    def names(self):
        """Every sample name present."""
        return {n for n, _, _ in self.samples}


async def scrape(gate):
    """GET /metrics; check status and content type; return a Scrape."""
    host, port = admin_address(gate)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    end = data.find(b"\r\n\r\n")
    head = parse_head(data[:end + 4])
    assert head.status == 200, f"/metrics answered {head.start_line}"
    assert head.get("Content-Type", "").startswith("text/plain"), head.raw_head
    return Scrape(data[end + 4:].decode())


def delta(after, before, name, **labels):
    """Change of a (summed) metric between two scrapes."""
    return after.get(name, **labels) - before.get(name, **labels)


def wire(length, masked):
    """Bytes of one frame with a payload of ``length`` on the wire."""
    extended = 0 if length < 126 else 2 if length < 65536 else 8
    return 2 + extended + (4 if masked else 0) + length


def handshake_deltas(after, before, listener="public"):
    """{result: delta} of wsgate_handshakes_total, only the non-zero ones."""
    out = {}
    for result in RESULTS:
        d = delta(after, before, "wsgate_handshakes_total", listener=listener, result=result)
        if d:
            out[result] = d
    return out


async def wait_metric(gate, predicate, what, timeout=WAIT):
    """Scrape until ``predicate(scrape)`` holds; return that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        current = await scrape(gate)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; /metrics:\n"
                                 + "\n".join(l for l in current.text.splitlines()
                                             if not l.startswith("#"))[-4000:])
        await asyncio.sleep(0.05)


async def echo_script(peer):
    """ScriptedBackend: echo data frames as they came (same opcode and FIN, unmasked), answer
    pings, echo a close and close TCP. A text `!close CODE REASON` makes it close first."""
    await backend_accept(peer)
    while True:
        try:
            frame = await read_frame(peer, timeout=60)
        except EOFError:
            return ("eof", None)
        if frame.opcode == OP_TEXT and frame.payload.startswith(b"!close "):
            _, code, reason = frame.payload.split(b" ", 2)
            await peer.write(encode_frame(OP_CLOSE, close_payload(int(code), reason.decode()),
                                          mask=False))
            reply, _ = await read_until_close(peer)
            peer.close()
            return ("backend-closed", reply.close_code)
        if frame.opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            await peer.write(encode_frame(frame.opcode, frame.payload, fin=frame.fin, mask=False))
        elif frame.opcode == OP_PING:
            await peer.write(encode_frame(OP_PONG, frame.payload, mask=False))
        elif frame.opcode == OP_CLOSE:
            await peer.write(encode_frame(OP_CLOSE, frame.payload[:2], mask=False))
            peer.close()
            return ("closed", frame.close_code)


async def expect_echo(client, opcode, payload, fin=True):
    """The next frame from wsgate is the unmasked echo of what we sent."""
    frame = await read_frame(client)
    assert (frame.opcode, frame.fin, frame.masked, frame.payload) == (opcode, fin, False, payload)


# ------------------------------------------------------------------------------------------
# 1. Exact counters after a known script
# ------------------------------------------------------------------------------------------

async def run_known_script(gate, backend):
    """Three connections through ``gate`` to an echo_script backend (A: 5 texts of 100 B, 2
    binaries of 1000 B, a 3-frame message, a ping, client close 1000; B: the backend closes
    4001; C: one echo, then the client drops TCP). Return (expected bytes, expected frames),
    each keyed by direction (and opcode)."""
    expected_bytes = {C2B: 0, B2C: 0}
    expected_frames = {(d, o): 0 for d in (C2B, B2C) for o in OPCODES}

    def sent(opcode, length, echoed_as=None):
        """Account one client frame and (unless echoed_as is False) its echo."""
        expected_bytes[C2B] += wire(length, True)
        expected_frames[(C2B, opcode)] += 1
        if echoed_as is not False:
            expected_bytes[B2C] += wire(length, False)
            expected_frames[(B2C, echoed_as or opcode)] += 1

    # A: the full mix, closed by the client with 1000.
    a = await RawClient.connect(gate.port)
    await a.handshake()
    for i in range(5):
        payload = bytes([0x61 + i]) * 100
        await a.send_frame(OP_TEXT, payload)
        await expect_echo(a, OP_TEXT, payload)
        sent("text", 100)
    for i in range(2):
        payload = os.urandom(1000)
        await a.send_frame(OP_BINARY, payload)
        await expect_echo(a, OP_BINARY, payload)
        sent("binary", 1000)
    parts = [b"x" * 50, b"y" * 50, b"z" * 50]
    for index, (opcode, part) in enumerate(zip((OP_TEXT, OP_CONT, OP_CONT), parts)):
        await a.send_frame(opcode, part, fin=index == 2)
        sent("text" if index == 0 else "continuation", 50)
    for index, (opcode, part) in enumerate(zip((OP_TEXT, OP_CONT, OP_CONT), parts)):
        await expect_echo(a, opcode, part, fin=index == 2)
    await a.send_frame(OP_PING, b"ping")
    pong = await read_frame(a)
    assert (pong.opcode, pong.payload) == (OP_PONG, b"ping")
    sent("ping", 4, echoed_as="pong")
    await a.send_frame(OP_CLOSE, close_payload(1000))
    close, _ = await read_until_close(a)
    assert close.close_code == 1000
    sent("close", 2)
    assert await a.wait_eof(), "wsgate kept A open after the close handshake"
    a.close()

    # B: the backend closes with 4001 "bye"; the client answers with a 2-byte close.
    b = await RawClient.connect(gate.port)
    await b.handshake()
    await b.send_frame(OP_TEXT, b"!close 4001 bye")
    sent("text", 15, echoed_as=False)
    close = await b.expect_close()  # answers with the 2-byte code, masked
    assert (close.close_code, close.close_reason) == (4001, "bye")
    expected_bytes[B2C] += wire(5, False)
    expected_frames[(B2C, "close")] += 1
    expected_bytes[C2B] += wire(2, True)
    expected_frames[(C2B, "close")] += 1
    b.close()

    # C: one echo, then the client drops TCP (RST). wsgate's own 1001 to the backend and the
    # backend's close answer (towards a client that is gone) are not relayed frames.
    c = await RawClient.connect(gate.port)
    await c.handshake()
    await c.send_frame(OP_TEXT, b"hi")
    await expect_echo(c, OP_TEXT, b"hi")
    sent("text", 2)
    c.abort()

    results = await backend.wait_results(3)
    assert sorted(results) == sorted([("closed", 1000), ("backend-closed", 4001),
                                      ("closed", 1001)]), results
    # 5*106 + 2*1008 + 3*56 + 10 + 8 + (21 + 8) + 8 = 2769 in; 5*102 + 2*1004 + 3*52 + 6 + 4 +
    # 7 + 4 = 2695 out.
    assert expected_bytes == {C2B: 2769, B2C: 2695}
    return expected_bytes, expected_frames


async def wait_closes(gate, before, count):
    """Scrape until ``count`` more closes were counted and nothing is active."""
    return await wait_metric(
        gate, lambda s: (s.get("wsgate_closes_total") - before.get("wsgate_closes_total")
                         >= count and s.get("wsgate_connections_active") == 0),
        f"{count} closes and no active connection")


@async_test(timeout=40)
async def test_exact_counters_after_known_script(gates):
    """After run_known_script every counter moved by exactly what went over the wire."""
    backend = await ScriptedBackend(echo_script).start()
    gate = await gates.launch(metrics_config(pools={"p": [backend.address]}))
    before = await scrape(gate)
    expected_bytes, expected_frames = await run_known_script(gate, backend)
    after = await wait_closes(gate, before, 3)

    labels = dict(listener="public", pool="p", backend=backend.address)
    assert after.get("wsgate_connections_active", **labels) == 0
    assert delta(after, before, "wsgate_connections_total", **labels) == 3
    assert handshake_deltas(after, before) == {"upgraded": 3}
    for name in ("wsgate_handshake_duration_seconds_count",
                 "wsgate_connection_duration_seconds_count"):
        assert delta(after, before, name, pool="p") == 3, name
    assert delta(after, before, "wsgate_handshake_duration_seconds_bucket", pool="p",
                 le="+Inf") == 3

    messages = {d: delta(after, before, "wsgate_messages_total", pool="p", direction=d)
                for d in (C2B, B2C)}
    # A: 5 + 2 + 1 (fragmented) each way; B: 1 in; C: 1 each way. Control frames are not
    # messages.
    assert messages == {C2B: 10, B2C: 9}, messages
    frames = {(d, o): delta(after, before, "wsgate_frames_total", pool="p", direction=d,
                            opcode=o) for d in (C2B, B2C) for o in OPCODES}
    assert frames == expected_frames, {k: (frames[k], v) for k, v in expected_frames.items()
                                       if frames[k] != v}
    got_bytes = {d: delta(after, before, "wsgate_bytes_total", pool="p", direction=d)
                 for d in (C2B, B2C)}
    assert got_bytes == expected_bytes, f"bytes: got {got_bytes}, expected {expected_bytes}"

    closes = {(l["initiator"], l["code"]): v - before.get("wsgate_closes_total", **l)
              for l, v in after.series("wsgate_closes_total", pool="p")}
    closes = {k: v for k, v in closes.items() if v}
    assert closes == {("client", "1000"): 1, ("backend", "4xxx"): 1, ("client", "1006"): 1}, closes
    assert after.get("wsgate_backend_connect_failures_total") == 0
    print(f"\n[metrics-exact] bytes {got_bytes} messages {messages} closes {closes}")


@async_test(timeout=40)
async def test_access_log_agrees_with_metrics(gates):
    """The access lines' bytes_in/bytes_out/msgs_in/msgs_out summed over run_known_script
    equal the metric deltas (both claim to count the bytes relayed on the wire)."""
    backend = await ScriptedBackend(echo_script).start()
    gate = await gates.launch(metrics_config(pools={"p": [backend.address]}))
    before = await scrape(gate)
    expected_bytes, _ = await run_known_script(gate, backend)
    after = await wait_closes(gate, before, 3)
    lines = await gate.wait_for_access_lines(3)
    logged = {key: sum(int(re.search(rf"\b{key}=(\d+)", l).group(1)) for l in lines)
              for key in ("bytes_in", "bytes_out", "msgs_in", "msgs_out")}
    counted = {"bytes_in": delta(after, before, "wsgate_bytes_total", direction=C2B),
               "bytes_out": delta(after, before, "wsgate_bytes_total", direction=B2C),
               "msgs_in": delta(after, before, "wsgate_messages_total", direction=C2B),
               "msgs_out": delta(after, before, "wsgate_messages_total", direction=B2C)}
    per_line = [" ".join(re.findall(r"\b(?:bytes_\w+|msgs_\w+|close_code)=\S+", l))
                for l in lines]
    assert logged == counted, (f"access log {logged} != metrics {counted} (wire truth "
                               f"{expected_bytes}); per line: {per_line}")


# ------------------------------------------------------------------------------------------
# 2. Counters move while the connection is open
# ------------------------------------------------------------------------------------------

@async_test(timeout=30)
async def test_counters_move_live(gates):
    """On an open connection the message and byte counters grow with every echo, long before
    the connection closes; connections_active is 1 meanwhile."""
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    ws = await ws_connect(gate.url("/live"))
    before = await scrape(gate)
    assert before.get("wsgate_connections_active", pool="p", backend=echo.address) == 1

    sent = {C2B: 0, B2C: 0}
    count = 0
    for round_, (payload, n) in enumerate([("t" * 10, 3), (b"\x01" * 200, 2), ("u" * 70000, 1)]):
        for _ in range(n):
            await ws.send(payload)
            assert await recv(ws) == payload
            length = len(payload)
            sent[C2B] += wire(length, True)
            sent[B2C] += wire(length, False)
        count += n
        now = await scrape(gate)
        got = {d: delta(now, before, "wsgate_bytes_total", pool="p", direction=d)
               for d in (C2B, B2C)}
        msgs = {d: delta(now, before, "wsgate_messages_total", pool="p", direction=d)
                for d in (C2B, B2C)}
        assert msgs == {C2B: count, B2C: count}, f"round {round_}: messages {msgs}"
        assert got == sent, f"round {round_}: bytes {got}, expected {sent}"
        assert now.get("wsgate_connections_active", pool="p") == 1
        assert delta(now, before, "wsgate_closes_total") == 0
    assert echo.connections[0].close_code is None, "the connection closed during the test"
    await ws.close()
    done = await wait_metric(gate, lambda s: s.get("wsgate_connections_active") == 0,
                             "active back to 0")
    assert done.get("wsgate_closes_total", pool="p", initiator="client", code="1000") == 1


# ------------------------------------------------------------------------------------------
# 3. Every handshake outcome has its counter
# ------------------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"


async def answer_200(peer):
    """ScriptedBackend: refuse the upgrade with a plain 200."""
    await read_http_request(peer)
    await peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                     b"\r\nno")
    peer.close()


@async_test(timeout=45)
async def test_each_handshake_outcome_is_counted(gates):
    """400, 403, 431, 408, 404, 503 (all backends drained), 502 (refused backend), a
    backend's 200 and 503 over max_connections each add one to their result and nothing
    else; a normal client is served after each (one `upgraded`)."""
    main = await EchoBackend(name="main").start()
    drained = await EchoBackend(name="drained").start()
    rejecting = await ScriptedBackend(answer_200).start()
    dead = closed_port()
    config = metrics_config(
        pools={"main": [main.address], "drained": [drained.address],
               "rej": [rejecting.address], "dead": [f"127.0.0.1:{dead}"]},
        routes=[{"match": {"path_prefix": "/ok"}, "pool": "main"},
                {"match": {"path_prefix": "/drained"}, "pool": "drained"},
                {"match": {"path_prefix": "/rej"}, "pool": "rej"},
                {"match": {"path_prefix": "/dead"}, "pool": "dead"}],
        limits={"max_header_bytes": "4KiB", "max_request_line_bytes": "1KiB",
                "allowed_origins": [ORIGIN]},
        timeouts={"handshake": "700ms", "connect": "2s"})
    gate = await gates.launch(config)
    status, body = await admin(gate, "POST", f"/admin/backends/drained/{drained.address}/drain")
    assert status == 200, (status, body)
    origin = [("Origin", ORIGIN)]

    cases = [
        ("bad_request", 400, upgrade_request(path="/ok", drop=["Sec-WebSocket-Key"],
                                             extra=origin)),
        ("forbidden", 403, upgrade_request(path="/ok",
                                           extra=[("Origin", "https://evil.example.com")])),
        ("too_large", 431, upgrade_request(path="/ok", extra=origin + [("X-Big", "b" * 5000)])),
        ("timeout", 408, b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"),
        ("not_found", 404, upgrade_request(path="/nowhere", extra=origin)),
        ("no_backend", 503, upgrade_request(path="/drained", extra=origin)),
        ("backend_failed", 502, upgrade_request(path="/dead", extra=origin)),
        ("backend_rejected", 200, upgrade_request(path="/rej", extra=origin)),
    ]
    problems = []
    for result, status, request in cases:
        before = await scrape(gate)
        client = await RawClient.connect(gate.port)
        await client.write(request)
        if status == 200:
            response = await read_http_response(client)
            assert (response.status, response.body) == (200, b"no"), response.start_line
            client.close()
        else:
            await assert_rejected(client, status, timeout=5)
        await assert_still_serving(gate, path="/ok", origin=ORIGIN)
        after = await scrape(gate)
        got = handshake_deltas(after, before)
        if got != {result: 1, "upgraded": 1}:
            problems.append(f"{status} ({result}): handshake deltas {got}")
    assert not problems, problems
    final = await scrape(gate)
    assert final.get("wsgate_backend_connect_failures_total", pool="dead",
                     reason="refused") >= 1
    assert final.get("wsgate_backend_up", pool="drained") == 0
    assert final.get("wsgate_backend_up", pool="main") == 1


@async_test(timeout=30)
async def test_over_limit_is_counted(gates):
    """With max_connections 1 and one open tunnel, a second client's 503 is over_limit; once
    the tunnel closes a normal client is served."""
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]},
                                             limits={"max_connections": 1}))
    before = await scrape(gate)
    held = await ws_connect(gate.url("/held"))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request())
    response = await assert_rejected(client, 503)
    assert response.get("Retry-After") == "1"
    after = await scrape(gate)
    assert handshake_deltas(after, before) == {"upgraded": 1, "over_limit": 1}
    await held.close()
    await wait_metric(gate, lambda s: s.get("wsgate_connections_active") == 0, "active 0")
    deadline = time.monotonic() + 5
    while True:  # the rejected session may still be lingering for a moment
        probe = await RawClient.connect(gate.port)
        await probe.write(upgrade_request())
        response = await read_http_response(probe)
        probe.close()
        if response.status == 101:
            break
        assert response.status == 503 and time.monotonic() < deadline, response.start_line
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------------
# 4. Health checks: backend_up and /readyz
# ------------------------------------------------------------------------------------------

@async_test(timeout=30)
async def test_readyz_and_backend_up_follow_health_checks(gates):
    """With tcp health checks, stopping the pool's only backend turns wsgate_backend_up to 0
    and /readyz to 503."""
    echo = await EchoBackend().start()
    config = metrics_config(pools={"p": [echo.address]})
    config["pools"][0]["health_check"] = {"interval": "300ms", "timeout": "200ms", "type": "tcp",
                                          "unhealthy_threshold": 1, "healthy_threshold": 1}
    gate = await gates.launch(config)
    await wait_metric(gate, lambda s: s.get("wsgate_backend_up", pool="p",
                                            backend=echo.address) == 1, "backend_up 1")
    assert await admin(gate, "GET", "/readyz") == (200, "ready\n")

    await echo.stop()
    t_stop = time.monotonic()
    await wait_metric(gate, lambda s: s.get("wsgate_backend_up", pool="p",
                                            backend=echo.address) == 0,
                      "backend_up 0 after the backend stopped", timeout=5)
    down_after = time.monotonic() - t_stop
    state = {}
    status, body = await admin(gate, "GET", "/admin/backends")
    if status == 200:
        state = {b["address"]: b["state"] for b in json.loads(body)["backends"]}
    deadline = time.monotonic() + 3
    while True:
        status, body = await admin(gate, "GET", "/readyz")
        if status == 503:
            break
        assert time.monotonic() < deadline, (
            f"/readyz still {status} {body!r} 3s after wsgate_backend_up went 0 "
            f"(every backend of pool p is down; /admin/backends states: {state})")
        await asyncio.sleep(0.05)
    assert "pool p" in body, body
    print(f"\n[metrics-health] backend_up 0 after {down_after:.2f}s")


# ------------------------------------------------------------------------------------------
# 5. promtool
# ------------------------------------------------------------------------------------------

async def generate_traffic(gate, backend_address):
    """Enough traffic that every metric family has series: two tunnels (closes by client and
    backend), a rejection, messages both ways."""
    ws = await ws_connect(gate.url("/t1"))
    await ws.send("hello")
    assert await recv(ws) == "hello"
    await ws.send(b"\x00" * 300)
    await recv(ws)
    await ws.close()
    ws = await ws_connect(gate.url("/t2"))
    await ws.send("!close 4001 bye")
    await asyncio.wait_for(ws.wait_closed(), WAIT)
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(drop=["Sec-WebSocket-Key"]))
    await assert_rejected(client, 400)
    return await wait_metric(
        gate, lambda s: (s.get("wsgate_closes_total") >= 2
                         and s.series("wsgate_backend_up", backend=backend_address)),
        "closes and backend_up series")


@async_test(timeout=30)
async def test_promtool_check_metrics(gates):
    """`promtool check metrics` accepts the exposition with no lint problem."""
    promtool = shutil.which("promtool") or ("/usr/bin/promtool"
                                            if os.path.exists("/usr/bin/promtool") else None)
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    current = await generate_traffic(gate, echo.address)
    families = set(current.types)
    assert {"wsgate_handshake_duration_seconds", "wsgate_closes_total",
            "wsgate_frames_total"} <= families, families
    result = await asyncio.to_thread(subprocess.run, [promtool, "check", "metrics"],
                                     input=current.text, capture_output=True, text=True,
                                     timeout=20)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", (
        f"promtool check metrics exit {result.returncode}:\n{output}")


def proc_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_start_time(pid):
    """Start time since the epoch, computed as the Prometheus client libraries do."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + int(fields[22 - 3]) / os.sysconf("SC_CLK_TCK")


@async_test(timeout=60)
async def test_process_metrics_match_the_kernel(gates):
    """process_* families: the client libraries' names and types, values as /proc says."""
    echo = await EchoBackend().start()
    before = time.time()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    pid = gate.proc.pid
    first = await scrape(gate)
    assert {name: first.types.get(name) for name in (
        "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
        "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds")} == {
        "process_cpu_seconds_total": "counter", "process_open_fds": "gauge",
        "process_max_fds": "gauge", "process_virtual_memory_bytes": "gauge",
        "process_resident_memory_bytes": "gauge", "process_start_time_seconds": "gauge"}
    assert first.get("process_max_fds") == resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
    start = first.get("process_start_time_seconds")
    assert start == pytest.approx(proc_start_time(pid), abs=0.02)
    assert before - 2 <= start <= time.time() + 1
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    vm_size = int(status["VmSize"].split()[0]) * 1024
    assert first.get("process_virtual_memory_bytes") == pytest.approx(vm_size, rel=0.2)
    assert 1024 * 1024 < first.get("process_resident_memory_bytes") < vm_size

    # Open connections hold descriptors; the gauge follows them as they come and go.
    fds_idle = first.get("process_open_fds")
    assert abs(fds_idle - proc_fd_count(pid)) <= 3
    clients = [await ws_connect(gate.url()) for _ in range(5)]
    for ws in clients:
        await ws.send("x")
        assert await recv(ws) == "x"
    busy = await scrape(gate)
    # Each tunnel holds a client and a backend descriptor.
    assert busy.get("process_open_fds") >= fds_idle + 10
    assert abs(busy.get("process_open_fds") - proc_fd_count(pid)) <= 3
    # CPU time is a counter: it never goes back, and the traffic cost some.
    assert busy.get("process_cpu_seconds_total") >= first.get("process_cpu_seconds_total")
    for ws in clients:
        await ws.close()
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# 6. A real Prometheus server scrapes wsgate
# ------------------------------------------------------------------------------------------

def free_port():
    """A loopback port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url_get_json(url, timeout=5):
    """GET a JSON document (blocking; run in a thread)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read().decode())


async def prom_query(port, expr):
    """Prometheus instant query; return the decoded answer (raises on HTTP errors)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        _, body = await asyncio.to_thread(url_get_json, url)
    except urllib.error.HTTPError as err:
        return json.loads(err.read().decode() or "{}") | {"http_status": err.code}
    return body


class PrometheusServer:
    """/usr/bin/prometheus on a free loopback port with its own TSDB in tmp."""

    def __init__(self, binary, tmp_path, target):
        self.binary = binary
        self.dir = os.path.join(str(tmp_path), "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: wsgate\n    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None
        self.port = None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    async def start(self, timeout=20):
        register_cleanup(self.stop)
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, f"--config.file={self.config}",
                     f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    req = f"http://127.0.0.1:{self.port}/-/ready"
                    with await asyncio.to_thread(urllib.request.urlopen, req, None, 1) as r:
                        if r.status == 200:
                            return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.log()}")
            if "address already in use" not in self.log():
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
        raise AssertionError(f"prometheus could not bind a port:\n{self.log()}")

    async def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


async def wait_query(server, expr, predicate, what, timeout=15):
    """Poll a query until ``predicate(result list)``; return the result list."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        answer = await prom_query(server.port, expr)
        if answer.get("status") == "success" and predicate(answer["data"]["result"]):
            return answer["data"]["result"]
        await asyncio.sleep(0.2)
    targets = await asyncio.to_thread(url_get_json,
                                      f"http://127.0.0.1:{server.port}/api/v1/targets")
    raise AssertionError(f"timed out after {timeout}s waiting for {what} ({expr}); last answer "
                         f"{answer}; targets {targets[1]['data']['activeTargets']}; "
                         f"log:\n{server.log()}")


def dashboard_expressions():
    """Every PromQL expression of the dashboard (panels, annotations, variable queries)."""
    with open(DASHBOARD) as f:
        board = json.load(f)
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str) and "wsgate_" in value:
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(board)
    return board, exprs


def as_promql(expr):
    """A dashboard expression with Grafana's variables filled in, as plain PromQL."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr)
    if match:
        expr = match.group(1)
    return (expr.replace("$__rate_interval", "1m").replace('"$instance"', '".*"')
            .replace('"$pool"', '".*"'))


@async_test(timeout=60)
async def test_prometheus_server_scrapes_wsgate(gates, tmp_path):
    """A real Prometheus scraping wsgate every second sees connections_active 1 for the
    backend while a client holds a connection, and 0 after it closes; every dashboard
    expression is valid PromQL that the server evaluates."""
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                            if os.path.exists("/usr/bin/prometheus") else None)
    if binary is None:
        pytest.skip("the prometheus server binary is not installed (Debian package `prometheus`)")
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    host, port = admin_address(gate)
    ws = await ws_connect(gate.url("/held"))
    await ws.send("x")
    assert await recv(ws) == "x"

    server = await PrometheusServer(binary, tmp_path, f"{host}:{port}").start()
    try:
        t_ready = time.monotonic()
        result = await wait_query(
            server, "wsgate_connections_active",
            lambda r: any(s["metric"].get("backend") == echo.address and s["value"][1] == "1"
                          for s in r),
            "wsgate_connections_active 1 for the backend")
        seen_after = time.monotonic() - t_ready
        series = [s for s in result if s["metric"].get("backend") == echo.address]
        assert len(series) == 1, result
        metric = series[0]["metric"]
        assert (metric["pool"], metric["listener"], metric["job"]) == ("p", "public", "wsgate")
        up = await prom_query(server.port, 'up{job="wsgate"}')
        assert [s["value"][1] for s in up["data"]["result"]] == ["1"], up

        problems = []
        for expr in dashboard_expressions()[1]:
            answer = await prom_query(server.port, as_promql(expr))
            if answer.get("status") != "success":
                problems.append(f"{expr!r}: {answer.get('error')}")
        assert not problems, f"dashboard expressions Prometheus rejects: {problems}"

        await ws.close()
        await wait_query(
            server, f'wsgate_connections_active{{backend="{echo.address}"}}',
            lambda r: [s["value"][1] for s in r] == ["0"], "connections_active back to 0")
        print(f"\n[metrics-prometheus] first sample with the connection {seen_after:.2f}s after "
              f"Prometheus was ready")
    finally:
        await server.stop()


# ------------------------------------------------------------------------------------------
# 7. Reloads and draining
# ------------------------------------------------------------------------------------------

BROKEN_CONFIG = """\
workers: 1
listeners:
  - name: public
    address: 127.0.0.1:0
pools: [ { name: p, backends: [ { address: 127.0.0.1:1 } ]
"""


async def reload(gate, config, launcher, expect):
    """Rewrite the config file, SIGHUP, wait for the outcome line ``expect``."""
    before = gate.stderr_text().count(expect)
    path = launcher.write_config(config, os.path.basename(gate.config_path) + ".new")
    os.replace(path, gate.config_path)
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: gate.stderr_text().count(expect) > before, WAIT,
                     f"{expect!r} after SIGHUP")


@async_test(timeout=30)
async def test_reload_counters_and_draining_gauge(gates):
    """A good reload adds one success, a broken file one failure; after SIGTERM (during
    drain.grace) wsgate_draining is 1."""
    echo = await EchoBackend().start()
    config = metrics_config(pools={"p": [echo.address]})
    config["drain"] = {"grace": "1500ms"}
    gate = await gates.launch(config)
    start = await scrape(gate)
    reloads = lambda s: (s.get("wsgate_config_reloads_total", result="success"),  # noqa: E731
                         s.get("wsgate_config_reloads_total", result="failure"))
    assert reloads(start) == (0, 0) and start.get("wsgate_draining") == 0

    await reload(gate, config, gates, "reload complete")
    assert reloads(await scrape(gate)) == (1, 0)
    await reload(gate, BROKEN_CONFIG, gates, "reload failed")
    assert reloads(await scrape(gate)) == (1, 1)
    await assert_still_serving(gate)
    await reload(gate, config, gates, "reload complete")
    assert reloads(await scrape(gate)) == (2, 1)

    t_term = time.monotonic()
    gate.proc.send_signal(signal.SIGTERM)
    draining = await wait_metric(gate, lambda s: s.get("wsgate_draining") == 1,
                                 "wsgate_draining 1 after SIGTERM", timeout=1)
    assert time.monotonic() - t_term < 1.2, "scrape not within drain.grace"
    assert (await admin(gate, "GET", "/readyz"))[0] == 503
    assert reloads(draining) == (2, 1)
    # Still accepting during the grace period.
    await assert_still_serving(gate)
    await wait_until(lambda: not gate.alive(), 10, "wsgate to exit after the grace period")
    assert gate.proc.returncode == 0


# ------------------------------------------------------------------------------------------
# 8. The Grafana dashboard
# ------------------------------------------------------------------------------------------

@async_test(timeout=30)
async def test_grafana_dashboard_matches_metrics(gates):
    """examples/grafana/wsgate-dashboard.json is a Grafana dashboard (schemaVersion ~38, a
    Prometheus datasource variable, the expected panels) and every metric it queries exists in
    wsgate's /metrics output."""
    board, exprs = dashboard_expressions()
    assert 36 <= board["schemaVersion"] <= 39, board["schemaVersion"]
    assert board["title"] and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    datasource_vars = [v for v in variables.values() if v["type"] == "datasource"]
    assert [v["query"] for v in datasource_vars] == ["prometheus"], datasource_vars
    ds_ref = "${" + datasource_vars[0]["name"] + "}"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    for panel in panels:
        assert panel["datasource"]["uid"] == ds_ref, panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
    panel_exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in ("wsgate_connections_active", "wsgate_handshakes_total",
                   "wsgate_messages_total", "wsgate_bytes_total", "wsgate_closes_total",
                   "wsgate_backend_up", "wsgate_draining"):
        assert needed in panel_exprs, f"no panel queries {needed}"
    assert re.search(r"histogram_quantile\(0\.99,.*wsgate_handshake_duration_seconds_bucket",
                     panel_exprs), "no p99 handshake-time panel"

    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    current = await generate_traffic(gate, echo.address)
    present = current.names()
    used = sorted({name for expr in exprs for name in re.findall(r"\bwsgate_[a-zA-Z0-9_]+",
                                                                  expr)})
    missing = [name for name in used if name not in present]
    assert not missing, f"dashboard metrics not in /metrics: {missing} (present: {sorted(present)})"
    print(f"\n[metrics-dashboard] {len(panels)} panels, {len(exprs)} expressions, metrics {used}")
