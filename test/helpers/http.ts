// One management-API call from a test, the same way everywhere: on a connection
// of its own (no keep-alive), bounded in time, and named on failure (method,
// route, address and the socket error).
//
// Why no keep-alive: the array closes an idle keep-alive connection after its
// keep-alive bound, and a client reusing it in the same moment gets "other side
// closed" for a request the server never read. fetch's pool keeps a margin
// for that, but a test process whose event loop was busy (reading volumes
// synchronously, checking write order, on a loaded machine) runs its timers
// late and reuses a connection the server has already closed: the fault rounds
// failed that way on a POST, which no client may send twice. A connection per
// call costs a handshake on loopback, nothing next to what the calls wait for.

import http from 'node:http';
import https from 'node:https';

export interface ApiCall {
  token: string;
  body?: unknown;
  timeoutMs?: number;
  /** Call over HTTPS, trusting this CA (PEM). */
  ca?: Buffer;
}

export async function apiFetch(address: string, method: string, route: string, call: ApiCall): Promise<{ status: number; json: any }> {
  const { token, body, timeoutMs = 30_000, ca } = call;
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const [host, port] = splitAddress(address);
  try {
    return await new Promise((resolve, reject) => {
      const request = (ca === undefined ? http : https).request({
        host, port, method, path: route, agent: false, ...(ca === undefined ? {} : { ca }),
        headers: {
          authorization: `Bearer ${token}`,
          ...(text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }),
        },
      }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = raw === '' ? undefined : JSON.parse(raw);
          } catch {
            json = undefined;
          }
          resolve({ status: response.statusCode ?? 0, json });
        });
      });
      request.setTimeout(timeoutMs, () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      request.on('error', reject);
      request.end(text);
    });
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw new Error(`${method} ${route} on ${address}: ${code === undefined ? '' : `${code} `}${(error as Error).message}`);
  }
}

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at).replace(/^\[|\]$/g, ''), Number(address.slice(at + 1))];
}

/** Splits a server-sent event stream into its data lines, parsed: feed it each chunk as read. */
export function sseParser<T>(onEvent: (event: T) => void): (chunk: string) => void {
  let buffered = '';
  return (chunk) => {
    buffered += chunk;
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = block.split('\n').find((line) => line.startsWith('data: '));
      if (data) onEvent(JSON.parse(data.slice(6)) as T);
    }
  };
}
