"""wss://: TLS termination (SNI, versions, ALPN, mTLS, tickets, reload) and TLS to backends.

Certificates come from examples/tls/make-certs.sh (the openssl CLI) in a temporary directory;
clients are python3-websockets with an ssl context, Python's ssl module, and `openssl s_client`.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess

import pytest
import websockets

from harness import (MiB, SOURCE_DIR, WAIT, EchoBackend, async_test, make_config, metric, recv,
                     register_cleanup, run_wsgate, wait_until, wait_until_blocking, ws_connect)

MAKE_CERTS = os.path.join(SOURCE_DIR, "examples", "tls", "make-certs.sh")
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "tls", "wsgate-tls.yaml")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Directory with the example CA, server, client and backend certificates."""
    directory = str(tmp_path_factory.mktemp("certs"))
    subprocess.run(["bash", MAKE_CERTS, directory], check=True, capture_output=True, timeout=60)
    return directory


def pem(certs, name):
    return os.path.join(certs, name)


def tls_listener(certs, name="public", pairs=("chat",), **settings):
    """A TLS listener on a free loopback port serving the named certificate pairs."""
    tls = {"certificates": [{"cert": pem(certs, f"{p}.crt"), "key": pem(certs, f"{p}.key")}
                            for p in pairs]}
    tls.update(settings)
    return {"name": name, "address": "127.0.0.1:0", "tls": tls}


def tls_config(certs, backends, listeners=None, pool_tls=None, admin=True, **kwargs):
    config = make_config(pools={"default": backends}, **kwargs)
    config["listeners"] = listeners or [tls_listener(certs)]
    if pool_tls is not None:
        config["pools"][0]["tls"] = pool_tls
    if admin:
        config["admin"] = {"address": "127.0.0.1:0"}  # in the ready file as _admin
    return config


def client_context(certs, cert=None):
    """An ssl context that trusts the example CA, optionally with a client certificate."""
    context = ssl.create_default_context(cafile=pem(certs, "ca.crt"))
    if cert:
        context.load_cert_chain(pem(certs, f"{cert}.crt"), pem(certs, f"{cert}.key"))
    return context


def wss_url(gate, listener="public", path="/"):
    host, port = gate.listeners[listener]
    return f"wss://localhost:{port}{path}"


def start_gate(gates, config):
    """Start wsgate (blocking): for tests that need no in-process backend."""
    return gates.start(config)


def s_client(port, *args, data=b"", timeout=20):
    """Run `openssl s_client` against 127.0.0.1:port; return (exit code, output)."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          input=data, capture_output=True, timeout=timeout)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def served_subject(port, server_name, certs):
    """CN of the certificate served to a client asking for ``server_name`` (None: no SNI)."""
    context = ssl.create_default_context(cafile=pem(certs, "ca.crt"))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return subject["commonName"]


class TlsEchoBackend(EchoBackend):
    """The harness echo backend, served over TLS with a given certificate."""

    def __init__(self, certs, cert, require_client_cert=False, **kwargs):
        super().__init__(**kwargs)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pem(certs, f"{cert}.crt"), pem(certs, f"{cert}.key"))
        if require_client_cert:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(pem(certs, "ca.crt"))
        self.resumed = []  # per connection: did wsgate resume its TLS session?

    async def _handle(self, ws):
        self.resumed.append(ws.transport.get_extra_info("ssl_object").session_reused)
        await super()._handle(ws)

    async def start(self):
        self.server = await websockets.serve(
            self._handle, "127.0.0.1", 0, ssl=self.context, max_size=32 * MiB, compression=None,
            ping_interval=None, close_timeout=5, max_queue=None)
        self.port = self.server.sockets[0].getsockname()[1]
        register_cleanup(self.stop)
        return self


# ------------------------------------------------------------------------------------------------
# Configuration and the example.

def test_example_config_checks_with_made_certificates(tmp_path):
    """The shipped example passes --check once make-certs.sh has made its certificates."""
    shutil.copy(EXAMPLE, tmp_path / "wsgate-tls.yaml")
    missing = run_wsgate("--check", "-c", str(tmp_path / "wsgate-tls.yaml"))
    assert missing.returncode == 1
    # The error names the setting (file:line:col: key path) and the file.
    assert re.search(r"wsgate-tls\.yaml:\d+:\d+: listeners\[0\]\.tls\.certificates\[0\]\.cert: "
                     r"cannot read \".*/certs/chat\.crt\": No such file", missing.stderr), \
        missing.stderr
    subprocess.run(["bash", MAKE_CERTS, str(tmp_path / "certs")], check=True, capture_output=True,
                   timeout=60)
    result = run_wsgate("--check", "-c", str(tmp_path / "wsgate-tls.yaml"))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_bad_certificate_or_key_at_start_is_a_config_error(certs, tmp_path, gates):
    """Not PEM, a key for another certificate: wsgate refuses to start and names the file."""
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    config = tls_config(certs, ["127.0.0.1:9"], admin=False)
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", pem(certs, "api.key"), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, timeout=30)
    config["listeners"][0]["tls"]["certificates"] = [
        {"cert": str(garbage), "key": pem(certs, "chat.key")},
        {"cert": pem(certs, "chat.crt"), "key": pem(certs, "api.key")},
        {"cert": pem(certs, "api.crt"), "key": str(encrypted)}]
    path = gates.write_config(config, "bad.yaml")
    result = run_wsgate("-c", path)
    assert result.returncode == 1
    assert re.search(r"bad\.yaml:\d+:\d+: listeners\[0\]\.tls\.certificates\[0\]\.cert: "
                     r"no PEM certificate in \".*garbage\.crt\"", result.stderr), result.stderr
    assert re.search(r"listeners\[0\]\.tls\.certificates\[1\]\.key: private key \".*api\.key\" "
                     r"does not match the certificate \".*chat\.crt\"", result.stderr), result.stderr
    # An encrypted key is refused at once instead of prompting for a password.
    assert re.search(r"listeners\[0\]\.tls\.certificates\[2\]\.key: no PEM private key in "
                     r"\".*encrypted\.key\" \(encrypted keys are not supported\)", result.stderr), \
        result.stderr


def test_check_reports_every_bad_tls_file_and_setting(certs, tmp_path, gates):
    """--check loads every TLS file: each problem is one error at its setting, naming the file."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("junk\n")
    config = tls_config(certs, ["127.0.0.1:9"], admin=False, listeners=[
        tls_listener(certs, ciphers="NO-SUCH-CIPHER", client_ca=str(garbage))])
    config["pools"][0]["tls"] = {"ca": str(tmp_path / "missing-ca.pem"),
                                 "cert": pem(certs, "client.crt"), "key": pem(certs, "chat.key")}
    path = gates.write_config(config, "check.yaml")
    result = run_wsgate("--check", "-c", path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(path)]
    assert len(errors) == 4, result.stderr
    assert re.search(r":\d+:\d+: listeners\[0\]\.tls\.ciphers: no usable cipher in "
                     r"\"NO-SUCH-CIPHER\"", result.stderr), result.stderr
    assert re.search(r":\d+:\d+: listeners\[0\]\.tls\.client_ca: no PEM CA certificate in "
                     r"\".*garbage\.pem\"", result.stderr), result.stderr
    assert re.search(r":\d+:\d+: pools\[0\]\.tls\.ca: cannot read \".*missing-ca\.pem\": "
                     r"No such file", result.stderr), result.stderr
    assert re.search(r":\d+:\d+: pools\[0\]\.tls\.key: private key \".*chat\.key\" does not "
                     r"match the certificate \".*client\.crt\"", result.stderr), result.stderr


# ------------------------------------------------------------------------------------------------
# Termination.

@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=60)
async def test_wss_echo_of_1mib_messages_and_forwarded_proto(gates, certs, workers):
    """1 MiB text and binary messages echo over wss; the backend hears proto https."""
    backend = await EchoBackend().start()
    gate = await gates.launch(tls_config(certs, [backend.address], admin=False, workers=workers))
    clients = [await ws_connect(wss_url(gate), ssl=client_context(certs)) for _ in range(2)]
    for ws in clients:
        for message in (os.urandom(MiB), "x" * MiB):
            await ws.send(message)
            assert await recv(ws, timeout=30) == message
        await ws.close()
    headers = backend.connections[0].headers
    assert headers.get_all("X-Forwarded-Proto") == ["https"]
    assert "proto=https" in headers["Forwarded"]


def test_sni_picks_the_certificate(gates, certs):
    """The certificate whose names match the SNI is served; the first one otherwise."""
    gate = start_gate(gates, tls_config(certs, ["127.0.0.1:9"],
                                        listeners=[tls_listener(certs, pairs=("chat", "api"))]))
    port = gate.listeners["public"][1]
    assert served_subject(port, "api.example.test", certs) == "api.example.test"
    assert served_subject(port, "chat.example.test", certs) == "chat.example.test"
    assert served_subject(port, "unknown.example.test", certs) == "chat.example.test"
    assert served_subject(port, None, certs) == "chat.example.test"
    code, out = s_client(port, "-servername", "api.example.test", "-CAfile", pem(certs, "ca.crt"))
    assert "subject=CN = api.example.test" in out and "Verify return code: 0 (ok)" in out, out


def test_tls11_refused_and_alpn(gates, certs):
    """min_version TLSv1.2 refuses TLS 1.1 (counted); ALPN answers http/1.1, refuses h2 only."""
    gate = start_gate(gates, tls_config(certs, ["127.0.0.1:9"]))
    port = gate.listeners["public"][1]
    # SECLEVEL=0 lets Debian's OpenSSL offer TLS 1.1 at all, so the refusal is the server's.
    code, out = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert code != 0 and "alert protocol version" in out, out
    assert metric(gate, "wsgate_tls_handshake_failures_total", listener="public",
                  reason="protocol_version") == 1
    code, out = s_client(port, "-tls1_2", "-alpn", "h2,http/1.1")
    assert code == 0 and "ALPN protocol: http/1.1" in out, out
    code, out = s_client(port, "-alpn", "h2")
    assert code != 0, out
    assert metric(gate, "wsgate_tls_handshake_failures_total", listener="public",
                  reason="no_application_protocol") == 1
    assert metric(gate, "wsgate_handshakes_total", listener="public", result="tls_failed") == 2


def test_tls13_only_refuses_tls12(gates, certs):
    gate = start_gate(gates, tls_config(
        certs, ["127.0.0.1:9"], listeners=[tls_listener(certs, min_version="TLSv1.3")]))
    port = gate.listeners["public"][1]
    code, out = s_client(port, "-tls1_2")
    assert code != 0 and "alert protocol version" in out, out
    code, out = s_client(port, "-tls1_3")
    assert code == 0 and "New, TLSv1.3" in out, out


@async_test(timeout=60)
async def test_mtls_requires_a_client_certificate_from_the_ca(gates, certs):
    backend = await EchoBackend().start()
    listener = tls_listener(certs, client_ca=pem(certs, "ca.crt"))
    gate = await gates.launch(tls_config(certs, [backend.address], listeners=[listener]))
    with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage, EOFError,
                        websockets.ConnectionClosed, OSError)):
        ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
        await ws.send("no certificate")
        await recv(ws)
    # A certificate from an unrelated CA is refused too.
    with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage, EOFError,
                        websockets.ConnectionClosed, OSError)):
        context = client_context(certs)
        context.load_cert_chain(pem(certs, "other.crt"), pem(certs, "other.key"))
        ws = await ws_connect(wss_url(gate), ssl=context)
        await ws.send("wrong CA")
        await recv(ws)
    await wait_until(lambda: metric(gate, "wsgate_tls_handshake_failures_total",
                                    listener="public") >= 2, WAIT, "two counted failures")
    assert metric(gate, "wsgate_tls_handshake_failures_total", reason="no_client_certificate") == 1
    assert metric(gate, "wsgate_tls_handshake_failures_total", reason="bad_certificate") == 1
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs, cert="client"))
    await ws.send("with certificate")
    assert await recv(ws) == "with certificate"
    assert len(backend.connections) == 1


@async_test(timeout=60)
async def test_wrong_protocol_on_either_port_is_rejected_cleanly(gates, certs):
    """Plain HTTP to the TLS port is closed; TLS to the plain port gets 400; both keep serving."""
    backend = await EchoBackend().start()
    config = tls_config(certs, [backend.address], timeouts={"handshake": "2s"},
                        listeners=[tls_listener(certs),
                                   {"name": "plain", "address": "127.0.0.1:0"}])
    gate = await gates.launch(config)
    tls_port = gate.listeners["public"][1]
    plain_port = gate.listeners["plain"][1]

    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), WAIT)  # then EOF
    writer.close()
    # Told in plaintext what went wrong, as nothing was said over TLS yet.
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"plain HTTP sent to a TLS port" in answer
    # Other non-TLS bytes just get the close.
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
    writer.write(b"\x00" * 64)
    try:
        answer = await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        answer = b""
    writer.close()
    assert not answer.startswith(b"HTTP/"), answer
    await wait_until(lambda: metric(gate, "wsgate_tls_handshake_failures_total",
                                    reason="not_tls") == 2, WAIT, "not_tls counted")
    # Scanners do this all day: counted, but no line at the default log level.
    assert "TLS handshake failed" not in gate.stderr_text()

    # A silent client is cut off by timeouts.handshake, counted as a TLS timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()
    assert metric(gate, "wsgate_tls_handshake_failures_total", reason="timeout") == 1

    with socket.create_connection(("127.0.0.1", plain_port), timeout=WAIT) as raw:
        context = client_context(certs)
        context.check_hostname = False
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="localhost")
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
    await ws.send("tls still served")
    assert await recv(ws) == "tls still served"
    host, port = gate.listeners["plain"]
    ws = await ws_connect(f"ws://{host}:{port}/")
    await ws.send("plain still served")
    assert await recv(ws) == "plain still served"
    assert metric(gate, "wsgate_handshakes_total", listener="plain", result="bad_request") == 1


def test_session_resumption_with_tickets(gates, certs, tmp_path):
    gate = start_gate(gates, tls_config(certs, ["127.0.0.1:9"]))
    port = gate.listeners["public"][1]
    session = str(tmp_path / "session.pem")
    code, out = s_client(port, "-tls1_2", "-sess_out", session)
    assert code == 0 and "New, TLSv1.2" in out, out
    code, out = s_client(port, "-tls1_2", "-sess_in", session)
    assert code == 0 and "Reused, TLSv1.2" in out, out
    # The ticket keys are process-wide: a reload does not cost clients a full handshake.
    gate.proc.send_signal(signal.SIGHUP)
    wait_until_blocking(lambda: "reload complete" in gate.stderr_text(), WAIT,
                        "the reload's log line")
    code, out = s_client(port, "-tls1_2", "-sess_in", session)
    assert code == 0 and "Reused, TLSv1.2" in out, out
    # TLS 1.3 tickets arrive after the handshake; Python's ssl keeps and offers them.
    context = client_context(certs)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as first:
            first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first.recv(4096)  # the 426 answer; reading it also reads the ticket
            ticket = first.session
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost", session=ticket) as second:
            assert second.session_reused
    counts = {(v, r): metric(gate, "wsgate_tls_handshakes_total", listener="public", version=v,
                             resumed=r)
              for v in ("TLSv1.2", "TLSv1.3") for r in ("true", "false")}
    assert counts == {("TLSv1.2", "false"): 1, ("TLSv1.2", "true"): 2,
                      ("TLSv1.3", "false"): 1, ("TLSv1.3", "true"): 1}, counts


# ------------------------------------------------------------------------------------------------
# TLS to the backends.

@async_test(timeout=90)
async def test_upstream_tls_verifies_the_backend(gates, certs):
    """A backend with a certificate from the configured CA is used; one from another CA is 502."""
    good = await TlsEchoBackend(certs, "backend", name="good").start()
    bad = await TlsEchoBackend(certs, "other", name="bad").start()
    pool_tls = {"enabled": True, "ca": pem(certs, "ca.crt"), "server_name": "backend.internal"}
    config = tls_config(certs, [good.address], pool_tls=pool_tls, retries=0)
    config["pools"].append({"name": "untrusted", "backends": [{"address": bad.address}],
                            "tls": dict(pool_tls), "health_check": {
                                "type": "websocket", "interval": "500ms", "timeout": "400ms"}})
    config["pools"][0]["health_check"] = {"type": "websocket", "interval": "500ms",
                                          "timeout": "400ms"}
    config["routes"] = [{"match": {"path_prefix": "/bad"}, "pool": "untrusted"},
                        {"pool": "default"}]
    gate = await gates.launch(config)
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
    message = os.urandom(MiB)
    await ws.send(message)
    assert await recv(ws, timeout=30) == message
    await ws.close()
    with pytest.raises(websockets.InvalidStatusCode) as refused:
        await ws_connect(wss_url(gate, path="/bad/x"), ssl=client_context(certs))
    assert refused.value.status_code == 502
    assert len(bad.connections) == 0
    assert metric(gate, "wsgate_backend_connect_failures_total", pool="untrusted",
                  reason="tls_handshake") == 1
    # Health checks speak TLS too: the good backend stays up, the untrusted one goes down.
    await wait_until(lambda: f"backend untrusted/{bad.address} is unhealthy" in
                     gate.stderr_text(), 20, "untrusted backend marked down")
    await wait_until(lambda: metric(gate, "wsgate_backend_up", pool="default") == 1, WAIT,
                     "good backend reported up")
    assert f"backend default/{good.address} is unhealthy" not in gate.stderr_text()
    assert "certificate verify failed" in gate.stderr_text()
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
    await ws.send("again")
    assert await recv(ws) == "again"


@async_test(timeout=60)
async def test_upstream_tls_failure_retries_the_next_backend(gates, certs):
    """A backend whose certificate does not verify is one failed attempt; the retry succeeds."""
    bad = await TlsEchoBackend(certs, "other", name="bad").start()
    good = await TlsEchoBackend(certs, "backend", name="good").start()
    config = tls_config(certs, [{"address": bad.address, "weight": 1000}, good.address],
                        pool_tls={"ca": pem(certs, "ca.crt"), "server_name": "backend.internal"},
                        retries=1)
    config["pools"][0]["balance"] = "round_robin"
    gate = await gates.launch(config)
    for i in range(3):
        ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
        await ws.send(f"retried {i}")
        assert await recv(ws) == f"retried {i}"
        await ws.close()
    assert len(good.connections) == 3 and len(bad.connections) == 0
    assert metric(gate, "wsgate_backend_connect_failures_total", backend=bad.address,
                  reason="tls_handshake") >= 1


@async_test(timeout=60)
async def test_upstream_tls_checks_the_backend_host_by_default(gates, certs):
    """Without server_name the backend's host (127.0.0.1) is the checked name; verify: false
    skips the check entirely."""
    backend = await TlsEchoBackend(certs, "backend").start()
    gate = await gates.launch(tls_config(certs, [backend.address], admin=False,
                                         pool_tls={"ca": pem(certs, "ca.crt")}))
    for i in range(3):
        ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
        await ws.send(f"by address {i}")
        assert await recv(ws) == f"by address {i}"
        await ws.close()
    # The first connection to the backend is a full handshake; later ones resume its session.
    assert backend.resumed[0] is False and all(backend.resumed[1:]), backend.resumed
    other = await TlsEchoBackend(certs, "other").start()
    gate = await gates.launch(tls_config(certs, [other.address], admin=False,
                                         pool_tls={"verify": False}))
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
    await ws.send("unverified")
    assert await recv(ws) == "unverified"


@async_test(timeout=60)
async def test_upstream_tls_presents_the_client_certificate(gates, certs):
    """A backend that requires a client certificate gets the pool's cert; without one it is 502."""
    backend = await TlsEchoBackend(certs, "backend", require_client_cert=True).start()
    with_cert = {"ca": pem(certs, "ca.crt"), "cert": pem(certs, "client.crt"),
                 "key": pem(certs, "client.key")}
    gate = await gates.launch(tls_config(certs, [backend.address], admin=False,
                                         pool_tls=with_cert))
    ws = await ws_connect(wss_url(gate), ssl=client_context(certs))
    await ws.send("with client certificate")
    assert await recv(ws) == "with client certificate"
    gate = await gates.launch(tls_config(certs, [backend.address], admin=False, retries=0,
                                         pool_tls={"ca": pem(certs, "ca.crt")}))
    with pytest.raises(websockets.InvalidStatusCode) as refused:
        await ws_connect(wss_url(gate), ssl=client_context(certs))
    assert refused.value.status_code == 502
    assert len(backend.connections) == 1


# ------------------------------------------------------------------------------------------------
# Reload.

@async_test(timeout=60)
async def test_sighup_reloads_certificates_and_keeps_them_on_a_bad_file(gates, certs, tmp_path):
    backend = await EchoBackend().start()
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pem(certs, "chat.crt"), cert)
    shutil.copy(pem(certs, "chat.key"), key)
    listener = {"name": "public", "address": "127.0.0.1:0",
                "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]}}
    gate = await gates.launch(tls_config(certs, [backend.address], listeners=[listener],
                                         admin=False))
    port = gate.listeners["public"][1]
    assert served_subject(port, None, certs) == "chat.example.test"
    live = await ws_connect(wss_url(gate), ssl=client_context(certs))

    async def reload_and_wait(count):
        gate.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: gate.stderr_text().count("reload complete") >= count, WAIT,
                         "reload complete")

    shutil.copy(pem(certs, "api.crt"), cert)
    shutil.copy(pem(certs, "api.key"), key)
    await reload_and_wait(1)
    assert served_subject(port, None, certs) == "api.example.test"

    cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    await reload_and_wait(2)
    text = gate.stderr_text()
    assert re.search(r"reload: .*listeners\[0\]\.tls\.certificates\[0\]\.cert: no PEM certificate "
                     r"in \".*live\.crt\"", text), text
    assert "listener public keeps its previous TLS certificates" in text
    assert served_subject(port, None, certs) == "api.example.test"
    # The connection opened before both reloads still works.
    await live.send("across reloads")
    assert await recv(live) == "across reloads"
