"""The validation stage (config/validate.h): --check, start and reload run the same checks.

An unresolvable backend host name and bad TLS files are configuration errors that name
file:line:column and the key; --check fails on them as start does, and a reload with one keeps the
old configuration serving and logs why.
"""

import os
import re
import signal
import subprocess

import pytest

from harness import (SOURCE_DIR, WAIT, EchoBackend, async_test, make_config, metric, recv,
                     run_wsgate, wait_until, ws_connect)

MAKE_CERTS = os.path.join(SOURCE_DIR, "examples", "tls", "make-certs.sh")
# .invalid never resolves (RFC 6761), so the answer is quick and the same on every machine.
UNRESOLVABLE = "no-such-backend.invalid:9003"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The example CA and certificates (chat.crt/key, api.crt/key, ...)."""
    directory = str(tmp_path_factory.mktemp("certs"))
    subprocess.run(["bash", MAKE_CERTS, directory], check=True, capture_output=True, timeout=60)
    return directory


def config_text(backends, cert=None, key=None):
    """One listener (TLS when cert is given), one pool; line numbers below depend on this shape."""
    lines = ["listeners:",                                # 1
             "  - name: public",                          # 2
             "    address: 127.0.0.1:0"]                  # 3
    if cert is not None:
        lines += ["    tls:",                             # 4
                  "      certificates:",                  # 5
                  f"        - cert: {cert}",              # 6, value at column 17
                  f"          key: {key}"]                # 7, value at column 16
    lines += ["routes:", "  - pool: app", "pools:", "  - name: app", "    backends:"]
    lines += [f"      - address: {b}" for b in backends]  # value at column 18
    return "\n".join(lines) + "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_and_start_fail_on_an_unresolvable_backend_naming_its_key(tmp_path):
    """Today's start failure is now a --check failure too, at the backend's address."""
    path = write(tmp_path, "dns.yaml", config_text(["127.0.0.1:9001", UNRESOLVABLE]))
    expected = (rf"{re.escape(path)}:10:18: pools\[0\]\.backends\[1\]\.address: cannot resolve "
                rf"{re.escape(UNRESOLVABLE)}: ")
    check = run_wsgate("--check", "-c", path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert re.search(expected, check.stderr), check.stderr
    assert f"wsgate: 1 error(s) in {path}" in check.stderr
    assert "configuration is valid" not in check.stdout

    start = run_wsgate("-c", path)
    assert start.returncode == 1
    assert re.search(expected, start.stderr), start.stderr

    # From the flags the error points at the flag.
    flags = run_wsgate("--check", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9001",
                       "--backend", UNRESOLVABLE)
    assert flags.returncode == 1
    assert re.search(rf"^--backend: cannot resolve {re.escape(UNRESOLVABLE)}: ", flags.stderr,
                     re.M), flags.stderr

    # A resolvable name passes.
    good = write(tmp_path, "good.yaml", config_text(["127.0.0.1:9001", "localhost:9002"]))
    ok = run_wsgate("--check", "-c", good)
    assert ok.returncode == 0, ok.stderr
    assert "configuration is valid" in ok.stdout


@pytest.mark.parametrize("case", ["missing_cert", "unreadable_cert", "missing_key",
                                  "key_not_matching"])
def test_check_fails_on_bad_tls_files_naming_the_key(certs, tmp_path, case):
    cert, key = os.path.join(certs, "chat.crt"), os.path.join(certs, "chat.key")
    if case == "missing_cert":
        cert = str(tmp_path / "missing.crt")
        where, pattern = "6:17: listeners[0].tls.certificates[0].cert", r"cannot read \".*missing\.crt\""
    elif case == "unreadable_cert":
        os.mkdir(tmp_path / "a-directory.crt")  # unreadable even for root
        cert = str(tmp_path / "a-directory.crt")
        where, pattern = "6:17: listeners[0].tls.certificates[0].cert", r"a-directory\.crt"
    elif case == "missing_key":
        key = str(tmp_path / "missing.key")
        where, pattern = "7:16: listeners[0].tls.certificates[0].key", r"cannot read \".*missing\.key\""
    else:
        key = os.path.join(certs, "api.key")
        where = "7:16: listeners[0].tls.certificates[0].key"
        pattern = r"private key \".*api\.key\" does not match the certificate \".*chat\.crt\""
    path = write(tmp_path, "tls.yaml", config_text(["127.0.0.1:9001"], cert=cert, key=key))
    for args in (["--check", "-c", path], ["-c", path]):
        result = run_wsgate(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.search(rf"{re.escape(path)}:{re.escape(where)}: .*{pattern}", result.stderr), \
            result.stderr


async def launch_from_text(gates, text):
    """Start wsgate from YAML text plus an admin listener (for metrics)."""
    return await gates.launch(text + "admin:\n  address: 127.0.0.1:0\n")


async def sighup_and_wait(gate, text, outcome):
    """Replace the config file, SIGHUP, wait for |outcome|; return the new stderr."""
    before = gate.stderr_text()
    with open(gate.config_path + ".new", "w") as f:
        f.write(text + "admin:\n  address: 127.0.0.1:0\n")
    os.replace(gate.config_path + ".new", gate.config_path)
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: ("reload complete" in gate.stderr_text()[len(before):]
                              or "reload failed" in gate.stderr_text()[len(before):]),
                     WAIT, "a reload outcome line")
    new = gate.stderr_text()[len(before):]
    assert outcome in new, new
    return new


async def assert_echoes(url, what):
    ws = await ws_connect(url)
    await ws.send(what)
    assert await recv(ws) == what
    await ws.close()


@async_test(timeout=60)
async def test_reload_with_unresolvable_backend_or_bad_tls_keeps_the_old_config(gates, certs):
    backend = await EchoBackend().start()
    good = config_text([backend.address])
    gate = await launch_from_text(gates, good)
    live = await ws_connect(gate.url("/live"))
    path = re.escape(gate.config_path)

    bad_configs = [
        (config_text([backend.address, UNRESOLVABLE]),
         rf"reload: {path}:10:18: pools\[0\]\.backends\[1\]\.address: cannot resolve "
         rf"{re.escape(UNRESOLVABLE)}: "),
        # The listener had no TLS: there are no previous certificates to keep.
        (config_text([backend.address], cert=os.path.join(certs, "chat.crt"),
                     key=os.path.join(certs, "api.key")),
         rf"reload: {path}:7:16: listeners\[0\]\.tls\.certificates\[0\]\.key: private key "
         rf"\".*api\.key\" does not match"),
    ]
    for failures, (text, expected) in enumerate(bad_configs, start=1):
        new = await sighup_and_wait(gate, text, "reload failed with 1 error(s); still running "
                                                "the previous configuration")
        assert re.search(expected, new), new
        assert metric(gate, "wsgate_config_reloads_total", result="failure") == failures
        # The old configuration serves: the live connection and a new plain ws:// client.
        await live.send(f"after failed reload {failures}")
        assert await recv(live) == f"after failed reload {failures}"
        await assert_echoes(gate.url("/new"), f"new client after failed reload {failures}")
    assert metric(gate, "wsgate_config_reloads_total", result="success") == 0

    # Fixed, it reloads.
    await sighup_and_wait(gate, good, "reload complete")
    assert metric(gate, "wsgate_config_reloads_total", result="success") == 1
    await assert_echoes(gate.url("/after"), "after the good reload")
    assert gate.alive()
