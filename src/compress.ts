import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";

export interface CompressResult {
  /** sha256 of the bytes read, to check against the layer's diff_id. */
  inputDigest: string;
  /** sha256 and length of the compressed bytes written. */
  digest: string;
  size: number;
}

/**
 * Gzips a byte range of a file into `dest`, hashing the input and the output in the same pass so
 * the layer is read once and never held in memory.
 */
export async function gzipRange(
  source: string,
  range: { offset: number; size: number },
  dest: string,
  level: number,
  signal?: AbortSignal,
): Promise<CompressResult> {
  const input = createHash("sha256");
  const output = createHash("sha256");
  let size = 0;
  await pipeline(
    readRange(source, range),
    tap(input),
    createGzip({ level }),
    tap(output, (n) => (size += n)),
    createWriteStream(dest),
    { signal },
  );
  return { inputDigest: `sha256:${input.digest("hex")}`, digest: `sha256:${output.digest("hex")}`, size };
}

/** sha256 of a byte range of a file, streamed. */
export async function hashRange(source: string, range: { offset: number; size: number }, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(readRange(source, range), tap(hash), new Transform({ transform: (_c, _e, done) => done() }), { signal });
  return `sha256:${hash.digest("hex")}`;
}

function readRange(path: string, { offset, size }: { offset: number; size: number }): Readable {
  // createReadStream's `end` is inclusive, so an empty range needs its own stream.
  if (size === 0) return Readable.from([]);
  return createReadStream(path, { start: offset, end: offset + size - 1, highWaterMark: 1 << 20 });
}

function tap(hash: Hash, count?: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      count?.(chunk.length);
      done(null, chunk);
    },
  });
}
