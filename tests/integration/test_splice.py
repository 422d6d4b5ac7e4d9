"""Large frames between two plain-TCP sockets go by splice(2) through a kernel pipe.

What must hold whichever way the payload goes: large messages come back byte for byte and are
counted, small messages interleaved with large ones keep their order, a drain that starts while
a large message is in flight delivers all of it before the 1001 close, and the proxy keeps
serving afterwards.
"""

import asyncio
import os
import re
import signal
import socket
import struct

import websockets

from harness import (MiB, OP_BINARY, OP_CLOSE, OP_TEXT, EchoBackend, RawClient,
                     assert_still_serving, async_test, encode_frame, make_config, read_frame,
                     recv, register_cleanup, upgrade_request, wait_ws_closed, ws_connect)


def fields_of(line):
    return dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line))


async def echo_gate(gates, **config):
    echo = await EchoBackend().start()
    gate = await gates.launch(make_config(pools={"echo": [echo.address]}, **config))
    return gate


@async_test(timeout=90)
async def test_large_binary_messages_echo_intact_and_counted(gates):
    """1 MiB and 8 MiB binary messages, out and back, byte for byte; the access line counts
    every relayed byte."""
    gate = await echo_gate(gates)
    ws = await ws_connect(gate.url("/large"))
    sizes = [1 * MiB, 8 * MiB, 1 * MiB]
    for size in sizes:
        message = os.urandom(size)
        await ws.send(message)
        echoed = await recv(ws, timeout=60)
        assert isinstance(echoed, bytes)
        assert len(echoed) == size and echoed == message, f"{size}-byte message changed"
    await ws.close(1000)
    await wait_ws_closed(ws)
    [line] = await gate.wait_for_access_lines(1)
    fields = fields_of(line)
    payload = sum(sizes)
    # Each frame adds a 10-byte header (14 masked) and the close frames a few bytes more.
    assert payload < int(fields["bytes_in"]) <= payload + 14 * len(sizes) + 64, line
    assert payload < int(fields["bytes_out"]) <= payload + 10 * len(sizes) + 64, line
    assert fields["msgs_in"] == fields["msgs_out"] == str(len(sizes)), line
    await assert_still_serving(gate)


@async_test(timeout=120)
async def test_large_and_small_messages_interleaved_keep_their_order(gates):
    """Several connections at once, each mixing tiny, medium and multi-MiB messages (text and
    binary): every connection gets its own messages back in order."""
    gate = await echo_gate(gates)
    sizes = [5, 70000, 3 * MiB, 17, 20000, 1 * MiB + 3, 0, 300000, 2, 2 * MiB, 126, 65536]

    async def one_connection(index):
        ws = await ws_connect(gate.url(f"/mix/{index}"))
        sent = []
        for n, size in enumerate(sizes):
            stamp = f"{index}:{n}:".encode()
            body = stamp + os.urandom(max(0, size - len(stamp)))
            message = body.hex()[:size] if n % 3 == 1 else body
            sent.append(message)
        async def send_all():
            for message in sent:
                await ws.send(message)
        sender = asyncio.ensure_future(send_all())  # sends while the echoes come back
        for n, message in enumerate(sent):
            echoed = await recv(ws, timeout=60)
            assert type(echoed) is type(message), (index, n)
            assert echoed == message, f"connection {index}: message {n} changed or out of order"
        await sender
        await ws.close(1000)

    await asyncio.gather(*(one_connection(i) for i in range(4)))
    await assert_still_serving(gate)


@async_test(timeout=90)
async def test_drain_delivers_a_large_message_in_flight_before_the_close(gates):
    """SIGTERM while an 8 MiB backend message is on its way to a slow client, and while an
    8 MiB client message is half sent: each peer gets its whole message, then 1001."""
    down = os.urandom(8 * MiB)
    up = os.urandom(8 * MiB)
    backend_got = asyncio.get_running_loop().create_future()

    async def handler(ws):
        path = ws.request.path if hasattr(ws, "request") else ws.path
        if path == "/down":
            await ws.recv()
            await ws.send(down)
            await ws.wait_closed()
        else:
            message = await ws.recv()
            with_close = None
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                with_close = closed.rcvd.code if closed.rcvd else None
            if not backend_got.done():
                backend_got.set_result((message, with_close))

    server = await websockets.serve(handler, "127.0.0.1", 0, max_size=None, compression=None)

    async def stop():
        server.close()
        await server.wait_closed()
    register_cleanup(stop)
    port = server.sockets[0].getsockname()[1]
    config = make_config(pools={"p": [f"127.0.0.1:{port}"]},
                         timeouts={"drain": "100ms", "close": "10s"})
    gate = await gates.launch(config)

    # A slow client: small receive buffer, and asyncio's reader stops reading when its own
    # buffer is full, so the rest of the message waits in wsgate (RawClient reads everything).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gate.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    async def close_receiver():
        writer.close()
    register_cleanup(close_receiver)
    writer.write(upgrade_request(path="/down"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(encode_frame(OP_TEXT, b"go"))
    # Read only the head and the first MiB: the rest waits in wsgate and the kernel.
    head = await asyncio.wait_for(reader.readexactly(10), 20)
    assert head[0] == 0x80 | OP_BINARY and head[1] == 127, head
    assert struct.unpack("!Q", head[2:])[0] == len(down)
    first = await asyncio.wait_for(reader.readexactly(1 * MiB), 20)

    sender = await RawClient.connect(gate.port)
    await sender.handshake(path="/up")
    frame = encode_frame(OP_BINARY, up)
    half = len(frame) // 2
    await sender.write(frame[:half])
    await asyncio.sleep(0.3)

    gate.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # past timeouts.drain: the session is going away mid-frame
    await sender.write(frame[half:])

    rest = await asyncio.wait_for(reader.readexactly(len(down) - len(first)), 30)
    assert first + rest == down, "the message in flight towards the client changed"
    close = await asyncio.wait_for(reader.readexactly(4), 10)
    assert close[0] == 0x80 | OP_CLOSE and close[1] >= 2, close
    close += await asyncio.wait_for(reader.readexactly(close[1] - 2), 10)
    assert struct.unpack("!H", close[2:4])[0] == 1001, close
    writer.write(encode_frame(OP_CLOSE, close[2:4]))

    message, backend_close = await asyncio.wait_for(backend_got, 30)
    assert message == up, "the message in flight towards the backend changed"
    assert backend_close == 1001, backend_close
    close = await read_frame(sender, 10)
    assert close.opcode == OP_CLOSE and close.close_code == 1001, close
    await sender.write(encode_frame(OP_CLOSE, close.payload[:2]))
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, gate.proc.wait), 15)
    assert gate.proc.returncode == 0


@async_test(timeout=60)
async def test_still_serving_after_a_client_vanishes_mid_frame(gates):
    """A client that drops TCP halfway through a large frame ends its connection (no close
    frame can follow half a frame) and nobody else notices."""
    gate = await echo_gate(gates)
    client = await RawClient.connect(gate.port)
    await client.handshake(path="/cut")
    frame = encode_frame(OP_BINARY, os.urandom(4 * MiB))
    await client.write(frame[:len(frame) // 2])
    await asyncio.sleep(0.2)
    client.abort()
    [line] = await gate.wait_for_access_lines(1)
    assert fields_of(line)["close_code"] == "1006", line
    await assert_still_serving(gate)
