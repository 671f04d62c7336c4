// How the CLI reaches an array's API: from --config (the array's own config:
// its data folder holds run.json with the bound address, and the token), or
// from --api URL with --token / TWINSTORE_TOKEN.

import fs from 'node:fs';
import { TwinstoreError, type ErrorCode } from '../errors.js';
import { loadConfig } from '../config/index.js';
import { readRunInfo, tokenPath } from '../array/run-files.js';

export interface ConnectionOptions {
  config?: string | undefined;
  api?: string | undefined;
  token?: string | undefined;
}

export interface ApiClient {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
  /** A GET whose body is read as it comes (the event stream); an answer that is not 2xx throws as request does. */
  stream(path: string, headers?: Record<string, string>): Promise<ReadableStream<Uint8Array>>;
  readonly baseUrl: string;
}

export function connect(options: ConnectionOptions): ApiClient {
  const { baseUrl, token } = resolveEndpoint(options);
  return {
    baseUrl,
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
      let response: Response;
      try {
        response = await fetch(`${baseUrl}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      } catch (error) {
        throw new TwinstoreError('API_UNREACHABLE', `cannot reach the array API at ${baseUrl}: ${(error as Error).message}`);
      }
      const json = (await response.json().catch(() => ({}))) as { error?: { code: ErrorCode; message: string; field?: string } };
      if (!response.ok) {
        const error = json.error ?? { code: 'INTERNAL' as ErrorCode, message: `HTTP ${response.status}` };
        throw new TwinstoreError(error.code, error.message, error.field === undefined ? {} : { field: error.field });
      }
      return json as T;
    },
    async stream(path: string, headers: Record<string, string> = {}): Promise<ReadableStream<Uint8Array>> {
      let response: Response;
      try {
        response = await fetch(`${baseUrl}${path}`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...headers } });
      } catch (error) {
        throw new TwinstoreError('API_UNREACHABLE', `cannot reach the array API at ${baseUrl}: ${(error as Error).message}`);
      }
      if (!response.ok || response.body === null) {
        const json = (await response.json().catch(() => ({}))) as { error?: { code: ErrorCode; message: string; field?: string } };
        const error = json.error ?? { code: 'INTERNAL' as ErrorCode, message: `HTTP ${response.status}` };
        throw new TwinstoreError(error.code, error.message, error.field === undefined ? {} : { field: error.field });
      }
      return response.body;
    },
  };
}

function resolveEndpoint(options: ConnectionOptions): { baseUrl: string; token: string } {
  const envToken = process.env.TWINSTORE_TOKEN;
  if (options.api !== undefined) {
    const token = options.token ?? envToken;
    if (!token) throw new TwinstoreError('BAD_REQUEST', '--api needs --token or TWINSTORE_TOKEN', { field: 'token' });
    return { baseUrl: options.api.replace(/\/+$/, ''), token };
  }
  if (options.config === undefined) {
    throw new TwinstoreError('BAD_REQUEST', 'say which array: --config FILE (its own config) or --api URL --token TOKEN', { field: 'config' });
  }
  const config = loadConfig(options.config);
  const run = readRunInfo(config.dataDir);
  const address = run?.api ?? (config.listen.api.port !== 0 ? `${config.listen.api.host}:${config.listen.api.port}` : undefined);
  if (!address) throw new TwinstoreError('API_UNREACHABLE', `array ${config.arrayId} is not running (no ${config.dataDir}/run.json)`);
  const token = options.token ?? envToken ?? config.apiToken ?? readToken(config.dataDir);
  return { baseUrl: `http://${address}`, token };
}

function readToken(dataDir: string): string {
  try {
    return fs.readFileSync(tokenPath(dataDir), 'utf8').trim();
  } catch {
    throw new TwinstoreError('UNAUTHORIZED', `no API token: ${tokenPath(dataDir)} is missing; pass --token`);
  }
}
