import { open, type FileHandle } from "node:fs/promises";

/** The final identity of a blob's bytes. */
export interface BlobIdentity {
  digest: string;
  size: number;
}

/** Called by a stream body while it waits for bytes that do not exist yet (not a network stall). */
export interface WaitHooks {
  pause(): void;
  resume(): void;
}

const READ_SIZE = 1 << 20;

/**
 * The bytes of one blob in a file, possibly still being written: uploads and verification read them
 * while a compressor, a download or a `docker save` stream is still producing them, so a chunk can
 * leave as soon as it exists. Reads go through one handle opened at creation, so renaming the file
 * (temporary name to cache name) never disturbs a reader. Memory stays at one read buffer per reader.
 */
export class BlobFile {
  private length: number;
  private final?: BlobIdentity;
  private error?: Error;
  private waiters: { need: number; wake: () => void }[] = [];
  private closed = false;
  private readonly settled: Promise<BlobIdentity>;
  private settle!: { resolve(identity: BlobIdentity): void; reject(error: Error): void };

  private constructor(
    private readonly handle: FileHandle,
    /** Where byte 0 of the blob sits in the file (archive entries are read in place). */
    private readonly base: number,
    public path: string,
    available: number,
  ) {
    this.length = available;
    this.settled = new Promise<BlobIdentity>((resolve, reject) => (this.settle = { resolve, reject }));
    this.settled.catch(() => undefined); // a failure is reported to whoever awaits `done`
  }

  /** A blob that is already complete: `size` bytes of `path` from `offset`; `digest` if known. */
  static async complete(path: string, offset: number, size: number, digest?: string): Promise<BlobFile> {
    const blob = new BlobFile(await open(path, "r"), offset, path, size);
    if (digest) blob.finish({ digest, size });
    return blob;
  }

  /** A blob a producer is about to write into the (existing, empty) file at `path`. */
  static async growing(path: string): Promise<BlobFile> {
    return new BlobFile(await open(path, "r"), 0, path, 0);
  }

  /** Bytes readable now. */
  get available(): number {
    return this.length;
  }

  /** The final digest and size, once the producer finished. */
  get identity(): BlobIdentity | undefined {
    return this.final;
  }

  get failed(): Error | undefined {
    return this.error;
  }

  /** Resolves with the final identity; rejects if the producer failed. */
  get done(): Promise<BlobIdentity> {
    return this.settled;
  }

  // --- producer side ---------------------------------------------------------------------------

  /** The producer wrote up to `length` bytes. */
  grew(length: number): void {
    if (length <= this.length) return;
    this.length = length;
    this.wake();
  }

  finish(identity: BlobIdentity): void {
    if (this.final || this.error) return;
    this.length = identity.size;
    this.final = identity;
    this.settle.resolve(identity);
    this.wake();
  }

  fail(error: Error): void {
    if (this.final || this.error) return;
    this.error = error;
    this.settle.reject(error);
    this.wake();
  }

  /** The file moved (temporary name to its cache name); open readers are not affected. */
  moved(path: string): void {
    this.path = path;
  }

  // --- consumer side ---------------------------------------------------------------------------

  /**
   * Waits until at least `need` bytes exist or the blob is complete, and returns the bytes available.
   * Rejects with the producer's error, or the signal's reason.
   */
  async waitFor(need: number, signal?: AbortSignal): Promise<number> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.error) throw this.error;
      if (this.length >= need || this.final) return this.length;
      await new Promise<void>((resolve, reject) => {
        const waiter = { need, wake: () => done(resolve) };
        const onAbort = () => done(() => reject(signal?.reason));
        const done = (settle: () => void) => {
          signal?.removeEventListener("abort", onAbort);
          this.waiters = this.waiters.filter((w) => w !== waiter);
          settle();
        };
        this.waiters.push(waiter);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    }
  }

  /** Reads up to `buffer.length` bytes at `position` (of the blob); only bytes that exist. */
  async read(buffer: Uint8Array, position: number): Promise<number> {
    const length = Math.min(buffer.length, this.length - position);
    if (length <= 0) return 0;
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await this.handle.read(buffer, filled, length - filled, this.base + position + filled);
      if (bytesRead === 0) throw new Error(`${this.path} ends at byte ${position + filled}, before the ${this.length} bytes it should hold`);
      filled += bytesRead;
    }
    return filled;
  }

  /**
   * The bytes from `start` up to `end` (exclusive; the final size when omitted), following the file as
   * it grows. While it waits for bytes that are not written yet it calls `hooks.pause()`, so an idle
   * timer can tell a slow producer from a stalled network.
   */
  stream(start: number, end?: number, options: { hooks?: WaitHooks; signal?: AbortSignal } = {}): ReadableStream<Uint8Array> {
    let position = start;
    const { hooks, signal } = options;
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          const limit = end ?? this.final?.size ?? Number.POSITIVE_INFINITY;
          if (position >= limit) return controller.close();
          if (this.length <= position && !this.final) {
            hooks?.pause();
            try {
              await this.waitFor(position + 1, signal);
            } finally {
              hooks?.resume();
            }
          }
          const stop = Math.min(end ?? this.final?.size ?? this.length, this.length);
          if (position >= stop) {
            if (this.final || end === undefined) return controller.close();
            throw new Error(`${this.path} ended at byte ${this.length}, before byte ${end}`);
          }
          const buffer = new Uint8Array(Math.min(READ_SIZE, stop - position));
          const read = await this.read(buffer, position);
          position += read;
          controller.enqueue(read === buffer.length ? buffer : buffer.subarray(0, read));
        },
      },
      { highWaterMark: 0 },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => this.error || this.final || this.length >= w.need);
    for (const waiter of ready) waiter.wake();
  }
}
