"""Request-target normalisation (config `paths`, issue 17 item 1).

With the docs' pattern (a `/public` route with `auth: false` in front of an authenticated
catch-all), dot segments in any spelling must not reach the authenticated backend path without
the auth hook: the target is normalised before routing, the hook gets the normalised
X-Original-Uri, and the backend gets exactly the path that was matched. Targets that cannot be
made unambiguous get 400, and a normal client is served after each of them. The same holds for
plain HTTP requests (curl --path-as-is).
"""

import asyncio
import re
import subprocess

import pytest

from harness import (EchoBackend, RawClient, assert_rejected, assert_still_serving, async_test,
                     make_config, run_wsgate, start_echo_backends, upgrade_request,
                     ws_connect)
from test_connection_hooks import HttpService
from test_http_forwarding import HttpBackend, RecordingHandler


def auth_answer(handler, _body):
    # Only a client with the right cookie may in; everyone else is refused (403).
    if handler.headers.get("Cookie") == "ok=1":
        return 200, []
    return 403, []


def docs_pattern_config(backend, auth, paths=None):
    config = make_config({"p": [backend.address]},
                         routes=[{"match": {"path_prefix": "/public"}, "pool": "p",
                                  "auth": False},
                                 {"pool": "p"}])
    config["admin"] = {"address": "127.0.0.1:0"}  # the auth hook needs the connections index
    config["auth"] = {"url": auth.url + "/check"}
    if paths is not None:
        config["paths"] = paths
    return config


async def start(gates, paths=None):
    auth = HttpService(auth_answer).start()
    backend = await EchoBackend().start()
    gate = await gates.launch(docs_pattern_config(backend, auth, paths))
    return gate, backend, auth


async def upgrade_status(gate, target, status, extra=()):
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path=target, extra=extra))
    return await assert_rejected(client, status)


def original_uris(auth):
    return [headers["X-Original-Uri"] for _, _, headers, _ in auth.requests]


# Each spelling lands on the authenticated path, so the hook is asked (and refuses) instead of
# the /public route letting it through.
DOT_SEGMENT_ATTACKS = [
    ("/public/../private", "/private"),
    ("/public/%2e%2e/private", "/private"),
    ("/public/%2E%2E/private", "/private"),
    ("/public/.%2e/private", "/private"),
    ("/public/%2e./private", "/private"),
    ("/public/./../private", "/private"),
    ("/public/%2e/../private?q=/public", "/private?q=/public"),
    ("//public/../private", "//private"),
    ("/public/..", "/"),
    ("/%70ublic/../private", "/private"),  # %70 is "p"
    ("/publicity", "/publicity"),          # not under /public: whole segments only
    ("/public-admin/x", "/public-admin/x"),
]


@async_test(timeout=120)
async def test_dot_segments_cannot_skip_the_auth_hook(gates):
    gate, backend, auth = await start(gates)
    for target, normalised in DOT_SEGMENT_ATTACKS:
        before = len(auth.requests)
        await upgrade_status(gate, target, 403)
        assert len(auth.requests) == before + 1, f"{target}: the auth hook was not asked"
        assert original_uris(auth)[-1] == normalised, target
        await assert_still_serving(gate, "/public/feed")
    # None of the refused upgrades reached the backend; the still-serving checks did.
    assert {c.path for c in backend.connections} == {"/public/feed"}
    assert len(auth.requests) == len(DOT_SEGMENT_ATTACKS)  # /public/feed never asked it


AMBIGUOUS_TARGETS = [
    "/public/..%2fprivate",
    "/public/..%2Fprivate",
    "/public%2f..%2fprivate",
    "/public/..%5cprivate",
    "/public\\..\\private",
    "/public/..#/private",
    "/public/%2",
    "/public/%zz/../private",
]


@async_test(timeout=120)
async def test_ambiguous_targets_get_400_without_asking_anyone(gates):
    gate, backend, auth = await start(gates)
    for target in AMBIGUOUS_TARGETS:
        response = await upgrade_status(gate, target, 400)
        assert response.body, target
        assert auth.requests == [], target
        await assert_still_serving(gate, "/public/feed")
    assert {c.path for c in backend.connections} == {"/public/feed"}
    response = await upgrade_status(gate, "/public/..%2fprivate", 400)
    assert b"encoded slash" in response.body


@async_test(timeout=60)
async def test_backend_and_access_log_see_the_normalised_target(gates):
    gate, backend, auth = await start(gates)
    ws = await ws_connect(gate.url("/public/%2e%2e/private/%7eme/%c3%a9?x=%2e%2e/../"),
                          extra_headers=[("Cookie", "ok=1")])
    await ws.send("hi")
    assert await asyncio.wait_for(ws.recv(), 20) == "hi"
    assert original_uris(auth) == ["/private/~me/%C3%A9?x=%2e%2e/../"]
    assert backend.connections[-1].path == "/private/~me/%C3%A9?x=%2e%2e/../"
    await ws.close()
    lines = await gate.wait_for_access_lines(1)
    assert any('path="/private/~me/%C3%A9"' in line for line in lines), lines


@async_test(timeout=60)
async def test_merge_slashes(gates):
    gate, backend, auth = await start(gates, paths={"merge_slashes": True})
    await upgrade_status(gate, "//private///x", 403)
    assert original_uris(auth) == ["/private/x"]
    ws = await ws_connect(gate.url("//public//feed"))
    await ws.send("m")
    assert await asyncio.wait_for(ws.recv(), 20) == "m"
    assert backend.connections[-1].path == "/public/feed"
    assert len(auth.requests) == 1


@async_test(timeout=60)
async def test_escaped_slashes_keep_forwards_them_undecoded(gates):
    gate, backend, auth = await start(gates, paths={"escaped_slashes": "keep"})
    # Kept, never decoded: the segment "..%2Fprivate" is no dot segment, so this stays under
    # /public (the documented risk of keep for backends that decode %2F).
    ws = await ws_connect(gate.url("/public/..%2fprivate"))
    await ws.send("k")
    assert await asyncio.wait_for(ws.recv(), 20) == "k"
    assert backend.connections[-1].path == "/public/..%2Fprivate"
    assert auth.requests == []
    await upgrade_status(gate, "/public/..%2f/../../private", 403)  # dots still removed
    assert original_uris(auth) == ["/private"]


@async_test(timeout=60)
async def test_normalize_off_routes_the_raw_target(gates):
    gate, backend, auth = await start(gates, paths={"normalize": False})
    # As before this fix (the documented risk of normalize: false): matched as /public.
    ws = await ws_connect(gate.url("/public/../private"))
    await ws.send("raw")
    assert await asyncio.wait_for(ws.recv(), 20) == "raw"
    assert backend.connections[-1].path == "/public/../private"
    assert auth.requests == []
    await upgrade_status(gate, "/public/..%2fprivate", 400)  # escaped_slashes still applies
    await assert_still_serving(gate, "/public/feed")


# --------------------------------------------------------------------------------------------
# Plain HTTP on the same port
# --------------------------------------------------------------------------------------------

@pytest.fixture
def http_backends():
    public, private = HttpBackend(), HttpBackend()
    yield public, private
    public.stop()
    private.stop()


def curl_status(gate, target):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--path-as-is", "-o", "/dev/null",
         "-w", "%{http_code}", f"http://{gate.host}:{gate.port}{target}"],
        capture_output=True, timeout=30)
    return int(result.stdout.decode() or 0)


def test_plain_http_is_routed_and_forwarded_normalised(gates, http_backends):
    public, private = http_backends
    config = make_config({"public": [public.address], "private": [private.address]},
                         routes=[{"match": {"path_prefix": "/public"}, "pool": "public"},
                                 {"pool": "private"}])
    gate = gates.start(config)
    for target, normalised in [("/public/../private", "/private"),
                               ("/public/%2e%2e/private", "/private"),
                               ("/public/%2E%2E/private?a=%2e", "/private?a=%2e"),
                               ("/public/./x/../../private", "/private"),
                               ("/publicity", "/publicity"),
                               ("/public/%7efeed", "/public/~feed")]:
        assert curl_status(gate, target) == 200, target
        backend = public if normalised.startswith("/public/") else private
        assert backend.requests[-1]["path"] == normalised, target
    assert [r["path"] for r in public.requests] == ["/public/~feed"]

    served = len(public.requests)
    for target in ["/public/..%2fprivate", "/public/..%5Cprivate", "/public/%zz"]:
        assert curl_status(gate, target) == 400, target
        assert curl_status(gate, "/public/ok") == 200  # a normal client is still served
        served += 1
    assert len(public.requests) == served
    assert all(r["path"] == "/public/ok" for r in public.requests[1:])
    assert [r["path"] for r in private.requests] == [
        "/private", "/private", "/private?a=%2e", "/private", "/publicity"]


class OptionsHandler(RecordingHandler):
    def do_OPTIONS(self):
        self.record()
        self.send_body(b"")


def test_plain_http_options_star_is_untouched(gates, http_backends):
    public, _ = http_backends
    public.server.RequestHandlerClass = OptionsHandler
    gate = gates.start(make_config({"public": [public.address]}))
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-X", "OPTIONS", "--request-target", "*",
         "-o", "/dev/null", "-w", "%{http_code}", f"http://{gate.host}:{gate.port}/"],
        capture_output=True, timeout=30)
    assert result.stdout.decode() == "200", result.stderr
    assert [(r["method"], r["path"]) for r in public.requests] == [("OPTIONS", "*")]


def test_check_rejects_a_bad_paths_value(gates):
    config = make_config({"p": ["127.0.0.1:9"]})
    config["paths"] = {"escaped_slashes": "decode"}
    result = run_wsgate("--check", "-c", gates.write_config(config))
    assert result.returncode == 1
    assert re.search(r":\d+:\d+: paths\.escaped_slashes: unknown escaped_slashes \"decode\" "
                     r"\(expected reject or keep\)", result.stderr), result.stderr


@async_test(timeout=60)
async def test_sticky_path_key_hashes_the_normalised_path(gates):
    backends = await start_echo_backends(4, greet=True)
    config = make_config({"p": {"balance": "sticky", "backends": [b.address for b in backends]}})
    config["pools"][0]["sticky"] = {"key": "path", "load_factor": 0}
    gate = await gates.launch(config)

    async def backend_for(target):
        ws = await ws_connect(gate.url(target))
        greeting = await asyncio.wait_for(ws.recv(), 20)  # "hello from bN"
        await ws.close()
        return greeting.rsplit(" ", 1)[-1]

    home = await backend_for("/rooms/42")
    # Before normalisation each spelling hashed differently (4 backends: 1 in 4^5 to pass).
    for target in ["/rooms/x/../42", "/rooms/./42", "/%72ooms/42", "/a/b/../../rooms/%34%32",
                   "/rooms/%2e/42?q=1"]:
        assert await backend_for(target) == home, target
    assert {c.path.split("?")[0] for c in backends[int(home[1:])].connections} == {"/rooms/42"}
