"""Graceful drain (SIGTERM), backend drain, SIGHUP reload and the admin HTTP endpoints.

The 1,000-connection drain test runs its clients and its backend as two stream_peer.py
subprocesses (a lean asyncio.Protocol WebSocket), so neither side is CPU-starved inside the
pytest process. Every timestamp is time.monotonic() (CLOCK_MONOTONIC, shared by processes).
"""

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import time

import pytest

from harness import (OP_CLOSE, OP_TEXT, PYTHON, WAIT, EchoBackend, RawClient, admin_address,
                     async_test, ready_entries,
                     assert_still_serving, make_config, parse_head, read_frame, recv,
                     register_cleanup, run_wsgate, wait_until, wait_ws_closed, ws_connect)

HERE = os.path.dirname(os.path.abspath(__file__))
STREAM_PEER = os.path.join(HERE, "stream_peer.py")

# Slack for timer granularity (wsgate's drain tick is 100 ms) and scheduling on a busy box.
EARLY_SLACK = 0.05
LATE_SLACK = 1.0


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

def drain_config(pools, admin=True, token="", drain=None, timeouts=None, **kwargs):
    """make_config plus the admin and drain sections."""
    config = make_config(pools=pools, timeouts=timeouts, **kwargs)
    if admin:
        config["admin"] = {"address": "127.0.0.1:0", "token": token}
    if drain:
        config["drain"] = drain
    return config


async def http_request(address, method, path, token=None, timeout=WAIT):
    """One HTTP/1.1 request with Connection: close; return (status, body text, head)."""
    host, port = address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                 "Content-Length: 0"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head_end = data.find(b"\r\n\r\n")
    assert head_end >= 0, f"no complete HTTP response: {data[:300]!r}"
    head = parse_head(data[:head_end + 4])
    return head.status, data[head_end + 4:].decode("utf-8", "replace"), head


async def admin(gate, method, path, token=None):
    """(status, body) of an admin request."""
    status, body, _ = await http_request(admin_address(gate), method, path, token)
    return status, body


async def backends_state(gate, token=None):
    """{address: backend dict} from GET /admin/backends."""
    status, body = await admin(gate, "GET", "/admin/backends", token)
    assert status == 200, (status, body)
    return {b["address"]: b for b in json.loads(body)["backends"]}


def tcp_refused(port, host="127.0.0.1"):
    """True if a TCP connect to the port is refused right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            return False  # queued just before the listener closed: it was not refused
        return False


async def wait_not_ready(gate, within=0.5):
    """Poll /readyz until it is 503 (a signal is handled on wsgate's next loop turn, so
    "at once" means within ``within`` seconds); return (seconds waited, body)."""
    start = time.monotonic()
    while True:
        status, body = await admin(gate, "GET", "/readyz")
        if status == 503:
            return time.monotonic() - start, body
        assert status == 200, (status, body)
        assert time.monotonic() - start < within, f"/readyz still {status} {body!r} after {within}s"
        await asyncio.sleep(0.005)


async def wait_exit(gate, timeout):
    """Wait for wsgate to exit; return the monotonic time it was seen gone."""
    await wait_until(lambda: not gate.alive(), timeout, "wsgate to exit", interval=0.005)
    return time.monotonic()


def count_in_stderr(gate, text):
    """How many times ``text`` occurs in wsgate's stderr so far."""
    return gate.stderr_text().count(text)


def write_config_file(gate, config, launcher):
    """Atomically replace the gate's config file (dict or YAML text)."""
    path = launcher.write_config(config, os.path.basename(gate.config_path) + ".new")
    os.replace(path, gate.config_path)


async def reload(gate, config, launcher, expect="reload complete", timeout=WAIT):
    """Rewrite the config file, SIGHUP, wait for the reload outcome line; return stderr."""
    before_ok = count_in_stderr(gate, "reload complete")
    before_failed = count_in_stderr(gate, "reload failed")
    write_config_file(gate, config, launcher)
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: (count_in_stderr(gate, "reload complete") > before_ok
                              or count_in_stderr(gate, "reload failed") > before_failed),
                     timeout, "a reload outcome line")
    text = gate.stderr_text()
    assert text.count(expect) > (before_ok if expect == "reload complete" else before_failed), (
        f"expected {expect!r} after SIGHUP; stderr tail:\n{text[-3000:]}")
    return text


async def connect_named(gate, path="/", listener=None):
    """A websockets client through wsgate to a greeting EchoBackend; return (ws, name)."""
    ws = await ws_connect(gate.url(path, listener=listener))
    greeting = await recv(ws)
    assert greeting.startswith("hello from "), greeting
    return ws, greeting.removeprefix("hello from ")


async def echo_ok(ws, what="connection"):
    """The connection still echoes."""
    token = "ping-" + os.urandom(4).hex()
    await ws.send(token)
    assert await recv(ws) == token, f"{what} did not echo"


def access_fields(line):
    """key=value pairs of an access-log line."""
    return dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line))


class StreamPeer:
    """stream_peer.py as a subprocess (see that file for the protocol). A subclass may run
    another script speaking the same stdin/stdout protocol (``SCRIPT``)."""

    SCRIPT = STREAM_PEER

    def __init__(self, proc, results_path):
        self.proc = proc
        self.results_path = results_path
        self.lines = []
        self.port = None

    @classmethod
    async def start(cls, tmp_path, role, **options):
        results = os.path.join(str(tmp_path), f"{role}-{time.monotonic_ns()}.json")
        args = [PYTHON, cls.SCRIPT, role, "--results", results]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    limit=1 << 22)
        peer = cls(proc, results)
        register_cleanup(peer.kill)
        if role == "server":
            line = await peer.wait_line("listening")
            peer.port = int(line.split()[1])
        return peer

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    async def wait_line(self, prefix, timeout=WAIT):
        """Wait for a stdout line starting with ``prefix``; fail on EOF or another outcome."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
                if line.startswith("failed"):
                    raise AssertionError(f"stream_peer: {line}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {prefix!r} from "
                                     f"stream_peer; lines so far: {self.lines}")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except asyncio.TimeoutError:
                continue
            if not raw:
                raise AssertionError(f"stream_peer exited ({await self.proc.wait()}) before "
                                     f"{prefix!r}; lines: {self.lines}")
            self.lines.append(raw.decode().strip())

    async def stop(self, timeout=30):
        """Ask for the results, wait for the process; return the list of records."""
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        await self.wait_line("done", timeout)
        await asyncio.wait_for(self.proc.wait(), timeout)
        with open(self.results_path) as f:
            return json.load(f)

    async def kill(self):
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


# A message sent this long before wsgate started closing (the first close frame anyone saw)
# must have arrived: wsgate forwards everything it has received before inserting the close.
FLOW_MARGIN = 0.5


def lost_text(lost_at):
    """check_streams' figure for the log line: None means every message sent arrived."""
    return "none" if lost_at is None else f"{lost_at:+.3f}s"


def check_streams(senders, receivers, t_term, t_closing, label):
    """Per connection: receivers got exactly 0..k-1 (stream_peer checks order and flags gaps,
    duplicates and foreign messages), k never exceeds what was sent, and k covers every message
    sent before SIGTERM (``t_term``) and every one sent up to FLOW_MARGIN before wsgate began
    closing (``t_closing``), so traffic kept flowing through the drain and nothing was cut off.

    Returns (list of k, the earliest send time of an undelivered message relative to
    ``t_closing`` over all connections, or None if nothing was lost).
    """
    problems = []
    counts = []
    worst_lost = None
    for conn_id in sorted(receivers):
        got = receivers[conn_id]
        sender = senders[conn_id]
        sent_times = sender["sent_times"]
        k = got["recv"]
        counts.append(k)
        before_term = sum(1 for t in sent_times if t < t_term)
        before_flow = sum(1 for t in sent_times if t < t_closing - FLOW_MARGIN)
        if k < len(sent_times):
            lost_at = sent_times[k] - t_closing
            worst_lost = lost_at if worst_lost is None else min(worst_lost, lost_at)
        if got["errors"]:
            problems.append(f"{label} #{conn_id}: {got['errors'][:3]}")
        elif k > len(sent_times):
            problems.append(f"{label} #{conn_id}: received {k} > sent {len(sent_times)}")
        elif k < before_term:
            problems.append(f"{label} #{conn_id}: received {k}, but {before_term} were sent "
                            f"before SIGTERM")
        elif k < before_flow:
            problems.append(f"{label} #{conn_id}: received {k} of {len(sent_times)}, but "
                            f"{before_flow} were sent up to {FLOW_MARGIN}s before wsgate began "
                            f"closing (SIGTERM+{t_closing - t_term:.2f}s)")
    assert not problems, f"{len(problems)} bad {label} stream(s), e.g. {problems[:5]}"
    return counts, worst_lost


# ------------------------------------------------------------------------------------------
# 1. SIGTERM with many live streaming connections
# ------------------------------------------------------------------------------------------

LOAD_CONNECTIONS = 1000
LOAD_INTERVAL = 0.2  # each side of each connection sends one message this often
LOAD_DRAIN = 3.0
LOAD_CLOSE = 2.0


@async_test(timeout=90)
async def test_sigterm_drains_1000_streaming_connections(gates, tmp_path):
    """1,000 connections streaming both ways survive the whole drain without loss, then get
    1001 on both sides; new connects are refused; wsgate exits 0 within drain+close+1s."""
    n = LOAD_CONNECTIONS
    backend = await StreamPeer.start(tmp_path, "server", interval=LOAD_INTERVAL)
    gate = await gates.launch(drain_config(
        pools={"stream": [backend.address]},
        timeouts={"drain": f"{int(LOAD_DRAIN * 1000)}ms", "close": f"{int(LOAD_CLOSE)}s"}))
    clients = await StreamPeer.start(tmp_path, "client", port=gate.port, count=n,
                                     interval=LOAD_INTERVAL, concurrency=64)
    t_connect = time.monotonic()
    await clients.wait_line("connected", 40)
    connect_seconds = time.monotonic() - t_connect
    state = await backends_state(gate)
    assert state[backend.address]["active"] == n, state
    await asyncio.sleep(1.5)  # let every connection stream for a while

    t_term = time.monotonic()
    gate.proc.send_signal(signal.SIGTERM)
    not_ready_after, body = await wait_not_ready(gate)
    assert "draining" in body, body
    # grace is 0: the listener closes at once and stays closed for the whole drain.
    await wait_until(lambda: tcp_refused(gate.port), 2, "the listener to refuse connects")
    refused_after = time.monotonic() - t_term
    await asyncio.sleep(max(0.0, t_term + LOAD_DRAIN - 1.0 - time.monotonic()))
    assert gate.alive(), "wsgate exited during the drain with connections open"
    assert tcp_refused(gate.port), "listener accepted a connection during the drain"

    try:
        await clients.wait_line("closed", LOAD_DRAIN + LOAD_CLOSE + 10)
    except AssertionError as err:
        records = await clients.stop()
        codes = collections.Counter(r["close_code"] for r in records)
        open_ids = [r["id"] for r in records if r["eof_time"] is None][:10]
        raise AssertionError(f"{err}; client close codes {codes}, still open e.g. {open_ids}, "
                             f"wsgate alive={gate.alive()}") from None
    exit_at = await wait_exit(gate, LOAD_DRAIN + LOAD_CLOSE + 5)
    assert gate.proc.returncode == 0
    exit_seconds = exit_at - t_term

    client_records = {r["id"]: r for r in await clients.stop()}
    backend_records = {r["id"]: r for r in await backend.stop()}
    assert sorted(client_records) == list(range(n))
    assert sorted(backend_records) == list(range(n)), (
        f"backend saw {len(backend_records)} connections")

    client_codes = collections.Counter(r["close_code"] for r in client_records.values())
    backend_codes = collections.Counter(r["close_code"] for r in backend_records.values())
    assert client_codes == {1001: n}, f"client close codes: {client_codes}"
    assert backend_codes == {1001: n}, f"backend close codes: {backend_codes}"

    first_close = min(r["close_time"] for r in client_records.values()) - t_term
    last_close = max(r["close_time"] for r in client_records.values()) - t_term
    assert first_close >= LOAD_DRAIN - EARLY_SLACK, (
        f"a client got its close {first_close:.3f}s after SIGTERM, before timeouts.drain")

    # Flowing through the whole drain, in both directions.
    t_closing = min(r["close_time"] for r in [*client_records.values(),
                                              *backend_records.values()])
    up, up_lost = check_streams(client_records, backend_records, t_term, t_closing,
                                "client->backend")
    down, down_lost = check_streams(backend_records, client_records, t_term, t_closing,
                                    "backend->client")

    assert exit_seconds <= LOAD_DRAIN + LOAD_CLOSE + 1.0, (
        f"wsgate exited {exit_seconds:.2f}s after SIGTERM")
    shutting = [line for line in gate.access_lines() if 'reason="server shutting down"' in line]
    assert len(shutting) == n, f"{len(shutting)} access lines with the drain reason"
    assert all(access_fields(line).get("closed_by") == "proxy" for line in shutting)
    print(f"\n[drain-1000] connections={n} connect={connect_seconds:.2f}s "
          f"not_ready_after={not_ready_after:.3f}s refused_after={refused_after:.3f}s "
          f"first_close={first_close:.3f}s "
          f"last_close={last_close:.3f}s exit={exit_seconds:.3f}s "
          f"msgs up={sum(up)} (min/conn {min(up)}) down={sum(down)} (min/conn {min(down)}) "
          f"first-undelivered-sent-at(rel. first close) up={lost_text(up_lost)} "
          f"down={lost_text(down_lost)}")


@async_test(timeout=30)
async def test_drain_ends_when_connections_end_by_themselves(gates):
    """With a 30s drain, wsgate exits 0 as soon as the last connection closes by itself."""
    echo = await EchoBackend().start()
    gate = await gates.launch(drain_config(pools={"p": [echo.address]},
                                           timeouts={"drain": "30s"}))
    ws = await ws_connect(gate.url("/self-closing"))
    await echo_ok(ws)
    gate.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: tcp_refused(gate.port), 3, "listener close after SIGTERM")
    await echo_ok(ws, "connection during the drain")
    t_close = time.monotonic()
    await ws.close(1000)
    exit_at = await wait_exit(gate, 5)
    assert gate.proc.returncode == 0
    assert exit_at - t_close < 1.0, f"exited {exit_at - t_close:.2f}s after the last close"
    # The refused-connect probes above may have been accepted just before the listener closed;
    # they log their own access lines (status=0), so look at the upgraded connection only.
    [line] = [entry for entry in gate.access_lines() if " status=101 " in entry]
    assert access_fields(line).get("closed_by") == "client", line


# ------------------------------------------------------------------------------------------
# 2. drain.spread
# ------------------------------------------------------------------------------------------

@async_test(timeout=60)
async def test_drain_spread_spreads_the_closes(gates, tmp_path):
    """80 connections, spread 2s: closes start after timeouts.drain and are spread evenly."""
    n, drain, spread = 80, 1.0, 2.0
    backend = await StreamPeer.start(tmp_path, "server", interval=0.5)
    gate = await gates.launch(drain_config(
        pools={"stream": [backend.address]}, drain={"spread": "2s"},
        timeouts={"drain": "1s", "close": "2s"}))
    clients = await StreamPeer.start(tmp_path, "client", port=gate.port, count=n, interval=0.5)
    await clients.wait_line("connected", 20)
    t_term = time.monotonic()
    gate.proc.send_signal(signal.SIGTERM)
    await clients.wait_line("closed", drain + spread + 10)
    exit_at = await wait_exit(gate, 5)
    assert gate.proc.returncode == 0
    records = await clients.stop()
    backend_records = await backend.stop()
    assert collections.Counter(r["close_code"] for r in records) == {1001: n}
    assert collections.Counter(r["close_code"] for r in backend_records) == {1001: n}
    times = sorted(r["close_time"] - t_term for r in records)
    assert times[0] >= drain - EARLY_SLACK, f"first close {times[0]:.3f}s after SIGTERM"
    assert times[-1] - times[0] >= 1.5, (
        f"closes only spread over {times[-1] - times[0]:.3f}s: {times}")
    assert times[-1] <= drain + spread + LATE_SLACK, f"last close at {times[-1]:.3f}s"
    buckets = collections.Counter(int((t - times[0]) / 0.2) for t in times)
    assert max(buckets.values()) <= 0.2 * n, f"200 ms buckets: {sorted(buckets.items())}"
    assert exit_at - t_term <= drain + spread + 2.0 + 1.0
    print(f"\n[spread] n={n} first={times[0]:.3f}s last={times[-1]:.3f}s "
          f"max_bucket={max(buckets.values())} exit={exit_at - t_term:.3f}s")


# ------------------------------------------------------------------------------------------
# 3. drain.grace
# ------------------------------------------------------------------------------------------

@async_test(timeout=40)
async def test_grace_keeps_accepting_while_readyz_fails(gates):
    """During drain.grace /readyz is already 503 but new connections still get an echo; the
    listener closes when the grace ends; held connections then get 1001 after timeouts.drain."""
    grace, drain = 2.0, 1.0
    echo = await EchoBackend().start()
    gate = await gates.launch(drain_config(pools={"p": [echo.address]}, drain={"grace": "2s"},
                                           timeouts={"drain": "1s", "close": "2s"}))
    status, body = await admin(gate, "GET", "/readyz")
    assert (status, body.strip()) == (200, "ready")
    held = await ws_connect(gate.url("/held"))
    await echo_ok(held)

    t_term = time.monotonic()
    gate.proc.send_signal(signal.SIGTERM)
    _, body = await wait_not_ready(gate)
    assert body.strip() == "not ready: draining", body
    status, body = await admin(gate, "GET", "/healthz")
    assert (status, body.strip()) == (200, "ok")

    await assert_still_serving(gate, "/during-grace")  # a brand-new connection
    await echo_ok(held, "held connection during grace")
    assert time.monotonic() - t_term < grace - 0.2, "grace checks ran too late to mean much"
    assert not tcp_refused(gate.port), "listener closed during drain.grace"

    await wait_until(lambda: tcp_refused(gate.port), grace + 2, "listener close after grace")
    closed_after = time.monotonic() - t_term
    assert closed_after >= grace - EARLY_SLACK, f"listener closed {closed_after:.3f}s in"
    await echo_ok(held, "held connection after grace")
    await wait_ws_closed(held, grace + drain + 5)
    held_closed = time.monotonic() - t_term
    assert held.close_code == 1001
    assert held_closed >= grace + drain - EARLY_SLACK, f"held closed {held_closed:.3f}s in"
    await wait_exit(gate, 5)
    assert gate.proc.returncode == 0


# ------------------------------------------------------------------------------------------
# 4. close_code 1012 (and SIGINT behaves like SIGTERM)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@async_test(timeout=30)
async def test_close_code_1012(gates, signo):
    """With drain.close_code 1012 clients get 1012 (the backend still gets 1001)."""
    echo = await EchoBackend().start()
    gate = await gates.launch(drain_config(pools={"p": [echo.address]},
                                           drain={"close_code": 1012},
                                           timeouts={"drain": "500ms", "close": "2s"}))
    clients = [await ws_connect(gate.url(f"/c{i}")) for i in range(3)]
    for ws in clients:
        await echo_ok(ws)
    t_term = time.monotonic()
    gate.proc.send_signal(signo)
    for ws in clients:
        await wait_ws_closed(ws, 5)
    assert [ws.close_code for ws in clients] == [1012] * 3
    assert time.monotonic() - t_term >= 0.5 - EARLY_SLACK
    for index in range(3):
        record = await echo.wait_closed_record(index)
        assert record.close_code == 1001, f"backend got {record.close_code}"
    await wait_exit(gate, 5)
    assert gate.proc.returncode == 0
    lines = await gate.wait_for_access_lines(3)
    for line in lines:
        fields = access_fields(line)
        assert fields.get("reason") == '"server shutting down"', line
        assert fields.get("closed_by") == "proxy", line


# ------------------------------------------------------------------------------------------
# 5. a second SIGTERM, or SIGQUIT, stops at once
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["second_sigterm", "sigquit", "sigquit_while_draining"])
@async_test(timeout=30)
async def test_hard_stop(gates, how):
    """Second SIGTERM (or SIGQUIT) during a 30s drain: exit 0 at once, live clients closed."""
    echo = await EchoBackend().start()
    gate = await gates.launch(drain_config(pools={"p": [echo.address]},
                                           timeouts={"drain": "30s", "close": "5s"}))
    client = await RawClient.connect(gate.port)
    await client.handshake("/live")
    await client.send_frame(OP_TEXT, b"before")
    assert (await read_frame(client)).payload == b"before"

    if how != "sigquit":
        gate.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: tcp_refused(gate.port), 3, "listener close after SIGTERM")
        await client.send_frame(OP_TEXT, b"draining")
        assert (await read_frame(client)).payload == b"draining"
        assert gate.alive()
    t_stop = time.monotonic()
    gate.proc.send_signal(signal.SIGQUIT if how.startswith("sigquit") else signal.SIGTERM)
    exit_at = await wait_exit(gate, 5)
    assert gate.proc.returncode == 0
    assert exit_at - t_stop < 1.5, f"took {exit_at - t_stop:.2f}s to stop"
    assert await client.wait_eof(2), "client connection still open after wsgate exited"
    # Close frames are best-effort on a hard stop; one that was sent must say 1001.
    frames = []
    with contextlib.suppress(Exception):
        while True:
            frames.append(await read_frame(client, 0.2))
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    assert all(f.close_code == 1001 for f in closes), [(f.opcode, f.payload) for f in frames]
    print(f"\n[hard-stop {how}] exit={exit_at - t_stop:.3f}s close_frame={bool(closes)}")


# ------------------------------------------------------------------------------------------
# 6. backend drain via the admin API
# ------------------------------------------------------------------------------------------

@async_test(timeout=60)
async def test_admin_backend_drain_and_undrain(gates):
    """Draining one backend: no new connections for it, its live ones close 1001 after
    timeouts.drain (not before), the other backend's connections are untouched; undrain
    brings it back; unknown backends are 404, wrong methods 405."""
    drain = 2.0
    a = await EchoBackend(name="a", greet=True).start()
    b = await EchoBackend(name="b", greet=True).start()
    gate = await gates.launch(drain_config(
        pools={"p": {"balance": "least_conn", "backends": [a.address, b.address]}},
        timeouts={"drain": "2s", "close": "2s"}))

    held = collections.defaultdict(list)
    for _ in range(4):
        ws, name = await connect_named(gate)
        held[name].append(ws)
    assert {k: len(v) for k, v in held.items()} == {"a": 2, "b": 2}
    state = await backends_state(gate)
    assert [state[x]["state"] for x in (a.address, b.address)] == ["healthy", "healthy"]
    assert state[a.address]["active"] == 2 and state[a.address]["pool"] == "p"
    assert state[a.address]["weight"] == 1

    t_drain = time.monotonic()
    status, body = await admin(gate, "POST", f"/admin/backends/p/{a.address}/drain")
    assert status == 200, (status, body)
    reply = json.loads(body)
    assert (reply["address"], reply["pool"], reply["state"]) == (a.address, "p", "draining")
    state = await backends_state(gate)
    assert state[a.address]["state"] == "draining" and state[b.address]["state"] == "healthy"
    assert (await admin(gate, "GET", "/readyz"))[0] == 200  # b is still available

    for i in range(3):  # least_conn would pick a (fewer active after these); it must not
        ws, name = await connect_named(gate, f"/new{i}")
        assert name == "b", f"new connection #{i} went to the draining backend"
        held["b-new"].append(ws)
    for ws in held["a"] + held["b"]:
        await echo_ok(ws, "connection during the backend drain")
    await asyncio.sleep(max(0.0, t_drain + drain - 0.4 - time.monotonic()))
    for ws in held["a"]:
        await echo_ok(ws, "drained backend's connection just before the deadline")

    for ws in held["a"]:
        await wait_ws_closed(ws, drain + 5)
        assert ws.close_code == 1001
    closed_after = time.monotonic() - t_drain
    assert closed_after >= drain - EARLY_SLACK
    assert closed_after <= drain + LATE_SLACK, f"closed {closed_after:.2f}s after the drain"
    for index in range(2):
        assert (await a.wait_closed_record(index)).close_code == 1001
    for ws in held["b"] + held["b-new"]:
        await echo_ok(ws, "other backend's connection after the deadline")
    assert all(c.close_code is None for c in b.connections), "backend b lost connections"
    assert (await backends_state(gate))[a.address]["active"] == 0

    status, body = await admin(gate, "POST", f"/admin/backends/p/{a.address}/undrain")
    assert status == 200 and json.loads(body)["state"] == "healthy", (status, body)
    ws, name = await connect_named(gate, "/after-undrain")
    assert name == "a", "undrained backend got no new connection (least_conn, b has 5)"
    await echo_ok(ws)

    # Every backend of the pool draining: not ready.
    for address in (a.address, b.address):
        assert (await admin(gate, "POST", f"/admin/backends/p/{address}/drain"))[0] == 200
    status, body = await admin(gate, "GET", "/readyz")
    assert status == 503, (status, body)
    for address in (a.address, b.address):
        assert (await admin(gate, "POST", f"/admin/backends/p/{address}/undrain"))[0] == 200
    assert (await admin(gate, "GET", "/readyz"))[0] == 200

    # Errors.
    assert (await admin(gate, "POST", "/admin/backends/p/127.0.0.1:1/drain"))[0] == 404
    assert (await admin(gate, "POST", f"/admin/backends/nopool/{a.address}/drain"))[0] == 404
    assert (await admin(gate, "POST", "/admin/backends/p/127.0.0.1:1/undrain"))[0] == 404
    assert (await admin(gate, "GET", f"/admin/backends/p/{a.address}/drain"))[0] == 405
    assert (await admin(gate, "POST", "/admin/backends"))[0] == 405
    assert (await admin(gate, "POST", "/healthz"))[0] == 405
    assert (await admin(gate, "GET", "/nope"))[0] == 404
    assert (await admin(gate, "GET", "/admin/backends/p"))[0] == 404
    assert (await admin(gate, "POST", f"/admin/backends/p/{a.address}/explode"))[0] == 404
    state = await backends_state(gate)
    assert [state[x]["state"] for x in (a.address, b.address)] == ["healthy", "healthy"]


@async_test(timeout=30)
async def test_admin_token(gates):
    """With admin.token everything but /healthz and /readyz needs the bearer token."""
    echo = await EchoBackend().start()
    gate = await gates.launch(drain_config(pools={"p": [echo.address]}, token="s3cret-t0ken"))
    backends_path = "/admin/backends"
    drain_path = f"/admin/backends/p/{echo.address}/drain"
    assert (await admin(gate, "GET", backends_path))[0] == 401
    assert (await admin(gate, "GET", backends_path, token="wrong"))[0] == 401
    assert (await admin(gate, "GET", backends_path, token="s3cret-t0ken2"))[0] == 401
    assert (await admin(gate, "POST", drain_path))[0] == 401
    assert (await admin(gate, "POST", drain_path, token="nope"))[0] == 401
    assert (await admin(gate, "GET", "/nope"))[0] == 401  # nothing leaks without the token
    state = await backends_state(gate, token="s3cret-t0ken")
    assert state[echo.address]["state"] == "healthy", "an unauthorised drain took effect"
    assert (await admin(gate, "GET", "/healthz"))[0] == 200
    assert (await admin(gate, "GET", "/readyz")) == (200, "ready\n")
    status, body = await admin(gate, "POST", drain_path, token="s3cret-t0ken")
    assert status == 200 and json.loads(body)["state"] == "draining"
    assert (await admin(gate, "GET", "/readyz"))[0] == 503


def test_admin_config_errors(gates):
    """Non-loopback admin without a token, and a close_code other than 1001/1012, are errors."""
    open_admin = drain_config(pools={"p": ["127.0.0.1:9"]})
    open_admin["admin"] = {"address": "0.0.0.0:0", "token": ""}
    path = gates.write_config(open_admin, "open-admin.yaml")
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1, result
    assert re.search(re.escape(path) + r":\d+:\d+: admin[.\w]*: .*token", result.stderr), (
        result.stderr)
    bad_code = drain_config(pools={"p": ["127.0.0.1:9"]}, drain={"close_code": 1000})
    path = gates.write_config(bad_code, "bad-code.yaml")
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1 and "drain.close_code" in result.stderr, result.stderr
    with_token = drain_config(pools={"p": ["127.0.0.1:9"]}, token="t")
    with_token["admin"]["address"] = "0.0.0.0:0"
    result = run_wsgate("--check", "-c", gates.write_config(with_token, "ok.yaml"))
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------
# 7. SIGHUP reload
# ------------------------------------------------------------------------------------------

BROKEN_SYNTAX = """\
workers: 1
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - pool: p
pools: [ { name: p, backends: [ { address: 127.0.0.1:1 } ]
timeouts: {drain: 1s
"""


@async_test(timeout=40)
async def test_reload_invalid_file_keeps_old_config(gates):
    """A broken file (syntax, then semantic errors): every error logged as
    `reload: file:line:col: ...`, 'reload failed', old config keeps serving, nothing dropped."""
    echo = await EchoBackend().start()
    config = drain_config(pools={"p": [echo.address]})
    gate = await gates.launch(config)
    live = await ws_connect(gate.url("/live"))
    await echo_ok(live)
    path_re = re.escape(gate.config_path)

    text = await reload(gate, BROKEN_SYNTAX, gates, expect="reload failed")
    assert re.search(rf"reload: {path_re}:\d+:\d+: ", text), text[-3000:]
    await echo_ok(live, "live connection after a failed reload")
    await assert_still_serving(gate)

    semantic = drain_config(pools={"p": [echo.address]},
                            routes=[{"pool": "missing"}],
                            timeouts={"drain": "soon"})
    semantic["bogus_key"] = 1
    before = gate.stderr_text()
    text = await reload(gate, semantic, gates, expect="reload failed")
    new = text[len(before):]
    errors = re.findall(rf"reload: {path_re}:(\d+):(\d+): (\S+): (.*)", new)
    keys = {key for _, _, key, _ in errors}
    assert {"routes[0].pool", "timeouts.drain", "bogus_key"} <= keys, (
        f"expected one reload: line per error; got {errors}\n{new}")
    assert all(int(line) > 0 and int(col) > 0 for line, col, _, _ in errors)

    await echo_ok(live, "live connection after the second failed reload")
    await assert_still_serving(gate)
    assert (await admin(gate, "GET", "/readyz"))[0] == 200
    assert ready_entries(gate)["public"] == (gate.host, gate.port)
    # The only finished connections are the two still-serving probes.
    assert len(gate.access_lines()) == 2, gate.access_lines()
    assert echo.connections[0].close_code is None


@async_test(timeout=40)
async def test_reload_adds_backend_and_route(gates):
    """A reload adding a backend and a pool/route: new connections use them, the live
    connection keeps its backend."""
    a = await EchoBackend(name="a", greet=True).start()
    b = await EchoBackend(name="b", greet=True).start()
    c = await EchoBackend(name="c", greet=True).start()
    gate = await gates.launch(drain_config(
        pools={"p": {"balance": "least_conn", "backends": [a.address]}}))
    live, name = await connect_named(gate)
    assert name == "a"

    await reload(gate, drain_config(
        pools={"p": {"balance": "least_conn", "backends": [a.address, b.address]},
               "q": [c.address]},
        routes=[{"match": {"path_prefix": "/q"}, "pool": "q"}, {"pool": "p"}]), gates)
    ws, name = await connect_named(gate, "/new")
    assert name == "b", "the added backend got no new connection (least_conn, a is busy)"
    ws2, name = await connect_named(gate, "/q/room")
    assert name == "c", "the added route/pool is not used"
    await echo_ok(live, "live connection across the reload")
    assert a.connections[0].close_code is None
    state = await backends_state(gate)
    assert state[b.address]["state"] == "healthy" and state[c.address]["pool"] == "q"
    assert state[a.address]["active"] == 1


@async_test(timeout=40)
async def test_reload_removes_backend(gates):
    """A reload removing a backend: its live client gets 1001 after timeouts.drain, the other
    backend's client is untouched, new connections avoid it."""
    drain = 2.0
    a = await EchoBackend(name="a", greet=True).start()
    b = await EchoBackend(name="b", greet=True).start()
    pools_ab = {"p": {"balance": "least_conn", "backends": [a.address, b.address]}}
    timeouts = {"drain": "2s", "close": "2s"}
    gate = await gates.launch(drain_config(pools=pools_ab, timeouts=timeouts))
    held = {}
    for _ in range(2):
        ws, name = await connect_named(gate)
        held[name] = ws
    assert set(held) == {"a", "b"}

    t_reload = time.monotonic()
    await reload(gate, drain_config(pools={"p": [b.address]}, timeouts=timeouts), gates)
    # Checked at the end, so the drain behaviour below is verified either way.
    state = await backends_state(gate)
    listing_problem = None
    if state.get(a.address, {}).get("state") != "removed":
        listing_problem = (f"removed backend {a.address} (1 live connection) is not listed as "
                           f"state 'removed' by /admin/backends: {list(state.values())}")
    for i in range(2):
        ws, name = await connect_named(gate, f"/new{i}")
        assert name == "b"
    await echo_ok(held["a"], "removed backend's connection before the deadline")
    await wait_ws_closed(held["a"], drain + 5)
    closed_after = time.monotonic() - t_reload
    assert held["a"].close_code == 1001
    assert drain - EARLY_SLACK <= closed_after <= drain + LATE_SLACK, closed_after
    assert (await a.wait_closed_record(0)).close_code == 1001
    await echo_ok(held["b"], "kept backend's connection after the deadline")
    assert b.connections[0].close_code is None
    assert listing_problem is None, listing_problem


@async_test(timeout=40)
async def test_reload_adds_and_removes_listener(gates):
    """A reload adding a listener: it accepts and the ready file lists it; the kept listener
    keeps its socket and never refuses a client looping through the reload. Removing it again
    closes it."""
    echo = await EchoBackend().start()
    config = drain_config(pools={"p": [echo.address]})
    gate = await gates.launch(config)
    public = ready_entries(gate)["public"]

    stop = asyncio.Event()
    outcomes = collections.Counter()

    async def client_loop():
        while not stop.is_set():
            try:
                ws = await ws_connect(gate.url("/loop"), open_timeout=3)
                await echo_ok(ws)
                await ws.close()
                outcomes["ok"] += 1
            except Exception as err:  # recorded: any failure fails the test below
                outcomes[f"{type(err).__name__}: {err}"] += 1

    loop_task = asyncio.ensure_future(client_loop())
    await wait_until(lambda: outcomes["ok"] >= 5, WAIT, "the client loop to run")
    with_extra = drain_config(pools={"p": [echo.address]},
                              listeners=[{"name": "public", "address": "127.0.0.1:0"},
                                         {"name": "extra", "address": "127.0.0.1:0"}])
    ok_before = outcomes["ok"]
    await reload(gate, with_extra, gates)
    await wait_until(lambda: outcomes["ok"] >= ok_before + 5, WAIT, "the loop after reload")
    entries = ready_entries(gate)
    assert "extra" in entries, f"ready file not rewritten with the new listener: {entries}"
    assert entries["public"] == public, "the kept listener changed its address"
    gate.listeners = {k: v for k, v in entries.items() if k != "_admin"}
    ws = await ws_connect(gate.url("/x", listener="extra"))
    await echo_ok(ws, "connection on the added listener")
    await ws.close()

    ok_before = outcomes["ok"]
    await reload(gate, config, gates)
    await wait_until(lambda: outcomes["ok"] >= ok_before + 5, WAIT, "the loop after reload 2")
    stop.set()
    await asyncio.wait_for(loop_task, WAIT)
    entries = ready_entries(gate)
    assert "extra" not in entries, entries
    assert tcp_refused(gate.listeners["extra"][1]), "removed listener still accepts"
    assert set(outcomes) == {"ok"}, f"client loop through the reloads: {dict(outcomes)}"
    print(f"\n[reload-listener] loop connections ok={outcomes['ok']}")
