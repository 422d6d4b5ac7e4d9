"""Backend series in /metrics: computed when scraped, so wsgate_backend_up never disagrees with
/readyz and GET /admin/backends (drained, unhealthy, ejected), and the series of a backend a
reload removed disappear once its last connection is gone.
"""

import asyncio
import json
import os
import re
import socket
import time

from harness import (SOURCE_DIR, WAIT, EchoBackend, ScriptedBackend, assert_still_serving,
                     async_test, read_http_request, recv, ws_connect)
from test_balancing import reload
from test_metrics import admin, metrics_config, scrape, wait_metric

BACKEND_FAMILIES = ("wsgate_backend_up", "wsgate_backend_connect_failures_total",
                    "wsgate_connections_active", "wsgate_connections_total")


async def backends_api(gate):
    """{(pool, address): state} from GET /admin/backends."""
    status, body = await admin(gate, "GET", "/admin/backends")
    assert status == 200, (status, body)
    return {(b["pool"], b["address"]): b["state"] for b in json.loads(body)["backends"]}


async def consistent_view(gate):
    """(backends API states, scrape, /readyz status), read while the states did not change
    (the API is read before and after the other two)."""
    for _ in range(20):
        before = await backends_api(gate)
        current = await scrape(gate)
        ready, _ = await admin(gate, "GET", "/readyz")
        if await backends_api(gate) == before:
            return before, current, ready
    raise AssertionError("backend states kept changing between reads")


async def assert_agree(gate, expected_states):
    """The backends API shows ``expected_states``; wsgate_backend_up is 1 exactly for the
    healthy ones; /readyz is 200 exactly when every pool has one."""
    states, current, ready = await consistent_view(gate)
    assert states == expected_states, states
    pools_up = {}
    for (pool, address), state in states.items():
        up = current.series("wsgate_backend_up", pool=pool, backend=address)
        assert [v for _, v in up] == [1.0 if state == "healthy" else 0.0], (
            f"{pool}/{address} is {state} but wsgate_backend_up says {up}")
        pools_up[pool] = pools_up.get(pool, False) or state == "healthy"
    assert ready == (200 if all(pools_up.values()) else 503), (ready, states)
    # No series for a backend the API does not list.
    listed = {(labels["pool"], labels["backend"]) for labels, _ in
              current.series("wsgate_backend_up")}
    assert listed == set(states), (listed, states)


@async_test(timeout=40)
async def test_backend_up_agrees_when_drained_through_the_admin_api(gates):
    """Drain and undrain through the admin API: the very next scrape follows."""
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    await assert_agree(gate, {("p", echo.address): "healthy"})
    for verb, state in (("drain", "draining"), ("undrain", "healthy"),
                        ("drain", "draining"), ("undrain", "healthy")):
        status, body = await admin(gate, "POST", f"/admin/backends/p/{echo.address}/{verb}")
        assert status == 200, (status, body)
        await assert_agree(gate, {("p", echo.address): state})
    await assert_still_serving(gate)


@async_test(timeout=40)
async def test_backend_up_agrees_when_unhealthy(gates):
    """An active health check marks the backend unhealthy, then healthy again."""
    echo = await EchoBackend().start()
    port = echo.port
    config = metrics_config(pools={"p": [echo.address]})
    config["pools"][0]["health_check"] = {"interval": "200ms", "timeout": "150ms", "type": "tcp",
                                          "unhealthy_threshold": 1, "healthy_threshold": 1}
    gate = await gates.launch(config)
    key = ("p", echo.address)
    await wait_until_state(gate, key, "healthy")
    await assert_agree(gate, {key: "healthy"})
    await echo.stop()
    await wait_until_state(gate, key, "unhealthy")
    await assert_agree(gate, {key: "unhealthy"})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    await EchoBackend().start(sock=sock)
    await wait_until_state(gate, key, "healthy")
    await assert_agree(gate, {key: "healthy"})
    await assert_still_serving(gate)


async def wait_until_state(gate, key, state, timeout=WAIT):
    """Poll GET /admin/backends until backend ``key`` is in ``state``."""
    deadline = time.monotonic() + timeout
    while (await backends_api(gate)).get(key) != state:
        assert time.monotonic() < deadline, f"{key} not {state} after {timeout}s"
        await asyncio.sleep(0.025)


REFUSAL = b"no\n"


async def refuse_503(peer):
    """ScriptedBackend: answer every upgrade with 503."""
    await read_http_request(peer)
    await peer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: "
                     + str(len(REFUSAL)).encode() + b"\r\n\r\n" + REFUSAL)
    peer.close()


@async_test(timeout=40)
async def test_backend_up_agrees_when_ejected(gates):
    """Passive outlier ejection, and the return after ejection_time."""
    bad = await ScriptedBackend(refuse_503).start()
    good = await EchoBackend().start()
    config = metrics_config(pools={"o": {"balance": "round_robin",
                                         "backends": [bad.address]},
                                   "g": [good.address]},
                            routes=[{"match": {"path_prefix": "/o"}, "pool": "o"},
                                    {"pool": "g"}], retries=0)
    config["pools"][0]["outlier"] = {"consecutive_failures": 2, "ejection_time": "1500ms"}
    gate = await gates.launch(config)
    states = {("o", bad.address): "healthy", ("g", good.address): "healthy"}
    await assert_agree(gate, states)
    for _ in range(2):
        try:
            await ws_connect(gate.url("/o"))
        except Exception:  # the relayed 503
            pass
    await wait_until_state(gate, ("o", bad.address), "ejected")
    await assert_agree(gate, {**states, ("o", bad.address): "ejected"})
    await wait_until_state(gate, ("o", bad.address), "healthy")
    await assert_agree(gate, states)
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_removed_backend_series_vanish_once_drained(gates):
    """A reload removes a backend that still has a client: its series stay (up 0, state
    removed) while the client is connected and disappear when it leaves; the kept backend's
    series and the pool's own stay."""
    kept = await EchoBackend(name="kept", greet=True).start()
    gone = await EchoBackend(name="gone", greet=True).start()
    config = metrics_config(pools={"p": {"balance": "round_robin",
                                         "backends": [kept.address, gone.address]}})
    config["workers"] = 2
    gate = await gates.launch(config)
    held = None
    for _ in range(4):  # round robin: one of the first two lands on |gone|
        ws = await ws_connect(gate.url("/"))
        if (await recv(ws)).startswith("hello from gone"):
            held = ws
            break
        await ws.close()
    assert held is not None, "no connection reached the backend to remove"
    before = await wait_metric(
        gate, lambda s: s.series("wsgate_backend_up", pool="p", backend=gone.address),
        "the backend's series")
    assert before.get("wsgate_connections_active", backend=gone.address) == 1
    assert before.series("wsgate_backend_up", pool="p", backend=gone.address)

    new_config = metrics_config(pools={"p": {"balance": "round_robin",
                                             "backends": [kept.address]}})
    new_config["workers"] = 2
    await reload(gate, new_config, gates)
    await assert_agree(gate, {("p", kept.address): "healthy", ("p", gone.address): "removed"})
    draining = await scrape(gate)
    assert draining.get("wsgate_connections_active", backend=gone.address) == 1
    await held.send("still here")
    assert await recv(held) == "still here"

    await held.close()
    after = await wait_metric(
        gate, lambda s: not any(s.series(f, backend=gone.address) for f in BACKEND_FAMILIES),
        "the removed backend's series to disappear")
    assert gone.address not in after.text, [l for l in after.text.splitlines()
                                            if gone.address in l]
    assert after.series("wsgate_backend_up", pool="p", backend=kept.address) == [
        ({"pool": "p", "backend": kept.address}, 1.0)]
    assert after.get("wsgate_connections_total", backend=kept.address) >= 1
    assert after.series("wsgate_messages_total", pool="p")
    await assert_agree(gate, {("p", kept.address): "healthy"})
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=30)
async def test_docs_list_exactly_the_exposed_families(gates):
    """docs/metrics.md has one table row for each family /metrics declares, and no other."""
    echo = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"p": [echo.address]}))
    exposed = set((await scrape(gate)).types)
    with open(os.path.join(SOURCE_DIR, "docs", "metrics.md")) as f:
        text = f.read().split("## Access log")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))
    assert exposed == documented, (f"exposed, not documented: {sorted(exposed - documented)}; "
                                   f"documented, not exposed: {sorted(documented - exposed)}")
