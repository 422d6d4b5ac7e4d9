#!/usr/bin/env python3
"""Chat backend for the wsgate browser demo (examples/chat/).

Usage: chat_backend.py --port 9101 --name backend-1 --store FILE [--host 127.0.0.1]

One port serves both the page (plain HTTP GET of / or /index.html, from index.html next to this
file) and the chat WebSocket (any path; ``?user=NAME`` names the member). The room lives in the
SQLite file ``--store``, shared by every backend of the demo, so any backend can carry on any
session: that is what lets wsgate move a session to another backend (``pools[].migrate``)
while the browser stays connected.

Messages to the client:

- ``{"type": "welcome", "backend", "history": [chat...], "members": [...]}`` on a new session:
  the room's last 50 messages and who is in it.
- ``{"type": "resumed", "backend", "reason"}`` when this backend took over a session that wsgate
  moved here (``X-Wsgate-Resume: REASON``); the messages then carry on where the previous
  backend stopped.
- ``{"type": "chat", "id", "user", "text", "backend"}`` for every message of the room, in the
  order the store gave them ids, each exactly once per session; ``backend`` is the one that
  delivered it.
- ``{"type": "members", "members": [...]}`` whenever the set of members changes.

The client sends ``{"type": "chat", "user": "...", "text": "..."}``.

How a session is carried over (the part a backend of a ``migrate`` pool must get right):

- A session is keyed by ``X-Wsgate-Connection-Id``, which wsgate sends unchanged to every backend
  that carries the session. Its row in the store holds the member's name, its cursor (the id of
  the last message this session was sent) and its owner (the backend carrying it, or none).
- The owner advances the cursor only after a send returned: a send that returned wrote the frame
  before any close reply, and wsgate relays everything the old backend wrote before its close
  reply. A send that raised wrote nothing, so that message is the next backend's to send.
- wsgate asks the new backend first (the upgrade again, with ``X-Wsgate-Resume``) and only then
  closes the old one with 1001. So the new backend waits until the old owner has released the
  row (after its close reply and after storing every client message it had read) before it
  reads anything: no message is sent twice, and the client's messages reach the store in order.
  It stops waiting when the old owner's heartbeat is stale (a backend that died), at once when
  the reason is ``backend-lost``, and after TAKEOVER_WAIT seconds in any case.

Limits: messages over 16 KiB close with 1009, anything but a chat object closes with 1003, a
user name is cut to 32 characters and a text to 2000. ``--port 0`` picks a free port; the first
stdout line is ``NAME listening on HOST:PORT``. SIGTERM and SIGINT stop it (clients get 1001).
Needs python3-websockets 10 or later; SQLite calls are short and run on the event loop, which is
fine for a demo (a real backend would use a networked store such as Redis or PostgreSQL).
"""

import argparse
import asyncio
import http
import json
import os
import secrets
import signal
import sqlite3
import time
import urllib.parse

import websockets

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html")
MAX_MESSAGE_BYTES = 16 * 1024
MAX_USER_CHARS = 32
MAX_TEXT_CHARS = 2000
HISTORY = 50             # messages in a welcome
KEEP_MESSAGES = 1000     # the store keeps this many
POLL = 0.05              # how often a backend looks for messages other backends stored
HEARTBEAT = 1.0          # how often a backend says it is alive
STALE = 5.0              # a backend silent this long is dead; a released session this long gone
TAKEOVER_WAIT = 10.0     # the longest a resumed session waits for its previous owner
FORGET_AFTER = 60.0      # released sessions older than this are deleted


def log(line):
    print(line, flush=True)


class Store:
    """The room in one SQLite file (WAL mode, so the backends' processes share it safely)."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a demo: no fsync per commit
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, text TEXT);
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY, user TEXT, cursor INTEGER, owner TEXT, released_at REAL);
            CREATE TABLE IF NOT EXISTS backends (name TEXT PRIMARY KEY, seen_at REAL);
        """)

    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT: reads and writes of one step see no other backend's."""
        db = self.db

        class Transaction:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, value, traceback):
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return Transaction()

    def heartbeat(self, backend):
        self.db.execute("INSERT OR REPLACE INTO backends VALUES (?, ?)", (backend, time.time()))

    def alive(self, backend):
        row = self.db.execute("SELECT seen_at FROM backends WHERE name = ?", (backend,)).fetchone()
        return row is not None and row[0] > time.time() - STALE

    def join(self, session, user, owner):
        """A new session: its row, cursor at the newest message; returns the recent history."""
        with self.transaction():
            rows = self.db.execute("SELECT id, user, text FROM messages ORDER BY id DESC LIMIT ?",
                                   (HISTORY,)).fetchall()
            cursor = rows[0][0] if rows else self.latest()
            self.db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, NULL)",
                            (session, user, cursor, owner))
        return [{"id": i, "user": u, "text": t} for i, u, t in reversed(rows)], cursor

    def take_over(self, session, owner):
        """(user, cursor) of a released (or orphaned) session, now owned by |owner|; None if
        the store does not know it; False while its previous owner still holds it."""
        with self.transaction():
            row = self.db.execute("SELECT user, cursor, owner FROM sessions WHERE id = ?",
                                  (session,)).fetchone()
            if row is None:
                return None
            user, cursor, previous = row
            if previous not in (None, owner) and self.alive(previous):
                return False
            self.db.execute("UPDATE sessions SET owner = ?, released_at = NULL WHERE id = ?",
                            (owner, session))
        return user, cursor

    def force_take_over(self, session, owner):
        self.db.execute("UPDATE sessions SET owner = ?, released_at = NULL WHERE id = ?",
                        (owner, session))
        return self.db.execute("SELECT user, cursor FROM sessions WHERE id = ?",
                               (session,)).fetchone()

    def advance(self, session, owner, cursor):
        self.db.execute("UPDATE sessions SET cursor = ? WHERE id = ? AND owner = ?",
                        (cursor, session, owner))

    def release(self, session, owner):
        self.db.execute("UPDATE sessions SET owner = NULL, released_at = ? "
                        "WHERE id = ? AND owner = ?", (time.time(), session, owner))

    def append(self, user, text):
        self.db.execute("INSERT INTO messages (user, text) VALUES (?, ?)", (user, text))

    def latest(self):
        return self.db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]

    def since(self, cursor):
        rows = self.db.execute("SELECT id, user, text FROM messages WHERE id > ? ORDER BY id "
                               "LIMIT 100", (cursor,)).fetchall()
        return [{"id": i, "user": u, "text": t} for i, u, t in rows]

    def members(self):
        """Users with a session that a live backend carries, or that was released lately (it
        may be moving to another backend)."""
        now = time.time()
        rows = self.db.execute(
            "SELECT DISTINCT s.user FROM sessions s LEFT JOIN backends b ON s.owner = b.name "
            "WHERE (s.owner IS NOT NULL AND b.seen_at > ?) OR s.released_at > ? ORDER BY 1",
            (now - STALE, now - STALE)).fetchall()
        return [user for (user,) in rows]

    def forget_old(self):
        self.db.execute("DELETE FROM sessions WHERE owner IS NULL AND released_at < ?",
                        (time.time() - FORGET_AFTER,))
        self.db.execute("DELETE FROM messages WHERE id <= ?", (self.latest() - KEEP_MESSAGES,))


class Session:
    def __init__(self, ws, session_id, user, cursor):
        self.ws = ws
        self.id = session_id
        self.user = user
        self.cursor = cursor
        self.members = None      # the member list this client was last sent
        self.wakeup = asyncio.Event()
        self.ended = False


class ChatBackend:
    def __init__(self, name, store_path):
        self.name = name
        self.store = Store(store_path)
        self.sessions = set()
        self.members = []
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

    def wake_all(self):
        for session in self.sessions:
            session.wakeup.set()

    async def watch_store(self):
        """Wake every local session when another backend stored a message or the members
        changed; keep this backend's heartbeat."""
        latest, beat, tidy = None, 0.0, time.monotonic()
        while True:
            now = time.monotonic()
            if now - beat >= HEARTBEAT:
                self.store.heartbeat(self.name)
                beat = now
            if now - tidy >= FORGET_AFTER / 6:
                self.store.forget_old()
                tidy = now
            newest, members = self.store.latest(), self.store.members()
            if newest != latest or members != self.members:
                latest, self.members = newest, members
                self.wake_all()
            await asyncio.sleep(POLL)

    async def handle(self, ws):
        headers = ws.request_headers
        session_id = headers.get("X-Wsgate-Connection-Id") or secrets.token_urlsafe(16)
        reason = headers.get("X-Wsgate-Resume")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.path).query)
        user = (query.get("user") or ["guest"])[0][:MAX_USER_CHARS]
        resumed = await self.take_over(session_id, reason) if reason else None
        if resumed:
            user, cursor = resumed
            log(f"{self.name} took over {session_id} ({reason})")
            first = {"type": "resumed", "backend": self.name, "reason": reason}
        else:
            history, cursor = self.store.join(session_id, user, self.name)
            self.members = self.store.members()
            first = {"type": "welcome", "backend": self.name, "history": history,
                     "members": self.members}
        session = Session(ws, session_id, user, cursor)
        self.sessions.add(session)
        try:
            await ws.send(json.dumps(first))
            if not resumed:
                session.members = self.members
            self.wake_all()  # a new member
            # Until the client or wsgate closes (reader), then until the last send (writer):
            # only then is the cursor final, and the session free for the next backend.
            await asyncio.gather(self.read(session), self.write(session))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.sessions.discard(session)
            self.store.release(session_id, self.name)
            log(f"{self.name} client left close_code={ws.close_code}")

    async def take_over(self, session_id, reason):
        """Wait for the previous owner to let go of the session (see the module docstring)."""
        deadline = time.monotonic() + TAKEOVER_WAIT
        while True:
            taken = self.store.take_over(session_id, self.name)
            if taken is not False:
                return taken
            if reason == "backend-lost" or time.monotonic() > deadline:
                log(f"{self.name} takes over {session_id} from a backend that still holds it")
                return self.store.force_take_over(session_id, self.name)
            await asyncio.sleep(POLL / 2)

    async def read(self, session):
        """Store every chat message of the client, in the order it sent them."""
        try:
            async for raw in session.ws:
                message = self.parse(raw)
                if message is None:
                    await session.ws.close(1003, "expected a chat message")
                    break
                self.store.append(message["user"], message["text"])
                self.wake_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            session.ended = True
            session.wakeup.set()

    async def write(self, session):
        """Send the session every stored message after its cursor, and member changes."""
        ws = session.ws
        while not session.ended:
            session.wakeup.clear()
            for message in self.store.since(session.cursor):
                try:
                    await ws.send(json.dumps({"type": "chat", **message, "backend": self.name}))
                except websockets.ConnectionClosed:
                    return  # not written: the next backend sends it
                session.cursor = message["id"]
                self.store.advance(session.id, self.name, session.cursor)
            if session.members != self.members:
                members = self.members
                try:
                    await ws.send(json.dumps({"type": "members", "members": members}))
                except websockets.ConnectionClosed:
                    return
                session.members = members
            if self.store.latest() > session.cursor:
                continue  # more than one batch waiting
            await session.wakeup.wait()

    def parse(self, raw):
        """The stored form of a client's chat message, or None when it is not one."""
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
        return {"user": user[:MAX_USER_CHARS], "text": text[:MAX_TEXT_CHARS]}

    async def run(self, host, port):
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        watcher = asyncio.create_task(self.watch_store())
        async with websockets.serve(self.handle, host, port, process_request=self.serve_page,
                                    max_size=MAX_MESSAGE_BYTES) as server:
            bound = server.sockets[0].getsockname()
            log(f"{self.name} listening on {bound[0]}:{bound[1]}")
            await stop
        watcher.cancel()


def main():
    parser = argparse.ArgumentParser(description="Chat backend for the wsgate browser demo.")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    parser.add_argument("--name", required=True, help="backend name shown on the page")
    parser.add_argument("--store", required=True,
                        help="SQLite file holding the room, shared by all the demo's backends")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args()
    asyncio.run(ChatBackend(args.name, args.store).run(args.host, args.port))


if __name__ == "__main__":
    main()
