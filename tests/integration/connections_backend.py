"""A WebSocket backend process for tests/integration/test_connections_api.py.

Usage: connections_backend.py TOKEN. It prints "port N" once listening, then one JSON line per
connection with what the upgrade request told it: the path, X-Wsgate-Connection-Id,
X-Wsgate-Callback-Url and every request header. What it does next depends on the query string:

* ``stream=1&fragments=F&size=S``: until the client sends "stop", keep sending text messages
  of S bytes, each in F fragments (a websockets async-iterator send), numbered "B:<k>:" so the
  client can check them; then "B:done".
* ``selfpush=1``: POST "hello <id>" to its own callback URL (the backend reaches its client
  through whichever wsgate instance the URL names), then echo.
Otherwise it echoes.
"""

import asyncio
import json
import sys
import urllib.parse
import urllib.request

import websockets

TOKEN = sys.argv[1] if len(sys.argv) > 1 else ""


def post(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


async def fragmented(index, size, fragments):
    text = f"B:{index}:"
    text += "x" * (size - len(text))
    step = max(1, len(text) // fragments)
    for start in range(0, len(text), step):
        yield text[start:start + step]
        await asyncio.sleep(0)  # let the loop (and wsgate) interleave other work


async def handle(ws):
    headers = ws.request_headers
    record = {"path": ws.path, "id": headers.get("X-Wsgate-Connection-Id"),
              "callback": headers.get("X-Wsgate-Callback-Url"),
              "headers": [[k, v] for k, v in headers.raw_items()]}
    print(json.dumps(record), flush=True)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(ws.path).query)
    try:
        if "stream" in query:
            size = int(query["size"][0])
            fragments = int(query["fragments"][0])
            stop = asyncio.ensure_future(ws.recv())
            k = 0
            while not stop.done():
                await ws.send(fragmented(k, size, fragments))
                k += 1
                await asyncio.sleep(0.02)
            assert stop.result() == "stop"
            await ws.send("B:done")
        if "selfpush" in query:
            status = await asyncio.to_thread(post, record["callback"], f"hello {record['id']}")
            await ws.send(f"posted {status}")
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main():
    async with websockets.serve(handle, "127.0.0.1", 0, max_size=None, ping_interval=None,
                                max_queue=None) as server:
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
