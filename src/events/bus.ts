// The array's event bus (issue 16): the parts that own a state report each
// change here as an outcome (a pair's status persisted, a link up or down, a
// volume made, a takeover done), and the bus gives it the next id and fans it
// out to whoever listens (the API's event stream). Its one job is the fan-out
// with bounds: it keeps the last eventsKeptMax events, so a client that comes
// back with the id it saw last gets what it missed, and nothing else.
//
// Ids are `RUN.N`: N counts up from 1 in this process, RUN names the process
// run (its start time), so an id from before a restart is never taken for one
// of this run. A reporter never waits on a listener: listeners are called
// synchronously and must only queue (the stream bounds its own buffer).

/** Events kept for clients that come back (Last-Event-ID); older ones get a fresh snapshot. */
export const eventsKeptMax = 4096;

export interface ArrayEvent {
  id: string;
  at: string;
  type: string;
  data: Record<string, unknown>;
}

/** What an owner reports to: one call per change, never blocking. */
export interface EventSink {
  publish(type: string, data: Record<string, unknown>): void;
}

/** A sink that drops everything: where nothing listens (the simulator, a part built alone). */
export const noEvents: EventSink = { publish: () => undefined };

export type Listener = (event: ArrayEvent) => void;

export class EventBus implements EventSink {
  readonly run = Date.now().toString(36);
  private counter = 0;
  private readonly kept: ArrayEvent[] = [];
  private readonly listeners = new Set<Listener>();

  publish(type: string, data: Record<string, unknown>): void {
    this.counter += 1;
    const event: ArrayEvent = { id: `${this.run}.${this.counter}`, at: new Date().toISOString(), type, data };
    this.kept.push(event);
    if (this.kept.length > eventsKeptMax) this.kept.shift();
    for (const listener of this.listeners) listener(event);
  }

  /** The id of the newest event (`RUN.0` before the first): a snapshot taken now stands at it. */
  get lastId(): string {
    return `${this.run}.${this.counter}`;
  }

  /**
   * The events after `id`, oldest first; undefined when they cannot all be given: an id of
   * another run, one this run has not reached, or one older than the events kept.
   */
  since(id: string): ArrayEvent[] | undefined {
    const match = /^([0-9a-z]+)\.(\d+)$/.exec(id);
    if (!match || match[1] !== this.run) return undefined;
    const seen = Number(match[2]);
    if (seen > this.counter) return undefined;
    const first = this.counter - this.kept.length + 1;
    if (seen + 1 < first) return undefined;
    return this.kept.slice(seen + 1 - first);
  }

  /** Calls `listener` with every event from now on; returns the unsubscribe. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
