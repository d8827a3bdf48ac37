import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";

/** sha256 of a byte range of a file, streamed: the digest of a layer pushed as saved. */
export async function hashRange(source: string, { offset, size }: { offset: number; size: number }, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  // createReadStream's `end` is inclusive, so an empty range needs its own stream.
  const stream = size === 0 ? Readable.from([]) : createReadStream(source, { start: offset, end: offset + size - 1, highWaterMark: 1 << 20, signal });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return `sha256:${hash.digest("hex")}`;
}
