// Goal: a malformed frame from an authenticated peer closes that connection
// only, after a log line that says what was wrong; other peers of the same
// server keep working without a hiccup, and a PeerLink that meets a malformed
// answer reconnects by itself.
// Method: a LinkServer on 127.0.0.1 (port 0) with a working PeerLink that sends
// requests throughout; raw TLS-PSK clients (right key) send a valid hand-built
// HELLO and then a bad-magic, bad-header-CRC, bad-data-CRC or oversize frame (or
// a request before HELLO). Each must see its connection closed, after an error
// frame saying LINK_PROTOCOL; the server logs one warn line per bad frame. Then a
// raw TLS-PSK *server* answers a PeerLink with a corrupt frame.

import assert from 'node:assert/strict';
import tls from 'node:tls';
import { test } from 'node:test';
import { PeerLink } from '../../src/link/index.js';
import { PAYLOAD_BYTES_MAX } from '../../src/link/protocol.js';
import {
  HOST, KEY_A, TYPE, WARN, captureLog, frameTypes, identity, once, rawFrame, rawHello, rawRequest, rawTlsClient, startPair, waitFor,
} from './helpers.js';

const badFrames: Array<{ name: string; bytes: Buffer; reason: RegExp }> = [
  { name: 'bad magic', bytes: rawFrame({ type: TYPE.ping, magic: 0xdeadbeef }), reason: /bad magic 0xdeadbeef/ },
  { name: 'bad header CRC', bytes: rawFrame({ type: TYPE.ping, breakHeaderCrc: true }), reason: /bad header checksum/ },
  { name: 'bad data CRC', bytes: rawFrame({ type: TYPE.request, requestId: 1, json: { method: 'm' }, segments: [Buffer.alloc(100)], breakDataCrc: true }), reason: /bad data checksum/ },
  { name: 'oversize length', bytes: rawFrame({ type: TYPE.request, requestId: 1, json: { method: 'm' }, segments: [Buffer.alloc(8)], payloadBytes: PAYLOAD_BYTES_MAX + 1 }).subarray(0, 40), reason: /more than the 67108864-byte maximum/ },
  { name: 'request before hello', bytes: rawRequest(1, 'm', {}), reason: /first frame was not a hello/ },
];

test('malformed frames close only their own connection; another peer keeps working', async (t) => {
  const { peer, port, serverLog } = await startPair(t, { serverHeartbeatMs: 200 });
  let downs = 0;
  peer.on('down', () => { downs += 1; });
  let keepGoing = true;
  let answered = 0;
  const traffic = (async () => {
    while (keepGoing) {
      await peer.request('steady', answered, [Buffer.alloc(1000, answered & 0xff)]);
      answered += 1;
    }
  })();

  for (const { name, bytes, reason } of badFrames) {
    const before = answered;
    const raw = await rawTlsClient(t, port, { arrayId: 'site-z' });
    if (name !== 'request before hello') raw.socket.write(rawHello('site-z'));
    raw.socket.write(bytes);
    await raw.closed;
    const frames = frameTypes(raw.received());
    const last = frames.at(-1);
    assert.equal(last?.type, TYPE.error, `${name}: told why before the close`);
    assert.deepEqual(last?.json, { code: 'LINK_PROTOCOL', message: (last?.json as { message: string }).message });
    assert.match((last?.json as { message: string }).message, reason);
    const logged = serverLog.filter((line) => line.level === WARN && /^link: protocol error from site-z at 127\.0\.0\.1:\d+/.test(line.msg) && reason.test(line.msg));
    assert.equal(logged.length, 1, `${name}: one warn line`);
    await waitFor(`${name}: the other peer still answers`, () => answered > before + 3);
  }

  keepGoing = false;
  await traffic;
  assert.equal(downs, 0, 'the good peer never went down');
  assert.ok(peer.connected);
});

test('a PeerLink that receives a malformed frame closes, logs it, and reconnects', async (t) => {
  const { log, lines } = captureLog();
  let connections = 0;
  const server = tls.createServer({
    minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'DHE-PSK-AES256-GCM-SHA384', dhparam: 'auto', pskIdentityHint: 'site-b',
    pskCallback: () => KEY_A,
  }, (socket) => {
    connections += 1;
    socket.on('error', () => undefined);
    socket.write(rawHello('site-b'));
    socket.once('data', () => socket.write(rawFrame({ type: TYPE.pong, breakHeaderCrc: true })));
  });
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const port = (server.address() as import('node:net').AddressInfo).port;
  const peer = new PeerLink({ identity: identity('site-a'), peerId: 'site-b', address: { host: HOST, port }, log, heartbeatMs: 50, backoffMsMin: 20, backoffMsMax: 40 });
  t.after(() => peer.close());
  const down = once(peer, 'down');
  peer.start();
  await once(peer, 'up');
  const [reason, code] = await down;
  assert.equal(code, 'LINK_PROTOCOL');
  assert.match(String(reason), /protocol error: bad header checksum/);
  assert.ok(lines.some((line) => line.level === WARN && /protocol error from site-b at 127\.0\.0\.1:\d+: bad header checksum/.test(line.msg)));
  await waitFor('a second connection', () => connections >= 2);
});
