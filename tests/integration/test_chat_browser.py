"""examples/chat end to end in a real browser: headless Chromium (Debian's chromium package,
driven by npm playwright-core from tests/integration/browser/) loads the chat page through wsgate.
Two pages of one browser (sticky by cookie: one backend) and a page of another browser (the other
backend) chat through the backends' shared store; the first backend is drained while every page
streams messages, and with the example's migrate: true both pages move to the other backend
without their socket closing, every message arriving once and in order on every page.
Screenshots are kept in WSGATE_ARTIFACT_DIR."""

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import yaml

from harness import (PYTHON, SOURCE_DIR, admin_address, metric, recv, ws_connect,
                     async_test)

CHAT_DIR = os.path.join(SOURCE_DIR, "examples", "chat")
DRIVER = os.path.join(SOURCE_DIR, "tests", "integration", "browser", "chat_e2e.mjs")
CHROMIUM = "/usr/bin/chromium"
# Each page sends a message this often while the drain moves alice and bob.
INTERVAL_MS = 50


class ChatBackend:
    """examples/chat/chat_backend.py on |host|:|port| (0: a free one), with the room in
    |store|."""

    def __init__(self, name, store, host="127.0.0.1", port=0):
        self.name = name
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(CHAT_DIR, "chat_backend.py"), "--host", host,
             "--port", str(port), "--name", name, "--store", str(store)],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # "NAME listening on HOST:PORT"
        assert " listening on " in line, f"{name} did not start: {line!r}"
        self.address = line.rsplit(" ", 1)[1].strip()
        # The rest of its log ("took over ...", "client left ..."), read so that it never
        # blocks on a full pipe.
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_backends(tmp_path):
    store = tmp_path / "chat.sqlite3"
    return [ChatBackend("backend-1", store), ChatBackend("backend-2", store)]


def chat_config(backends):
    """examples/chat/wsgate.yaml with free ports, these backends, and a short drain."""
    with open(os.path.join(CHAT_DIR, "wsgate.yaml")) as f:
        config = yaml.safe_load(f)
    config["listeners"][0]["address"] = "127.0.0.1:0"
    config["admin"]["address"] = "127.0.0.1:0"
    pool = config["pools"][0]
    assert [b["id"] for b in pool["backends"]] == [b.name for b in backends]
    for entry, backend in zip(pool["backends"], backends):
        entry["address"] = backend.address
    config["timeouts"]["drain"] = "1s"
    return yaml.safe_dump(config, sort_keys=False)


def artifact_dir(tmp_path):
    path = os.environ.get("WSGATE_ARTIFACT_DIR") or str(tmp_path)
    os.makedirs(path, exist_ok=True)
    return path


def check_page(user, page, sent):
    """One page's record: every message of the room since it joined, once each and in the
    order of the store's ids, and each sender's messages in the order they were sent."""
    messages = page["messages"]
    ids = [m["id"] for m in messages]
    assert ids == list(range(ids[0], ids[0] + len(ids))), (user, ids)
    texts = [(m["user"], m["text"]) for m in messages]
    assert len(set(texts)) == len(texts), (user, "a message arrived twice")
    for sender, count in sent.items():
        burst = [t for u, t in texts if u == sender and t.startswith(sender + " #")]
        assert burst == [f"{sender} #{i}" for i in range(count)], (user, sender, burst)
    return texts


@async_test(timeout=180)
async def test_pages_stay_connected_through_a_drain(gates, tmp_path):
    assert os.path.exists(CHROMIUM), "chromium is missing: run scripts/install-deps.sh"
    modules = os.path.join(os.path.dirname(DRIVER), "node_modules", "playwright-core")
    assert os.path.isdir(modules), "npm playwright-core is missing: run scripts/install-deps.sh"
    backends = start_backends(tmp_path)
    try:
        gate = await gates.launch(chat_config(backends))
        admin = "http://%s:%d" % admin_address(gate)
        # The page loads through wsgate (plain HTTP forwarding) and opens its WebSocket on the
        # same origin and port: /chat on the host that served it.
        page_url = f"http://{gate.host}:{gate.port}/?"
        screenshots = artifact_dir(tmp_path)
        driver = subprocess.run(
            [shutil.which("node") or "node", DRIVER, json.dumps({
                "pageUrl": page_url, "adminUrl": admin, "pool": "chat",
                "backends": {b.name: b.address for b in backends},
                "screenshotDir": screenshots, "intervalMs": INTERVAL_MS})],
            capture_output=True, text=True, timeout=160)
        assert driver.returncode == 0, f"driver failed:\n{driver.stdout}\n{driver.stderr}"
        result = json.loads(driver.stdout.strip().splitlines()[-1])
        seen, drained = result["seen"], result["drained"]
        other = ({"backend-1", "backend-2"} - {drained}).pop()

        # Sticky by cookie: least_conn alone would have put bob on the other backend; carol's
        # browser has no cookie and goes to the backend with fewer sessions.
        assert "wsgate_backend" in result["cookies"], result["cookies"]
        assert result["first"] == {"alice": drained, "bob": drained, "carol": other}, result

        # alice and bob were moved by the drain, carol was not; no page saw its socket close or
        # opened another, and none had a message refused for want of an open socket.
        for user in ("alice", "bob"):
            assert seen[user]["backends"] == [drained, other], seen[user]["notes"]
            assert seen[user]["moves"] == ["drain"], seen[user]["notes"]
        assert seen["carol"]["backends"] == [other] and seen["carol"]["moves"] == []
        for user, page in seen.items():
            assert (page["opens"], page["closes"], page["unsent"]) == (1, 0, []), \
                (user, page["notes"])

        # Every page got the whole conversation once, in the same order, each sender's burst
        # complete and in order; the bursts went on while the moves happened and after them.
        sent = result["sent"]
        assert all(sent[u] >= result["movedAt"][u] + 10 for u in sent), result
        conversations = [check_page(user, page, sent) for user, page in seen.items()]
        assert conversations[0] == conversations[1] == conversations[2]
        assert conversations[0][:3] == [("alice", "hello bob"), ("bob", "hi alice"),
                                        ("carol", "hello from the other backend")]
        assert conversations[0][-3:] == [("alice", "still here?"), ("bob", "yes, never left"),
                                         ("carol", "saw it all")]
        assert len(conversations[0]) == 6 + sum(sent.values())
        # A moved page's messages came from the drained backend up to the move, then from the
        # other one: never interleaved.
        for user in ("alice", "bob"):
            via = [m["backend"] for m in seen[user]["messages"]]
            switch = via.index(other)
            assert 0 < switch and via == [drained] * switch + [other] * (len(via) - switch), via
        for path in result["screenshots"]:
            assert os.path.getsize(path) > 1000, path

        assert metric(gate, "wsgate_migrations_total", pool="chat", reason="drain",
                      result="moved") == 2
        assert metric(gate, "wsgate_migrations_total", pool="chat", result="refused") == 0
        with urllib.request.urlopen(admin + "/admin/backends", timeout=10) as response:
            states = {b["address"]: b for b in json.load(response)["backends"]}
        drained_address = next(b for b in backends if b.name == drained).address
        assert states[drained_address]["state"] == "draining", states
        assert states[drained_address]["active"] == 0, states

        # A new client gets the backend that is left, with the room's recent history.
        ws = await ws_connect(gate.url("/chat?user=dave"))
        welcome = json.loads(await recv(ws))
        assert welcome["backend"] == other, welcome
        assert [(m["user"], m["text"]) for m in welcome["history"]] == conversations[0][-50:]
        assert welcome["members"] == ["alice", "bob", "carol", "dave"], welcome
        await ws.close()
    finally:
        for backend in backends:
            backend.stop()


@async_test(timeout=60)
async def test_chat_backend_rejects_bad_messages_through_wsgate(gates, tmp_path):
    """Not a chat message: close 1003; over 16 KiB: close 1009; then a normal client chats."""
    backends = start_backends(tmp_path)
    try:
        gate = await gates.launch(chat_config(backends))
        for bad, code in (("not json", 1003), ('{"type": "chat", "user": 5}', 1003),
                          ("x" * (17 * 1024), 1009)):
            ws = await ws_connect(gate.url("/chat"))
            await recv(ws)  # welcome
            await ws.send(bad)
            await ws.wait_closed()
            assert ws.close_code == code, (bad[:40], ws.close_code)
        ws = await ws_connect(gate.url("/chat"))
        welcome = json.loads(await recv(ws))
        await ws.send(json.dumps({"type": "chat", "user": "u" * 100, "text": "hi"}))
        echoed = json.loads(await recv(ws))
        while echoed["type"] == "members":
            echoed = json.loads(await recv(ws))
        assert echoed == {"type": "chat", "id": 1, "user": "u" * 32, "text": "hi",
                          "backend": welcome["backend"]}
        await ws.close()
        # The page itself over plain HTTP, and a 404 for anything else.
        with urllib.request.urlopen(f"http://{backends[1].address}/", timeout=10) as response:
            assert b"new WebSocket(wsUrl)" in response.read()
        try:
            urllib.request.urlopen(f"http://{backends[1].address}/secret", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        for backend in backends:
            backend.stop()
