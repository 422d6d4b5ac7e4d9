"""Per-connection client limits: the message rate (limits.max_messages_per_second: close with 1008,
or throttle without losing a message) and ping keepalive (timeouts.ping_interval/ping_timeout)."""

import asyncio
import time

import websockets

from harness import (OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, EchoBackend, RawClient,
                     assert_still_serving, async_test, make_config, read_frame, recv,
                     wait_ws_closed, ws_connect)

RATE = 10  # messages per second; the bucket starts full, so a burst of RATE passes at once


@async_test(timeout=30)
async def test_client_over_the_message_rate_gets_1008(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          limits={"max_messages_per_second": RATE}))
    ws = await ws_connect(gate.url("/rate"))
    for i in range(4 * RATE):  # far faster than RATE per second
        try:
            await ws.send(f"m{i}")
        except websockets.ConnectionClosed:
            break
    await wait_ws_closed(ws)
    assert ws.close_code == 1008, ws.close_code
    record = await echo.wait_closed_record(0)
    assert record.close_code == 1001, record.close_code
    # What the backend read is an in-order prefix (the echo backend stops reading once its own
    # echo fails on the closing connection); wsgate relayed exactly the one-second burst.
    assert record.messages == [f"m{i}" for i in range(len(record.messages))]
    [line] = await gate.wait_for_access_lines(1)
    relayed = int(line.split(" msgs_in=")[1].split()[0])
    assert RATE <= relayed <= RATE + 2, line  # + refill while the burst arrives
    assert "close_code=1008" in line and "closed_by=proxy" in line, line
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_throttle_slows_a_fast_client_and_loses_nothing(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(
        pools={"p": [echo.address]},
        limits={"max_messages_per_second": RATE, "rate_action": "throttle"}))
    ws = await ws_connect(gate.url("/throttle"))
    count = 2 * RATE + 5
    started = time.monotonic()
    for i in range(count):
        await ws.send(f"t{i}")
    received = [await recv(ws, 10) for _ in range(count)]
    elapsed = time.monotonic() - started
    assert received == [f"t{i}" for i in range(count)]
    # RATE pass at once; the other RATE + 5 need about (RATE + 5) / RATE seconds of tokens.
    assert elapsed >= (count - RATE) / RATE * 0.8, f"not throttled: {elapsed:.2f}s"
    assert ws.open, "throttling must not close the connection"
    await ws.close()
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_a_burst_within_the_bucket_and_a_steady_rate_pass(gates):
    """RATE messages at once fit the bucket; then one message every 1/RATE s for two seconds
    stays within the rate: nothing is closed and every message is echoed."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]},
                                          limits={"max_messages_per_second": RATE}))
    ws = await ws_connect(gate.url("/steady"))
    for i in range(RATE):
        await ws.send(f"burst{i}")
    assert [await recv(ws) for _ in range(RATE)] == [f"burst{i}" for i in range(RATE)]
    await asyncio.sleep(1.0)  # let the bucket refill
    for i in range(2 * RATE):
        await ws.send(f"steady{i}")
        assert await recv(ws) == f"steady{i}"
        await asyncio.sleep(1.1 / RATE)
    assert ws.open
    await ws.close()
    assert (await echo.wait_closed_record(0)).close_code == 1000


# ------------------------------------------------------------------------------------------
# Ping keepalive (timeouts.ping_interval / ping_timeout)
# ------------------------------------------------------------------------------------------

KEEPALIVE = {"ping_interval": "300ms", "ping_timeout": "400ms", "close": "1s"}


@async_test(timeout=30)
async def test_keepalive_pings_a_quiet_client_and_a_pong_keeps_it(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}, timeouts=KEEPALIVE))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/keepalive")
    for _ in range(3):  # three rounds: ping, answered by a pong, and the connection stays
        started = time.monotonic()
        frame = await read_frame(client, 3)
        assert frame.opcode == OP_PING, frame
        assert 0.2 <= time.monotonic() - started <= 1.5
        await client.send_frame(OP_PONG, frame.payload)
    await client.send_frame(OP_TEXT, b"still here")
    frame = await read_frame(client, 3)
    while frame.opcode == OP_PING:  # a ping may come first; the echo must follow
        frame = await read_frame(client, 3)
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"still here")
    client.close()
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_keepalive_closes_a_client_that_never_answers(gates):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}, timeouts=KEEPALIVE))
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/silent")
    started = time.monotonic()
    frames = []
    while True:
        frame = await read_frame(client, 5)
        frames.append(frame.opcode)
        if frame.opcode == OP_CLOSE:
            break
    elapsed = time.monotonic() - started
    assert frames == [OP_PING, OP_CLOSE], frames
    assert frame.close_code == 1001, frame.close_code
    assert 0.5 <= elapsed <= 2.5, elapsed  # interval 0.3 s + timeout 0.4 s
    record = await echo.wait_closed_record(0)
    assert record.close_code == 1001
    client.close()
    await assert_still_serving(gate)


@async_test(timeout=30)
async def test_keepalive_with_a_real_client_library(gates):
    """python3-websockets answers pings by itself: an idle connection simply stays up."""
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"p": [echo.address]}, timeouts=KEEPALIVE))
    ws = await ws_connect(gate.url("/lib"))
    await asyncio.sleep(2.0)  # several ping rounds
    assert ws.open
    await ws.send("after idle")
    assert await recv(ws) == "after idle"
    await ws.close()
