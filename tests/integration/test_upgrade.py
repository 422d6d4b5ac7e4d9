"""Zero-downtime binary upgrade: a new wsgate takes the listening sockets over from a running one.

Both processes run the real binary with ``--upgrade-socket``. While a client loop connects as
fast as it can, a second process starts on the same socket path; the first hands its listening
sockets over, drains its connections with 1001 and exits 0. No connection attempt may fail.
"""

import asyncio
import os
import socket
import ssl
import subprocess
import threading
import time

import websockets

from harness import (SOURCE_DIR, WSGATE_BIN, EchoBackend, admin_get, async_test, make_config,
                     recv, to_yaml, wait_until)


def spawn(tmp_path, tag, config, socket_path):
    """Start wsgate with --upgrade-socket; return (process, ready path, stderr path)."""
    config_path = os.path.join(tmp_path, f"{tag}.yaml")
    with open(config_path, "w") as f:
        f.write(to_yaml(config))
    ready = os.path.join(tmp_path, f"{tag}.ready")
    stderr_path = os.path.join(tmp_path, f"{tag}.stderr")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([WSGATE_BIN, "-c", config_path, "--ready-file", ready,
                                 "--upgrade-socket", socket_path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    return proc, ready, stderr_path


def ready_port(ready):
    """The public listener's port from a ready file, or None."""
    try:
        with open(ready) as f:
            for line in f:
                name, address = line.split()
                if name == "public":
                    return int(address.rpartition(":")[2])
    except (FileNotFoundError, ValueError):
        return None
    return None


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


@async_test(timeout=90)
async def test_binary_upgrade_never_refuses_a_connection(tmp_path):
    backend = EchoBackend()
    await backend.start()
    socket_path = os.path.join(str(tmp_path), "upgrade.sock")
    # Port 0 is resolved once by the first process; the second inherits that very socket.
    config = make_config(pools={"echo": [backend.address]},
                         timeouts={"drain": "1s", "close": "2s"})
    old, old_ready, old_err = spawn(str(tmp_path), "old", config, socket_path)
    new = None
    try:
        await wait_until(lambda: ready_port(old_ready) is not None, 10, "old ready file")
        port = ready_port(old_ready)

        # A long-lived connection on the old process: it must get 1001 when the old one drains.
        long_lived = await websockets.connect(f"ws://127.0.0.1:{port}/", compression=None)
        await long_lived.send("before")
        assert await recv(long_lived) == "before"

        stop = asyncio.Event()
        results = {"ok": 0, "errors": []}

        async def client_loop():
            while not stop.is_set():
                try:
                    async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None,
                                                  open_timeout=5) as ws:
                        await ws.send("ping")
                        assert await recv(ws, 5) == "ping"
                    results["ok"] += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    results["errors"].append(repr(error))

        loops = [asyncio.create_task(client_loop()) for _ in range(4)]
        await wait_until(lambda: results["ok"] >= 20, 10, "client loop running")

        new, new_ready, new_err = spawn(str(tmp_path), "new", config, socket_path)
        await wait_until(lambda: ready_port(new_ready) is not None, 10, "new ready file")
        assert ready_port(new_ready) == port, "the new process serves the same port"

        # The old process drains: the long-lived client gets 1001, then the old process exits 0.
        started = time.monotonic()
        try:
            await asyncio.wait_for(long_lived.wait_closed(), 10)
        finally:
            assert long_lived.close_code == 1001, long_lived.close_code
        await wait_until(lambda: old.poll() is not None, 10, "old process exit")
        assert old.returncode == 0, read(old_err)
        assert time.monotonic() - started < 1 + 2 + 2

        ok_at_exit = results["ok"]
        await wait_until(lambda: results["ok"] >= ok_at_exit + 20, 10, "served by the new process")
        stop.set()
        await asyncio.gather(*loops)
        assert results["errors"] == [], results["errors"][:5]
        assert results["ok"] > 40

        old_log = read(old_err)
        assert "handed 1 listening socket(s)" in old_log, old_log
        assert "took over" in read(new_err)

        # A third process can take over from the second one in turn.
        third, third_ready, third_err = spawn(str(tmp_path), "third", config, socket_path)
        try:
            await wait_until(lambda: ready_port(third_ready) is not None, 10, "third ready")
            await wait_until(lambda: new.poll() is not None, 10, "second process exit")
            assert new.returncode == 0, read(new_err)
            async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.send("third")
                assert await recv(ws) == "third"
        finally:
            third.terminate()
            assert third.wait(10) == 0, read(third_err)
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
        await backend.stop()


@async_test(timeout=30)
async def test_upgrade_socket_without_a_running_process_starts_fresh(tmp_path):
    backend = EchoBackend()
    await backend.start()
    socket_path = os.path.join(str(tmp_path), "stale.sock")
    with open(socket_path, "w") as f:  # a stale file where the socket should be
        f.write("")
    proc, ready, err = spawn(str(tmp_path), "fresh",
                             make_config(pools={"echo": [backend.address]}), socket_path)
    try:
        await wait_until(lambda: ready_port(ready) is not None, 10, "ready file")
        async with websockets.connect(f"ws://127.0.0.1:{ready_port(ready)}/") as ws:
            await ws.send("hi")
            assert await recv(ws) == "hi"
        assert "starting fresh" in read(err)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, read(err)
        await backend.stop()


def ready_entries_of(ready):
    """{name: port} from a complete ready file, or None."""
    try:
        with open(ready) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    return {line.split()[0]: int(line.split()[1].rpartition(":")[2]) for line in text.splitlines()}




@async_test(timeout=120)
async def test_upgrade_hands_over_admin_tls_and_several_listeners(tmp_path):
    """Every shipped config has an admin section: the new process must take the admin socket
    over too (it used to fail to bind it and exit, leaving the old one running forever)."""
    backend = EchoBackend()
    await backend.start()
    certs = os.path.join(str(tmp_path), "certs")
    os.makedirs(certs)
    subprocess.run(["bash", os.path.join(SOURCE_DIR, "examples", "tls", "make-certs.sh"), certs],
                   check=True, capture_output=True, timeout=60)
    tls_context = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
    socket_path = os.path.join(str(tmp_path), "upgrade.sock")
    config = make_config(pools={"echo": [backend.address]},
                         timeouts={"drain": "4s", "close": "2s"},
                         listeners=[{"name": "public", "address": "127.0.0.1:0"},
                                    {"name": "second", "address": "127.0.0.1:0"},
                                    {"name": "secure", "address": "127.0.0.1:0", "tls": {
                                        "certificates": [{
                                            "cert": os.path.join(certs, "chat.crt"),
                                            "key": os.path.join(certs, "chat.key")}]}}])
    config["admin"] = {"address": "127.0.0.1:0"}
    old, old_ready, old_err = spawn(str(tmp_path), "old", config, socket_path)
    new = None
    stop = asyncio.Event()
    loops = []
    try:
        await wait_until(lambda: ready_entries_of(old_ready) is not None, 10, "old ready file")
        ports = ready_entries_of(old_ready)
        assert set(ports) == {"public", "second", "secure", "_admin"}, ports
        urls = [f"ws://127.0.0.1:{ports['public']}/", f"ws://127.0.0.1:{ports['second']}/",
                f"wss://localhost:{ports['secure']}/"]
        long_lived = await websockets.connect(urls[0], compression=None)
        await long_lived.send("before")
        assert await recv(long_lived) == "before"

        results = {"ok": 0, "admin_ok": 0, "errors": []}

        async def client_loop(url):
            while not stop.is_set():
                try:
                    async with websockets.connect(
                            url, compression=None, open_timeout=5,
                            ssl=tls_context if url.startswith("wss") else None) as ws:
                        await ws.send("ping")
                        assert await recv(ws, 5) == "ping"
                    results["ok"] += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    results["errors"].append(f"{url}: {error!r}")

        async def admin_loop():
            while not stop.is_set():
                status, body = await asyncio.to_thread(admin_get, "127.0.0.1", ports["_admin"],
                                                       "/healthz")
                if status == 200:
                    results["admin_ok"] += 1
                else:
                    results["errors"].append(f"admin: {status} {body}")

        loops += [asyncio.create_task(client_loop(url)) for url in urls]
        loops.append(asyncio.create_task(admin_loop()))
        await wait_until(lambda: results["ok"] >= 30 and results["admin_ok"] >= 5, 20,
                         "client loops running")

        new, new_ready, new_err = spawn(str(tmp_path), "new", config, socket_path)
        await wait_until(lambda: ready_entries_of(new_ready) is not None or new.poll() is not None,
                         10, "new ready file")
        assert new.poll() is None, read(new_err)
        assert ready_entries_of(new_ready) == ports, "the new process serves the same ports"
        await wait_until(lambda: "handed 4 listening socket(s)" in read(old_err), 10,
                         "handover logged")
        await wait_until(lambda: "took over" in read(new_err) and old.poll() is None
                         and "the new process is accepting" in read(old_err), 10,
                         "old process draining")

        # While the old process still drains (the long-lived client keeps it busy), the admin
        # API is the new one's: a draining process would answer /readyz 503.
        assert old.poll() is None
        for _ in range(20):
            status, body = await asyncio.to_thread(admin_get, "127.0.0.1", ports["_admin"],
                                                   "/readyz")
            assert status == 200, (status, body)
        status, body = await asyncio.to_thread(admin_get, "127.0.0.1", ports["_admin"],
                                               "/metrics")
        assert status == 200 and "\nwsgate_draining 0\n" in body, body[-2000:]

        await asyncio.wait_for(long_lived.wait_closed(), 15)
        assert long_lived.close_code == 1001, long_lived.close_code
        await wait_until(lambda: old.poll() is not None, 15, "old process exit")
        assert old.returncode == 0, read(old_err)

        ok_at_exit = results["ok"]
        await wait_until(lambda: results["ok"] >= ok_at_exit + 30, 20, "served by the new process")
        stop.set()
        await asyncio.gather(*loops)
        assert results["errors"] == [], results["errors"][:5]
        assert "admin took over" in read(new_err), read(new_err)
        assert "cannot listen" not in read(new_err)
    finally:
        stop.set()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await backend.stop()


@async_test(timeout=60)
async def test_upgrade_from_a_wsgate_that_keeps_its_admin_socket(tmp_path):
    """An older wsgate hands over only its listeners and holds the admin address until it exits:
    the new process starts anyway and binds the admin address once it is free."""
    backend = EchoBackend()
    await backend.start()
    public = socket.socket()
    public.bind(("127.0.0.1", 0))
    public.listen(64)
    admin = socket.socket()
    admin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    admin.bind(("127.0.0.1", 0))
    admin.listen(1)
    admin_port = admin.getsockname()[1]
    socket_path = os.path.join(str(tmp_path), "upgrade.sock")
    handover = socket.socket(socket.AF_UNIX)
    handover.bind(socket_path)
    handover.listen(1)
    released = threading.Event()

    def old_process():
        """The handover protocol of proxy/handover.cc, as an older wsgate speaks it."""
        peer, _ = handover.accept()
        with peer:
            assert peer.recv(64) == b"TAKEOVER 1\n"
            socket.send_fds(peer, [b"public\n"], [public.fileno()])
            assert peer.recv(64).startswith(b"READY")
            peer.sendall(b"OK\n")
        # It drains for a while, then exits and so releases the admin address.
        admin.close()
        released.set()

    old = threading.Thread(target=old_process, daemon=True)
    old.start()
    config = make_config(pools={"echo": [backend.address]},
                         listeners=[{"name": "public",
                                     "address": f"127.0.0.1:{public.getsockname()[1]}"}])
    config["admin"] = {"address": f"127.0.0.1:{admin_port}"}
    new, new_ready, new_err = spawn(str(tmp_path), "new", config, socket_path)
    try:
        await wait_until(lambda: released.is_set() or new.poll() is not None, 10, "handover")
        assert new.poll() is None, read(new_err)
        await wait_until(lambda: (ready_entries_of(new_ready) or {}).get("_admin") == admin_port,
                         10, "admin bound after the old process released it")
        assert "binding it again every 500ms" in read(new_err), read(new_err)
        status, body = await asyncio.to_thread(admin_get, "127.0.0.1", admin_port, "/readyz")
        assert status == 200, body
        public.close()  # the new process holds its own reference
        async with websockets.connect(f"ws://127.0.0.1:{ready_entries_of(new_ready)['public']}/",
                                      compression=None) as ws:
            await ws.send("served")
            assert await recv(ws) == "served"
    finally:
        new.terminate()
        assert new.wait(10) == 0, read(new_err)
        public.close()
        handover.close()
        await backend.stop()




@async_test(timeout=90)
async def test_upgrade_moving_admin_to_loopback_does_not_keep_the_wildcard_socket(tmp_path):
    """The old process serves the admin API on 0.0.0.0:P with a token; the new config moves it to
    127.0.0.1:P, where no token is required. The new process must bind 127.0.0.1:P, not adopt the
    wildcard socket (same port), which would leave the token-less API on every interface."""
    backend = EchoBackend()
    await backend.start()
    socket_path = os.path.join(str(tmp_path), "upgrade.sock")
    config = make_config(pools={"echo": [backend.address]},
                         timeouts={"drain": "1s", "close": "1s"})
    # A port found free may be taken again before wsgate binds it (other tests make thousands of
    # connections from ephemeral ports): then try another.
    for _ in range(5):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        admin_port = probe.getsockname()[1]
        probe.close()
        config["admin"] = {"address": f"0.0.0.0:{admin_port}", "token": "s3cret"}
        old, old_ready, old_err = spawn(str(tmp_path), "old", config, socket_path)
        await wait_until(lambda: ready_entries_of(old_ready) is not None or old.poll() is not None,
                         30, "old ready file or exit")
        if ready_entries_of(old_ready) is not None:
            break
        assert "in use" in read(old_err), read(old_err)
    new = None
    try:
        assert ready_entries_of(old_ready) is not None, read(old_err)
        status, _ = await asyncio.to_thread(admin_get, "127.0.0.2", admin_port, "/metrics",
                                               timeout=3)
        assert status == 401  # wildcard, token required
        config["admin"] = {"address": f"127.0.0.1:{admin_port}"}
        new, new_ready, new_err = spawn(str(tmp_path), "new", config, socket_path)
        await wait_until(lambda: old.poll() is not None, 20, "old process exit")
        await wait_until(lambda: (ready_entries_of(new_ready) or {}).get("_admin") == admin_port,
                         10, "new admin listening")
        assert new.poll() is None, read(new_err)
        status, body = await asyncio.to_thread(admin_get, "127.0.0.1", admin_port, "/readyz",
                                               timeout=3)
        assert status == 200, body
        # 127.0.0.2 reaches a 0.0.0.0 socket, never a 127.0.0.1 one.
        status, body = await asyncio.to_thread(admin_get, "127.0.0.2", admin_port, "/metrics",
                                               timeout=3)
        assert status is None, (status, body[:200])
        with open(new_ready) as f:
            assert f"_admin 127.0.0.1:{admin_port}" in f.read()
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await backend.stop()
