"""Session migration (pools[].migrate): when a backend leaves, each of its sessions moves to
another backend while the client stays connected.

Clients and backends are migrate_peer.py subprocesses (one client process, one process per
backend), the lean asyncio.Protocol peers of the drain tests. Every message names its session,
its sender and its sequence number, and each side records everything it received, so the test
joins, per session, the segments the backends recorded (in the order they were opened) against
what the client recorded: client messages 0..M-1 exactly once and in order across the backends,
and per backend segment its messages 0..K-1 exactly once and in order, never interleaved with
the next segment's (``check_sessions``).

Waits are on observable state with deadlines (the peers' per-session ``detail``, the admin API,
metrics), sized for a 2-core machine shared with builds.

The tests marked ``needs_migration`` skip while the binary's config loader refuses
``pools[].migrate`` (set WSGATE_REQUIRE_MIGRATION=1 to run them anyway, e.g. in CI once the
feature has landed); the rest run on any binary.
"""

import asyncio
import collections
import functools
import json
import os
import re
import tempfile
import time

import pytest

from harness import (OP_CLOSE, WAIT, RawClient, async_test, close_payload, metric,
                     metrics_text, read_http_response, read_until_close, recv, run_wsgate,
                     to_yaml, upgrade_request, ws_connect)
from test_drain import StreamPeer, admin, backends_state, drain_config, reload

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATE_PEER = os.path.join(HERE, "migrate_peer.py")

# The admin-drain test's sessions (over 3 backends). A module constant so that a slower machine
# can lower it; 1,000 took 4-6 s on a loaded 2-core machine, 8 s with a sixth of it.
SESSIONS = 1000
# Sessions of the reload-removal, rebalance and kill -9 tests.
SOME_SESSIONS = 300
# Sessions of the refusal and no-migrate tests.
FEW_SESSIONS = 40
# Each side of each session sends one message this often.
INTERVAL = 0.5
# Messages each session must have exchanged with its current backend, both ways, before a step.
FLOWING = 2
# kill -9: client messages sent up to this long after the kill may be lost (those wsgate had
# already written to the dead backend before it saw the connection end).
KILL_SLACK = 2.0
# Where a test sends each message as two frames, the second this long after the first.
FRAGMENT_GAP = 0.15
POLL = 0.25


def migration_supported():
    """True if this binary's config loader accepts ``pools[].migrate``."""
    if os.environ.get("WSGATE_REQUIRE_MIGRATION") == "1":
        return True
    return _loader_accepts_migrate()


@functools.lru_cache(maxsize=None)
def _loader_accepts_migrate():
    config = drain_config(pools={"p": ["127.0.0.1:9"]})
    config["pools"][0]["migrate"] = True
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(to_yaml(config))
    try:
        return run_wsgate("--check", "-c", f.name).returncode == 0
    except OSError:
        return False
    finally:
        os.unlink(f.name)


needs_migration = pytest.mark.skipif(
    not migration_supported(),
    reason="this wsgate does not accept pools[].migrate yet (WSGATE_REQUIRE_MIGRATION=1 runs "
           "these anyway)")


# ------------------------------------------------------------------------------------------
# The peers
# ------------------------------------------------------------------------------------------

class MigratePeer(StreamPeer):
    """migrate_peer.py as a subprocess: the StreamPeer protocol plus ``stats``, ``quiet`` and
    ``detail`` requests."""

    SCRIPT = MIGRATE_PEER

    def __init__(self, proc, results_path):
        super().__init__(proc, results_path)
        self.name = "client"
        self.host = "127.0.0.1"
        self.killed = False

    @classmethod
    async def server(cls, tmp_path, name, **options):
        """A backend named ``name`` (on ``host=`` if given, else 127.0.0.1)."""
        peer = await cls.start(tmp_path, "server", name=name, interval=INTERVAL, **options)
        peer.name = name
        peer.host = options.get("host", peer.host)
        return peer

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @classmethod
    async def client(cls, tmp_path, gate, count, **options):
        """``count`` sessions through ``gate``; returns once all are upgraded."""
        peer = await cls.start(tmp_path, "client", port=gate.port, count=count,
                               interval=INTERVAL, **options)
        await peer.wait_line("connected", 10 + count / 20)
        return peer

    @property
    def alive(self):
        return not self.killed and self.proc.returncode is None

    async def ask(self, command, timeout=WAIT):
        """Send a command; return its answer line without the leading word."""
        first_new = len(self.lines)
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[first_new:]:
                if line.startswith(command + " "):
                    self.lines.remove(line)  # keep self.lines short, each answer used once
                    return line[len(command) + 1:]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no answer to {command!r} in {timeout}s")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except asyncio.TimeoutError:
                continue
            if not raw:
                raise AssertionError(f"{self.name} exited ({await self.proc.wait()}) before "
                                     f"answering {command!r}; lines: {self.lines[-5:]}")
            self.lines.append(raw.decode().strip())

    async def stats(self, command="stats"):
        """{sent, recv, open, closed, resumed, refused} totals."""
        answer = await self.ask(command)
        return {key: int(value) for key, value in (kv.split("=") for kv in answer.split())}

    async def detail(self):
        return json.loads(await self.ask("detail"))

    async def kill(self):
        self.killed = True
        await super().kill()


async def start_servers(tmp_path, names, **options):
    """{name: MigratePeer} backends."""
    return {name: await MigratePeer.server(tmp_path, name, **options) for name in names}


def migrate_config(servers, migrate=True, timeouts=None, rebalance=None):
    """One least_conn pool ``p`` of ``servers``, admin on; timeouts.drain is long so that a
    session closed by the drain rather than moved would show."""
    config = drain_config(
        pools={"p": {"balance": "least_conn", "backends": [s.address for s in servers]}},
        timeouts=timeouts or {"drain": "30s", "close": "5s"})
    if migrate:
        config["pools"][0]["migrate"] = True
    if rebalance:
        config["pools"][0]["rebalance"] = rebalance
    return config


async def snapshot(client, servers):
    """(client rows by id, {id: [(server name, sent, last seq, received)]} of open segments on
    the live servers)."""
    rows = {row[0]: row for row in await client.detail()}
    segments = collections.defaultdict(list)
    for server in servers:
        if server.alive:
            for conn_id, sent, last, received in await server.detail():
                segments[conn_id].append((server.name, sent, last, received))
    return rows, segments


def not_flowing(rows, segments, least):
    """Open sessions not yet on exactly one live backend that has exchanged ``least`` messages
    with them both ways."""
    bad = []
    for conn_id, (_, _, last_name, last_seq, is_open) in rows.items():
        if not is_open:
            continue
        segs = segments.get(conn_id, [])
        if len(segs) != 1 or segs[0][3] < least or last_name != segs[0][0] \
                or last_seq < least - 1:
            bad.append((conn_id, rows[conn_id][1:], segs))
    return bad


def not_settled(rows, segments):
    """Open sessions whose messages are not all delivered yet (both sides quiet)."""
    bad = []
    for conn_id, (_, sent, last_name, last_seq, is_open) in rows.items():
        if not is_open:
            continue
        segs = segments.get(conn_id, [])
        if len(segs) != 1:
            bad.append((conn_id, rows[conn_id][1:], segs))
            continue
        name, seg_sent, seg_last, _ = segs[0]
        if seg_last != sent - 1 or (seg_sent and (last_name, last_seq) != (name, seg_sent - 1)):
            bad.append((conn_id, rows[conn_id][1:], segs))
    return bad


async def wait_sessions(client, servers, check, what, timeout):
    """Poll snapshots until ``check(rows, segments)`` lists no session; fail with examples."""
    deadline = time.monotonic() + timeout
    while True:
        rows, segments = await snapshot(client, servers)
        bad = check(rows, segments)
        if not bad:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                 f"{len(bad)} session(s), e.g. {bad[:3]}")
        await asyncio.sleep(POLL)


async def wait_flowing(client, servers, timeout=30):
    """Every open session is on one live backend and exchanges messages with it."""
    return await wait_sessions(client, servers,
                               lambda r, s: not_flowing(r, s, FLOWING),
                               "every open session to flow on one backend", timeout)


async def settle_and_stop(client, servers, timeout=30):
    """Quiet every sender, wait until every open session's messages are delivered both ways,
    then stop all peers; return (client records by id, server records by name)."""
    await client.stats("quiet")
    for server in servers:
        if server.alive:
            await server.stats("quiet")
    await wait_sessions(client, servers, not_settled, "every message to be delivered", timeout)
    client_records = {r["id"]: r for r in await client.stop()}
    server_records = {}
    for server in servers:
        if server.alive:
            server_records[server.name] = await server.stop()
    return client_records, server_records


async def wait_value(read, done, what, timeout):
    """Poll ``read()`` (a coroutine function) until ``done(value)``; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last {value})")
        await asyncio.sleep(POLL)


async def wait_steady_value(read, what, settle=1.0, timeout=30):
    """Poll ``read()`` until it has not changed for ``settle`` seconds; return it."""
    deadline = time.monotonic() + timeout
    last, since = await read(), time.monotonic()
    while True:
        await asyncio.sleep(POLL)
        value, now = await read(), time.monotonic()
        if value != last:
            last, since = value, now
        elif now - since >= settle:
            return value
        if now > deadline:
            raise AssertionError(f"{what} never settled within {timeout}s (last {last})")


# ------------------------------------------------------------------------------------------
# The exactly-once check
# ------------------------------------------------------------------------------------------

def join_segments(server_records):
    """{session id: [segment, ...]} in the order the segments were opened. A segment is a
    server's record of one upgraded connection plus its ``name``; refused upgrades are left
    out."""
    sessions = collections.defaultdict(list)
    for name, records in server_records.items():
        for record in records:
            if record["upgraded"]:
                sessions[record["id"]].append(dict(record, name=name))
    for segments in sessions.values():
        segments.sort(key=lambda s: s["opened"])
    return sessions


def check_session(client, segments, lost=(), loss_until=None):
    """Problems (strings) with one session: ``client`` is the client's record, ``segments``
    the backend segments in time order. A segment on a server in ``lost`` (killed, no record)
    appears as ``{"name": NAME, "lost": True}``: what the client sent it may be missing, up to
    the messages sent before ``loss_until``, and the client got some prefix 0..k-1 of what it
    sent. A client that got a close frame or lost TCP may miss the tail of either stream."""
    problems = []
    ended = bool(client["closes"]) or client["eof_time"] is not None
    if client["errors"]:
        problems.append(f"client errors {client['errors']}")
    for seg in segments:
        if seg.get("errors"):
            problems.append(f"{seg['name']} errors {seg['errors']}")

    # Client -> backends: 0..M-1 once each, in order, segment after segment.
    sent = client["sent"]
    expected = 0
    gap_allowed = False
    for seg in segments:
        if seg.get("lost"):
            gap_allowed = True
            continue
        seqs = seg["received"]
        if not seqs:
            continue
        if gap_allowed and seqs[0] > expected:
            if loss_until is None or client["sent_times"][seqs[0] - 1] >= loss_until:
                problems.append(f"client messages {expected}..{seqs[0] - 1} lost around "
                                f"{seg['name']}'s segment, some sent after the allowed loss")
            expected = seqs[0]
        gap_allowed = False
        if seqs != list(range(expected, expected + len(seqs))):
            wrong = next(i for i, s in enumerate(seqs) if s != expected + i)
            problems.append(f"{seg['name']} got client seq {seqs[wrong]} where {expected + wrong} "
                            f"was due (its seqs {seqs[max(0, wrong - 3):wrong + 3]})")
            break
        expected += len(seqs)
    else:
        if expected > sent:
            problems.append(f"backends got {expected} client messages, the client sent {sent}")
        elif expected < sent and not ended and not gap_allowed:
            problems.append(f"backends got client messages 0..{expected - 1} of 0..{sent - 1}")

    # Backends -> client: each segment's 0..K-1, segment after segment, nothing interleaved.
    got = client["received"]
    pos = 0
    for index, seg in enumerate(segments):
        name = seg["name"]
        if seg.get("lost"):
            k = 0
            while pos < len(got) and got[pos] == [name, k]:
                pos, k = pos + 1, k + 1
            continue
        want = [[name, i] for i in range(seg["sent"])]
        run = got[pos:pos + len(want)]
        last = index == len(segments) - 1
        if run != want and not (ended and last and run == want[:len(run)]):
            wrong = next((i for i, (a, b) in enumerate(zip(run, want)) if a != b), len(run))
            problems.append(f"client got {run[wrong] if wrong < len(run) else 'nothing'} where "
                            f"{want[wrong]} was due ({name} sent {len(want)}; client got "
                            f"{got[max(0, pos + wrong - 2):pos + wrong + 3]})")
            return problems
        pos += len(run)
    if pos != len(got):
        problems.append(f"client got {len(got) - pos} message(s) no backend segment accounts "
                        f"for, from {got[pos:pos + 3]}")
    return problems


def check_sessions(client_records, server_records, lost=(), loss_until=None):
    """check_session for every session; fail listing the first problems. Returns the joined
    segments {id: [segment, ...]} (lost servers' segments inferred from what the client got)."""
    sessions = join_segments(server_records)
    problems = []
    for conn_id, client in sorted(client_records.items()):
        segments = sessions.get(conn_id, [])
        names = [n for n, _ in client["received"]]
        for name in lost:
            if name in names:  # the lost backend's segment precedes every later one
                at = names.index(name)
                later = {n for n in names[at:] if n != name}
                cut = next((i for i, s in enumerate(segments) if s["name"] in later),
                           len(segments))
                segments = [*segments[:cut], {"name": name, "lost": True}, *segments[cut:]]
        sessions[conn_id] = segments
        for problem in check_session(client, segments, lost, loss_until):
            problems.append(f"session {conn_id}: {problem}")
    assert not problems, f"{len(problems)} problem(s), e.g.\n" + "\n".join(problems[:8])
    return sessions


def disconnected(client_records):
    """Sessions whose client got a close frame or lost TCP: {id: (close codes, TCP closed)}."""
    return {i: (tuple(r["closes"]), r["eof_time"] is not None)
            for i, r in client_records.items() if r["closes"] or r["eof_time"] is not None}


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------

def migrations(gate, **labels):
    """wsgate_migrations_total summed over the series matching ``labels`` (pool p)."""
    return metric(gate, "wsgate_migrations_total", pool="p", **labels)


def migrations_by_result(gate, reason, token=None):
    """{result: count} of the non-zero wsgate_migrations_total{pool="p",reason} series."""
    counts = {}
    for line in metrics_text(gate, token).splitlines():
        match = re.match(r'^wsgate_migrations_total\{(.*)\} (\S+)$', line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("pool") == "p" and labels.get("reason") == reason:
                if float(match.group(2)):
                    counts[labels["result"]] = int(float(match.group(2)))
    return counts


def histogram_quantiles(gate, name, quantiles, **labels):
    """{q: value} from a Prometheus histogram's buckets, interpolated like
    histogram_quantile(); None when it has no observations."""
    buckets = collections.Counter()
    for line in metrics_text(gate).splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) != name + "_bucket":
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            buckets[float(have["le"])] += float(match.group(3))
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return {q: None for q in quantiles}
    result = {}
    for q in quantiles:
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound in bounds:
            if buckets[bound] >= rank:
                if bound == float("inf"):
                    result[q] = lower_bound
                else:
                    width = buckets[bound] - lower_count
                    fraction = (rank - lower_count) / width if width else 1.0
                    result[q] = lower_bound + (bound - lower_bound) * fraction
                break
            lower_bound, lower_count = bound, buckets[bound]
    return result


def pause_text(gate):
    """p50/p99 of wsgate_migration_pause_seconds for the log line."""
    q = histogram_quantiles(gate, "wsgate_migration_pause_seconds", (0.5, 0.99), pool="p")
    return " ".join(f"p{int(k * 100)}=" + ("n/a" if v is None else f"{v * 1000:.1f}ms")
                    for k, v in q.items())


async def active(gate, server):
    """Sessions wsgate has on ``server`` (GET /admin/backends)."""
    state = await backends_state(gate)
    return state[server.address]["active"] if server.address in state else 0


def first_backend(client_records):
    """{session id: name of the backend its first message came from}."""
    return {i: r["received"][0][0] for i, r in client_records.items() if r["received"]}


def check_resumes(sessions, moved_ids, reason):
    """Every session in ``moved_ids`` has exactly two segments, the second upgraded with
    X-Wsgate-Resume: ``reason`` and the first's path and X-Wsgate-Connection-Id; the others
    have one segment without X-Wsgate-Resume."""
    problems = []
    for conn_id, segments in sessions.items():
        resumes = [s.get("resume") for s in segments]
        if conn_id in moved_ids:
            if resumes != [None, reason]:
                problems.append(f"session {conn_id}: upgrades with resume {resumes}")
            elif segments[0]["connection_id"] != segments[1]["connection_id"] \
                    or not segments[0]["connection_id"]:
                problems.append(f"session {conn_id}: connection ids "
                                f"{[s['connection_id'] for s in segments]}")
            elif segments[0]["path"] != segments[1]["path"]:
                problems.append(f"session {conn_id}: paths {[s['path'] for s in segments]}")
        elif resumes != [None]:
            problems.append(f"session {conn_id} (not moved): upgrades with resume {resumes}")
    assert not problems, f"{len(problems)} problem(s), e.g. {problems[:5]}"


# ------------------------------------------------------------------------------------------
# Runs on any binary: the peer, the checker, and a pool without migrate
# ------------------------------------------------------------------------------------------

def _segment(name, conn_id, opened, received, sent, resume=None):
    return {"id": conn_id, "name": name, "opened": opened, "received": received, "sent": sent,
            "resume": resume, "connection_id": "x", "upgraded": True, "errors": []}


def _client(conn_id, sent, received, closes=()):
    return {"id": conn_id, "sent": sent, "sent_times": [float(i) for i in range(sent)],
            "received": received, "closes": list(closes), "eof_time": 1.0 if closes else None,
            "errors": []}


def test_checker_accepts_a_clean_move_and_catches_each_fault():
    """check_sessions on made-up records: a clean move passes; a duplicate, a gap, a reorder,
    an interleaving, a lost tail or an extra message each fail."""
    def run(client_received, a_received, b_received, sent=5, a_sent=2, b_sent=2):
        servers = {"A": [_segment("A", 0, 1.0, a_received, a_sent)],
                   "B": [_segment("B", 0, 2.0, b_received, b_sent, "drain")]}
        check_sessions({0: _client(0, sent, client_received)}, servers)

    clean = [["A", 0], ["A", 1], ["B", 0], ["B", 1]]
    run(clean, [0, 1, 2], [3, 4])
    faults = {
        "duplicate up": (clean, [0, 1, 2], [2, 3, 4]),
        "gap up": (clean, [0, 1], [3, 4]),
        "reorder up": (clean, [0, 1, 2], [4, 3]),
        "tail lost up": (clean, [0, 1, 2], [3]),
        "interleaved down": ([["A", 0], ["B", 0], ["A", 1], ["B", 1]], [0, 1, 2], [3, 4]),
        "duplicate down": ([["A", 0], ["A", 1], ["A", 1], ["B", 0], ["B", 1]], [0, 1, 2],
                           [3, 4]),
        "lost down": ([["A", 0], ["B", 0], ["B", 1]], [0, 1, 2], [3, 4]),
        "extra down": (clean + [["B", 2]], [0, 1, 2], [3, 4]),
    }
    for what, args in faults.items():
        try:
            run(*args)
        except AssertionError:
            continue
        pytest.fail(f"check_sessions missed a fault: {what}")

    # kill -9 of A: its record is gone; loss is allowed only for messages sent before the
    # limit, and the client's run from A must still be 0..k-1.
    servers = {"B": [_segment("B", 0, 2.0, [3, 4], 2, "backend-lost")]}
    check_sessions({0: _client(0, 5, clean)}, servers, lost=("A",), loss_until=10.0)
    with pytest.raises(AssertionError):
        check_sessions({0: _client(0, 5, clean)}, servers, lost=("A",), loss_until=1.5)
    with pytest.raises(AssertionError):
        bad = [["A", 0], ["A", 2], ["B", 0], ["B", 1]]
        check_sessions({0: _client(0, 5, bad)}, servers, lost=("A",), loss_until=10.0)
    # A session that ended (1014) may miss the tail of either stream, nothing else.
    ended = {"A": [_segment("A", 0, 1.0, [0, 1], 3)]}
    check_sessions({0: _client(0, 4, [["A", 0], ["A", 1]], closes=[1014])}, ended)
    with pytest.raises(AssertionError):
        check_sessions({0: _client(0, 4, [["A", 1]], closes=[1014])}, ended)


@async_test(timeout=60)
async def test_migrate_peer_records_everything(tmp_path):
    """migrate_peer.py on its own (no wsgate): a client and a server exchange numbered
    messages (each in two frames) exactly once and in order; the server answers the offered
    subprotocol, records X-Wsgate-Resume and X-Wsgate-Connection-Id, refuses resumed upgrades
    with --refuse-resume, and answers a close frame with the same code, then closes TCP."""
    servers = await start_servers(tmp_path, ["s1"], subprotocol="b", fragment_gap=FRAGMENT_GAP)
    server = servers["s1"]
    refuser = (await start_servers(tmp_path, ["s2"], refuse_resume=503))["s2"]

    class Direct:  # the client connects to the server itself
        port = server.port
    client = await MigratePeer.client(tmp_path, Direct, 20, protocols="a, b",
                                      fragment_gap=FRAGMENT_GAP)
    await wait_flowing(client, [server], timeout=20)
    assert (await client.stats())["open"] == 20

    resumed = await RawClient.connect(server.port)
    await resumed.handshake("/s/77", extra=[("X-Wsgate-Resume", "drain"),
                                            ("X-Wsgate-Connection-Id", "abc-123")])
    await resumed.send_frame(OP_CLOSE, close_payload(1001))
    reply, _ = await read_until_close(resumed)
    assert reply.close_code == 1001
    assert await resumed.wait_eof(), "the server kept TCP open after its close reply"
    refused = await RawClient.connect(refuser.port)
    await refused.write(upgrade_request("/s/78", extra=[("X-Wsgate-Resume", "removed")]))
    assert (await read_http_response(refused)).status == 503
    assert await refused.wait_eof(), "--refuse-resume left the connection open"
    plain = await RawClient.connect(refuser.port)
    await plain.handshake("/s/79")
    await wait_value(refuser.stats, lambda s: s["refused"] == 1 and s["open"] == 1,
                     "the refusing server's records", WAIT)

    client_records, server_records = await settle_and_stop(client, [server])
    assert sorted(client_records) == list(range(20))
    sessions = check_sessions(client_records, {"s1": [r for r in server_records["s1"]
                                                      if r["id"] < 20]})
    assert all(len(s) == 1 and s[0]["resume"] is None for s in sessions.values())
    assert all(r["subprotocol"] == "b" for r in client_records.values())
    assert not disconnected(client_records)
    assert min(len(r["received"]) for r in client_records.values()) >= FLOWING
    [raw] = [r for r in server_records["s1"] if r["id"] == 77]
    assert (raw["resume"], raw["connection_id"], raw["path"]) == ("drain", "abc-123", "/s/77")
    assert raw["closes"] == [1001] and raw["eof_time"] is not None
    assert raw["subprotocol"] is None  # nothing offered, nothing answered
    refuser_records = {r["id"]: r for r in await refuser.stop()}
    assert refuser_records[78]["refused"] == 503 and not refuser_records[78]["upgraded"]
    assert refuser_records[79]["refused"] is None and refuser_records[79]["upgraded"]


@async_test(timeout=90)
async def test_pool_without_migrate_drains_as_before(gates, tmp_path):
    """A pool without ``migrate``: an admin drain closes the drained backend's sessions with
    1001 after timeouts.drain, as before; no X-Wsgate-Resume upgrade reaches any backend, no
    migration is counted, the other backend's sessions carry on exactly once and in order."""
    servers = await start_servers(tmp_path, ["a", "b"])
    gate = await gates.launch(migrate_config(list(servers.values()), migrate=False,
                                             timeouts={"drain": "1s", "close": "5s"}))
    client = await MigratePeer.client(tmp_path, gate, FEW_SESSIONS)
    await wait_flowing(client, servers.values())
    on_a = await active(gate, servers["a"])
    assert 0 < on_a < FEW_SESSIONS, await backends_state(gate)

    status, body = await admin(gate, "POST", f"/admin/backends/p/{servers['a'].address}/drain")
    assert status == 200, (status, body)
    await wait_value(client.stats, lambda s: s["closed"] >= on_a,
                     f"the {on_a} sessions of the drained backend to close", 20)
    client_records, server_records = await settle_and_stop(client, servers.values())

    check_sessions(client_records, server_records)
    assert not any(r["resume"] for records in server_records.values() for r in records), (
        "an upgrade with X-Wsgate-Resume reached a backend of a pool without migrate")
    ended = disconnected(client_records)
    on = first_backend(client_records)
    assert sorted(ended) == sorted(i for i, name in on.items() if name == "a")
    assert set(ended.values()) == {((1001,), True)}, collections.Counter(ended.values())
    assert migrations(gate) == 0
    print(f"\n[no-migrate] sessions={FEW_SESSIONS} drained={on_a} closed 1001={len(ended)}")


# ------------------------------------------------------------------------------------------
# Needs the feature
# ------------------------------------------------------------------------------------------

@needs_migration
@async_test(timeout=150)
async def test_admin_drain_moves_1000_sessions(gates, tmp_path):
    """SESSIONS sessions over 3 backends, one drained through the admin API: its sessions move
    to the other two with X-Wsgate-Resume: drain and their X-Wsgate-Connection-Id, no client
    sees a close frame or a TCP close, every message arrives exactly once and in order both
    ways, wsgate_migrations_total{reason="drain",result="moved"} counts them, and the access
    log says moves=1 for each."""
    t_start = time.monotonic()
    servers = await start_servers(tmp_path, ["a", "b", "c"])
    gate = await gates.launch(migrate_config(list(servers.values())))
    client = await MigratePeer.client(tmp_path, gate, SESSIONS, concurrency=64)
    connected = time.monotonic() - t_start
    await wait_flowing(client, servers.values(), timeout=30)
    drained = servers["a"]
    on_a = await active(gate, drained)
    assert on_a > 0, await backends_state(gate)

    t_drain = time.monotonic()
    status, body = await admin(gate, "POST", f"/admin/backends/p/{drained.address}/drain")
    assert status == 200, (status, body)
    counts = await wait_value(lambda: asyncio.to_thread(migrations_by_result, gate, "drain"),
                              lambda c: sum(c.values()) >= on_a,
                              f"{on_a} moves to be counted", 30)
    moved_after = time.monotonic() - t_drain
    assert counts == {"moved": on_a}, f"drain moves by result: {counts} (expected {on_a} moved)"
    await wait_value(lambda: active(gate, drained), lambda n: n == 0,
                     "the drained backend to have no session", 10)
    await wait_flowing(client, servers.values(), timeout=30)
    client_records, server_records = await settle_and_stop(client, servers.values())

    assert not disconnected(client_records), (
        f"{len(disconnected(client_records))} clients disconnected, e.g. "
        f"{list(disconnected(client_records).items())[:5]}")
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, name in first_backend(client_records).items() if name == "a"}
    assert len(moved) == on_a
    check_resumes(sessions, moved, "drain")
    assert migrations(gate, reason="drain", result="moved") == on_a
    pauses = pause_text(gate)

    lines = await gate.wait_for_access_lines(SESSIONS, 30)
    moves = collections.Counter(re.search(r" moves=(\d+)", line).group(1)
                                if " moves=" in line else "absent" for line in lines)
    assert moves == {"1": on_a, "0": SESSIONS - on_a}, f"access log moves=: {moves}"
    print(f"\n[migrate-drain] sessions={SESSIONS} connect={connected:.1f}s moved={on_a} "
          f"all counted after {moved_after:.2f}s pause {pauses} "
          f"msgs up={sum(r['sent'] for r in client_records.values())} "
          f"down={sum(len(r['received']) for r in client_records.values())} "
          f"total={time.monotonic() - t_start:.1f}s")


@needs_migration
@async_test(timeout=120)
async def test_reload_removal_moves_sessions(gates, tmp_path):
    """A SIGHUP reload that removes a backend: its sessions move with X-Wsgate-Resume:
    removed, clients stay connected, exactly once and in order. The removed backend lingers
    0.3 s before answering the close frame and keeps sending meanwhile: those messages still
    reach the client, before any of the new backend's. Every message, both ways, is two frames
    apart in time, so moves wait for message boundaries."""
    servers = await start_servers(tmp_path, ["a", "b"], fragment_gap=FRAGMENT_GAP)
    servers["x"] = (await start_servers(tmp_path, ["x"], close_delay=0.3,
                                        fragment_gap=FRAGMENT_GAP))["x"]
    peers = list(servers.values())
    gate = await gates.launch(migrate_config(peers))
    client = await MigratePeer.client(tmp_path, gate, SOME_SESSIONS, fragment_gap=FRAGMENT_GAP)
    await wait_flowing(client, peers)
    on_x = await active(gate, servers["x"])
    assert on_x > 0

    await reload(gate, migrate_config([servers["a"], servers["b"]]), gates)
    counts = await wait_value(lambda: asyncio.to_thread(migrations_by_result, gate, "removed"),
                              lambda c: sum(c.values()) >= on_x,
                              f"{on_x} moves to be counted", 30)
    assert counts == {"moved": on_x}, f"removal moves by result: {counts}"
    await wait_flowing(client, peers)
    client_records, server_records = await settle_and_stop(client, peers)

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, name in first_backend(client_records).items() if name == "x"}
    assert len(moved) == on_x
    check_resumes(sessions, moved, "removed")
    old = [segments[0] for i, segments in sessions.items() if i in moved]
    assert all(s["closes"] == [1001] for s in old), collections.Counter(
        tuple(s["closes"]) for s in old)
    sent_after_close = sum(1 for s in old if s["sent_times"] and s["close_time"]
                           and s["sent_times"][-1] > s["close_time"])
    assert sent_after_close > 0, "the lingering backend never sent after its close frame"
    print(f"\n[migrate-removed] sessions={SOME_SESSIONS} moved={on_x} "
          f"old backend sent after its close frame on {sent_after_close} pause {pause_text(gate)}")


@needs_migration
@async_test(timeout=120)
async def test_rebalance_moves_sessions_to_an_added_backend(gates, tmp_path):
    """One backend with every session; a reload adds a second with rebalancing on: sessions
    move (X-Wsgate-Resume: rebalance) until the first is within tolerance of its share, none
    disconnects, exactly once and in order. The log is JSON here: "moves": 1 per moved one."""
    servers = await start_servers(tmp_path, ["a", "b"])
    a, b = servers["a"], servers["b"]

    def config(backends, **options):
        config = migrate_config(backends, **options)
        config["log"] = {"format": "json"}
        return config
    gate = await gates.launch(config([a]))
    client = await MigratePeer.client(tmp_path, gate, SOME_SESSIONS)
    await wait_flowing(client, [a])

    tolerance = 1.2
    await reload(gate, config(
        [a, b], rebalance={"enabled": True, "tolerance": tolerance, "rate": "1000/s"}), gates)
    limit = int(tolerance * SOME_SESSIONS / 2)
    await wait_value(lambda: active(gate, a), lambda n: n <= limit,
                     f"backend a down to {limit} sessions", 30)
    # Settled: the count stopped changing and b holds exactly the moved sessions (a move still
    # in flight holds a lease on b too), on a busy machine as well.
    async def moves_and_b():
        counts = await asyncio.to_thread(migrations_by_result, gate, "rebalance")
        return counts, await active(gate, b)
    counts, on_b = await wait_steady_value(moves_and_b, "rebalance moves", settle=2.0)
    moved_count = counts.get("moved", 0)
    assert counts == {"moved": moved_count} and moved_count > 0, counts
    assert on_b == moved_count, (on_b, counts)
    await wait_flowing(client, servers.values())
    client_records, server_records = await settle_and_stop(client, servers.values())

    assert not disconnected(client_records), list(disconnected(client_records).items())[:5]
    sessions = check_sessions(client_records, server_records)
    moved = {i for i, segments in sessions.items() if len(segments) > 1}
    assert len(moved) == moved_count
    check_resumes(sessions, moved, "rebalance")
    assert all(sessions[i][1]["name"] == "b" for i in moved)
    lines = await gate.wait_for_access_lines(SOME_SESSIONS, 30)
    moves = collections.Counter(json.loads(line).get("moves", "absent") for line in lines)
    assert moves == {1: moved_count, 0: SOME_SESSIONS - moved_count}, (
        f"JSON access log \"moves\": {moves}")
    print(f"\n[migrate-rebalance] sessions={SOME_SESSIONS} moved={moved_count} "
          f"pause {pause_text(gate)}")


@needs_migration
@async_test(timeout=120)
async def test_kill_9_moves_sessions_or_closes_them_1014(gates, tmp_path):
    """kill -9 of a backend: each of its sessions either moves (X-Wsgate-Resume: backend-lost)
    and carries on exactly once and in order (client messages the dead backend may have taken
    excepted), or gets close 1014; nothing else. The other sessions are untouched. Backend
    messages are two frames apart in time, so some are in flight at the kill: both outcomes
    occur."""
    servers = await start_servers(tmp_path, ["a", "b", "x"], fragment_gap=FRAGMENT_GAP)
    peers = list(servers.values())
    gate = await gates.launch(migrate_config(peers))
    client = await MigratePeer.client(tmp_path, gate, SOME_SESSIONS)
    await wait_flowing(client, peers)
    on_x = await active(gate, servers["x"])
    assert on_x > 0

    t_kill = time.monotonic()
    await servers["x"].kill()

    async def accounted():
        moved = (await asyncio.to_thread(migrations_by_result, gate, "backend-lost")).get(
            "moved", 0)
        return moved + (await client.stats())["closed"]
    await wait_value(accounted, lambda n: n >= on_x, f"{on_x} sessions moved or closed", 30)
    counts = migrations_by_result(gate, "backend-lost")
    await wait_flowing(client, peers)
    client_records, server_records = await settle_and_stop(client, peers)

    on = first_backend(client_records)
    was_on_x = {i for i, name in on.items() if name == "x"}
    assert len(was_on_x) == on_x
    ended = disconnected(client_records)
    assert set(ended) <= was_on_x, f"sessions of other backends ended: {set(ended) - was_on_x}"
    assert set(ended.values()) <= {((1014,), True)}, collections.Counter(ended.values())
    sessions = check_sessions(client_records, server_records, lost=("x",),
                              loss_until=t_kill + KILL_SLACK)
    moved = was_on_x - set(ended)
    assert counts.get("moved", 0) == len(moved), (counts, len(moved))
    assert moved and ended, (f"of {on_x} sessions {len(moved)} moved and {len(ended)} got 1014: "
                             f"the test meant both to happen")
    for conn_id in moved:
        live = [s for s in sessions[conn_id] if not s.get("lost")]
        assert [s["resume"] for s in live] == ["backend-lost"], (conn_id, sessions[conn_id])
    lost_messages = sum(
        r["sent"] - sum(len(s["received"]) for s in sessions[i] if not s.get("lost"))
        for i, r in client_records.items() if i in moved)
    print(f"\n[migrate-kill9] sessions={SOME_SESSIONS} on killed backend={on_x} moved={len(moved)} "
          f"closed 1014={len(ended)} by result {counts} client messages not on a live "
          f"backend={lost_messages} pause {pause_text(gate)}")


@needs_migration
@pytest.mark.parametrize("refusal", ["other_subprotocol", "status_503"])
@async_test(timeout=90)
async def test_refused_resume_ends_the_session_1012(gates, tmp_path, refusal):
    """The only other backend answers the resumed upgrade with another subprotocol, or 503:
    each session ends cleanly with close 1012 to the client, counted as refused; none of its
    messages reached the refusing backend; a normal client is still served afterwards."""
    a = (await start_servers(tmp_path, ["a"], subprotocol="one"))["a"]
    options = ({"subprotocol": "two"} if refusal == "other_subprotocol"
               else {"subprotocol": "one", "refuse_resume": 503})
    b = (await start_servers(tmp_path, ["b"], **options))["b"]
    gate = await gates.launch(migrate_config([a, b]))
    # Every session on a: b drained while they connect, then back.
    assert (await admin(gate, "POST", f"/admin/backends/p/{b.address}/drain"))[0] == 200
    client = await MigratePeer.client(tmp_path, gate, FEW_SESSIONS, protocols="one, two")
    assert (await admin(gate, "POST", f"/admin/backends/p/{b.address}/undrain"))[0] == 200
    assert await active(gate, a) == FEW_SESSIONS
    await wait_flowing(client, [a, b])

    assert (await admin(gate, "POST", f"/admin/backends/p/{a.address}/drain"))[0] == 200
    await wait_value(client.stats, lambda s: s["closed"] >= FEW_SESSIONS,
                     "every session to end", 30)
    await wait_value(a.stats, lambda s: s["open"] == 0, "a's connections to end", 15)
    counts = migrations_by_result(gate, "drain")
    assert counts == {"refused": FEW_SESSIONS}, counts

    ws = await ws_connect(gate.url("/s/9999"), subprotocols=["one", "two"])
    greeting = await recv(ws)
    assert greeting.startswith("b 9999 b "), greeting
    await ws.send("c 9999 0")
    await ws.close()

    client_records = {r["id"]: r for r in await client.stop()}
    a_records = await a.stop()
    b_records = await b.stop()
    ended = disconnected(client_records)
    assert len(ended) == FEW_SESSIONS
    assert set(ended.values()) == {((1012,), True)}, collections.Counter(ended.values())
    assert all(r["subprotocol"] == "one" and not r["errors"] for r in client_records.values())
    # What the client sent and got is a prefix of one stream each (the session ended).
    check_sessions(client_records, {"a": a_records})
    resumes = [r for r in b_records if r["resume"] is not None]
    assert sorted(r["id"] for r in resumes) == list(range(FEW_SESSIONS))
    assert {r["resume"] for r in resumes} == {"drain"}
    ids = {r["id"]: r["connection_id"] for r in a_records}
    assert all(r["connection_id"] == ids[r["id"]] for r in resumes)
    assert not any(r["received"] for r in resumes), "a client message reached the refusing b"
    if refusal == "status_503":
        assert {r["refused"] for r in resumes} == {503}
    [normal] = [r for r in b_records if r["id"] == 9999]
    assert normal["resume"] is None and normal["received"] == [0]
    print(f"\n[migrate-refused {refusal}] sessions={FEW_SESSIONS} closed 1012={len(ended)} "
          f"counted {counts}")
