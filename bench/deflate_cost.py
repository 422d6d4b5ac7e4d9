#!/usr/bin/env python3
"""Cost of limits.compression: inspect against passthrough (permessage-deflate).

Runs wsgate (one worker) in front of a python3-websockets echo backend that negotiates
permessage-deflate, and measures from /proc/PID of wsgate:

* memory: VmRSS with CONNS idle compressed connections, then after each has sent one
  compressed message (and got the compressed echo back), so the zlib state of both directions
  exists; per connection = delta / CONNS. With and without context takeover.
* CPU: utime + stime of wsgate over MESSAGES echoed messages of SIZE bytes (compressible
  JSON-like text), µs per message (one message each way, so two inflations under inspect).

Usage: bench/deflate_cost.py BUILD_DIR [CONNS] [MESSAGES] [SIZE] [WINDOW_BITS]
Needs python3-websockets (Debian's). Prints a markdown table.
"""

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import websockets
from websockets.extensions.permessage_deflate import (ClientPerMessageDeflateFactory,
                                                      ServerPerMessageDeflateFactory)

TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("wsgate exited")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def settle(pid, quiet=0.3, timeout=10):
    """Wait until wsgate's CPU time stops moving (its loop has handled everything queued)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


async def run(binary, mode, takeover, conns, messages, size, bits):
    backend_factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=not takeover, client_no_context_takeover=not takeover,
        server_max_window_bits=bits, client_max_window_bits=bits)

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    backend = await websockets.serve(echo, "127.0.0.1", 0, compression=None,
                                     extensions=[backend_factory], max_size=None)
    backend_port = backend.sockets[0].getsockname()[1]
    port = free_port()
    config = {
        "workers": 1,
        "listeners": [{"name": "public", "address": f"127.0.0.1:{port}"}],
        "routes": [{"pool": "p"}],
        "pools": [{"name": "p", "backends": [{"address": f"127.0.0.1:{backend_port}"}]}],
        "limits": {"compression": mode, "max_connections": conns + 100},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(config, f)  # JSON is YAML
    proc = subprocess.Popen([binary, "-c", f.name, "--log-level", "warn"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_listening(port, proc)
        client_factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=not takeover, client_no_context_takeover=not takeover,
            server_max_window_bits=bits, client_max_window_bits=bits)
        url = f"ws://127.0.0.1:{port}/"
        await settle(proc.pid)
        base = rss_kib(proc.pid)
        clients = []
        for start in range(0, conns, 100):
            clients += await asyncio.gather(*[
                websockets.connect(url, compression=None, extensions=[client_factory],
                                   max_size=None, ping_interval=None)
                for _ in range(start, min(conns, start + 100))])
        assert all(c.extensions for c in clients), "permessage-deflate was not negotiated"
        await settle(proc.pid)
        idle = rss_kib(proc.pid)
        text = json.dumps([{"id": i, "name": f"user{i % 97}", "price": i * 0.25,
                            "tags": ["alpha", "beta", "gamma"][: 1 + i % 3]}
                           for i in range(size // 60)])[:size]
        for start in range(0, conns, 100):
            batch = clients[start:start + 100]
            await asyncio.gather(*[c.send(text) for c in batch])
            replies = await asyncio.gather(*[c.recv() for c in batch])
            assert all(r == text for r in replies)
        await settle(proc.pid)
        used = rss_kib(proc.pid)

        # CPU: one connection, messages back to back (a window of 16 in flight).
        ws = clients[0]
        await settle(proc.pid)
        cpu_before = cpu_seconds(proc.pid)
        started = time.monotonic()
        in_flight = 16
        for i in range(0, messages, in_flight):
            n = min(in_flight, messages - i)
            for _ in range(n):
                await ws.send(text)
            for _ in range(n):
                assert await ws.recv() == text
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu_before
        for c in clients:
            await c.close()
        return {
            "mode": mode, "takeover": takeover, "conns": conns,
            "idle_kib_per_conn": (idle - base) / conns,
            "used_kib_per_conn": (used - base) / conns,
            "cpu_us_per_message": cpu / messages * 1e6,
            "messages_per_s": messages / elapsed,
        }
    finally:
        proc.terminate()
        proc.wait(10)
        backend.close()
        await backend.wait_closed()
        os.unlink(f.name)


async def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 16384
    bits = int(sys.argv[5]) if len(sys.argv) > 5 else 15
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * conns + 200)), hard))
    binary = os.path.join(build, "wsgate")
    rows = []
    for takeover in (True, False):
        for mode in ("passthrough", "inspect"):
            rows.append(await run(binary, mode, takeover, conns, messages, size, bits))
    print(f"{conns} connections, {messages} messages of {size} B (compressible JSON), "
          f"window bits {bits}, one worker\n")
    print("| context takeover | compression | KiB/conn idle | KiB/conn after a message "
          "| wsgate CPU µs/message | messages/s (one connection) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'yes' if r['takeover'] else 'no'} | {r['mode']} | "
              f"{r['idle_kib_per_conn']:.2f} | {r['used_kib_per_conn']:.2f} | "
              f"{r['cpu_us_per_message']:.1f} | {r['messages_per_s']:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
