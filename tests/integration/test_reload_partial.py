"""A SIGHUP reload that cannot bind an address applies the rest and says so.

It used to count as result="success" with only an error line. Now the log says "reload
partial" with the address and errno text, wsgate_config_reloads_total{result="partial"} counts
it, and a listener (or the admin listener) whose new address is taken keeps its old socket.
"""

import asyncio
import os
import signal
import socket

from harness import (EchoBackend, admin_address, admin_get, async_test, make_config, metric, recv,
                     wait_until, ws_connect)


def taken_port():
    """A listening socket on a free loopback port (keep it referenced to keep the port taken)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


async def reload(gate, gates, config, expect):
    before = gate.stderr_text().count(expect)
    path = gates.write_config(config, os.path.basename(gate.config_path) + ".new")
    os.replace(path, gate.config_path)
    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: gate.stderr_text().count(expect) > before, 10,
                     f"{expect!r} after SIGHUP")


async def echo_once(url, text):
    ws = await ws_connect(url)
    await ws.send(text)
    assert await recv(ws) == text
    await ws.close()


def reloads(gate, result):
    return metric(gate, "wsgate_config_reloads_total", result=result)


@async_test(timeout=60)
async def test_reload_with_an_address_in_use_is_partial_and_keeps_the_old_sockets(gates):
    backend = EchoBackend()
    await backend.start()
    config = make_config(pools={"echo": [backend.address]})
    config["admin"] = {"address": "127.0.0.1:0"}
    gate = await gates.launch(config)
    public = gate.url("/")
    blocker = taken_port()
    blocked = blocker.getsockname()[1]
    try:
        # A new listener on a taken port: the rest of the reload (a second backend) applies.
        other = EchoBackend(name="other")
        await other.start()
        config["pools"][0]["backends"].append({"address": other.address})
        config["listeners"].append({"name": "extra", "address": f"127.0.0.1:{blocked}"})
        await reload(gate, gates, config, "reload partial")
        log = gate.stderr_text()
        assert f"cannot listen on 127.0.0.1:{blocked}: Address already in use" in log, log
        assert reloads(gate, "partial") == 1
        assert reloads(gate, "success") == 0
        assert len([line for line in log.splitlines() if "reload complete" in line]) == 0
        await wait_until(lambda: metric(gate, "wsgate_backend_up", backend=other.address) == 1,
                         10, "the added backend is up")
        await echo_once(public, "public still served")

        # Moving the public listener onto the taken port keeps it where it was.
        config["listeners"] = [{"name": "public", "address": f"127.0.0.1:{blocked}"}]
        await reload(gate, gates, config, "keeps listening on")
        assert reloads(gate, "partial") == 2
        await echo_once(public, "old socket kept")

        # The admin listener too: its new address is taken, the old one keeps answering.
        config["listeners"] = [{"name": "public", "address": "127.0.0.1:0"}]
        config["admin"] = {"address": f"127.0.0.1:{blocked}"}
        await reload(gate, gates, config, "admin keeps listening on")
        assert f"cannot listen on admin address 127.0.0.1:{blocked}: Address already in use" \
            in gate.stderr_text()
        assert reloads(gate, "partial") == 3

        # Once the port is free the same file reloads completely.
        blocker.close()
        config["admin"] = {"address": "127.0.0.1:0"}
        config["listeners"].append({"name": "extra", "address": f"127.0.0.1:{blocked}"})
        await reload(gate, gates, config, "reload complete")
        assert reloads(gate, "success") == 1 and reloads(gate, "partial") == 3
        await echo_once(f"ws://127.0.0.1:{blocked}/", "extra listener")
        await echo_once(public, "public")
        assert admin_address(gate)
        await other.stop()
    finally:
        blocker.close()
        await backend.stop()




@async_test(timeout=60)
async def test_admin_kept_on_its_old_address_keeps_its_old_token(gates):
    """admin moves from 0.0.0.0 (token required) to a loopback address (none required) that is
    taken: the wildcard listener stays, and must not start answering without the token."""
    backend = EchoBackend()
    await backend.start()
    config = make_config(pools={"echo": [backend.address]})
    config["admin"] = {"address": "0.0.0.0:0", "token": "s3cret"}
    gate = await gates.launch(config)
    _, port = admin_address(gate)
    blocker = taken_port()
    blocked = blocker.getsockname()[1]
    try:
        assert (await asyncio.to_thread(admin_get, "127.0.0.2", port, "/metrics"))[0] == 401
        config["admin"] = {"address": f"127.0.0.1:{blocked}"}
        await reload(gate, gates, config, "admin keeps listening on")
        # 127.0.0.2 reaches the kept 0.0.0.0 socket.
        assert (await asyncio.to_thread(admin_get, "127.0.0.2", port, "/metrics"))[0] == 401
        assert (await asyncio.to_thread(admin_get, "127.0.0.2", port, "/metrics",
                                        "s3cret"))[0] == 200
    finally:
        blocker.close()
        await backend.stop()
