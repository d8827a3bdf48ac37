import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import type { Compression } from "../model/media-types.ts";

/** What a layer's stored bytes really are. */
export interface LayerFacts {
  /** sha256 of the stored (compressed) bytes. */
  digest: string;
  size: number;
  /** sha256 of the bytes once decompressed: what the config's diff_id must be. */
  diffId: string;
}

/** The stored bytes are not what they claim; the message says which claim failed. */
export class VerificationError extends Error {
  override readonly name = "VerificationError";
}

/**
 * Reads a stored layer once, hashing the bytes as stored and as decompressed. Memory stays at a few
 * stream buffers however large the layer; broken gzip or zstd is reported as such.
 */
export async function inspectLayer(stored: ReadableStream<Uint8Array>, compression: Compression, signal?: AbortSignal): Promise<LayerFacts> {
  const storedHash = createHash("sha256");
  const contentHash = createHash("sha256");
  let size = 0;
  const counted = Readable.fromWeb(stored as import("node:stream/web").ReadableStream<Uint8Array>, { signal });
  const tap = async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      storedHash.update(chunk);
      size += chunk.length;
      yield chunk;
    }
  };
  if (compression === "none") {
    for await (const chunk of tap(counted)) contentHash.update(chunk);
  } else {
    // Larger output chunks than the 16 KiB default: measured 1.6x faster for gzip, 2.2x for zstd.
    const decompress = compression === "gzip" ? createGunzip({ chunkSize: 256 * 1024 }) : createZstdDecompress({ chunkSize: 1024 * 1024 });
    const input = Readable.from(tap(counted));
    // A failure to read the bytes (a download cut) is not a lie of the source: it goes up as it is.
    let readFailure: unknown;
    input.on("error", (error) => {
      readFailure = error;
      decompress.destroy(error);
    });
    input.pipe(decompress);
    try {
      for await (const chunk of decompress) contentHash.update(chunk as Buffer);
    } catch (error) {
      signal?.throwIfAborted();
      if (readFailure !== undefined) throw readFailure;
      throw new VerificationError(`its bytes are not valid ${compression} (${(error as Error).message})`);
    }
  }
  return { digest: `sha256:${storedHash.digest("hex")}`, size, diffId: `sha256:${contentHash.digest("hex")}` };
}

/** Checks facts against the claims; throws naming both digests of the first claim that fails. */
export function checkFacts(facts: LayerFacts, claims: { digest?: string; size?: number; diffId: string }): void {
  if (claims.digest && facts.digest !== claims.digest) {
    throw new VerificationError(`its bytes hash to ${facts.digest}, but the manifest names ${claims.digest}`);
  }
  if (claims.size !== undefined && facts.size !== claims.size) {
    throw new VerificationError(`it holds ${facts.size} bytes, but the manifest says ${claims.size}`);
  }
  if (facts.diffId !== claims.diffId) {
    throw new VerificationError(`its content hashes to ${facts.diffId}, but the image config's diff_id is ${claims.diffId}`);
  }
}
