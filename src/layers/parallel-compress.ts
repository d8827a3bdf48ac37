/**
 * Parallel layer compression on worker threads: a byte range of a file is read in blocks, the blocks
 * are compressed on a pool of workers (one per core by default), and the results are written in order,
 * hashing input and output in the same pass. Memory stays at a few blocks per worker whatever the size
 * of the layer and however many layers compress at once.
 *
 * gzip is built the way pigz does it, so the output is ONE standard gzip member any reader accepts:
 * each block is raw deflate primed with the last 32 KiB of the block before (so the ratio matches a
 * single stream), non-final blocks end with a sync flush (byte-aligned), and the trailer carries the
 * CRC32 of the whole input, computed in order as blocks are read. zstd blocks are independent frames,
 * and concatenated frames are a valid zstd stream.
 */
import { availableParallelism } from "node:os";
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { crc32 } from "node:zlib";

export type Algorithm = "gzip" | "zstd";

export interface CompressResult {
  /** sha256 of the bytes read, to check against the layer's diff_id. */
  inputDigest: string;
  /** sha256 and length of the compressed bytes written. */
  digest: string;
  size: number;
}

export interface CompressOptions {
  algorithm: Algorithm;
  /** gzip 0-9, zstd 1-22. */
  level: number;
  /** Size of the shared worker pool; default: the number of cores. */
  workers?: number;
  /** Bytes per block; default DEFAULT_BLOCK_SIZE[algorithm]. gzip needs at least 32 KiB. */
  blockSize?: number;
  /** Use this pool instead of the shared one (tests). */
  pool?: CompressPool;
  /** Stops reading at once; the promise rejects with the signal's reason once pending writes settle. */
  signal?: AbortSignal;
  /** Input bytes whose compressed output is written, in order (for a progress display). */
  onProgress?: (done: number) => void;
  /** Compressed bytes written to `dest` so far, after each in-order write (readers can follow the file). */
  onOutput?: (written: number) => void;
}

/**
 * Measured on 315 MB of /usr/share + /usr/lib tar (bench/throughput.ts --sweep): gzip primed with the
 * 32 KiB dictionary is as small as one stream at any block size (128 KiB to 4 MiB), and 1 MiB keeps
 * messages few. Independent zstd frames lose matches across frames: against one zstd stream, 1 MiB
 * blocks came out 8.6% bigger, 4 MiB 1.2%, 8 MiB 0.1%.
 */
export const DEFAULT_BLOCK_SIZE: Readonly<Record<Algorithm, number>> = { gzip: 1 << 20, zstd: 8 << 20 };

const WINDOW = 32 * 1024;
/** Largest first block: zstd's 8 MiB blocks would hold back the first output bytes for a whole block. */
const FIRST_BLOCK = 1 << 20;
const LEVELS: Readonly<Record<Algorithm, [number, number]>> = { gzip: [0, 9], zstd: [1, 22] };

/** Compresses `range` of `source` into `dest` (created or truncated). Rejects with a clear Error. */
export async function compressRange(source: string, range: { offset: number; size: number }, dest: string, options: CompressOptions): Promise<CompressResult> {
  checkRange(range);
  options.signal?.throwIfAborted();
  const input = await open(source, "r").catch((error: Error) => {
    throw new Error(`cannot read ${source}: ${error.message}`);
  });
  try {
    const read = (buffer: Uint8Array<ArrayBuffer>, start: number) => readBlock(input, source, range.offset + start, buffer);
    return await compressInput(read, range.size, dest, options);
  } finally {
    await input.close().catch(() => undefined);
  }
}

/**
 * Compresses the next `size` bytes of `stream` (an entry of a `docker save` as it runs) into `dest`.
 * The stream is read block by block as the workers free up, so it is never buffered whole.
 */
export async function compressStream(stream: ReadableStream<Uint8Array>, size: number, dest: string, options: CompressOptions): Promise<CompressResult> {
  checkRange({ offset: 0, size });
  const source = new StreamBlocks(stream);
  try {
    return await compressInput((buffer) => source.fill(buffer), size, dest, options);
  } finally {
    source.release();
  }
}

type ReadInto = (buffer: Uint8Array<ArrayBuffer>, start: number) => Promise<Uint8Array<ArrayBuffer>>;

async function compressInput(read: ReadInto, size: number, dest: string, options: CompressOptions): Promise<CompressResult> {
  const { algorithm, level } = options;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE[algorithm];
  checkOptions(algorithm, level, blockSize);
  const pool = options.pool ?? sharedPool(options.workers ?? availableParallelism());
  options.signal?.throwIfAborted();
  // Taken before any await: compressions called earlier get free slots first, so layers finish one
  // after another (each on every core) and the caller uploads one while the next compresses, rather
  // than all of them finishing together at the end.
  const ticket = pool.ticket();
  let output: FileHandle;
  try {
    output = await open(dest, "w");
  } catch (error) {
    throw new Error(`cannot write ${dest}: ${(error as Error).message}`);
  }
  try {
    const plan = { read, size, blockSize, algorithm, level, pool, signal: options.signal, onProgress: options.onProgress, ticket };
    return await compressBlocks(plan, new OrderedSink(output, dest, options.onOutput));
  } finally {
    await output.close().catch(() => undefined);
  }
}

/** Hands out a byte stream in exact block-sized pieces, keeping only what one read returned beyond a block. */
class StreamBlocks {
  private leftover?: Uint8Array;
  private readonly reader;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  async fill(buffer: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
    let filled = 0;
    while (filled < buffer.length) {
      let piece = this.leftover;
      this.leftover = undefined;
      if (!piece) {
        const { done, value } = await this.reader.read();
        if (done) throw new Error(`the stream ended ${buffer.length - filled} bytes before the end of the entry`);
        piece = value;
      }
      const take = Math.min(piece.length, buffer.length - filled);
      buffer.set(piece.subarray(0, take), filled);
      filled += take;
      if (take < piece.length) this.leftover = piece.subarray(take);
    }
    return buffer;
  }

  release(): void {
    this.reader.releaseLock();
  }
}

/** Ends the shared workers now; a later compressRange starts new ones. Idle workers never keep the process alive. */
export function closeCompressWorkers(): void {
  for (const pool of pools.values()) pool.close();
  pools.clear();
}

interface BlockPlan {
  read: ReadInto;
  size: number;
  blockSize: number;
  algorithm: Algorithm;
  level: number;
  pool: CompressPool;
  signal: AbortSignal | undefined;
  onProgress: ((done: number) => void) | undefined;
  ticket: number;
}

/** Reads and hashes blocks in order, hands them to the pool, and lets `sink` write results in order. */
async function compressBlocks(plan: BlockPlan, sink: OrderedSink): Promise<CompressResult> {
  const { read, size: inputSize, blockSize, algorithm, level, pool, signal, onProgress, ticket } = plan;
  const inputHash = createHash("sha256");
  let crc = 0;
  let dictionary: Uint8Array<ArrayBuffer> | undefined;
  if (algorithm === "gzip") sink.push(Promise.resolve(gzipHeader(level)));

  // The first block is small, so the first compressed bytes exist (and an upload can start) a few
  // milliseconds in, whatever the block size; gzip's 1 MiB blocks are unchanged by this.
  const first = Math.min(blockSize, FIRST_BLOCK);
  const startOf = (index: number) => (index === 0 ? 0 : first + (index - 1) * blockSize);
  // An empty range still makes one (empty) block, so the stream is complete.
  const blocks = inputSize <= first ? 1 : 1 + Math.ceil((inputSize - first) / blockSize);
  for (let index = 0; index < blocks && !sink.failed; index++) {
    const start = startOf(index);
    const length = Math.min(index === 0 ? first : blockSize, inputSize - start);
    const release = await pool.slots.acquire(ticket);
    let data: Uint8Array<ArrayBuffer>;
    try {
      signal?.throwIfAborted();
      data = await read(new Uint8Array(pool.buffer(length)), start);
    } catch (error) {
      release();
      await sink.settle(); // no write may still be running when the caller closes the file
      throw error;
    }
    inputHash.update(data);
    if (algorithm === "gzip") crc = crc32(data, crc);
    const job = { algorithm, level, data, dictionary, last: index === blocks - 1 };
    // Copy the tail before `data` is transferred to the worker: it primes the next block.
    if (algorithm === "gzip") dictionary = data.slice(Math.max(0, data.length - WINDOW));
    sink.push(pool.run(job), release, onProgress && (() => onProgress(start + length)));
  }
  if (algorithm === "gzip") sink.push(Promise.resolve(gzipTrailer(crc, inputSize)));
  const { digest, size } = await sink.finish();
  return { inputDigest: `sha256:${inputHash.digest("hex")}`, digest, size };
}

/** Fills `buffer` from `position`; a short file is an error. */
async function readBlock(file: FileHandle, source: string, position: number, buffer: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const length = buffer.length;
  let filled = 0;
  while (filled < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await file.read(buffer, filled, length - filled, position + filled));
    } catch (error) {
      throw new Error(`cannot read ${source}: ${(error as Error).message}`);
    }
    if (bytesRead === 0) throw new Error(`cannot read ${source}: the file ends at byte ${position + filled}, inside the range to compress`);
    filled += bytesRead;
  }
  return buffer;
}

/**
 * Writes compressed blocks in the order they were pushed, whatever order the workers finish in, and
 * hashes them. The first failure stops the writes and is what finish() rejects with.
 */
class OrderedSink {
  private readonly hash = createHash("sha256");
  private size = 0;
  private chain: Promise<void> = Promise.resolve();
  private error: Error | undefined;

  constructor(
    private readonly file: FileHandle,
    private readonly path: string,
    private readonly onOutput?: (written: number) => void,
  ) {}

  get failed(): boolean {
    return this.error !== undefined;
  }

  push(block: Promise<Uint8Array>, release?: () => void, written?: () => void): void {
    block.catch(() => undefined); // awaited in order below; never an unhandled rejection meanwhile
    this.chain = this.chain
      .then(() => block)
      .then((bytes) => this.write(bytes))
      .then(() => written?.())
      .finally(() => release?.());
    this.chain.catch((error: Error) => (this.error ??= error));
  }

  /** Waits for every write pushed so far, failed or not. */
  async settle(): Promise<void> {
    await this.chain.catch(() => undefined);
  }

  async finish(): Promise<{ digest: string; size: number }> {
    await this.chain;
    return { digest: `sha256:${this.hash.digest("hex")}`, size: this.size };
  }

  private async write(bytes: Uint8Array): Promise<void> {
    let written = 0;
    try {
      while (written < bytes.length) {
        written += (await this.file.write(bytes, written, bytes.length - written)).bytesWritten;
      }
    } catch (error) {
      throw new Error(`cannot write ${this.path}: ${(error as Error).message}`);
    }
    this.hash.update(bytes);
    this.size += bytes.length;
    this.onOutput?.(this.size);
  }
}

function checkRange(range: { offset: number; size: number }): void {
  if (!Number.isSafeInteger(range.offset) || range.offset < 0 || !Number.isSafeInteger(range.size) || range.size < 0) {
    throw new Error(`invalid byte range: offset ${range.offset}, size ${range.size}`);
  }
}

function checkOptions(algorithm: Algorithm, level: number, blockSize: number): void {
  const limits = LEVELS[algorithm];
  if (!limits) throw new Error(`unknown compression algorithm ${String(algorithm)}: expected gzip or zstd`);
  if (!Number.isInteger(level) || level < limits[0] || level > limits[1]) {
    throw new Error(`${algorithm} level must be an integer from ${limits[0]} to ${limits[1]}, got ${level}`);
  }
  if (!Number.isInteger(blockSize) || blockSize < WINDOW) throw new Error(`block size must be at least ${WINDOW} bytes, got ${blockSize}`);
}

/** The 10-byte gzip header zlib writes (no name, mtime 0, OS unix), with its XFL for the level. */
function gzipHeader(level: number): Uint8Array {
  const xfl = level === 9 ? 2 : level < 2 ? 4 : 0;
  return Uint8Array.of(0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3);
}

/** CRC32 and ISIZE (input length mod 2^32), little-endian. */
function gzipTrailer(crc: number, inputSize: number): Uint8Array {
  const trailer = new Uint8Array(8);
  const view = new DataView(trailer.buffer);
  view.setUint32(0, crc >>> 0, true);
  view.setUint32(4, inputSize % 2 ** 32, true);
  return trailer;
}

// ---------------------------------------------------------------------------------------------------
// The worker pool

/** What the main thread sends a worker; `data` and `dictionary` are transferred, not copied. */
export interface CompressJob {
  id: number;
  algorithm: Algorithm;
  level: number;
  data: Uint8Array<ArrayBuffer>;
  dictionary?: Uint8Array<ArrayBuffer>;
  last: boolean;
}

/** `input` is the job's block, handed back for the next read to reuse. */
export type CompressReply =
  | { id: number; output: Uint8Array<ArrayBuffer>; input: Uint8Array<ArrayBuffer>; error?: undefined }
  | { id: number; output?: undefined; error: string };

interface PendingJob {
  resolve(output: Uint8Array): void;
  reject(error: Error): void;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, PendingJob>;
}

// In a `bun build --compile` executable the worker is an extra entry point, found by its path from the
// project root (the build script names it); from source it sits next to this file.
const DEFAULT_WORKER_URL: string | URL = import.meta.url.includes("/$bunfs/")
  ? "./src/layers/compress-worker.ts"
  : new URL("./compress-worker.ts", import.meta.url);

/**
 * A fixed set of compression workers shared by every compression in flight. `slots` bounds the blocks
 * held in memory across all of them (two per worker: one compressing, one queued, so a worker never
 * waits for the main thread). Workers are ref'd only while they have work, so an idle pool never keeps
 * the process alive; a worker that dies fails its jobs and is replaced on the next job.
 */
export class CompressPool {
  readonly slots: Semaphore;
  private readonly workers: (PoolWorker | undefined)[];
  /** Input buffers back from the workers. Reusing them keeps memory flat: fresh ones per block pile up
   * as garbage faster than the collector frees them (202 MB peak RSS for zstd's 8 MiB blocks, vs 147 MB). */
  private readonly spare: ArrayBuffer[] = [];
  private nextId = 0;
  private nextTicket = 0;

  constructor(
    readonly size: number,
    private readonly workerUrl: string | URL = DEFAULT_WORKER_URL,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`worker count must be a positive integer, got ${size}`);
    this.workers = new Array<PoolWorker | undefined>(size).fill(undefined);
    this.slots = new Semaphore(size * 2);
  }

  /** Compresses one block on the least busy worker. */
  run(job: Omit<CompressJob, "id">): Promise<Uint8Array> {
    const id = this.nextId++;
    const target = this.pickWorker();
    return new Promise<Uint8Array>((resolve, reject) => {
      target.jobs.set(id, { resolve, reject });
      target.worker.ref();
      const message: CompressJob = { ...job, id };
      const transfer = job.dictionary ? [job.data.buffer, job.dictionary.buffer] : [job.data.buffer];
      target.worker.postMessage(message, transfer);
    });
  }

  /** Order of service for slots: a compression that started earlier is served first. */
  ticket(): number {
    return this.nextTicket++;
  }

  /** A block buffer of `size` bytes, reused when one came back from a worker. */
  buffer(size: number): ArrayBuffer {
    const index = this.spare.findIndex((buffer) => buffer.byteLength === size);
    return index === -1 ? new ArrayBuffer(size) : this.spare.splice(index, 1)[0]!;
  }

  /** Keeps at most one buffer per slot (a spare is taken before a new one is made, so that is enough);
   * the oldest goes first, so the odd size of a layer's last block does not linger. */
  private recycle(buffer: ArrayBuffer): void {
    this.spare.push(buffer);
    if (this.spare.length > this.size * 2) this.spare.shift();
  }

  close(): void {
    this.spare.length = 0;
    for (const [index, entry] of this.workers.entries()) {
      if (!entry) continue;
      this.workers[index] = undefined;
      entry.worker.terminate();
      failAll(entry, new Error("compression workers were closed while compressing"));
    }
  }

  private pickWorker(): PoolWorker {
    let best = 0;
    for (let index = 0; index < this.workers.length; index++) {
      const entry = this.workers[index];
      if (!entry) {
        best = index;
        break;
      }
      if (entry.jobs.size < (this.workers[best]?.jobs.size ?? 0)) best = index;
    }
    return this.workers[best] ?? this.spawn(best);
  }

  private spawn(index: number): PoolWorker {
    const entry: PoolWorker = { worker: new Worker(this.workerUrl), jobs: new Map() };
    entry.worker.unref();
    entry.worker.onmessage = (event: MessageEvent<CompressReply>) => this.settle(entry, event.data);
    const die = (reason: string) => {
      if (this.workers[index] === entry) this.workers[index] = undefined;
      entry.worker.terminate();
      failAll(entry, new Error(`a compression worker crashed: ${reason}`));
    };
    entry.worker.addEventListener("error", (event) => {
      const { error, message } = event as ErrorEvent;
      die(error instanceof Error ? error.message : message || "uncaught error");
    });
    entry.worker.addEventListener("messageerror", () => die("a message could not be read"));
    entry.worker.addEventListener("close", (event) => die(`it exited (code ${(event as CloseEvent).code})`));
    this.workers[index] = entry;
    return entry;
  }

  private settle(entry: PoolWorker, reply: CompressReply): void {
    const job = entry.jobs.get(reply.id);
    if (!job) return;
    entry.jobs.delete(reply.id);
    if (entry.jobs.size === 0) entry.worker.unref();
    if (reply.output) {
      this.recycle(reply.input.buffer);
      job.resolve(reply.output);
    } else job.reject(new Error(`compression failed: ${reply.error}`));
  }
}

function failAll(entry: PoolWorker, error: Error): void {
  const jobs = [...entry.jobs.values()];
  entry.jobs.clear();
  entry.worker.unref();
  for (const job of jobs) job.reject(error);
}

const pools = new Map<number, CompressPool>();

function sharedPool(workers: number): CompressPool {
  let pool = pools.get(workers);
  if (!pool) {
    pool = new CompressPool(workers);
    pools.set(workers, pool);
  }
  return pool;
}

/**
 * A counting semaphore whose waiters are served lowest `priority` first (FIFO among equals);
 * acquire() resolves to the function that gives the slot back.
 */
class Semaphore {
  private readonly waiters: { priority: number; wake: () => void }[] = [];

  constructor(private free: number) {}

  async acquire(priority: number): Promise<() => void> {
    if (this.free > 0) this.free--;
    else {
      await new Promise<void>((wake) => {
        const at = this.waiters.findIndex((waiter) => waiter.priority > priority);
        this.waiters.splice(at === -1 ? this.waiters.length : at, 0, { priority, wake });
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.wake();
      else this.free++;
    };
  }
}
