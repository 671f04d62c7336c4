// A queue of received socket chunks that the NBD decoder reads from without
// concatenating them: headers are copied out byte-exactly, payloads straight into
// their (pooled) destination buffer.

export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Copies the next `target.length - at` bytes (or fewer, if fewer are queued) into target; returns the count. */
  take(target: Buffer, at = 0): number {
    return this.consume(target.length - at, (chunk, from, to, done) => chunk.copy(target, at + done, from, to));
  }

  /** Hands up to `wanted` queued bytes to `sink`, chunk piece by chunk piece, and drops them. */
  private consume(wanted: number, sink: (chunk: Buffer, from: number, to: number, done: number) => void): number {
    let done = 0;
    while (done < wanted && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const step = Math.min(chunk.length - this.head, wanted - done);
      sink(chunk, this.head, this.head + step, done);
      done += step;
      this.head += step;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= done;
    return done;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
