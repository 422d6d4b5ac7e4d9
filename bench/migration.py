#!/usr/bin/env python3
"""Session migration and service discovery: what they cost (see README.md, "Session migration").

Two measurements, each repeated (medians reported), on loopback:

1. **Migration** (pools[].migrate), ``--runs`` times at each of ``--sessions`` (default
   1,000, 8,000 and 9,000). wsgate (``workers: 1``) in front of three echo backends
   (bench/migration_peer.py, one process each); the sessions come from client processes of at
   most ``--per-client`` sessions each. Every session sends one message before the drain and
   one after it (and every ``--interval`` s if given) and times its echo; in every other run
   (the first, third, ...) ``--probes`` sessions of backend ``a`` also send every
   ``--probe-interval`` s. Then ``POST /admin/backends/p/ADDRESS-OF-a/drain``, and wait until
   wsgate has logged an outcome for each of a's sessions. Figures:

   - moves per second, from the first hold to the last swap, both from wsgate's log (each
     ``moved ... pause_ms=`` line's time less its pause is when that session's hold began),
     and from the drain request's log line (which adds the wait for the next 100 ms tick);
   - wsgate CPU per move and moves per wsgate CPU-second (threads' run time from
     /proc/PID/task/*/schedstat; utime + stime ticks from /proc/PID/stat alongside), from the
     runs without probes: wsgate's CPU over the move window less its idle rate (``--baseline``
     s with no traffic) and less its cost per relayed message (``--baseline`` s of the probes'
     or ``--interval`` traffic) times the messages relayed in the window
     (``wsgate_messages_total``). /metrics is not polled meanwhile (a scrape lists
     /proc/self/fd: about 1 µs of wsgate CPU per open descriptor);
   - the pause p50/p99: from the ``wsgate_migration_pause_seconds`` buckets, from the
     ``pause_ms=`` of wsgate's log (``--log-level info``), and from the clients: for each probe
     session, the last message the old backend answered (sent t1, echo arrived a1) and the
     first the new one answered (t2, a2) bound the pause: at least how much later than usual
     that echo came, (a2 - a1) - (t2 - t1), and less than that plus t2 - t1 (the hold began
     between the two sends); the quantiles of the bounds bound the quantiles of the pauses;
   - wsgate's peak open files.

   Checked on every run: every echo arrived exactly once and in order, each moved session
   switched exactly once, from a to b or c, and each session that could not move (counted,
   logged and reported as a failure) got close 1012; nothing else closed.

2. **Discovery**, ``--discovery-runs`` pairs: wsgate (``workers: 1``, idle: no client) with
   one pool whose backends are ``--names`` DNS names (``svcN.test``) resolving to
   ``--addresses`` addresses in all (127.0.1.x, nothing listens: no health checks),
   ``discovery: {interval: 1s}``, from dnsmasq on 127.0.0.1 (``resolver.nameservers``);
   against the same wsgate with the same addresses written as static backends. ``--seconds``
   each, alternating: wsgate's CPU time (schedstat, and /proc/PID/stat ticks) and the A
   queries dnsmasq logged; CPU per refresh = (discovery CPU - static CPU) / refreshes. A DNS
   answer over UDP without EDNS holds at most ~30 A records (dnsmasq then sets TC, which
   libevent 2.1's evdns treats as an error), so 100 backends take 4 names of 25;
   ``--names 1 --allow-missing`` shows what one name with 100 addresses does.

Usage (python3 with the standard library only; dnsmasq for part 2):
    bench/migration.py BUILD_DIR                   # both parts: about 15 minutes
    bench/migration.py BUILD_DIR --sessions 1000 --runs 1 --skip-discovery
    bench/migration.py BUILD_DIR --smoke           # the bench_migration_smoke ctest (~10 s)
Writes the markdown summary to ``--out`` (default bench/results/migration.md; none with
--smoke). Exit status 1 if a check or a move failed or the discovery part could not run (the
tables are still written), 2 if wsgate is missing or does not start (77 with --smoke).
"""

import argparse
import asyncio
import json
import math
import os
import platform
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
PEER = os.path.join(HERE, "migration_peer.py")
TICKS = os.sysconf("SC_CLK_TCK")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
POLL = 0.1  # seconds between looks at wsgate's log while the moves run
CPU_KEYS = ("ticks", "run")


class BenchError(Exception):
    """A check failed (exit status 1)."""


class SetupError(Exception):
    """Something needed is missing or would not start (exit status 2)."""


# ------------------------------------------------------------------------------------------
# Process figures
# ------------------------------------------------------------------------------------------

def cpu_ticks_seconds(pid):
    """utime + stime of all threads, from /proc/PID/stat (resolution: one clock tick)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_run_seconds(pid):
    """Time on a CPU of the live threads, from /proc/PID/task/*/schedstat (ns)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def cpu_sample(pid):
    return {"ticks": cpu_ticks_seconds(pid), "run": cpu_run_seconds(pid), "t": time.monotonic()}


async def gate_sample(gate, end=False):
    """(wsgate's CPU and relayed messages now, the metrics text). The scrape itself costs
    wsgate CPU, so it comes before the CPU sample at the start of a window and after it at the
    end (``end``): no window holds a scrape."""
    before = cpu_sample(gate.pid) if end else None
    text = await gate.metrics()
    sample = before or cpu_sample(gate.pid)
    sample["messages"] = sum(v for _, v in series(text, "wsgate_messages_total"))
    return sample, text


def open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def quantile(values, q):
    """The q-quantile (nearest rank) of a list, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ------------------------------------------------------------------------------------------
# wsgate
# ------------------------------------------------------------------------------------------

class Gate:
    """A wsgate process with a config file, a ready file and a log file in ``work``."""

    def __init__(self, binary, work, label):
        self.binary = binary
        self.work = work
        self.label = label
        self.proc = None
        self.port = None
        self.admin = None
        self.log_path = os.path.join(work, f"{label}.log")

    async def start(self, config, log_level="warn", timeout=30):
        config_path = os.path.join(self.work, f"{self.label}.yaml")
        ready = os.path.join(self.work, f"{self.label}.ready")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=1)  # JSON is YAML
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", config_path, "--ready-file", ready, "--log-level", log_level],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            listeners = read_ready_file(ready)
            if listeners and "_admin" in listeners and len(listeners) >= 2:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"wsgate did not start (exit {self.proc.poll()}); log:\n"
                                 + self.log_text()[-3000:])
            await asyncio.sleep(0.05)
        self.port = next(port for name, port in listeners.items() if name != "_admin")
        self.admin = listeners["_admin"]
        return self

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    async def request(self, method, path, timeout=30):
        """(status, body) of an admin API request."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.admin), timeout)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         f"Content-Length: 0\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        return status, body.decode("utf-8", "replace")

    async def backends(self):
        status, body = await self.request("GET", "/admin/backends")
        if status != 200:
            raise BenchError(f"GET /admin/backends: {status} {body[:200]}")
        return json.loads(body)

    async def metrics(self):
        status, body = await self.request("GET", "/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics: {status} {body[:200]}")
        return body

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_ready_file(path):
    """{listener name: port} once the ready file is complete, else None."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    listeners = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].rpartition(":")[2].isdigit():
            return None
        listeners[parts[0]] = int(parts[1].rpartition(":")[2])
    return listeners


def dechunk(body):
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def series(text, name):
    """[(labels dict, value)] of the samples of ``name`` in a Prometheus text."""
    found = []
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            found.append((dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")),
                          float(match.group(3))))
    return found


def moves_by_result(text, reason):
    counts = {}
    for labels, value in series(text, "wsgate_migrations_total"):
        if labels.get("reason") == reason and value:
            counts[labels["result"]] = counts.get(labels["result"], 0) + int(value)
    return counts


def histogram_quantiles(text, name, quantiles):
    """{q: value} interpolated in the buckets like PromQL's histogram_quantile()."""
    buckets = {}
    for labels, value in series(text, name + "_bucket"):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0) + value
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    result = {}
    for q in quantiles:
        if not total:
            result[q] = None
            continue
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound in bounds:
            if buckets[bound] >= rank:
                if bound == float("inf"):
                    result[q] = lower_bound
                else:
                    width = buckets[bound] - lower_count
                    fraction = (rank - lower_count) / width if width else 1.0
                    result[q] = lower_bound + (bound - lower_bound) * fraction
                break
            lower_bound, lower_count = bound, buckets[bound]
    return result


DRAINING_LINE = re.compile(r"^(\S+)Z .* backend p/\S+ draining \d+ connections")
MOVED_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z .*moved from (\S+) to (\S+) "
                        r"reason=(\S+) pause_ms=(\d+)")


def log_time(stamp):
    """Unix time of a log line's UTC timestamp (ms resolution)."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()


def drain_logged(log_text):
    """Unix time of wsgate's ``backend p/... draining N connections`` line (None if absent)."""
    for line in log_text.splitlines():
        match = DRAINING_LINE.match(line)
        if match:
            return log_time(match.group(1))
    return None


def moved_lines(log_text):
    """[(unix time, from, to, reason, pause ms)] of wsgate's ``session ... moved`` lines."""
    moves = []
    for line in log_text.splitlines():
        match = MOVED_LINE.match(line)
        if match:
            moves.append((log_time(match.group(1)), match.group(2), match.group(3), match.group(4),
                          int(match.group(5))))
    return moves


# ------------------------------------------------------------------------------------------
# The peers (migration_peer.py subprocesses)
# ------------------------------------------------------------------------------------------

class Peer:
    """A migration_peer.py process; commands on stdin, one answer line each on stdout."""

    def __init__(self, proc, label):
        self.proc = proc
        self.label = label
        self.port = None
        self.name = None
        self.first_id = 0
        self.count = 0

    @classmethod
    async def start(cls, python, role, label, **options):
        args = [python, PEER, role]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    limit=1 << 26)
        peer = cls(proc, label)
        if role == "server":
            line = await peer.line(("listening",), 30)
            peer.port = int(line.split()[1])
        return peer

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    async def line(self, prefixes, timeout):
        """The next stdout line starting with one of ``prefixes``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.label}: no {prefixes} line within {timeout}s")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except asyncio.TimeoutError:
                continue
            if not raw:
                raise BenchError(f"{self.label} exited ({await self.proc.wait()}) before "
                                 f"{prefixes}")
            text = raw.decode().strip()
            if text.startswith("failed"):
                raise BenchError(f"{self.label}: {text}")
            if text.startswith(prefixes):
                return text

    async def ask(self, command, timeout=60):
        """Send a command; its answer without the leading word."""
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        word = command.split()[0]
        return (await self.line((word + " ",), timeout))[len(word) + 1:]

    async def stats(self, command="stats"):
        answer = await self.ask(command)
        return {k: int(v) for k, v in (kv.split("=") for kv in answer.split())}

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


async def wait_for(read, done, what, timeout, poll=0.25):
    """Poll ``read()`` until ``done(value)``; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what} (last {value})")
        await asyncio.sleep(poll)


async def client_totals(clients):
    totals = {}
    for client in clients:
        for key, value in (await client.stats()).items():
            totals[key] = totals.get(key, 0) + value
    return totals


# ------------------------------------------------------------------------------------------
# Part 1: migration
# ------------------------------------------------------------------------------------------

def migrate_config(backends, sessions):
    return {
        "workers": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0"},
        "routes": [{"pool": "p"}],
        "pools": [{"name": "p", "balance": "least_conn", "migrate": True,
                   "backends": [{"address": b.address} for b in backends]}],
        # Long drain: a session closed by the drain instead of moved would show as a failure.
        "timeouts": {"drain": "300s", "close": "10s"},
        "limits": {"max_connections": sessions + 100},
        "log": {"access": "off"},
    }


async def migration_run(args, sessions, work, run_index):
    """One drain of backend a at ``sessions`` sessions; a dict of figures."""
    python = args.python
    label = f"m{sessions}-{run_index}"
    servers, clients, gate = [], [], None
    try:
        for name in ("a", "b", "c"):
            server = await Peer.start(python, "server", f"backend {name}", name=name)
            server.name = name
            servers.append(server)
        gate = await Gate(args.wsgate, work, label).start(migrate_config(servers, sessions),
                                                          log_level="info")
        t_connect = time.monotonic()
        per = args.per_client
        for first in range(0, sessions, per):
            count = min(per, sessions - first)
            client = await Peer.start(python, "client", f"client {first}", port=gate.port,
                                      count=count, first_id=first, interval=args.interval,
                                      concurrency=args.concurrency)
            client.first_id, client.count = first, count
            clients.append(client)
        for client in clients:
            await client.line(("connected",), 60 + sessions / 20)
        connect_s = time.monotonic() - t_connect

        state = await gate.backends()
        active = {b["address"]: b["active"] for b in state["backends"] if b["pool"] == "p"}
        if sum(active.values()) != sessions:
            raise BenchError(f"wsgate has {sum(active.values())} sessions, expected {sessions}")
        a = servers[0]
        on_a = active[a.address]

        # Every session exchanges a message (so each has a backend to switch from).
        for client in clients:
            await client.ask("kick")
        await wait_for(lambda: client_totals(clients),
                       lambda t: t["silent"] == 0 and t["unanswered"] == 0,
                       "an echo on every session", 60)

        # wsgate's CPU is modelled as idle + per relayed message + per move. Idle: a window
        # with no traffic (with --interval 0). Per message: a window with the probes' traffic.
        # The move window's CPU less both is the moves' (the peers may send less while they
        # are busy with the moves, so traffic is subtracted per message, not per second).
        # No polling inside the windows: a /metrics scrape costs wsgate about 1 µs per open
        # descriptor (it lists /proc/self/fd), so wsgate's log is watched instead.
        idle0, _ = await gate_sample(gate)
        await asyncio.sleep(args.baseline)
        idle1, _ = await gate_sample(gate, end=True)
        idle_rate = {k: (idle1[k] - idle0[k]) / (idle1["t"] - idle0["t"]) for k in CPU_KEYS}

        # Probes: a sample of a's sessions send often from now on.
        ids = [int(i) for i in (await a.ask("ids")).split(",") if i]
        # Every other run has none: the probes' traffic is most of wsgate's CPU in the move
        # window, and subtracting it is not exact (held messages go out in bursts, cheaper per
        # message), so wsgate's CPU per move is taken from the runs without probes.
        count = args.probes if run_index % 2 == 0 or args.runs == 1 else 0
        probes = random.Random(run_index).sample(ids, min(count, len(ids)))
        for client in clients:
            mine = [i for i in probes if client.first_id <= i < client.first_id + client.count]
            if mine:
                await client.ask(f"probe {args.probe_interval} " + ",".join(map(str, mine)))
        t_steady = time.monotonic()  # the probes' round trips from here to the drain
        await wait_for(lambda: client_totals(clients),
                       lambda t: t["recv"] >= sessions + 5 * len(probes),
                       "the probes to flow", 30)
        before, _ = await gate_sample(gate)
        await asyncio.sleep(args.baseline)
        after, _ = await gate_sample(gate, end=True)
        relayed = after["messages"] - before["messages"]
        per_message = {
            k: max(0.0, (after[k] - before[k]) - idle_rate[k] * (after["t"] - before["t"]))
            / max(1, relayed) for k in CPU_KEYS}

        # The drain; done when wsgate has logged an outcome for each of a's sessions.
        peak_fds = open_files(gate.pid)
        log_offset = os.path.getsize(gate.log_path)
        start, _ = await gate_sample(gate)
        t_wall, t_drain = time.time(), time.monotonic()
        status, body = await gate.request("POST", f"/admin/backends/p/{a.address}/drain")
        if status != 200:
            raise BenchError(f"drain: {status} {body[:200]}")
        deadline = time.monotonic() + 60 + sessions / 50
        outcomes = 0
        with open(gate.log_path, errors="replace") as log:
            log.seek(log_offset)
            pending = ""
            while outcomes < on_a:
                await asyncio.sleep(POLL)
                pending += log.read()
                lines = pending.split("\n")
                pending = lines.pop()
                outcomes += sum(1 for line in lines
                                if " moved from " in line or " could not move off " in line)
                peak_fds = max(peak_fds, open_files(gate.pid))
                if time.monotonic() > deadline:
                    raise BenchError(f"only {outcomes} of {on_a} moves logged by the deadline")
        end, text = await gate_sample(gate, end=True)
        counts = moves_by_result(text, "drain")
        if sum(counts.values()) != on_a:
            raise BenchError(f"drain moves by result {counts}, {on_a} logged")
        # A move that fails is a finding, not a broken run: its session must get 1012 (as
        # documented), the figures cover the moved ones, and the run is reported as failed.
        problems = []
        moved = counts.get("moved", 0)
        failed = {k: v for k, v in counts.items() if k != "moved"}
        if failed:
            problems.append(f"{sum(failed.values())} of {on_a} moves failed: {failed}; "
                            f"wsgate says {failure_reasons(gate.log_text())}")
        if not moved:
            raise BenchError("; ".join(problems))
        window_messages = end["messages"] - start["messages"]
        window = end["t"] - start["t"]
        cpu = {k: (end[k] - start[k]) - idle_rate[k] * window - per_message[k] * window_messages
               for k in CPU_KEYS}
        bucket_q = histogram_quantiles(text, "wsgate_migration_pause_seconds",
                                       (0.5, 0.99))
        await wait_for(gate.backends, lambda s: all(
            b["active"] == 0 for b in s["backends"] if b["address"] == a.address),
            "the drained backend to have no session", 30)

        # Every moved session exchanges a message with its new backend.
        for client in clients:
            await client.ask("kick")
        await wait_for(lambda: client_totals(clients), lambda t: t["switched"] >= moved,
                       f"an echo from the new backend on each of the {moved} moved sessions", 60)
        # Settle: quiet, every echo home, nobody closed; then the clients' view of the moves.
        for client in clients:
            await client.stats("quiet")
        totals = await wait_for(lambda: client_totals(clients),
                                lambda t: t["unanswered"] == 0 or t["errors"],
                                "every echo of the open sessions to arrive", 60)
        switches, latency, probe_ids, closes, errors = [], [], set(), {}, []
        for client in clients:
            report = json.loads(await client.ask(f"report {t_steady} {t_drain}"))
            switches += report["switches"]
            latency.append(report["latency"])
            probe_ids.update(report["probes"])
            errors += report["errors"]
            for code, n in report["closes"].items():
                closes[code] = closes.get(code, 0) + n
        if totals["errors"]:
            raise BenchError(f"clients: {totals}; e.g. {errors[:5]}")
        if totals["closed"] != sum(failed.values()) or set(closes) - {"1012"}:
            problems.append(f"clients closed: {closes} (expected 1012 for each failed move)")
        switched_ids = [s[0] for s in switches]
        if len(switched_ids) != moved or len(set(switched_ids)) != moved or \
                any(s[1] != "a" or s[2] not in ("b", "c") for s in switches):
            raise BenchError(f"{len(switches)} backend switches seen by the clients "
                             f"({len(set(switched_ids))} sessions), expected {moved} from a "
                             f"to b or c: e.g. {switches[:3]}")

        log_text = gate.log_text()
        moves = moved_lines(log_text)
        t_request = drain_logged(log_text) or t_wall
        if len(moves) != moved:
            raise BenchError(f"{len(moves)} 'moved from' log lines, expected {moved}")
        last_move = max(m[0] for m in moves)
        # The first hold began at the first tick after the request: the earliest (swap time -
        # pause) in the log (ms resolution).
        first_hold = min(m[0] - m[4] / 1000 for m in moves)
        # Client side, per probe: the first message the new backend answered was sent at t2,
        # the last the old one answered at t1. The hold began in (t1, t2]; if the message of t2
        # was held, the swap came (a2 - a1) - (t2 - t1) after t2 (its echo was that much later
        # than usual), otherwise the swap came before t2. So the pause is at least that
        # "extra" (0 if negative) and less than extra + (t2 - t1); the quantiles of these
        # bounds bound the quantiles of the pauses.
        lower, upper = [], []
        for conn_id, _, _, t1, a1, t2, a2 in switches:
            if conn_id in probe_ids:
                extra = max(0.0, (a2 - a1) - (t2 - t1))
                lower.append(extra)
                upper.append(extra + (t2 - t1))
        duration = last_move - t_request
        moving = last_move - first_hold
        return {
            "sessions": sessions, "on_a": on_a, "moved": moved, "connect_s": connect_s,
            "failed": sum(failed.values()), "problems": problems, "closes": closes,
            "duration_s": duration, "request_moves_per_s": moved / duration,
            "moving_s": moving, "moves_per_s": moved / moving if moving > 0 else None,
            "tick_wait_ms": (first_hold - t_request) * 1000,
            "cpu_run_s": cpu["run"], "cpu_ticks_s": cpu["ticks"],
            "raw": {"idle": [idle0, idle1], "baseline": [before, after],
                    "window": [start, end]},
            "cpu_us_per_move": cpu["run"] / on_a * 1e6,
            "moves_per_cpu_s": on_a / cpu["run"] if cpu["run"] > 0 else None,
            "idle_cpu_pct": idle_rate["run"] * 100,
            "base_cpu_pct": (after["run"] - before["run"]) / (after["t"] - before["t"]) * 100,
            "base_us_per_message": per_message["run"] * 1e6,
            "window_s": window, "window_messages": window_messages,
            "bucket_p50_ms": ms(bucket_q[0.5]), "bucket_p99_ms": ms(bucket_q[0.99]),
            "log_p50_ms": quantile([m[4] for m in moves], 0.5),
            "log_p99_ms": quantile([m[4] for m in moves], 0.99),
            "log_max_ms": max(m[4] for m in moves),
            "client_n": len(lower), "probes": len(probes),
            "client_lo_p50_ms": ms(quantile(lower, 0.5)),
            "client_hi_p50_ms": ms(quantile(upper, 0.5)),
            "client_lo_p99_ms": ms(quantile(lower, 0.99)),
            "client_hi_p99_ms": ms(quantile(upper, 0.99)),
            "rtt_p50_ms": ms(median([lat[0] for lat in latency])),
            "peak_fds": peak_fds, "messages": totals["sent"],
        }
    finally:
        for peer in clients + servers:
            await peer.stop()
        if gate:
            gate.stop()


def failure_reasons(log_text):
    """{why: count} of wsgate's "could not move" lines and of the causes in its move warnings."""
    reasons = {}
    for line in log_text.splitlines():
        match = re.search(r"could not move off \S+: (.*)$", line) or \
            re.search(r" move client=.* failed: (.*)$", line)
        if match:
            reasons[match.group(1)] = reasons.get(match.group(1), 0) + 1
    return reasons


def ms(seconds):
    return None if seconds is None else seconds * 1000


# ------------------------------------------------------------------------------------------
# Part 2: discovery
# ------------------------------------------------------------------------------------------

class Dnsmasq:
    """dnsmasq on 127.0.0.1:<free port> answering from a hosts file, logging every query."""

    def __init__(self, work, hosts):
        self.work = work
        self.hosts_path = os.path.join(work, "dns-hosts")
        self.log_path = os.path.join(work, "dnsmasq.log")
        with open(self.hosts_path, "w") as f:
            f.writelines(f"{address} {name}\n" for name, addresses in hosts.items()
                         for address in addresses)
        self.names = list(hosts)
        self.proc = None
        self.port = None

    def start(self):
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        for _ in range(20):  # a free port can be taken between probing and binding
            port = free_udp_tcp_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts",
                     f"--addn-hosts={self.hosts_path}", f"--port={port}",
                     "--listen-address=127.0.0.1", "--bind-interfaces", f"--user={user}",
                     "--pid-file=", "--local=/test/", "--cache-size=0", "--log-facility=-",
                     "--log-queries"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self.port = port
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                if dns_answers(port, self.names[0]) is not None:
                    return self
                time.sleep(0.05)
            self.stop()
        raise SetupError("dnsmasq did not start; log:\n" + open(self.log_path).read()[-2000:])

    def queries(self):
        """A queries logged so far, per name."""
        counts = dict.fromkeys(self.names, 0)
        with open(self.log_path, errors="replace") as f:
            for line in f:
                match = re.search(r"query\[A\] (\S+) from", line)
                name = match.group(1).lower() if match else None  # evdns randomizes the case
                if name in counts:
                    counts[name] += 1
        return counts

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both; after thousands of
    connections many TCP ports are taken or in TIME_WAIT)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise SetupError("no port free for both UDP and TCP")


def dns_answers(port, name, timeout=0.3):
    """(answer count, truncated) of an A query without EDNS, or None if no answer."""
    packet = bytes.fromhex("424201000001000000000000")
    packet += b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    packet += b"\0\0\x01\0\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, ("127.0.0.1", port))
            reply = s.recv(4096)
        except (socket.timeout, ConnectionRefusedError):
            return None
    return int.from_bytes(reply[6:8], "big"), bool(reply[2] & 0x02)


def discovery_hosts(names, addresses):
    """{NAME.test: [127.0.1.x, ...]}: ``addresses`` in all, spread over ``names`` names."""
    hosts = {}
    for index in range(addresses):
        name = f"svc{index % names}.test"
        hosts.setdefault(name, []).append(f"127.0.{1 + index // 250}.{1 + index % 250}")
    return hosts


def discovery_config(hosts, port, dns_port, discovery):
    if discovery:
        backends = [{"address": f"{name}:{port}"} for name in hosts]
    else:
        backends = [{"address": f"{a}:{port}"} for addresses in hosts.values()
                    for a in addresses]
    pool = {"name": "app", "backends": backends}
    config = {
        "workers": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0"},
        "routes": [{"pool": "app"}],
        "pools": [pool],
        "log": {"access": "off"},
    }
    if discovery:
        pool["discovery"] = {"interval": "1s", "require_at_start": False}
        config["resolver"] = {"nameservers": [f"127.0.0.1:{dns_port}"]}
    return config


async def discovery_run(args, dns, hosts, discovery, work, label):
    """wsgate idle for ``args.seconds``: CPU, refreshes (A queries), backends, errors."""
    gate = Gate(args.wsgate, work, label)
    try:
        await gate.start(discovery_config(hosts, 9, dns.port, discovery))
        want = sum(len(a) for a in hosts.values())

        async def app_backends():
            state = await gate.backends()
            return sum(1 for b in state["backends"] if b["pool"] == "app")
        # Up to date: every address is a backend (or, if some answers fail, a few refreshes
        # have been tried), then one more interval for start-up work to finish.
        if discovery:
            queries0 = dns.queries()
            await wait_for(lambda: asyncio.to_thread(dns.queries),
                           lambda q: all(q[n] >= queries0[n] + 2 for n in q),
                           "two refreshes", 15)
        backends = await app_backends()
        queries = dns.queries() if discovery else None
        before = cpu_sample(gate.pid)
        await asyncio.sleep(args.seconds)  # the measured window: wsgate idle but for refreshes
        after = cpu_sample(gate.pid)
        refreshes = None
        if discovery:
            now = dns.queries()
            refreshes = min(now[n] - queries[n] for n in now)  # every name, each refresh
        errors = series(await gate.metrics(), "wsgate_discovery_errors_total")
        return {"discovery": discovery, "backends": backends, "want": want,
                "window_s": after["t"] - before["t"],
                "run_s": after["run"] - before["run"], "ticks_s": after["ticks"] - before["ticks"],
                "refreshes": refreshes, "errors": sum(v for _, v in errors),
                "log_tail": gate.log_text()[-600:]}
    finally:
        gate.stop()


async def discovery_part(args, work, runs):
    hosts = discovery_hosts(args.names, args.addresses)
    dns = Dnsmasq(work, hosts).start()
    try:
        sizes = {name: dns_answers(dns.port, name) for name in hosts}
        pairs = []
        for index in range(runs):
            order = (False, True) if index % 2 == 0 else (True, False)
            pair = {}
            for discovery in order:
                label = f"d{'on' if discovery else 'off'}-{index}"
                result = await discovery_run(args, dns, hosts, discovery, work, label)
                pair["on" if discovery else "off"] = result
                print(f"  discovery {'on ' if discovery else 'off'} run {index + 1}: "
                      f"{result['backends']} backends, {result['run_s'] * 1000:.1f} ms run "
                      f"({result['ticks_s'] * 1000:.0f} ms in ticks) over "
                      f"{result['window_s']:.1f} s, refreshes {result['refreshes']}, "
                      f"errors {result['errors']:.0f}", flush=True)
            pairs.append(pair)
        return {"hosts": {n: len(a) for n, a in hosts.items()}, "answers": sizes,
                "pairs": pairs}
    finally:
        dns.stop()


def discovery_figures(part):
    """Per pair: µs per refresh (schedstat and ticks), and the medians."""
    rows = []
    for pair in part["pairs"]:
        on, off = pair["on"], pair["off"]
        refreshes = on["refreshes"] or 0
        row = {"refreshes": refreshes, "backends_on": on["backends"],
               "backends_off": off["backends"], "errors": on["errors"],
               "on_ms_per_s": on["run_s"] / on["window_s"] * 1000,
               "off_ms_per_s": off["run_s"] / off["window_s"] * 1000}
        for key in ("run_s", "ticks_s"):
            extra = on[key] - off[key] * on["window_s"] / off["window_s"]
            row[key.replace("_s", "_us_per_refresh")] = \
                extra / refreshes * 1e6 if refreshes else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


MIGRATION_ROWS = [
    ("sessions on the drained backend", "on_a", 0),
    ("moved / failed (the client got 1012)", None, None),
    ("**moves per second** (first hold to last swap, wsgate's log)", "moves_per_s", 0),
    ("first hold to last swap, s", "moving_s", 3),
    ("drain request to the first hold (the 100 ms tick), ms", "tick_wait_ms", 0),
    ("moves per second from the drain request (its log line)", "request_moves_per_s", 0),
    ("wsgate CPU per move attempt, µs (schedstat; runs without probes)", "cpu_us_per_move", 0),
    ("**moves per wsgate CPU-second** (one worker: per core)", "moves_per_cpu_s", 0),
    ("wsgate CPU over the moves, s: schedstat / stat ticks", None, None),
    ("wsgate CPU idle, % of a core (subtracted per second)", "idle_cpu_pct", 1),
    ("wsgate CPU with the probes, % of a core", "base_cpu_pct", 1),
    ("… per relayed message, µs (subtracted per message)", "base_us_per_message", 1),
    ("**pause p50, ms**: buckets / log `pause_ms` / clients (bounds)", None, None),
    ("**pause p99, ms**: buckets / log `pause_ms` / clients (bounds)", None, None),
    ("pause max, ms (log)", "log_max_ms", 0),
    ("probe sessions (client-side bounds)", "client_n", 0),
    ("the probes' echo round trip p50 before the drain, ms", "rtt_p50_ms", 1),
    ("wsgate peak open files", "peak_fds", 0),
    ("time to open the sessions, s", "connect_s", 1),
]


CPU_ROWS = ("cpu_us_per_move", "moves_per_cpu_s", "cpu_run_s", "cpu_ticks_s")
PROBE_ROWS = ("client_n", "rtt_p50_ms", "base_cpu_pct", "base_us_per_message")


def cpu_runs(runs):
    """The runs wsgate's CPU per move is read from: those without probes, if any."""
    return [r for r in runs if not r["probes"]] or runs


def probe_runs(runs):
    return [r for r in runs if r["probes"]] or runs


def migration_table(results, args):
    scales = sorted(results)
    lines = ["| figure (median of the runs) | " + " | ".join(f"{n:,} sessions" for n in scales)
             + " |", "|---|" + "---:|" * len(scales)]
    for title, key, digits in MIGRATION_ROWS:
        cells = []
        for n in scales:
            runs = results[n]
            if key in CPU_ROWS or title.startswith("wsgate CPU over"):
                runs = cpu_runs(runs)
            elif key in PROBE_ROWS:
                runs = probe_runs(runs)
            if key is not None:
                cells.append(fmt(median([r[key] for r in runs]), digits))
            elif title.startswith("moved / failed"):
                cells.append(f"{fmt(median([r['moved'] for r in runs]), 0)} / "
                             f"{fmt(median([r['failed'] for r in runs]), 0)}")
            elif title.startswith("wsgate CPU over"):
                cells.append(f"{fmt(median([r['cpu_run_s'] for r in runs]), 3)} / "
                             f"{fmt(median([r['cpu_ticks_s'] for r in runs]), 2)}")
            else:
                q = "p50" if "p50" in title else "p99"
                cells.append(" / ".join(fmt(median([r[f"{src}_{q}_ms"] for r in runs]), 1)
                                        for src in ("bucket", "log")) + " / " +
                             "–".join(fmt(median([r[f"client_{b}_{q}_ms"] for r in runs]), 1)
                                      for b in ("lo", "hi")))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Every run (moves/s; µs of wsgate CPU per move; pause p50/p99 ms from the log; "
                 "probes):")
    lines.append("")
    for n in scales:
        lines.append(f"- {n:,}: " + "; ".join(
            f"{fmt(r['moves_per_s'], 0)}/s, {fmt(r['cpu_us_per_move'], 0)} µs, "
            f"{fmt(r['log_p50_ms'], 0)}/{fmt(r['log_p99_ms'], 0)} ms, {r['probes']} probes"
            + (f", {r['failed']} failed" if r["failed"] else "") for r in results[n]))
    return "\n".join(lines)


def discovery_table(part, rows):
    lines = [f"Names and addresses: {part['hosts']} (A answers without EDNS, (records, "
             f"truncated): {part['answers']})", "",
             "| run | backends (discovery / static) | refreshes | discovery errors "
             "| wsgate CPU, ms per s: discovery / static | µs per refresh: schedstat "
             "| µs per refresh: stat ticks |", "|---|---:|---:|---:|---:|---:|---:|"]
    for index, row in enumerate(rows):
        lines.append(f"| {index + 1} | {row['backends_on']} / {row['backends_off']} | "
                     f"{row['refreshes']} | {row['errors']:.0f} | "
                     f"{row['on_ms_per_s']:.3f} / {row['off_ms_per_s']:.3f} | "
                     f"{fmt(row['run_us_per_refresh'], 0)} | "
                     f"{fmt(row['ticks_us_per_refresh'], 0)} |")
    lines.append(f"| **median** | | {fmt(median([r['refreshes'] for r in rows]), 0)} | | "
                 f"{fmt(median([r['on_ms_per_s'] for r in rows]), 3)} / "
                 f"{fmt(median([r['off_ms_per_s'] for r in rows]), 3)} | "
                 f"**{fmt(median([r['run_us_per_refresh'] for r in rows]), 0)}** | "
                 f"{fmt(median([r['ticks_us_per_refresh'] for r in rows]), 0)} |")
    return "\n".join(lines)


def machine_text():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def git_describe():
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------

async def run_all(args):
    work = tempfile.mkdtemp(prefix="wsgate-migbench.")
    failures = []
    out = [f"# Session migration and discovery ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
           "", f"`{' '.join(sys.argv)}` at {git_describe()}; {machine_text()} at the start.", ""]
    try:
        if not args.skip_migration:
            results = {}
            for sessions in args.sessions:
                for index in range(args.runs):
                    try:
                        r = await migration_run(args, sessions, work, index)
                    except (BenchError, OSError, asyncio.TimeoutError) as e:
                        failures.append(f"migration {sessions} run {index + 1}: {e!r}")
                        print(f"FAIL migration {sessions} run {index + 1}: {e!r}", flush=True)
                        continue
                    results.setdefault(sessions, []).append(r)
                    if args.verbose:
                        print(f"    raw CPU samples: {r['raw']}", flush=True)
                    for problem in r["problems"]:
                        failures.append(f"migration {sessions} run {index + 1}: {problem}")
                        print(f"FAIL migration {sessions} run {index + 1}: {problem}",
                              flush=True)
                    print(f"  migration {sessions} run {index + 1}: moved {r['moved']} in "
                          f"{r['moving_s']:.3f}s = {fmt(r['moves_per_s'], 0)}/s "
                          f"({r['duration_s']:.3f}s from the request), "
                          f"{r['cpu_us_per_move']:.0f} µs wsgate CPU per move, pause p50/p99 "
                          f"buckets {fmt(r['bucket_p50_ms'])}/{fmt(r['bucket_p99_ms'])} ms, "
                          f"log {r['log_p50_ms']}/{r['log_p99_ms']} ms, clients "
                          f"{fmt(r['client_lo_p50_ms'])}–{fmt(r['client_hi_p50_ms'])}/"
                          f"{fmt(r['client_lo_p99_ms'])}–{fmt(r['client_hi_p99_ms'])} ms "
                          f"({r['client_n']} probes), peak fds {r['peak_fds']}", flush=True)
            if results:
                out += ["## Migration", "", f"Drain of one of 3 backends, `workers: 1`; "
                        f"sessions {f'send every {args.interval} s' if args.interval else 'idle'}"
                        f" but for one message before the drain and one after; in every other "
                        f"run (the 1st, 3rd, ...) {args.probes} probes of the drained backend "
                        f"send every {args.probe_interval * 1000:.0f} ms (client bounds "
                        f"{args.probe_interval * 1000:.0f} ms apart), the others give wsgate's "
                        f"CPU per move; {args.runs} run(s) per count.", "",
                        migration_table(results, args), ""]
        part = None
        if not args.skip_discovery:
            try:
                if not os.path.exists(DNSMASQ):
                    raise SetupError(f"{DNSMASQ} is missing (apt-get install dnsmasq-base)")
                part = await discovery_part(args, work, args.discovery_runs)
            except (SetupError, BenchError, OSError, asyncio.TimeoutError) as e:
                failures.append(f"discovery: {e!r}")
                print(f"FAIL discovery: {e!r}", flush=True)
        if part:
            rows = discovery_figures(part)
            out += ["## Discovery refreshes", "",
                    f"`discovery: {{interval: 1s}}`, {args.addresses} addresses over "
                    f"{args.names} name(s), wsgate idle, {args.seconds:.0f} s per run, "
                    "static backends as the baseline.", "", discovery_table(part, rows), ""]
            for row in rows:
                if row["backends_on"] != row["backends_off"] and not args.allow_missing:
                    failures.append(f"discovery found {row['backends_on']} backends of "
                                    f"{row['backends_off']}")
                if not row["refreshes"]:
                    failures.append("no discovery refresh in a window")
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
    parser.add_argument("--sessions", default="1000,8000,9000",
                        help="comma-separated session counts (default 1000,8000,9000)")
    parser.add_argument("--runs", type=int, default=6,
                        help="runs per session count (default 6: 3 with probes, 3 without)")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between a session's messages (default 0: idle but for "
                        "one message before the drain and one after)")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--probe-interval", type=float, default=0.02)
    parser.add_argument("--per-client", type=int, default=3000,
                        help="sessions per client process (default 3000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="handshakes in flight per client process")
    parser.add_argument("--baseline", type=float, default=3.0,
                        help="seconds of the no-move CPU window before the drain")
    parser.add_argument("--discovery-runs", type=int, default=3)
    parser.add_argument("--addresses", type=int, default=100)
    parser.add_argument("--names", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="discovery: the measured window of each run (default 60)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="discovery: do not fail when fewer backends than addresses")
    parser.add_argument("--skip-migration", action="store_true")
    parser.add_argument("--skip-discovery", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="60 sessions, one run; discovery 10 addresses over 2 names, 1.5 s")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", action="store_true", help="print the raw CPU samples")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    args.sessions = [int(n) for n in args.sessions.split(",")]
    if args.smoke:
        args.sessions, args.runs, args.discovery_runs, args.probes = [60], 1, 1, 10
        args.baseline, args.addresses, args.names, args.seconds = 0.5, 10, 2, 1.5
        if not os.path.exists(DNSMASQ):
            print(f"note: {DNSMASQ} is missing: the discovery part is skipped")
            args.skip_discovery = True
    elif args.out is None:
        args.out = os.path.join(HERE, "results", "migration.md")
    args.wsgate = args.wsgate or os.path.join(args.build_dir, "wsgate")
    if not os.access(args.wsgate, os.X_OK):
        print(f"migration.py: {args.wsgate} is missing; build first (scripts/build.sh build)")
        return 77 if args.smoke else 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    need = 2 * max(args.sessions) + 2000
    if hard < need and not args.skip_migration:
        print(f"note: open files are capped at {hard}; {max(args.sessions)} sessions need "
              f"about {need} in wsgate")
    try:
        return asyncio.run(run_all(args))
    except SetupError as e:
        print(f"migration.py: {e}")
        return 77 if args.smoke else 2
    except KeyboardInterrupt:
        return 2


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    sys.exit(main())
