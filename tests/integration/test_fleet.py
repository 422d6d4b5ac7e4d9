"""Fleet mode (issue #20): several wsgate instances share a connection registry on a real Redis
(/usr/bin/redis-server on a free loopback port), so the admin API of any instance reaches every
connection, user and tag of the fleet.

The pieces are real processes or real servers: redis-server (stopped and started again on the
same port mid-test), three wsgate instances a, b, c with their own listener and admin port and
one admin token, an auth hook (python http.server in a thread) that gives each client the user,
tags and expiry its query string asks for (``?user=u1&tags=a,b&expires=UNIX``, which the hook
reads from X-Original-Uri), and connections_backend.py as the backend, which records the
X-Wsgate-User/Tags headers of every upgrade and echoes.

Every wait polls observable state against a deadline; a non-delivery is shown by a later marker
message that arrives while the message that must not arrive has not. Without redis-server the
cluster tests are skipped, unless WSGATE_REQUIRE_FLEET=1 (CI) turns the skip into a failure.
"""

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest
import websockets

from harness import (SOURCE_DIR, GateStartError, RawClient, assert_rejected, async_test,
                     admin_address, closed_port, register_cleanup, upgrade_request, wait_until,
                     ws_connect)
from test_connection_hooks import HttpService
from test_connections_api import TOKEN, BackendProcess, gate_config

HERE = os.path.dirname(os.path.abspath(__file__))
REDIS_SERVER = "/usr/bin/redis-server"
NODE_DIR = os.path.join(HERE, "node")
DEADLINE = 30.0  # generous: a busy 2-core machine, sanitizer builds
HEARTBEAT_INTERVAL, HEARTBEAT_TTL = "200ms", "1s"
MAX_MESSAGE = 65536


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------

class RedisServer:
    """redis-server on a fixed free loopback port, without persistence; stop() and start()
    again reuse the port, so clients see an outage and then the same server address."""

    def __init__(self, tmp_path, certs=None):
        self.port = closed_port()
        self.dir = str(tmp_path)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.certs = certs  # TLS only (rediss://), with make-certs.sh's backend certificate

    @property
    def url(self):
        return f"{'rediss' if self.certs else 'redis'}://127.0.0.1:{self.port}/0"

    def listen_args(self):
        if not self.certs:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", os.path.join(self.certs, "backend.crt"),
                "--tls-key-file", os.path.join(self.certs, "backend.key"),
                "--tls-ca-cert-file", os.path.join(self.certs, "ca.crt"),
                "--tls-auth-clients", "no"]

    def start(self, timeout=DEADLINE):
        """Start it and wait until it answers PING."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--save", "", "--appendonly", "no", *self.listen_args(),
                 "--bind", "127.0.0.1", "--dir", self.dir],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                   + self.log_text())
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING in {timeout}s")
            time.sleep(0.02)

    def stop(self):
        """Stop it (SIGTERM, SIGKILL after 5 s) and wait until the port refuses connections."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def command(self, *args, timeout=5):
        """Send one command (RESP) and return the raw reply bytes, or None if unreachable."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
                sock = raw
                if self.certs:
                    context = ssl.create_default_context(
                        cafile=os.path.join(self.certs, "ca.crt"))
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(payload)
                return sock.recv(65536)
        except OSError:
            return None

    def ping(self):
        return self.command("PING", timeout=1) == b"+PONG\r\n"

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@pytest.fixture
def redis(tmp_path):
    """A fresh redis-server for one test (skipped without the binary, failed with it missing
    when WSGATE_REQUIRE_FLEET=1)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        reason = (f"{REDIS_SERVER} is missing (apt-get install redis-server, or "
                  "scripts/install-deps.sh): the fleet-mode tests need a real Redis")
        if os.environ.get("WSGATE_REQUIRE_FLEET") == "1":
            pytest.fail(reason + " and WSGATE_REQUIRE_FLEET=1")
        pytest.skip(reason)
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------------------
# the auth hook: identity from the client's query string
# --------------------------------------------------------------------------------------------

def identity_answer(handler, _body):
    """user=, tags=, expires= in the client's query (X-Original-Uri) become X-Wsgate-User,
    X-Wsgate-Tags and X-Wsgate-Expires; deny=1 is a 403; no user is an anonymous 200."""
    uri = handler.headers.get("X-Original-Uri", "")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    if "deny" in query:
        return 403, []
    answer = []
    for key, header in (("user", "X-Wsgate-User"), ("tags", "X-Wsgate-Tags"),
                        ("expires", "X-Wsgate-Expires")):
        if key in query:
            answer.append((header, query[key][0]))
    return 200, answer


def start_auth():
    """The identity hook, with a listen backlog for hundreds of concurrent handshakes
    (socketserver's default of 5 drops SYNs, and a dropped SYN waits a second)."""
    auth = HttpService(identity_answer)
    auth.server.socket.listen(256)
    return auth.start()


def auth_config(auth):
    return {"url": auth.url + "/check", "timeout": "10s"}


def client_path(name, user=None, tags=(), expires=None):
    """A path whose query makes the auth hook give this identity; unique per ``name``."""
    query = [("n", name)]
    if user is not None:
        query.append(("user", user))
    if tags:
        query.append(("tags", ",".join(tags)))
    if expires is not None:
        query.append(("expires", str(expires)))
    return "/c/" + name + "?" + urllib.parse.urlencode(query, safe=",")


# --------------------------------------------------------------------------------------------
# admin API calls
# --------------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        retry_after = self.headers.get("retry-after")
        return f"Reply({self.status}, {self.body[:300]!r}, Retry-After={retry_after})"


def _call(address, method, path, body=None, content_type=None, token=TOKEN, timeout=20):
    host, port = address
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


async def call(gate, method, path, body=None, content_type=None):
    """One admin API call to ``gate`` from a thread (the loop keeps serving the clients)."""
    if isinstance(body, str):
        body = body.encode()
        content_type = content_type or "text/plain; charset=utf-8"
    return await asyncio.to_thread(_call, admin_address(gate), method, path, body, content_type)


async def poll(gate, method, path, accept, what, body=None, content_type=None,
               timeout=DEADLINE, interval=0.05):
    """Repeat a call until ``accept(reply)``; return that reply (AssertionError with the last
    reply after ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await call(gate, method, path, body, content_type)
            if accept(last):
                return last
        except OSError as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                 f"{method} {path} last answered {last!r}")
        await asyncio.sleep(interval)


async def metric_value(gate, name, **labels):
    """Sum of the series of ``name`` with these labels on ``gate``'s /metrics."""
    reply = await call(gate, "GET", "/metrics")
    assert reply.status == 200, reply
    total = 0.0
    for line in reply.body.decode().splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def quoted(segment):
    return urllib.parse.quote(segment, safe="")


# --------------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------------

@dataclass
class Client:
    """One websockets client with an identity; every message it receives is recorded."""

    name: str
    user: str = None
    tags: tuple = ()
    instance: str = None
    expires: int = None
    ws: object = None
    cid: str = None
    messages: list = field(default_factory=list)
    close_code: int = None
    close_reason: str = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self):
        return client_path(self.name, self.user, self.tags, self.expires)

    async def connect(self, gate, extra_headers=()):
        self.ws = await ws_connect(gate.url(self.path), extra_headers=list(extra_headers),
                                   open_timeout=DEADLINE)
        asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            async for message in self.ws:
                self.messages.append(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason
            self.closed.set()

    async def wait_message(self, message, timeout=DEADLINE):
        await wait_until(lambda: message in self.messages, timeout,
                         f"{message!r} at client {self.name} (has {self.messages[-5:]})")

    async def wait_close(self, timeout=DEADLINE):
        await wait_until(self.closed.is_set, timeout, f"client {self.name} closed")
        return self.close_code, self.close_reason

    async def echo(self, timeout=DEADLINE):
        """Send a unique token and wait for the backend's echo of it."""
        token = f"echo-{self.name}-{os.urandom(4).hex()}"
        await self.ws.send(token)
        await self.wait_message(token, timeout)


async def connect_many(clients, gates_by_name, batch=50, extra_headers=lambda c: ()):
    """Connect clients (each to gates_by_name[client.instance]) in concurrent batches."""
    for start in range(0, len(clients), batch):
        await asyncio.gather(*(c.connect(gates_by_name[c.instance], extra_headers=extra_headers(c))
                               for c in clients[start:start + batch]))


async def assign_ids(clients, backend):
    """Each client's connection id, from the backend's record of its upgrade request."""
    await backend.wait_records(len(clients), timeout=DEADLINE)
    by_path = {r["path"]: r for r in backend.records}
    for c in clients:
        c.cid = by_path[c.path]["id"]


async def wait_markers(clients, marker, timeout=DEADLINE):
    await wait_until(lambda: all(marker in c.messages for c in clients), timeout,
                     f"marker {marker!r} at every client ("
                     f"{sum(marker not in c.messages for c in clients)} still without it)")


def before_marker(client, marker):
    return client.messages[:client.messages.index(marker)]


async def still_served(gate):
    """A normal (anonymous) client connects through ``gate`` and gets its echo."""
    client = await Client(f"alive-{os.urandom(3).hex()}").connect(gate)
    await client.echo()
    await client.ws.close()


# --------------------------------------------------------------------------------------------
# the fleet
# --------------------------------------------------------------------------------------------

class Fleet:
    """Instances a, b, c in front of one backend, one auth hook and one Redis."""

    def __init__(self, launcher, redis, backend, auth, names=("a", "b", "c"), limits=None):
        self.launcher = launcher
        self.redis = redis
        self.backend = backend
        self.auth = auth
        self.names = names
        self.limits = {"max_message_bytes": MAX_MESSAGE, **(limits or {})}
        self.gates = {}

    def config(self, name):
        config = gate_config(self.backend, limits=self.limits)  # admin on 127.0.0.1:0
        config["auth"] = auth_config(self.auth)
        config["cluster"] = {
            "redis": self.redis.url, "instance": name,
            "heartbeat_interval": HEARTBEAT_INTERVAL, "heartbeat_ttl": HEARTBEAT_TTL,
            "reconnect_max": "1s"}
        if name == self.names[0]:  # the others use the default: http://<admin address>
            admin_port = closed_port()
            config["admin"]["address"] = f"127.0.0.1:{admin_port}"
            config["cluster"]["advertise"] = f"http://127.0.0.1:{admin_port}"
        if self.redis.certs:
            config["cluster"]["tls"] = {"ca": os.path.join(self.redis.certs, "ca.crt")}
        if name == self.names[-1]:
            # Worker threads: registry changes and fan-out cross threads (run under TSan in CI).
            config["workers"] = 2
        return config

    async def start(self):
        for name in self.names:
            self.gates[name] = await self.launch(name)
        await self.wait_instances(len(self.names))
        return self

    async def launch(self, name):
        """Start instance ``name``. Its admin port is chosen before it binds (the advertise URL
        names it), so another test may take it first: then try another port."""
        for attempt in range(5):
            try:
                return await self.launcher.launch(self.config(name), timeout=DEADLINE)
            except GateStartError as error:
                if "Address already in use" not in str(error) or attempt == 4:
                    raise

    def __getitem__(self, name):
        return self.gates[name]

    async def wait_instances(self, count, via=None):
        """Wait until a publication through ``via`` reaches ``count`` instances."""
        gate = self.gates[via or self.names[-1]]
        await poll(gate, "POST", "/tags/fleet-probe/messages",
                   lambda r: r.status == 202 and r.json().get("instances") == count,
                   f"a tag publication to reach {count} instances", body="probe")

    async def wait_user_count(self, user, count, via):
        reply = await poll(self.gates[via], "GET", f"/users/{quoted(user)}",
                           lambda r: r.status == 200 and r.json().get("connections") == count,
                           f"GET /users/{user} to count {count}")
        assert reply.json() == {"user": user, "connections": count}, reply

    async def wait_known(self, cid, via):
        """Wait until ``via`` finds connection ``cid`` (its owner's registry write landed)."""
        return await poll(self.gates[via], "GET", f"/connections/{cid}",
                          lambda r: r.status == 200, f"connection {cid} visible through {via}")


async def start_fleet(gates, redis, limits=None):
    auth = start_auth()
    backend = await BackendProcess().start()
    fleet = await Fleet(gates, redis, backend, auth, limits=limits).start()
    return fleet


def kill_gate(gate):
    """SIGKILL a wsgate; the gates fixture then does not count its exit as a failed SIGTERM."""
    gate.proc.kill()
    gate.proc.wait(10)
    gate.listeners = {}


def tag_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

@async_test(timeout=240)
async def test_300_clients_ids_users_tags_and_identity_headers_across_three_instances(gates,
                                                                                      redis):
    fleet = await start_fleet(gates, redis)
    clients = []
    for i in range(300):
        tags = []
        if i % 4 == 0:
            tags.append("red")
        if i % 5 == 0:
            tags.append("blue")
        # 30 users, each with 9 or 12 connections on all three instances.
        clients.append(Client(f"n{i}", user=f"u{(i // 3) % 30}", tags=tuple(tags),
                              instance="abc"[i % 3]))
    # Every tenth client tries to choose its own identity: the backend must not see it.
    spoof = lambda c: ([("X-Wsgate-User", "mallory"), ("X-Wsgate-Tags", "red,admin")]
                       if int(c.name[1:]) % 10 == 0 else [])
    await connect_many(clients, fleet.gates, extra_headers=spoof)
    await assign_ids(clients, fleet.backend)

    # The backend saw exactly the hook's identity on every upgrade.
    by_path = {r["path"]: r for r in fleet.backend.records}
    for c in clients:
        headers = by_path[c.path]["headers"]
        assert tag_values(headers, "X-Wsgate-User") == [c.user], (c.name, headers)
        tags = tag_values(headers, "X-Wsgate-Tags")
        if c.tags:
            # A set: the order is wsgate's (sorted today), not necessarily the hook's.
            assert len(tags) == 1 and sorted(t.strip() for t in tags[0].split(",")) == \
                sorted(c.tags), \
                (c.name, headers)
        else:
            assert tags in ([], [""]), (c.name, headers)

    # Inspect through another instance: the owner's record, with identity and instance name.
    first = clients[0]  # on a
    info = (await fleet.wait_known(first.cid, "c")).json()
    assert info["user"] == "u0" and sorted(info["tags"]) == ["blue", "red"], info
    assert info["instance"] == "a" and info["expires_at"] is None, info

    # A push by id through c reaches the client on a.
    reply = await call(fleet["c"], "POST", f"/connections/{first.cid}", "by-id via c")
    assert reply.status == 200, reply
    await first.wait_message("by-id via c")

    # Fleet-wide user counts, through any instance.
    await fleet.wait_user_count("u0", 12, via="b")
    await fleet.wait_user_count("u29", 9, via="a")

    # A tag push through b reaches exactly the red clients on all three instances, once each;
    # a marker pushed after it to every user shows the others got nothing.
    reply = await call(fleet["b"], "POST", "/tags/red/messages", "tag red")
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    for user in sorted({c.user for c in clients}):
        reply = await call(fleet["b"], "POST", f"/users/{user}/messages", f"marker {user}")
        assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    for c in clients:
        await c.wait_message(f"marker {c.user}")
        before = before_marker(c, f"marker {c.user}")
        expected = 1 if "red" in c.tags else 0
        assert before.count("tag red") == expected, (c.name, c.tags, c.instance, before)
    assert sum(c.messages.count("tag red") for c in clients) == 75
    # The spec's metrics count what happened: c forwarded to a, b published, a received.
    assert await metric_value(fleet["c"], "wsgate_cluster_forwards_total", result="ok") >= 1
    assert await metric_value(fleet["b"], "wsgate_cluster_publishes_total") >= 31
    assert await metric_value(fleet["a"], "wsgate_cluster_fanout_received_total") >= 31
    assert await metric_value(fleet["a"], "wsgate_cluster_redis_up") == 1
    assert await metric_value(fleet["a"], "wsgate_cluster_registry_writes_total", op="add") >= 100

    # Binary push to a tag (application/octet-stream), then a user push as the marker.
    reply = await call(fleet["a"], "POST", "/tags/blue/messages", b"\x00blue\xff",
                       "application/octet-stream")
    assert reply.status == 202, reply
    reply = await call(fleet["a"], "POST", "/tags/red/messages", "marker 2")
    assert reply.status == 202, reply
    blue = [c for c in clients if "blue" in c.tags]
    for c in blue:
        await c.wait_message(b"\x00blue\xff")
    for c in clients:
        if "red" in c.tags:
            await c.wait_message("marker 2")
            if "blue" not in c.tags:
                assert b"\x00blue\xff" not in c.messages, (c.name, c.messages)
    assert all(c.messages.count(b"\x00blue\xff") == 1 for c in blue)

    # DELETE /users/u1 through c closes its 12 connections on every instance with the code.
    doomed = [c for c in clients if c.user == "u1"]
    reply = await call(fleet["c"], "DELETE", "/users/u1?code=4003&reason=" + quoted("go away"))
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    for c in doomed:
        assert await c.wait_close() == (4003, "go away"), c.name
    assert {c.instance for c in doomed} == {"a", "b", "c"}
    await fleet.wait_user_count("u1", 0, via="a")
    # Nobody else was closed: a user push reaches all of u2's connections, every client of
    # some other users still echoes.
    others = [c for c in clients if c.user != "u1"]
    assert not any(c.closed.is_set() for c in others)
    for c in [c for c in others if c.user in ("u0", "u2")]:
        await c.echo()
    await still_served(fleet["a"])


@async_test(timeout=120)
async def test_tag_put_and_delete_through_another_instance_change_who_a_tag_push_reaches(
        gates, redis):
    fleet = await start_fleet(gates, redis)
    x = Client("x", user="ux", tags=("all",), instance="a")
    y = Client("y", user="uy", tags=("all", "news"), instance="b")
    z = Client("z", user="uz", tags=("all",), instance="c")
    clients = [x, y, z]
    await connect_many(clients, fleet.gates)
    await assign_ids(clients, fleet.backend)
    await fleet.wait_known(x.cid, "c")
    await fleet.wait_known(y.cid, "a")

    reply = await call(fleet["c"], "PUT", f"/connections/{x.cid}/tags/news")
    assert reply.status == 200 and sorted(reply.json()["tags"]) == ["all", "news"], reply
    reply = await call(fleet["a"], "DELETE", f"/connections/{y.cid}/tags/news")
    assert reply.status == 200 and reply.json()["tags"] == ["all"], reply
    # PUT of a tag it has and DELETE of one it lacks leave the set as it is.
    reply = await call(fleet["b"], "PUT", f"/connections/{x.cid}/tags/news")
    assert reply.status == 200 and sorted(reply.json()["tags"]) == ["all", "news"], reply
    reply = await call(fleet["c"], "DELETE", f"/connections/{z.cid}/tags/news")
    assert reply.status == 200 and reply.json()["tags"] == ["all"], reply

    reply = await call(fleet["b"], "POST", "/tags/news/messages", "news 1")
    assert reply.status == 202, reply
    reply = await call(fleet["b"], "POST", "/tags/all/messages", "marker")
    assert reply.status == 202, reply
    await wait_markers(clients, "marker")
    assert before_marker(x, "marker") == ["news 1"]
    assert before_marker(y, "marker") == [] and before_marker(z, "marker") == []

    # The registry follows: inspecting through a third instance shows the new tag sets.
    await poll(fleet["b"], "GET", f"/connections/{x.cid}",
               lambda r: r.status == 200 and sorted(r.json()["tags"]) == ["all", "news"],
               "x's new tags through b")
    await poll(fleet["c"], "GET", f"/connections/{y.cid}",
               lambda r: r.status == 200 and r.json()["tags"] == ["all"],
               "y's new tags through c")

    # DELETE /tags/news closes x only.
    reply = await call(fleet["c"], "DELETE", "/tags/news?code=4010&reason=tagged")
    assert reply.status == 202, reply
    assert await x.wait_close() == (4010, "tagged")
    reply = await call(fleet["a"], "POST", "/tags/all/messages", "marker 2")
    assert reply.status == 202, reply
    await wait_markers([y, z], "marker 2")
    assert not y.closed.is_set() and not z.closed.is_set()


@async_test(timeout=120)
async def test_a_user_over_max_connections_per_user_gets_429_on_the_third_instance(gates, redis):
    fleet = await start_fleet(gates, redis, limits={"max_connections_per_user": 2})
    first = await Client("cap1", user="capped").connect(fleet["a"])
    second = await Client("cap2", user="capped").connect(fleet["b"])
    await fleet.wait_user_count("capped", 2, via="c")

    raw = await RawClient.connect(fleet["c"].port)
    await raw.write(upgrade_request(path=client_path("cap3", "capped")))
    response = await assert_rejected(raw, 429)
    assert b"too many connections for this user" in response.body, response.body
    assert await metric_value(fleet["c"], "wsgate_handshakes_total", result="user_limit") == 1
    # Other users and anonymous clients are still served there.
    await (await Client("other", user="someone-else").connect(fleet["c"])).echo()
    await still_served(fleet["c"])
    await first.echo()
    await second.echo()

    # Once one connection ends, the fleet-wide count drops and c admits the user again.
    await first.ws.close()
    await fleet.wait_user_count("capped", 1, via="c")
    third = Client("cap3", user="capped")
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await third.connect(fleet["c"])
            break
        except websockets.InvalidStatusCode as error:
            assert error.status_code == 429, error
            assert time.monotonic() < deadline, "c kept refusing the user after a close"
            await asyncio.sleep(0.1)
    await third.echo()


@async_test(timeout=120)
async def test_kill_9_of_an_instance_its_connections_are_gone_within_the_heartbeat_ttl(
        gates, redis):
    fleet = await start_fleet(gates, redis)
    on_a = [Client(f"ka{i}", user="uk", tags=("k",), instance="a") for i in range(2)]
    on_b = Client("kb", user="uk", tags=("k",), instance="b")
    clients = [*on_a, on_b]
    await connect_many(clients, fleet.gates)
    await assign_ids(clients, fleet.backend)
    for c in on_a:
        await fleet.wait_known(c.cid, "b")
    await fleet.wait_user_count("uk", 3, via="c")

    kill_gate(fleet["a"])
    killed_at = time.monotonic()
    for c in on_a:
        reply = await poll(fleet["b"], "GET", f"/connections/{c.cid}",
                           lambda r: r.status in (404, 410),
                           f"410 (or 404) for {c.name} whose instance was killed")
        print(f"{c.name} on the killed instance: {reply.status}")
    elapsed = time.monotonic() - killed_at
    print(f"the killed instance's connections answered 410 after {elapsed:.2f}s")
    assert elapsed < 5.0, f"410 only after {elapsed:.1f}s with heartbeat_ttl {HEARTBEAT_TTL}"
    reply = await call(fleet["c"], "POST", f"/connections/{on_a[0].cid}", "to the dead")
    assert reply.status in (404, 410), reply
    await fleet.wait_user_count("uk", 1, via="c")
    await fleet.wait_user_count("uk", 1, via="b")
    # The survivors go on: the fleet is two instances, b's client gets pushes from c.
    await fleet.wait_instances(2, via="c")
    reply = await call(fleet["c"], "POST", "/tags/k/messages", "after the kill")
    assert reply.status == 202 and reply.json() == {"instances": 2}, reply
    await on_b.wait_message("after the kill")
    await on_b.echo()
    await still_served(fleet["c"])


@async_test(timeout=180)
async def test_redis_restart_local_traffic_untouched_remote_calls_503_then_recover(gates, redis):
    fleet = await start_fleet(gates, redis)
    ca = Client("ra", user="ur", tags=("r",), instance="a")
    cb = Client("rb", user="ur", tags=("r",), instance="b")
    await connect_many([ca, cb], fleet.gates)
    await assign_ids([ca, cb], fleet.backend)
    await fleet.wait_known(ca.cid, "b")

    # Echo on both clients all along, each round with its own deadline.
    rounds, errors, stop = [0], [], asyncio.Event()

    async def echo_forever():
        while not stop.is_set():
            try:
                await ca.echo(timeout=10)
                await cb.echo(timeout=10)
                rounds[0] += 1
            except Exception as error:  # recorded, the test fails below
                errors.append(error)
                return
            await asyncio.sleep(0.02)  # pacing, not waiting for anything
    echoes = asyncio.ensure_future(echo_forever())

    async def more_rounds(count, what):
        target = rounds[0] + count
        await wait_until(lambda: rounds[0] >= target or errors or echoes.done(), DEADLINE, what)
        assert not errors, f"echo failed {what}: {errors[0]!r}"

    await more_rounds(5, "before the outage")
    await asyncio.to_thread(redis.stop)

    # Remote calls: 503 with Retry-After: 1 once b noticed the outage.
    reply = await poll(fleet["b"], "GET", f"/connections/{ca.cid}", lambda r: r.status == 503,
                       "503 for a remote connection while Redis is down")
    assert reply.headers.get("retry-after") == "1", reply
    reply = await call(fleet["b"], "POST", f"/connections/{ca.cid}", "lost")
    assert reply.status == 503 and reply.headers.get("retry-after") == "1", reply
    await poll(fleet["b"], "GET", "/metrics",
               lambda r: "wsgate_cluster_redis_up 0" in r.body.decode(),
               "wsgate_cluster_redis_up 0 on b")
    # Fleet-wide calls need Redis too: 503 with Retry-After, not a partial answer.
    for method, path, body in (("POST", "/tags/r/messages", "lost tag"),
                               ("POST", "/users/ur/messages", "lost user"),
                               ("GET", "/users/ur", None)):
        reply = await call(fleet["b"], method, path, body)
        assert reply.status == 503 and reply.headers.get("retry-after") == "1", (path, reply)
    # Local calls and traffic are untouched.
    reply = await call(fleet["b"], "GET", f"/connections/{cb.cid}")
    assert reply.status == 200 and reply.json()["user"] == "ur", reply
    reply = await call(fleet["b"], "POST", f"/connections/{cb.cid}", "local during outage")
    assert reply.status == 200, reply
    await cb.wait_message("local during outage")
    reply = await call(fleet["a"], "POST", f"/connections/{ca.cid}", "local on a")
    assert reply.status == 200, reply
    await ca.wait_message("local on a")
    late = await Client("late", user="ul", instance="c").connect(fleet["c"])
    await late.echo()
    await more_rounds(5, "during the outage")

    await asyncio.to_thread(redis.start)
    # After it: remote calls work again (each instance re-registers its connections).
    await poll(fleet["b"], "GET", f"/connections/{ca.cid}",
               lambda r: r.status == 200 and r.json()["instance"] == "a",
               "a's connection visible through b again after the restart")
    await poll(fleet["b"], "GET", "/metrics",
               lambda r: "wsgate_cluster_redis_up 1" in r.body.decode(),
               "wsgate_cluster_redis_up 1 on b")
    reply = await call(fleet["b"], "POST", f"/connections/{ca.cid}", "remote after restart")
    assert reply.status == 200, reply
    await ca.wait_message("remote after restart")
    assert not {"lost", "lost tag", "lost user"} & set(ca.messages + cb.messages)
    await fleet.wait_instances(3, via="a")
    await fleet.wait_user_count("ur", 2, via="c")
    await fleet.wait_user_count("ul", 1, via="a")  # connected during the outage
    reply = await call(fleet["c"], "POST", "/tags/r/messages", "tag after restart")
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    await ca.wait_message("tag after restart")
    await cb.wait_message("tag after restart")
    assert await metric_value(fleet["a"], "wsgate_cluster_registry_writes_total",
                              op="resync") >= 1
    await more_rounds(5, "after the restart")
    stop.set()
    await asyncio.wait_for(echoes, DEADLINE)
    assert not errors, errors


@async_test(timeout=120)
async def test_bad_input_is_refused_and_unknown_users_and_tags_are_empty(gates, redis):
    fleet = await start_fleet(gates, redis)
    tagged = await Client("bt", user="ub", tags=("t",), instance="a").connect(fleet["a"])
    await assign_ids([tagged], fleet.backend)
    await fleet.wait_known(tagged.cid, "b")
    marker_count = [0]

    async def still_fine():
        """A tag push through b still reaches the client on a, and a new client is served."""
        marker_count[0] += 1
        text = f"fine {marker_count[0]}"
        reply = await call(fleet["b"], "POST", "/tags/t/messages", text)
        assert reply.status == 202, reply
        await tagged.wait_message(text)
        await still_served(fleet["b"])

    # Unknown user or tag: nothing matches, which is not an error.
    reply = await call(fleet["b"], "POST", "/users/nobody/messages", "x")
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    reply = await call(fleet["b"], "POST", "/tags/no-such-tag/messages", "x")
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    reply = await call(fleet["c"], "DELETE", "/users/nobody")
    assert reply.status == 202, reply
    reply = await call(fleet["c"], "DELETE", "/tags/no-such-tag")
    assert reply.status == 202, reply
    reply = await call(fleet["a"], "GET", "/users/nobody")
    assert reply.status == 200 and reply.json() == {"user": "nobody", "connections": 0}, reply
    await still_fine()
    assert "x" not in tagged.messages

    # Oversized push (> limits.max_message_bytes): 413, local, remote, user and tag.
    big = b"x" * (MAX_MESSAGE + 1)
    for gate, path in ((fleet["b"], "/tags/t/messages"), (fleet["b"], "/users/ub/messages"),
                       (fleet["b"], f"/connections/{tagged.cid}"),
                       (fleet["a"], f"/connections/{tagged.cid}")):
        reply = await call(gate, "POST", path, big, "application/octet-stream")
        assert reply.status == 413, (path, reply)
        await still_fine()

    # Control bytes, empty and over-long names: 400.
    bad = [("POST", "/tags/a%01b/messages"), ("POST", "/users/a%01b/messages"),
           ("DELETE", "/tags/a%7fb"), ("GET", "/users/%00"), ("DELETE", "/users/a%0Ab"),
           ("PUT", f"/connections/{tagged.cid}/tags/a%01b"),
           ("PUT", f"/connections/{tagged.cid}/tags/" + "t" * 129),
           ("POST", "/tags/" + "t" * 129 + "/messages"), ("GET", "/users/" + "u" * 129)]
    for method, path in bad:
        reply = await call(fleet["c"], method, path, "x" if method == "POST" else None)
        assert reply.status == 400, (method, path, reply)
        await still_fine()
    # The client's tags did not change; 128 bytes is still a valid name.
    info = (await call(fleet["c"], "GET", f"/connections/{tagged.cid}")).json()
    assert info["tags"] == ["t"], info
    reply = await call(fleet["c"], "PUT", f"/connections/{tagged.cid}/tags/" + "t" * 128)
    assert reply.status == 200 and sorted(reply.json()["tags"]) == sorted(["t", "t" * 128]), reply
    # Percent-decoding: a user with a space and a slash is found by its encoded name.
    odd = await Client("odd", user="a b/c", instance="b").connect(fleet["b"])
    await fleet.wait_user_count("a b/c", 1, via="c")
    reply = await call(fleet["c"], "POST", "/users/" + quoted("a b/c") + "/messages", "odd")
    assert reply.status == 202, reply
    await odd.wait_message("odd")
    # Without the token: 401, through every kind of call.
    for method, path in (("POST", "/tags/t/messages"), ("GET", "/users/ub"),
                         ("PUT", f"/connections/{tagged.cid}/tags/x")):
        reply = await asyncio.to_thread(_call, admin_address(fleet["a"]), method, path, b"x",
                                        "text/plain", "wrong-token")
        assert reply.status == 401, (method, path, reply)
    await still_fine()

    # Empty names are 400 too. An empty segment must not be skipped over: read that way,
    # DELETE /tags//messages is a DELETE of the tag "messages" and closes its connections.
    victim = await Client("victim", user="uv", tags=("messages",), instance="c").connect(
        fleet["c"])
    await fleet.wait_user_count("uv", 1, via="a")
    for method, path in (("POST", "/tags//messages"), ("DELETE", "/tags//messages"),
                         ("POST", "/users//messages"), ("DELETE", "/users//messages")):
        reply = await call(fleet["c"], method, path, "x" if method == "POST" else None)
        assert reply.status == 400, (method, path, reply)
        await still_fine()
    for method, path in (("GET", "/users/"), ("DELETE", "/users/"), ("DELETE", "/tags/")):
        reply = await call(fleet["c"], method, path)
        assert reply.status in (400, 404), (method, path, reply)
    reply = await call(fleet["b"], "POST", "/users/uv/messages", "victim marker")
    assert reply.status == 202, reply
    await victim.wait_message("victim marker")
    assert not victim.closed.is_set()
    await still_fine()


@async_test(timeout=60)
async def test_expired_credentials_close_with_1008_and_a_past_expiry_is_401(gates):
    auth = start_auth()
    backend = await BackendProcess().start()
    config = gate_config(backend)
    config["auth"] = auth_config(auth)
    gate = await gates.launch(config)

    expires = int(time.time()) + 2
    client = await Client("exp", user="ue", expires=expires).connect(gate)
    await assign_ids([client], backend)
    info = (await call(gate, "GET", f"/connections/{client.cid}")).json()
    assert info["expires_at"] == expires and info["user"] == "ue", info
    assert info["instance"] is None, info
    await client.echo()
    assert await client.wait_close() == (1008, "credentials expired")
    assert time.time() >= expires
    # The backend's side was closed too.
    await poll(gate, "GET", f"/connections/{client.cid}", lambda r: r.status in (404, 410),
               "the expired connection gone")

    raw = await RawClient.connect(gate.port)
    await raw.write(upgrade_request(path=client_path("past", "ue",
                                                     expires=int(time.time()) - 10)))
    await assert_rejected(raw, 401)
    assert not [r for r in backend.records if "n=past" in r["path"]]
    # A far expiry is not a problem; neither is an anonymous client.
    later = await Client("later", user="ue", expires=int(time.time()) + 3600).connect(gate)
    await later.echo()
    await still_served(gate)


@async_test(timeout=60)
async def test_without_a_cluster_user_and_tag_calls_work_locally(gates):
    auth = start_auth()
    backend = await BackendProcess().start()
    config = gate_config(backend, limits={"max_connections_per_user": 2,
                                          "max_message_bytes": MAX_MESSAGE})
    config["auth"] = auth_config(auth)
    gate = await gates.launch(config)
    gates_by_name = {"solo": gate}
    clients = [Client("s1", user="alice", tags=("red",), instance="solo"),
               Client("s2", user="alice", tags=("blue",), instance="solo"),
               Client("s3", user="bob", tags=("red", "blue"), instance="solo"),
               Client("s4", user="carol", instance="solo")]
    s1, s2, s3, s4 = clients
    await connect_many(clients, gates_by_name)
    await assign_ids(clients, backend)
    info = (await call(gate, "GET", f"/connections/{s3.cid}")).json()
    assert (info["user"], sorted(info["tags"]), info["instance"], info["expires_at"]) == \
        ("bob", ["blue", "red"], None, None), info

    reply = await call(gate, "GET", "/users/alice")
    assert reply.status == 200 and reply.json() == {"user": "alice", "connections": 2}, reply
    reply = await call(gate, "POST", "/users/alice/messages", "to alice")
    assert reply.status == 200 and reply.json() == {"connections": 2}, reply
    reply = await call(gate, "POST", "/tags/red/messages", "to red")
    assert reply.status == 200 and reply.json() == {"connections": 2}, reply
    reply = await call(gate, "POST", "/tags/nothing/messages", "to nobody")
    assert reply.status == 200 and reply.json() == {"connections": 0}, reply
    reply = await call(gate, "POST", "/users/nobody/messages", "to nobody")
    assert reply.status == 200 and reply.json() == {"connections": 0}, reply
    reply = await call(gate, "PUT", f"/connections/{s4.cid}/tags/red")
    assert reply.status == 200 and reply.json() == {"tags": ["red"]}, reply
    reply = await call(gate, "POST", "/tags/red/messages", "to red again")
    assert reply.status == 200 and reply.json() == {"connections": 3}, reply
    for c in clients:
        reply = await call(gate, "POST", f"/connections/{c.cid}", "marker")
        assert reply.status == 200, reply
    await wait_markers(clients, "marker")
    assert before_marker(s1, "marker") == ["to alice", "to red", "to red again"]
    assert before_marker(s2, "marker") == ["to alice"]
    assert before_marker(s3, "marker") == ["to red", "to red again"]
    assert before_marker(s4, "marker") == ["to red again"]

    # Per-process user cap: alice has two.
    raw = await RawClient.connect(gate.port)
    await raw.write(upgrade_request(path=client_path("s5", "alice")))
    response = await assert_rejected(raw, 429)
    assert b"too many connections for this user" in response.body, response.body

    reply = await call(gate, "DELETE", "/tags/blue?code=4001&reason=blue")
    assert reply.status == 200 and reply.json() == {"connections": 2}, reply
    assert await s2.wait_close() == (4001, "blue")
    assert await s3.wait_close() == (4001, "blue")
    reply = await call(gate, "DELETE", "/users/alice")
    assert reply.status == 200 and reply.json() == {"connections": 1}, reply
    assert await s1.wait_close() == (1000, "")
    await poll(gate, "GET", "/users/alice", lambda r: r.status == 200
               and r.json()["connections"] == 0, "alice's count 0")
    reply = await call(gate, "DELETE", "/users/alice")
    assert reply.status == 200 and reply.json() == {"connections": 0}, reply
    await s4.echo()
    await still_served(gate)


@async_test(timeout=120)
async def test_npm_ws_client_receives_a_tag_push_through_another_instance(gates, redis):
    node = shutil.which("node")
    assert node, "node is missing: run scripts/install-deps.sh"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")), \
        "the npm ws package is missing: run scripts/install-deps.sh"
    fleet = await start_fleet(gates, redis)
    other = await Client("py", user="up", tags=("interop",), instance="b").connect(fleet["b"])
    proc = await asyncio.create_subprocess_exec(
        node, os.path.join(NODE_DIR, "tag_push_client.mjs"),
        fleet["a"].url(client_path("node", "un", ("interop", "all"))), "3",
        cwd=NODE_DIR, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)

    async def reap():
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    register_cleanup(reap)
    events = []

    async def next_event():
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
        assert line, f"the node client exited early: {events}"
        events.append(json.loads(line))
        return events[-1]

    assert await next_event() == {"event": "open"}, events
    await assign_ids([other], fleet.backend)
    await fleet.backend.wait_records(2, timeout=DEADLINE)
    node_record = next(r for r in fleet.backend.records if "n=node" in r["path"])
    await fleet.wait_known(node_record["id"], "c")
    reply = await call(fleet["c"], "POST", "/tags/interop/messages", "interop text")
    assert reply.status == 202 and reply.json() == {"instances": 3}, reply
    reply = await call(fleet["c"], "POST", "/tags/interop/messages", b"\x01\x02interop",
                       "application/octet-stream")
    assert reply.status == 202, reply
    reply = await call(fleet["b"], "POST", "/tags/all/messages", "done")
    assert reply.status == 202, reply
    got = [await next_event() for _ in range(3)]
    assert got == [{"event": "message", "binary": False, "data": "interop text"},
                   {"event": "message", "binary": True, "data": "AQJpbnRlcm9w"},
                   {"event": "message", "binary": False, "data": "done"}], got
    closing = await next_event()
    assert (closing["event"], closing["code"]) == ("close", 1000), events
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
    reply = await call(fleet["a"], "POST", "/users/up/messages", "marker")
    assert reply.status == 202, reply
    await other.wait_message("marker")
    assert before_marker(other, "marker") == ["interop text", b"\x01\x02interop"], other.messages
    tags = [tag_values(r["headers"], "X-Wsgate-Tags") for r in fleet.backend.records
            if "n=node" in r["path"]]
    assert len(tags) == 1 and len(tags[0]) == 1, tags
    assert sorted(tags[0][0].split(",")) == ["all", "interop"], tags


@async_test(timeout=120)
async def test_revalidation_closes_revoked_connections_and_keeps_the_others(gates):
    """auth.revalidate_interval asks the hook again for live connections: a 401 closes that
    connection with 1008 on both sides, a 2xx keeps it, and a renewed X-Wsgate-Expires
    replaces the old expiry."""
    revoked = set()
    renewals = {}

    def answer(handler, body):
        uri = handler.headers.get("X-Original-Uri", "")
        user = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get("user", [None])[0]
        if user in revoked:
            return 401, []
        status, fields = identity_answer(handler, body)
        if user in renewals:
            fields = [f for f in fields if f[0] != "X-Wsgate-Expires"]
            fields.append(("X-Wsgate-Expires", str(renewals[user])))
        return status, fields

    auth = HttpService(answer)
    auth.server.socket.listen(256)
    auth.start()
    backend = await BackendProcess().start()
    config = gate_config(backend)
    config["auth"] = {**auth_config(auth), "revalidate_interval": "1s"}
    gate = await gates.launch(config)
    keep = await Client("keep", user="stays").connect(gate)
    renewed = await Client("renewed", user="renews", expires=int(time.time()) + 3).connect(gate)
    gone = await Client("gone", user="leaves").connect(gate)
    renewals["renews"] = int(time.time()) + 3600
    revoked.add("leaves")
    assert await gone.wait_close() == (1008, "credentials revoked")
    deadline = time.monotonic() + DEADLINE
    while await metric_value(gate, "wsgate_auth_revalidations_total", result="allowed") < 4:
        assert time.monotonic() < deadline, "no revalidation allowed the other connections"
        await asyncio.sleep(0.2)
    assert await metric_value(gate, "wsgate_auth_revalidations_total", result="revoked") == 1
    # Past the first expiry: the renewed one is still open.
    while time.time() < renewals["renews"] - 3600 + 1:
        await asyncio.sleep(0.2)
    await renewed.echo()
    await keep.echo()
    assert not keep.closed.is_set() and not renewed.closed.is_set()
    await still_served(gate)


@async_test(timeout=120)
async def test_expiry_without_an_admin_listener(gates):
    """Credentials end even where no connections API (admin section) is configured."""
    auth = start_auth()
    backend = await BackendProcess().start()
    config = gate_config(backend)
    del config["admin"]
    config["auth"] = auth_config(auth)
    gate = await gates.launch(config)
    client = await Client("short", user="brief", expires=int(time.time()) + 2).connect(gate)
    await client.echo()
    assert await client.wait_close() == (1008, "credentials expired")
    other = await Client("other", user="plain").connect(gate)
    await other.echo()


@async_test(timeout=180)
async def test_a_fleet_over_rediss(gates, tmp_path):
    """rediss://: the registry, forwarding and fan-out over TLS to Redis, the certificate
    verified against cluster.tls.ca; an instance that does not trust Redis's certificate stays
    out of the fleet (and says why) while its own clients are served."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is missing")
    certs = str(tmp_path / "certs")
    subprocess.run(["bash", os.path.join(SOURCE_DIR, "examples", "tls", "make-certs.sh"), certs],
                   check=True, capture_output=True, timeout=60)
    redis = RedisServer(tmp_path, certs=certs)
    redis.start()
    register_cleanup(redis.stop)
    auth = start_auth()
    backend = await BackendProcess().start()
    fleet = await Fleet(gates, redis, backend, auth, names=("a", "b")).start()
    client = await Client("tls-a", user="t1", tags=("secure",), instance="a").connect(fleet["a"])
    await assign_ids([client], backend)
    await fleet.wait_known(client.cid, via="b")
    reply = await call(fleet["b"], "POST", f"/connections/{client.cid}", "by id over rediss")
    assert reply.status == 200, reply
    reply = await call(fleet["b"], "POST", "/tags/secure/messages", "by tag over rediss")
    assert reply.status == 202 and reply.json() == {"instances": 2}, reply
    await client.wait_message("by tag over rediss")
    assert client.messages.index("by id over rediss") < client.messages.index("by tag over rediss")
    assert await metric_value(fleet["a"], "wsgate_cluster_redis_up") == 1

    untrusting = fleet.config("c")
    untrusting["cluster"]["tls"] = {"ca": os.path.join(certs, "other-ca.crt")}
    gate = await gates.launch(untrusting, timeout=DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while "certificate verify failed" not in gate.stderr_text():
        assert time.monotonic() < deadline, gate.stderr_text()[-2000:]
        await asyncio.sleep(0.1)
    assert await metric_value(gate, "wsgate_cluster_redis_up") == 0
    await still_served(gate)


@async_test(timeout=120)
async def test_readyz_ignores_redis_unless_ready_requires_redis(gates, redis):
    auth = start_auth()
    backend = await BackendProcess().start()
    fleet = Fleet(gates, redis, backend, auth, names=("plain", "strict"))
    plain = await fleet.launch("plain")
    strict_config = fleet.config("strict")
    strict_config["cluster"]["ready_requires_redis"] = True
    strict = await gates.launch(strict_config, timeout=DEADLINE)
    await poll(strict, "GET", "/readyz", lambda r: r.status == 200, "ready with Redis up")
    await asyncio.to_thread(redis.stop)
    reply = await poll(strict, "GET", "/readyz", lambda r: r.status == 503,
                       "not ready without Redis (ready_requires_redis)")
    assert b"redis" in reply.body, reply
    reply = await call(plain, "GET", "/readyz")
    assert reply.status == 200, reply  # the default: readiness never depends on Redis
    await still_served(strict)  # not ready is advice to the load balancer; it still serves
    await asyncio.to_thread(redis.start)
    await poll(strict, "GET", "/readyz", lambda r: r.status == 200, "ready again")
