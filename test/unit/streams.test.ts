/** peek: the start of a stream, however its source cut the chunks, and every byte of it after. */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { sniffCompression } from "../../src/model/media-types.ts";
import { peek, startsLikeJson } from "../../src/streams.ts";

/** `bytes` as a stream of chunks of `size` bytes (the last may be shorter). */
function chunked(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

const gzipped = new Uint8Array(gzipSync(new Uint8Array(4096).fill(7)));
const zstd = new Uint8Array(Bun.zstdCompressSync(new Uint8Array(4096).fill(7)));

describe("peek", () => {
  test("a stream cut into one-byte chunks still shows enough of its start to tell gzip and zstd", async () => {
    for (const [bytes, expected] of [
      [gzipped, "gzip"],
      [zstd, "zstd"],
    ] as const) {
      const { head, whole } = await peek(chunked(bytes, 1));
      expect(head.length).toBeGreaterThanOrEqual(Math.min(512, bytes.length));
      expect(sniffCompression(head)).toBe(expected);
      expect(new Uint8Array(await new Response(whole).arrayBuffer())).toEqual(bytes);
    }
  });

  test("a JSON document cut after its first byte of whitespace is still seen as JSON", async () => {
    const { head } = await peek(chunked(new TextEncoder().encode('  \n{"schemaVersion": 2}'), 1));
    expect(startsLikeJson(head)).toBe(true);
  });

  test("a stream shorter than the start it wants is given whole, and ends", async () => {
    const { head, whole } = await peek(chunked(new Uint8Array([1, 2, 3]), 1));
    expect(head).toEqual(new Uint8Array([1, 2, 3]));
    expect(new Uint8Array(await new Response(whole).arrayBuffer())).toEqual(new Uint8Array([1, 2, 3]));
    const empty = await peek(chunked(new Uint8Array(0), 1));
    expect(empty.head.length).toBe(0);
    expect((await new Response(empty.whole).arrayBuffer()).byteLength).toBe(0);
  });
});
