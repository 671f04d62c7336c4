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
    let copied = 0;
    const wanted = target.length - at;
    while (copied < wanted && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const step = Math.min(chunk.length - this.head, wanted - copied);
      chunk.copy(target, at + copied, this.head, this.head + step);
      copied += step;
      this.head += step;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= copied;
    return copied;
  }

  /** Drops `count` bytes (a payload we refuse but must consume). Returns how many were dropped. */
  skip(count: number): number {
    let dropped = 0;
    while (dropped < count && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const step = Math.min(chunk.length - this.head, count - dropped);
      dropped += step;
      this.head += step;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= dropped;
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
