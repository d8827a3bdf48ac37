import type { ArchiveLayer } from "../sources/archive.ts";
import type { BlobCache } from "../layers/cache.ts";
import { hashRange } from "../layers/hash-range.ts";
import { PushError } from "../errors.ts";
import { OCI_LAYER_GZIP, OCI_LAYER_ZSTD } from "../model/manifest.ts";
import { compressRange, type Algorithm } from "../layers/parallel-compress.ts";

/** How uncompressed layers are compressed; part of the cache key, so switching never reuses the wrong blob. */
export interface LayerCompression {
  algorithm: Algorithm;
  level: number;
}

const MEDIA_TYPE: Record<Algorithm, string> = { gzip: OCI_LAYER_GZIP, zstd: OCI_LAYER_ZSTD };

/** A blob ready to upload: its descriptor and a way to read its bytes (a file or a slice of one). */
export interface BlobSource {
  mediaType: string;
  digest: string;
  size: number;
  body(): Blob;
  /** How the bytes were obtained, for the log. */
  origin: "compressed" | "cache" | "archive" | "config";
}

export interface PrepareOptions {
  archive: string;
  cache: BlobCache;
  compression: LayerCompression;
  /** Position in the image, for messages. */
  label: string;
  /** Called when compression really starts (not for cache hits or already-compressed layers). */
  onCompressing?: () => void;
  /** Input bytes compressed so far. */
  onCompressProgress?: (done: number) => void;
  /** Stops compressing at once (Ctrl-C, or another blob failed); the temporary file is removed. */
  signal?: AbortSignal;
}

/**
 * Turns an archive layer into a pushable blob: already-compressed layers (containerd store saves,
 * OCI layouts) go as they are; uncompressed ones are compressed (gzip or zstd, on every core) into the
 * cache once and reused after.
 */
export async function prepareLayer(layer: ArchiveLayer, options: PrepareOptions): Promise<BlobSource> {
  const { archive, cache, compression } = options;
  const range = { offset: layer.entry.offset, size: layer.entry.size };
  if (layer.compression !== "none") {
    const digest = await hashRange(archive, range, options.signal);
    return {
      mediaType: layer.compression === "gzip" ? OCI_LAYER_GZIP : OCI_LAYER_ZSTD,
      digest,
      size: range.size,
      body: () => Bun.file(archive).slice(range.offset, range.offset + range.size),
      origin: "archive",
    };
  }
  const variant = `${compression.algorithm}-${compression.level}`;
  const mediaType = MEDIA_TYPE[compression.algorithm];
  const cached = await cache.lookup(layer.diffId, variant, options.signal);
  if (cached) return fileSource(cached, mediaType, "cache");

  options.onCompressing?.();
  const temp = cache.tempPath();
  try {
    const result = await compressRange(archive, range, temp, { ...compression, signal: options.signal, onProgress: options.onCompressProgress });
    if (result.inputDigest !== layer.diffId) {
      throw new PushError(
        `${options.label} of archive ${archive} is corrupt: its content hashes to ${result.inputDigest}, ` +
          `but the image config says ${layer.diffId}`,
      );
    }
    return fileSource(await cache.commit(temp, result, layer.diffId, variant), mediaType, "compressed");
  } catch (error) {
    await cache.discard(temp);
    options.signal?.throwIfAborted();
    if (error instanceof PushError) throw error;
    throw new PushError(`cannot compress ${options.label} into ${cache.dir}: ${(error as Error).message}`);
  }
}

function fileSource(blob: { digest: string; size: number; path: string }, mediaType: string, origin: BlobSource["origin"]): BlobSource {
  return { mediaType, digest: blob.digest, size: blob.size, body: () => Bun.file(blob.path), origin };
}
