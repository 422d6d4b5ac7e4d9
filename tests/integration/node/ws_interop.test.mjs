// Interop with the npm `ws` package on both ends: a `ws` WebSocketServer as the backend and a
// `ws` client, through the real wsgate binary. Run: node --test tests/integration/node/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket, { WebSocketServer } from 'ws';

const WSGATE_BIN = process.env.WSGATE_BIN || new URL('../../../build/wsgate', import.meta.url).pathname;

let backend;
let gate;
let gatePort;
let stderr = '';

async function waitFor(predicate, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

before(async () => {
  backend = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 32 * 1024 * 1024,
    handleProtocols: (protocols) => (protocols.has('chat') ? 'chat' : false),
  });
  await new Promise((resolve) => backend.on('listening', resolve));
  backend.on('connection', (ws, request) => {
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString();
      if (text === 'close-please') {
        ws.close(4001, 'later');
        return;
      }
      if (text === 'headers') {
        ws.send(JSON.stringify(request.headers));
        return;
      }
      ws.send(data, { binary: isBinary });
    });
  });

  const dir = mkdtempSync(join(tmpdir(), 'wsgate-node-'));
  const config = join(dir, 'wsgate.yaml');
  const ready = join(dir, 'ready');
  writeFileSync(config, [
    'listeners: [{name: public, address: 127.0.0.1:0}]',
    'routes: [{pool: ws}]',
    `pools: [{name: ws, backends: [{address: 127.0.0.1:${backend.address().port}}]}]`,
    'timeouts: {drain: 1s, close: 1s}',
    '',
  ].join('\n'));
  gate = spawn(WSGATE_BIN, ['-c', config, '--ready-file', ready], { stdio: ['ignore', 'ignore', 'pipe'] });
  gate.stderr.on('data', (chunk) => { stderr += chunk; });
  await waitFor(() => existsSync(ready), 'wsgate ready file');
  const line = readFileSync(ready, 'utf8').split('\n')[0];
  gatePort = Number(line.split(' ')[1].split(':').pop());
});

after(async () => {
  const exited = new Promise((resolve) => gate.on('exit', (code) => resolve(code)));
  gate.kill('SIGTERM');
  const code = await exited;
  backend.close();
  assert.equal(code, 0, `wsgate exit code; stderr:\n${stderr}`);
  assert.doesNotMatch(stderr, /AddressSanitizer|runtime error:/);
});

function connect(options = {}, protocols = undefined) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${gatePort}/interop`, protocols, options);
    ws.setMaxListeners(0);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function nextMessage(ws) {
  return new Promise((resolve, reject) => {
    ws.once('message', (data, isBinary) => resolve({ data, isBinary }));
    ws.once('close', (code) => reject(new Error(`closed with ${code} before a message`)));
  });
}

function closed(ws) {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

test('text and binary echo of many sizes, with and without permessage-deflate', async () => {
  for (const perMessageDeflate of [false, true]) {
    const ws = await connect({ perMessageDeflate, maxPayload: 32 * 1024 * 1024 });
    for (const size of [0, 125, 126, 65535, 65536, 1 << 20, 16 << 20]) {
      const binary = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4096) binary[i] = (i / 4096) & 0xff;
      ws.send(binary);
      const got = await nextMessage(ws);
      assert.equal(got.isBinary, true);
      assert.ok(Buffer.compare(got.data, binary) === 0, `binary ${size} bytes intact`);
      const text = 'x'.repeat(Math.min(size, 1 << 20));
      ws.send(text);
      const echoed = await nextMessage(ws);
      assert.equal(echoed.isBinary, false);
      assert.equal(echoed.data.toString(), text);
    }
    const done = closed(ws);
    ws.close(4000, 'bye');
    const { code } = await done;
    assert.equal(code, 4000);
  }
});

test('subprotocol negotiation: client offers chat, superchat; backend picks chat', async () => {
  const ws = await connect({}, ['chat', 'superchat']);
  assert.equal(ws.protocol, 'chat');
  ws.close(1000);
  await closed(ws);
});

test('backend-initiated close code and reason reach the client', async () => {
  const ws = await connect();
  const done = closed(ws);
  ws.send('close-please');
  const { code, reason } = await done;
  assert.equal(code, 4001);
  assert.equal(reason, 'later');
});

test('backend sees forwarding headers and custom headers unchanged', async () => {
  const ws = await connect({ headers: { 'X-Custom': 'kept', Cookie: 'sid=abc' } });
  ws.send('headers');
  const headers = JSON.parse((await nextMessage(ws)).data.toString());
  assert.equal(headers['x-custom'], 'kept');
  assert.equal(headers.cookie, 'sid=abc');
  assert.equal(headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(headers['x-forwarded-proto'], 'http');
  assert.match(headers.forwarded, /for=127\.0\.0\.1;host="127\.0\.0\.1:\d+";proto=http/);
  ws.close(1000);
  await closed(ws);
});

test('many concurrent ws clients each get their own echoes', async () => {
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect()));
  await Promise.all(clients.map(async (ws, i) => {
    for (let n = 0; n < 20; n++) {
      ws.send(`client ${i} message ${n}`);
      assert.equal((await nextMessage(ws)).data.toString(), `client ${i} message ${n}`);
    }
  }));
  await Promise.all(clients.map((ws) => { const c = closed(ws); ws.close(1000); return c; }));
});
