/**
 * The idle timeout: a request is abandoned when no byte moves for `--timeout`, however long it runs
 * while bytes keep moving. Time the network is not to blame for (a body producer waiting for its own
 * data, a caller not yet asking for more of a streamed answer) is paused out.
 */

/** Thrown into a request that moved no byte for too long; retried like a dropped connection. */
export class IdleTimeout extends Error {
  constructor(
    readonly ms: number,
    readonly origin: string,
  ) {
    super(`no progress for ${Math.round(ms / 1000)} s on the connection to ${origin}`);
  }
}

// Bun and the kernel hold several MB of a body in socket buffers after it has been read (8 MB seen
// on loopback). Until an upload showed the link's pace, assume a slow one: 128 kB/s.
const BUFFERED_MAX = 16 * 1024 * 1024;
const FLOOR_RATE = 128;

/** The pace of the slowest upload seen: how long bytes still in socket buffers may take to leave. */
export class LinkPace {
  /** Bytes per ms; unknown until a large body went through. */
  private rate?: number;

  drainMs(bytes: number): number {
    return Math.min(bytes, BUFFERED_MAX) / (this.rate ?? FLOOR_RATE);
  }

  /** What an upload took from its first byte to the answer: the link's pace, and then some. */
  learn(bytes: number, ms: number): void {
    if (bytes < 1024 * 1024) return;
    const rate = bytes / Math.max(ms, 1);
    this.rate = Math.min(this.rate ?? rate, rate);
  }
}

/**
 * One request's timer. Every block read from the body counts as progress; once the whole body is
 * read, what still sits in socket buffers needs time to drain at the link's pace, so the watch allows
 * for that before calling the request stalled.
 */
export class IdleWatch {
  private timer?: ReturnType<typeof setTimeout>;
  private paused = false;
  private stopped = false;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
    private readonly pace?: LinkPace,
  ) {
    this.arm(ms);
  }

  /** Bytes moved. */
  progress(): void {
    if (!this.paused) this.arm(this.ms);
  }

  /** Waiting on something that is not the network: no timeout until `resume`. */
  pause(): void {
    this.paused = true;
    clearTimeout(this.timer);
  }

  resume(): void {
    this.paused = false;
    this.arm(this.ms);
  }

  /** The whole body was handed to the connection; its tail may still be in socket buffers. */
  bodySent(size: number): void {
    this.paused = false;
    this.arm(this.ms + (this.pace?.drainMs(size) ?? 0));
  }

  /** Headers arrived: the answer's body gets the plain idle time. */
  answered(): void {
    this.paused = false;
    this.arm(this.ms);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(this.onIdle, ms);
  }
}
