"""Session migration (pools[].migrate) from the triggers test_migration.py does not drive:
removal by DNS discovery, a failing health check, an admin drain with ``workers: 2``, and
connections-API pushes while sessions move.

The peers, waits and the exactly-once check are test_migration.py's (migrate_peer.py
subprocesses, ``check_sessions`` joining each session's backend segments against what its client
recorded); the DNS server is test_discovery.py's dnsmasq. Every wait is on observable state with
a deadline.
"""

import asyncio
import collections
import json
import os
import re
import time

import pytest

from harness import WAIT, admin_address, async_test, parse_head
from test_discovery import DNSMASQ, NAME, dns, shared_port  # noqa: F401 (dns: the fixture)
from test_drain import admin, backends_state
from test_migration import (POLL, MigratePeer, active, check_resumes, check_sessions,
                            disconnected, first_backend, join_segments, migrate_config,
                            migrations, migrations_by_result, needs_migration, pause_text,
                            settle_and_stop, start_servers, wait_flowing, wait_value)
from test_workers import worker_counts

# Sessions of the discovery, health-check and push tests, and of the workers: 2 drain.
SESSIONS = 150
WORKER_SESSIONS = 300
PUSH_SESSIONS = 40
# Each push session gets a push this often (each waits for the previous one's answer).
PUSH_GAP = 0.1
# The drained backend of the push test answers the close frame this late, sending meanwhile,
# so that pushes are accepted while the session is between its two backends.
CLOSE_DELAY = 0.3
TOKEN = "migration-triggers-token"
# The push test's backends send each message as two frames this far apart (below INTERVAL), so
# a backend is inside a message most of the time and most pushes wait for its boundary.
PUSH_FRAGMENT_GAP = 0.4


def healthy_addresses(state):
    """Addresses of a GET /admin/backends answer ({address: backend}) that take connections."""
    return sorted(a for a, b in state.items() if b["state"] == "healthy")


def old_segments_closed_1001(sessions, moved):
    """The first (left) segment of every moved session got close 1001 from wsgate."""
    old = [sessions[i][0] for i in moved]
    codes = collections.Counter(tuple(s["closes"]) for s in old)
    assert codes == {(1001,): len(moved)}, f"close codes the left backend got: {codes}"


async def moves_counted(gate, reason, expected, token=None, timeout=30):
    """Wait until ``expected`` moves of ``reason`` are counted; all must be ``moved``."""
    counts = await wait_value(
        lambda: asyncio.to_thread(migrations_by_result, gate, reason, token),
        lambda c: sum(c.values()) >= expected, f"{expected} moves ({reason}) to be counted",
        timeout)
    assert counts == {"moved": expected}, f"{reason} moves by result: {counts}"


# ------------------------------------------------------------------------------------------
# The peer's additions (no wsgate)
# ------------------------------------------------------------------------------------------

@async_test(timeout=60)
async def test_peer_health_answers_and_ids(tmp_path):
    """migrate_peer.py server: a plain GET is answered 200, 503 after ``unhealthy`` and 200
    again after ``healthy``, counted and never recorded as a connection; ``ids`` lists the
    open connections' X-Wsgate-Connection-Id; ``--host`` binds that address."""
    server = await MigratePeer.server(tmp_path, "s", host="127.0.0.2")
    assert server.address == f"127.0.0.2:{server.port}"

    async def get():
        reader, writer = await asyncio.open_connection("127.0.0.2", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        return parse_head(data[:data.index(b"\r\n\r\n") + 4]).status

    assert await get() == 200
    assert (await server.stats("unhealthy"))["health"] == 1
    assert await get() == 503
    await server.ask("healthy")
    assert await get() == 200

    client = await MigratePeer.start(tmp_path, "client", host="127.0.0.2", port=server.port,
                                     count=3)
    await client.wait_line("connected 3")
    ids = await wait_value(lambda: server.ask("ids"), lambda text: len(json.loads(text)) == 3,
                           "3 open connections", WAIT)
    # Keys are JSON strings; a direct client sends no X-Wsgate-Connection-Id.
    assert json.loads(ids) == {"0": None, "1": None, "2": None}, ids
    await client.stop()
    stats = await server.stats()
    assert stats["health"] == 3 and stats["refused"] == 0, stats
    records = await server.stop()
    assert sorted(r["id"] for r in records) == [0, 1, 2], "a health check became a record"


# ------------------------------------------------------------------------------------------
# 1. Removed by DNS discovery
# ------------------------------------------------------------------------------------------

@needs_migration
@pytest.mark.skipif(not os.path.exists(DNSMASQ),
                    reason="dnsmasq not installed (scripts/install-deps.sh)")
@async_test(timeout=120)
async def test_discovery_removal_moves_sessions(gates, dns, tmp_path):  # noqa: F811
    """A migrate pool whose backend is a DNS name (dnsmasq) resolving to 127.0.0.2 and
    127.0.0.3, one backend on each, same port: sessions spread over both. The name drops
    127.0.0.3: its sessions move to 127.0.0.2 with X-Wsgate-Resume: removed, no client sees a
    close or loses TCP, every message arrives exactly once and in order both ways."""
    port = shared_port()
    a = await MigratePeer.server(tmp_path, "a", host="127.0.0.2", port=port)
    b = await MigratePeer.server(tmp_path, "b", host="127.0.0.3", port=port)
    dns.start([a.host, b.host])

    class ByName:  # migrate_config's backends are anything with an address
        address = f"{NAME}:{port}"
    config = migrate_config([ByName])
    config["pools"][0]["discovery"] = {"interval": "1s"}
    config["resolver"] = {"nameservers": [f"127.0.0.1:{dns.port}"]}
    gate = await gates.launch(config)
    await wait_value(lambda: backends_state(gate),
                     lambda s: healthy_addresses(s) == [a.address, b.address],
                     "both addresses in the pool", WAIT)
    client = await MigratePeer.client(tmp_path, gate, SESSIONS)
    await wait_flowing(client, [a, b])
    on_b = await active(gate, b)
    assert 0 < on_b < SESSIONS, await backends_state(gate)

    await dns.set([a.host])
    await moves_counted(gate, "removed", on_b)
    await wait_value(lambda: active(gate, b), lambda n: n == 0, "b to have no session", WAIT)
    await wait_flowing(client, [a, b])
    client_records, server_records = await settle_and_stop(client, [a, b])

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, name in first_backend(client_records).items() if name == "b"}
    assert len(moved) == on_b
    check_resumes(sessions, moved, "removed")
    old_segments_closed_1001(sessions, moved)
    assert all(sessions[i][1]["name"] == "a" for i in moved)
    assert f"discovery: pool p: {NAME}:{port} now resolves to {a.host} " in gate.stderr_text()
    print(f"\n[migrate-discovery] sessions={SESSIONS} moved={on_b} pause {pause_text(gate)}")


# ------------------------------------------------------------------------------------------
# 2. Unhealthy
# ------------------------------------------------------------------------------------------

@needs_migration
@async_test(timeout=120)
async def test_unhealthy_backend_moves_sessions(gates, tmp_path):
    """http health checks and close_on_unhealthy: true in a migrate pool of 3 backends. One
    starts failing its check (503): once it is unhealthy its sessions move (X-Wsgate-Resume:
    unhealthy) instead of being closed, no client disconnects, exactly once and in order; the
    other sessions stay where they are."""
    servers = await start_servers(tmp_path, ["a", "b", "c"])
    peers = list(servers.values())
    config = migrate_config(peers)
    config["pools"][0]["health_check"] = {
        "type": "http", "path": "/health", "interval": "1s", "timeout": "800ms",
        "healthy_threshold": 1, "unhealthy_threshold": 2}
    config["pools"][0]["close_on_unhealthy"] = True
    gate = await gates.launch(config)
    for server in peers:  # the checker has reached every backend
        await wait_value(server.stats, lambda s: s["health"] >= 1, f"{server.name} checked",
                         WAIT)
    client = await MigratePeer.client(tmp_path, gate, SESSIONS)
    await wait_flowing(client, peers)
    sick = servers["a"]
    on_a = await active(gate, sick)
    assert 0 < on_a < SESSIONS, await backends_state(gate)

    await sick.ask("unhealthy")
    await moves_counted(gate, "unhealthy", on_a)
    assert (await backends_state(gate))[sick.address]["state"] == "unhealthy"
    await wait_value(lambda: active(gate, sick), lambda n: n == 0, "a to have no session", WAIT)
    await wait_flowing(client, peers)
    client_records, server_records = await settle_and_stop(client, peers)

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, name in first_backend(client_records).items() if name == "a"}
    assert len(moved) == on_a
    check_resumes(sessions, moved, "unhealthy")
    old_segments_closed_1001(sessions, moved)
    assert re.search(rf"health: moving \d+ connections of p/{re.escape(sick.address)}",
                     gate.stderr_text())
    print(f"\n[migrate-unhealthy] sessions={SESSIONS} moved={on_a} pause {pause_text(gate)}")


# ------------------------------------------------------------------------------------------
# 3. workers: 2
# ------------------------------------------------------------------------------------------

@needs_migration
@async_test(timeout=120)
async def test_admin_drain_with_two_workers_moves_every_session(gates, tmp_path):
    """``workers: 2``, sessions over both worker threads and 3 backends; one backend drained
    through the admin API: every one of its sessions moves exactly once (X-Wsgate-Resume:
    drain), none disconnects, every message exactly once and in order both ways."""
    servers = await start_servers(tmp_path, ["a", "b", "c"])
    peers = list(servers.values())
    config = migrate_config(peers)
    config["workers"] = 2
    gate = await gates.launch(config, log_level="debug")
    client = await MigratePeer.client(tmp_path, gate, WORKER_SESSIONS)
    await wait_flowing(client, peers)
    per_worker = worker_counts(gate)
    assert sorted(per_worker) == [0, 1] and min(per_worker.values()) >= WORKER_SESSIONS // 4, (
        per_worker)
    drained = servers["a"]
    on_a = await active(gate, drained)
    assert 0 < on_a < WORKER_SESSIONS, await backends_state(gate)

    status, body = await admin(gate, "POST", f"/admin/backends/p/{drained.address}/drain")
    assert status == 200, (status, body)
    await moves_counted(gate, "drain", on_a)
    await wait_value(lambda: active(gate, drained), lambda n: n == 0,
                     "the drained backend to have no session", WAIT)
    await wait_flowing(client, peers)
    client_records, server_records = await settle_and_stop(client, peers)

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, name in first_backend(client_records).items() if name == "a"}
    assert len(moved) == on_a
    check_resumes(sessions, moved, "drain")
    assert migrations(gate, reason="drain") == on_a
    moved_lines = re.findall(rf" moved from {re.escape(drained.address)} to ",
                             gate.stderr_text())
    assert len(moved_lines) == on_a, len(moved_lines)
    print(f"\n[migrate-workers] sessions={WORKER_SESSIONS} per worker {dict(per_worker)} "
          f"moved={on_a} pause {pause_text(gate)}")


# ------------------------------------------------------------------------------------------
# 4. Pushes through the connections API while sessions move
# ------------------------------------------------------------------------------------------

def push_problem(answers, client, segments, t_drain):
    """What is wrong with one session's pushes (``answers``: [(K, status, answered at)],
    ``client``: its client's record), with the times that matter, relative to the drain."""
    got = client["pushes"]
    accepted = [k for k, status, _ in answers if status == 200]
    when = {k: t - t_drain for k, _, t in answers}
    missing = [k for k in accepted if k not in got]
    extra = [k for k in got if k not in accepted]
    moments = [f"{s['name']} opened {s['opened'] - t_drain:+.3f}s" + (
        f" got close {s['close_time'] - t_drain:+.3f}s" if s.get("close_time") else "") + (
        f" ended {s['eof_time'] - t_drain:+.3f}s" if s.get("eof_time") else "")
        for s in segments]
    return (f"missing {[(k, round(when[k], 3)) for k in missing][:5]} extra {extra[:5]} "
            f"order ok={[k for k in got if k in accepted] == accepted}; {'; '.join(moments)}; "
            f"client errors {client['errors']}")


async def wait_pushes(client, total, quiet=3.0, timeout=30):
    """Wait until the client has received ``total`` pushes; None then, else what it got when
    the count stopped growing for ``quiet`` seconds (a lost push stops the wait early)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        got = (await client.stats())["pushes"]
        now = time.monotonic()
        if got >= total:
            return None
        if got != last:
            last, since = got, now
        elif now - since >= quiet or now > deadline:
            return f"the client got {got} of the {total} accepted pushes"
        await asyncio.sleep(POLL)


class AdminConnection:
    """One keep-alive HTTP/1.1 connection to the admin listener, with the bearer token."""

    def __init__(self, address, token):
        self.address = address
        self.token = token
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", content_type="text/plain"):
        """(status, body bytes); reconnects when the server closed the connection."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.address)
        host, port = self.address
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = parse_head(await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT))
        length = int(head.get("Content-Length", 0))
        answer = await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        if head.has_token("Connection", "close"):
            self.close()
        return head.status, answer

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


@needs_migration
# "two": the client's messages in two frames too, so a move often starts inside one: its stop
# at the client's message boundary once flushed pushes inside a backend's fragmented message.
@pytest.mark.parametrize("client_frames", ["whole", "two"])
@async_test(timeout=120)
async def test_pushes_continue_across_a_move(gates, tmp_path, client_frames):
    """The connections API pushes ``p ID K`` to every session, K counting up, one at a time
    per session, while the sessions of a drained backend move. The backends send each message
    as two frames PUSH_FRAGMENT_GAP apart, so most pushes wait for a message boundary, and the
    drained one answers the close frame CLOSE_DELAY late, sending meanwhile, so pushes are
    accepted while a session is between backends. Every push answered 200 reaches its client
    exactly once, whole, and in the order of the answers; nothing else arrives; the backend
    streams are still exactly once and in order both ways. ``two``: the client's messages are
    two frames apart too, so a move often begins inside one."""
    a = (await start_servers(tmp_path, ["a"], fragment_gap=PUSH_FRAGMENT_GAP,
                             close_delay=CLOSE_DELAY))["a"]
    b = (await start_servers(tmp_path, ["b"], fragment_gap=PUSH_FRAGMENT_GAP))["b"]
    config = migrate_config([a, b])
    config["admin"]["token"] = TOKEN
    gate = await gates.launch(config)
    # Every session on a: b drained while they connect, then back.
    drain_b = f"/admin/backends/p/{b.address}/drain"
    assert (await admin(gate, "POST", drain_b, TOKEN))[0] == 200
    client = await MigratePeer.client(
        tmp_path, gate, PUSH_SESSIONS,
        fragment_gap=PUSH_FRAGMENT_GAP if client_frames == "two" else 0)
    assert (await admin(gate, "POST", drain_b.replace("/drain", "/undrain"), TOKEN))[0] == 200
    assert (await backends_state(gate, TOKEN))[a.address]["active"] == PUSH_SESSIONS
    await wait_flowing(client, [a, b])
    ids = {int(i): conn_id for i, conn_id in json.loads(await a.ask("ids")).items()}
    assert sorted(ids) == list(range(PUSH_SESSIONS)) and all(ids.values()), ids

    stop = asyncio.Event()
    answers = collections.defaultdict(list)  # session id -> [(K, status, answered at)]

    async def pusher(session):
        connection = AdminConnection(admin_address(gate), TOKEN)
        try:
            k = 0
            while not stop.is_set():
                status, body = await connection.request(
                    "POST", f"/connections/{ids[session]}", b"p %d %d" % (session, k))
                answers[session].append((k, status, time.monotonic()))
                assert status in (200, 429), (session, k, status, body)
                k += 1
                await asyncio.sleep(PUSH_GAP)
        finally:
            connection.close()

    async def fewest_answers(since=None):
        return min(len(answers[i]) - (since[i] if since else 0) for i in ids)

    pushers = [asyncio.ensure_future(pusher(i)) for i in range(PUSH_SESSIONS)]
    try:
        await wait_value(fewest_answers, lambda n: n >= 3, "3 pushes to every session", 30)
        t_drain = time.monotonic()
        status, body = await admin(gate, "POST", f"/admin/backends/p/{a.address}/drain", TOKEN)
        assert status == 200, (status, body)
        await moves_counted(gate, "drain", PUSH_SESSIONS, TOKEN)
        t_moved = time.monotonic()
        await wait_flowing(client, [a, b])
        # A few more pushes to every session on its new backend.
        counts = {i: len(answers[i]) for i in ids}
        await wait_value(lambda: fewest_answers(counts), lambda n: n >= 3,
                         "3 more pushes to every session", 30)
    finally:
        stop.set()
        results = await asyncio.gather(*pushers, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]

    accepted = {i: [k for k, status, _ in answers[i] if status == 200] for i in ids}
    total = sum(len(ks) for ks in accepted.values())
    late = await wait_pushes(client, total)
    client_records, server_records = await settle_and_stop(client, [a, b])

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    segments = join_segments(server_records)
    wrong = {i: push_problem(answers[i], r, segments[i], t_drain)
             for i, r in client_records.items() if r["pushes"] != accepted[i] or r["errors"]}
    assert not wrong, (f"{late or 'every push counted'}; {len(wrong)} session(s) got other "
                       f"pushes than were accepted, e.g.\n"
                       + "\n".join(f"session {i}: {text}" for i, text in list(wrong.items())[:4]))
    sessions = check_sessions(client_records, server_records)
    check_resumes(sessions, set(ids), "drain")
    old_segments_closed_1001(sessions, set(ids))
    # Pushes accepted while the session was between backends: after the new backend took the
    # resumed upgrade, before the old one's connection ended.
    between = sum(1 for i in ids for k, status, t in answers[i]
                  if status == 200 and sessions[i][1]["opened"] <= t <= sessions[i][0]["eof_time"])
    refused = sum(1 for i in ids for _, status, _ in answers[i] if status != 200)
    assert between > 0, "no push was accepted while a session was between its backends"
    during = sum(1 for i in ids for k, status, t in answers[i]
                 if status == 200 and t_drain <= t <= t_moved)
    print(f"\n[migrate-pushes {client_frames}] sessions={PUSH_SESSIONS} pushes accepted={total} "
          f"(between backends {between}, from the drain until every move was counted {during}) "
          f"429={refused}")
