#!/usr/bin/env python3
"""Chat backend for the wsgate browser demo (examples/chat/).

Usage: chat_backend.py --port 9101 --name backend-1 [--host 127.0.0.1]

One port serves both the page (plain HTTP GET of / or /index.html, from index.html next to this
file) and the chat WebSocket (any path). Every client gets
``{"type": "welcome", "backend": NAME}``; every chat message it sends,
``{"type": "chat", "user": "...", "text": "..."}``, is broadcast to all clients of this backend
as ``{"type": "chat", "user", "text", "backend"}``. Backends share no state: wsgate's sticky
routing keeps the clients of one browser on one backend, and the page shows which one.

Limits: messages over 16 KiB close with 1009, anything but a chat object closes with 1003, a
user name is cut to 32 characters and a text to 2000. ``--port 0`` picks a free port; the first
stdout line is ``NAME listening on HOST:PORT``. SIGTERM and SIGINT stop it (clients get 1001).
Needs python3-websockets 10 or later.
"""

import argparse
import asyncio
import http
import json
import os
import signal

import websockets

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html")
MAX_MESSAGE_BYTES = 16 * 1024
MAX_USER_CHARS = 32
MAX_TEXT_CHARS = 2000


def log(line):
    print(line, flush=True)


class ChatBackend:
    def __init__(self, name):
        self.name = name
        self.clients = set()
        with open(PAGE, "rb") as f:
            self.page = f.read()

    async def serve_page(self, path, request_headers):
        """process_request hook: plain HTTP GETs get the page; upgrades go on to the chat."""
        if "upgrade" in request_headers.get("Connection", "").lower():
            return None
        if path.split("?", 1)[0] not in ("/", "/index.html"):
            return http.HTTPStatus.NOT_FOUND, [("Content-Type", "text/plain")], b"not found\n"
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]
        return http.HTTPStatus.OK, headers, self.page

    async def handle(self, ws):
        self.clients.add(ws)
        try:
            await ws.send(json.dumps({"type": "welcome", "backend": self.name}))
            async for raw in ws:
                message = self.parse(raw)
                if message is None:
                    await ws.close(1003, "expected a chat message")
                    break
                websockets.broadcast(self.clients, json.dumps(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)
            log(f"{self.name} client left close_code={ws.close_code}")

    def parse(self, raw):
        """The broadcast form of a client's chat message, or None when it is not one."""
        if not isinstance(raw, str):
            return None
        try:
            message = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(message, dict) or message.get("type") != "chat":
            return None
        user, text = message.get("user"), message.get("text")
        if not isinstance(user, str) or not isinstance(text, str):
            return None
        return {"type": "chat", "user": user[:MAX_USER_CHARS], "text": text[:MAX_TEXT_CHARS],
                "backend": self.name}

    async def run(self, host, port):
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        async with websockets.serve(self.handle, host, port, process_request=self.serve_page,
                                    max_size=MAX_MESSAGE_BYTES) as server:
            bound = server.sockets[0].getsockname()
            log(f"{self.name} listening on {bound[0]}:{bound[1]}")
            await stop


def main():
    parser = argparse.ArgumentParser(description="Chat backend for the wsgate browser demo.")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    parser.add_argument("--name", required=True, help="backend name shown on the page")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args()
    asyncio.run(ChatBackend(args.name).run(args.host, args.port))


if __name__ == "__main__":
    main()
