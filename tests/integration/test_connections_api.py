"""The connections API (docs/connections-api.md): every upgraded connection has an id and a
callback URL the backend learns from the upgrade request; through the admin listener a backend
lists, inspects, pushes messages to and closes client connections.

A real backend process (connections_backend.py) reads the id and URL from the upgrade headers;
pushes go over HTTP/1.1 keep-alive from a thread pool; clients are websockets clients (which
reject any frame that breaks a fragmented message) or raw frame readers.
"""

import asyncio
import concurrent.futures
import http.client
import json
import os
import re
import time
import urllib.parse

import pytest

from harness import (OP_CLOSE, OP_BINARY, OP_CONT, OP_TEXT, PYTHON, RawClient, ScriptedBackend,
                     accept_for, admin_address, read_http_request, async_test, backend_accept,
                     close_payload, encode_frame, make_config, read_frame, read_until_close,
                     recv, register_cleanup, wait_until, wait_until_blocking, ws_connect)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "s3cret-token"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


class BackendProcess:
    """connections_backend.py as a subprocess; collects one record per connection."""

    def __init__(self):
        self.proc = None
        self.port = None
        self.records = []
        self._reader = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, os.path.join(HERE, "connections_backend.py"), TOKEN,
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 10)).decode()
        assert line.startswith("port "), line
        self.port = int(line.split()[1])
        self._reader = asyncio.ensure_future(self._read())
        register_cleanup(self.stop)
        return self

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            self.records.append(json.loads(line))

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()

    async def wait_records(self, count, timeout=20):
        await wait_until(lambda: len(self.records) >= count, timeout, f"{count} backend records")
        return self.records

    def record_for(self, path):
        return next(r for r in self.records if r["path"] == path)


def gate_config(backend, workers=1, token=TOKEN, limits=None, **admin_extra):
    config = make_config({"p": [backend.address]}, workers=workers, limits=limits)
    config["admin"] = {"address": "127.0.0.1:0", "token": token, **admin_extra}
    return config


class Api:
    """Blocking HTTP/1.1 keep-alive client for one wsgate's admin listener."""

    def __init__(self, address, token=TOKEN):
        self.host, self.port = address
        self.token = token
        self.conn = None

    def call(self, method, path, body=None, content_type=None, token=None):
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(2):  # a keep-alive connection the server closed is reopened once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


async def api(gate, method, path, body=None, content_type=None, token=TOKEN):
    """One API call from a thread (the event loop keeps serving the test's clients)."""
    client = Api(admin_address(gate), token)
    return await asyncio.to_thread(client.call, method, path, body, content_type)


def push_sequence(address, jobs):
    """Push every (id, [messages]) of |jobs| in order over one keep-alive connection, retrying
    429 (backpressure); return how many 429s were seen."""
    client = Api(address)
    retries = 0

    def pushed(connection_id, message):
        nonlocal retries
        status, body = client.call("POST", f"/connections/{connection_id}", message,
                                   "text/plain; charset=utf-8")
        if status == 429:
            retries += 1
            return False
        assert status == 200, (status, body)
        return True

    for connection_id, messages in jobs:
        for message in messages:
            # 429 until the client has read enough of what is queued for it.
            wait_until_blocking(lambda: pushed(connection_id, message), 30,
                                f"a push to {connection_id} accepted", interval=0.005)
    return retries


@async_test(timeout=60)
async def test_identity_headers_inspect_push_close_and_errors(gates):
    backend = await BackendProcess().start()
    gate = await gates.launch(gate_config(backend, limits={"max_message_bytes": 65536}))
    admin_host, admin_port = admin_address(gate)

    # A client cannot choose its id or callback: its X-Wsgate-* fields are dropped.
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/one", extra=[("X-Wsgate-Connection-Id", "AAAAAAAAAAAAAAAAAAAAAA"),
                                               ("X-Wsgate-Callback-Url", "http://evil/")])
    record = (await backend.wait_records(1))[0]
    names = [k.lower() for k, _ in record["headers"]]
    assert names.count("x-wsgate-connection-id") == 1 and names.count("x-wsgate-callback-url") == 1
    cid = record["id"]
    assert ID_PATTERN.match(cid) and cid != "AAAAAAAAAAAAAAAAAAAAAA", cid
    assert record["callback"] == f"http://{admin_host}:{admin_port}/connections/{cid}"

    status, body = await api(gate, "GET", "/connections")
    assert status == 200, body
    listing = json.loads(body)
    assert [c["id"] for c in listing["connections"]] == [cid] and listing["next_cursor"] is None
    status, body = await api(gate, "GET", f"/connections/{cid}")
    assert status == 200, body
    info = json.loads(body)
    assert info["pool"] == "p" and info["backend"] == backend.address
    assert info["listener"] == "public" and info["path"] == "/one"
    assert info["client"].startswith("127.0.0.1:")
    for key in ("connected_at_ms", "last_activity_ms", "bytes_from_client", "bytes_to_client",
                "messages_from_client", "messages_to_client", "subprotocol", "route"):
        assert key in info, key

    # Pushes: text for text/* and application/json, binary otherwise.
    assert (await api(gate, "POST", f"/connections/{cid}", "héllo".encode(), "text/plain"))[0] == 200
    assert (await api(gate, "POST", f"/connections/{cid}", b'{"a":1}', "application/json"))[0] == 200
    assert (await api(gate, "POST", f"/connections/{cid}", b"\x00\xff", "application/octet-stream"))[0] == 200
    frames = [await read_frame(client) for _ in range(3)]
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (OP_TEXT, True, "héllo".encode()), (OP_TEXT, True, b'{"a":1}'), (OP_BINARY, True, b"\x00\xff")]

    # Errors, each followed by a working call.
    assert (await api(gate, "GET", f"/connections/{cid}", token="wrong-token"))[0] == 401
    assert (await api(gate, "POST", f"/connections/{cid}", b"x", "text/plain", token=""))[0] == 401
    assert (await api(gate, "GET", "/connections/BBBBBBBBBBBBBBBBBBBBBB"))[0] == 404
    assert (await api(gate, "GET", "/connections/not-an-id"))[0] == 404
    assert (await api(gate, "POST", f"/connections/{cid}", b"\xc3\x28", "text/plain"))[0] == 400
    assert (await api(gate, "POST", f"/connections/{cid}", b"x" * 65537, "text/plain"))[0] == 413
    assert (await api(gate, "DELETE", f"/connections/{cid}?code=1005"))[0] == 400
    assert (await api(gate, "DELETE", f"/connections/{cid}?code=abc"))[0] == 400
    assert (await api(gate, "DELETE", f"/connections/{cid}?reason=" + "r" * 124))[0] == 400
    assert (await api(gate, "GET", "/connections?limit=0"))[0] == 400
    assert (await api(gate, "PUT", f"/connections/{cid}"))[0] in (405, 501)
    status, body = await api(gate, "GET", "/metrics")
    assert 'wsgate_connections_api_requests_total{method="GET",status="401"} 1' in body.decode()
    assert 'wsgate_connections_api_requests_total{method="POST",status="401"} 1' in body.decode()
    assert 'wsgate_connections_api_requests_total{method="POST",status="413"} 1' in body.decode()
    assert (await api(gate, "POST", f"/connections/{cid}", b"still here", "text/plain"))[0] == 200
    frame = await read_frame(client)
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"still here")

    # DELETE: the client gets the requested code and reason; the backend a close too.
    reason = urllib.parse.quote("bye now")
    status, body = await api(gate, "DELETE", f"/connections/{cid}?code=4001&reason={reason}")
    assert status == 200, body
    close, before = await read_until_close(client)
    assert before == [] and (close.close_code, close.close_reason) == (4001, "bye now")
    await client.write(encode_frame(OP_CLOSE, close_payload(4001)))
    assert await client.wait_eof(10)
    for _ in range(100):
        status, _ = await api(gate, "GET", f"/connections/{cid}")
        if status != 200:
            break
        await asyncio.sleep(0.05)
    assert status == 410
    assert (await api(gate, "POST", f"/connections/{cid}", b"late", "text/plain"))[0] == 410
    await assert_still_serving_backend(gate, backend)


async def assert_still_serving_backend(gate, backend):
    ws = await ws_connect(gate.url("/alive"))
    await ws.send("ping?")
    assert await recv(ws) == "ping?"
    await ws.close()


@async_test(timeout=60)
async def test_push_waits_for_the_fragmented_backend_message_in_flight(gates):
    first_sent = asyncio.Event()
    pushed = asyncio.Event()
    seen = {}

    async def script(peer):
        request = await backend_accept(peer)
        seen["id"] = request.get("X-Wsgate-Connection-Id")
        await peer.write(encode_frame(OP_TEXT, b"part1-", fin=False, mask=False))
        first_sent.set()
        await asyncio.wait_for(pushed.wait(), 20)
        await peer.write(encode_frame(OP_CONT, b"part2", fin=True, mask=False))
        await peer.write(encode_frame(OP_TEXT, b"after", mask=False))

    backend = await ScriptedBackend(script).start()
    gate = await gates.launch(gate_config(backend))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/frag")
    await asyncio.wait_for(first_sent.wait(), 10)
    frame = await read_frame(client)
    assert (frame.opcode, frame.fin, frame.payload) == (OP_TEXT, False, b"part1-")
    # Queued (200) while the backend's message is open; delivered only after its last frame.
    status, body = await api(gate, "POST", f"/connections/{seen['id']}", b"pushed", "text/plain")
    assert status == 200, body
    await asyncio.sleep(0.2)
    assert client.pending() == b"", "the push went out inside the fragmented message"
    pushed.set()
    frames = [await read_frame(client) for _ in range(3)]
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (OP_CONT, True, b"part2"), (OP_TEXT, True, b"pushed"), (OP_TEXT, True, b"after")]


@async_test(timeout=60)
async def test_push_before_the_101_is_delivered_right_after_it(gates):
    answers = {}
    gate_holder = []

    async def script(peer):
        request = await read_http_request(peer)
        cid = request.get("X-Wsgate-Connection-Id")
        gate = gate_holder[0]
        answers["info"] = await api(gate, "GET", f"/connections/{cid}")
        answers["post"] = await api(gate, "POST", f"/connections/{cid}", b"early", "text/plain")
        answers["delete"] = await api(gate, "DELETE", f"/connections/{cid}")
        key = request.get("Sec-WebSocket-Key")
        await peer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                          f"{accept_for(key)}\r\n\r\n").encode())
        await peer.write(encode_frame(OP_TEXT, b"from backend", mask=False))

    backend = await ScriptedBackend(script).start()
    gate_holder.append(await gates.launch(gate_config(backend)))
    client = await RawClient.connect(gate_holder[0].port)
    await client.handshake(path="/early")
    frames = [await read_frame(client) for _ in range(2)]
    assert [f.payload for f in frames] == [b"early", b"from backend"]
    assert answers["info"][0] == 200 and json.loads(answers["info"][1])["state"] == "upgrading"
    assert answers["post"][0] == 200
    assert answers["delete"][0] == 409


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=150)
async def test_10000_pushes_to_100_clients_while_the_backend_streams_fragmented(gates, workers):
    # The stream is sized so the clients (in this one Python process, with the pushing threads)
    # need a small share of a core: at 16 KiB x 16 fragments every 20 ms the receivers needed all
    # of it, starved the pushing threads of the GIL, and a busy machine timed the test out.
    connections, per_connection = 100, 100
    stream = "stream=1&fragments=8&size=2048"
    backend = await BackendProcess().start()
    gate = await gates.launch(gate_config(
        backend, workers=workers, limits={"write_buffer_high_watermark": 1024 * 1024}))
    clients = []
    for i in range(connections):
        clients.append(await ws_connect(gate.url(f"/c/{i}?{stream}")))
    await backend.wait_records(connections)
    ids = {}
    for i in range(connections):
        ids[i] = backend.record_for(f"/c/{i}?{stream}")["id"]
    assert len(set(ids.values())) == connections

    async def receive_all(i, ws):
        pushed, streamed = [], []
        interleaved = False
        while not streamed or streamed[-1] != "B:done":
            message = await recv(ws, 60)
            if message.startswith("P:"):
                pushed.append(message)
                interleaved = interleaved or bool(streamed)
                if len(pushed) == per_connection:
                    await ws.send("stop")  # the backend streamed all along; now it may finish
            else:
                streamed.append(message)
        return pushed, streamed, interleaved

    receivers = [asyncio.ensure_future(receive_all(i, ws)) for i, ws in enumerate(clients)]
    address = admin_address(gate)
    threads = 10
    jobs = [[] for _ in range(threads)]
    for i in range(connections):
        jobs[i % threads].append((ids[i], [f"P:{i}:{n}".encode() for n in range(per_connection)]))
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        loop = asyncio.get_running_loop()
        retries = await asyncio.gather(*(loop.run_in_executor(pool, push_sequence, address, j)
                                         for j in jobs))
    results = await asyncio.gather(*receivers)
    any_interleaved = False
    for i, (pushed, streamed, interleaved) in enumerate(results):
        # Exactly once, in order; every streamed message whole (websockets would have failed the
        # connection on a data frame inside a fragmented message).
        assert pushed == [f"P:{i}:{n}" for n in range(per_connection)], i
        assert streamed[-1] == "B:done"
        for k, message in enumerate(streamed[:-1]):
            assert message.startswith(f"B:{k}:") and len(message) == 2048
        any_interleaved = any_interleaved or interleaved
    assert any_interleaved, "no push arrived while the backend was still streaming"
    print(f"workers={workers}: {connections * per_connection} pushes answered in "
          f"{time.monotonic() - started:.1f}s, 429 retries {sum(retries)}")
    await assert_still_serving_backend(gate, backend)


@async_test(timeout=60)
async def test_429_when_the_client_does_not_read_and_nothing_is_lost(gates):
    backend = await BackendProcess().start()
    gate = await gates.launch(gate_config(
        backend, limits={"write_buffer_high_watermark": 65536}))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/stalled")
    cid = (await backend.wait_records(1))[0]["id"]
    client._pump_task.cancel()  # stop reading: the kernel buffers fill, then wsgate's output
    payload = b"z" * 32768
    accepted = 0
    status = 200
    for n in range(3000):
        status, body = await api(gate, "POST", f"/connections/{cid}", b"%06d" % n + payload,
                                 "application/octet-stream")
        if status != 200:
            break
        accepted += 1
    assert status == 429, (status, body)
    assert accepted > 0
    # Resume reading: every accepted message arrives once, in order.
    reader = RawClient(client.reader, client.writer)
    reader.received += client.pending()  # before its pump first runs
    register_cleanup(reader.close_quietly)
    for n in range(accepted):
        frame = await read_frame(reader, 20)
        assert frame.opcode == OP_BINARY and frame.payload[:6] == b"%06d" % n
        assert len(frame.payload) == 6 + len(payload)
    assert reader.pending() == b""
    assert (await api(gate, "POST", f"/connections/{cid}", b"again", "text/plain"))[0] == 200
    frame = await read_frame(reader)
    assert frame.payload == b"again"
    await assert_still_serving_backend(gate, backend)


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=60)
async def test_two_instances_each_callback_reaches_its_own_instance(gates, workers):
    backend = await BackendProcess().start()
    gate_a = await gates.launch(gate_config(backend, workers=workers))
    gate_b = await gates.launch(gate_config(backend, workers=workers))
    clients = []
    for i in range(10):
        gate = gate_a if i % 2 == 0 else gate_b
        clients.append((gate, await ws_connect(gate.url(f"/self/{i}?selfpush=1"))))
    await backend.wait_records(10)
    for i, (gate, ws) in enumerate(clients):
        record = backend.record_for(f"/self/{i}?selfpush=1")
        host, port = admin_address(gate)
        assert record["callback"] == f"http://{host}:{port}/connections/{record['id']}"
        messages = {await recv(ws, 20), await recv(ws, 20)}
        assert messages == {f"hello {record['id']}", "posted 200"}, messages
