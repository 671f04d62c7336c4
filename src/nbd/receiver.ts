// Zero-copy receive for NBD connections. By default Node reads every socket
// chunk into a freshly allocated 64 KiB buffer; at gigabytes a second that is
// tens of thousands of allocations, page faults and garbage collections, and a
// second copy into the request's buffer. Node's `onread` socket option instead
// reads into a buffer we name each time, so the decoder can name the pooled
// payload buffer of the WRITE being received and the kernel copies into it
// directly. Node only offers `onread` when it constructs the socket, so the
// accepted socket's handle is moved into a new Socket that has it (the one use
// of Node's private `_handle`); without a handle it falls back to 'data' events,
// as does a connection after STARTTLS (TLS decrypts into its own buffers).

import net from 'node:net';

export interface ByteSink {
  /** Where the next bytes go; empty means "stop reading until resume()". */
  readTarget(): Buffer;
  received(count: number): void;
  /** Decodes what arrived; false stops reading (back-pressure) until resume(). */
  onBytes(): boolean;
  /** For the fallback path: a chunk Node allocated. */
  push(chunk: Buffer): void;
}

export interface Receiver {
  readonly socket: net.Socket;
  /** Starts reading again after onBytes() returned false. */
  resume(): void;
}

interface StreamHandle {
  useUserBuffer(buffer: Uint8Array): void;
  readStart(): number;
  reading: boolean;
}

/** Takes over a socket accepted with `pauseOnConnect: true`. */
export function adoptSocket(raw: net.Socket, sink: ByteSink): Receiver {
  const handle = (raw as unknown as { _handle?: StreamHandle | null })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return streamReceiver(raw, sink);
  (raw as unknown as { _handle: null })._handle = null;
  raw.destroy(); // releases the server's connection count; the handle lives on below
  const socket = new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer: () => sink.readTarget(),
      callback: (count: number) => {
        sink.received(count);
        return sink.onBytes();
      },
    },
  } as net.SocketConstructorOpts);
  return {
    socket,
    resume(): void {
      if (socket.destroyed || handle.reading) return;
      handle.useUserBuffer(sink.readTarget());
      handle.reading = true;
      const error = handle.readStart();
      if (error !== 0) socket.destroy(new Error(`readStart failed (${error})`));
    },
  };
}

/** Reads a stream that hands out its own chunks ('data' events): a TLS socket, or a socket without a handle. */
export function streamReceiver(socket: net.Socket, sink: ByteSink): Receiver {
  socket.on('data', (chunk: Buffer) => {
    sink.push(chunk);
    if (!sink.onBytes()) socket.pause();
  });
  socket.resume();
  return { socket, resume: () => socket.resume() };
}
