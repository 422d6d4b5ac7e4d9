"""The connection hooks: auth ($connect) against a real HTTP auth service and on_disconnect
($disconnect) webhooks to a real HTTP receiver, both python http.server in a thread."""

import asyncio
import http.server
import json
import re
import threading
import time

import pytest

from harness import (EchoBackend, RawClient, assert_rejected, async_test, closed_port, recv,
                     register_cleanup, upgrade_request, wait_until, ws_connect)
from test_connections_api import BackendProcess, api, gate_config


class HttpService:
    """A threaded HTTP server whose answers come from ``respond(handler) -> (status, headers)``;
    every request's (method, path, headers, body) is recorded."""

    def __init__(self, respond):
        self.requests = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                service.requests.append((self.command, self.path, self.headers, body))
                status, headers = respond(self, body)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()

        async def stop():
            await asyncio.to_thread(self.server.shutdown)
            self.server.server_close()
        register_cleanup(stop)
        return self


def auth_answer(handler, _body):
    uri = handler.headers.get("X-Original-Uri", "")
    if uri.startswith("/allow"):
        return 200, [("X-User-Id", "user-" + uri.rsplit("/", 1)[-1]), ("X-Other", "not copied")]
    if uri.startswith("/deny401"):
        return 401, [("WWW-Authenticate", 'Bearer realm="chat"')]
    if uri.startswith("/deny403"):
        return 403, []
    if uri.startswith("/slow"):
        time.sleep(3)
        return 200, []
    return 500, []


async def metric(gate, name):
    status, body = await api(gate, "GET", "/metrics")
    assert status == 200
    match = re.search(rf"^{name} (\d+)$", body.decode(), re.M)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=60)
async def test_auth_allow_deny_timeout_and_copied_headers(gates, workers):
    auth = HttpService(auth_answer).start()
    backend = await BackendProcess().start()
    config = gate_config(backend, workers=workers)
    config["auth"] = {"url": auth.url + "/check?svc=chat", "forward_headers": ["Cookie", "Origin"],
                      "copy_headers": ["X-User-Id"], "timeout": "500ms"}
    gate = await gates.launch(config)

    # Allowed: forwarded headers reach the auth service; its X-User-Id reaches the backend, and a
    # client's own X-User-Id does not.
    ws = await ws_connect(gate.url("/allow/7"), extra_headers=[
        ("Cookie", "session=abc"), ("X-User-Id", "spoofed"), ("X-Secret", "keep-me-here")])
    await ws.send("hi")
    assert await recv(ws) == "hi"
    method, path, headers, _ = auth.requests[-1]
    assert (method, path) == ("GET", "/check?svc=chat")
    assert headers["Cookie"] == "session=abc" and headers["X-Original-Uri"] == "/allow/7"
    assert headers.get("X-Secret") is None
    record = backend.record_for("/allow/7")
    assert headers["X-Wsgate-Connection-Id"] == record["id"]
    user_ids = [v for k, v in record["headers"] if k.lower() == "x-user-id"]
    assert user_ids == ["user-7"]
    assert not [k for k, _ in record["headers"] if k.lower() == "x-other"]

    # Denied: 401 (with its challenge) and 403 are relayed; the backend never sees them.
    for path, status in (("/deny401", 401), ("/deny403", 403), ("/slow", 503), ("/other", 503)):
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path=path))
        response = await assert_rejected(client, status)
        if status == 401:
            assert response.get("WWW-Authenticate") == 'Bearer realm="chat"'
    assert not [r for r in backend.records if not r["path"].startswith("/allow")]
    assert await metric(gate, "wsgate_auth_allowed_total") == 1
    assert await metric(gate, "wsgate_auth_denied_total") == 2
    assert await metric(gate, "wsgate_auth_failed_total") == 2
    ws2 = await ws_connect(gate.url("/allow/8"))
    await ws2.send("still")
    assert await recv(ws2) == "still"


@async_test(timeout=60)
async def test_auth_service_down_is_503_and_auth_false_routes_skip_it(gates):
    backend = await EchoBackend().start()
    config = gate_config(backend)
    config["auth"] = {"url": f"http://127.0.0.1:{closed_port()}/check"}
    config["routes"] = [{"match": {"path_prefix": "/public"}, "pool": "p", "auth": False},
                        {"pool": "p"}]
    gate = await gates.launch(config)
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/private"))
    response = await assert_rejected(client, 503)
    assert response.get("Retry-After") == "1"
    assert backend.connections == []
    ws = await ws_connect(gate.url("/public/feed"))
    await ws.send("open")
    assert await recv(ws) == "open"


@async_test(timeout=60)
async def test_auth_cache_answers_identical_requests(gates):
    auth = HttpService(auth_answer).start()
    backend = await EchoBackend().start()
    config = gate_config(backend)
    config["auth"] = {"url": auth.url, "copy_headers": ["X-User-Id"], "cache_ttl": "30s"}
    gate = await gates.launch(config)
    for _ in range(3):
        ws = await ws_connect(gate.url("/allow/1"), extra_headers=[("Cookie", "a=1")])
        await ws.close()
    ws = await ws_connect(gate.url("/allow/1"), extra_headers=[("Cookie", "a=2")])
    await ws.close()
    assert len(auth.requests) == 2  # one per distinct header set
    assert await metric(gate, "wsgate_auth_cache_hits_total") == 2
    assert [c.headers.get("X-User-Id") for c in backend.connections] == ["user-1"] * 4


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=60)
async def test_disconnect_webhook_for_every_connection_with_retries(gates, workers):
    attempts = {}

    def receive(_handler, body):
        event = json.loads(body)
        attempts[event["id"]] = attempts.get(event["id"], 0) + 1
        return (500 if attempts[event["id"]] == 1 else 204), []  # every first try fails
    hook = HttpService(receive).start()
    backend = await BackendProcess().start()
    config = gate_config(backend, workers=workers)
    config["on_disconnect"] = {"url": hook.url + "/gone", "retries": 3, "timeout": "5s"}
    gate = await gates.launch(config)

    clients = [await ws_connect(gate.url(f"/d/{i}")) for i in range(20)]
    await backend.wait_records(20)
    ids = {backend.record_for(f"/d/{i}")["id"]: i for i in range(20)}
    for i, ws in enumerate(clients):
        await ws.send("x" * (i + 1))
        assert await recv(ws) == "x" * (i + 1)
    for i, ws in enumerate(clients[:10]):
        await ws.close(1000 + (i % 2) * 3000, "bye")  # 1000 or 4000, by the client
    for cid, i in ids.items():
        if i >= 10:
            assert (await api(gate, "DELETE", f"/connections/{cid}?code=4100&reason=api"))[0] == 200
    await wait_until(lambda: len({e for e, n in attempts.items() if n >= 2}) >= 20, 30,
                     "a delivered webhook per connection")
    events = {}
    for method, path, _, body in hook.requests:
        assert (method, path) == ("POST", "/gone")
        event = json.loads(body)
        events[event["id"]] = event
    assert set(events) == set(ids)
    for cid, event in events.items():
        i = ids[cid]
        assert event["pool"] == "p" and event["backend"] == backend.address
        assert event["messages_from_client"] == 1 and event["messages_to_client"] == 1
        assert event["bytes_from_client"] >= i + 1 and event["duration_seconds"] >= 0
        if i < 10:
            assert (event["close_code"], event["initiator"]) == (1000 + (i % 2) * 3000, "client")
        else:
            assert (event["close_code"], event["initiator"]) == (4100, "api")
    # The receiver records a request before answering it: wait for wsgate to count the answer.
    for _ in range(200):
        if await metric(gate, "wsgate_disconnect_webhook_delivered_total") == 20:
            break
        await asyncio.sleep(0.05)
    assert await metric(gate, "wsgate_disconnect_webhook_delivered_total") == 20
    assert await metric(gate, "wsgate_disconnect_webhook_retries_total") == 20


@async_test(timeout=60)
async def test_disconnect_webhook_queue_full_drops_are_counted(gates):
    release = threading.Event()

    def stall(_handler, _body):
        release.wait(20)
        return 204, []
    hook = HttpService(stall).start()
    register_cleanup(lambda: asyncio.to_thread(release.set))
    backend = await EchoBackend().start()
    config = gate_config(backend)
    config["on_disconnect"] = {"url": hook.url, "queue_size": 1, "timeout": "30s", "retries": 0}
    gate = await gates.launch(config)
    for _ in range(12):  # 8 in flight, 1 queued, the rest dropped
        ws = await ws_connect(gate.url("/q"))
        await ws.close()
    await wait_until(lambda: len(hook.requests) >= 8, 20, "8 webhooks in flight")
    assert await metric(gate, "wsgate_disconnect_webhook_dropped_total") == 3
    release.set()
    await wait_until(lambda: len(hook.requests) >= 9, 20, "the queued webhook")
    ws = await ws_connect(gate.url("/q"))
    await ws.send("alive")
    assert await recv(ws) == "alive"


@async_test(timeout=60)
async def test_access_log_and_disconnect_webhook_agree_on_counts_with_pushes(gates):
    """Pushes are messages the client was sent: the access line's msgs_out/bytes_out and the
    webhook's messages_to_client/bytes_to_client both include them, and both say how many were
    pushes (issue 17: msgs_out=1 against messages_to_client 3)."""
    received = []
    hook = HttpService(lambda _h, body: (received.append(json.loads(body)) or (204, []))).start()
    backend = await BackendProcess().start()
    config = gate_config(backend)
    config["on_disconnect"] = {"url": hook.url + "/gone"}
    gate = await gates.launch(config)

    ws = await ws_connect(gate.url("/counts"))
    await backend.wait_records(1)
    cid = backend.record_for("/counts")["id"]
    await ws.send("ping-me")
    assert await recv(ws) == "ping-me"
    for text in ("push-1", "push-2"):
        assert (await api(gate, "POST", f"/connections/{cid}", text.encode(),
                          "text/plain; charset=utf-8"))[0] == 200
        assert await recv(ws) == text
    await ws.close(1000, "done")
    await wait_until(lambda: received, 20, "the on_disconnect webhook")
    await wait_until(lambda: any(f"id={cid}" in line for line in gate.access_lines()), 20,
                     "the access line")
    event = received[0]
    line = next(line for line in gate.access_lines() if f"id={cid}" in line)
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert event["messages_to_client"] == int(fields["msgs_out"]) == 3, (event, line)
    assert event["pushed_messages"] == int(fields["pushed"]) == 2, (event, line)
    assert event["messages_from_client"] == int(fields["msgs_in"]) == 1
    assert event["bytes_to_client"] == int(fields["bytes_out"]) > len("push-1push-2ping-me")
    assert event["bytes_from_client"] == int(fields["bytes_in"])
    assert (event["initiator"], fields["closed_by"]) == ("client", "client")
