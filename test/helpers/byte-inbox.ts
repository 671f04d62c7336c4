// The bytes a raw test client has received and not yet read, for clients that
// speak a protocol by hand (raw NBD, NBD over TLS): read(count) waits for that
// many bytes within a bound, and says what it waited for when the bound passes
// or the connection ends first.

export class ByteInbox {
  private received = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private endedValue = false;

  /** The connection delivered `chunk`. */
  push(chunk: Buffer): void {
    this.received = Buffer.concat([this.received, chunk]);
    this.wake?.();
  }

  /** The connection closed: reads past what is here fail at once. */
  end(): void {
    this.endedValue = true;
    this.wake?.();
  }

  get ended(): boolean {
    return this.endedValue;
  }

  /** The next `count` bytes, once they are here; throws when the connection ends or `waitMsMax` passes first. */
  async read(count: number, waitMsMax: number): Promise<Buffer> {
    const deadline = Date.now() + waitMsMax;
    while (this.received.length < count) {
      if (this.endedValue) throw new Error(`connection closed with ${this.received.length} of ${count} bytes received`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${waitMsMax} ms waiting for ${count} bytes (have ${this.received.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
      });
    }
    const bytes = this.received.subarray(0, count);
    this.received = this.received.subarray(count);
    return bytes;
  }
}
