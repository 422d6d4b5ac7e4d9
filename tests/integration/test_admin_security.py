"""The admin API against web pages: cross-origin requests, DNS rebinding, and the token file.

A browser page can send requests to the admin listener on loopback; these carry an Origin (or
Sec-Fetch-Site) header, and a DNS-rebinding page reaches it under the attacker's host name in
Host. wsgate answers both 403 before looking at the token, counts them in
wsgate_admin_requests_refused_total{reason}, and changes nothing. Every test ends with a
normal request (no Origin, Host 127.0.0.1:port) that is served.
"""

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess

from harness import (EchoBackend, admin_address, async_test, make_config, recv, wait_until,
                     ws_connect)

TOKEN = "t0ken-for-tests"


def call(address, method, path, headers=None, body=None, token=None):
    """One admin request with exactly these headers (Host included); returns (status, body)."""
    host, port = address
    headers = dict(headers or {})
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Length"] = str(len(body))
            headers.setdefault("Content-Type", "text/plain")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def acall(*args, **kwargs):
    return await asyncio.to_thread(call, *args, **kwargs)


def refused(address, reason, token=None):
    """wsgate_admin_requests_refused_total{reason=...} read with an allowed request."""
    status, body = call(address, "GET", "/metrics", token=token)
    assert status == 200, body
    match = re.search(r'^wsgate_admin_requests_refused_total\{reason="%s"\} (\S+)$' % reason,
                      body.decode(), re.M)
    assert match, body.decode()
    return float(match.group(1))


def admin_config(backend, **admin):
    config = make_config(pools={"echo": [backend.address]})
    config["admin"] = {"address": "127.0.0.1:0", **admin}
    return config


def backend_state(address, token=None):
    status, body = call(address, "GET", "/admin/backends", token=token)
    assert status == 200, body
    return json.loads(body)["backends"][0]["state"]


@async_test(timeout=60)
async def test_cross_origin_push_drain_and_delete_are_refused_and_change_nothing(gates):
    backend = EchoBackend()
    await backend.start()
    gate = await gates.launch(admin_config(backend))
    admin = admin_address(gate)
    pool_backend = f"/admin/backends/echo/{backend.address}/drain"
    try:
        ws = await ws_connect(gate.url("/"))
        status, body = await acall(admin, "GET", "/connections")
        assert status == 200, body
        (cid,) = [c["id"] for c in json.loads(body)["connections"]]

        evil = {"Origin": "https://evil.example"}
        assert (await acall(admin, "POST", f"/connections/{cid}", evil, b"pwned"))[0] == 403
        assert (await acall(admin, "DELETE", f"/connections/{cid}", evil))[0] == 403
        assert (await acall(admin, "POST", pool_backend, evil))[0] == 403
        # Reading is refused too (a page could not read the answer, but could trigger work).
        status, body = await acall(admin, "GET", "/connections", evil)
        assert status == 403 and b"allowed_origins" in body, body
        assert refused(admin, "origin") == 4

        # Nothing happened: the connection is open, got no push, and the backend is not drained.
        await ws.send("still here")
        assert await recv(ws) == "still here"
        assert backend_state(admin) == "healthy"

        # The same requests without Origin, as curl sends them, work.
        curl = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                               "--data-binary", "from curl", "-H", "Content-Type: text/plain",
                               f"http://127.0.0.1:{admin[1]}/connections/{cid}"],
                              capture_output=True, text=True, timeout=10)
        assert curl.stdout == "200", curl
        assert await recv(ws) == "from curl"
        assert (await acall(admin, "DELETE", f"/connections/{cid}"))[0] == 200
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1000, ws.close_code
    finally:
        await backend.stop()


@async_test(timeout=60)
async def test_dns_rebinding_host_and_cross_site_fetches_are_refused(gates):
    backend = EchoBackend()
    await backend.start()
    gate = await gates.launch(admin_config(backend))
    admin = admin_address(gate)
    port = admin[1]
    drain = f"/admin/backends/echo/{backend.address}/drain"
    try:
        # A rebinding page: its own name in Host, no Origin (same-origin GETs send none).
        for path in ("/connections", "/metrics", "/admin/backends", "/healthz", "/readyz"):
            status, body = await acall(admin, "GET", path, {"Host": f"evil.example:{port}"})
            assert status == 403, (path, status, body)
        assert (await acall(admin, "POST", drain, {"Host": "evil.example"}))[0] == 403
        assert refused(admin, "host") == 6
        # Sec-Fetch-Site from a browser, even without Origin.
        for site in ("cross-site", "same-site", "same-origin"):
            assert (await acall(admin, "POST", drain, {"Sec-Fetch-Site": site}))[0] == 403
        assert refused(admin, "fetch_site") == 3
        assert backend_state(admin) == "healthy"

        # The listener's own names are fine, with or without port; so is a typed URL.
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST"):
            assert (await acall(admin, "GET", "/healthz", {"Host": host}))[0] == 200, host
        assert (await acall(admin, "GET", "/readyz", {"Sec-Fetch-Site": "none"}))[0] == 200
        # HTTP/1.0 without Host (not a browser) is served.
        reader, writer = await asyncio.open_connection(*admin)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer
        assert (await acall(admin, "POST", drain))[0] == 200
        assert backend_state(admin) == "draining"
        assert gate.alive()
    finally:
        await backend.stop()


@async_test(timeout=60)
async def test_allowed_origins_and_allowed_hosts_let_the_listed_ones_through(gates):
    backend = EchoBackend()
    await backend.start()
    gate = await gates.launch(admin_config(backend, allowed_origins=["https://ops.example"],
                                           allowed_hosts=["gate.internal"]))
    admin = admin_address(gate)
    drain = f"/admin/backends/echo/{backend.address}/drain"
    try:
        status, body = await acall(admin, "POST", drain, {"Origin": "https://ops.example.evil"})
        assert status == 403, body
        assert backend_state(admin) == "healthy"
        status, body = await acall(admin, "POST", drain, {"Origin": "https://ops.example",
                                                          "Sec-Fetch-Site": "cross-site"})
        assert status == 200, body
        assert backend_state(admin) == "draining"
        assert (await acall(admin, "GET", "/healthz", {"Host": "Gate.Internal:1"}))[0] == 200
        assert (await acall(admin, "GET", "/healthz", {"Host": "other.internal"}))[0] == 403
    finally:
        await backend.stop()


@async_test(timeout=60)
async def test_token_file_is_required_and_reread_on_reload(gates, tmp_path):
    backend = EchoBackend()
    await backend.start()
    token_path = os.path.join(str(tmp_path), "admin.token")
    with open(token_path, "w") as f:
        f.write(TOKEN + "\n")
    # Bound to every address: a token is required, and any IP literal is a valid Host (a
    # Kubernetes probe sends the pod IP), but a name still is not.
    config = make_config(pools={"echo": [backend.address]})
    config["admin"] = {"address": "0.0.0.0:0", "token_file": token_path}
    gate = await gates.launch(config)
    admin = ("127.0.0.1", admin_address(gate)[1])
    port = admin[1]
    try:
        assert (await acall(admin, "GET", "/admin/backends"))[0] == 401
        assert (await acall(admin, "GET", "/admin/backends", token="wrong"))[0] == 401
        assert (await acall(admin, "GET", "/admin/backends", token=TOKEN))[0] == 200
        assert (await acall(admin, "GET", "/healthz", {"Host": f"10.11.12.13:{port}"}))[0] == 200
        assert (await acall(admin, "GET", "/healthz", {"Host": f"[fd00::5]:{port}"}))[0] == 200
        status, _ = await acall(admin, "GET", "/admin/backends", {"Host": "rebind.example"},
                                token=TOKEN)
        assert status == 403
        printed = subprocess.run([gates.binary, "--print-config", "-c", gate.config_path],
                                 capture_output=True, text=True, timeout=10)
        assert f"token_file: {token_path}" in printed.stdout and TOKEN not in printed.stdout

        # SIGHUP reads the file again: the new token works, the old one no longer does.
        with open(token_path, "w") as f:
            f.write("rotated-token\n")
        gate.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: call(admin, "GET", "/admin/backends",
                                      token="rotated-token")[0] == 200, 10, "rotated token")
        assert (await acall(admin, "GET", "/admin/backends", token=TOKEN))[0] == 401
        # An empty file on reload is a config error: the running token stays.
        with open(token_path, "w") as f:
            f.write("")
        gate.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: "is empty" in gate.stderr_text(), 10, "reload error")
        assert f'{gate.config_path}:' in gate.stderr_text()
        assert (await acall(admin, "GET", "/admin/backends", token="rotated-token"))[0] == 200
        ws = await ws_connect(gate.url("/"))
        await ws.send("served")
        assert await recv(ws) == "served"
        await ws.close()
    finally:
        await backend.stop()
