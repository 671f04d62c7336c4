// TLS settings for the link: TLS 1.2, one DHE-PSK cipher suite, no certificates.
// The listening array sends its array id as the PSK identity hint; the
// connecting array answers with its own array id as the PSK identity. Both sides
// use the one key the two arrays share, and the handshake fails unless both hold
// it. describeHandshakeError turns OpenSSL's error codes into the reason an
// operator needs ("wrong key", "not TLS").

import type tls from 'node:tls';
import { TwinstoreError } from '../errors.js';
import { PSK_BYTES, TLS_CIPHER, TLS_VERSION } from './protocol.js';

export interface LinkIdentity {
  arrayId: string;
  /** 32 bytes, shared by the two arrays. */
  psk: Buffer;
}

export function checkIdentity(identity: LinkIdentity): void {
  if (identity.arrayId.length === 0) throw new TwinstoreError('CONFIG_INVALID', 'a link identity needs an array id');
  if (identity.psk.length !== PSK_BYTES) {
    throw new TwinstoreError('CONFIG_INVALID', `a link key must be ${PSK_BYTES} bytes, not ${identity.psk.length} (make one with: twinstore keys --out FILE)`);
  }
}

export function serverTlsOptions(options: {
  identity: LinkIdentity;
  handshakeTimeoutMs: number;
  /** Called with the PSK identity the client authenticated as. */
  onIdentity: (socket: tls.TLSSocket, peerId: string) => void;
}): tls.TlsOptions {
  return {
    minVersion: TLS_VERSION,
    maxVersion: TLS_VERSION,
    ciphers: TLS_CIPHER,
    dhparam: 'auto',
    pskIdentityHint: options.identity.arrayId,
    handshakeTimeout: options.handshakeTimeoutMs,
    pskCallback: (socket, peerId) => {
      options.onIdentity(socket, peerId);
      return options.identity.psk;
    },
  };
}

export function clientTlsOptions(options: {
  identity: LinkIdentity;
  host: string;
  port: number;
  /** Called with the listening array's identity hint (its array id). */
  onHint: (hint: string | null) => void;
}): tls.ConnectionOptions {
  return {
    host: options.host,
    port: options.port,
    minVersion: TLS_VERSION,
    maxVersion: TLS_VERSION,
    ciphers: TLS_CIPHER,
    // No certificate is involved: the PSK suite authenticates the server.
    checkServerIdentity: () => undefined,
    pskCallback: (hint) => {
      options.onHint(hint);
      return { psk: options.identity.psk, identity: options.identity.arrayId };
    },
  };
}

const reasons: Array<[RegExp, string]> = [
  [/BAD_RECORD_MAC|DECRYPT|CIPHER_OPERATION_FAILED/, 'wrong link key'],
  [/NO_SHARED_CIPHER/, 'no TLS-PSK cipher offered: no link key, or not a Twinstore array'],
  [/ALERT_HANDSHAKE_FAILURE/, 'the other side aborted the handshake: it has no link key, or refuses ours'],
  [/PSK_IDENTITY_NOT_FOUND/, 'no link key to offer'],
  [/HTTP_REQUEST|WRONG_VERSION_NUMBER|UNEXPECTED_RECORD|PACKET_LENGTH_TOO_LONG|RECORD_LENGTH_MISMATCH|UNSUPPORTED_PROTOCOL|VERSION_TOO_LOW|VERSION_TOO_HIGH|UNEXPECTED_MESSAGE/, 'not a TLS 1.2 link client (plain TCP?)'],
  [/HANDSHAKE_TIMEOUT/, 'no TLS handshake in time'],
  [/ECONNRESET|EPIPE/, 'the connection closed during the TLS handshake'],
];

/** One short reason for a failed TLS handshake, followed by Node's error code. */
export function describeHandshakeError(error: Error & { code?: string }): string {
  const code = error.code ?? '';
  const reason = reasons.find(([pattern]) => pattern.test(code))?.[1] ?? error.message.split('\n')[0] ?? 'unknown error';
  return code === '' ? reason : `${reason} (${code})`;
}
