/**
 * Turns a layer of the image model into the bytes to upload, whatever the source: a stored compressed
 * blob goes as it is; an uncompressed one is compressed once (gzip or zstd, on every core) into the
 * cache and reused after. Every result comes with the proof it needs before a manifest may name it:
 * its bytes hash to its digest and decompress to the config's diff_id. That proof is computed while the
 * bytes are produced (compression hashes its input), read beside the upload (stored and unsealed cached
 * blobs), or taken from this user's seal on the cache (see src/layers/seal.ts).
 */
import { createHash } from "node:crypto";
import { open, writeFile } from "node:fs/promises";
import { PushError } from "../errors.ts";
import { BlobFile, type BlobIdentity } from "../layers/blob-file.ts";
import type { BlobCache } from "../layers/cache.ts";
import { compressRange, compressStream, type Algorithm } from "../layers/parallel-compress.ts";
import { checkFacts, inspectLayer, VerificationError } from "../layers/verify.ts";
import type { BlobBytes, Layer } from "../model/image.ts";
import { sha256Digest } from "../model/digest.ts";
import { sniffCompression, type Compression } from "../model/media-types.ts";

export interface LayerCompression {
  algorithm: Algorithm;
  level: number;
}

/** A blob ready to upload, and how to prove it is what the manifest will say. */
export interface Prepared {
  /** The bytes (possibly still being written by a compressor or a download). */
  file: BlobFile;
  /** How the uploaded bytes are compressed. */
  compression: Compression;
  /** The source's own bytes: a manifest that names only such blobs can be pushed unchanged. */
  asStored: boolean;
  /** The digest the bytes must have, when known before they are complete. */
  expected?: string;
  origin: "compressed" | "cache" | "stored" | "downloaded";
  /**
   * Names the upload for a later run that resumes it; none for a stream entry whose layer is not known
   * yet (every such entry would share one name, and resume another's session).
   */
  key?: string;
  /**
   * Resolves with the blob's identity once it is proven to be the layer (diff_id) and its digest;
   * rejects with a VerificationError (a lying source) or a RepairableError (a bad cache entry).
   */
  verify(): Promise<BlobIdentity>;
}

/**
 * A cached blob turned out wrong: the cache entry was removed and the layer must be prepared again.
 * A PushError, so it keeps its type (and its plain message) on the way up to index.ts, which repairs
 * an image built from the cache's record by saving it again.
 */
export class RepairableError extends PushError {
  override readonly name = "RepairableError";
}

export interface PrepareContext {
  cache: BlobCache;
  compression: LayerCompression;
  signal: AbortSignal;
  /** Names the layer in messages: "layer 2/5", "linux/arm64 layer 1/3". */
  label: string;
  /** Compression really started; `total` input bytes. */
  onCompressing?(total: number): void;
  onCompressProgress?(done: number): void;
  /** Skip the cache (a repair after a bad entry). */
  fresh?: boolean;
}

/** The cache variant of a compression setting: part of every pointer's name. */
export function variantOf(compression: LayerCompression): string {
  return `${compression.algorithm}-${compression.level}`;
}

export async function prepareLayer(layer: Layer, ctx: PrepareContext): Promise<Prepared> {
  if (layer.compression === "none") return prepareUncompressed(layer, ctx);
  return prepareStored(layer, ctx);
}

// --- uncompressed layers: compressed here ---------------------------------------------------------

async function prepareUncompressed(layer: Layer, ctx: PrepareContext): Promise<Prepared> {
  const { cache, compression } = ctx;
  const variant = variantOf(compression);
  const key = `${layer.diffId}/${variant}`;
  if (!ctx.fresh) {
    const cached = await cache.lookup(layer.diffId, variant);
    if (cached) {
      await cache.touch(cached.path);
      const file = await BlobFile.complete(cached.path, 0, cached.size, cached.digest);
      const identity = { digest: cached.digest, size: cached.size };
      const verify = cached.sealed
        ? () => Promise.resolve(identity)
        : once(async () => {
            try {
              const facts = await inspectLayer(file.stream(0, cached.size, { signal: ctx.signal }), compression.algorithm, ctx.signal);
              checkFacts(facts, { digest: cached.digest, size: cached.size, diffId: layer.diffId });
            } catch (error) {
              ctx.signal.throwIfAborted();
              await cache.forget(layer.diffId, variant);
              await cache.discardBlob(cached.digest);
              throw new RepairableError(
                `${ctx.label}: the cached blob ${cached.digest} is not this layer (${(error as Error).message}); it was removed from ${cache.dir}`,
              );
            }
            await cache.point(layer.diffId, variant, identity).catch(() => undefined);
            return identity;
          });
      return { file, compression: compression.algorithm, asStored: false, expected: cached.digest, origin: "cache", key, verify };
    }
  }
  if (layer.bytes.kind === "unavailable") {
    throw new RepairableError(`${ctx.label}: not in the cache, and ${layer.bytes.reason}`);
  }
  return compressLayer(layer.diffId, layer.bytes, ctx);
}

/**
 * Starts compressing into a fresh cache file and returns at once: uploads follow the file as it grows.
 * `diffId` is what the input must hash to; a stream entry whose layer is not known yet passes undefined,
 * and `content` tells what it hashed to.
 */
export async function compressLayer(
  diffId: string | undefined,
  bytes: BlobBytes,
  ctx: PrepareContext,
  stream?: ReadableStream<Uint8Array>,
): Promise<Prepared & { content: Promise<string> }> {
  const { cache, compression } = ctx;
  const variant = variantOf(compression);
  const temp = cache.tempPath();
  await writeFile(temp, new Uint8Array(0));
  const file = await BlobFile.growing(temp);
  const size = bytes.kind === "file" ? bytes.size : bytes.kind === "remote" ? bytes.size : undefined;
  const options = { ...compression, signal: ctx.signal, onProgress: ctx.onCompressProgress, onOutput: (n: number) => file.grew(n) };
  ctx.onCompressing?.(size ?? 0);
  let work: Promise<{ inputDigest: string; digest: string; size: number }>;
  if (stream) work = compressStream(stream, streamSize(bytes), temp, options);
  else if (bytes.kind === "file") work = compressRange(bytes.path, { offset: bytes.offset, size: bytes.size }, temp, options);
  else if (bytes.kind === "taken" && bytes.taken.small) {
    const small = bytes.taken.small;
    work = compressStream(new Blob([small]).stream(), small.length, temp, options);
  } else if (bytes.kind === "remote") {
    work = compressStream(await bytes.open(ctx.signal), bytes.size, temp, options);
  } else throw new PushError(`${ctx.label}: its bytes cannot be read for compression`);

  const done = work.then(
    async (result) => {
      if (diffId !== undefined && result.inputDigest !== diffId) {
        // Not this layer: its compressed bytes must not stay in the cache (the handler below only sees
        // failures of the compression itself).
        await cache.discard(temp);
        throw new VerificationError(`its content hashes to ${result.inputDigest}, but the image config's diff_id is ${diffId}`);
      }
      const identity = { digest: result.digest, size: result.size };
      file.moved(await cache.commit(temp, identity, result.inputDigest, variant));
      file.finish(identity);
      return { identity, content: result.inputDigest };
    },
    async (error: unknown) => {
      await cache.discard(temp);
      ctx.signal.throwIfAborted();
      if (error instanceof VerificationError || error instanceof PushError) throw error;
      throw new PushError(`cannot compress ${ctx.label} into ${cache.dir}: ${(error as Error).message}`);
    },
  );
  done.catch((error: Error) => file.fail(error));
  const identity = done.then((d) => d.identity);
  const content = done.then((d) => d.content);
  // Awaited later by the upload and the proof; never an unhandled rejection meanwhile.
  identity.catch(() => undefined);
  content.catch(() => undefined);
  return {
    file,
    compression: compression.algorithm,
    asStored: false,
    origin: "compressed",
    ...(diffId !== undefined ? { key: `${diffId}/${variant}` } : {}),
    verify: () => identity,
    content,
  };
}

function streamSize(bytes: BlobBytes): number {
  if (bytes.kind === "file" || bytes.kind === "remote") return bytes.size;
  throw new PushError("a stream of unknown size cannot be compressed");
}

// --- stored compressed layers: pushed as they are --------------------------------------------------

async function prepareStored(layer: Layer, ctx: PrepareContext): Promise<Prepared> {
  const { cache } = ctx;
  const claimed = layer.descriptor?.digest;
  const size = layer.descriptor?.size;
  const bytes = layer.bytes;
  let file: BlobFile;
  let complete: number | undefined;
  let origin: Prepared["origin"] = "stored";
  const cachedPath = claimed && size !== undefined ? await cache.has(claimed, size) : undefined;
  if (bytes.kind === "file") {
    file = await BlobFile.complete(bytes.path, bytes.offset, bytes.size);
    complete = bytes.size;
  } else if (cachedPath && size !== undefined && sniffCompression(await head(cachedPath)) === layer.compression) {
    // The bytes, not a record's media type, say how a cached blob is compressed.
    await cache.touch(cachedPath);
    file = await BlobFile.complete(cachedPath, 0, size);
    complete = size;
    origin = "cache";
  } else if (bytes.kind === "remote") {
    file = await download(bytes, claimed, cache, ctx.signal);
    origin = "downloaded";
  } else if (bytes.kind === "taken" && bytes.taken.small) {
    // Kept under its digest like any stored blob (a temporary name would be left behind).
    const small = bytes.taken.small;
    const identity = { digest: sha256Digest(small), size: small.length };
    const temp = cache.tempPath();
    await writeFile(temp, small);
    file = await BlobFile.complete(await cache.adopt(temp, identity), 0, small.length);
    complete = small.length;
  } else if (bytes.kind === "unavailable") {
    throw new RepairableError(`${ctx.label}: its blob ${claimed ?? ""} is not in the cache, and ${bytes.reason}`);
  } else {
    throw new PushError(`${ctx.label}: its stored bytes cannot be read`);
  }
  return storedPrepared(layer, file, origin, cache, ctx, complete);
}

/** The proof for stored bytes: read once beside the upload, unless this user already proved it. */
export function storedPrepared(layer: Layer, file: BlobFile, origin: Prepared["origin"], cache: BlobCache, ctx: PrepareContext, complete?: number): Prepared {
  const claimed = layer.descriptor?.digest;
  const size = layer.descriptor?.size;
  const verify = once(async (): Promise<BlobIdentity> => {
    if (claimed && size !== undefined && (await cache.provenDiffId(claimed, size)) === layer.diffId) {
      return { digest: claimed, size };
    }
    let facts;
    try {
      // Up to the known length of a complete file: bytes with no digest to go by (gzip under a
      // docker-archive's layer.tar) get their identity only from this proof, so "until the file is
      // final" would never end.
      facts = await inspectLayer(file.stream(0, complete, { signal: ctx.signal }), layer.compression, ctx.signal);
      checkFacts(facts, { digest: claimed, size, diffId: layer.diffId });
    } catch (error) {
      ctx.signal.throwIfAborted();
      if (origin === "cache" && claimed) {
        await cache.discardBlob(claimed);
        throw new RepairableError(`${ctx.label}: the cached blob ${claimed} is not this layer (${(error as Error).message}); it was removed from ${cache.dir}`);
      }
      throw error;
    }
    file.finish({ digest: facts.digest, size: facts.size });
    await cache.prove(facts.digest, facts.size, facts.diffId);
    return { digest: facts.digest, size: facts.size };
  });
  // Stored bytes with no digest to go by (gzip bytes under a docker-archive's layer.tar) get theirs from the proof.
  if (!claimed) verify().catch(() => undefined);
  else if (file.identity === undefined && file.available === size) file.finish({ digest: claimed, size });
  return { file, compression: layer.compression, asStored: true, expected: claimed, origin, key: claimed ?? layer.diffId, verify };
}

/** Copies a remote blob into the cache as it arrives; uploads and the proof follow the file. */
export async function download(
  bytes: Extract<BlobBytes, { kind: "remote" }>,
  expected: string | undefined,
  cache: BlobCache,
  signal: AbortSignal,
): Promise<BlobFile> {
  const temp = cache.tempPath();
  await writeFile(temp, new Uint8Array(0));
  const file = await BlobFile.growing(temp);
  const work = (async () => {
    const out = await open(temp, "w");
    const hash = createHash("sha256");
    let size = 0;
    try {
      for await (const chunk of await bytes.open(signal)) {
        if (size + chunk.length > bytes.size) throw new PushError(`the source registry sent more than the ${bytes.size} bytes of blob ${expected}`);
        let written = 0;
        while (written < chunk.length) written += (await out.write(chunk, written)).bytesWritten;
        hash.update(chunk);
        size += chunk.length;
        file.grew(size);
      }
    } finally {
      await out.close();
    }
    const digest = `sha256:${hash.digest("hex")}`;
    if (size !== bytes.size || (expected && digest !== expected)) {
      throw new PushError(`the source registry sent ${size} bytes hashing to ${digest} for blob ${expected} of ${bytes.size} bytes`);
    }
    file.moved(await cache.adopt(temp, { digest, size }));
    file.finish({ digest, size });
  })();
  work.catch(async (error: Error) => {
    file.fail(error);
    await cache.discard(temp);
  });
  return file;
}

async function head(path: string): Promise<Uint8Array> {
  return new Uint8Array(await Bun.file(path).slice(0, 4).arrayBuffer());
}

function once<T>(work: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => (result ??= work());
}
