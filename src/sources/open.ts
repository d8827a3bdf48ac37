/**
 * Picks the source the command line names and reads the image model from it:
 * `--archive` (a tar read in place; a .tar.gz / .tar.zst read as a stream; an OCI layout directory),
 * `--from` (another registry), or the local engine (`docker save` / `podman save`).
 */
import { open, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import { PushError } from "../errors.ts";
import type { BlobCache } from "../layers/cache.ts";
import type { Records } from "../layers/records.ts";
import type { Logger } from "../log.ts";
import type { StreamSink } from "../model/image.ts";
import { sniffCompression } from "../model/media-types.ts";
import type { SourceReference } from "../model/reference.ts";
import type { RegistryClient } from "../registry/client.ts";
import { readArchive, type ArchiveImage } from "./archive-reader.ts";
import { imageFromRecord, inspectImage, removeStaleSaves, reuseSavedArchive, streamSave } from "./daemon.ts";
import { DirStore } from "./dir-store.ts";
import { readRemote } from "./remote.ts";
import { StreamStore } from "./stream-store.ts";
import { TarStore } from "./tar-store.ts";

export type SourceSpec =
  | { kind: "archive"; path: string }
  | { kind: "remote"; reference: SourceReference; client: RegistryClient }
  | { kind: "daemon"; engine: string; reference: string; folder: string };

export interface OpenContext {
  sink: StreamSink;
  cache: BlobCache;
  records: Records;
  /** The cache variant (`gzip-2`) uncompressed layers are looked up under. */
  variant: string;
  /** --image: which image of a multi-image archive. */
  image?: string;
  /** Do not build the image from the cache's record (a repair after a bad cache entry). */
  noRecord?: boolean;
  /** Told where the image comes from as soon as that is known: before a stream's first layer arrives. */
  announce?: (description: string) => void;
  log: Logger;
  signal: AbortSignal;
}

export interface OpenedSource extends ArchiveImage {
  /** For the log: "archive /tmp/app.tar", "docker save of app:1". */
  description: string;
  /** The engine's image id, for the daemon source. */
  id?: string;
  /** `<id>.tar` in the push folder (daemon source). */
  archive?: string;
  /** The image came from the cache's record: no save was run. */
  fromRecord?: boolean;
}

export async function openSource(spec: SourceSpec, ctx: OpenContext): Promise<OpenedSource> {
  if (spec.kind === "archive") return openArchive(spec.path, ctx);
  if (spec.kind === "remote") {
    const image = await readRemote(spec.client, spec.reference);
    const { host, repository, reference } = spec.reference;
    return { ...image, description: `${host}/${repository}${reference.startsWith("sha256:") ? "@" : ":"}${reference}` };
  }
  return openDaemon(spec, ctx);
}

async function openArchive(path: string, ctx: OpenContext): Promise<OpenedSource> {
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    throw new PushError(`cannot open archive ${path}: ${error.code === "ENOENT" ? "no such file or folder" : error.message}`);
  });
  if (info.isDirectory()) {
    return { ...(await readArchive(await DirStore.open(path), ctx.image)), description: `OCI layout ${path}` };
  }
  if (!info.isFile()) throw new PushError(`archive ${path} is not a file`);
  const compression = await headOf(path);
  if (compression === "none") return { ...(await readArchive(await TarStore.open(path), ctx.image)), description: `archive ${path}` };
  // A compressed tar cannot be read in place: it is read once, as a stream, like a running save.
  const file = Readable.toWeb(
    Readable.from(Bun.file(path).stream()).pipe(compression === "gzip" ? createGunzip() : createZstdDecompress()),
  ) as ReadableStream<Uint8Array>;
  const label = `archive ${path}`;
  const description = `${label} (${compression}, read as a stream)`;
  ctx.announce?.(description);
  const store = await StreamStore.read(file, label, ctx.sink).catch((error: Error) => {
    if (/incorrect header|invalid|unexpected end|unknown compression|corrupt/i.test(error.message) && !(error instanceof PushError)) {
      throw new PushError(`${label} is not a valid ${compression} file: ${error.message}`);
    }
    throw error;
  });
  return { ...(await readArchive(store, ctx.image)), description };
}

async function headOf(path: string) {
  const handle = await open(path, "r");
  try {
    const head = new Uint8Array(4);
    await handle.read(head, 0, 4, 0);
    return sniffCompression(head);
  } finally {
    await handle.close();
  }
}

async function openDaemon(spec: Extract<SourceSpec, { kind: "daemon" }>, ctx: OpenContext): Promise<OpenedSource> {
  const options = { engine: spec.engine, reference: spec.reference, folder: spec.folder, log: ctx.log, signal: ctx.signal };
  await removeStaleSaves(spec.folder);
  const inspected = await inspectImage(spec.engine, spec.reference);
  if (!ctx.noRecord) {
    const record = await ctx.records.image(inspected.id);
    if (record && (await everyLayerCached(record.layers, ctx)) && sameLayers(record, inspected.diffIds)) {
      ctx.log.info(`${spec.reference} (image ${inspected.id.slice(7, 19)}): every layer is in ${ctx.cache.dir}, no save needed`);
      // An earlier run's `<id>.tar` is still this image's saved archive: --rm-archive removes it too.
      const saved = join(spec.folder, `${inspected.id.slice(7)}.tar`);
      const archive = (await stat(saved).then(
        (s) => s.isFile(),
        () => false,
      ))
        ? { archive: saved }
        : {};
      return {
        root: imageFromRecord(record),
        names: [spec.reference],
        missing: [],
        description: `cached record of ${spec.reference}`,
        id: inspected.id,
        fromRecord: true,
        ...archive,
      };
    }
  }
  const reused = await reuseSavedArchive(options, inspected);
  if (!reused) ctx.announce?.(`${spec.engine} save of ${spec.reference}`);
  const image = reused ?? (await streamSave(options, inspected, ctx.sink));
  const root = image.root;
  if (root.kind === "image") {
    await ctx.records.saveImage({
      id: inspected.id,
      config: root.config.bytes,
      configDigest: root.config.digest,
      configMediaType: root.config.mediaType,
      layers: root.layers.map((l) =>
        l.compression === "none" || !l.descriptor
          ? { diffId: l.diffId }
          : { diffId: l.diffId, stored: { digest: l.descriptor.digest, size: l.descriptor.size, mediaType: l.descriptor.mediaType } },
      ),
      // Kept when the manifest can be pushed again as it is: every layer stored compressed, as it names it.
      ...(root.raw && root.layers.every((l) => l.compression !== "none" && l.descriptor) ? { manifest: root.raw } : {}),
    });
  }
  return { ...image, description: image.via === "archive" ? `archive ${image.archive}` : `${spec.engine} save of ${spec.reference}` };
}

function sameLayers(record: { layers: { diffId: string }[] }, diffIds: string[]): boolean {
  return diffIds.length === 0 || record.layers.map((l) => l.diffId).join() === diffIds.join();
}

/** Whether the cache can serve every layer without the engine, with this user's seal on each. */
async function everyLayerCached(layers: { diffId: string; stored?: { digest: string; size: number } }[], ctx: OpenContext): Promise<boolean> {
  for (const layer of layers) {
    if (layer.stored) {
      if (!(await ctx.cache.has(layer.stored.digest, layer.stored.size))) return false;
      if ((await ctx.cache.provenDiffId(layer.stored.digest, layer.stored.size)) !== layer.diffId) return false;
    } else {
      const cached = await ctx.cache.lookup(layer.diffId, ctx.variant);
      if (!cached?.sealed) return false;
    }
  }
  return true;
}
