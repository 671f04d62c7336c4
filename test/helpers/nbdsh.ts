// Runs nbdsh (libnbd's Python shell) scripts against an export: the way tests
// send exact requests (writes without flush, malformed commands) that the
// higher-level clients would not.

import fs from 'node:fs';
import path from 'node:path';
import { runOk } from './array.js';

export interface WriteOp {
  offset: number;
  length: number;
  byte: number;
}

export interface TrimOp {
  offset: number;
  length: number;
}

/** Applies writes and trims in order on one connection; flushes at the end when asked. */
export function applyOps(uri: string, dir: string, ops: { writes: WriteOp[]; trims: TrimOp[]; flush: boolean }): void {
  const file = path.join(dir, `ops-${process.hrtime.bigint()}.json`);
  fs.writeFileSync(file, JSON.stringify(ops));
  const script = [
    'import json',
    `ops = json.load(open(${JSON.stringify(file)}))`,
    'for w in ops["writes"]:',
    '    h.pwrite(bytes([w["byte"]]) * w["length"], w["offset"])',
    'for t in ops["trims"]:',
    '    h.trim(t["length"], t["offset"])',
    'if ops["flush"]:',
    '    h.flush()',
  ].join('\n');
  runOk('nbdsh', ['-u', uri, '-c', script]);
  fs.rmSync(file);
}

/** Reads the whole export into a Buffer. */
export function readAll(uri: string, dir: string): Buffer {
  const file = path.join(dir, `read-${process.hrtime.bigint()}.raw`);
  runOk('nbdcopy', [uri, file]);
  const data = fs.readFileSync(file);
  fs.rmSync(file);
  return data;
}

/** One request of `requests`: a WRITE (FUA when asked) of one byte value, a READ checked for one, or a FLUSH. */
export type NbdStep =
  | { op: 'write'; offset: number; length: number; byte: number; fua?: boolean }
  | { op: 'read'; offset: number; length: number; byte: number }
  | { op: 'flush' };

/**
 * Sends the steps in order on one connection and returns each outcome: `ok`, the errno name the
 * server replied with (`EIO`), or `mismatch` for a read of other bytes. Nothing is sent on close.
 */
export function requests(uri: string, steps: NbdStep[]): string[] {
  const script = [
    'import errno, json, sys',
    `steps = json.loads(${JSON.stringify(JSON.stringify(steps))})`,
    'out = []',
    'for s in steps:',
    '    try:',
    '        if s["op"] == "write":',
    '            h.pwrite(bytes([s["byte"]]) * s["length"], s["offset"], nbd.CMD_FLAG_FUA if s.get("fua") else 0)',
    '        elif s["op"] == "read":',
    '            data = h.pread(s["length"], s["offset"])',
    '            if data != bytes([s["byte"]]) * s["length"]:',
    '                out.append("mismatch")',
    '                continue',
    '        else:',
    '            h.flush()',
    '        out.append("ok")',
    '    except nbd.Error as e:',
    '        out.append(errno.errorcode.get(e.errno, str(e.errno)))',
    'print(json.dumps(out))',
  ].join('\n');
  return JSON.parse(runOk('nbdsh', ['-u', uri, '-c', script])) as string[];
}
