#!/usr/bin/env python3
"""Demo WebSocket echo backend for trying out wsgate.

Usage: demo_backend.py --port 9001 --name backend-1 [--host 127.0.0.1]

On every connection it sends one greeting text message
``hello from NAME (port PORT, path PATH)`` and then echoes every message back
unchanged (text stays text, binary stays binary). It answers the subprotocol
``chat`` when the client offers it. One line per listener start and one line
per finished connection go to stdout. SIGTERM and SIGINT stop it cleanly
(open connections are closed with 1001, exit status 0).

``--port 0`` picks a free port; the startup line tells which one.
Needs python3-websockets (asyncio API, version 10 or later).
"""

import argparse
import asyncio
import signal
import sys
import time

import websockets

MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def parse_args(argv):
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="WebSocket echo backend for wsgate demos.")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on (0 = any)")
    parser.add_argument("--name", required=True, help="name used in the greeting and the logs")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    return parser.parse_args(argv)


def log(line):
    """Write one log line to stdout right away."""
    print(line, flush=True)


class DemoBackend:
    """Greeting echo server bound to one host:port."""

    def __init__(self, name, host, port):
        self.name = name
        self.host = host
        self.port = port

    async def handle(self, ws):
        """Greet the client, then echo every message until the connection ends."""
        started = time.monotonic()
        peer = ws.remote_address
        client = f"{peer[0]}:{peer[1]}" if peer else "-"
        messages = 0
        try:
            await ws.send(f"hello from {self.name} (port {self.port}, path {ws.path})")
            async for message in ws:
                messages += 1
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            duration = time.monotonic() - started
            forwarded = ws.request_headers.get("X-Forwarded-For", "-")
            log(
                f"{self.name} connection client={client} forwarded_for={forwarded} "
                f"path={ws.path} subprotocol={ws.subprotocol or '-'} messages={messages} "
                f"close_code={ws.close_code} duration={duration:.3f}s"
            )

    async def run(self):
        """Serve until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        async with websockets.serve(
            self.handle,
            self.host,
            self.port,
            max_size=MAX_MESSAGE_BYTES,
            subprotocols=["chat"],
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log(f"{self.name} listening on {self.host}:{self.port}")
            await stop
            log(f"{self.name} stopping")
        log(f"{self.name} stopped")


def main(argv=None):
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(DemoBackend(args.name, args.host, args.port).run())
    except OSError as err:
        print(f"demo_backend: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
