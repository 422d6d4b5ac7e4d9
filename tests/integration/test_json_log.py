"""log.format json: every line wsgate writes to stderr is one JSON object with time, level and
msg; access lines use the text format's field names with numbers as numbers."""

import json
import re
import signal

from harness import (EchoBackend, RawClient, assert_rejected, assert_still_serving, async_test,
                     closed_port, make_config, read_http_response, recv, run_wsgate,
                     upgrade_request, wait_until, ws_connect)

LEVELS = {"debug", "info", "warn", "error"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACCESS_TYPES = {
    "id": str, "client": str, "listener": str, "path": str, "status": int, "duration": float,
    "bytes_in": int, "bytes_out": int, "msgs_in": int, "msgs_out": int, "pushed": int,
    "moves": int, "close_code": int,
    "reason": str}


def json_lines(gate):
    """Every stderr line, parsed; fails on the first that is not one JSON object."""
    # Strict: the bytes must be UTF-8, as JSON text must.
    with open(gate.stderr_path, "rb") as f:
        text = f.read().decode("utf-8")
    objects = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError as error:
            raise AssertionError(f"not a JSON line ({error}): {line!r}") from None
        assert isinstance(value, dict), line
        assert isinstance(value.get("time"), str) and TIME.match(value["time"]), line
        assert value.get("level") in LEVELS, line
        assert isinstance(value.get("msg"), str) and value["msg"], line
        objects.append(value)
    return objects


def access_of(gate):
    return [o for o in json_lines(gate) if o["msg"] == "access"]


def json_config(pools, **kwargs):
    config = make_config(pools=pools, **kwargs)
    config["log"] = {"format": "json"}
    return config


@async_test(timeout=60)
async def test_every_stderr_line_is_a_json_object(gates):
    """Start-up, access, warning, rejected-handshake (debug) and reload lines are all JSON."""
    echo = await EchoBackend().start()
    config = json_config(
        pools={"app": [echo.address], "dead": [f"127.0.0.1:{closed_port()}"]},
        routes=[{"match": {"path_prefix": "/dead"}, "pool": "dead"}, {"pool": "app"}],
        retries=0)
    gate = await gates.launch(config, log_level="debug")
    lines = json_lines(gate)
    assert any(o["msg"].startswith("wsgate ") and o["msg"].endswith(" started") for o in lines)

    # An access line with every field, numbers as numbers.
    ws = await ws_connect(gate.url("/chat?room=1"))
    await ws.send("hello")
    assert await recv(ws) == "hello"
    await ws.close(1000)
    await wait_until(lambda: len(access_of(gate)) >= 1, what="a JSON access line")
    [line] = access_of(gate)
    for name, kind in ACCESS_TYPES.items():
        assert isinstance(line.get(name), kind), f"{name}: {line!r}"
    assert line["level"] == "info"
    assert line["route"] == 1  # a number, the index of the matching route
    assert line["pool"] == "app" and line["backend"] == echo.address
    assert line["status"] == 101 and line["close_code"] == 1000
    assert line["closed_by"] == "client"
    assert line["msgs_in"] == 1 and line["msgs_out"] == 1
    assert line["path"] == "/chat"
    assert "type" not in line and "duration_seconds" not in line

    # A backend that refuses: a warning, and an access line with the 502.
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/dead"))
    assert (await read_http_response(client)).status == 502
    client.close()
    await wait_until(lambda: any(o["level"] == "warn" for o in json_lines(gate)),
                     what="a JSON warning line")

    # A refused handshake: its debug line quotes the reason (reason="bad start line") and the
    # request carried a quote, a backslash and a byte that is not UTF-8: still valid JSON.
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path='/we"ird\\p\xffth', drop=["Sec-WebSocket-Key"]))
    await assert_rejected(client, 400)
    await wait_until(lambda: any(o.get("status") == 400 for o in access_of(gate)),
                     what="the 400 access line")
    rejected = [o for o in access_of(gate) if o["status"] == 400][0]
    assert rejected["route"] is None and rejected["pool"] is None  # absent: null, not "-"
    assert rejected["closed_by"] == "proxy" and rejected["reason"] == "bad start line"
    assert any(o["level"] == "debug" and 'reason="bad start line"' in o["msg"]
               for o in json_lines(gate))
    assert any(o["level"] == "debug" for o in json_lines(gate))

    # Reload messages too.
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any(o["msg"] == "reload complete" for o in json_lines(gate)),
                     what="the reload line")
    await assert_still_serving(gate)
    assert len(json_lines(gate)) >= 10


@async_test(timeout=30)
async def test_failed_reload_errors_are_json(gates, tmp_path):
    """A reload with a broken file: its errors, file:line:column included, are JSON lines."""
    echo = await EchoBackend().start()
    gate = await gates.launch(json_config(pools={"app": [echo.address]}))
    with open(gate.config_path) as f:
        text = f.read()
    with open(gate.config_path, "w") as f:
        f.write(text + "bogus_key: 1\n")
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any(o["level"] == "error" and "bogus_key: unknown key" in o["msg"]
                                 for o in json_lines(gate)), what="the reload error line")
    await assert_still_serving(gate)


def test_start_up_errors_after_loading_are_json(tmp_path):
    """A certificate file that cannot be read stops the start with JSON error lines (exit 1);
    --check on the same file answers in text, for a person."""
    path = tmp_path / "tls.yaml"
    path.write_text("listeners:\n"
                    "  - name: secure\n"
                    "    address: 127.0.0.1:0\n"
                    "    tls: {certificates: [{cert: missing.crt, key: missing.key}]}\n"
                    "routes: [{pool: app}]\n"
                    "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n"
                    "log: {format: json}\n")
    result = run_wsgate("-c", str(path))
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all(o["level"] == "error" and TIME.match(o["time"]) for o in lines), lines
    assert any("missing.crt" in o["msg"] and f"{path}:4:" in o["msg"] for o in lines), lines
    check = run_wsgate("--check", "-c", str(path))
    assert check.returncode == 1 and check.stderr.startswith(f"{path}:4:"), check.stderr
