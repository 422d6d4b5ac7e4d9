"""Service discovery (pools[].discovery) against a real DNS server: Debian's dnsmasq on
127.0.0.1:<free port>, answering from a hosts file it re-reads on SIGHUP. Backends are real echo
backends on 127.0.0.2, 127.0.0.3, ... (all on lo), one port, so a DNS name scales like a
headless Service."""

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from harness import (WAIT, EchoBackend, admin_address, admin_get, assert_still_serving,
                     async_test, make_config, metric, metrics_text, recv, run_wsgate, wait_until,
                     wait_ws_closed, ws_connect)

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
NAME = "chat.test"

pytestmark = pytest.mark.skipif(not os.path.exists(DNSMASQ),
                                reason="dnsmasq not installed (scripts/install-deps.sh)")


def dns_query(port, name, qtype=1, timeout=1.0):
    """Addresses (text) of an A (1) query for ``name`` at 127.0.0.1:port, or None when the
    server did not answer."""
    packet = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    packet += b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    packet += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, ("127.0.0.1", port))
            reply = s.recv(4096)
        except (socket.timeout, ConnectionRefusedError):
            return None
    answers = struct.unpack(">H", reply[6:8])[0]
    offset = len(packet)
    found = []
    for _ in range(answers):
        offset += 2  # a compressed name pointer
        rtype, _, _, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1:
            found.append(socket.inet_ntoa(reply[offset:offset + length]))
        offset += length
    return sorted(found)


class Dnsmasq:
    """dnsmasq answering ``NAME`` from a hosts file; set() rewrites it and SIGHUPs."""

    def __init__(self, tmp_path):
        self.hosts = os.path.join(str(tmp_path), "dns-hosts")
        self.log = os.path.join(str(tmp_path), "dnsmasq.log")
        self.proc = None
        self.port = None

    def start(self, addresses, extra=()):
        self._write(addresses)
        for _ in range(5):  # a free port can be taken between probing and binding
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts",
                     f"--addn-hosts={self.hosts}", f"--port={port}",
                     "--listen-address=127.0.0.1", "--bind-interfaces", f"--user={user}",
                     "--pid-file=", "--local=/test/", "--cache-size=0", "--log-facility=-",
                     *extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self.port = port
            deadline = time.monotonic() + WAIT
            while self.proc.poll() is None and time.monotonic() < deadline:
                if dns_query(port, NAME, timeout=0.2) is not None:
                    return self
            self.stop()
        raise AssertionError("dnsmasq did not start; log:\n" + open(self.log).read())

    def _write(self, addresses):
        with open(self.hosts + ".tmp", "w") as f:
            f.writelines(f"{a} {NAME}\n" for a in addresses)
        os.replace(self.hosts + ".tmp", self.hosts)

    async def set(self, addresses):
        """Answer ``addresses`` from now on (waits until dnsmasq does)."""
        self._write(addresses)
        self.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: dns_query(self.port, NAME) == sorted(addresses), WAIT,
                         f"dnsmasq answering {addresses}")

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def dns(tmp_path):
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


def shared_port():
    """A port free on 127.0.0.2..127.0.0.9."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
            port = probe.getsockname()[1]
        try:
            for i in range(3, 10):
                with socket.socket() as s:
                    s.bind((f"127.0.0.{i}", port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on every 127.0.0.x")


async def start_backends(hosts, port):
    """A greeting echo backend on each host, all on ``port``; {host: backend}."""
    backends = {}
    for host in hosts:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        backends[host] = await EchoBackend(name=host, greet=True).start(sock=sock)
    return backends


def discovery_config(dns_port, backend_port, require_at_start=True, drain="1s", workers=1,
                     interval="1s"):
    config = make_config(pools={"app": [f"{NAME}:{backend_port}"]},
                         timeouts={"drain": drain, "close": "2s"}, workers=workers)
    config["pools"][0]["discovery"] = {"interval": interval, "require_at_start": require_at_start}
    config["resolver"] = {"nameservers": [f"127.0.0.1:{dns_port}"]}
    config["admin"] = {"address": "127.0.0.1:0"}
    return config


async def admin_json(gate, path="/admin/backends"):
    status, body = await asyncio.to_thread(admin_get, *admin_address(gate), path)
    assert status == 200, (status, body)
    return json.loads(body)


async def pool_addresses(gate):
    """Addresses of pool app's backends that take new connections (state healthy)."""
    listing = await admin_json(gate)
    return sorted(b["address"] for b in listing["backends"]
                  if b["pool"] == "app" and b["state"] == "healthy")


async def wait_pool(gate, hosts, port):
    want = sorted(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts)
    deadline = time.monotonic() + WAIT
    while True:
        have = await pool_addresses(gate)
        if have == want:
            return
        assert time.monotonic() < deadline, f"pool app is {have}, expected {want}"
        await asyncio.sleep(0.05)


async def connect_named(gate):
    ws = await ws_connect(gate.url("/"))
    greeting = await recv(ws)
    assert greeting.startswith("hello from "), greeting
    return ws, greeting.removeprefix("hello from ")


async def scraped(gate, name, **labels):
    return await asyncio.to_thread(metric, gate, name, **labels)


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=90)
async def test_scale_up_from_2_to_4_addresses(gates, dns, workers):
    """A name going from 2 to 4 addresses: the new ones join the pool and take new connections;
    the live connections stay where they are. A SIGHUP reload keeps the set and re-resolves."""
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    port = shared_port()
    backends = await start_backends(hosts, port)
    dns.start(hosts[:2])
    gate = await gates.launch(discovery_config(dns.port, port, workers=workers))
    await wait_pool(gate, hosts[:2], port)
    held = [await connect_named(gate) for _ in range(2)]
    assert sorted(name for _, name in held) == hosts[:2]

    await dns.set(hosts)
    await wait_pool(gate, hosts, port)
    fresh = [await connect_named(gate) for _ in range(2)]
    # least_conn: the two busy old ones hold one connection each, the new ones none.
    assert sorted(name for _, name in fresh) == hosts[2:], fresh
    for ws, _ in held + fresh:
        token = os.urandom(4).hex()
        await ws.send(token)
        assert await recv(ws) == token
    assert all(b.connections[0].close_code is None for b in backends.values())
    listing = await admin_json(gate)
    state = listing["discovery"][0]
    assert state["pool"] == "app" and state["last_error"] is None, state
    assert state["names"] == [{"name": f"{NAME}:{port}",
                               "addresses": sorted(hosts)}], state

    gate.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: "reload complete" in gate.stderr_text(), WAIT, "reload complete")
    await wait_pool(gate, hosts, port)
    await dns.set(hosts[:3])
    await wait_pool(gate, hosts[:3], port)  # discovery still runs after the reload
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=90)
async def test_scale_up_with_rebalance_levels_existing_connections(gates, dns):
    """With rebalance on, addresses that join level the pool out: the surplus of the old ones
    is closed with 1012 (at rebalance.rate) and reconnects land on the new ones."""
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    port = shared_port()
    backends = await start_backends(hosts, port)
    dns.start(hosts[:2])
    config = discovery_config(dns.port, port)
    config["pools"][0]["rebalance"] = {"enabled": True, "tolerance": 1.2, "rate": 50}
    gate = await gates.launch(config)
    await wait_pool(gate, hosts[:2], port)
    clients = [await connect_named(gate) for _ in range(8)]
    assert sorted(name for _, name in clients) == sorted(hosts[:2] * 4)

    await dns.set(hosts)
    await wait_pool(gate, hosts, port)
    # Share 8/4 = 2 each, tolerance 1.2: each old backend keeps 2 and gives up 2.
    await wait_until(lambda: sum(ws.close_code == 1012 for ws, _ in clients) == 4, WAIT,
                     "4 rebalancing closes (1012)")
    for ws, _ in clients:
        if ws.close_code is None:
            token = os.urandom(4).hex()
            await ws.send(token)
            assert await recv(ws) == token
    reconnected = [await connect_named(gate) for _ in range(4)]
    assert sorted(name for _, name in reconnected) == sorted(hosts[2:] * 2), reconnected
    assert await scraped(gate, "wsgate_rebalance_closes_total") == 4
    await wait_until(lambda: [b.active for b in backends.values()] == [2, 2, 2, 2], WAIT,
                     "2 connections on each backend")
    await assert_still_serving(gate, greeting=True)


@pytest.mark.parametrize("workers", [1, 2])
@async_test(timeout=90)
async def test_scale_down_from_4_to_1_drains_the_vanished(gates, dns, workers):
    """4 addresses to 1: the vanished backends drain like a reload removal (their clients get
    1001 after timeouts.drain, at a frame boundary), new connections go only to the one left."""
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    port = shared_port()
    backends = await start_backends(hosts, port)
    dns.start(hosts)
    gate = await gates.launch(discovery_config(dns.port, port, drain="1s", workers=workers))
    await wait_pool(gate, hosts, port)
    held = {}
    for _ in range(4):
        ws, name = await connect_named(gate)
        held[name] = ws
    assert sorted(held) == hosts

    await dns.set(hosts[:1])
    await wait_pool(gate, hosts[:1], port)
    for _ in range(3):
        _, name = await connect_named(gate)
        assert name == hosts[0]
    for host in hosts[1:]:
        await wait_ws_closed(held[host], WAIT)
        assert held[host].close_code == 1001, (host, held[host].close_code)
        record = await backends[host].wait_closed_record(0)
        assert record.close_code == 1001, (host, record.close_code)
    token = os.urandom(4).hex()
    await held[hosts[0]].send(token)
    assert await recv(held[hosts[0]]) == token
    assert backends[hosts[0]].connections[0].close_code is None
    # Drained and gone: no longer listed, their metric series removed.
    await wait_until(lambda: all(f"{h}:{port}" not in (
        admin_get(*admin_address(gate), "/admin/backends")[1]) for h in hosts[1:]),
        WAIT, "the drained backends to leave /admin/backends")
    exposition = await asyncio.to_thread(metrics_text, gate)
    assert not [h for h in hosts[1:] if f'backend="{h}:{port}"' in exposition], exposition
    assert f'wsgate_backend_up{{pool="app",backend="{hosts[0]}:{port}"}} 1' in exposition
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=120)
async def test_dns_server_not_answering_keeps_the_last_set(gates, dns):
    """The DNS server stops answering: the pool keeps its backends, each failed round is
    counted, the failure is logged once (not every interval) and shown by /admin/backends, and
    clients are still served. When it answers again the error clears."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = shared_port()
    await start_backends(hosts, port)
    dns.start(hosts)
    gate = await gates.launch(discovery_config(dns.port, port))
    await wait_pool(gate, hosts, port)
    assert await scraped(gate, "wsgate_discovery_errors_total", pool="app") == 0

    dns.pause()
    deadline = time.monotonic() + 60
    while await scraped(gate, "wsgate_discovery_errors_total", pool="app") < 2:
        assert time.monotonic() < deadline, "wsgate_discovery_errors_total did not reach 2"
        await asyncio.sleep(0.1)
    assert await pool_addresses(gate) == sorted(f"{h}:{port}" for h in hosts)
    state = (await admin_json(gate))["discovery"][0]
    assert state["last_error"] and NAME in state["last_error"], state
    assert state["names"][0]["addresses"] == hosts, state
    warnings = [line for line in gate.stderr_text().splitlines()
                if "discovery: pool app:" in line and "keeping the last known" in line]
    assert len(warnings) == 1, warnings
    await assert_still_serving(gate, greeting=True)
    status, body = await asyncio.to_thread(admin_get, *admin_address(gate), "/readyz")
    assert status == 200, (status, body)

    dns.resume()
    deadline = time.monotonic() + 60
    while (await admin_json(gate))["discovery"][0]["last_error"] is not None:
        assert time.monotonic() < deadline, "discovery error did not clear"
        await asyncio.sleep(0.1)
    assert "discovery: pool app resolves again" in gate.stderr_text()
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=60)
async def test_a_and_aaaa_addresses_are_all_backends(gates, dns):
    """A name with an A and an AAAA record: both addresses are backends of the pool."""
    port = shared_port()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", port))
    except OSError:
        pytest.skip("no IPv6 loopback, or the port is taken on ::1")
    hosts = ["127.0.0.2", "::1"]
    await start_backends(hosts, port)
    dns.start(hosts)
    gate = await gates.launch(discovery_config(dns.port, port))
    await wait_pool(gate, hosts, port)
    names = sorted([(await connect_named(gate))[1] for _ in range(2)])
    assert names == sorted(hosts), names
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=60)
async def test_a_shorter_ttl_than_the_interval_sets_the_pace(gates, dns):
    """interval 60s, records with a 2s TTL: a change is seen within seconds, not a minute."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = shared_port()
    await start_backends(hosts, port)
    dns.start(hosts[:1], extra=["--local-ttl=2"])
    gate = await gates.launch(discovery_config(dns.port, port, interval="60s"))
    await wait_pool(gate, hosts[:1], port)
    await dns.set(hosts)
    await wait_pool(gate, hosts, port)  # within WAIT (10s), far below the 60s interval
    state = (await admin_json(gate))["discovery"][0]
    assert state["interval_ms"] == 2000, state
    await assert_still_serving(gate, greeting=True)


@async_test(timeout=90)
async def test_not_required_at_start_starts_empty_then_fills(gates, dns):
    """require_at_start: false and no answer: wsgate starts, the pool is empty and /readyz says
    which; when the name appears the pool fills and clients are served."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = shared_port()
    await start_backends(hosts, port)
    dns.start([])
    gate = await gates.launch(discovery_config(dns.port, port, require_at_start=False))
    assert "starts without it: require_at_start is false" in gate.stderr_text()
    status, body = await asyncio.to_thread(admin_get, *admin_address(gate), "/readyz")
    assert status == 503 and "pool app" in body, (status, body)
    assert await pool_addresses(gate) == []

    await dns.set(hosts)
    await wait_pool(gate, hosts, port)
    await wait_until(lambda: admin_get(*admin_address(gate), "/readyz")[0] == 200, WAIT,
                     "/readyz 200")
    await assert_still_serving(gate, greeting=True)


def test_required_name_that_does_not_resolve_stops_start_and_check(gates, dns, tmp_path):
    """require_at_start (the default): --check and start fail at the entry's file:line:col;
    with require_at_start: false, --check warns and passes."""
    dns.start([])
    config = discovery_config(dns.port, 9)
    path = gates.write_config(config, "required.yaml")
    line = open(path).read().splitlines().index(f"      - address: {NAME}:9") + 1
    where = (f"{path}:{line}:18: pools[0].backends[0].address: cannot resolve {NAME}: "
             "no such name (NXDOMAIN)")
    check = run_wsgate("--check", "-c", path)
    assert check.returncode == 1 and where in check.stderr, check.stderr
    start = run_wsgate("-c", path)
    assert start.returncode == 1 and where in start.stderr, start.stderr

    config["pools"][0]["discovery"]["require_at_start"] = False
    path = gates.write_config(config, "optional.yaml")
    check = run_wsgate("--check", "-c", path)
    assert check.returncode == 0, check.stderr
    assert f"warning: {path}:{line}:18: pools[0].backends[0].address: cannot resolve" in (
        check.stderr), check.stderr
