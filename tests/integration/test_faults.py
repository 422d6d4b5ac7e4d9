"""Fault injection: slowloris, descriptor exhaustion, connect storms, bad close frames,
half-closed and reset clients, silent and garbage-speaking backends.

Every wait is bounded. Figures (connections held, CPU time, timing spreads, latencies) are
printed with ``[faults]`` so ``pytest -s`` shows them.
"""

import asyncio
import contextlib
import os
import resource
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

import pytest
import websockets

from harness import (OP_BINARY, OP_CLOSE, OP_TEXT, WSGATE_BIN, DemoBackendProcess,
                     EchoBackend, Gate, RawClient, ScriptedBackend, assert_rejected,
                     assert_still_serving, async_test, backend_accept, backend_expect_close,
                     close_payload, closed_port, encode_frame, make_config, read_frame,
                     read_http_request, read_until_close, upgrade_request, wait_until)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def report(text):
    print(f"\n[faults] {text}")


def with_bad_pool(bad_address, good, **options):
    """/bad -> the misbehaving backend, everything else -> the good echo backend."""
    return make_config(pools={"bad": [bad_address], "good": [good.address]},
                       routes=[{"match": {"path_prefix": "/bad"}, "pool": "bad"},
                               {"pool": "good"}], **options)


def cpu_ticks(pid):
    """utime + stime of a process in clock ticks (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the full line


def open_fds(pid):
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


async def launch_limited(gates, config, nofile):
    """Start wsgate by hand with RLIMIT_NOFILE = nofile; the `gates` fixture still stops it."""
    index = len(gates.gates)
    config_path = gates.write_config(config, f"wsgate-{index}.yaml")
    base = os.path.join(gates.tmp_path, f"wsgate-{index}")
    ready, stderr_path, stdout_path = base + ".ready", base + ".stderr", base + ".stdout"
    with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            [WSGATE_BIN, "-c", config_path, "--ready-file", ready, "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
    gate = Gate(proc, config_path, ready, stderr_path, stdout_path)
    gates.gates.append(gate)
    await wait_until(lambda: gate.poll_ready(1), 10, "ready file of the limited wsgate")
    return gate


# ------------------------------------------------------------------------------------------
# Lightweight storm client (plain asyncio streams; no per-connection helper tasks)
# ------------------------------------------------------------------------------------------

@dataclass
class Attempt:
    outcome: str  # upgraded | status | closed | reset | refused | garbage | hang
    elapsed: float
    status: int = None
    reader: object = None
    writer: object = None
    detail: str = ""


async def attempt_upgrade(port, timeout, path="/"):
    """Connect, send an upgrade request, classify what happens within ``timeout`` seconds."""
    started = time.monotonic()
    writer = None

    def done(outcome, **kw):
        return Attempt(outcome, time.monotonic() - started, **kw)

    def drop():
        if writer is not None:
            writer.transport.abort()

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(upgrade_request(path=path))
        await asyncio.wait_for(writer.drain(), max(0.01, timeout - (time.monotonic() - started)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                      max(0.01, timeout - (time.monotonic() - started)))
    except asyncio.TimeoutError:
        drop()
        return done("hang")
    except ConnectionRefusedError as err:
        return done("refused", detail=repr(err))
    except asyncio.IncompleteReadError as err:
        drop()
        return done("closed", detail=repr(err.partial[:80]))
    except (OSError, asyncio.LimitOverrunError) as err:  # reset, broken pipe, ...
        drop()
        return done("reset", detail=repr(err))
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        drop()
        return done("garbage", detail=line[:80])
    status = int(parts[1])
    if status == 101:
        return done("upgraded", status=101, reader=reader, writer=writer)
    drop()
    return done("status", status=status, detail=line)


async def read_server_text(reader, timeout=5.0):
    """One short unmasked text frame from the server side."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), timeout)
    assert b0 == 0x81 and b1 < 126, (b0, b1)
    return await asyncio.wait_for(reader.readexactly(b1), timeout)


async def echo_over(reader, writer, token, timeout=5.0):
    """One masked text frame out, the same text back (unmasked) within ``timeout``."""
    writer.write(encode_frame(OP_TEXT, token))
    await asyncio.wait_for(writer.drain(), timeout)
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), timeout)
    assert b0 == 0x81 and b1 == len(token), (b0, b1)
    payload = await asyncio.wait_for(reader.readexactly(b1), timeout)
    assert payload == token, payload


# ------------------------------------------------------------------------------------------
# 1. Slowloris
# ------------------------------------------------------------------------------------------

SLOW_CLIENTS = 500


@async_test(timeout=40)
async def test_slowloris_gets_408_at_handshake_timeout_while_others_are_served(gates):
    """500 heads trickling in 1 byte/s: each gets 408 and is closed ~2 s after connecting;
    a normal client keeps getting handshakes and echoes in under 500 ms meanwhile."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          timeouts={"handshake": "2s"}))
    request = upgrade_request(path="/slowloris")
    results = []

    async def slow_client():
        began = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", gate.port), 5)
        except (OSError, asyncio.TimeoutError) as err:
            results.append(("connect_failed", None, None, None, repr(err)))
            return
        connected = time.monotonic()

        async def drip():
            with contextlib.suppress(OSError):
                for index in range(len(request)):
                    writer.write(request[index:index + 1])
                    await writer.drain()
                    await asyncio.sleep(1)

        dripping = asyncio.create_task(drip())
        data, outcome = b"", "eof"
        try:
            deadline = connected + 8
            while True:
                chunk = await asyncio.wait_for(reader.read(65536),
                                               max(0.01, deadline - time.monotonic()))
                if not chunk:
                    break
                data += chunk
        except asyncio.TimeoutError:
            outcome = "hang"
        except OSError:
            outcome = "reset"
        closed = time.monotonic()
        dripping.cancel()
        with contextlib.suppress(BaseException):
            await dripping
        writer.transport.abort()
        # wsgate's clock starts at accept, somewhere between `began` and `connected` (this
        # loop may see 500 completions late): judge "too early" from `began`, "too late"
        # from `connected`.
        results.append((outcome, data.split(b"\r\n", 1)[0], closed - began,
                        closed - connected, ""))

    probe_errors = []

    async def probe():
        """Handshake + one echo with a normal client; the latency (inf if it failed)."""
        started = time.monotonic()
        try:
            async with websockets.connect(gate.url("/probe"), compression=None, open_timeout=5,
                                          close_timeout=2, ping_interval=None) as ws:
                token = "probe-" + os.urandom(4).hex()
                await ws.send(token)
                assert await asyncio.wait_for(ws.recv(), 5) == token
                return time.monotonic() - started
        except Exception as err:  # noqa: BLE001 - a failed probe is the finding
            probe_errors.append(repr(err))
            return float("inf")

    attack = [asyncio.create_task(slow_client()) for _ in range(SLOW_CLIENTS)]
    latencies = []
    attack_started = time.monotonic()
    await asyncio.sleep(0.2)
    # Probe through the whole attack, including the moment the 408 wave goes out (~2 s).
    while len(results) < SLOW_CLIENTS and time.monotonic() - attack_started < 6:
        latencies.append(await probe())
        await asyncio.sleep(0.2)
    await asyncio.wait_for(asyncio.gather(*attack), 15)

    outcomes = {}
    for outcome, line, *_ in results:
        key = (outcome, line)
        outcomes[key] = outcomes.get(key, 0) + 1
    from_began = sorted(r[2] for r in results if r[2] is not None)
    from_connected = sorted(r[3] for r in results if r[3] is not None)
    report(f"slowloris: {len(results)} clients, outcomes {outcomes}; closed after connect "
           f"began {from_began[0]:.2f}..{from_began[-1]:.2f}s, after connect completed "
           f"{from_connected[0]:.2f}..{from_connected[-1]:.2f}s (median "
           f"{from_connected[len(from_connected) // 2]:.2f}s); probe latencies (ms) "
           f"{[round(x * 1000) for x in latencies]}")
    assert len(results) == SLOW_CLIENTS
    bad = [r for r in results if r[0] != "eof" or not r[1].startswith(b"HTTP/1.1 408")]
    assert not bad, f"{len(bad)} slow clients did not get 408 + close: {bad[:5]}"
    early = [t for t in from_began if t < 1.8]
    assert not early, f"{len(early)} closed less than 1.8 s after connecting: {early[:10]}"
    late = [t for t in from_connected if t > 4.0]
    assert not late, f"{len(late)} closed more than 4 s after connecting: {late[:10]}"
    assert len(latencies) >= 5, f"only {len(latencies)} probes ran during the attack"
    slow = [x for x in latencies if x >= 0.5]
    assert not slow, f"normal-client latency during slowloris: {latencies} {probe_errors}"
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# 2. Descriptor exhaustion
# ------------------------------------------------------------------------------------------

EXHAUST_CLIENTS = 1000


@async_test(timeout=75)
async def test_descriptor_exhaustion_fails_cleanly_without_spinning_and_recovers(gates):
    """RLIMIT_NOFILE 256, 1,000 clients at once: ~110 are held and echo, the rest get a quick
    503 (wsgate refuses before its descriptors run out, so no session fails for want of a
    backend socket), nothing hangs or spins, and wsgate recovers."""
    echo = await EchoBackend().start()
    gate = await launch_limited(
        gates, make_config(pools={"p": [echo.address]}, limits={"max_connections": 10000}),
        nofile=256)
    pid = gate.proc.pid
    with open(f"/proc/{pid}/limits") as f:
        assert any(line.startswith("Max open files") and line.split()[3] == "256"
                   for line in f), "the descriptor limit did not apply"
    base_fds = open_fds(pid)
    problems = []

    # Phase 1: 1,000 clients at once, one attempt each (5 s bound).
    started = time.monotonic()
    first = await asyncio.wait_for(asyncio.gather(
        *(attempt_upgrade(gate.port, 5.0) for _ in range(EXHAUST_CLIENTS))), 20)
    burst_seconds = time.monotonic() - started
    held = [a for a in first if a.outcome == "upgraded"]
    fds_holding = open_fds(pid)

    # Phase 2: the excess keeps trying (fail, retry after 50 ms) over a 2 s CPU window.
    stop = asyncio.Event()
    retries = []

    async def retry_loop():
        while not stop.is_set():
            result = await attempt_upgrade(gate.port, 5.0)
            retries.append(result)
            if result.outcome == "upgraded":
                held.append(result)
                return
            await asyncio.sleep(0.05)

    loops = [asyncio.create_task(retry_loop())
             for _ in range(EXHAUST_CLIENTS - len(held))]
    await asyncio.sleep(0.5)
    ticks_before, window_start = cpu_ticks(pid), time.monotonic()
    await asyncio.sleep(2.0)
    ticks_after, window = cpu_ticks(pid), time.monotonic() - window_start
    fds_during_retries = open_fds(pid)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*loops), 15)
    cpu_seconds = (ticks_after - ticks_before) / CLK_TCK

    def tally(attempts):
        counts = {}
        for item in attempts:
            key = item.outcome if item.outcome != "status" else f"status {item.status}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    stderr = gate.stderr_text()
    accept_lines = [line for line in stderr.splitlines() if "accept failed" in line]
    report(f"EMFILE: base fds {base_fds}; burst of {EXHAUST_CLIENTS} in {burst_seconds:.1f}s: "
           f"{tally(first)}, slowest answer {max(a.elapsed for a in first):.2f}s, wsgate fds "
           f"after it {fds_holding}; {len(retries)} retries: "
           f"{tally(retries)}, fds during them {fds_during_retries}; held {len(held)} in all; "
           f"CPU {cpu_seconds:.2f}s over {window:.2f}s; {len(accept_lines)} 'accept failed' "
           f"lines, e.g. {accept_lines[:1]}")

    if not 90 <= sum(a.outcome == "upgraded" for a in first) <= 125:
        problems.append(f"burst: {sum(a.outcome == 'upgraded' for a in first)} of "
                        f"{EXHAUST_CLIENTS} upgraded (expected ~100-120 held); {tally(first)}")
    for index, attempt in enumerate(held):
        try:
            await echo_over(attempt.reader, attempt.writer, f"held-{index}".encode())
        except (AssertionError, asyncio.TimeoutError, OSError,
                asyncio.IncompleteReadError) as err:
            problems.append(f"held connection {index} stopped echoing: {err!r}")
            break
    everything = first + retries
    hangs = [a for a in everything if a.outcome == "hang"]
    if hangs:
        problems.append(f"{len(hangs)} of {len(everything)} attempts hung 5 s without answer")
    odd = [a for a in everything if a.outcome == "status" and not 500 <= a.status <= 599]
    if odd:
        problems.append(f"non-5xx answers: {[a.detail for a in odd[:5]]}")
    if cpu_seconds >= 0.5:
        problems.append(f"wsgate used {cpu_seconds:.2f}s CPU in {window:.2f}s of EMFILE")
    # wsgate refuses before the limit (a quick 503 that costs no session); if accept() ever did
    # hit EMFILE it must have paused rather than spun.
    if accept_lines and not all("pausing accepts" in line for line in accept_lines):
        problems.append(f"'accept failed' without 'pausing accepts': {accept_lines[:3]}")
    limit_lines = [line for line in stderr.splitlines() if "descriptor limit 256" in line]
    if not limit_lines:
        problems.append("no start-up line naming the descriptor limit")
    if not gate.alive():
        problems.append("wsgate died under descriptor exhaustion")

    # Recovery: close the held connections; new clients are served again.
    for attempt in held:
        attempt.writer.transport.abort()
    deadline = time.monotonic() + 10
    while gate.alive():
        result = await attempt_upgrade(gate.port, 3.0)
        if result.outcome == "upgraded":
            await echo_over(result.reader, result.writer, b"recovered")
            result.writer.transport.abort()
            break
        if time.monotonic() > deadline:
            problems.append(f"not served again 10 s after the held connections closed: "
                            f"{result.outcome} {result.detail}")
            break
        await asyncio.sleep(0.2)
    assert not problems, "; ".join(problems)
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# 3. Connect storm against a pool with dead members
# ------------------------------------------------------------------------------------------

STORM_CLIENTS = 2000


@async_test(timeout=60)
async def test_connect_storm_with_dead_backends_ends_upgraded_or_5xx(gates):
    """2,000 connections at once, pool of 3 where 2 ports are closed, retries 2: every one
    is upgraded and echoes, or gets an explicit 5xx; none hangs 15 s.

    The live backend is examples/demo_backend.py in its own process (greets, then echoes), so
    it does not compete with the 2,000 clients for the pytest process's CPU.
    """
    demo = await DemoBackendProcess(name="storm").start()

    async def drain_stdout():  # one line per finished connection: never let the pipe fill
        while await demo.proc.stdout.read(65536):
            pass

    draining = asyncio.create_task(drain_stdout())
    addresses = [f"127.0.0.1:{closed_port()}", demo.address, f"127.0.0.1:{closed_port()}"]
    gate = await gates.launch(make_config(pools={"p": addresses}, retries=2),
                              log_level="warn")
    outcomes = []

    async def client(index):
        started = time.monotonic()
        result = await attempt_upgrade(gate.port, 15.0)
        if result.outcome == "upgraded":
            try:
                remaining = max(0.5, 15.0 - (time.monotonic() - started))
                greeting = await read_server_text(result.reader, remaining)
                assert greeting.startswith(b"hello from storm"), greeting
                await echo_over(result.reader, result.writer, f"storm-{index}".encode(),
                                remaining)
                result.outcome = "echoed"
            except (AssertionError, asyncio.TimeoutError, OSError,
                    asyncio.IncompleteReadError) as err:
                result.outcome, result.detail = "upgraded_no_echo", repr(err)
            result.writer.transport.abort()
        result.elapsed = time.monotonic() - started
        outcomes.append(result)

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(STORM_CLIENTS))), 40)
    elapsed = time.monotonic() - started
    counts = {}
    for item in outcomes:
        key = item.outcome if item.outcome != "status" else f"status {item.status}"
        counts[key] = counts.get(key, 0) + 1
    times = sorted(a.elapsed for a in outcomes)
    failures = [line.partition(" attempt ")[2] for line in gate.stderr_text().splitlines()
                if " attempt " in line and " failed: " in line]
    reasons = {}
    for text in failures:
        reasons[text] = reasons.get(text, 0) + 1
    report(f"connect storm: {len(outcomes)} clients in {elapsed:.1f}s: {counts}; time to "
           f"outcome median {times[len(times) // 2]:.2f}s max {times[-1]:.2f}s; "
           f"failed backend attempts: {reasons}")
    assert failures, "the closed ports were never tried: the storm did not exercise retries"
    bad = [a for a in outcomes
           if not (a.outcome == "echoed" or (a.outcome == "status" and 500 <= a.status <= 599))]
    assert not bad, (f"{len(bad)} of {STORM_CLIENTS} neither echoed nor got a 5xx: "
                     f"{[(a.outcome, a.status, a.detail, round(a.elapsed, 2)) for a in bad[:8]]}")
    await assert_still_serving(gate, greeting=True)
    draining.cancel()


# ------------------------------------------------------------------------------------------
# 4. Invalid close frames
# ------------------------------------------------------------------------------------------

BAD_CLOSES = {
    "code_1005": (close_payload(1005), 1002),
    "code_1006": (close_payload(1006), 1002),
    "code_999": (close_payload(999), 1002),
    "code_1004": (close_payload(1004), 1002),
    "code_5000": (close_payload(5000), 1002),
    "reason_not_utf8": (struct.pack("!H", 1000) + b"\xff\xfe", 1007),
}


@pytest.mark.parametrize("name", list(BAD_CLOSES))
@async_test(timeout=30)
async def test_client_invalid_close_frame(gates, name):
    """The client gets 1002 (1007 for a non-UTF-8 reason), the backend 1001."""
    payload, expected = BAD_CLOSES[name]
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          timeouts={"close": "2s"}))
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "warm-up")
    assert (await read_frame(client)).payload == b"warm-up"
    await client.send_frame(OP_CLOSE, payload)
    close = await client.expect_close(timeout=5)
    assert close.close_code == expected, f"client got close {close.close_code} {close.payload!r}"
    record = await echo.wait_closed_record(0, timeout=5)
    assert record.close_code == 1001, f"backend got close {record.close_code}"
    await assert_still_serving(gate)


@pytest.mark.parametrize("name", list(BAD_CLOSES))
@async_test(timeout=30)
async def test_backend_invalid_close_frame(gates, name):
    """The backend gets 1002 (1007 for a non-UTF-8 reason), the client 1011."""
    payload, expected = BAD_CLOSES[name]

    async def script(peer):
        await backend_accept(peer)
        warm = await read_frame(peer)
        await peer.write(encode_frame(OP_TEXT, warm.payload, mask=False))
        await peer.write(encode_frame(OP_CLOSE, payload, mask=False))
        return await backend_expect_close(peer, timeout=5)

    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(with_bad_pool(backend.address, good, timeouts={"close": "2s"}))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/bad/close")
    await client.send_frame(OP_TEXT, "warm-up")
    assert (await read_frame(client)).payload == b"warm-up"
    [close] = await backend.wait_results(1, timeout=5)
    assert close.close_code == expected, f"backend got close {close.close_code} {close.payload!r}"
    to_client = await client.expect_close(timeout=5)
    assert to_client.close_code == 1011, (
        f"client got close {to_client.close_code} {to_client.payload!r}")
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# 5. Half-close, reset, TCP close
# ------------------------------------------------------------------------------------------

@async_test(timeout=30)
async def test_client_close_then_shut_wr_still_gets_backend_close_reply(gates):
    """Close frame, then shutdown(SHUT_WR): the backend's close reply still reaches the client."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          timeouts={"close": "2s"}))
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "before half-close")
    assert (await read_frame(client)).payload == b"before half-close"
    await client.send_frame(OP_CLOSE, close_payload(4001, "half"))
    sock = client.writer.get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    record = await echo.wait_closed_record(0, timeout=5)
    assert record.close_code == 4001, f"backend saw close {record.close_code}"
    try:
        reply, _ = await read_until_close(client, timeout=5)
    except AssertionError as err:
        raise AssertionError(
            f"the half-closed client never got the backend's close reply: {err}") from None
    assert reply.close_code == 4001, f"client got close reply {reply.close_code}"
    assert await client.wait_eof(5), "TCP stayed open after the close handshake"
    await assert_still_serving(gate)


@async_test(timeout=40)
async def test_client_reset_while_backend_sends_large_message(gates):
    """RST (SO_LINGER 0) mid large message: the backend gets 1001 or a TCP close."""
    size = 8 * 1024 * 1024

    async def script(peer):
        await backend_accept(peer)
        await read_frame(peer)  # "go"
        peer.writer.write(encode_frame(OP_BINARY, bytes(size), mask=False))
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(peer.writer.drain(), 10)
        try:
            frame, _ = await read_until_close(peer, timeout=10)
        except AssertionError:
            return ("eof" if peer.eof else "nothing", None)
        return ("close", frame.close_code)

    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(with_bad_pool(backend.address, good, timeouts={"close": "2s"}))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/bad/large")
    await client.send_frame(OP_TEXT, "go")
    await wait_until(lambda: len(client.received) > 256 * 1024, 10,
                     "the first part of the large message")
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.abort()
    [(how, code)] = await backend.wait_results(1, timeout=15)
    report(f"client RST after {len(client.received)} bytes of {size}: backend saw {how} {code}")
    assert how == "eof" or (how, code) == ("close", 1001), f"backend saw {how} {code}"
    assert gate.alive()
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_client_tcp_close_without_close_frame_gives_backend_1001(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}))
    client = await RawClient.connect(gate.port)
    await client.handshake()
    await client.send_frame(OP_TEXT, "then silence")
    assert (await read_frame(client)).payload == b"then silence"
    client.close()
    record = await echo.wait_closed_record(0, timeout=5)
    assert record.close_code == 1001, f"backend got close {record.close_code}"
    await assert_still_serving(gate)


# ------------------------------------------------------------------------------------------
# 6. Backend that never answers the upgrade
# ------------------------------------------------------------------------------------------

async def silent(peer):
    """Accept TCP, read the upgrade request, never answer."""
    await peer.wait_eof(30)


@async_test(timeout=30)
async def test_silent_backend_without_retries_is_504(gates):
    backend = await ScriptedBackend(silent).start()
    good = await EchoBackend().start()
    gate = await gates.launch(with_bad_pool(backend.address, good, retries=0,
                                            timeouts={"backend_handshake": "500ms"}))
    client = await RawClient.connect(gate.port)
    started = time.monotonic()
    await client.write(upgrade_request(path="/bad/silent"))
    await assert_rejected(client, 504, timeout=5)
    elapsed = time.monotonic() - started
    report(f"silent backend: 504 after {elapsed:.2f}s (backend_handshake 500ms)")
    assert 0.45 <= elapsed <= 2.0, f"504 after {elapsed:.2f}s"
    assert len(backend.peers) == 1
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_silent_backend_with_one_retry_is_skipped(gates):
    backend = await ScriptedBackend(silent).start()
    good = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"p": {"balance": "round_robin", "backends": [backend.address, good.address]}},
        retries=1, timeouts={"backend_handshake": "500ms"}))
    durations = []
    for index in range(4):
        client = await RawClient.connect(gate.port)
        started = time.monotonic()
        await client.handshake(timeout=5)
        durations.append(time.monotonic() - started)
        await client.send_frame(OP_TEXT, f"served-{index}")
        assert (await read_frame(client)).payload == f"served-{index}".encode()
        client.close()
    report(f"silent backend + retry: handshake times {[round(d, 2) for d in durations]}")
    assert len(backend.peers) >= 1, "the silent backend was never tried"
    assert sum(d >= 0.45 for d in durations) == len(backend.peers), durations


# ------------------------------------------------------------------------------------------
# 7. Garbage from the backend
# ------------------------------------------------------------------------------------------

async def ssh_banner(peer):
    await peer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
    await peer.wait_eof(10)


async def huge_head(peer):
    await read_http_request(peer)
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 4000) for i in range(5))  # ~20 KiB
    await peer.write(head + b"\r\n")
    await peer.wait_eof(10)


@pytest.mark.parametrize("script", [ssh_banner, huge_head], ids=["ssh_banner", "head_over_16k"])
@async_test(timeout=30)
async def test_garbage_from_backend_is_502(gates, script):
    backend = await ScriptedBackend(script).start()
    good = await EchoBackend().start()
    gate = await gates.launch(with_bad_pool(backend.address, good))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/bad/garbage"))
    await assert_rejected(client, 502, timeout=5)
    await assert_still_serving(gate)
