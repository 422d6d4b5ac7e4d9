#!/usr/bin/env python3
"""Fleet mode (issue #20, ``cluster:`` on Redis): what it costs (see README.md, "Fleet").

Two measurements on loopback, each in interleaved rounds (medians reported):

1. **Handshake cost, cluster on against off.** redis-server (``--save "" --appendonly no``,
   a free loopback port), one echo_backend, an auth hook (fleet_peer.py ``hook``: every answer
   gives a new user ``uN`` and two tags ``all,gM``) and two wsgate processes (``workers: 1``)
   with the same hook: ``on`` with ``cluster:`` (so every connection is written to the registry
   with its user and tags, and removed at its close) and ``off`` without. In each of
   ``--rounds`` rounds ``wsbench handshake`` runs ``--hs-seconds`` against each (the order
   alternates): ``--hs-conns`` concurrent loops of connect, upgrade (the hook is asked every
   time), one 16 B echo, close (``--hs-rounds``). Figures: wsgate CPU per handshake (utime + stime of
   /proc/PID/stat at the exact edges of wsbench's window, wsbench ``--cpu-pid``), the ratio
   on ÷ off (issue #20's target: at most 1.10), handshakes per second, and redis-server's CPU
   per handshake (/proc/PID/task/*/schedstat around each run; in the ``off`` runs it shows
   Redis's idle cost, i.e. the ``on`` instance's heartbeat).

2. **Fan-out.** One ``POST /tags/all/messages`` reaching ``--clients`` connections spread over
   3 wsgate instances (``cluster:`` on one Redis, ``workers: 1``, one echo_backend each), the
   clients in 3 fleet_peer.py processes (one per instance), every connection tagged ``all`` by
   the hook. The same number of clients in 3 more processes on Pushpin (Debian's ``pushpin``:
   condure, zurl, pushpin-proxy, pushpin-handler under its runner, with its own config in the
   temporary directory), subscribed to channel ``all`` by a WebSocket-over-HTTP origin
   (fleet_peer.py ``origin``: ``c:{"type":"subscribe","channel":"all"}``), published with
   ``POST /publish/`` (a ``ws-message`` item). Each round, for each target (alternating):

   - ``--pushes`` single pushes, one at a time: the time from just before the POST is written
     to the arrival at the last of the clients (and at the median client), every client
     recording its arrival with time.monotonic() on this machine; the next push waits until
     every client has the message, then 0.2 s;
   - a burst of ``--burst`` pushes back to back (``--burst-parallel`` keep-alive publishing
     connections, one POST in flight on each): pushes per second and messages per second at
     the clients, from the first POST to the last arrival; the CPU of the target's processes
     (and of Redis, and of the clients) over the burst.

   Every client must get every message (exactly once per push: the arrivals are counted).

Usage (python3 with the standard library only; redis-server; pushpin for the peer):
    bench/fleet.py BUILD_DIR                  # both parts: about 5 minutes here
    bench/fleet.py BUILD_DIR --skip-fanout    # the handshake part only
    bench/fleet.py BUILD_DIR --smoke          # a ~20 s check with tiny numbers (not a ctest)
Writes the markdown summary to ``--out`` (default bench/results/fleet.md; none with --smoke).
Exit status 1 if a check failed (the tables are still written), 2 if something needed is
missing or does not start (77 with --smoke).
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from migration import (BenchError, Gate, SetupError, cpu_run_seconds,  # noqa: E402
                       dechunk, fmt, git_describe, machine_text, median, quantile, series)

PEER = os.path.join(HERE, "fleet_peer.py")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PUSHPIN = shutil.which("pushpin") or "/usr/bin/pushpin"
PUSHPIN_CONF = "/etc/pushpin/pushpin.conf"
TOKEN = "fleet-bench-token"


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_below_ephemeral():
    """A port free on 0.0.0.0 below the ephemeral range (condure binds 0.0.0.0, and a port from
    that range may meanwhile become some client socket's source port)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise SetupError("no free port below the ephemeral range")


def wait_ready_file(path, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return text.strip()
        except FileNotFoundError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SetupError(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.02)


def stop_process(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Redis:
    def __init__(self, work):
        self.port = free_port()
        self.work = work
        self.proc = None

    def start(self):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise SetupError(f"{REDIS_SERVER} is missing (apt-get install redis-server)")
        with open(os.path.join(self.work, f"redis-{self.port}.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--save", "", "--appendonly", "no", "--port", str(self.port),
                 "--bind", "127.0.0.1", "--dir", self.work],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.command("PING") != b"+PONG\r\n":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"redis-server did not start (exit {self.proc.poll()})")
            time.sleep(0.02)
        return self

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args):
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = str(arg).encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(payload)
                return sock.recv(1 << 20)
        except OSError:
            return None

    def info(self, section):
        """INFO SECTION as {key: value} (bulk string reply)."""
        reply = (self.command("INFO", section) or b"").decode("utf-8", "replace")
        found = {}
        for line in reply.split("\r\n")[1:]:
            key, sep, value = line.partition(":")
            if sep:
                found[key] = value
        return found

    def command_calls(self):
        """{command: calls} from INFO commandstats."""
        calls = {}
        for key, value in self.info("commandstats").items():
            if key.startswith("cmdstat_"):
                fields = dict(kv.split("=", 1) for kv in value.split(","))
                calls[key[len("cmdstat_"):]] = int(fields["calls"])
        return calls

    def dbsize(self):
        reply = self.command("DBSIZE") or b":-1"
        return int(reply[1:].strip())

    def stop(self):
        stop_process(self.proc)


class EchoBackend:
    def __init__(self, build_dir, work, label):
        self.binary = os.path.join(build_dir, "bench", "echo_backend")
        self.ready = os.path.join(work, f"{label}.ready")
        self.proc = None
        self.address = None

    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise SetupError(f"{self.binary} is missing (build the bench tools)")
        self.proc = subprocess.Popen([self.binary, "-a", "127.0.0.1", "-p", "0", "-t", "1",
                                      "-r", self.ready], stdin=subprocess.DEVNULL)
        self.address = wait_ready_file(self.ready, self.proc, "echo_backend")
        return self

    def stop(self):
        stop_process(self.proc)


class Child:
    """A fleet_peer.py process; commands on stdin, one answer line each on stdout."""

    def __init__(self, proc, label):
        self.proc = proc
        self.label = label
        self.port = None

    @classmethod
    async def start(cls, python, role, label, **options):
        args = [python, PEER, role]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        child = cls(proc, label)
        if role in ("hook", "origin"):
            child.port = int((await child.line(("listening",), 30)).split()[1])
        return child

    @property
    def pid(self):
        return self.proc.pid

    async def line(self, prefixes, timeout):
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.label}: no {prefixes} line within {timeout}s") from None
        if not raw:
            raise BenchError(f"{self.label} exited ({await self.proc.wait()}) before "
                             f"{prefixes}")
        text = raw.decode().strip()
        if text.startswith("failed"):
            raise BenchError(f"{self.label}: {text}")
        if not text.startswith(prefixes):
            raise BenchError(f"{self.label}: {text[:200]!r} where {prefixes} was due")
        return text

    async def ask(self, command, timeout=60):
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        word = command.split()[0]
        return (await self.line((word,), timeout))[len(word) + 1:]

    async def stop(self):
        if self.proc.returncode is None:
            try:
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class HttpLink:
    """One keep-alive HTTP/1.1 connection: ``post()`` one request at a time."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def post(self, path, body, headers, retry=True):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line and retry:  # the server closed the idle connection: once more
            self.close()
            return await self.post(path, body, headers, False)
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name.strip().lower() == "connection" and "close" in value.lower():
                close = True
        if chunked:
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                data += await self.reader.read(65536)
            payload = dechunk(data)
        else:
            payload = await self.reader.readexactly(length)
        if close or status_line.startswith(b"HTTP/1.0"):
            self.close()
        return int(status_line.split()[1]), payload

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            total += cpu_run_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def gate_config(backend, hook_port, redis=None, instance=None, max_connections=1000):
    config = {
        "workers": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0", "token": TOKEN},
        "routes": [{"pool": "p"}],
        "pools": [{"name": "p", "backends": [{"address": backend}]}],
        "auth": {"url": f"http://127.0.0.1:{hook_port}/check", "timeout": "10s"},
        "limits": {"max_connections": max_connections},
        "log": {"access": "off"},
    }
    if redis is not None:
        config["cluster"] = {"redis": redis.url, "instance": instance}
    return config


async def gate_metrics(gate):
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.admin)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                 f"{TOKEN}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return body.decode("utf-8", "replace")


def metric_sum(text, name, **labels):
    return sum(v for l, v in series(text, name)
               if all(l.get(k) == want for k, want in labels.items()))


# ------------------------------------------------------------------------------------------
# Part 1: handshakes, cluster on and off
# ------------------------------------------------------------------------------------------

RESULT_LINE = re.compile(r"^RESULT mode=handshake (.*)$", re.M)


async def wsbench_handshake(args, gate):
    cmd = [os.path.join(args.build_dir, "bench", "wsbench"), "handshake", "-a", "127.0.0.1",
           "-p", str(gate.port), "-c", str(args.hs_conns), "-d", str(args.hs_seconds),
           "-s", "16", "--cpu-pid", str(gate.pid)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    match = RESULT_LINE.search(out.decode())
    if not match:
        raise BenchError(f"wsbench: no RESULT line (exit {proc.returncode}): "
                         f"{(out + err).decode()[-500:]}")
    fields = dict(kv.split("=", 1) for kv in match.group(1).split())
    if fields.get("errors") != "0":
        raise BenchError(f"wsbench counted errors: {match.group(0)} {err.decode()[-300:]}")
    return fields


async def handshake_part(args, work, failures):
    redis = Redis(work).start()
    backend = EchoBackend(args.build_dir, work, "hs-backend").start()
    hook = await Child.start(args.python, "hook", "hook")
    gates = {}
    try:
        for label in ("on", "off"):
            gates[label] = await Gate(args.wsgate, work, f"hs-{label}").start(
                gate_config(backend.address, hook.port, redis if label == "on" else None,
                            "on", 1000))
        await asyncio.sleep(1.5)  # the on instance's first heartbeat and resync
        for label in ("on", "off") if not args.smoke else ():  # warm-up: code, allocator pools
            await wsbench_handshake(argparse.Namespace(**{**vars(args), "hs_seconds": 0.5}),
                                    gates[label])
        runs = []
        calls_before = redis.command_calls()
        for index in range(args.hs_rounds):
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            for label in order:
                gate = gates[label]
                r0, t0 = cpu_run_seconds(redis.proc.pid), time.monotonic()
                fields = await wsbench_handshake(args, gate)
                r1, t1 = cpu_run_seconds(redis.proc.pid), time.monotonic()
                ops = int(fields["ops"])
                run = {"label": label, "round": index + 1, "ops": ops,
                       "hps": float(fields["handshakes_per_s"]),
                       "us": float(fields["proc_us_per_op"]),
                       "cpu_s": float(fields["proc_cpu_s"]),
                       "redis_s": r1 - r0, "wall_s": t1 - t0,
                       "redis_us": (r1 - r0) / ops * 1e6 if ops else None,
                       "load": os.getloadavg()[0]}
                runs.append(run)
                print(f"  handshake round {index + 1} cluster {label}: {ops} handshakes, "
                      f"{run['hps']:.0f}/s, wsgate {run['us']:.1f} µs/handshake, redis "
                      f"{run['redis_us']:.1f} µs/handshake", flush=True)
        calls_after = redis.command_calls()
        on_metrics = await gate_metrics(gates["on"])
        registry_lines = [line for line in on_metrics.splitlines()
                          if line.startswith("wsgate_cluster_registry_writes_total")]
        writes = {op: metric_sum(on_metrics, "wsgate_cluster_registry_writes_total", op=op)
                  for op in ("add", "remove", "tags", "user", "resync")}
        redis_up = metric_sum(on_metrics, "wsgate_cluster_redis_up")
        handshakes_on = sum(r["ops"] for r in runs if r["label"] == "on")
        for gate in gates.values():  # the registry removes of the last connections
            gate.stop()
        await asyncio.sleep(0.5)
        keys = redis.dbsize()
        keyspace = redis.info("keyspace")
        memory = redis.info("memory").get("used_memory_human")
        calls = {k: v - calls_before.get(k, 0) for k, v in calls_after.items()
                 if v - calls_before.get(k, 0) > 0}
        if redis_up != 1:
            failures.append(f"handshake: wsgate_cluster_redis_up is {redis_up} on the on instance")
        # Fewer adds than handshakes is expected: a connection opened and closed within the
        # registry's 2 ms batch window is never written (Fleet::Fold). Every add must be removed.
        if writes["add"] != writes["remove"]:
            failures.append(f"handshake: {writes['add']:.0f} registry adds but "
                            f"{writes['remove']:.0f} removes")
        # Redis's commands per handshake: all the handshakes wsgate on completed while sampled
        # (the windows' own count is a little lower: work in flight at a window's edges).
        adds = writes["add"]
        return {"runs": runs, "writes": writes, "keys": keys, "keyspace": keyspace,
                "memory": memory, "calls": calls, "adds": adds,
                "registry_lines": registry_lines}
    finally:
        for gate in gates.values():
            gate.stop()
        await hook.stop()
        backend.stop()
        redis.stop()


def handshake_table(part, args):
    runs = part["runs"]
    on = [r for r in runs if r["label"] == "on"]
    off = [r for r in runs if r["label"] == "off"]
    pair_ratios = []
    for index in range(1, args.hs_rounds + 1):
        a = [r["us"] for r in on if r["round"] == index]
        b = [r["us"] for r in off if r["round"] == index]
        if a and b and b[0]:
            pair_ratios.append(a[0] / b[0])
    med_on, med_off = median([r["us"] for r in on]), median([r["us"] for r in off])
    ratio = med_on / med_off if med_on and med_off else None
    redis_idle = median([r["redis_s"] / r["wall_s"] for r in off])
    redis_net = median([(r["redis_s"] - redis_idle * r["wall_s"]) / r["ops"] * 1e6 for r in on])
    lines = [
        "| figure (median of the rounds) | cluster on | cluster off |",
        "|---|---:|---:|",
        f"| **wsgate CPU per handshake, µs** | **{fmt(med_on)}** | **{fmt(med_off)}** |",
        f"| handshakes per second | {fmt(median([r['hps'] for r in on]), 0)} | "
        f"{fmt(median([r['hps'] for r in off]), 0)} |",
        f"| handshakes per window | {fmt(median([r['ops'] for r in on]), 0)} | "
        f"{fmt(median([r['ops'] for r in off]), 0)} |",
        f"| redis-server CPU per handshake, µs (raw) | {fmt(median([r['redis_us'] for r in on]))} "
        f"| {fmt(median([r['redis_us'] for r in off]))} |",
        f"| redis-server CPU per handshake, µs, less its idle rate | {fmt(redis_net)} | |",
        f"| redis-server idle, ms of CPU per s (from the off runs) | | "
        f"{fmt(redis_idle * 1e3, 2) if redis_idle is not None else 'n/a'} |",
        "",
        f"**on ÷ off: {ratio:.3f}** (medians; target ≤ 1.10); per round: "
        + ", ".join(f"{r:.3f}" for r in pair_ratios)
        + f" (median {statistics.median(pair_ratios):.3f})." if ratio and pair_ratios else "",
        "",
        f"Registry writes of the on instance over the whole run: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in part["writes"].items())
        + f"; Redis keys once both instances stopped: {part['keys']:,} ({part['keyspace']}), "
        f"used_memory {part['memory']}.",
        "",
        "Redis commands over the measured rounds (INFO commandstats; the on instance's "
        "heartbeat included): " + ", ".join(f"{k} {v:,}" for k, v in sorted(
            part["calls"].items(), key=lambda kv: -kv[1]))
        + f"; per handshake counted in the on runs: {sum(part['calls'].values()) / max(1, sum(r['ops'] for r in on)):.1f}.",
        "",
        "The on instance's registry-write counters: " + "; ".join(
            f"`{line}`" for line in part["registry_lines"]),
        "",
        "Every run (wsgate µs per handshake, handshakes/s, redis µs per handshake, 1-min load):",
        "",
    ]
    for r in runs:
        lines.append(f"- round {r['round']} {r['label']}: {r['us']:.1f} µs, {r['hps']:.0f}/s, "
                     f"redis {r['redis_us']:.1f} µs, load {r['load']:.1f}")
    return "\n".join(lines), ratio


# ------------------------------------------------------------------------------------------
# Part 2: fan-out
# ------------------------------------------------------------------------------------------

class WsgateFleet:
    name = "wsgate fleet"

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.redis = None
        self.backends, self.gates, self.clients = [], [], []
        self.hook = None
        self.links = []
        self.unavailable = 0

    async def start(self):
        args = self.args
        self.redis = Redis(self.work).start()
        self.hook = await Child.start(args.python, "hook", "hook")
        per = args.clients // 3
        for index, name in enumerate("abc"):
            backend = EchoBackend(args.build_dir, self.work, f"fan-backend-{name}").start()
            self.backends.append(backend)
            self.gates.append(await Gate(args.wsgate, self.work, f"fan-{name}").start(
                gate_config(backend.address, self.hook.port, self.redis, name, per + 100)))
        await asyncio.sleep(1.5)
        for index, gate in enumerate(self.gates):
            self.clients.append(await Child.start(
                args.python, "client", f"wsgate clients {index}", port=gate.port, count=per,
                first_id=index * per, concurrency=args.concurrency))
        for client in self.clients:
            await client.line(("connected",), 300)
        self.expected = per * 3

    def pids(self):
        return [g.pid for g in self.gates]

    def extra_pids(self):
        return {"redis-server": [self.redis.proc.pid]}

    def link(self, index):
        while len(self.links) <= index:
            self.links.append(HttpLink(self.gates[len(self.links) % 3].admin))
        return self.links[index]

    async def publish(self, link_index, body):
        for _ in range(20):  # 503 (Redis unavailable to that instance): counted, then again
            status, answer = await self.link(link_index).post(
                "/tags/all/messages", body,
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
            if status != 503:
                break
            self.unavailable += 1
            await asyncio.sleep(0.5)
        if status != 202:
            raise BenchError(f"POST /tags/all/messages: {status} {answer[:200]!r}")

    async def stop(self):
        for link in self.links:
            link.close()
        for client in self.clients:
            await client.stop()
        for gate in self.gates:
            gate.stop()
        for backend in self.backends:
            backend.stop()
        if self.hook:
            await self.hook.stop()
        if self.redis:
            self.redis.stop()


class Pushpin:
    name = "Pushpin"

    def __init__(self, args, work):
        self.args = args
        self.dir = os.path.join(work, "pushpin")
        self.proc = None
        self.origin = None
        self.clients, self.links = [], []

    def write_config(self):
        os.makedirs(os.path.join(self.dir, "run"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "log"), exist_ok=True)
        self.http_port = free_port_below_ephemeral()
        self.publish_port = free_port_below_ephemeral()
        with open(PUSHPIN_CONF) as f:
            text = f.read()
        sets = {
            "rundir": os.path.join(self.dir, "run"), "logdir": os.path.join(self.dir, "log"),
            # zurl makes the requests to the origin (WebSocket-over-HTTP): run our own.
            "services": "condure,zurl,pushpin-proxy,pushpin-handler",
            "http_port": str(self.http_port), "push_in_http_port": str(self.publish_port),
            "push_in_spec": f"tcp://127.0.0.1:{free_port_below_ephemeral()}",
            "push_in_sub_specs": f"tcp://127.0.0.1:{free_port_below_ephemeral()}",
            "command_spec": f"tcp://127.0.0.1:{free_port_below_ephemeral()}",
            "log_level": "1",
            # The defaults (2,500 messages/s, 25,000 queued) would pace a 9,000-client fan-out.
            "message_rate": "100000000", "message_hwm": "100000000",
        }
        for key, value in sets.items():
            text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text)
            if n != 1:
                raise SetupError(f"{PUSHPIN_CONF}: no single {key}= line to set")
        # internal.conf points the proxy at the system zurl in /var/run/zurl; ours is in rundir.
        text = text.replace("[proxy]\n", "[proxy]\n"
                            "zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\n"
                            "zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\n"
                            "zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out\n", 1)
        with open(os.path.join(self.dir, "pushpin.conf"), "w") as f:
            f.write(text)
        with open(os.path.join(self.dir, "routes"), "w") as f:
            f.write(f"* 127.0.0.1:{self.origin.port},over_http\n")

    async def start(self):
        args = self.args
        if not os.access(PUSHPIN, os.X_OK) or not os.path.exists(PUSHPIN_CONF):
            raise SetupError(f"{PUSHPIN} is missing (apt-get install -y pushpin)")
        self.origin = await Child.start(args.python, "origin", "origin")
        self.write_config()
        with open(os.path.join(self.dir, "runner.log"), "wb") as log:
            self.proc = subprocess.Popen([PUSHPIN, "--config",
                                          os.path.join(self.dir, "pushpin.conf")],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.publish_port), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"pushpin did not start (exit {self.proc.poll()}); see "
                                 f"{self.dir}/log")
            await asyncio.sleep(0.1)
        per = args.clients // 3
        for index in range(3):
            self.clients.append(await Child.start(
                args.python, "client", f"pushpin clients {index}", port=self.http_port,
                count=per, first_id=index * per, concurrency=args.concurrency, attempts=5))
        self.retried = 0
        for client in self.clients:
            self.retried += int((await client.line(("connected",), 300)).split("retried=")[1])
        self.expected = per * 3
        await asyncio.sleep(1.0)  # the subscriptions reach the handler asynchronously

    def pids(self):
        """The runner and its children (condure, zurl, pushpin-proxy, pushpin-handler)."""
        found = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            found.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return found

    def extra_pids(self):
        return {"origin": [self.origin.pid]}

    async def publish(self, link_index, body):
        while len(self.links) <= link_index:
            self.links.append(HttpLink(self.publish_port))
        item = {"items": [{"channel": "all",
                           "formats": {"ws-message": {"content": body.decode()}}}]}
        status, answer = await self.links[link_index].post(
            "/publish/", json.dumps(item).encode(), {"Content-Type": "application/json"})
        if status != 200:
            raise BenchError(f"pushpin POST /publish/: {status} {answer[:200]!r}")

    async def stop(self):
        for link in self.links:
            link.close()
        for client in self.clients:
            await client.stop()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.origin:
            await self.origin.stop()


def message(seq, size):
    text = b"p %d " % seq
    return text + b"x" * max(0, size - len(text))


async def single_push(target, seq, args):
    """One push; its figures (s from just before the POST)."""
    body = message(seq, args.size)
    t0 = time.monotonic()
    await target.publish(0, body)
    t_answer = time.monotonic()
    answers = await asyncio.gather(*(c.ask(f"wait {seq} {seq} 30") for c in target.clients))
    got = sum(int(a.split()[0]) for a in answers)
    expected = sum(int(a.split()[1]) for a in answers)
    times = []
    for client in target.clients:
        times += json.loads(await client.ask(f"times {seq}"))
    times.sort()
    return {"got": got, "expected": expected, "answer_ms": (t_answer - t0) * 1e3,
            "last_ms": (times[-1] - t0) * 1e3 if times else None,
            "first_ms": (times[0] - t0) * 1e3 if times else None,
            "p50_ms": (quantile(times, 0.5) - t0) * 1e3 if times else None,
            "p99_ms": (quantile(times, 0.99) - t0) * 1e3 if times else None}


async def burst(target, first, args):
    last = first + args.burst - 1
    sequence = iter(range(first, last + 1))
    pids = target.pids()
    extra = target.extra_pids()
    client_pids = [c.pid for c in target.clients]
    cpu0 = (cpu_of(pids), {k: cpu_of(v) for k, v in extra.items()}, cpu_of(client_pids))
    t0 = time.monotonic()

    async def publisher(index):
        for seq in sequence:
            await target.publish(index, message(seq, args.size))

    await asyncio.gather(*(publisher(i) for i in range(args.burst_parallel)))
    t_posted = time.monotonic()
    answers = await asyncio.gather(*(c.ask(f"wait {first} {last} 300", 330)
                                     for c in target.clients))
    cpu1 = (cpu_of(pids), {k: cpu_of(v) for k, v in extra.items()}, cpu_of(client_pids))
    spans = [json.loads(await c.ask(f"span {first} {last}")) for c in target.clients]
    got = sum(int(a.split()[0]) for a in answers)
    expected = sum(int(a.split()[1]) for a in answers)
    end = max((s[2] for s in spans if s[2] is not None), default=None)
    duration = end - t0 if end else None
    return {"got": got, "expected": expected, "posted_s": t_posted - t0, "duration_s": duration,
            "pushes_per_s": args.burst / duration if duration else None,
            "msgs_per_s": got / duration if duration else None,
            "cpu_s": cpu1[0] - cpu0[0],
            "cpu_us_per_push": (cpu1[0] - cpu0[0]) / args.burst * 1e6,
            "cpu_us_per_msg": (cpu1[0] - cpu0[0]) / got * 1e6 if got else None,
            "extra_cpu_s": {k: cpu1[1][k] - cpu0[1][k] for k in cpu0[1]},
            "client_cpu_s": cpu1[2] - cpu0[2],
            "load": os.getloadavg()[0]}


async def fanout_part(args, work, failures):
    targets = [WsgateFleet(args, work)]
    if not args.skip_pushpin:
        # Pushpin first: condure binds 0.0.0.0:PORT, which fails once a client socket holds
        # that port number as its ephemeral source port.
        targets.insert(0, Pushpin(args, work))
    results = {t.name: {"single": [], "burst": []} for t in targets}
    started = []
    notes = []
    try:
        for target in targets:
            t = time.monotonic()
            try:
                await target.start()
            except (SetupError, BenchError, OSError) as e:
                if isinstance(target, Pushpin):
                    failures.append(f"Pushpin: {e}")
                    print(f"FAIL Pushpin: {e}", flush=True)
                    await target.stop()
                    results.pop(target.name)
                    continue
                raise
            notes.append(f"{target.name}: {target.expected:,} clients connected in "
                         f"{time.monotonic() - t:.1f} s"
                         + (f" ({target.retried} upgrades answered 502 and tried again)"
                            if getattr(target, "retried", 0) else ""))
            print(f"  {notes[-1]}", flush=True)
            started.append(target)
        seq = 0
        for index in range(args.rounds):
            order = started if index % 2 == 0 else started[::-1]
            for target in order:
                for _ in range(args.pushes):
                    seq += 1
                    r = await single_push(target, seq, args)
                    results[target.name]["single"].append(r)
                    if r["got"] != r["expected"]:
                        failures.append(f"{target.name} push {seq}: {r['got']} of "
                                        f"{r['expected']} clients got it")
                    await asyncio.sleep(0.2)
                print(f"  fan-out round {index + 1} {target.name}: last client p50 "
                      f"{median([r['last_ms'] for r in results[target.name]['single']]):.1f} "
                      f"ms so far", flush=True)
                first = seq + 1
                seq += args.burst
                b = await burst(target, first, args)
                results[target.name]["burst"].append(b)
                if b["got"] != b["expected"]:
                    failures.append(f"{target.name} burst {first}..{seq}: {b['got']} of "
                                    f"{b['expected']} messages arrived")
                print(f"  fan-out round {index + 1} {target.name}: burst of {args.burst}: "
                      f"{fmt(b['pushes_per_s'])} pushes/s, {fmt(b['msgs_per_s'], 0)} msgs/s, "
                      f"{fmt(b['cpu_us_per_push'], 0)} µs CPU per push, POSTs done in "
                      f"{b['posted_s']:.2f} s", flush=True)
                for client in target.clients:
                    await client.ask("forget")
        for target in started:
            stats = [await c.ask("stats") for c in target.clients]
            for line in stats:
                if "errors=0" not in line.split() or "closed=0" not in line.split():
                    failures.append(f"{target.name} clients: {line}")
        fleets = [s for s in started if isinstance(s, WsgateFleet)]
        if fleets:
            started = fleets + [s for s in started if s not in fleets]
            text = "".join([await gate_metrics(g) for g in started[0].gates])
            if started[0].unavailable:
                failures.append(f"wsgate: {started[0].unavailable} publishes answered 503 "
                                "(Redis unavailable) and were tried again 0.5 s later")
            notes.append(f"wsgate: publishes answered 503 and retried: {started[0].unavailable}; " + ", ".join(
                f"{name} {metric_sum(text, name):,.0f}" for name in
                ("wsgate_cluster_publishes_total", "wsgate_cluster_fanout_received_total")))
    finally:
        for target in targets:
            await target.stop()
    return results, notes


def fanout_table(results, args):
    names = list(results)
    rows = [
        ("**last client has the push, p50 ms**", "single", lambda rs: quantile(
            [r["last_ms"] for r in rs], 0.5), 1),
        ("**last client has the push, p99 ms**", "single", lambda rs: quantile(
            [r["last_ms"] for r in rs], 0.99), 1),
        ("median client has the push, p50 ms (over pushes)", "single",
         lambda rs: quantile([r["p50_ms"] for r in rs], 0.5), 1),
        ("first client has the push, p50 ms", "single",
         lambda rs: quantile([r["first_ms"] for r in rs], 0.5), 1),
        ("the publish POST answered, p50 ms", "single",
         lambda rs: quantile([r["answer_ms"] for r in rs], 0.5), 1),
        ("single pushes measured", "single", lambda rs: len(rs), 0),
        ("**burst: pushes per second** (first POST to last arrival)", "burst",
         lambda rs: median([r["pushes_per_s"] for r in rs]), 1),
        ("burst: messages per second at the clients", "burst",
         lambda rs: median([r["msgs_per_s"] for r in rs]), 0),
        ("burst: all POSTs answered after, s", "burst",
         lambda rs: median([r["posted_s"] for r in rs]), 2),
        ("burst: first POST to last arrival, s", "burst",
         lambda rs: median([r["duration_s"] for r in rs]), 2),
        ("**burst: CPU per push, ms** (all the target's processes)", "burst",
         lambda rs: median([r["cpu_us_per_push"] / 1e3 for r in rs]), 2),
        ("burst: CPU per delivered message, µs", "burst",
         lambda rs: median([r["cpu_us_per_msg"] for r in rs]), 2),
        ("burst: redis-server (wsgate) / origin (Pushpin) CPU, s", "burst",
         lambda rs: median([sum(r["extra_cpu_s"].values()) for r in rs]), 3),
        ("burst: the 3 client processes' CPU, s", "burst",
         lambda rs: median([r["client_cpu_s"] for r in rs]), 2),
    ]
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for title, kind, fn, digits in rows:
        cells = []
        for name in names:
            rs = results[name][kind]
            cells.append(fmt(fn(rs), digits) if rs else "n/a")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Every burst (pushes/s; messages/s; CPU ms per push; CPU s of the target; "
              "1-min load):", ""]
    for name in names:
        lines.append(f"- {name}: " + "; ".join(
            f"{fmt(b['pushes_per_s'])}/s, {fmt(b['msgs_per_s'], 0)} msgs/s, "
            f"{b['cpu_us_per_push'] / 1e3:.2f} ms, {b['cpu_s']:.2f} s, load {b['load']:.1f}"
            for b in results[name]["burst"]))
    lines += ["", "Every single push, ms to the last client:", ""]
    for name in names:
        lines.append(f"- {name}: " + ", ".join(fmt(r["last_ms"]) for r in
                                               results[name]["single"]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------

async def run_all(args):
    work = tempfile.mkdtemp(prefix="wsgate-fleetbench.")
    failures = []
    out = [f"# Fleet mode ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
           f"`{' '.join(sys.argv)}` at {git_describe()}; {machine_text()} at the start.", ""]
    try:
        if not args.skip_handshake:
            try:
                part = await handshake_part(args, work, failures)
                text, _ = handshake_table(part, args)
                out += ["## Handshake cost, cluster on and off", "",
                        f"`wsbench handshake -c {args.hs_conns} -d {args.hs_seconds}` per run, "
                        f"{args.hs_rounds} interleaved rounds; auth hook on both (a user and 2 "
                        "tags per connection), `workers: 1`.", "", text, ""]
            except (BenchError, OSError, asyncio.TimeoutError) as e:
                failures.append(f"handshake: {e!r}")
                print(f"FAIL handshake: {e!r}", flush=True)
        if not args.skip_fanout:
            try:
                results, notes = await fanout_part(args, work, failures)
                out += ["## Fan-out", "",
                        f"{args.clients:,} clients over 3 instances (3 client processes), "
                        f"messages of {args.size} B; per round and target {args.pushes} single "
                        f"pushes and a burst of {args.burst} ({args.burst_parallel} publishing "
                        f"connections); {args.rounds} rounds.", "",
                        fanout_table(results, args), ""] + [f"- {n}" for n in notes] + [""]
            except (BenchError, OSError, asyncio.TimeoutError) as e:
                failures.append(f"fan-out: {e!r}")
                print(f"FAIL fan-out: {e!r}", flush=True)
    finally:
        if args.keep or failures:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out.append(f"Load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    if failures:
        out += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    text = "\n".join(out) + "\n"
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build_dir", nargs="?", default=os.path.join(HERE, "..", "build"))
    parser.add_argument("--wsgate", help="the wsgate binary (default BUILD_DIR/wsgate)")
    parser.add_argument("--hs-rounds", type=int, default=6,
                        help="handshake rounds (default 6: each runs on and off)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="fan-out rounds (default 3: each runs every target)")
    parser.add_argument("--hs-conns", type=int, default=8,
                        help="concurrent handshake loops (default 8)")
    parser.add_argument("--hs-seconds", type=float, default=3.0,
                        help="measured seconds per handshake run (default 3)")
    parser.add_argument("--clients", type=int, default=9000)
    parser.add_argument("--pushes", type=int, default=4,
                        help="single pushes per round and target (default 4)")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--burst-parallel", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="handshakes in flight per client process")
    parser.add_argument("--skip-handshake", action="store_true")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-pushpin", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="2 rounds of 0.5 s handshakes; 60 clients, 2 pushes and a burst of "
                        "10 per round")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if args.smoke:
        args.hs_rounds, args.rounds, args.hs_seconds = 2, 2, 0.5
        args.clients, args.pushes, args.burst = 60, 2, 10
        if not os.access(PUSHPIN, os.X_OK):
            print(f"note: {PUSHPIN} is missing: the Pushpin side is skipped")
            args.skip_pushpin = True
    elif args.out is None:
        args.out = os.path.join(HERE, "results", "fleet.md")
    args.clients -= args.clients % 3
    args.wsgate = args.wsgate or os.path.join(args.build_dir, "wsgate")
    if not os.access(args.wsgate, os.X_OK):
        print(f"fleet.py: {args.wsgate} is missing; build first (scripts/build.sh build)")
        return 77 if args.smoke else 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    try:
        return asyncio.run(run_all(args))
    except SetupError as e:
        print(f"fleet.py: {e}")
        return 77 if args.smoke else 2
    except KeyboardInterrupt:
        return 2


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    sys.exit(main())
