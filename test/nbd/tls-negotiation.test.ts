// Goal: the handshake rules of STARTTLS and of per-export grants, as
// negotiation.ts applies them, for every option and mode, without sockets:
// `off` refuses STARTTLS (ERR_POLICY); `on` and `require` answer ACK and ask
// the session for the handshake; under `require` every option but STARTTLS and
// ABORT gets ERR_TLS_REQD before TLS and EXPORT_NAME closes; after TLS what was
// negotiated in the clear is forgotten and a second STARTTLS is ERR_INVALID;
// a volume no grant matches is unknown to LIST, INFO, GO, META_CONTEXT and
// EXPORT_NAME; a read-only grant sets READ_ONLY.
// Method: Negotiation with fake exports; option replies parsed back by type.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessPolicy } from '../../src/nbd/access.js';
import { ExportRegistry, type BlockExport } from '../../src/nbd/exports.js';
import { Negotiation, type OptionOutcome } from '../../src/nbd/negotiation.js';
import { INFO, OPT, REP, REP_MAGIC, TFLAG } from '../../src/nbd/protocol.js';
import { parseConfig } from '../../src/config/index.js';

function fakeExport(name: string): BlockExport {
  const unused = (): never => {
    throw new Error('negotiation never does I/O');
  };
  return { name, sizeBytes: 2 ** 20, readOnly: false, description: name, read: unused, write: unused, writeZeroes: unused, trim: unused, zeroIsFast: unused, flush: unused, blockStatus: unused };
}

function replies(outcome: OptionOutcome): Array<{ type: number; data: Buffer }> {
  const bytes = Buffer.concat(outcome.replies);
  const out: Array<{ type: number; data: Buffer }> = [];
  for (let at = 0; at < bytes.length;) {
    assert.equal(bytes.readBigUInt64BE(at), REP_MAGIC);
    const length = bytes.readUInt32BE(at + 16);
    out.push({ type: bytes.readUInt32BE(at + 12), data: bytes.subarray(at + 20, at + 20 + length) });
    at += 20 + length;
  }
  return out;
}

const types = (outcome: OptionOutcome): number[] => replies(outcome).map((r) => r.type);
const listed = (outcome: OptionOutcome): string[] => replies(outcome).filter((r) => r.type === REP.SERVER).map((r) => r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));

function info(name: string): Buffer {
  const bytes = Buffer.from(name);
  const data = Buffer.alloc(4 + bytes.length + 2);
  data.writeUInt32BE(bytes.length, 0);
  bytes.copy(data, 4);
  return data;
}

function meta(name: string): Buffer {
  const bytes = Buffer.from(name);
  const query = Buffer.from('base:allocation');
  const data = Buffer.alloc(4 + bytes.length + 4 + 4 + query.length);
  data.writeUInt32BE(bytes.length, 0);
  bytes.copy(data, 4);
  data.writeUInt32BE(1, 4 + bytes.length);
  data.writeUInt32BE(query.length, 8 + bytes.length);
  query.copy(data, 12 + bytes.length);
  return data;
}

function negotiation(tls: 'off' | 'on' | 'require', access = new AccessPolicy(), address = '10.0.0.5'): Negotiation {
  const registry = new ExportRegistry();
  for (const name of ['a', 'b']) registry.set(fakeExport(name));
  const n = new Negotiation(registry, { tls, access, address });
  assert.deepEqual(n.clientFlags(0x3), { step: 'continue' });
  return n;
}

function flagsOf(outcome: OptionOutcome): number {
  const item = replies(outcome).find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT);
  assert.ok(item, 'an INFO_EXPORT reply');
  return item.data.readUInt16BE(10);
}

test('STARTTLS by mode: off refuses, on and require acknowledge and hand over to the handshake', () => {
  assert.deepEqual(types(negotiation('off').option(OPT.STARTTLS, Buffer.alloc(0))), [REP.ERR_POLICY]);
  for (const mode of ['on', 'require'] as const) {
    const n = negotiation(mode);
    assert.deepEqual(types(n.option(OPT.STARTTLS, Buffer.from([1]))), [REP.ERR_INVALID], `${mode}: STARTTLS with data`);
    const outcome = n.option(OPT.STARTTLS, Buffer.alloc(0));
    assert.deepEqual(types(outcome), [REP.ACK]);
    assert.deepEqual(outcome.next, { step: 'starttls' });
    n.tlsEstablished('host-a');
    assert.deepEqual(types(n.option(OPT.STARTTLS, Buffer.alloc(0))), [REP.ERR_INVALID], `${mode}: a second STARTTLS`);
    assert.deepEqual(listed(n.option(OPT.LIST, Buffer.alloc(0))), ['a', 'b']);
  }
});

test('require: every option but STARTTLS and ABORT gets TLS_REQD before TLS; EXPORT_NAME closes', () => {
  const n = negotiation('require');
  const data: Record<number, Buffer> = { [OPT.INFO]: info('a'), [OPT.GO]: info('a'), [OPT.LIST_META_CONTEXT]: meta('a'), [OPT.SET_META_CONTEXT]: meta('a') };
  for (const option of [OPT.LIST, OPT.PEEK_EXPORT, OPT.INFO, OPT.GO, OPT.STRUCTURED_REPLY, OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT, OPT.EXTENDED_HEADERS, 99]) {
    const outcome = n.option(option, data[option] ?? Buffer.alloc(0));
    assert.deepEqual(types(outcome), [REP.ERR_TLS_REQD], `option ${option}`);
    assert.deepEqual(outcome.next, { step: 'continue' });
  }
  assert.equal(negotiation('require').option(OPT.EXPORT_NAME, Buffer.from('a')).next.step, 'close');
  assert.deepEqual(negotiation('require').option(OPT.ABORT, Buffer.alloc(0)).next, { step: 'close', reason: 'client sent ABORT', graceful: true });
  // `on` serves a plain client as before.
  assert.deepEqual(listed(negotiation('on').option(OPT.LIST, Buffer.alloc(0))), ['a', 'b']);
});

test('after TLS, structured replies and the meta context negotiated in the clear are forgotten', () => {
  const n = negotiation('on');
  assert.deepEqual(types(n.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0))), [REP.ACK]);
  assert.deepEqual(types(n.option(OPT.SET_META_CONTEXT, meta('a'))), [REP.META_CONTEXT, REP.ACK]);
  n.option(OPT.STARTTLS, Buffer.alloc(0));
  n.tlsEstablished(undefined);
  const go = n.option(OPT.GO, info('a'));
  assert.ok(go.next.step === 'transmission', 'GO starts transmission');
  assert.equal(go.next.structured, false, 'structured replies from before TLS');
  assert.equal(go.next.allocationContext, false, 'base:allocation selected before TLS');
  assert.equal(flagsOf(go) & TFLAG.SEND_DF, 0, 'DF without structured replies');
});

test('grants: a volume no grant matches is unknown everywhere; a read-only grant exports READ_ONLY', () => {
  const config = parseConfig([
    'array:', '  id: s', '  dataDir: d', 'drives:', '  - path: d0', '    size: 1GiB', 'listen:', '  nbd: 127.0.0.1:0', '  api: 127.0.0.1:0',
    'nbd:', '  tls: on', '  pskFile: k.psk', '  access:', '    a:', '      - identity: host-a', '      - address: 10.0.0.0/24', '        readOnly: true',
  ].join('\n'), '/etc/s.yaml');
  const access = new AccessPolicy(config.nbdAccess);

  const stranger = negotiation('on', access, '192.168.1.1');
  assert.deepEqual(listed(stranger.option(OPT.LIST, Buffer.alloc(0))), ['b']);
  for (const option of [OPT.INFO, OPT.GO]) assert.deepEqual(types(stranger.option(option, info('a'))), [REP.ERR_UNKNOWN], `option ${option}`);
  assert.deepEqual(types(stranger.option(OPT.LIST_META_CONTEXT, meta('a'))), [REP.ERR_UNKNOWN]);
  assert.equal(stranger.option(OPT.EXPORT_NAME, Buffer.from('a')).next.step, 'close');

  const lab = negotiation('on', access, '::ffff:10.0.0.7');
  assert.deepEqual(listed(lab.option(OPT.LIST, Buffer.alloc(0))), ['a', 'b']);
  assert.notEqual(flagsOf(lab.option(OPT.INFO, info('a'))) & TFLAG.READ_ONLY, 0, 'the address grant is read-only');
  assert.equal(flagsOf(lab.option(OPT.INFO, info('b'))) & TFLAG.READ_ONLY, 0, 'b has no grants: read-write for all');
  const go = lab.option(OPT.GO, info('a'));
  assert.ok(go.next.step === 'transmission' && go.next.exported.readOnly, 'GO hands the read-only view to the session');

  const hostA = negotiation('on', access, '10.0.0.7');
  assert.deepEqual(listed(hostA.option(OPT.LIST, Buffer.alloc(0))), ['a', 'b'], 'before TLS host-a is only an address');
  hostA.option(OPT.STARTTLS, Buffer.alloc(0));
  hostA.tlsEstablished('host-a');
  assert.equal(flagsOf(hostA.option(OPT.INFO, info('a'))) & TFLAG.READ_ONLY, 0, 'read-write wins over the read-only address grant');
  const other = negotiation('on', access, '192.168.1.1');
  other.option(OPT.STARTTLS, Buffer.alloc(0));
  other.tlsEstablished('host-b');
  assert.deepEqual(listed(other.option(OPT.LIST, Buffer.alloc(0))), ['b']);
});
