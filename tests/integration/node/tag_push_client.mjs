// A `ws` client for tests/integration/test_fleet.py (not a node --test file): connects to URL,
// prints one JSON line per event ({"event":"open"}, {"event":"message","binary":B,"data":D} with
// binary data in base64, {"event":"close","code":C,"reason":R}) and closes with 1000 "done" after
// COUNT messages. Usage: node tag_push_client.mjs URL COUNT
import WebSocket from 'ws';

const [url, count] = process.argv.slice(2);
const print = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const deadline = setTimeout(() => {
  print({ event: 'timeout' });
  process.exit(2);
}, 60000);

const ws = new WebSocket(url);
let received = 0;
ws.on('open', () => print({ event: 'open' }));
ws.on('message', (data, isBinary) => {
  print({ event: 'message', binary: isBinary,
          data: isBinary ? Buffer.from(data).toString('base64') : data.toString() });
  received += 1;
  if (received === Number(count)) ws.close(1000, 'done');
});
ws.on('close', (code, reason) => {
  print({ event: 'close', code, reason: reason.toString() });
  clearTimeout(deadline);
});
ws.on('error', (error) => {
  print({ event: 'error', message: error.message });
  process.exitCode = 1;
});
