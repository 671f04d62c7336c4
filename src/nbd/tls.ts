// TLS for NBD clients (STARTTLS, docs/security.md). One tls.Server that never
// listens holds the secure context, built once from the configured files:
// X.509 on TLS 1.3 (a client certificate signed by `clientCaFile` required when
// that is set; its subject CN is the client's identity), or TLS-PSK on TLS 1.2
// (Node 20 has no external PSK on TLS 1.3) with the ECDHE-PSK and DHE-PSK
// suites GnuTLS clients (qemu, libnbd, nbdkit) offer; the PSK identity is the
// client's identity. A session that got STARTTLS hands its socket to upgrade();
// the server wraps it (requestCert and rejectUnauthorized checked by Node as for
// any TLS server) and reports the outcome to that session only. reload()
// re-reads the files (SIGHUP): new handshakes use them, running ones keep theirs,
// and a file that does not load keeps the old context with a log line.
// Renegotiation is off (TLS 1.3 has none; on 1.2 OpenSSL refuses it).

import crypto from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import type { NbdTlsConfig } from '../config/index.js';
import { TwinstoreError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { loadX509, readTlsFile, type ReloadOutcome } from '../util/tls-files.js';
/** PSK keys shorter than this are refused (128 bits); OpenSSL takes at most 256 bytes. */
const pskBytesMin = 16;
const pskBytesMax = 256;
/** In GnuTLS's order of preference; all forward secret. */
const pskCiphers = 'ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:DHE-PSK-CHACHA20-POLY1305';

export interface TlsOutcome {
  /** The handshake finished: go on over `socket`; `identity` is the CN or PSK identity (undefined for an anonymous X.509 client). */
  secure(socket: tls.TLSSocket, identity: string | undefined): void;
  /** The handshake failed; the connection is being closed. */
  failed(reason: string): void;
}

type ContextOptions = Pick<tls.SecureContextOptions, 'cert' | 'key' | 'ca' | 'minVersion' | 'maxVersion' | 'ciphers' | 'secureOptions'>;

export class NbdTls {
  readonly mode: 'on' | 'require';
  private readonly server: tls.Server;
  private readonly waiting = new WeakMap<net.Socket, TlsOutcome>();
  private readonly pskIdentities = new WeakMap<tls.TLSSocket, string>();
  private psk = new Map<string, Buffer>();

  /** Loads the files; CONFIG_INVALID naming the file when one does not load. */
  constructor(private readonly config: NbdTlsConfig, private readonly log: Logger, handshakeTimeoutMs: number) {
    if (config.mode === 'off') throw new TwinstoreError('INTERNAL', 'assertion failed: NbdTls built with nbd.tls off');
    this.mode = config.mode;
    const { options, psk } = this.load();
    this.psk = psk;
    const clientCertificates = config.clientCaFile !== undefined;
    this.server = tls.createServer({
      ...options,
      requestCert: clientCertificates,
      rejectUnauthorized: clientCertificates,
      handshakeTimeout: handshakeTimeoutMs,
      ...(config.pskFile === undefined ? {} : {
        pskCallback: (socket: tls.TLSSocket, identity: string) => {
          this.pskIdentities.set(socket, identity);
          return this.psk.get(identity) ?? null;
        },
      }),
    });
    this.server.on('secureConnection', (socket) => this.settle(socket, undefined));
    this.server.on('tlsClientError', (error: Error & { code?: string }, socket) => this.settle(socket, error));
  }

  /** Starts the handshake on a socket whose STARTTLS was acknowledged and that is not being read. */
  upgrade(raw: net.Socket, outcome: TlsOutcome): void {
    this.waiting.set(raw, outcome);
    this.server.emit('connection', raw);
  }

  /** Re-reads the files: new handshakes use them, or (logged, in the outcome) the old ones stay when they do not load. */
  reload(): ReloadOutcome {
    try {
      const { options, psk } = this.load();
      this.server.setSecureContext(options);
      this.psk = psk;
    } catch (error) {
      const message = (error as Error).message;
      this.log.error({ err: message }, 'NBD TLS files not reloaded; new connections keep the previous ones');
      return { part: 'nbd', state: 'failed', error: message };
    }
    this.log.info({ certFile: this.config.certFile, pskFile: this.config.pskFile }, 'NBD TLS files reloaded');
    return { part: 'nbd', state: 'reloaded' };
  }

  private load(): { options: ContextOptions; psk: Map<string, Buffer> } {
    const config = this.config;
    const secureOptions = crypto.constants.SSL_OP_NO_RENEGOTIATION;
    if (config.pskFile !== undefined) {
      const psk = parsePskFile(readTlsFile(config.pskFile, 'nbd.pskFile'), config.pskFile);
      return { options: { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: pskCiphers, secureOptions }, psk };
    }
    const tls13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', secureOptions } as const;
    const files = { certFile: config.certFile!, keyFile: config.keyFile!, caFile: config.clientCaFile };
    const options: ContextOptions = { ...loadX509(files, { cert: 'nbd.certFile', key: 'nbd.keyFile', ca: 'nbd.clientCaFile' }, tls13), ...tls13 };
    return { options, psk: new Map() };
  }

  /** Hands the outcome of a handshake to the session that asked for it. */
  private settle(socket: tls.TLSSocket, error: (Error & { code?: string }) | undefined): void {
    // Node's TLSSocket keeps the socket it wraps as `_parent`: the one key both events can name.
    const raw = (socket as unknown as { _parent?: net.Socket })._parent;
    const outcome = raw === undefined ? undefined : this.waiting.get(raw);
    if (raw === undefined || outcome === undefined) {
      socket.destroy();
      return;
    }
    this.waiting.delete(raw);
    const pskIdentity = this.pskIdentities.get(socket);
    if (error !== undefined) {
      socket.destroy();
      const known = pskIdentity === undefined ? '' : this.psk.has(pskIdentity) ? ` (PSK identity ${pskIdentity})` : ` (unknown PSK identity ${JSON.stringify(pskIdentity)})`;
      outcome.failed(describe(error, socket, this.config.pskFile !== undefined) + known);
      return;
    }
    const identity = this.config.pskFile !== undefined ? pskIdentity : peerCommonName(socket);
    outcome.secure(socket, identity);
  }
}

function peerCommonName(socket: tls.TLSSocket): string | undefined {
  const cn = socket.getPeerCertificate().subject?.CN as string | string[] | undefined;
  return Array.isArray(cn) ? cn[0] : cn;
}

function describe(error: Error & { code?: string }, socket: tls.TLSSocket, psk: boolean): string {
  const verify = socket.authorizationError;
  if (verify !== undefined && verify !== null) return `client certificate refused: ${String(verify)}`;
  const code = error.code ?? '';
  if (psk && /PSK_IDENTITY_NOT_FOUND/.test(code)) return `PSK handshake failed: unknown identity (${code})`;
  if (psk && /BAD_RECORD_MAC|DECRYPT/.test(code)) return `PSK handshake failed: wrong key (${code})`;
  if (/CERTIFICATE|PEER_DID_NOT_RETURN/.test(code)) return `client certificate refused: ${code}`;
  return code === '' ? error.message : `${error.message.split('\n')[0]} (${code})`;
}

/** `identity:hexkey` lines (qemu tls-creds-psk, nbdkit --tls-psk, libnbd); blank lines are skipped. */
export function parsePskFile(bytes: Buffer, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  bytes.toString('utf8').split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '') return;
    const at = line.lastIndexOf(':');
    const identity = line.slice(0, at);
    const hex = line.slice(at + 1);
    const bad = (why: string): never => {
      throw new TwinstoreError('CONFIG_INVALID', `nbd.pskFile: ${file} line ${index + 1}: ${why} (lines are identity:hexkey; make one with twinstore tls psk)`, { field: 'nbd.pskFile' });
    };
    if (at <= 0) bad('no identity before the colon');
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) bad('the key is not hex digits');
    const key = Buffer.from(hex, 'hex');
    if (key.length < pskBytesMin || key.length > pskBytesMax) bad(`the key is ${key.length} bytes; it must be ${pskBytesMin} to ${pskBytesMax}`);
    if (keys.has(identity)) bad(`identity ${identity} is listed twice`);
    keys.set(identity, key);
  });
  if (keys.size === 0) throw new TwinstoreError('CONFIG_INVALID', `nbd.pskFile: ${file} holds no key`, { field: 'nbd.pskFile' });
  return keys;
}
