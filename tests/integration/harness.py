"""Helpers for the wsgate integration tests.

Everything a test needs besides pytest itself:

* ``to_yaml`` / ``make_config``: build a wsgate config as a dict and render it as YAML.
* ``GateLauncher`` / ``Gate``: run the wsgate binary, wait for its ready file, read its logs.
* ``async_test``: run an ``async def`` test body in a fresh event loop with a deadline.
* ``EchoBackend``: an in-process websockets echo server that records every connection.
* ``ScriptedBackend``: a raw TCP server driven by a test-supplied coroutine, recording bytes.
* ``RawPeer`` plus frame/HTTP helpers: speak the wire protocol byte by byte.
* ``DemoBackendProcess``: examples/demo_backend.py as a subprocess that can be SIGKILLed.
"""

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("WSGATE_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
WSGATE_BIN = os.environ.get("WSGATE_BIN") or os.path.join(SOURCE_DIR, "build", "wsgate")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
DEMO_BACKEND = os.path.join(SOURCE_DIR, "examples", "demo_backend.py")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MiB = 1024 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Default per-operation deadline in seconds for waits in the helpers.
WAIT = 10.0


# --------------------------------------------------------------------------------------------
# YAML config
# --------------------------------------------------------------------------------------------

_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./:\-*\[\]]+$")


def _yaml_scalar(value):
    """Render one scalar; strings are quoted unless obviously safe."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    looks_special = text.lower() in ("true", "false", "yes", "no", "null", "on", "off", "~", "")
    if _PLAIN_SCALAR.match(text) and not looks_special and not text.startswith(("-", "*", "[")):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _yaml_lines(value, indent):
    """Yield YAML lines for a mapping or sequence at the given indent."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            yield pad + "{}"
            return
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                yield f"{pad}{key}:"
                yield from _yaml_lines(item, indent + 2)
            elif isinstance(item, (dict, list)):
                yield f"{pad}{key}: {'{}' if isinstance(item, dict) else '[]'}"
            else:
                yield f"{pad}{key}: {_yaml_scalar(item)}"
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = list(_yaml_lines(item, indent + 2))
                yield f"{pad}- {nested[0].lstrip()}"
                yield from nested[1:]
            elif isinstance(item, (dict, list)):
                yield f"{pad}- {'{}' if isinstance(item, dict) else '[]'}"
            else:
                yield f"{pad}- {_yaml_scalar(item)}"
    else:
        yield pad + _yaml_scalar(value)


def to_yaml(config):
    """Render a config dict (dicts, lists, scalars) as block-style YAML text."""
    return "\n".join(_yaml_lines(config, 0)) + "\n"


def make_config(pools, routes=None, limits=None, timeouts=None, listeners=None, retries=None,
                workers=1):
    """Build a wsgate config dict.

    ``pools`` maps pool name -> list of backend addresses (or dicts with address/weight), or
    pool name -> dict with ``balance`` and ``backends``. Without ``routes`` everything goes to
    the first pool.
    """
    pool_list = []
    for name, spec in pools.items():
        if isinstance(spec, dict):
            balance = spec.get("balance")
            backends = spec["backends"]
        else:
            balance, backends = None, spec
        entry = {"name": name}
        if balance:
            entry["balance"] = balance
        entry["backends"] = [b if isinstance(b, dict) else {"address": b} for b in backends]
        pool_list.append(entry)
    config = {
        "workers": workers,
        "listeners": listeners or [{"name": "public", "address": "127.0.0.1:0"}],
        "routes": routes if routes is not None else [{"pool": next(iter(pools))}],
        "pools": pool_list,
    }
    if limits:
        config["limits"] = limits
    if timeouts:
        config["timeouts"] = timeouts
    if retries is not None:
        config["retries"] = retries
    return config


# --------------------------------------------------------------------------------------------
# wsgate process
# --------------------------------------------------------------------------------------------

class GateStartError(RuntimeError):
    """wsgate exited or never wrote its ready file."""


class Gate:
    """One running wsgate process."""

    def __init__(self, proc, config_path, ready_path, stderr_path, stdout_path):
        self.proc = proc
        self.config_path = config_path
        self.ready_path = ready_path
        self.stderr_path = stderr_path
        self.stdout_path = stdout_path
        self.listeners = {}  # name -> (host, port)

    @property
    def host(self):
        """Host of the first listener."""
        return next(iter(self.listeners.values()))[0]

    @property
    def port(self):
        """Port of the first listener."""
        return next(iter(self.listeners.values()))[1]

    def url(self, path="/", listener=None):
        """ws:// URL for a path on a listener (first one by default)."""
        host, port = self.listeners[listener] if listener else (self.host, self.port)
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{port}{path}"

    def stderr_text(self):
        """Everything wsgate wrote to stderr so far."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def access_lines(self):
        """Access-log lines written so far."""
        return [line for line in self.stderr_text().splitlines() if "access" in line]

    async def wait_for_access_lines(self, count, timeout=WAIT):
        """Wait until at least ``count`` access-log lines exist; return them."""
        await wait_until(lambda: len(self.access_lines()) >= count, timeout,
                         f"{count} access-log line(s)")
        return self.access_lines()

    def alive(self):
        """True while the process runs."""
        return self.proc.poll() is None

    def _parse_ready_file(self):
        """Return {name: (host, port)} once the ready file is complete, else None."""
        try:
            with open(self.ready_path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        if not text.endswith("\n"):
            return None
        listeners = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 2 or ":" not in parts[1]:
                return None
            host, _, port = parts[1].rpartition(":")
            if not port.isdigit():
                return None
            listeners[parts[0]] = (host.strip("[]"), int(port))
        return listeners or None

    def poll_ready(self, expected_listeners):
        """Check the ready file once; raise if the process died."""
        listeners = self._parse_ready_file()
        if listeners is not None and len(listeners) >= expected_listeners:
            self.listeners = listeners
            return True
        if self.proc.poll() is not None:
            raise GateStartError(
                f"wsgate exited with {self.proc.returncode} before it was ready; stderr:\n"
                + self.stderr_text())
        return False

    def terminate(self, timeout=5.0):
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class GateLauncher:
    """Starts wsgate processes for one test and stops them all at the end."""

    def __init__(self, tmp_path, binary=WSGATE_BIN):
        self.tmp_path = str(tmp_path)
        self.binary = binary
        self.gates = []

    def write_config(self, config, name=None):
        """Write a config (dict or YAML text) to a fresh file; return its path."""
        name = name or f"wsgate-{len(self.gates)}-{time.monotonic_ns()}.yaml"
        path = os.path.join(self.tmp_path, name)
        text = config if isinstance(config, str) else to_yaml(config)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _spawn(self, config, log_level):
        if not os.path.exists(self.binary):
            raise GateStartError(f"wsgate binary not found at {self.binary} (set WSGATE_BIN)")
        index = len(self.gates)
        config_path = self.write_config(config, f"wsgate-{index}.yaml")
        ready_path = os.path.join(self.tmp_path, f"wsgate-{index}.ready")
        stderr_path = os.path.join(self.tmp_path, f"wsgate-{index}.stderr")
        stdout_path = os.path.join(self.tmp_path, f"wsgate-{index}.stdout")
        args = [self.binary, "-c", config_path, "--ready-file", ready_path]
        if log_level:
            args += ["--log-level", log_level]
        with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        gate = Gate(proc, config_path, ready_path, stderr_path, stdout_path)
        self.gates.append(gate)
        listeners = config.get("listeners", [None]) if isinstance(config, dict) else [None]
        return gate, len(listeners)

    def start(self, config, log_level="info", timeout=WAIT):
        """Start wsgate (blocking) and wait for its ready file."""
        gate, expected = self._spawn(config, log_level)
        deadline = time.monotonic() + timeout
        while not gate.poll_ready(expected):
            if time.monotonic() > deadline:
                raise GateStartError(f"no ready file after {timeout}s; stderr:\n"
                                     + gate.stderr_text())
            time.sleep(0.01)
        return gate

    async def launch(self, config, log_level="info", timeout=WAIT):
        """Start wsgate from inside an event loop without blocking it."""
        gate, expected = self._spawn(config, log_level)
        deadline = time.monotonic() + timeout
        while not gate.poll_ready(expected):
            if time.monotonic() > deadline:
                raise GateStartError(f"no ready file after {timeout}s; stderr:\n"
                                     + gate.stderr_text())
            await asyncio.sleep(0.01)
        return gate

    def stop_all(self):
        """Terminate every gate this launcher started."""
        for gate in self.gates:
            gate.terminate()


def ready_entries(gate):
    """{name: (host, port)} from a gate's ready file, including the `_admin` line."""
    with open(gate.ready_path) as f:
        text = f.read()
    entries = {}
    for line in text.splitlines():
        name, address = line.split()
        host, _, port = address.rpartition(":")
        entries[name] = (host.strip("[]"), int(port))
    return entries


def admin_address(gate):
    """(host, port) of a gate's admin listener, from the `_admin` line of its ready file."""
    entries = ready_entries(gate)
    assert "_admin" in entries, f"ready file {gate.ready_path} has no _admin line: {entries}"
    return entries["_admin"]


def admin_get(host, port, path, token=None, timeout=5):
    """(status, body) of GET |path| on an admin listener at host:port, sent with the Host a local
    operator's curl would send, or (None, error) if refused or unanswered."""
    import http.client
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Host": f"127.0.0.1:{port}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError as error:
        return None, repr(error)
    finally:
        connection.close()


def metrics_text(gate, token=None):
    """GET /metrics from a gate's admin listener (the config needs an ``admin`` section; with
    ``token``, sent as its bearer token)."""
    host, port = admin_address(gate)
    request = urllib.request.Request(f"http://{host}:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return response.read().decode()


def metric(gate, name, **labels):
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text(gate).splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def sanitized_build(binary=WSGATE_BIN):
    """ASan keeps freed memory in quarantine, so RSS says nothing about buffering there."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def rss_kib(pid):
    """Resident set size of a process in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def run_wsgate(*args, timeout=WAIT):
    """Run the wsgate binary to completion (for CLI tests)."""
    return subprocess.run([WSGATE_BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# async test plumbing
# --------------------------------------------------------------------------------------------

_cleanups = []


def register_cleanup(coro_fn):
    """Run ``coro_fn()`` when the current async test body finishes."""
    _cleanups.append(coro_fn)


def async_test(timeout=60):
    """Decorator: run an ``async def`` test in its own event loop with an overall deadline."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def body():
                _cleanups.clear()
                try:
                    await asyncio.wait_for(fn(*args, **kwargs), timeout)
                finally:
                    while _cleanups:
                        cleanup = _cleanups.pop()
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(cleanup(), 5)
            asyncio.run(body())
        return wrapper
    return decorate


async def wait_until(predicate, timeout=WAIT, what="condition", interval=0.01):
    """Poll ``predicate`` until true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_blocking(predicate, timeout=WAIT, what="condition", interval=0.01):
    """Blocking ``wait_until``, for tests (and their threads) without an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_steady(value, settle=0.5, timeout=WAIT, what="value", interval=0.05):
    """Wait (blocking) until ``value()`` has not changed for ``settle`` seconds; return it. For
    "the peer stopped making progress": a stalled writer, a bounded buffer that filled."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while True:
        time.sleep(interval)
        now, at = value(), time.monotonic()
        if now != last:
            last, since = now, at
        elif at - since >= settle:
            return now
        if at > deadline:
            raise AssertionError(f"{what} never settled within {timeout}s (last {last})")


async def wait_event(event, timeout=WAIT, what="event"):
    """Wait for an asyncio.Event with a deadline."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def closed_port():
    """A loopback port that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accept_for(key):
    """Sec-WebSocket-Accept value for a Sec-WebSocket-Key."""
    digest = hashlib.sha1((key + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def new_key():
    """A fresh random Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


# --------------------------------------------------------------------------------------------
# In-process websockets echo backend
# --------------------------------------------------------------------------------------------

@dataclass
class BackendConnection:
    """What an EchoBackend saw on one connection."""

    path: str
    headers: object  # websockets Headers
    subprotocol: str = None
    messages: list = field(default_factory=list)
    close_code: int = None
    close_reason: str = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def header_values(self, name):
        """All values of a request header, in order."""
        return self.headers.get_all(name)


class EchoBackend:
    """websockets echo server on 127.0.0.1:0 that records every connection.

    A text message ``!close CODE REASON`` makes it close with that code and reason instead of
    echoing. With ``greet`` it first sends ``hello from NAME``.
    """

    def __init__(self, name="echo", greet=False, compression=None, subprotocols=("chat",)):
        self.name = name
        self.greet = greet
        self.compression = compression
        self.subprotocols = list(subprotocols) if subprotocols else None
        self.connections = []
        self.active = 0
        self.server = None
        self.port = None

    @property
    def address(self):
        """host:port string for the config."""
        return f"127.0.0.1:{self.port}"

    async def start(self, sock=None):
        """Start listening (on ``sock``, a listening socket, if given); return self."""
        where = {"sock": sock} if sock is not None else {"host": "127.0.0.1", "port": 0}
        self.server = await websockets.serve(
            self._handle, **where, max_size=32 * MiB, compression=self.compression,
            subprotocols=self.subprotocols, ping_interval=None, close_timeout=5,
            max_queue=None)
        self.port = self.server.sockets[0].getsockname()[1]
        register_cleanup(self.stop)
        return self

    async def stop(self):
        """Stop listening and close open connections."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, ws):
        record = BackendConnection(path=ws.path, headers=ws.request_headers,
                                   subprotocol=ws.subprotocol)
        self.connections.append(record)
        self.active += 1
        try:
            if self.greet:
                await ws.send(f"hello from {self.name}")
            async for message in ws:
                record.messages.append(message)
                if isinstance(message, str) and message.startswith("!close "):
                    _, code, reason = message.split(" ", 2)
                    await ws.close(int(code), reason)
                    break
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                await ws.wait_closed()
            record.close_code = ws.close_code
            record.close_reason = ws.close_reason
            self.active -= 1
            record.closed.set()

    async def wait_connections(self, count, timeout=WAIT):
        """Wait until at least ``count`` connections were accepted."""
        await wait_until(lambda: len(self.connections) >= count, timeout,
                         f"{count} connection(s) on backend {self.name}")
        return self.connections

    async def wait_closed_record(self, index=-1, timeout=WAIT):
        """Wait until connection ``index`` finished; return its record."""
        await self.wait_connections(1 if index == -1 else index + 1, timeout)
        record = self.connections[index]
        await wait_event(record.closed, timeout, f"backend {self.name} connection close")
        return record


async def start_echo_backends(count, **kwargs):
    """Start ``count`` echo backends named b0..bN-1."""
    backends = []
    for i in range(count):
        backends.append(await EchoBackend(name=f"b{i}", **kwargs).start())
    return backends


# --------------------------------------------------------------------------------------------
# Raw byte streams, HTTP and frames
# --------------------------------------------------------------------------------------------

class RawPeer:
    """A TCP stream whose incoming bytes are pumped into a buffer and all recorded.

    Used for raw clients and for scripted backends. ``received`` keeps every byte ever read;
    reads consume from a cursor over it.
    """

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.cursor = 0
        self.eof = False
        self.reset = False
        self._data = asyncio.Event()
        self._pump_task = asyncio.ensure_future(self._pump())

    @classmethod
    async def connect(cls, port, host="127.0.0.1", timeout=WAIT, source=None):
        """Open a TCP connection (from the address ``source`` if given, e.g. 127.0.0.2)."""
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), timeout)
        peer = cls(reader, writer)
        register_cleanup(peer.close_quietly)
        return peer

    async def _pump(self):
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.received += chunk
                self._data.set()
        except (ConnectionResetError, BrokenPipeError, OSError):
            self.reset = True
        finally:
            self.eof = True
            self._data.set()

    async def _wait_data(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {what}; buffered: "
                                 f"{bytes(self.received[self.cursor:self.cursor + 200])!r}")
        self._data.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._data.wait(), remaining)

    async def read_until(self, separator, timeout=WAIT):
        """Read through ``separator``; return the bytes including it."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.received.find(separator, self.cursor)
            if index >= 0:
                end = index + len(separator)
                data = bytes(self.received[self.cursor:end])
                self.cursor = end
                return data
            if self.eof:
                raise EOFError(f"EOF before {separator!r}; got "
                               f"{bytes(self.received[self.cursor:self.cursor + 300])!r}")
            await self._wait_data(deadline, repr(separator))

    async def read_exactly(self, count, timeout=WAIT):
        """Read exactly ``count`` bytes."""
        deadline = time.monotonic() + timeout
        while len(self.received) - self.cursor < count:
            if self.eof:
                raise EOFError(f"EOF after {len(self.received) - self.cursor} of {count} bytes")
            await self._wait_data(deadline, f"{count} bytes")
        data = bytes(self.received[self.cursor:self.cursor + count])
        self.cursor += count
        return data

    def pending(self):
        """Bytes received but not read yet."""
        return bytes(self.received[self.cursor:])

    async def wait_eof(self, timeout=WAIT):
        """Wait for the peer to close (FIN or RST); return True if it did in time."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                return False
            self._data.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data.wait(), max(0.0, deadline - time.monotonic()))
        return True

    async def write(self, data):
        """Send bytes (ignores a peer that already went away)."""
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.write(data)
            await self.writer.drain()

    def close(self):
        """Close our side (FIN)."""
        with contextlib.suppress(Exception):
            self.writer.close()

    def abort(self):
        """Drop the connection without a FIN handshake (RST)."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close_quietly(self):
        """Cleanup hook: close and stop the pump."""
        self.close()
        self._pump_task.cancel()
        with contextlib.suppress(BaseException):
            await self._pump_task


@dataclass
class HttpMessage:
    """A parsed HTTP request or response head (plus body for responses)."""

    start_line: str
    headers: list  # [(name, value)] in order
    body: bytes = b""
    raw_head: bytes = b""

    @property
    def status(self):
        """Numeric status of a response."""
        return int(self.start_line.split(" ", 2)[1])

    @property
    def method(self):
        """Method of a request."""
        return self.start_line.split(" ", 1)[0]

    @property
    def target(self):
        """Request target of a request."""
        return self.start_line.split(" ", 2)[1]

    def get_all(self, name):
        """All values of a header (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name, default=None):
        """First value of a header."""
        values = self.get_all(name)
        return values[0] if values else default

    def has_token(self, name, token):
        """True if a comma-separated header contains ``token`` (case-insensitive)."""
        for value in self.get_all(name):
            if token.lower() in [t.strip().lower() for t in value.split(",")]:
                return True
        return False


def parse_head(raw):
    """Parse an HTTP head (bytes ending in CRLFCRLF)."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return HttpMessage(start_line=lines[0], headers=headers, raw_head=raw)


async def read_http_response(peer, timeout=WAIT, max_body=1 * MiB):
    """Read one HTTP response (head and Content-Length body) from a RawPeer."""
    head = parse_head(await peer.read_until(b"\r\n\r\n", timeout))
    length = head.get("Content-Length")
    if length is not None and head.status != 101:
        head.body = await peer.read_exactly(min(int(length), max_body), timeout)
    return head


async def read_http_request(peer, timeout=WAIT):
    """Read one HTTP request head from a RawPeer."""
    return parse_head(await peer.read_until(b"\r\n\r\n", timeout))


def upgrade_request(path="/", host="127.0.0.1", key=None, extra=(), drop=(), replace=None,
                    method="GET", version="HTTP/1.1"):
    """Bytes of a WebSocket upgrade request.

    ``drop`` removes default headers by name, ``replace`` overrides their values, ``extra`` adds
    (name, value) pairs at the end.
    """
    replace = {k.lower(): v for k, v in (replace or {}).items()}
    dropped = {d.lower() for d in drop}
    defaults = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key or new_key()), ("Sec-WebSocket-Version", "13")]
    lines = [f"{method} {path} {version}"]
    for name, value in defaults:
        if name.lower() in dropped:
            continue
        lines.append(f"{name}: {replace.get(name.lower(), value)}")
    for name, value in extra:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def request_key(request_bytes):
    """The Sec-WebSocket-Key inside a request built by upgrade_request."""
    match = re.search(rb"Sec-WebSocket-Key: ([^\r\n]+)", request_bytes)
    return match.group(1).decode() if match else None


@dataclass
class Frame:
    """One WebSocket frame as seen on the wire."""

    fin: bool
    rsv: int  # 3 bits, RSV1 = 4
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self):
        """Status code of a close frame (None when it has no payload)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        """Reason text of a close frame."""
        return self.payload[2:].decode("utf-8", "replace")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None):
    """Serialise one frame. ``mask`` True for client-to-server frames."""
    if isinstance(payload, str):
        payload = payload.encode()
    first = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return header + key + apply_mask(payload, key)


def apply_mask(payload, key):
    """XOR payload with a 4-byte masking key."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


def close_payload(code, reason=""):
    """Payload of a close frame."""
    return struct.pack("!H", code) + reason.encode()


async def read_frame(peer, timeout=WAIT):
    """Read and decode one frame from a RawPeer (unmasking if needed)."""
    b0, b1 = await peer.read_exactly(2, timeout)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", await peer.read_exactly(2, timeout))[0]
    elif length == 127:
        length = struct.unpack("!Q", await peer.read_exactly(8, timeout))[0]
    masked = bool(b1 & 0x80)
    key = await peer.read_exactly(4, timeout) if masked else None
    payload = await peer.read_exactly(length, timeout)
    if masked:
        payload = apply_mask(payload, key)
    return Frame(fin=bool(b0 & 0x80), rsv=(b0 >> 4) & 7, opcode=b0 & 0x0F, masked=masked,
                 payload=payload)


async def read_until_close(peer, timeout=WAIT):
    """Read frames until a close frame; return (close_frame, frames_before_it).

    Raises AssertionError if the stream ends first.
    """
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        try:
            frame = await read_frame(peer, max(0.01, deadline - time.monotonic()))
        except EOFError:
            raise AssertionError(
                f"connection ended without a close frame (frames before: "
                f"{[(f.opcode, f.payload[:40]) for f in frames]}, reset={peer.reset})") from None
        if frame.opcode == OP_CLOSE:
            return frame, frames
        frames.append(frame)


class RawClient(RawPeer):
    """A raw-socket WebSocket client (masks its frames)."""

    async def handshake(self, path="/", host="127.0.0.1", extra=(), timeout=WAIT):
        """Send an upgrade request and require a valid 101; return the response."""
        request = upgrade_request(path=path, host=host, extra=extra)
        await self.write(request)
        response = await read_http_response(self, timeout)
        assert response.status == 101, f"expected 101, got {response.start_line}: {response}"
        assert response.get("Sec-WebSocket-Accept") == accept_for(request_key(request))
        return response

    async def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        """Send one frame."""
        await self.write(encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv))

    async def expect_close(self, timeout=WAIT):
        """Read until a close frame, answer it, and require TCP close; return the frame."""
        frame, _ = await read_until_close(self, timeout)
        await self.write(encode_frame(OP_CLOSE, frame.payload[:2], mask=True))
        assert await self.wait_eof(timeout), "TCP connection stayed open after the close frame"
        return frame


class ScriptedBackend:
    """Raw TCP backend; each connection runs ``script(peer)`` and all bytes are recorded.

    After the script returns, the connection keeps being read (and recorded) until the proxy
    closes it, unless the script closed it.
    """

    def __init__(self, script):
        self.script = script
        self.peers = []
        self.results = []
        self.errors = []
        self.server = None
        self.port = None

    @property
    def address(self):
        """host:port string for the config."""
        return f"127.0.0.1:{self.port}"

    async def start(self):
        """Start listening; return self."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        register_cleanup(self.stop)
        return self

    async def stop(self):
        """Close the listener and every connection."""
        if self.server is not None:
            self.server.close()
            for peer in self.peers:
                await peer.close_quietly()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader, writer):
        peer = RawPeer(reader, writer)
        self.peers.append(peer)
        try:
            self.results.append(await self.script(peer))
        except Exception as err:  # recorded so the test can show it
            self.errors.append(err)

    async def wait_connections(self, count, timeout=WAIT):
        """Wait until at least ``count`` connections arrived."""
        await wait_until(lambda: len(self.peers) >= count, timeout,
                         f"{count} backend connection(s)")
        return self.peers

    async def wait_results(self, count, timeout=WAIT):
        """Wait until ``count`` scripts finished; return their results."""
        await wait_until(lambda: len(self.results) + len(self.errors) >= count, timeout,
                         f"{count} backend script(s) to finish")
        if self.errors:
            raise AssertionError(f"backend script failed: {self.errors[0]!r}")
        return self.results

    def all_received(self):
        """Concatenation of the bytes received on all connections."""
        return b"".join(bytes(p.received) for p in self.peers)


async def backend_accept(peer, accept=None, subprotocol=None, extra_headers=()):
    """Read the proxy's upgrade request and answer 101; return the request."""
    request = await read_http_request(peer)
    key = request.get("Sec-WebSocket-Key", "")
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept if accept is not None else accept_for(key)}"]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines += [f"{k}: {v}" for k, v in extra_headers]
    await peer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return request


async def backend_expect_close(peer, timeout=WAIT):
    """On a scripted backend: read frames until close, answer it, return the close frame."""
    frame, _ = await read_until_close(peer, timeout)
    await peer.write(encode_frame(OP_CLOSE, frame.payload[:2], mask=False))
    peer.close()  # the server side closes TCP first (RFC 6455 section 7.1.1)
    return frame


# --------------------------------------------------------------------------------------------
# Normal-client checks
# --------------------------------------------------------------------------------------------

async def ws_connect(url, **kwargs):
    """websockets.connect with test-friendly defaults; closed at test end."""
    options = dict(compression=None, max_size=32 * MiB, ping_interval=None, open_timeout=WAIT,
                   close_timeout=5, max_queue=None)
    options.update(kwargs)
    ws = await websockets.connect(url, **options)

    async def close():
        await ws.close()
    register_cleanup(close)
    return ws


async def recv(ws, timeout=WAIT):
    """Receive one message with a deadline."""
    return await asyncio.wait_for(ws.recv(), timeout)


async def wait_ws_closed(ws, timeout=WAIT):
    """Wait for a websockets connection to be fully closed."""
    await asyncio.wait_for(ws.wait_closed(), timeout)


async def assert_still_serving(gate, path="/", greeting=False, **connect_options):
    """A normal client gets a working echo through ``gate``."""
    ws = await ws_connect(gate.url(path), **connect_options)
    if greeting:
        await recv(ws)
    token = "still-alive-" + os.urandom(6).hex()
    await ws.send(token)
    assert await recv(ws) == token
    await ws.close()


async def raw_echo_check(gate, host="127.0.0.1", path="/", extra=()):
    """A raw client with a chosen Host/path completes a handshake and gets an echo."""
    client = await RawClient.connect(gate.port)
    await client.handshake(path=path, host=host, extra=extra)
    token = ("raw-alive-" + os.urandom(4).hex()).encode()
    await client.send_frame(OP_TEXT, token)
    frame = await read_frame(client)
    assert (frame.opcode, frame.payload) == (OP_TEXT, token)
    await client.send_frame(OP_CLOSE, close_payload(1000))
    await read_until_close(client)
    client.close()


async def assert_rejected(peer, status, timeout=WAIT):
    """Read a rejection: a complete HTTP response with ``status``, then TCP close.

    Returns the response for further checks.
    """
    response = await read_http_response(peer, timeout)
    assert response.status == status, f"expected {status}, got {response.start_line!r}"
    length = response.get("Content-Length")
    assert length is not None, f"rejection without Content-Length: {response.raw_head!r}"
    assert len(response.body) == int(length)
    assert response.has_token("Connection", "close"), (
        f"rejection without Connection: close: {response.raw_head!r}")
    assert await peer.wait_eof(timeout), f"TCP stayed open after the {status} response"
    assert peer.pending() == b"", f"bytes after the response body: {peer.pending()[:200]!r}"
    peer.close()  # like a real client: close our side once the server closed its side
    return response



# --------------------------------------------------------------------------------------------
# Misbehaving upstream helpers
# --------------------------------------------------------------------------------------------
class Blackhole:
    """A loopback port where new TCP connections hang (connect never completes).

    A listener with backlog 0 and one unaccepted connection already queued: further SYNs are
    dropped, so a connect() to it runs into the caller's connect timeout.
    """

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(2):  # the queue holds backlog + 1; fill it
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self.fillers.append(filler)

    @property
    def address(self):
        """host:port string for the config."""
        return f"127.0.0.1:{self.port}"

    def release(self):
        """Stop dropping SYNs and hand over the listener (to a server that will accept).

        The fillers go and the one queued connection is accepted and closed, so the queue has
        room again: a connect() still in SYN_SENT completes when the kernel retransmits its SYN.
        """
        for filler in self.fillers:
            filler.close()
        self.fillers = []
        listener, self.listener = self.listener, None
        listener.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            queued, _ = listener.accept()
            queued.close()
        return listener

    def close(self):
        """Release the sockets."""
        for sock in [*self.fillers, self.listener]:
            if sock is not None:
                sock.close()

    async def aclose(self):
        """Cleanup hook."""
        self.close()


def blackhole():
    """Create a Blackhole that is closed when the async test ends."""
    hole = Blackhole()
    register_cleanup(hole.aclose)
    return hole


async def accept_then_drop(peer):
    """ScriptedBackend script: read the upgrade request, then close without answering."""
    await read_http_request(peer)
    peer.close()



# --------------------------------------------------------------------------------------------
# demo_backend.py subprocess
# --------------------------------------------------------------------------------------------

class DemoBackendProcess:
    """examples/demo_backend.py running as a child process on a free port."""

    def __init__(self, name="demo"):
        self.name = name
        self.proc = None
        self.port = None
        self.stdout_lines = []

    async def start(self, timeout=WAIT):
        """Start it and wait for its 'listening on' line."""
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, DEMO_BACKEND, "--port", "0", "--name", self.name,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
        register_cleanup(self.stop)
        deadline = time.monotonic() + timeout
        while self.port is None:
            line = await asyncio.wait_for(self.proc.stdout.readline(),
                                          max(0.01, deadline - time.monotonic()))
            if not line:
                raise RuntimeError("demo_backend exited before listening")
            text = line.decode().strip()
            self.stdout_lines.append(text)
            match = re.search(r"listening on \S+:(\d+)$", text)
            if match:
                self.port = int(match.group(1))
        return self

    @property
    def address(self):
        """host:port string for the config."""
        return f"127.0.0.1:{self.port}"

    async def read_rest(self, timeout=WAIT):
        """Collect remaining stdout until it exits; return all lines."""
        rest = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        self.stdout_lines += rest.decode().splitlines()
        return self.stdout_lines

    def kill(self):
        """SIGKILL it."""
        if self.proc and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self):
        """SIGKILL it (if still running) and reap it."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
