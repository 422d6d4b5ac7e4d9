"""Limits one client address cannot get around (limits.max_connections_per_ip and
limits.handshake_rate_per_ip answer 429 and close), and the cap on handshakes in progress
(limits.max_pending_handshakes answers 503 at once). Other addresses, and established
connections, are never affected; after each refusal a normal client is still served."""

import asyncio
import time

from harness import (WAIT, EchoBackend, RawClient, assert_rejected, assert_still_serving,
                     async_test, make_config, read_http_response, upgrade_request, wait_until)


async def open_upgraded(gate, count, source="127.0.0.1"):
    clients = []
    for _ in range(count):
        client = await RawClient.connect(gate.port, source=source)
        await client.handshake(path="/held")
        clients.append(client)
    return clients


async def refused(gate, status, source="127.0.0.1"):
    client = await RawClient.connect(gate.port, source=source)
    await client.write(upgrade_request(path="/refused"))
    return await assert_rejected(client, status)


async def first_refusal(gate, status, timeout=WAIT):
    """Upgrade until one is refused with |status| (a state wsgate reaches once it has processed
    connections made just before); return that response. A probe that is upgraded instead is
    closed and the next one follows."""
    deadline = time.monotonic() + timeout
    while True:
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path="/probe"))
        response = await read_http_response(client, WAIT)
        if response.status == status:
            assert response.has_token("Connection", "close"), response.raw_head
            assert await client.wait_eof(WAIT), f"TCP stayed open after the {status} response"
            client.close()
            return response
        assert response.status == 101, response.start_line
        assert time.monotonic() < deadline, f"never refused with {status}"
        client.close()
        await asyncio.sleep(0.02)


async def served_eventually(gate, timeout=WAIT):
    """A normal client is served once wsgate has processed earlier closes; retried until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await assert_still_serving(gate)
            return
        except Exception:  # refused while the closes are still being processed
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@async_test(timeout=60)
async def test_connections_per_address_over_the_limit_get_429(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          limits={"max_connections_per_ip": 3}))
    held = await open_upgraded(gate, 3)
    response = await refused(gate, 429)
    assert b"too many connections from this address" in response.body
    # Another address has its own allowance, and the held connections still work.
    others = await open_upgraded(gate, 3, source="127.0.0.2")
    await refused(gate, 429, source="127.0.0.2")
    for client in held + others:
        await client.send_frame(0x1, b"ping?")
    # A closed connection gives its slot back.
    held[0].close()
    await echo.wait_closed_record(0)
    await wait_until(lambda: sum("status=101" in line for line in gate.access_lines()) >= 1,
                     what="the closed connection's access line")
    more = await open_upgraded(gate, 1)
    assert len(more) == 1
    await refused(gate, 429)
    await wait_until(lambda: sum("status=429" in line for line in gate.access_lines()) == 3,
                     what="an access line for each of the 3 refusals")
    for client in held[1:] + others + more:
        client.close()
    await wait_until(lambda: sum("status=101" in line for line in gate.access_lines()) == 7,
                     what="every held connection ended")
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_handshake_rate_per_address_gets_429_with_retry_after(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          limits={"handshake_rate_per_ip": 5}))
    # The bucket holds one second's worth: 5 pass at once, then the address waits.
    statuses = []
    for _ in range(12):
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path="/burst"))
        head = await client.read_until(b"\r\n\r\n")
        statuses.append(int(head.split(b" ")[1]))
        client.close()
    assert statuses[:5] == [101] * 5, statuses
    assert 429 in statuses[5:], statuses
    # Refill keeps up to about 5/s while the loop runs: never much more than the burst.
    assert statuses.count(101) <= 8, statuses
    response = await refused(gate, 429)
    assert response.get("Retry-After") == "1"
    # Another address is not limited by this one's rate.
    other = await RawClient.connect(gate.port, source="127.0.0.3")
    await other.handshake(path="/other")
    other.close()
    # After a second the bucket has refilled.
    await asyncio.sleep(1.2)
    await assert_still_serving(gate)


@async_test(timeout=60)
async def test_pending_handshakes_over_the_cap_get_503_at_once(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          limits={"max_pending_handshakes": 20},
                                          timeouts={"handshake": "30s"}))
    # 20 slow clients: each sent half a request head and then nothing.
    slow = []
    for _ in range(20):
        client = await RawClient.connect(gate.port)
        await client.write(upgrade_request(path="/slow")[:30])
        slow.append(client)
    response = await first_refusal(gate, 503)  # once wsgate has accepted every slow one
    assert b"too many handshakes in progress" in response.body
    assert response.get("Retry-After") == "1"
    # Established connections do not count: a slow client finishing its head is upgraded.
    finisher = slow.pop()
    await finisher.write(upgrade_request(path="/slow")[30:])
    head = await finisher.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    # With the slow ones gone, new clients are served again.
    for client in slow:
        client.close()
    await served_eventually(gate)  # once wsgate has seen the slow ones go
    finisher.close()
