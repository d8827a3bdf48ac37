/**
 * Worker thread of the parallel compressor (src/parallel-compress.ts): compresses one block per message
 * and posts the bytes back, transferring buffers both ways so no block is copied between threads.
 */
import { constants, deflateRawSync } from "node:zlib";
import type { CompressJob, CompressReply } from "./parallel-compress.ts";

declare var self: Worker;

self.onmessage = (event: MessageEvent<CompressJob>) => {
  const job = event.data;
  try {
    const output = compressBlock(job);
    // A sync zlib result usually owns its ArrayBuffer; copy only if it is a view into a larger one.
    const owned: Uint8Array<ArrayBuffer> =
      output.buffer instanceof ArrayBuffer && output.byteOffset === 0 && output.byteLength === output.buffer.byteLength
        ? new Uint8Array(output.buffer)
        : output.slice();
    const reply: CompressReply = { id: job.id, output: owned, input: job.data };
    self.postMessage(reply, [owned.buffer, job.data.buffer]);
  } catch (error) {
    const reply: CompressReply = { id: job.id, error: (error as Error)?.message ?? String(error) };
    self.postMessage(reply);
  }
};

function compressBlock(job: CompressJob): Uint8Array {
  if (job.algorithm === "zstd") return Bun.zstdCompressSync(job.data, { level: job.level });
  // pigz-style: raw deflate primed with the previous block's tail; every block but the last ends with a
  // sync flush (byte-aligned, not final) so the blocks concatenate into one deflate stream.
  return deflateRawSync(job.data, {
    level: job.level,
    ...(job.dictionary ? { dictionary: job.dictionary } : {}),
    finishFlush: job.last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
  });
}
