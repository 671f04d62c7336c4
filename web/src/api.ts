// The page's only way to the array: its own /v1 API on the origin that served
// the page, always with `Authorization: Bearer` (the token never goes in a URL).
// Errors come back as ApiError with the catalogue's code and message, for the
// page to show as the API said them.
//
// The event stream is read with fetch() and a stream reader, not EventSource,
// because EventSource cannot send a header; after a break it comes back with
// Last-Event-ID so nothing is missed (docs/api.md "Events").

export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
  }
}

export interface ArrayEvent {
  id: string;
  at: string;
  type: string;
  data: Record<string, unknown>;
}

/** Wait before the event stream is opened again after it broke. */
export const eventRetryMs = 2_000;
/** Bytes of one event frame kept while its end has not arrived; past it the stream is dropped. */
export const eventFrameBytesMax = 1 << 20;

export class Api {
  constructor(private readonly token: string) {}

  get<T>(route: string): Promise<T> {
    return this.call<T>('GET', route, undefined);
  }

  post<T>(route: string, body: unknown): Promise<T> {
    return this.call<T>('POST', route, body);
  }

  private async call<T>(method: string, route: string, body: unknown): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(route, { method, headers, cache: 'no-store', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    } catch (error) {
      throw new ApiError('UNREACHABLE', `the array did not answer ${method} ${route}: ${String(error)}`, 0);
    }
    const json = (await response.json().catch(() => undefined)) as { error?: { code: string; message: string } } | undefined;
    if (!response.ok) {
      throw new ApiError(json?.error?.code ?? `HTTP_${response.status}`, json?.error?.message ?? response.statusText, response.status);
    }
    return json as T;
  }

  /** Reads /v1/events until `signal` aborts, coming back after each break. */
  async follow(onEvent: (event: ArrayEvent) => void, onState: (up: boolean) => void, signal: AbortSignal): Promise<void> {
    let lastId: string | undefined;
    while (!signal.aborted) {
      try {
        const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' };
        if (lastId !== undefined) headers['last-event-id'] = lastId;
        const response = await fetch('/v1/events', { headers, signal, cache: 'no-store' });
        if (!response.ok || response.body === null) throw new Error(`HTTP ${response.status}`);
        onState(true);
        await readFrames(response.body, signal, (event) => {
          lastId = event.id;
          onEvent(event);
        });
      } catch {
        // Shown as the stream being down; the loop tries again.
      }
      onState(false);
      if (!signal.aborted) await new Promise((resolve) => setTimeout(resolve, eventRetryMs));
    }
  }
}

async function readFrames(body: ReadableStream<Uint8Array>, signal: AbortSignal, onEvent: (event: ArrayEvent) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  signal.addEventListener('abort', () => void reader.cancel(), { once: true });
  let buffered = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const frame = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = frame.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n');
      if (data !== '') onEvent(JSON.parse(data) as ArrayEvent);
    }
    if (buffered.length > eventFrameBytesMax) throw new Error('an event frame past eventFrameBytesMax');
  }
}
