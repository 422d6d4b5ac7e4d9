"""Backends changed at runtime through the admin API, as HAProxy's runtime API does (issue 19):
PUT /admin/pools/{pool}/backends/{address}[?weight=N] adds a backend or re-weights one, DELETE
drains and removes it (a migrate pool moves its sessions), and the next reload replaces all of it
with the file."""

import json

from harness import (EchoBackend, assert_still_serving, async_test, recv, wait_until,
                     ws_connect)
from test_drain import reload
from test_metrics import admin, metrics_config


async def backends(gate):
    status, body = await admin(gate, "GET", "/admin/backends")
    assert status == 200, (status, body)
    return {b["address"]: b for b in json.loads(body)["backends"]}


async def greeted_by(gate):
    """Open a client, return (ws, the name of the backend that greeted it)."""
    ws = await ws_connect(gate.url("/"))
    greeting = await recv(ws)
    assert greeting.startswith("hello from "), greeting
    return ws, greeting[len("hello from "):]


@async_test(timeout=60)
async def test_put_adds_and_reweights_delete_drains_and_reload_replaces(gates):
    a = await EchoBackend("a", greet=True).start()
    b = await EchoBackend("b", greet=True).start()
    config = metrics_config(pools={"chat": [a.address]}, timeouts={"drain": "1s", "close": "1s"})
    gate = await gates.launch(config)

    status, body = await admin(gate, "PUT", f"/admin/pools/chat/backends/{b.address}?weight=3")
    assert status == 201, (status, body)
    assert json.loads(body) == {"pool": "chat", "address": b.address, "state": "healthy",
                                "weight": 3, "active": 0}
    # least_conn by weight: with a holding one connection, the next ones go to b.
    first, first_name = await greeted_by(gate)
    second, second_name = await greeted_by(gate)
    assert {first_name, second_name} == {"a", "b"}

    status, body = await admin(gate, "PUT", f"/admin/pools/chat/backends/{b.address}?weight=2")
    assert status == 200 and json.loads(body)["weight"] == 2, (status, body)
    assert (await backends(gate))[b.address]["weight"] == 2

    # DELETE drains: the backend is listed as removed until its connection is gone, and gets no
    # new connection; the connection on it closes at timeouts.drain (this pool does not migrate).
    on_a = first if first_name == "a" else second
    status, body = await admin(gate, "DELETE", f"/admin/pools/chat/backends/{a.address}")
    assert status == 200, (status, body)
    assert json.loads(body)["state"] == "removed"
    for _ in range(3):
        ws, name = await greeted_by(gate)
        assert name == "b"
        await ws.close()
    await wait_until(lambda: on_a.close_code is not None, 15, "the drained connection's close")
    assert on_a.close_code == 1001
    await wait_until(lambda: a.active == 0, 15, "a empty")

    # A reload replaces the runtime changes with the file: a is back, b is gone (removed).
    await reload(gate, config, gates)
    state = await backends(gate)
    assert state[a.address]["state"] == "healthy"
    assert b.address not in state or state[b.address]["state"] == "removed"
    assert "replaced by the file" in gate.stderr_text()
    ws, name = await greeted_by(gate)
    assert name == "a"
    await ws.close()


@async_test(timeout=60)
async def test_delete_in_a_migrate_pool_moves_the_session(gates):
    a = await EchoBackend("a").start()
    b = await EchoBackend("b").start()
    config = metrics_config(pools={"chat": [a.address]}, timeouts={"drain": "30s"})
    config["pools"][0]["migrate"] = True
    gate = await gates.launch(config)
    ws = await ws_connect(gate.url("/"))
    await ws.send("before")
    assert await recv(ws) == "before"
    assert (await admin(gate, "PUT", f"/admin/pools/chat/backends/{b.address}"))[0] == 201
    assert (await admin(gate, "DELETE", f"/admin/pools/chat/backends/{a.address}"))[0] == 200
    await wait_until(lambda: len(b.connections) == 1, 15, "the session moved to b")
    assert b.connections[0].headers.get("X-Wsgate-Resume") == "removed"
    await ws.send("after")
    assert await recv(ws) == "after"
    assert b.connections[0].messages == ["after"]
    assert a.connections[0].messages == ["before"]


@async_test(timeout=40)
async def test_bad_requests_get_clear_answers_and_the_proxy_stays_up(gates):
    a = await EchoBackend().start()
    gate = await gates.launch(metrics_config(pools={"chat": [a.address]}))
    cases = [
        ("PUT", "/admin/pools/nope/backends/127.0.0.1:9", 404, "no pool nope"),
        ("PUT", "/admin/pools/chat/backends/localhost:9", 400,
         'address "localhost:9" must be an IP address with a port (e.g. 10.0.0.7:9000)'),
        ("PUT", "/admin/pools/chat/backends/127.0.0.1", 400,
         'address "127.0.0.1" must be an IP address with a port (e.g. 10.0.0.7:9000)'),
        ("PUT", "/admin/pools/chat/backends/127.0.0.1:9?weight=0", 400,
         "weight must be an integer 1..1000"),
        ("PUT", "/admin/pools/chat/backends/127.0.0.1:9?weight=1001", 400,
         "weight must be an integer 1..1000"),
        ("PUT", "/admin/pools/chat/backends/127.0.0.1:9?weight=2x", 400,
         "weight must be an integer 1..1000"),
        ("PUT", "/admin/pools/chat/backends/127.0.0.1:9?x=1", 400,
         "the only parameter is weight (PUT)"),
        ("DELETE", "/admin/pools/chat/backends/127.0.0.1:9?weight=2", 400,
         "the only parameter is weight (PUT)"),
        ("DELETE", "/admin/pools/chat/backends/127.0.0.1:9", 404,
         "no backend 127.0.0.1:9 in pool chat"),
        ("POST", "/admin/pools/chat/backends/127.0.0.1:9", 405, "use PUT or DELETE"),
    ]
    for method, path, status, error in cases:
        got_status, body = await admin(gate, method, path)
        assert (got_status, json.loads(body)) == (status, {"error": error}), (method, path)
    assert list(await backends(gate)) == [a.address]
    await assert_still_serving(gate)
