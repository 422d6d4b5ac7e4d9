"""Header trust (issue 17 items 2-4): the fields wsgate owns never come from the client.

Real wsgate in front of a websockets echo backend (records each upgrade's headers) and a
python http.server backend (records each plain request's headers), a real auth service, and
raw-socket clients for the bad input. Every bad-input test checks that the backends saw
nothing and that a normal client is served afterwards.
"""

import pytest

from harness import (EchoBackend, RawClient, assert_rejected, assert_still_serving, async_test,
                     make_config, raw_echo_check, read_http_response, upgrade_request,
                     wait_until)
from test_connection_hooks import HttpService, auth_answer
from test_drain import reload
from test_http_forwarding import HttpBackend

FORWARDING = ("x-forwarded-for", "x-real-ip", "forwarded", "x-forwarded-proto",
              "x-forwarded-host", "x-forwarded-port")
SPOOFED = [("X-Forwarded-For", "10.1.1.1"), ("X-Real-IP", "10.1.1.1"),
           ("Forwarded", "for=10.1.1.1;proto=https"), ("X-Forwarded-Proto", "https"),
           ("X-Forwarded-Host", "spoofed.test"), ("X-Forwarded-Port", "443")]
INVALID_HOSTS = ["a b.test", "evil.test@app.test", "app.test/evil?x=", "app.test:80:81",
                 "app.test:65536", "[::1", ":80"]


@pytest.fixture
def http_backend():
    backend = HttpBackend()
    yield backend
    backend.stop()


def config_for(ws_backend, http_backend, trusted=None, auth_url=None, cache_ttl=None):
    """/http/* goes to the plain HTTP backend, /public/* to the echo backend without auth,
    everything else to the echo backend (through the auth hook when ``auth_url``)."""
    config = make_config({"ws": [ws_backend.address], "web": [http_backend.address]},
                         routes=[{"match": {"path_prefix": "/http"}, "pool": "web",
                                  "auth": False},
                                 {"match": {"path_prefix": "/public"}, "pool": "ws",
                                  "auth": False},
                                 {"pool": "ws"}])
    if auth_url:
        config["admin"] = {"address": "127.0.0.1:0"}  # the hooks live with the connections API
        config["auth"] = {"url": auth_url, "copy_headers": ["X-User-Id", "X-Tenant"]}
        if cache_ttl:
            config["auth"]["cache_ttl"] = cache_ttl
    if trusted is not None:
        config["trusted_proxies"] = trusted
    return config


def plain_request(path, host="127.0.0.1", extra=(), drop_host=False):
    lines = [f"GET {path} HTTP/1.1"] + ([] if drop_host else [f"Host: {host}"])
    lines += [f"{name}: {value}" for name, value in extra] + ["Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def upgrade_headers(gate, backend, path, host="127.0.0.1", extra=()):
    """Complete an upgrade through a raw client; the headers the echo backend received."""
    before = len(backend.connections)
    client = await RawClient.connect(gate.port)
    await client.handshake(path=path, host=host, extra=extra)
    client.close()
    records = await backend.wait_connections(before + 1)
    return records[before].headers


async def plain_headers(gate, backend, path, host="127.0.0.1", extra=()):
    """One plain request; the headers the HTTP backend received (lower-case names, in order)."""
    before = len(backend.requests)
    client = await RawClient.connect(gate.port)
    await client.write(plain_request(path, host, extra))
    response = await read_http_response(client)
    assert response.status == 200, response.raw_head
    client.close()
    await wait_until(lambda: len(backend.requests) > before, what="the plain request")
    return backend.requests[before]["headers"]


def values(headers, name):
    """Every value of ``name`` in a websockets Headers or a list of (lower-name, value)."""
    if isinstance(headers, list):
        return [v for k, v in headers if k == name.lower()]
    return headers.get_all(name)


async def assert_normal_clients_served(gate, http_backend):
    await assert_still_serving(gate, "/public/ok")
    before = len(http_backend.requests)
    client = await RawClient.connect(gate.port)
    await client.write(plain_request("/http/ok"))
    response = await read_http_response(client)
    assert response.status == 200, response.raw_head
    client.close()
    assert len(http_backend.requests) == before + 1


# --------------------------------------------------------------------------------------------
# Item 2: copy_headers and the forwarding fields
# --------------------------------------------------------------------------------------------

@async_test(timeout=90)
async def test_copy_headers_from_the_client_are_dropped_on_every_route(gates, http_backend):
    auth = HttpService(auth_answer).start()
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend, auth_url=auth.url))
    spoof = [("X-User-Id", "admin"), ("x-tenant", "other"), ("X-Keep", "yes")]

    # auth: false upgrade route: nobody vouched for X-User-Id, so there is none.
    headers = await upgrade_headers(gate, backend, "/public/feed", extra=spoof)
    assert values(headers, "X-User-Id") == [] and values(headers, "X-Tenant") == []
    assert values(headers, "X-Keep") == ["yes"]
    # Plain HTTP (auth does not apply to it): dropped as well.
    headers = await plain_headers(gate, http_backend, "/http/page", extra=spoof)
    assert values(headers, "x-user-id") == [] and values(headers, "x-tenant") == []
    assert values(headers, "x-keep") == ["yes"]
    # Auth route: only the auth service's value arrives.
    headers = await upgrade_headers(gate, backend, "/allow/7", extra=spoof)
    assert values(headers, "X-User-Id") == ["user-7"]
    assert values(headers, "X-Tenant") == []
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=90)
async def test_underscore_aliases_of_owned_fields_are_dropped(gates, http_backend):
    """WSGI (gunicorn < 22), Rack (Puma) and PHP name "X_User_Id" HTTP_X_USER_ID, like
    "X-User-Id": the alias must not smuggle a vouched-for or forwarding field past wsgate."""
    auth = HttpService(auth_answer).start()
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend, auth_url=auth.url))
    spoof = [("X_User_Id", "admin"), ("x_tenant", "other"), ("X_Forwarded_For", "10.1.1.1"),
             ("X_Real_IP", "10.1.1.1"), ("X_Forwarded_Proto", "https"),
             ("X_Wsgate_Connection_Id", "spoofed"), ("X_Keep", "yes")]
    up = await upgrade_headers(gate, backend, "/public/feed", extra=spoof)
    authed = await upgrade_headers(gate, backend, "/allow/7", extra=spoof)
    plain = await plain_headers(gate, http_backend, "/http/page", extra=spoof)
    for headers in (up, authed, plain):
        names = [name.lower() for name, _ in (headers if isinstance(headers, list)
                                                else headers.raw_items())]
        assert [name for name in names if "_" in name] == ["x_keep"], names
    assert values(authed, "X-User-Id") == ["user-7"]
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=90)
async def test_forwarding_fields_from_an_untrusted_peer_are_replaced(gates, http_backend):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend))  # trusted_proxies: none
    host = f"127.0.0.1:{gate.port}"
    up = await upgrade_headers(gate, backend, "/public/a", host=host, extra=SPOOFED)
    plain = await plain_headers(gate, http_backend, "/http/a", host=host, extra=SPOOFED)
    for headers in (up, plain):
        assert values(headers, "X-Forwarded-For") == ["127.0.0.1"]
        assert values(headers, "X-Real-IP") == ["127.0.0.1"]
        assert values(headers, "Forwarded") == [f'for=127.0.0.1;host="{host}";proto=http']
        assert values(headers, "X-Forwarded-Proto") == ["http"]
        assert values(headers, "X-Forwarded-Host") == [host]
        assert values(headers, "X-Forwarded-Port") == []
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=90)
async def test_forwarding_fields_from_a_trusted_peer_are_extended(gates, http_backend):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend, trusted=["10.0.0.0/8",
                                                                         "127.0.0.1/32"]))
    host = f"127.0.0.1:{gate.port}"
    up = await upgrade_headers(gate, backend, "/public/a", host=host, extra=SPOOFED)
    plain = await plain_headers(gate, http_backend, "/http/a", host=host, extra=SPOOFED)
    for headers in (up, plain):
        assert values(headers, "X-Forwarded-For") == ["10.1.1.1, 127.0.0.1"]
        assert values(headers, "Forwarded") == [
            f'for=10.1.1.1;proto=https, for=127.0.0.1;host="{host}";proto=http']
        assert values(headers, "X-Real-IP") == ["10.1.1.1"]
        assert values(headers, "X-Forwarded-Proto") == ["https"]
        assert values(headers, "X-Forwarded-Host") == ["spoofed.test"]
        assert values(headers, "X-Forwarded-Port") == ["443"]
    # Without fields of its own, a trusted peer gets wsgate's.
    up = await upgrade_headers(gate, backend, "/public/b", host=host)
    assert values(up, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(up, "X-Real-IP") == ["127.0.0.1"]
    assert values(up, "X-Forwarded-Proto") == ["http"]
    assert values(up, "X-Forwarded-Host") == [host]
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=90)
async def test_an_ipv6_only_trust_list_does_not_trust_ipv4_loopback(gates, http_backend):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend, trusted=["::1/128"]))
    up = await upgrade_headers(gate, backend, "/public/a", extra=SPOOFED)
    assert values(up, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(up, "X-Real-IP") == ["127.0.0.1"]


# --------------------------------------------------------------------------------------------
# Items 3 and 4: duplicate credentials and invalid Host values are refused
# --------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("two Authorization", [("Authorization", "Bearer good"), ("Authorization", "Bearer evil")],
     b"more than one Authorization field"),
    ("two Authorization, other case", [("Authorization", "Bearer good"),
                                       ("authorization", "Bearer good")],
     b"more than one Authorization field"),
    ("two Proxy-Authorization", [("Proxy-Authorization", "Basic YTpi"),
                                 ("Proxy-Authorization", "Basic Yzpk")],
     b"more than one Proxy-Authorization field"),
    ("two Host", [("Host", "127.0.0.1")], b"Host field"),
]


@pytest.mark.parametrize("name,extra,reason", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
@async_test(timeout=90)
async def test_duplicate_credentials_and_hosts_are_400(gates, http_backend, name, extra, reason):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend))
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/public/x", extra=extra))
    response = await assert_rejected(client, 400)
    assert reason in response.body, response.body
    client = await RawClient.connect(gate.port)
    await client.write(plain_request("/http/x", extra=extra))
    response = await assert_rejected(client, 400)
    assert reason in response.body, response.body
    assert backend.connections == [] and http_backend.requests == []
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=120)
async def test_invalid_host_values_are_400_and_never_forwarded(gates, http_backend):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend))
    for host in INVALID_HOSTS:
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path="/public/x", host=host))
        await assert_rejected(client, 400)
        client = await RawClient.connect(gate.port)
        await client.write(plain_request("/http/x", host=host))
        response = await assert_rejected(client, 400)
        assert b"Host" in response.body, (host, response.body)
    assert backend.connections == [] and http_backend.requests == []
    await assert_normal_clients_served(gate, http_backend)
    # Valid forms still route: a name with a port, an IPv4 and a bracketed IPv6 literal.
    for host in ("app.test:8080", "127.0.0.1", "[::1]:80"):
        await raw_echo_check(gate, host=host, path="/public/y")
        up = backend.connections[-1].headers
        assert values(up, "X-Forwarded-Host") == [host]


@async_test(timeout=90)
async def test_absolute_form_and_missing_host_answers(gates, http_backend):
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend))
    # Absolute-form targets are refused outright, so Host and the target cannot disagree.
    client = await RawClient.connect(gate.port)
    await client.write(b"GET http://evil.test/http/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await assert_rejected(client, 400)
    # HTTP/1.1 needs Host (RFC 9112 section 3.2).
    client = await RawClient.connect(gate.port)
    await client.write(plain_request("/http/x", drop_host=True))
    await assert_rejected(client, 400)
    assert http_backend.requests == []
    await assert_normal_clients_served(gate, http_backend)


# --------------------------------------------------------------------------------------------
# The auth cache covers exactly what the hook saw
# --------------------------------------------------------------------------------------------

@async_test(timeout=90)
async def test_a_second_credential_cannot_ride_on_a_cached_allow(gates, http_backend):
    auth = HttpService(auth_answer).start()
    backend = await EchoBackend().start()
    gate = await gates.launch(config_for(backend, http_backend, auth_url=auth.url,
                                         cache_ttl="30s"))
    good = [("Authorization", "Bearer good"), ("Cookie", "s=1")]
    await upgrade_headers(gate, backend, "/allow/1", extra=good)
    assert len(auth.requests) == 1
    # Same first Authorization, a second one the hook never saw: refused before any lookup.
    client = await RawClient.connect(gate.port)
    await client.write(upgrade_request(path="/allow/1",
                                       extra=good + [("Authorization", "Bearer evil")]))
    response = await assert_rejected(client, 400)
    assert b"more than one Authorization" in response.body
    assert len(auth.requests) == 1 and len(backend.connections) == 1
    # A second Cookie the backend would see is part of the key: the hook is asked, and sees it.
    headers = await upgrade_headers(gate, backend, "/allow/1",
                                    extra=good + [("Cookie", "s=evil")])
    assert len(auth.requests) == 2
    assert auth.requests[-1][2].get_all("Cookie") == ["s=1", "s=evil"]
    assert values(headers, "Cookie") == ["s=1", "s=evil"]
    # The identical request still rides on the cache.
    await upgrade_headers(gate, backend, "/allow/1", extra=good)
    assert len(auth.requests) == 2
    await assert_normal_clients_served(gate, http_backend)


@async_test(timeout=90)
async def test_trusted_proxies_reload_applies_to_new_connections(gates, http_backend):
    backend = await EchoBackend().start()
    config = config_for(backend, http_backend)
    gate = await gates.launch(config)
    up = await upgrade_headers(gate, backend, "/public/a", extra=SPOOFED)
    assert values(up, "X-Forwarded-For") == ["127.0.0.1"]
    config["trusted_proxies"] = ["127.0.0.1/32"]
    await reload(gate, config, gates)
    up = await upgrade_headers(gate, backend, "/public/b", extra=SPOOFED)
    assert values(up, "X-Forwarded-For") == ["10.1.1.1, 127.0.0.1"]
    # A bad entry is refused with its position; the running list stays.
    config["trusted_proxies"] = ["127.0.0.1/32", "10.1.0.0/8"]
    text = await reload(gate, config, gates, expect="reload failed")
    assert "trusted_proxies[1]: not a CIDR \"10.1.0.0/8\"" in text
    up = await upgrade_headers(gate, backend, "/public/c", extra=SPOOFED)
    assert values(up, "X-Forwarded-For") == ["10.1.1.1, 127.0.0.1"]
    await assert_normal_clients_served(gate, http_backend)
