"""examples/demo_backend.py on its own (no wsgate involved)."""

import asyncio
import signal

from harness import MiB, DemoBackendProcess, async_test, recv, ws_connect


@async_test(timeout=30)
async def test_demo_backend_greets_and_echoes():
    """Greeting names backend, port and path; text and binary are echoed unchanged."""
    demo = await DemoBackendProcess(name="backend-1").start()
    ws = await ws_connect(f"ws://127.0.0.1:{demo.port}/x")
    assert await recv(ws) == f"hello from backend-1 (port {demo.port}, path /x)"
    await ws.send("héllo")
    assert await recv(ws) == "héllo"
    await ws.send(b"\x00\x01\xff")
    echoed = await recv(ws)
    assert isinstance(echoed, bytes) and echoed == b"\x00\x01\xff"
    big = bytes(range(256)) * (4 * MiB // 256)
    await ws.send(big)
    assert await recv(ws, timeout=20) == big
    await ws.close()


@async_test(timeout=30)
async def test_demo_backend_picks_chat_subprotocol():
    """When offered chat and superchat, the demo backend answers chat."""
    demo = await DemoBackendProcess(name="backend-2").start()
    ws = await ws_connect(f"ws://127.0.0.1:{demo.port}/", subprotocols=["chat", "superchat"])
    assert ws.subprotocol == "chat"
    await ws.close()


@async_test(timeout=30)
async def test_demo_backend_logs_connections_and_stops_on_sigterm():
    """One stdout line per connection; SIGTERM closes clients with 1001 and exits 0."""
    demo = await DemoBackendProcess(name="backend-3").start()
    ws = await ws_connect(f"ws://127.0.0.1:{demo.port}/first")
    await recv(ws)
    await ws.close()
    held = await ws_connect(f"ws://127.0.0.1:{demo.port}/held")
    await recv(held)
    demo.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(demo.proc.wait(), 10) == 0
    await asyncio.wait_for(held.wait_closed(), 10)
    assert held.close_code == 1001
    lines = await demo.read_rest()
    connection_lines = [line for line in lines if " connection " in line]
    assert len(connection_lines) == 2, lines
    assert "path=/first" in connection_lines[0]
    assert any("path=/held" in line for line in connection_lines)
