"""Each backend name is resolved once (issue 18): the validation stage resolves it, and the pools
are built from its answers, on --check, at start and on reload. It used to be resolved twice at
start (validation, then again to build the pools), and once per backend naming it.

A preloaded getaddrinfo shim (resolve_counter.c, compiled here) logs every lookup of a name under
.resolve-count.test and answers it with 127.0.0.1, so no DNS or /etc/hosts entry is involved.
"""

import os
import shutil
import signal
import subprocess

import pytest

from harness import (EchoBackend, HERE, async_test, make_config, recv, run_wsgate, wait_until,
                     ws_connect)

ONE = "one.resolve-count.test"
TWO = "two.resolve-count.test"


@pytest.fixture(scope="module")
def resolve_counter(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build the getaddrinfo shim")
    library = str(tmp_path_factory.mktemp("shim") / "resolve_counter.so")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", library,
                    os.path.join(HERE, "resolve_counter.c"), "-ldl"], check=True)
    return library


@pytest.fixture
def lookups(resolve_counter, tmp_path, monkeypatch):
    """The wsgate processes this test starts use the shim; returns the names they looked up."""
    log = tmp_path / "lookups.log"
    monkeypatch.setenv("LD_PRELOAD", resolve_counter)
    monkeypatch.setenv("WSGATE_RESOLVE_LOG", str(log))
    # A sanitized build's runtime must come first unless told not to check.
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "verify_asan_link_order=0")
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_check_resolves_each_name_once(gates, lookups):
    config = make_config(pools={"a": [f"{ONE}:9001", f"{TWO}:9002"], "b": [f"{ONE}:9001"]})
    result = run_wsgate("--check", "-c", gates.write_config(config))
    assert result.returncode == 0, result.stderr
    assert sorted(lookups()) == [f"{ONE}:9001", f"{TWO}:9002"]


async def echo_once(gate, text):
    ws = await ws_connect(gate.url("/"))
    await ws.send(text)
    assert await recv(ws) == text
    await ws.close()


@async_test(timeout=60)
async def test_start_and_reload_resolve_each_new_name_once(gates, lookups):
    echo = await EchoBackend().start()
    one, two = f"{ONE}:{echo.port}", f"{TWO}:{echo.port}"
    config = make_config(pools={"a": [one], "b": [one]})
    gate = await gates.launch(config)
    assert lookups() == [one]
    await echo_once(gate, "served through the resolved name")

    # A reload resolves the new name only: pool b's backend is kept with its address. Pool a
    # (the route's) now has only the new name, so serving shows its answer is used.
    config["pools"][0]["backends"] = [{"address": two}]
    path = gates.write_config(config, os.path.basename(gate.config_path) + ".new")
    os.replace(path, gate.config_path)
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: "reload complete" in gate.stderr_text(), 10, "the reload")
    assert lookups() == [one, two]
    await echo_once(gate, "served through the name added by the reload")
