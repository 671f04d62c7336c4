// A host's side of the command device (docs/command-device.md): nbdsh (libnbd's
// Python shell) builds the request block with struct and zlib.crc32, writes it
// at offset 0 and reads the reply at 4096, as a host would. Run asynchronously,
// so a link proxy in the test process keeps working meanwhile.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface CommandRequest {
  id: number;
  token: string;
  verb: string;
  args?: Record<string, unknown>;
  magic?: string;
}

export interface CommandReply {
  magic: string;
  status: number;
  id: number;
  answer: any;
  /** The request block as read back from offset 0 after the reply, hex. */
  requestBlockHex: string;
}

/** One request through a command device; the reply block parsed. */
export async function command(uri: string, request: CommandRequest): Promise<CommandReply> {
  const script = [
    'import json, struct, zlib',
    `req = json.loads(${JSON.stringify(JSON.stringify(request))})`,
    'body = json.dumps({"verb": req["verb"], "args": req.get("args", {})}).encode()',
    'block = bytearray(4096)',
    'struct.pack_into(">4sHHQII", block, 0, req.get("magic", "TWCQ").encode(), 1, 0, req["id"], len(body), zlib.crc32(body))',
    'tok = req["token"].encode()',
    'block[24:24 + len(tok)] = tok',
    'block[88:88 + len(body)] = body',
    'h.pwrite(bytes(block), 0)',
    'reply = h.pread(65536, 4096)',
    'magic, version, status, rid, length, crc = struct.unpack_from(">4sHHQII", reply, 0)',
    'data = reply[24:24 + length]',
    'assert zlib.crc32(data) == crc, "reply CRC"',
    'print(json.dumps({"magic": magic.decode(), "status": status, "id": rid, "answer": json.loads(data), "requestBlockHex": h.pread(4096, 0).hex()}))',
  ].join('\n');
  const { stdout } = await exec('/usr/bin/nbdsh', ['-u', uri, '-c', script], { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` }, timeout: 60_000 });
  return JSON.parse(stdout) as CommandReply;
}
