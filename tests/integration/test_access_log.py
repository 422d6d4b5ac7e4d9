"""One access-log line per finished connection, with the documented key=value fields."""

import re

from harness import EchoBackend, async_test, make_config, recv, wait_ws_closed, ws_connect

FIELDS = ("client", "backend", "pool", "duration", "bytes_in", "bytes_out", "msgs_in",
          "msgs_out", "close_code", "closed_by")


def fields_of(line):
    """key=value pairs of a log line as a dict."""
    return dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line))


async def gate_and_backend(gates):
    """wsgate with one echo backend in pool 'chat'."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"chat": [echo.address]}))
    return gate, echo


@async_test(timeout=30)
async def test_access_line_after_client_close(gates):
    """Client closes 1000: one access line with every field, close_code=1000 closed_by=client."""
    gate, echo = await gate_and_backend(gates)
    ws = await ws_connect(gate.url("/logged"))
    for text in ("one", "two", "three"):
        await ws.send(text)
        assert await recv(ws) == text
    await ws.close(1000)
    [line] = await gate.wait_for_access_lines(1)
    fields = fields_of(line)
    missing = [name for name in FIELDS if name not in fields]
    assert not missing, f"access line lacks {missing}: {line}"
    assert fields["client"].startswith("127.0.0.1:")
    assert fields["backend"] == echo.address
    assert fields["pool"] == "chat"
    assert fields["close_code"] == "1000"
    assert fields["closed_by"] == "client"
    assert int(fields["bytes_in"]) > 0 and int(fields["bytes_out"]) > 0
    assert fields["msgs_in"] == fields["msgs_out"] and int(fields["msgs_in"]) >= 3, line


@async_test(timeout=30)
async def test_access_line_after_backend_close(gates):
    """Backend closes 4001: the access line says close_code=4001 closed_by=backend."""
    gate, _ = await gate_and_backend(gates)
    ws = await ws_connect(gate.url())
    await ws.send("!close 4001 later")
    await wait_ws_closed(ws)
    [line] = await gate.wait_for_access_lines(1)
    fields = fields_of(line)
    assert fields.get("close_code") == "4001", line
    assert fields.get("closed_by") == "backend", line


@async_test(timeout=30)
async def test_one_access_line_per_connection(gates):
    """Three finished connections give exactly three access lines."""
    gate, _ = await gate_and_backend(gates)
    for index in range(3):
        ws = await ws_connect(gate.url(f"/n{index}"))
        await ws.send("x")
        await recv(ws)
        await ws.close()
    lines = await gate.wait_for_access_lines(3)
    assert len(lines) == 3, lines
