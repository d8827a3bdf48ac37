import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32, gunzipSync, inflateRawSync, zstdDecompressSync } from "node:zlib";
import {
  type Algorithm,
  closeCompressWorkers,
  type CompressJob,
  CompressPool,
  compressRange,
  compressStream,
  DEFAULT_BLOCK_SIZE,
} from "../../src/layers/parallel-compress.ts";
import { digestOf as sha256 } from "../support/fixtures.ts";

let dir: string;
let fileCount = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "parallel-compress-test-"));
});
afterAll(async () => {
  closeCompressWorkers();
  await rm(dir, { recursive: true, force: true });
});

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
function randomBytes(size: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = seed || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const WORDS = "layer manifest digest registry chunk upload config blob gzip zstd tar the of and to in".split(" ");

/** Text-like, compressible bytes. */
function textBytes(size: number, seed: number): Uint8Array<ArrayBuffer> {
  const noise = randomBytes(size, seed);
  const out = new Uint8Array(size);
  let pos = 0;
  for (let i = 0; pos < size; i++) {
    const word = `${WORDS[noise[i % size]! % WORDS.length]}${noise[(i + 1) % size]! % 7 === 0 ? "\n" : " "}`;
    for (let j = 0; j < word.length && pos < size; j++) out[pos++] = word.charCodeAt(j);
  }
  return out;
}

/** Alternating 64 KiB runs of random and text bytes: some blocks compress, some do not. */
function mixedBytes(size: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  const run = 64 * 1024;
  for (let pos = 0, i = 0; pos < size; pos += run, i++) {
    const length = Math.min(run, size - pos);
    out.set(i % 2 === 0 ? randomBytes(length, seed + i) : textBytes(length, seed + i), pos);
  }
  return out;
}

/** A 10 KiB random segment repeated: every block boundary falls inside a match on the block before. */
function repeatedBytes(size: number, seed: number): Uint8Array<ArrayBuffer> {
  const segment = randomBytes(10 * 1024 + 7, seed);
  const out = new Uint8Array(size);
  for (let pos = 0; pos < size; pos += segment.length) out.set(segment.subarray(0, Math.min(segment.length, size - pos)), pos);
  return out;
}

async function writeInput(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `input-${++fileCount}`);
  await writeFile(path, bytes);
  return path;
}

function decompress(algorithm: Algorithm, bytes: Uint8Array): Uint8Array {
  return algorithm === "gzip" ? gunzipSync(bytes) : zstdDecompressSync(bytes);
}

/** The standard CLI must accept the stream too (`gzip -t`, `zstd -t`). */
async function cliTest(algorithm: Algorithm, path: string): Promise<void> {
  const child = Bun.spawn([algorithm, "-t", path], { stdout: "ignore", stderr: "pipe" });
  const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);
  expect({ code, stderr }).toEqual({ code: 0, stderr: expect.any(String) });
}

/** Compresses `input` (placed at `offset` in a file with other bytes around it) and checks everything. */
async function roundTrip(algorithm: Algorithm, input: Uint8Array, options: { blockSize?: number; offset?: number } = {}) {
  const offset = options.offset ?? 0;
  const file = new Uint8Array(offset + input.length + (offset > 0 ? 4096 : 0));
  file.set(randomBytes(file.length, 99));
  file.set(input, offset);
  const source = await writeInput(file);
  const dest = `${source}.${algorithm}`;
  const level = algorithm === "gzip" ? 6 : 3;
  const result = await compressRange(source, { offset, size: input.length }, dest, { algorithm, level, blockSize: options.blockSize });

  const written = await Bun.file(dest).bytes();
  expect(result).toEqual({ inputDigest: sha256(input), digest: sha256(written), size: written.length });
  expect(Buffer.from(decompress(algorithm, written)).equals(Buffer.from(input))).toBe(true);
  if (algorithm === "gzip") expectOneGzipMember(written, input);
  await cliTest(algorithm, dest);
  return written;
}

/** One member: the standard header, ONE deflate stream over all the input, then its CRC32 and length. */
function expectOneGzipMember(gzip: Uint8Array, input: Uint8Array): void {
  expect([...gzip.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]);
  const deflated = gzip.subarray(10, gzip.length - 8);
  expect(Buffer.from(inflateRawSync(deflated)).equals(Buffer.from(input))).toBe(true);
  const trailer = new DataView(gzip.buffer, gzip.byteOffset + gzip.length - 8, 8);
  expect(trailer.getUint32(0, true)).toBe(crc32(input));
  expect(trailer.getUint32(4, true)).toBe(input.length);
}

for (const algorithm of ["gzip", "zstd"] as const) {
  const block = DEFAULT_BLOCK_SIZE[algorithm];

  describe(`${algorithm}: output decompresses to exactly the input`, () => {
    for (const [name, size] of [
      ["empty", 0],
      ["1 byte", 1],
      ["block - 1", block - 1],
      ["block", block],
      ["block + 1", block + 1],
    ] as const) {
      test(`${name} (${size} bytes, default ${block}-byte blocks)`, async () => {
        await roundTrip(algorithm, mixedBytes(size, size + 1));
      });
    }

    // Small blocks so "many" stays fast: 5 MiB in 40 blocks.
    test("many blocks of mixed random and text data", async () => {
      await roundTrip(algorithm, mixedBytes(5 * 1024 * 1024 + 12345, 7), { blockSize: 128 * 1024 });
    });

    test("repeats that cross every block boundary", async () => {
      await roundTrip(algorithm, repeatedBytes(3 * 1024 * 1024, 11), { blockSize: 64 * 1024 });
    });

    test("a range in the middle of a larger file compresses just that range", async () => {
      await roundTrip(algorithm, mixedBytes(700 * 1024 + 3, 13), { offset: 123457, blockSize: 64 * 1024 });
    });
  });
}

describe("gzip blocks are primed with the previous block's last 32 KiB", () => {
  test("repeats across boundaries cost as little as in one stream", async () => {
    const input = repeatedBytes(4 * 1024 * 1024, 5);
    const written = await roundTrip("gzip", input, { blockSize: 64 * 1024 });
    // Unprimed blocks would each pay for the 10 KiB segment again (64 blocks: +640 KiB); primed, the
    // output is as small as single-stream gzip's.
    const singleStream = Bun.gzipSync(input, { level: 6 }).length;
    expect(written.length).toBeLessThan(singleStream * 1.05);
  });
});

describe("several compressions share the pool", () => {
  test("concurrent calls each get their own, correct output", async () => {
    const inputs = [mixedBytes(900 * 1024, 21), textBytes(600 * 1024, 22), repeatedBytes(800 * 1024, 23)];
    await Promise.all(inputs.map((input, i) => roundTrip(i === 1 ? "zstd" : "gzip", input, { blockSize: 64 * 1024 })));
  });
});

/**
 * The real pool, except that each block's result is held until the test lets it go, so the order in
 * which blocks get slots and finish is the test's to choose rather than the machine's. Blocks are
 * tagged by their first input byte (each test's inputs are made of one repeated byte per compression).
 */
class HeldPool extends CompressPool {
  /** Tags of the blocks handed to the pool, in order. */
  readonly started: string[] = [];
  /** Blocks compressed (or compressing) whose results the test has not let go yet, oldest first. */
  readonly held: { tag: string; finish: () => void }[] = [];
  /** Slots given back so far. */
  slotsReleased = 0;
  private readonly watchers = new Set<() => void>();

  constructor(workers: number) {
    super(workers);
    const acquire = this.slots.acquire.bind(this.slots);
    // The semaphore queues a waiter, and wakes one on a release, synchronously: watched right there.
    this.slots.acquire = async (priority: number) => {
      const granted = acquire(priority);
      this.changed();
      const release = await granted;
      return () => {
        release();
        this.slotsReleased++;
        this.changed();
      };
    };
  }

  /** Compressions queued for a slot now (the semaphore's own queue). */
  get waiting(): number {
    return (this.slots as unknown as { waiters: unknown[] }).waiters.length;
  }

  override run(job: Omit<CompressJob, "id">): Promise<Uint8Array> {
    const tag = String.fromCharCode(job.data[0] ?? 0);
    const output = super.run(job);
    this.started.push(tag);
    if (this.draining) return output;
    return new Promise((resolve, reject) => {
      this.held.push({ tag, finish: () => output.then(resolve, reject) });
      this.changed();
    });
  }

  private draining = false;

  /** Lets every block finish from now on, then ends the workers: a failed test leaves nothing waiting. */
  override close(): void {
    this.draining = true;
    while (this.held.length > 0) this.finish();
    super.close();
  }

  /** Lets the held block at `index` (default the oldest) finish. */
  finish(index = 0): void {
    const [block] = this.held.splice(index, 1);
    block?.finish();
  }

  /** Resolves once `condition` holds, checked whenever the pool's state changes. */
  until(condition: () => boolean, what: string, timeoutMs = 4_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!condition()) return;
        this.watchers.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        reject(new Error(`timed out waiting for ${what}: started ${this.started.join("")}, held ${this.held.length}, waiting ${this.waiting}`));
      }, timeoutMs);
      this.watchers.add(check);
      check();
    });
  }

  private changed(): void {
    for (const watcher of [...this.watchers]) watcher();
  }
}

/** `count` blocks of `blockSize` bytes, every byte `tag`. */
function taggedInput(tag: string, count: number, blockSize: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(count * blockSize).fill(tag.charCodeAt(0));
}

describe("an earlier compression is served first", () => {
  test("so layers finish one after another instead of all at the end", async () => {
    const BLOCK = 64 * 1024;
    const pool = new HeldPool(1); // two slots
    try {
      const a = taggedInput("a", 5, BLOCK);
      const b = taggedInput("b", 4, BLOCK);
      const [first, second] = [await writeInput(a), await writeInput(b)];
      const options = { algorithm: "gzip", level: 1, blockSize: BLOCK, pool } as const;
      const earlier = compressRange(first, { offset: 0, size: a.length }, `${first}.gz`, options);
      // The earlier compression holds both slots and waits for a third when the later one starts.
      await pool.until(() => pool.held.length === 2 && pool.waiting === 1, "the first compression to fill the pool");
      const later = compressRange(second, { offset: 0, size: b.length }, `${second}.gz`, options);
      const blocksLeft = () => [5 - pool.started.filter((t) => t === "a").length, 4 - pool.started.filter((t) => t === "b").length].filter((n) => n > 0).length;
      // One block finishes at a time, once every compression with blocks left is waiting for a slot:
      // who gets each freed slot is then up to the pool's order of service alone.
      while (pool.started.length < 9 || pool.held.length > 0) {
        await pool.until(() => pool.held.length > 0 && pool.waiting === blocksLeft(), "every compression to wait for a slot");
        const released = pool.slotsReleased;
        pool.finish();
        await pool.until(() => pool.slotsReleased > released, "the finished block's slot");
      }
      const [one, two] = await Promise.all([earlier, later]);
      expect(pool.started.join("")).toBe("aaaaabbbb");
      expect(one.inputDigest).toBe(sha256(a));
      expect(two.inputDigest).toBe(sha256(b));
      expect(Buffer.from(gunzipSync(await Bun.file(`${second}.gz`).bytes())).equals(Buffer.from(b))).toBe(true);
    } finally {
      pool.close();
    }
  });
});

describe("blocks that finish out of order", () => {
  for (const algorithm of ["gzip", "zstd"] as const) {
    test(`${algorithm}: are written in input order, and progress is reported in order`, async () => {
      const BLOCK = 64 * 1024;
      const pool = new HeldPool(4); // eight slots: all six blocks are compressed at once
      try {
        const input = mixedBytes(6 * BLOCK, 41);
        const source = await writeInput(input);
        const dest = `${source}.${algorithm}`;
        const progress: number[] = [];
        const done = compressRange(source, { offset: 0, size: input.length }, dest, {
          algorithm,
          level: 1,
          blockSize: BLOCK,
          pool,
          onProgress: (n) => progress.push(n),
        });
        await pool.until(() => pool.held.length === 6, "all six blocks to be compressing");
        // The last block finishes first, the first last.
        for (let i = 5; i >= 0; i--) pool.finish(i);
        const result = await done;
        const written = await Bun.file(dest).bytes();
        expect(result).toEqual({ inputDigest: sha256(input), digest: sha256(written), size: written.length });
        expect(Buffer.from(decompress(algorithm, written)).equals(Buffer.from(input))).toBe(true);
        if (algorithm === "gzip") expectOneGzipMember(written, input);
        expect(progress).toEqual([1, 2, 3, 4, 5, 6].map((n) => n * BLOCK));
      } finally {
        pool.close();
      }
    });
  }
});

describe("errors reject with a clear message and leave no file open", () => {
  test("unreadable source", async () => {
    const promise = compressRange(join(dir, "missing"), { offset: 0, size: 10 }, join(dir, "out-missing"), { algorithm: "gzip", level: 6 });
    await expect(promise).rejects.toThrow(/cannot read .*missing/);
  });

  test("unwritable dest", async () => {
    const source = await writeInput(textBytes(1000, 3));
    const promise = compressRange(source, { offset: 0, size: 1000 }, join(dir, "no-such-dir", "out"), { algorithm: "zstd", level: 3 });
    await expect(promise).rejects.toThrow(/cannot write .*no-such-dir/);
  });

  test("a range past the end of the file", async () => {
    const source = await writeInput(textBytes(200 * 1024, 4));
    const dest = `${source}.gz`;
    const promise = compressRange(source, { offset: 1000, size: 300 * 1024 }, dest, { algorithm: "gzip", level: 1, blockSize: 64 * 1024 });
    await expect(promise).rejects.toThrow(/file ends at byte 204800/);
    expect(await openFiles()).not.toContain(dest);
  });

  test("an abort stops the compression with the signal's reason", async () => {
    const source = await writeInput(mixedBytes(2 * 1024 * 1024, 5));
    const dest = `${source}.gz`;
    const abort = new AbortController();
    const promise = compressRange(source, { offset: 0, size: 2 * 1024 * 1024 }, dest, {
      algorithm: "gzip",
      level: 6,
      blockSize: 64 * 1024,
      signal: abort.signal,
    });
    abort.abort(new Error("interrupted"));
    await expect(promise).rejects.toThrow("interrupted");
    expect(await openFiles()).not.toContain(dest);
  });

  test("an abort after the first block: no further block is read, and the compression rejects with the reason", async () => {
    const BLOCK = 64 * 1024;
    const pool = new HeldPool(1); // two slots
    try {
      const source = await writeInput(taggedInput("x", 6, BLOCK));
      const dest = `${source}.gz`;
      const abort = new AbortController();
      const progress: number[] = [];
      const promise = compressRange(source, { offset: 0, size: 6 * BLOCK }, dest, {
        algorithm: "gzip",
        level: 1,
        blockSize: BLOCK,
        pool,
        signal: abort.signal,
        onProgress: (n) => {
          progress.push(n);
          abort.abort(new Error("interrupted"));
        },
      });
      promise.catch(() => undefined);
      await pool.until(() => pool.held.length === 2 && pool.waiting === 1, "two blocks compressing, the third waiting");
      pool.finish(); // the first block is written, and the run is aborted then
      await pool.until(() => progress.length > 0, "the first block's output");
      pool.finish(); // the block already on a worker is written (pending writes settle); nothing new starts
      // Bun's expect(...).rejects waits for the promise whatever happens: a compression that reads on
      // would hang the test, so the outcome is raced against the next block being handed to the pool.
      const readOn = pool.until(() => pool.started.length > 2, "a block read after the abort").then(() => `a block was read after the abort`);
      readOn.catch(() => undefined);
      const outcome = await Promise.race([
        promise.then(
          () => "it completed",
          (error: Error) => error.message,
        ),
        readOn,
      ]);
      expect(outcome).toBe("interrupted");
      expect(progress).toEqual([BLOCK, 2 * BLOCK]);
      expect(pool.started).toHaveLength(2);
      expect(await openFiles()).not.toContain(dest);
      expect(await openFiles()).not.toContain(source);
    } finally {
      pool.close();
    }
  });

  test("a write failure mid-stream (ENOSPC from /dev/full) rejects naming the file, and stops reading the stream", async () => {
    const BLOCK = 64 * 1024;
    const total = 64 * BLOCK;
    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= total) return controller.close();
        pulled += BLOCK;
        controller.enqueue(textBytes(BLOCK, pulled));
      },
    });
    const pool = new CompressPool(1);
    try {
      const promise = compressStream(stream, total, "/dev/full", { algorithm: "gzip", level: 1, blockSize: BLOCK, pool });
      await expect(promise).rejects.toThrow(/^cannot write \/dev\/full: ENOSPC/);
      expect(pulled).toBeLessThan(total);
      // The stream was let go of: its owner can still cancel it.
      await stream.cancel();
      expect(await openFiles()).not.toContain("/dev/full");
    } finally {
      pool.close();
    }
  });

  test("a bad level", async () => {
    const source = await writeInput(textBytes(10, 4));
    await expect(compressRange(source, { offset: 0, size: 10 }, `${source}.gz`, { algorithm: "gzip", level: 10 })).rejects.toThrow(
      /gzip level must be an integer from 0 to 9, got 10/,
    );
  });

  test("a worker that crashes fails the compression, and the pool replaces it", async () => {
    // The real worker, made to crash on its first job only (a marker file, since a new worker starts afresh).
    const marker = join(dir, "crash-once");
    const crashing = join(dir, "crashing-worker.ts");
    await writeFile(marker, "");
    await writeFile(
      crashing,
      `import { existsSync, rmSync } from "node:fs";
      import ${JSON.stringify(join(import.meta.dir, "../../src/layers/compress-worker.ts"))};
      const real = self.onmessage;
      self.onmessage = (event) => {
        if (existsSync(${JSON.stringify(marker)})) { rmSync(${JSON.stringify(marker)}); throw new Error("boom"); }
        real.call(self, event);
      };\n`,
    );
    const pool = new CompressPool(2, new URL(`file://${crashing}`));
    const input = mixedBytes(512 * 1024, 8);
    const source = await writeInput(input);
    const dest = `${source}.gz`;
    const options = { algorithm: "gzip", level: 6, blockSize: 64 * 1024, pool } as const;
    const range = { offset: 0, size: input.length };
    await expect(compressRange(source, range, dest, options)).rejects.toThrow(/compression worker crashed/);
    expect(await openFiles()).not.toContain(dest);
    const result = await compressRange(source, range, dest, options);
    expect(result.inputDigest).toBe(sha256(input));
    expect(Buffer.from(gunzipSync(await Bun.file(dest).bytes())).equals(Buffer.from(input))).toBe(true);
    pool.close();
  });
});

test("an idle pool does not keep the process alive", async () => {
  const source = await writeInput(textBytes(300 * 1024, 9));
  const script = `import { compressRange } from ${JSON.stringify(join(import.meta.dir, "../../src/layers/parallel-compress.ts"))};
    const r = await compressRange(${JSON.stringify(source)}, { offset: 0, size: ${300 * 1024} }, ${JSON.stringify(`${source}.gz`)}, { algorithm: "gzip", level: 6, blockSize: 65536 });
    console.log(r.size);`;
  const started = performance.now();
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const timer = setTimeout(() => child.kill(), 4000);
  const [code, stdout] = await Promise.all([child.exited, new Response(child.stdout).text()]);
  clearTimeout(timer);
  expect(code).toBe(0);
  expect(Number(stdout.trim())).toBeGreaterThan(0);
  expect(performance.now() - started).toBeLessThan(4000);
});

/** Paths this process holds open. */
async function openFiles(): Promise<string[]> {
  const fds = await readdir("/proc/self/fd");
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return targets;
}

test("progress reports input bytes as their output is written, in order, ending at the size", async () => {
  const input = mixedBytes(5 * 64 * 1024 + 123, 7);
  const source = await writeInput(input);
  for (const algorithm of ["gzip", "zstd"] as const) {
    const seen: number[] = [];
    await compressRange(source, { offset: 0, size: input.length }, join(dir, `progress-${algorithm}`), {
      algorithm,
      level: 1,
      blockSize: 64 * 1024,
      onProgress: (done) => seen.push(done),
    });
    expect(seen).toEqual([1, 2, 3, 4, 5].map((n) => n * 64 * 1024).concat(input.length));
  }
});
