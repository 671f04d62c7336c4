// Test helpers for NBD over TLS: certificates and PSK files made at test time
// with the real `twinstore tls` command, config text for them, and a raw NBD
// client (node:net, then node:tls after STARTTLS) for the exchanges real clients
// do not expose: option replies by type, bytes after the ACK, a stalled handshake.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { projectRoot, runOk, type RunningArray } from './array.js';
import { ByteInbox } from './byte-inbox.js';
import { IHAVEOPT, NBDMAGIC, OPT, REP_MAGIC } from '../../src/nbd/protocol.js';

const cliEntry = path.join(projectRoot, 'bin', 'twinstore.js');
const readMsMax = 15_000;

export function twinstoreTls(args: string[]): string {
  return runOk(process.execPath, [cliEntry, 'tls', ...args]);
}

export interface X509Files {
  ca: string;
  server: string;
  /** Client folders by identity (ca-cert.pem, client-cert.pem, client-key.pem). */
  clients: Record<string, string>;
}

/** A CA, a server certificate for 127.0.0.1, and one client folder per identity, under `dir`. */
export function makeX509(dir: string, identities: string[], caName = 'ca'): X509Files {
  const ca = path.join(dir, caName);
  const server = path.join(dir, `${caName}-server`);
  twinstoreTls(['ca', '--out', ca]);
  twinstoreTls(['server', '--ca', ca, '--name', 'localhost', '--out', server]);
  const clients: Record<string, string> = {};
  for (const id of identities) {
    clients[id] = path.join(dir, `${caName}-client-${id}`);
    twinstoreTls(['client', '--ca', ca, '--name', id, '--out', clients[id]!]);
  }
  return { ca, server, clients };
}

/** `nbd:` config for X.509 (client certificates required when `clientCa`). */
export function x509Config(files: X509Files, mode: 'on' | 'require', options: { clientCa?: boolean; extra?: string[] } = {}): string {
  return [
    'nbd:',
    `  tls: ${mode}`,
    `  certFile: ${path.join(files.server, 'server-cert.pem')}`,
    `  keyFile: ${path.join(files.server, 'server-key.pem')}`,
    ...(options.clientCa ? [`  clientCaFile: ${path.join(files.server, 'ca-cert.pem')}`] : []),
    ...(options.extra ?? []),
  ].join('\n');
}

/** A PSK file for the array with every identity, and per identity a folder holding only its own keys.psk line. */
export function makePsk(dir: string, identities: string[]): { file: string; hosts: Record<string, string> } {
  const file = path.join(dir, 'nbd.psk');
  const hosts: Record<string, string> = {};
  for (const id of identities) twinstoreTls(['psk', '--identity', id, '--out', file]);
  for (const line of fs.readFileSync(file, 'utf8').trim().split('\n')) {
    const id = line.split(':')[0]!;
    hosts[id] = path.join(dir, `psk-${id}`);
    fs.mkdirSync(hosts[id]!, { mode: 0o700 });
    fs.writeFileSync(path.join(hosts[id]!, 'keys.psk'), line + '\n', { mode: 0o600 });
  }
  return { file, hosts };
}

export function nbdPort(array: RunningArray): number {
  return Number(array.nbd.slice(array.nbd.lastIndexOf(':') + 1));
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** A raw fixed-newstyle client: options in the clear, STARTTLS, then options over TLS. */
export class RawNbd {
  private readonly inbox = new ByteInbox();
  readonly closed: Promise<void>;

  /** The TCP socket, under TLS after startTls. */
  private readonly tcp: net.Socket;

  private constructor(private socket: net.Socket) {
    this.tcp = socket;
    this.closed = this.attach(socket);
  }

  /** Bytes straight onto TCP, under any TLS (a forged record). */
  sendRaw(bytes: Buffer): void {
    this.tcp.write(bytes);
  }

  static connect(array: RunningArray, localAddress = '127.0.0.1'): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: nbdPort(array), localAddress }, () => {
        socket.off('error', reject);
        resolve(new RawNbd(socket));
      });
      socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.inbox.ended;
  }

  private attach(socket: net.Socket): Promise<void> {
    socket.on('data', (chunk: Buffer) => this.inbox.push(chunk));
    socket.on('error', () => undefined);
    return new Promise((resolve) => socket.once('close', () => {
      this.inbox.end();
      resolve();
    }));
  }

  /** Reads the greeting and sends client flags (FIXED_NEWSTYLE | NO_ZEROES). */
  async greet(): Promise<void> {
    const hello = await this.read(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD greeting');
    this.send(u32(0x3));
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.send(Buffer.concat([header, data]));
  }

  async reply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== REP_MAGIC) throw new Error('bad option reply magic');
    const data = await this.read(header.readUInt32BE(16));
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** Every reply up to the one that ends the option (ACK or an error). */
  async replies(): Promise<OptionReply[]> {
    const all: OptionReply[] = [];
    for (;;) {
      const one = await this.reply();
      all.push(one);
      if (one.type === 1 || one.type >= 0x80000000) return all;
    }
  }

  /** STARTTLS, its ACK, then a TLS handshake over the same socket. */
  async startTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    this.sendOption(OPT.STARTTLS);
    const ack = await this.reply();
    if (ack.type !== 1) throw new Error(`STARTTLS answered ${ack.type.toString(16)}`);
    this.socket.removeAllListeners('data');
    const secure = tls.connect({ socket: this.socket, ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return secure;
  }

  read(count: number): Promise<Buffer> {
    return this.inbox.read(count, readMsMax);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}

/** INFO/GO data for `name` with no information requests. */
export function infoRequest(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(bytes.length), bytes, Buffer.alloc(2)]);
}

/** The names in a LIST answer. */
export function listedNames(replies: OptionReply[]): string[] {
  return replies.filter((r) => r.type === 2).map((r) => r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));
}
