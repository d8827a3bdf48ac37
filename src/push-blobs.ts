import pLimit from "p-limit";
import type { ArchiveImage, ArchiveLayer } from "./archive.ts";
import { pushBlob, type UploadOutcome } from "./blob-upload.ts";
import type { BlobCache } from "./cache.ts";
import { shortDigest } from "./digest.ts";
import { prepareLayer, type BlobSource } from "./layers.ts";
import type { Logger } from "./log.ts";
import type { Descriptor } from "./manifest.ts";
import type { RegistryClient } from "./registry.ts";

export interface PushBlobsOptions {
  client: RegistryClient;
  repository: string;
  cache: BlobCache;
  concurrency: number;
  gzipLevel: number;
  chunkCap?: number;
  log: Logger;
  /** Aborted on the first failure so the other layers stop too; the caller passes it to the client. */
  abort: AbortController;
}

export interface PushedBlobs {
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * Prepares and uploads the config and every layer, several layers at once. A layer that appears
 * twice is compressed and uploaded once. The first failure stops the rest and is the one reported,
 * so no manifest is ever sent for an incomplete image.
 */
export async function pushImageBlobs(image: ArchiveImage, options: PushBlobsOptions): Promise<PushedBlobs> {
  const { log, abort } = options;
  const limit = pLimit(options.concurrency);
  const prepared = new Map<string, Promise<BlobSource>>();
  const uploaded = new Map<string, Promise<UploadOutcome>>();
  const firstSeen = new Map<string, string>();
  const total = image.layers.length;

  const upload = (blob: BlobSource, label: string) =>
    once(uploaded, blob.digest, async () => {
      const outcome = await pushBlob(options.client, options.repository, blob, {
        chunkCap: options.chunkCap,
        label,
        log,
      });
      log.info(`${label}: ${describe(outcome, blob)}`);
      return outcome;
    });

  const pushLayer = (layer: ArchiveLayer, i: number) =>
    limit(async (): Promise<Descriptor> => {
      abort.signal.throwIfAborted();
      const label = `layer ${i + 1}/${total}`;
      const first = firstSeen.get(layer.diffId);
      if (first === undefined) firstSeen.set(layer.diffId, label);
      const blob = await once(prepared, layer.diffId, () =>
        prepareLayer(layer, {
          archive: image.archive,
          cache: options.cache,
          gzipLevel: options.gzipLevel,
          label,
          signal: abort.signal,
        }),
      );
      await upload(blob, `${label} ${shortDigest(blob.digest)}`);
      if (first !== undefined) log.info(`${label} ${shortDigest(blob.digest)}: same layer as ${first}`);
      return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
    });

  const config: BlobSource = {
    ...image.config,
    size: image.config.bytes.byteLength,
    body: () => new Blob([image.config.bytes]),
    origin: "config",
  };
  const tasks = [
    ...image.layers.map(pushLayer),
    limit(() => upload(config, `config ${shortDigest(config.digest)}`)),
  ];
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
  return { config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers };
}

function once<T>(memo: Map<string, Promise<T>>, key: string, work: () => Promise<T>): Promise<T> {
  let promise = memo.get(key);
  if (!promise) {
    promise = work();
    memo.set(key, promise);
  }
  return promise;
}

function describe(outcome: UploadOutcome, blob: BlobSource): string {
  if (outcome.status === "exists") return "already present";
  const how = outcome.requests > 1 ? `in ${outcome.requests} chunks` : "in one request";
  const from = { compressed: "compressed now", cache: "from .cache", archive: "as saved", config: "config" }[blob.origin];
  return `pushed ${blob.size} bytes ${how} (${from})`;
}
