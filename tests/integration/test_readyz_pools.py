"""/readyz per pool: GET /readyz?pool=NAME answers for one pool, and the plain /readyz ignores
pools marked `optional: true`, so one empty pool does not take the whole instance out of a load
balancer (issue 19)."""

from harness import EchoBackend, assert_still_serving, async_test
from test_metrics import admin, metrics_config


async def drain(gate, pool, backend):
    status, body = await admin(gate, "POST", f"/admin/backends/{pool}/{backend.address}/drain")
    assert status == 200, (status, body)


@async_test(timeout=40)
async def test_optional_pool_is_ignored_by_plain_readyz_and_asked_by_name(gates):
    chat, reports = await EchoBackend().start(), await EchoBackend().start()
    config = metrics_config(pools={"chat": [chat.address], "reports": [reports.address]})
    config["pools"][1]["optional"] = True
    gate = await gates.launch(config)
    for path in ("/readyz", "/readyz?pool=chat", "/readyz?pool=reports"):
        assert await admin(gate, "GET", path) == (200, "ready\n"), path

    await drain(gate, "reports", reports)
    assert await admin(gate, "GET", "/readyz") == (200, "ready\n")
    assert await admin(gate, "GET", "/readyz?pool=chat") == (200, "ready\n")
    status, body = await admin(gate, "GET", "/readyz?pool=reports")
    assert (status, body) == (503, "not ready: pool reports has no available backend\n")

    # Bad questions get a clear answer, and the proxy stays up.
    assert await admin(gate, "GET", "/readyz?pool=nope") == (404, "no pool nope\n")
    for path in ("/readyz?pool=", "/readyz?pool=chat&x=1", "/readyz?x=1"):
        status, body = await admin(gate, "GET", path)
        assert (status, body) == (400, "the only parameter is pool=NAME\n"), path
    await assert_still_serving(gate)

    # A pool that is not optional still decides the plain /readyz.
    await drain(gate, "chat", chat)
    status, body = await admin(gate, "GET", "/readyz")
    assert (status, body) == (503, "not ready: pool chat has no available backend\n")


@async_test(timeout=40)
async def test_without_optional_every_pool_decides_plain_readyz(gates):
    chat, reports = await EchoBackend().start(), await EchoBackend().start()
    gate = await gates.launch(
        metrics_config(pools={"chat": [chat.address], "reports": [reports.address]}))
    await drain(gate, "reports", reports)
    status, body = await admin(gate, "GET", "/readyz")
    assert (status, body) == (503, "not ready: pool reports has no available backend\n")
    assert await admin(gate, "GET", "/readyz?pool=chat") == (200, "ready\n")
