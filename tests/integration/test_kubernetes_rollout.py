"""A rollout of the backends of examples/kubernetes, acted out on loopback: the ConfigMap's pool
(discovery of the headless Service's name, migrate, rebalance) with that name answered by
Debian's dnsmasq (test_discovery.py's Dnsmasq), and examples/chat/chat_backend.py as the backend
image, one process per "pod" on 127.0.0.x, all sharing one store. Chat clients keep sending
while pods join and leave as a Deployment's rolling update makes them (a new pod, then an old one
goes, twice) and then the Deployment scales up. Every session must stay connected throughout,
be moved with X-Wsgate-Resume: removed off each pod that leaves (and rebalance onto pods that
join), and every client must get every message once, in order.

Only the discovery interval is shortened (1s instead of 5s) so the test does not wait for it."""

import asyncio
import json
import os

import pytest
import yaml

from harness import WAIT, async_test, make_config, metric, metrics_text, wait_until, ws_connect
from test_chat_browser import ChatBackend
from test_discovery import DNSMASQ, NAME, Dnsmasq, admin_json, shared_port, wait_pool

KUBERNETES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                              "examples", "kubernetes")
CLIENTS = 8
# Each client sends a message this often.
INTERVAL = 0.2

pytestmark = pytest.mark.skipif(not os.path.exists(DNSMASQ),
                                reason="dnsmasq not installed (scripts/install-deps.sh)")


def configmap_pool():
    """Pool app of the ConfigMap's wsgate.yaml."""
    with open(os.path.join(KUBERNETES_DIR, "configmap.yaml")) as f:
        config_map = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "ConfigMap")
    config = yaml.safe_load(config_map["data"]["wsgate.yaml"])
    return next(p for p in config["pools"] if p["name"] == "app")


def rollout_config(dns_port, backend_port):
    pool = configmap_pool()
    assert pool["migrate"] is True and "discovery" in pool, pool
    pool["discovery"]["interval"] = "1s"
    pool["backends"] = [{"address": f"{NAME}:{backend_port}"}]
    config = make_config(pools={"app": ["127.0.0.1:9"]}, timeouts={"drain": "30s", "close": "5s"})
    config["pools"] = [pool]
    config["resolver"] = {"nameservers": [f"127.0.0.1:{dns_port}"]}
    config["admin"] = {"address": "127.0.0.1:0"}
    return config


class Client:
    """A chat client that sends "NAME #N" every INTERVAL while ``sending`` and records every
    message it receives."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.sent = 0
        self.sending = True
        self.received = []  # every message, decoded
        self.reader = asyncio.ensure_future(self._read())
        self.writer = asyncio.ensure_future(self._write())

    @classmethod
    async def connect(cls, gate, name):
        ws = await ws_connect(gate.url(f"/chat?user={name}"))
        client = cls(ws, name)
        await wait_until(lambda: client.of_type("welcome"), WAIT, f"{name}'s welcome")
        return client

    async def _read(self):
        async for raw in self.ws:
            self.received.append(json.loads(raw))

    async def _write(self):
        while self.sending:
            await self.ws.send(json.dumps({"type": "chat", "user": self.name,
                                           "text": f"{self.name} #{self.sent}"}))
            self.sent += 1
            await asyncio.sleep(INTERVAL)

    def of_type(self, kind):
        return [m for m in self.received if m["type"] == kind]

    def backend(self):
        """The backend now carrying the session (the last welcome or resumed)."""
        return [m for m in self.received if m["type"] in ("welcome", "resumed")][-1]["backend"]

    def chat(self):
        return [(m["id"], m["user"], m["text"]) for m in self.of_type("chat")]


async def start_pod(name, host, port, store):
    return await asyncio.to_thread(ChatBackend, name, store, host, port)


async def gone_from_pool(gate, host, port):
    """The pod's backend has no connection left (its /admin/backends entry goes then)."""
    address = f"{host}:{port}"

    async def gone():
        listing = await admin_json(gate)
        return all(b["address"] != address for b in listing["backends"])
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await gone():
        assert asyncio.get_running_loop().time() < deadline, f"{address} still has sessions"
        await asyncio.sleep(0.1)


@async_test(timeout=240)
async def test_rolling_update_and_scale_up_move_every_session(gates, tmp_path):
    port = shared_port()
    hosts = {f"pod-{i}": f"127.0.0.{i + 1}" for i in range(1, 7)}
    store = tmp_path / "chat.sqlite3"
    pods = {}
    dns = Dnsmasq(tmp_path)
    try:
        for name in ("pod-1", "pod-2"):
            pods[name] = await start_pod(name, hosts[name], port, store)
        dns.start([hosts["pod-1"], hosts["pod-2"]])
        gate = await gates.launch(rollout_config(dns.port, port))
        await wait_pool(gate, [hosts["pod-1"], hosts["pod-2"]], port)
        clients = [await Client.connect(gate, f"u{i}") for i in range(CLIENTS)]
        assert sorted(c.backend() for c in clients) == sorted(["pod-1", "pod-2"] * (CLIENTS // 2))

        async def serving(names):
            """The DNS answer is these pods; wait until wsgate's pool is."""
            await dns.set([hosts[n] for n in names])
            await wait_pool(gate, [hosts[n] for n in names], port)

        async def sent_more(count=3):
            marks = [c.sent for c in clients]
            await wait_until(lambda: all(c.sent >= m + count for c, m in zip(clients, marks)),
                             WAIT, "clients sending")

        # Rolling update (maxSurge 1, maxUnavailable 0): a new pod joins, then an old one
        # leaves; twice.
        for new, old in (("pod-3", "pod-1"), ("pod-4", "pod-2")):
            pods[new] = await start_pod(new, hosts[new], port, store)
            await serving(list(pods))
            await sent_more()
            await serving([n for n in pods if n != old])
            await gone_from_pool(gate, hosts[old], port)
            pods.pop(old).stop()  # the pod exits once its sessions have moved
            await sent_more()
        assert {c.backend() for c in clients} <= {"pod-3", "pod-4"}

        # Scale-up from 2 to 4: rebalancing moves the surplus onto the new pods.
        for new in ("pod-5", "pod-6"):
            pods[new] = await start_pod(new, hosts[new], port, store)
        await serving(list(pods))
        await wait_until(lambda: len({c.backend() for c in clients}) == 4, WAIT,
                         "sessions on all 4 pods")
        await sent_more()

        for client in clients:
            client.sending = False
        await asyncio.gather(*(c.writer for c in clients))
        last_ones = {(c.name, f"{c.name} #{c.sent - 1}") for c in clients}
        await wait_until(lambda: all(last_ones <= {(u, t) for _, u, t in c.chat()}
                                     for c in clients), WAIT, "every last message everywhere")

        # No session closed. Each moved off the pods that left (removed), unless rebalancing had
        # moved it off first (a pod that joins takes sessions from the others), and only
        # rebalancing moved sessions off pods that stayed.
        reasons = {}
        for client in clients:
            assert client.ws.close_code is None, (client.name, client.ws.close_code)
            resumed = client.of_type("resumed")
            path = [client.of_type("welcome")[0]["backend"]] + [m["backend"] for m in resumed]
            assert all(a != b for a, b in zip(path, path[1:])), (client.name, path)
            for left, move in zip(path, resumed):
                allowed = ("removed", "rebalance") if left in ("pod-1", "pod-2") else ("rebalance",)
                assert move["reason"] in allowed, (client.name, path, resumed)
                reasons[move["reason"]] = reasons.get(move["reason"], 0) + 1
        text = await asyncio.to_thread(metrics_text, gate)
        for reason in ("removed", "rebalance"):
            moved = await asyncio.to_thread(metric, gate, "wsgate_migrations_total", pool="app",
                                            reason=reason, result="moved")
            assert moved == reasons.get(reason, 0), (reason, reasons, text)
        assert reasons.get("removed", 0) > 0 and reasons.get("rebalance", 0) > 0, reasons
        failed = [line for line in text.splitlines()
                  if line.startswith("wsgate_migrations_total") and 'result="moved"' not in line]
        assert not failed, failed

        # Every client has the whole conversation since it joined, once, in the store's order,
        # each sender's messages in the order sent; the same conversation everywhere.
        conversations = []
        for client in clients:
            chat = client.chat()
            ids = [i for i, _, _ in chat]
            assert ids == list(range(ids[0], ids[0] + len(ids))), (client.name, ids)
            for other in clients:
                theirs = [t for _, u, t in chat if u == other.name]
                expected = [f"{other.name} #{i}" for i in range(other.sent)]
                assert theirs == expected[len(expected) - len(theirs):], (client.name, other.name)
            conversations.append(chat)
        last = clients[-1].chat()[0][0]  # the last client joined before any message after it
        assert all([m for m in c if m[0] >= last] == conversations[-1] for c in conversations)
    finally:
        dns.stop()
        for pod in pods.values():
            pod.stop()
