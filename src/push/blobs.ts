import pLimit from "p-limit";
import type { ArchiveImage, ArchiveLayer } from "../sources/archive.ts";
import { pushBlob, type UploadOutcome } from "../registry/blob-upload.ts";
import type { BlobCache } from "../layers/cache.ts";
import { shortDigest } from "../model/digest.ts";
import { prepareLayer, type BlobSource, type LayerCompression } from "./prepare-layer.ts";
import type { Logger } from "../log.ts";
import type { Descriptor } from "../model/manifest.ts";
import type { Progress } from "../cli/progress.ts";
import type { RegistryClient } from "../registry/client.ts";

export interface PushBlobsOptions {
  client: RegistryClient;
  repository: string;
  cache: BlobCache;
  concurrency: number;
  compression: LayerCompression;
  chunkCap?: number;
  log: Logger;
  progress: Progress;
  /** Compress and HEAD only: report what would be uploaded. */
  dryRun: boolean;
  /** Aborted on the first failure so the other layers stop too; the caller passes it to the client. */
  abort: AbortController;
}

/** What happened to one blob, for the summary and --json. */
export interface BlobResult extends Descriptor {
  label: string;
  status: "pushed" | "skipped" | "would push";
  /** Chunks it went in (1: one request); for a dry run, with --chunk-size only. */
  chunks: number;
  origin: BlobSource["origin"];
}

export interface PushedBlobs {
  config: Descriptor;
  layers: Descriptor[];
  /** The config first, then each distinct layer blob in order. */
  results: BlobResult[];
}

/**
 * Prepares and uploads the config and every layer, several layers at once. A layer that appears
 * twice is compressed and uploaded once. The first failure stops the rest and is the one reported,
 * so no manifest is ever sent for an incomplete image.
 */
export async function pushImageBlobs(image: ArchiveImage, options: PushBlobsOptions): Promise<PushedBlobs> {
  const { log, abort, progress } = options;
  const limit = pLimit(options.concurrency);
  const prepared = new Map<string, Promise<BlobSource>>();
  const uploaded = new Map<string, Promise<BlobResult>>();
  const firstSeen = new Map<string, string>();
  const total = image.layers.length;

  const upload = (blob: BlobSource, id: string) =>
    once(uploaded, blob.digest, async (): Promise<BlobResult> => {
      progress.update(id, { phase: "checking", digest: blob.digest });
      const outcome = await pushBlob(options.client, options.repository, blob, {
        chunkCap: options.chunkCap,
        label: `${id} ${shortDigest(blob.digest)}`,
        log,
        dryRun: options.dryRun,
        onStart: (plan) =>
          progress.update(id, {
            phase: "uploading",
            done: 0,
            total: blob.size,
            note: plan.kind === "chunked" ? `in ${plan.chunks.length} chunks` : undefined,
          }),
        onProgress: (done, chunk) => progress.update(id, { done, chunk }),
      });
      const result = toResult(id, blob, outcome);
      if (result.status === "would push") {
        const how = result.chunks > 1 ? `in ${result.chunks} chunks of at most ${options.chunkCap} bytes` : "in one request unless the registry advertises a smaller chunk size";
        log.info(`${id} ${shortDigest(blob.digest)}: would push ${blob.size} bytes ${how}`);
        progress.update(id, { phase: "waiting", note: "would push" });
      } else {
        const pushed = result.status === "pushed";
        progress.update(id, { phase: pushed ? "pushed" : "exists", total: blob.size, done: blob.size, note: pushed ? ORIGIN[blob.origin] : undefined });
      }
      return result;
    });

  const pushLayer = (layer: ArchiveLayer, i: number) =>
    limit(async (): Promise<Descriptor> => {
      abort.signal.throwIfAborted();
      const id = `layer ${i + 1}/${total}`;
      const first = firstSeen.get(layer.diffId);
      if (first === undefined) firstSeen.set(layer.diffId, id);
      else progress.update(id, { phase: "waiting", note: `same layer as ${first}` });
      const blob = await once(prepared, layer.diffId, () =>
        prepareLayer(layer, {
          archive: image.archive,
          cache: options.cache,
          compression: options.compression,
          label: id,
          signal: abort.signal,
          onCompressing: () => progress.update(id, { phase: "compressing", done: 0, total: layer.entry.size }),
          onCompressProgress: (done) => progress.update(id, { done }),
        }),
      );
      const result = await upload(blob, first ?? id);
      if (first !== undefined) progress.update(id, { phase: result.status === "pushed" ? "pushed" : "exists", digest: blob.digest, note: `same layer as ${first}` });
      return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
    });

  const config: BlobSource = {
    ...image.config,
    size: image.config.bytes.byteLength,
    body: () => new Blob([image.config.bytes]),
    origin: "config",
  };
  const tasks = [...image.layers.map(pushLayer), limit(() => upload(config, "config"))];
  const results = await Promise.allSettled(
    tasks.map((task) =>
      task.catch((error: unknown) => {
        abort.abort(error);
        throw error;
      }),
    ),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw abort.signal.reason ?? failed.reason;
  const layers = results.slice(0, total).map((r) => (r as PromiseFulfilledResult<Descriptor>).value);
  return {
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers,
    // The config first, then each distinct layer in image order, whatever order they finished in.
    results: await Promise.all([...new Set([config.digest, ...layers.map((l) => l.digest)])].map((digest) => uploaded.get(digest) as Promise<BlobResult>)),
  };
}

function once<T>(memo: Map<string, Promise<T>>, key: string, work: () => Promise<T>): Promise<T> {
  let promise = memo.get(key);
  if (!promise) {
    promise = work();
    memo.set(key, promise);
  }
  return promise;
}

function toResult(label: string, blob: BlobSource, outcome: UploadOutcome): BlobResult {
  const status = outcome.status === "exists" ? "skipped" : outcome.status === "pushed" ? "pushed" : "would push";
  return { label, mediaType: blob.mediaType, digest: blob.digest, size: blob.size, status, chunks: outcome.chunks, origin: blob.origin };
}

// Where the bytes came from, as the progress line's note; "compressed now" it works out itself.
const ORIGIN: Record<BlobSource["origin"], string | undefined> = {
  compressed: undefined,
  cache: "from .cache",
  archive: "as saved",
  config: undefined,
};
