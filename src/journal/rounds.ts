// Group-commit rounds of one journal. A round is an optional header write plus one flush;
// callers that ask while a round runs join the next one, so any number of sync()s and
// header changes in flight cost at most two device flushes. The journal decides what a
// round does (its `run`); this queue only decides when rounds start and who waits on which.

/** One round: its promise settles when its flush (and header write, if asked) has completed. */
interface Round {
  header: boolean;
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class RoundQueue {
  private running: Round | undefined;
  private queued: Round | undefined;

  /**
   * `run` does one round's device work (header write when asked, then the flush); `onError`
   * maps its failure to what every waiter of that round sees.
   */
  constructor(
    private readonly run: (header: boolean) => Promise<void>,
    private readonly onError: (error: unknown) => unknown,
  ) {}

  /** Joins the queued round (or queues one); with `header` that round writes a header too. */
  request(header: boolean): Promise<void> {
    let round = this.queued;
    if (round === undefined) {
      round = newRound();
      this.queued = round;
      if (this.running === undefined) queueMicrotask(() => this.start());
    }
    if (header) round.header = true;
    return round.promise;
  }

  /** A header round nobody waits for (its failure still stops the journal through `onError`). */
  soon(): void {
    this.request(true).catch(() => undefined);
  }

  /** The round now running, if any. */
  get current(): Promise<void> | undefined {
    return this.running?.promise;
  }

  private start(): void {
    const round = this.queued;
    if (round === undefined || this.running !== undefined) return;
    this.queued = undefined;
    this.running = round;
    this.run(round.header)
      .then(() => round.resolve(), (error: unknown) => round.reject(this.onError(error)))
      .finally(() => {
        this.running = undefined;
        this.start();
      });
  }
}

function newRound(): Round {
  let resolve: () => void = () => undefined;
  let reject: (error: unknown) => void = () => undefined;
  const promise = new Promise<void>((onResolve, onReject) => {
    resolve = onResolve;
    reject = onReject;
  });
  promise.catch(() => undefined); // background rounds have no caller; callers that await still see the error
  return { header: false, promise, resolve, reject };
}
