// How the CLI reaches an array's API: from --config (the array's own config:
// its data folder holds run.json with the bound address, and the token; with
// api.tls the URL is https and the site CA is api.tls.caFile), or from --api
// URL with --token / TWINSTORE_TOKEN. An https API's certificate is verified
// against --ca FILE (or TWINSTORE_CA), else the config's CA, else the system's
// trusted CAs; a certificate that does not verify ends the command with a
// message saying which CA was used and how to give the right one. Each call
// goes on a connection of its own (node:http/https: fetch in Node 20 takes no
// CA without a dependency).

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { TwinstoreError, type ErrorCode } from '../errors.js';
import { loadConfig } from '../config/index.js';
import { readRunInfo, tokenPath } from '../array/run-files.js';

export interface ConnectionOptions {
  config?: string | undefined;
  api?: string | undefined;
  token?: string | undefined;
  /** The CA file that signed the API's certificate (https only). */
  ca?: string | undefined;
}

export interface ApiClient {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
  /** A GET whose body is read as it comes (the event stream); an answer that is not 2xx throws as request does. */
  stream(path: string, headers?: Record<string, string>): Promise<AsyncIterable<Uint8Array>>;
  readonly baseUrl: string;
}

interface Endpoint {
  baseUrl: string;
  token: string;
  /** The CA file's path and contents, when one is given or configured. */
  ca: { file: string; pem: Buffer } | undefined;
}

/** Certificate errors where the CA is the likely cause (node's verify codes). */
const untrustedCodes = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_SIGNATURE_FAILURE']);

export function connect(options: ConnectionOptions): ApiClient {
  const endpoint = resolveEndpoint(options);
  return {
    baseUrl: endpoint.baseUrl,
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
      const response = await send(endpoint, method, path, body, {});
      const json = await readJson(response);
      if (!ok(response)) throw apiError(response, json);
      return json as T;
    },
    async stream(path: string, headers: Record<string, string> = {}): Promise<AsyncIterable<Uint8Array>> {
      const response = await send(endpoint, 'GET', path, undefined, { accept: 'text/event-stream', ...headers });
      if (!ok(response)) throw apiError(response, await readJson(response));
      return response;
    },
  };
}

function ok(response: http.IncomingMessage): boolean {
  const status = response.statusCode ?? 0;
  return status >= 200 && status < 300;
}

function send(endpoint: Endpoint, method: string, path: string, body: unknown, headers: Record<string, string>): Promise<http.IncomingMessage> {
  const url = new URL(`${endpoint.baseUrl}${path}`);
  const text = body === undefined ? undefined : JSON.stringify(body);
  const options: https.RequestOptions = {
    method, agent: false,
    headers: { authorization: `Bearer ${endpoint.token}`, ...headers, ...(text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }) },
    ...(endpoint.ca === undefined ? {} : { ca: endpoint.ca.pem }),
  };
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).request(url, options, resolve);
    request.on('error', (error) => reject(unreachable(endpoint, error as NodeJS.ErrnoException)));
    request.end(text);
  });
}

function unreachable(endpoint: Endpoint, error: NodeJS.ErrnoException): TwinstoreError {
  const code = error.code ?? '';
  const trusted = endpoint.ca === undefined ? "this machine's trusted CAs" : `the CA in ${endpoint.ca.file}`;
  if (untrustedCodes.has(code)) {
    return new TwinstoreError('API_UNREACHABLE', `the array API at ${endpoint.baseUrl} has a certificate not signed by ${trusted} (${code}); give the site CA with --ca FILE or TWINSTORE_CA`);
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new TwinstoreError('API_UNREACHABLE', `the array API at ${endpoint.baseUrl} has a certificate for another host (${error.message})`);
  }
  return new TwinstoreError('API_UNREACHABLE', `cannot reach the array API at ${endpoint.baseUrl}: ${error.message}`);
}

async function readJson(response: Readable): Promise<unknown> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of response) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return {};
  }
}

function apiError(response: http.IncomingMessage, json: unknown): TwinstoreError {
  const error = (json as { error?: { code: ErrorCode; message: string; field?: string } }).error ?? { code: 'INTERNAL' as ErrorCode, message: `HTTP ${response.statusCode}` };
  return new TwinstoreError(error.code, error.message, error.field === undefined ? {} : { field: error.field });
}

function resolveEndpoint(options: ConnectionOptions): Endpoint {
  const envToken = process.env.TWINSTORE_TOKEN;
  const caFile = options.ca ?? (process.env.TWINSTORE_CA || undefined);
  if (options.api !== undefined) {
    const token = options.token ?? envToken;
    if (!token) throw new TwinstoreError('BAD_REQUEST', '--api needs --token or TWINSTORE_TOKEN', { field: 'token' });
    return { baseUrl: options.api.replace(/\/+$/, ''), token, ca: readCa(caFile) };
  }
  if (options.config === undefined) {
    throw new TwinstoreError('BAD_REQUEST', 'say which array: --config FILE (its own config) or --api URL --token TOKEN', { field: 'config' });
  }
  const config = loadConfig(options.config);
  const run = readRunInfo(config.dataDir);
  const address = run?.api ?? (config.listen.api.port !== 0 ? `${config.listen.api.host}:${config.listen.api.port}` : undefined);
  if (!address) throw new TwinstoreError('API_UNREACHABLE', `array ${config.arrayId} is not running (no ${config.dataDir}/run.json)`);
  const token = options.token ?? envToken ?? config.apiToken ?? readToken(config.dataDir);
  const scheme = config.apiTls === undefined ? 'http' : 'https';
  const configuredCa = config.apiTls !== undefined && fs.existsSync(config.apiTls.caFile) ? config.apiTls.caFile : undefined;
  return { baseUrl: `${scheme}://${address}`, token, ca: readCa(caFile ?? configuredCa) };
}

function readCa(file: string | undefined): Endpoint['ca'] {
  if (file === undefined) return undefined;
  try {
    return { file, pem: fs.readFileSync(file) };
  } catch (error) {
    throw new TwinstoreError('BAD_REQUEST', `--ca ${file}: cannot read it: ${(error as Error).message}`, { field: 'ca' });
  }
}

function readToken(dataDir: string): string {
  try {
    return fs.readFileSync(tokenPath(dataDir), 'utf8').trim();
  } catch {
    throw new TwinstoreError('UNAUTHORIZED', `no API token: ${tokenPath(dataDir)} is missing; pass --token`);
  }
}
