"""examples/chat end to end in a real browser: headless Chromium (Debian's chromium package,
driven by npm playwright-core from tests/integration/browser/) loads the chat page, two pages of
one browser chat through wsgate with sticky routing by cookie, one backend is drained, and both
pages reconnect to the other backend. Screenshots are kept in WSGATE_ARTIFACT_DIR."""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import yaml

from harness import PYTHON, SOURCE_DIR, admin_address, recv, ws_connect, async_test

CHAT_DIR = os.path.join(SOURCE_DIR, "examples", "chat")
DRIVER = os.path.join(SOURCE_DIR, "tests", "integration", "browser", "chat_e2e.mjs")
CHROMIUM = "/usr/bin/chromium"


class ChatBackend:
    """examples/chat/chat_backend.py on a free port."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(CHAT_DIR, "chat_backend.py"), "--port", "0", "--name", name],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # "NAME listening on HOST:PORT"
        assert " listening on " in line, f"{name} did not start: {line!r}"
        self.address = line.rsplit(" ", 1)[1].strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


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


@async_test(timeout=120)
async def test_two_pages_chat_then_follow_a_drained_backend(gates, tmp_path):
    assert os.path.exists(CHROMIUM), "chromium is missing: run scripts/install-deps.sh"
    assert os.path.isdir(os.path.join(os.path.dirname(DRIVER), "node_modules", "playwright-core")), \
        "npm playwright-core is missing: run scripts/install-deps.sh"
    backends = [ChatBackend("backend-1"), ChatBackend("backend-2")]
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
                "screenshotDir": screenshots})],
            capture_output=True, text=True, timeout=100)
        assert driver.returncode == 0, f"driver failed:\n{driver.stdout}\n{driver.stderr}"
        seen = json.loads(driver.stdout.strip().splitlines()[-1])

        # Sticky by cookie: least_conn alone would have put the second page on the other backend.
        assert "wsgate_backend" in seen["cookies"], seen
        assert seen["first"]["alice"] == seen["first"]["bob"] == seen["drained"], seen
        assert seen["before"] == [seen["drained"]] * 2, seen
        # After the drain both pages are on the other backend, and chat flows through it.
        other = ({"backend-1", "backend-2"} - {seen["drained"]}).pop()
        assert seen["second"] == {"alice": other, "bob": other}, seen
        assert seen["after"] == [other, other], seen
        assert any("closed with 1012" in note for note in seen["closeNotes"]), seen
        for path in seen["screenshots"]:
            assert os.path.getsize(path) > 1000, path

        with urllib.request.urlopen(admin + "/admin/backends", timeout=10) as response:
            states = {b["address"]: b for b in json.load(response)["backends"]}
        drained = next(b for b in backends if b.name == seen["drained"])
        assert states[drained.address]["state"] == "draining", states
        assert states[drained.address]["active"] == 0, states

        # A plain client is still served, by the backend that is left.
        ws = await ws_connect(gate.url("/chat"))
        assert json.loads(await recv(ws)) == {"type": "welcome", "backend": other}
        await ws.close()
    finally:
        for backend in backends:
            backend.stop()


@async_test(timeout=60)
async def test_chat_backend_rejects_bad_messages_through_wsgate(gates):
    """Not a chat message: close 1003; over 16 KiB: close 1009; then a normal client chats."""
    backends = [ChatBackend("backend-1"), ChatBackend("backend-2")]
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
        assert echoed == {"type": "chat", "user": "u" * 32, "text": "hi",
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
