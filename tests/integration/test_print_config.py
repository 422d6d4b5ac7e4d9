"""wsgate --print-config: the effective configuration, every default filled in, as a valid file."""

import glob
import subprocess
import shutil
import os
import re

import yaml

from harness import (SOURCE_DIR, EchoBackend, async_test, make_config, recv, run_wsgate,
                     to_yaml, ws_connect)


def shipped_configs():
    """Every wsgate config in the tree: examples/**/wsgate*.yaml and the packaged default."""
    found = glob.glob(os.path.join(SOURCE_DIR, "examples", "**", "wsgate*.yaml"), recursive=True)
    found.append(os.path.join(SOURCE_DIR, "packaging", "wsgate.yaml"))
    return sorted(found)


def with_certificates(path, work):
    """A TLS example names certificates next to it: run it from a copy with fresh ones. The
    packaged config reads the admin token from systemd's credentials directory: run it from a
    copy that reads a stand-in token."""
    credential = "/run/credentials/wsgate.service/admin-token"
    with open(path) as f:
        text = f.read()
    if credential in text:
        work.mkdir()
        token = work / "admin-token"
        token.write_text("stand-in-token\n")
        copy = work / os.path.basename(path)
        copy.write_text(text.replace(credential, str(token)))
        return copy
    if os.path.basename(os.path.dirname(path)) != "tls":
        return path
    work.mkdir()
    subprocess.run(["bash", os.path.join(os.path.dirname(path), "make-certs.sh"),
                    str(work / "certs")], check=True, capture_output=True)
    copy = work / os.path.basename(path)
    shutil.copy(path, copy)
    return copy


def print_config(path):
    result = run_wsgate("--print-config", "-c", str(path))
    assert result.returncode == 0, f"{path}:\n{result.stderr}"
    return result.stdout


def test_printed_config_is_valid_and_a_fixed_point(tmp_path):
    """For every shipped config: the printout passes --check and prints back to itself."""
    configs = shipped_configs()
    assert len(configs) >= 3, configs
    for index, path in enumerate(configs):
        path = with_certificates(path, tmp_path / f"config-{index}")
        printed = print_config(path)
        copy = tmp_path / f"printed-{index}.yaml"
        copy.write_text(printed)
        # --check resolves backend names: Compose's service names only resolve in its network.
        checked = tmp_path / f"checked-{index}.yaml"
        checked.write_text(re.sub(r"\bbackend-(\d):", r"localhost:", printed))
        check = run_wsgate("--check", "-c", str(checked))
        assert check.returncode == 0, f"printout of {path} fails --check:\n{check.stderr}\n{printed}"
        assert print_config(copy) == printed, f"printout of {path} does not round-trip"


def test_minimal_config_prints_every_default(tmp_path):
    """Keys absent from the file appear with their documented defaults."""
    path = tmp_path / "minimal.yaml"
    path.write_text("listeners: [{name: public, address: 127.0.0.1:0}]\n"
                    "routes: [{pool: app}]\n"
                    "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n")
    printed = yaml.safe_load(print_config(path))
    assert printed["workers"] == 1 and printed["retries"] == 2
    assert printed["limits"]["max_connections"] == 100000
    assert printed["limits"]["max_message_bytes"] == "16MiB"
    assert printed["timeouts"] == {
        "handshake": "10s", "connect": "5s", "backend_handshake": "5s", "idle": "0s",
        "drain": "30s", "close": "5s", "ping_interval": "0s", "ping_timeout": "10s",
        "request": "1m", "backend_response": "1m", "backend_idle": "1m"}
    assert printed["drain"] == {"grace": "0s", "close_code": 1001, "spread": "0s"}
    assert printed["log"] == {"format": "text", "access": "stderr", "flush_interval": "0s"}
    pool = printed["pools"][0]
    assert pool["balance"] == "least_conn" and pool["backends"][0]["weight"] == 1
    assert pool["rebalance"] == {"enabled": False, "tolerance": 1.2, "rate": "50/s"}
    # Sections whose presence switches something on stay absent.
    assert "admin" not in printed and "health_check" not in pool and "sticky" not in pool


def test_invalid_config_prints_errors_not_yaml(tmp_path):
    """A bad file: exit 1, every error on stderr, nothing on stdout."""
    path = tmp_path / "bad.yaml"
    path.write_text("listeners: [{name: public, address: 127.0.0.1:0}]\n"
                    "routes: [{pool: app}]\n"
                    "pools: [{name: app, balance: fastest, backends: [{address: 127.0.0.1:9001}]}]\n")
    result = run_wsgate("--print-config", "-c", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}:3:" in result.stderr and "pools[0].balance" in result.stderr, result.stderr


@async_test(timeout=30)
async def test_printed_config_serves_traffic(gates, tmp_path):
    """wsgate started from a printout proxies like the original."""
    echo = await EchoBackend().start()
    source = tmp_path / "source.yaml"
    source.write_text(to_yaml(make_config(pools={"p": [echo.address]})))
    gate = await gates.launch(print_config(source))
    ws = await ws_connect(gate.url("/"))
    await ws.send("through the printout")
    assert await recv(ws) == "through the printout"
    await ws.close()


def test_admin_token_is_redacted_but_shown_as_set(tmp_path):
    """The admin token never appears in the printout; "<redacted>" says one is set, and the
    printout still passes --check."""
    path = tmp_path / "with-token.yaml"
    path.write_text("listeners: [{name: public, address: 127.0.0.1:0}]\n"
                    "admin: {address: 127.0.0.1:0, token: hunter2-very-secret}\n"
                    "routes: [{pool: app}]\n"
                    "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n")
    text = print_config(path)
    assert "hunter2-very-secret" not in text
    assert yaml.safe_load(text)["admin"]["token"] == "<redacted>"
    copy = tmp_path / "printed.yaml"
    copy.write_text(text)
    check = run_wsgate("--check", "-c", str(copy))
    assert check.returncode == 0, check.stderr
    # No token: printed as empty, not as redacted.
    path.write_text(path.read_text().replace(", token: hunter2-very-secret", ""))
    assert yaml.safe_load(print_config(path))["admin"]["token"] == ""


def test_print_defaults_loads_and_round_trips(tmp_path):
    """--print-defaults needs no file, passes --check and prints back to itself."""
    result = run_wsgate("--print-defaults")
    assert result.returncode == 0, result.stderr
    defaults = yaml.safe_load(result.stdout)
    assert defaults["workers"] == 1 and defaults["retries"] == 2
    assert defaults["timeouts"]["drain"] == "30s"
    assert defaults["log"] == {"format": "text", "access": "stderr", "flush_interval": "0s"}
    assert defaults["pools"][0]["balance"] == "least_conn"
    # The sections that switch something on are documented as comments.
    assert "# admin:\n#   address: 127.0.0.1:9901\n" in result.stdout
    assert "#     health_check:\n" in result.stdout
    path = tmp_path / "defaults.yaml"
    path.write_text(result.stdout)
    check = run_wsgate("--check", "-c", str(path))
    assert check.returncode == 0, check.stderr
    printed = print_config(path)
    assert yaml.safe_load(printed) == defaults
    assert result.stdout.startswith("#") and printed in result.stdout
