// One management-API call from a test, the same way everywhere: bounded in time,
// named on failure (method, route, address and the socket error under fetch's
// bare "fetch failed"), and a GET sent again once when the array closed an idle
// keep-alive connection just as the request went out. That race belongs to
// HTTP/1.1 keep-alive, not to the array: the server closes an idle connection
// after its keep-alive bound, and a test process whose event loop was busy
// (reading volumes synchronously, on a loaded machine) may reuse it a moment
// later. A GET changes nothing, so sending it again is what any HTTP client
// does; any other method fails with the cause named.

/** Socket errors that mean the connection was gone before an answer came. */
const closedCodes = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE', 'UND_ERR_CLOSED']);

export interface ApiCall {
  token: string;
  body?: unknown;
  timeoutMs?: number;
}

export async function apiFetch(address: string, method: string, route: string, call: ApiCall): Promise<{ status: number; json: any }> {
  const { token, body, timeoutMs = 30_000 } = call;
  for (let attempt = 1; ; attempt += 1) {
    try {
      const response = await fetch(`http://${address}${route}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      return { status: response.status, json: await response.json().catch(() => undefined) };
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      if (method === 'GET' && attempt === 1 && cause?.code !== undefined && closedCodes.has(cause.code)) continue;
      const detail = cause === undefined ? '' : `: ${cause.code ?? ''} ${cause.message ?? ''}`.trimEnd();
      throw new Error(`${method} ${route} on ${address} (attempt ${attempt}): ${(error as Error).message}${detail}`);
    }
  }
}
