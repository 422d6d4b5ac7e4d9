"""Multi-core workers (`workers: 2`): the main thread accepts and hands each connection to the
worker with the fewest live sessions; drain, reload, admin backend drain and /metrics span every
worker. Worker threads log "worker K: connection on listener=..." at debug level, which is how
these tests see that both workers carry connections.
"""

import asyncio
import collections
import re
import signal
import time

from harness import EchoBackend, async_test, make_config, recv, wait_until, wait_ws_closed, \
    ws_connect
from test_drain import admin, backends_state, connect_named, drain_config, echo_ok, reload, \
    wait_exit
from test_metrics import scrape

WORKERS = 2


def worker_counts(gate):
    """{worker index: connections it took} from the debug log."""
    return collections.Counter(
        int(m.group(1)) for m in re.finditer(r"worker (\d+): connection on listener=",
                                             gate.stderr_text()))


def config(pools, **kwargs):
    return drain_config(pools=pools, workers=WORKERS, **kwargs)


async def gather_batched(coros, batch=50):
    results = []
    for i in range(0, len(coros), batch):
        results += await asyncio.gather(*coros[i:i + batch])
    return results


@async_test(timeout=120)
async def test_echo_200_concurrent_clients_over_both_workers(gates):
    backend = await EchoBackend().start()
    gate = await gates.launch(config({"p": [backend.address]}), log_level="debug")
    assert f"{WORKERS} worker threads" in gate.stderr_text()

    async def one_client(index):
        ws = await ws_connect(gate.url(f"/c/{index}"))
        for round_ in range(5):
            message = f"{index}:{round_}:" + "x" * (index * 7 % 3000)
            await ws.send(message)
            assert await recv(ws) == message
        return ws

    clients = await asyncio.gather(*(one_client(i) for i in range(200)))
    assert len(backend.connections) == 200
    counts = worker_counts(gate)
    assert sum(counts.values()) == 200, counts
    # Least-loaded hand-off: with all 200 open at once both workers carry about half.
    assert set(counts) == set(range(WORKERS)), counts
    assert min(counts.values()) >= 60, counts
    for ws in clients:
        await ws.close()


@async_test(timeout=120)
async def test_least_conn_stays_within_one_across_workers(gates):
    backends = [await EchoBackend(name=f"b{i}", greet=True).start() for i in range(3)]
    addresses = [b.address for b in backends]
    gate = await gates.launch(config({"p": {"balance": "least_conn", "backends": addresses}}),
                              log_level="debug")
    held = collections.defaultdict(list)

    async def open_some(n):
        for ws, name in await asyncio.gather(*(connect_named(gate) for _ in range(n))):
            held[name].append(ws)

    async def check():
        state = await backends_state(gate)
        counts = [state[a]["active"] for a in addresses]
        assert max(counts) - min(counts) <= 1, counts
        return counts

    async def wait_total(total):
        deadline = time.monotonic() + 10
        while True:
            state = await backends_state(gate)
            if sum(state[a]["active"] for a in addresses) == total:
                return
            assert time.monotonic() < deadline, f"active never summed to {total}: {state}"
            await asyncio.sleep(0.02)

    async def close_one_each():
        for name in list(held):
            await held[name].pop().close()

    await open_some(30)
    assert sum(await check()) == 30
    for _ in range(5):
        # Connections go (one per backend, so the pool stays balanced) and new ones come.
        await close_one_each()
        await wait_total(27)
        await open_some(6)
        assert sum(await check()) == 33
        await close_one_each()
        await wait_total(30)
        await check()
    counts = worker_counts(gate)
    assert set(counts) == set(range(WORKERS)), counts
    for sockets in held.values():
        for ws in sockets:
            await ws.close()


@async_test(timeout=120)
async def test_sigterm_drains_400_connections_on_both_workers(gates):
    backend = await EchoBackend().start()
    gate = await gates.launch(config({"p": [backend.address]},
                                     timeouts={"drain": "1s", "close": "5s"}),
                              log_level="debug")
    clients = await gather_batched([ws_connect(gate.url(f"/d/{i}")) for i in range(400)])
    await wait_until(lambda: backend.active == 400, 20, "400 backend connections")
    await asyncio.gather(*(echo_ok(ws) for ws in clients[:50]))
    counts = worker_counts(gate)
    assert set(counts) == set(range(WORKERS)) and min(counts.values()) >= 150, counts

    gate.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*(wait_ws_closed(ws, timeout=20) for ws in clients))
    codes = collections.Counter(ws.close_code for ws in clients)
    assert codes == {1001: 400}, codes
    await wait_exit(gate, 20)
    assert gate.proc.returncode == 0
    assert "drain: all connections closed" in gate.stderr_text()


@async_test(timeout=120)
async def test_reload_reaches_every_worker(gates):
    a = await EchoBackend(name="a", greet=True).start()
    b = await EchoBackend(name="b", greet=True).start()
    first = config({"p": {"balance": "least_conn", "backends": [a.address]}})
    gate = await gates.launch(first, log_level="debug")
    held = [ws for ws, name in await asyncio.gather(*(connect_named(gate) for _ in range(10)))]
    before = worker_counts(gate)

    second = config({"p": {"balance": "least_conn", "backends": [a.address, b.address]}})
    await reload(gate, second, gates)
    # a holds 10: least_conn on every worker's new generation sends the next 10 to b.
    names = collections.Counter()
    for ws, name in await asyncio.gather(*(connect_named(gate) for _ in range(10))):
        names[name] += 1
        held.append(ws)
    assert names == {"b": 10}, names
    after = worker_counts(gate)
    assert all(after[w] > before[w] for w in range(WORKERS)), (before, after)
    for ws in held:
        await echo_ok(ws)
        await ws.close()


@async_test(timeout=120)
async def test_admin_backend_drain_reaches_both_workers(gates):
    a = await EchoBackend(name="a", greet=True).start()
    b = await EchoBackend(name="b", greet=True).start()
    gate = await gates.launch(config({"p": {"balance": "least_conn",
                                            "backends": [a.address, b.address]}},
                                     timeouts={"drain": "500ms", "close": "2s"}),
                              log_level="debug")
    held = collections.defaultdict(list)
    for ws, name in await asyncio.gather(*(connect_named(gate) for _ in range(40))):
        held[name].append(ws)
    assert {k: len(v) for k, v in held.items()} == {"a": 20, "b": 20}
    counts = worker_counts(gate)
    assert set(counts) == set(range(WORKERS)), counts

    status, body = await admin(gate, "POST", f"/admin/backends/p/{a.address}/drain")
    assert status == 200, (status, body)
    await asyncio.gather(*(wait_ws_closed(ws, timeout=10) for ws in held["a"]))
    assert collections.Counter(ws.close_code for ws in held["a"]) == {1001: 20}
    for ws in held["b"]:
        await echo_ok(ws, "connection on the other backend")
    state = await backends_state(gate)
    assert state[a.address]["active"] == 0 and state[b.address]["active"] == 20, state
    # New connections avoid the drained backend on every worker.
    for ws, name in await asyncio.gather(*(connect_named(gate) for _ in range(10))):
        assert name == "b"
        await ws.close()
    for ws in held["b"]:
        await ws.close()


@async_test(timeout=120)
async def test_metrics_sum_every_worker(gates):
    backend = await EchoBackend().start()
    gate = await gates.launch(config({"p": [backend.address]}), log_level="debug")
    before = await scrape(gate)
    n, rounds, size = 40, 5, 100

    async def one_client(index):
        ws = await ws_connect(gate.url(f"/m/{index}"))
        for _ in range(rounds):
            await ws.send("y" * size)
            assert await recv(ws) == "y" * size
        await ws.close()

    await asyncio.gather(*(one_client(i) for i in range(n)))
    counts = worker_counts(gate)
    assert set(counts) == set(range(WORKERS)), counts

    def done(s):
        return s.get("wsgate_closes_total", pool="p") - before.get("wsgate_closes_total",
                                                                   pool="p") == n
    deadline = time.monotonic() + 10
    after = await scrape(gate)
    while not done(after) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        after = await scrape(gate)
    assert done(after)

    def d(name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)

    assert d("wsgate_connections_total", pool="p") == n
    assert d("wsgate_handshakes_total", result="upgraded") == n
    assert d("wsgate_messages_total", pool="p", direction="client_to_backend") == n * rounds
    assert d("wsgate_messages_total", pool="p", direction="backend_to_client") == n * rounds
    assert d("wsgate_frames_total", pool="p", direction="client_to_backend", opcode="text") == \
        n * rounds
    # Text frames of 100 bytes: 2 header bytes + 4 mask bytes towards the backend.
    text_bytes = n * rounds * (size + 6)
    assert d("wsgate_bytes_total", pool="p", direction="client_to_backend") >= text_bytes
    assert d("wsgate_connection_duration_seconds_count", pool="p") == n
    assert after.get("wsgate_connections_active", pool="p") == 0
    assert after.get("wsgate_build_info") == 1
    # One series per label set even though two registries hold it.
    names = [(name, tuple(sorted(labels.items()))) for name, labels, _ in after.samples]
    assert len(names) == len(set(names)), "duplicate series in /metrics"
