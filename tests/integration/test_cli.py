"""Command line: --check, --version, --help, ready file, SIGTERM."""

import asyncio
import glob
import os
import re
import signal
import subprocess

import pytest
import yaml

from harness import (SOURCE_DIR, WAIT, WSGATE_BIN, EchoBackend, Gate, assert_still_serving, async_test,
                     make_config, recv, run_wsgate, start_echo_backends, to_yaml, wait_until,
                     ws_connect)

VALID_YAML = """\
workers: 1
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - match: { host: chat.example.com, path_prefix: /chat }
    pool: chat
  - pool: default
pools:
  - name: chat
    balance: least_conn
    backends: [{address: 127.0.0.1:9001, weight: 1}, {address: 127.0.0.1:9002}]
  - name: default
    backends: [{address: 127.0.0.1:9003}]
limits: {max_connections: 100000, max_header_bytes: 16KiB, max_request_line_bytes: 8KiB, max_message_bytes: 16MiB, allowed_origins: []}
timeouts: {handshake: 10s, connect: 5s, backend_handshake: 5s, idle: 0s, drain: 30s, close: 5s}
retries: 2
"""

# Two semantic errors on known lines: balance (line 8) and the second backend's address (11).
INVALID_YAML = """\
listeners:
  - name: public
    address: 127.0.0.1:0
routes:
  - pool: chat
pools:
  - name: chat
    balance: random
    backends:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:notaport
"""
BALANCE_LINE = 8
ADDRESS_LINE = 11


@pytest.fixture
def config_file(tmp_path):
    """Write YAML text to a file and return its path."""
    def write(text, name="wsgate.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def test_version(wsgate_bin):
    """--version exits 0 and prints a version number."""
    result = run_wsgate("--version")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+\.\d+\.\d+", result.stdout + result.stderr)


def test_help(wsgate_bin):
    """--help exits 0 and documents the options."""
    result = run_wsgate("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    for option in ("-c", "--config", "--listen", "--backend", "--check", "--print-config",
                   "--print-defaults", "--ready-file", "--upgrade-socket", "--log-level",
                   "--version", "--help"):
        assert option in text, f"--help does not mention {option}:\n{text}"


def test_no_arguments_is_an_error(wsgate_bin):
    """Without -c wsgate refuses to run."""
    result = run_wsgate()
    assert result.returncode != 0


def test_check_accepts_valid_config(wsgate_bin, config_file):
    """--check on the full example schema exits 0."""
    result = run_wsgate("--check", "-c", config_file(VALID_YAML))
    assert result.returncode == 0, result.stderr


def test_check_accepts_generated_config(wsgate_bin, config_file):
    """--check accepts what the test harness generates."""
    config = make_config(pools={"p": ["127.0.0.1:9001"]}, limits={"max_message_bytes": "4096"},
                         timeouts={"backend_handshake": "500ms", "close": "2s"}, retries=0)
    result = run_wsgate("--check", "-c", config_file(to_yaml(config)))
    assert result.returncode == 0, result.stderr


def test_check_reports_every_error_with_position(wsgate_bin, config_file):
    """--check exits 1 and prints file:line:col: key.path: msg for each error."""
    path = config_file(INVALID_YAML)
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1, result.stderr
    balance = re.compile(re.escape(path) + rf":{BALANCE_LINE}:\d+: pools\[0\]\.balance: \S")
    address = re.compile(
        re.escape(path) + rf":{ADDRESS_LINE}:\d+: pools\[0\]\.backends\[1\]\.address: \S")
    assert balance.search(result.stderr), result.stderr
    assert address.search(result.stderr), result.stderr


SCHEMA_ERRORS = {
    # name: (lines after the listener line, line of the error, key path)
    "route_to_unknown_pool": (
        "routes: [{pool: nope}]\npools: [{name: p, backends: [{address: 127.0.0.1:1}]}]",
        2, "routes[0].pool"),
    "bad_duration": (
        "routes: [{pool: p}]\npools: [{name: p, backends: [{address: 127.0.0.1:1}]}]\n"
        "timeouts: {handshake: 10x}", 4, "timeouts.handshake"),
    "bad_size": (
        "routes: [{pool: p}]\npools: [{name: p, backends: [{address: 127.0.0.1:1}]}]\n"
        "limits: {max_message_bytes: 16QiB}", 4, "limits.max_message_bytes"),
    "backend_port_zero": (
        "routes: [{pool: p}]\npools: [{name: p, backends: [{address: 127.0.0.1:0}]}]",
        3, "pools[0].backends[0].address"),
    "bad_balance": (
        "routes: [{pool: p}]\npools:\n  - name: p\n    balance: fastest\n"
        "    backends: [{address: 127.0.0.1:1}]", 5, "pools[0].balance"),
}


@pytest.mark.parametrize("name", list(SCHEMA_ERRORS))
def test_check_schema_error_points_at_key(wsgate_bin, config_file, name):
    """Each schema violation is reported at its line with its key path, exit 1."""
    body, line, key_path = SCHEMA_ERRORS[name]
    path = config_file("listeners: [{name: public, address: 127.0.0.1:0}]\n" + body + "\n")
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1, result.stderr
    pattern = re.escape(path) + rf":{line}:\d+: {re.escape(key_path)}: \S"
    assert re.search(pattern, result.stderr), result.stderr


def test_check_reports_yaml_syntax_error_with_position(wsgate_bin, config_file):
    """A YAML syntax error is reported as file:line:col and exit 1."""
    path = config_file("listeners:\n  - name: public\n    address: [127.0.0.1:0\nroutes: x\n")
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1, result.stderr
    assert re.search(re.escape(path) + r":\d+:\d+: ", result.stderr), result.stderr


def test_check_missing_file(wsgate_bin, tmp_path):
    """--check on a file that does not exist exits 1."""
    result = run_wsgate("--check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr


def test_invalid_config_refuses_to_start(wsgate_bin, config_file, tmp_path):
    """Running (not --check) with an invalid config fails and writes no ready file."""
    path = config_file(INVALID_YAML)
    ready = tmp_path / "ready"
    result = run_wsgate("-c", path, "--ready-file", str(ready))
    assert result.returncode != 0
    assert re.search(re.escape(path) + rf":{BALANCE_LINE}:\d+: ", result.stderr), result.stderr
    assert not ready.exists()


def example_configs():
    """examples/*.yaml in the source tree."""
    return sorted(glob.glob(os.path.join(SOURCE_DIR, "examples", "*.yaml"))
                  + glob.glob(os.path.join(SOURCE_DIR, "examples", "*.yml")))


def test_every_example_config_passes_check(wsgate_bin):
    """Each shipped examples/*.yaml is valid."""
    examples = example_configs()
    if not examples:
        pytest.skip("no examples/*.yaml yet")
    for path in examples:
        result = run_wsgate("--check", "-c", path)
        assert result.returncode == 0, f"{path}:\n{result.stderr}"


@async_test(timeout=30)
async def test_ready_file_lists_every_listener(gates):
    """Two listeners on port 0: the ready file names both with real ports; both serve."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"p": [echo.address]},
        listeners=[{"name": "public", "address": "127.0.0.1:0"},
                   {"name": "internal", "address": "127.0.0.1:0"}]))
    assert set(gate.listeners) == {"public", "internal"}
    ports = {port for _, port in gate.listeners.values()}
    assert len(ports) == 2 and 0 not in ports
    for name in ("public", "internal"):
        ws = await ws_connect(gate.url("/", listener=name))
        await ws.send(name)
        assert await recv(ws) == name
        await ws.close()


def test_sigterm_exits_zero_when_idle(gates):
    """SIGTERM on an idle wsgate: exit status 0 promptly."""
    gate = gates.start(make_config(pools={"p": ["127.0.0.1:9"]}))
    gate.proc.send_signal(signal.SIGTERM)
    try:
        assert gate.proc.wait(5) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("wsgate did not exit within 5s of SIGTERM")


@async_test(timeout=30)
async def test_sigterm_with_open_tunnel_exits_zero_within_drain(gates):
    """SIGTERM with a tunnel open: the client is closed and wsgate exits 0 within drain."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          timeouts={"drain": "1s", "close": "1s"}))
    await assert_still_serving(gate)
    ws = await ws_connect(gate.url())
    await ws.send("x")
    assert await recv(ws) == "x"
    gate.proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    status = await asyncio.wait_for(loop.run_in_executor(None, gate.proc.wait), 8)
    assert status == 0
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code is not None


@pytest.mark.parametrize("typo, flag", [("--chek", "--check"), ("--lissen", "--listen"),
                                        ("--print-defualts", "--print-defaults"),
                                        ("--backends", "--backend")])
def test_unknown_flag_suggests_the_closest(wsgate_bin, typo, flag):
    """A misspelt flag: exit 2 and a "did you mean" naming the flag."""
    result = run_wsgate(typo, "-c", "x.yaml")
    assert result.returncode == 2
    assert f'unknown argument "{typo}" (did you mean "{flag}"?)' in result.stderr, result.stderr
    assert "--help" in result.stderr


def test_unknown_log_level_suggests(wsgate_bin):
    result = run_wsgate("--log-level", "wran", "-c", "x.yaml")
    assert result.returncode == 2
    assert 'unknown log level "wran" (did you mean "warn"?' in result.stderr, result.stderr


async def launch_from_flags(gates, *args):
    """Start wsgate with command-line flags only (no -c) and wait for its ready file."""
    index = len(gates.gates)
    ready = os.path.join(gates.tmp_path, f"flags-{index}.ready")
    stderr_path = os.path.join(gates.tmp_path, f"flags-{index}.stderr")
    stdout_path = os.path.join(gates.tmp_path, f"flags-{index}.stdout")
    # The fixture prints each gate's "config" on failure: here that is the command line.
    command_path = os.path.join(gates.tmp_path, f"flags-{index}.args")
    command = [WSGATE_BIN, *args, "--ready-file", ready]
    with open(command_path, "w") as f:
        f.write(" ".join(command) + "\n")
    with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    gate = Gate(proc, command_path, ready, stderr_path, stdout_path)
    gates.gates.append(gate)
    await wait_until(lambda: gate.poll_ready(1), WAIT, "ready file of wsgate started from flags")
    return gate


@async_test(timeout=60)
async def test_listen_and_backend_flags_serve_without_a_file(gates):
    """--listen/--backend: a real client reaches both real backends (least_conn), no admin."""
    first, second = await start_echo_backends(2, greet=True)
    gate = await launch_from_flags(gates, "--listen", "127.0.0.1:0",
                                   "--backend", first.address, "--backend", second.address)
    assert set(gate.listeners) == {"public"}, gate.listeners  # no _admin: admin is off
    ws_a = await ws_connect(gate.url("/chat"))
    greeting_a = await recv(ws_a)
    # least_conn: with the first connection still open, the second goes to the other backend.
    ws_b = await ws_connect(gate.url("/chat"))
    greeting_b = await recv(ws_b)
    assert {greeting_a, greeting_b} == {f"hello from {first.name}", f"hello from {second.name}"}
    for ws in (ws_a, ws_b):
        await ws.send("through the flags")
        assert await recv(ws) == "through the flags"
        await ws.close()
    # SIGHUP has no file to reread: a warning, and the proxy keeps serving.
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: "reload ignored" in gate.stderr_text(), WAIT, "reload warning")
    await assert_still_serving(gate, greeting=True)


def test_flags_print_config_loads_back_to_the_same(wsgate_bin, tmp_path):
    """--print-config with the flags prints the equivalent file; it passes --check and prints
    back to itself."""
    flags = ["--listen", "127.0.0.1:8080", "--backend", "127.0.0.1:9001",
             "--backend", "127.0.0.1:9002"]
    result = run_wsgate(*flags, "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["listeners"] == [{"name": "public", "address": "127.0.0.1:8080"}]
    pool = printed["pools"][0]
    assert pool["balance"] == "least_conn"
    assert [b["address"] for b in pool["backends"]] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert printed["routes"] == [{"pool": pool["name"], "auth": True}]
    assert "admin" not in printed
    path = tmp_path / "from-flags.yaml"
    path.write_text(result.stdout)
    check = run_wsgate("--check", "-c", str(path))
    assert check.returncode == 0, check.stderr
    again = run_wsgate("--print-config", "-c", str(path))
    assert again.returncode == 0 and again.stdout == result.stdout
    assert run_wsgate(*flags, "--check").returncode == 0


def test_config_file_and_flags_together_are_refused(wsgate_bin, config_file):
    result = run_wsgate("-c", config_file(VALID_YAML), "--listen", "127.0.0.1:0",
                        "--backend", "127.0.0.1:9001")
    assert result.returncode == 2
    assert "-c cannot be combined with --listen/--backend" in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (["--backend", "127.0.0.1:9001"], "--backend needs --listen"),
    (["--listen", "127.0.0.1:0"], "--listen needs at least one --backend"),
    (["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:1", "--backend", "127.0.0.1:9001"],
     "--listen given twice"),
    (["--listen"], "--listen needs a value"),
])
def test_incomplete_flags_are_usage_errors(wsgate_bin, args, message):
    result = run_wsgate(*args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_bad_flag_values_name_the_flag(wsgate_bin):
    """Errors in --listen/--backend values say which flag, not a position in a file."""
    result = run_wsgate("--listen", "localhost", "--backend", "127.0.0.1:9001",
                        "--backend", "127.0.0.1:99999")
    assert result.returncode == 1
    assert 'wsgate: --listen: invalid address "localhost"' in result.stderr, result.stderr
    assert 'wsgate: --backend: invalid address "127.0.0.1:99999"' in result.stderr
    assert "error(s) in the command line" in result.stderr
