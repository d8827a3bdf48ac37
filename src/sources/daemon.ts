/**
 * Images in a local engine (Docker, or podman): `docker image inspect` names the image id and its
 * layers; when the cache already holds every layer and a record of the image, that is all the engine
 * is asked. Otherwise `docker save` (or `podman save --format oci-archive`, which keeps zstd and
 * multi-platform images) is read as a stream while it runs: each layer is compressed and uploaded as it
 * arrives, and a copy lands in the push folder as `<image id>.tar`.
 */
import { createWriteStream } from "node:fs";
import { link, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { PushError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ImageNode, Layer, StreamSink } from "../model/image.ts";
import { parseConfig, parseManifest } from "../model/descriptor.ts";
import { readArchive, type ArchiveImage } from "./archive-reader.ts";
import { ArchiveError } from "./store.ts";
import { StreamStore } from "./stream-store.ts";
import { TarStore } from "./tar-store.ts";
import { isAlive } from "../pids.ts";

export interface Inspected {
  /** `sha256:<hex>`: the config digest (classic store, podman) or the manifest/index digest (containerd store). */
  id: string;
  /** RootFS layers: the diff_ids, in order. */
  diffIds: string[];
}

export interface DaemonOptions {
  /** `docker`, `podman`, or a path to either. */
  engine: string;
  /** The local image name, e.g. `registry.example.com/team/app:1.2`. */
  reference: string;
  /** Where `<image id>.tar` is written (the push folder). */
  folder: string;
  log: Logger;
  signal?: AbortSignal;
}

/** What the engine gave: an image read from a save, and the archive it wrote (if any). */
export interface DaemonImage extends ArchiveImage {
  id: string;
  /** `<id>.tar` in the push folder, when one was written or reused. */
  archive?: string;
  /** How the image was obtained, for the log. */
  via: "record" | "archive" | "save";
}

const OUTPUT_LIMIT = 16 * 1024 * 1024;

export function isPodman(engine: string): boolean {
  return /podman/.test(basename(engine));
}

/** `docker image inspect`: the id and the diff_ids, or a message saying how to give the image. */
export async function inspectImage(engine: string, reference: string): Promise<Inspected> {
  const name = basename(engine);
  // One call for both: the id, then the diff_ids as JSON (an engine that prints only the id still works).
  const result = await run(engine, ["image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", reference]);
  if (result.code !== 0) {
    throw new PushError(
      `${name} cannot find image ${reference}: ${firstLine(result.stderr) || `exit code ${result.code}`}\n` +
        `Tag the image first (${name} tag <image> ${reference}), or push an archive with --archive <file.tar>, or copy from a registry with --from`,
    );
  }
  const line = firstLine(result.stdout);
  const space = line.indexOf(" ");
  const rawId = space === -1 ? line : line.slice(0, space);
  const id = rawId.startsWith("sha256:") ? rawId : `sha256:${rawId}`;
  if (!/^sha256:[a-f0-9]{64}$/.test(id)) throw new PushError(`${name} image inspect returned an unexpected id "${rawId.slice(0, 80)}"`);
  let layers: unknown;
  try {
    layers = space === -1 ? [] : JSON.parse(line.slice(space + 1));
  } catch {
    layers = [];
  }
  const diffIds = Array.isArray(layers) ? layers.filter((l): l is string => typeof l === "string" && /^sha256:[a-f0-9]{64}$/.test(l)) : [];
  return { id, diffIds };
}

/** Removes `docker save` temporary files that runs killed before they finished left in the push folder. */
export async function removeStaleSaves(folder: string): Promise<void> {
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    const pid = Number(/^\.[a-f0-9]{64}\.tar\.tmp-(\d+)$/.exec(name)?.[1]);
    if (pid && pid !== process.pid && !isAlive(pid)) await rm(join(folder, name), { force: true, recursive: true }).catch(() => undefined);
  }
}

/**
 * `<id>.tar` in the push folder, if there is one and it really holds image `id` (its config, or for
 * containerd-store saves its manifest or index, has that digest). A file that does not is set aside
 * as `<id>.tar.not-this-image`.
 */
export async function reuseSavedArchive(options: DaemonOptions, inspected: Inspected): Promise<DaemonImage | undefined> {
  const archive = join(options.folder, `${inspected.id.slice(7)}.tar`);
  const aside = `${archive}.not-this-image`;
  if (
    !(await stat(archive).then(
      (s) => s.isFile(),
      () => false,
    ))
  )
    return undefined;
  try {
    const image = await readArchive(await TarStore.open(archive), undefined);
    if (holds(image, inspected)) {
      options.log.info(`Reusing ${archive} (image ${inspected.id.slice(7, 19)})`);
      return { ...image, id: inspected.id, archive, via: "archive" };
    }
    options.log.warn(`${archive} does not hold image ${inspected.id.slice(7, 19)}: moved it to ${basename(aside)}, saving the image again`);
  } catch (error) {
    if (!(error instanceof ArchiveError) && !(error instanceof PushError)) throw error;
    options.log.warn(`${archive} cannot be read (${error.message}): moved it to ${basename(aside)}, saving the image again`);
  }
  // Set aside, not deleted: it is someone's file, maybe the only copy of another image, maybe evidence
  // of tampering. One per image id, so repeated runs do not pile them up.
  await rename(archive, aside);
  return undefined;
}

/** Whether an archive's image is the engine's image `id` with the layers the engine lists. */
function holds(image: ArchiveImage, inspected: Inspected): boolean {
  const root = image.root;
  if (root.kind === "image") {
    const sameLayers = inspected.diffIds.length === 0 || root.layers.map((l) => l.diffId).join() === inspected.diffIds.join();
    const rawDigest = root.raw ? new Bun.CryptoHasher("sha256").update(root.raw).digest("hex") : undefined;
    return sameLayers && (root.config.digest === inspected.id || `sha256:${rawDigest}` === inspected.id);
  }
  if (root.kind === "index") return `sha256:${new Bun.CryptoHasher("sha256").update(root.raw).digest("hex")}` === inspected.id;
  return false;
}

/**
 * Runs the engine's save and reads its output while it runs, handing layers to `sink`; a copy of the
 * stream is written to `<id>.tar` in the push folder under a temporary name, linked into place once
 * the save succeeded.
 */
export async function streamSave(options: DaemonOptions, inspected: Inspected, sink: StreamSink): Promise<DaemonImage> {
  const { engine, reference, folder, log, signal } = options;
  const name = basename(engine);
  const hex = inspected.id.slice(7);
  const archive = join(folder, `${hex}.tar`);
  const temp = join(folder, `.${hex}.tar.tmp-${process.pid}`);
  const args = isPodman(engine) ? ["save", "--format", "oci-archive", "--uncompressed", reference] : ["save", reference];
  log.info(`Saving ${reference} (image ${hex.slice(0, 12)}) with ${name} ${args.slice(0, -1).join(" ")}, reading it as it comes`);
  let child;
  try {
    child = Bun.spawn([engine, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", signal });
  } catch {
    throw engineMissing(engine);
  }
  const stderr = boundedText(child.stderr);
  const copy = createWriteStream(temp, { flags: "wx" });
  const copyFailed = new Promise<never>((_, reject) => copy.on("error", (error) => reject(new PushError(`cannot write ${temp}: ${error.message}`))));
  copyFailed.catch(() => undefined);
  // Every chunk goes to the copy before the reader sees it, so the copy never falls behind unboundedly.
  const teed = child.stdout.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      async transform(chunk, controller) {
        if (!copy.write(chunk)) await Promise.race([new Promise((resolve) => copy.once("drain", resolve)), copyFailed]);
        controller.enqueue(chunk);
      },
    }),
  );
  const label = `${name} save of ${reference}`;
  let store: StreamStore;
  try {
    store = await StreamStore.read(teed, label, sink);
    const code = await child.exited;
    if (code !== 0) throw new PushError(`${name} save ${reference} failed: ${(await stderr) || `exit code ${code}`}`);
    await new Promise<void>((resolve, reject) => copy.end((error?: Error | null) => (error ? reject(error) : resolve())));
    await link(temp, archive).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
    });
  } catch (error) {
    copy.destroy();
    signal?.throwIfAborted();
    // A save that failed midway makes the stream look truncated (and compression of the layer in
    // flight fail): when the engine ended on its own with an error, its own words say why.
    const exited = await Promise.race([child.exited, new Promise<undefined>((resolve) => setTimeout(resolve, 2000).unref())]);
    child.kill();
    const said = await stderr;
    if (exited !== undefined && exited !== 0) {
      throw new PushError(`${name} save ${reference} failed: ${said || `exit code ${exited}`}${isPodman(engine) ? "" : zstdHint(said)}`);
    }
    throw error;
  } finally {
    await rm(temp, { force: true }).catch(() => undefined);
  }
  const image = await readArchive(store, undefined);
  if (!holds(image, inspected)) {
    throw new PushError(`${name} save ${reference} produced an image that is not ${inspected.id} (was the tag moved while saving?)`);
  }
  return { ...image, id: inspected.id, archive, via: "save" };
}

/** The image from the cache's record, when every layer is cached: no save needed. */
export function imageFromRecord(record: {
  config: Uint8Array;
  configDigest: string;
  configMediaType: string;
  layers: { diffId: string; stored?: { digest: string; size: number; mediaType: string } }[];
  manifest?: Uint8Array;
}): ImageNode {
  const config = parseConfig(record.config, "the recorded config");
  // The source's own manifest (the records check it names these very blobs) keeps its bytes and its
  // layers' annotations, so the push gives the digest the engine shows.
  const manifest = record.manifest ? parseManifest(record.manifest, "the recorded manifest") : undefined;
  const layers: Layer[] = record.layers.map((layer, i) => ({
    diffId: layer.diffId,
    compression: layer.stored ? (layer.stored.mediaType.endsWith("zstd") ? "zstd" : "gzip") : "none",
    ...(layer.stored ? { descriptor: manifest?.layers[i] ?? { mediaType: layer.stored.mediaType, digest: layer.stored.digest, size: layer.stored.size } } : {}),
    bytes: { kind: "unavailable", reason: "the image was not saved this run (its layers are in the cache)" },
  }));
  const node: ImageNode = {
    kind: "image",
    ...(record.manifest && manifest ? { raw: record.manifest, manifest } : {}),
    config: { bytes: record.config, digest: record.configDigest, mediaType: record.configMediaType },
    layers,
  };
  if (config.os && config.architecture)
    node.platform = { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) };
  return node;
}

function zstdHint(stderr: string): string {
  return /zstd|compression/i.test(stderr) ? " (an image pulled as zstd can be saved with --engine podman, which uses the oci-archive format)" : "";
}

function engineMissing(engine: string): PushError {
  return new PushError(
    `the ${engine} command was not found: install it, choose another with --engine docker|podman (or DOCKER_BIN), or push an archive with --archive <file.tar>`,
  );
}

async function run(engine: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let child;
  try {
    child = Bun.spawn([engine, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch {
    throw engineMissing(engine);
  }
  const [stdout, stderr, code] = await Promise.all([boundedText(child.stdout, OUTPUT_LIMIT), boundedText(child.stderr), child.exited]);
  return { code, stdout, stderr };
}

/** An engine's output as text, read up to `limit` bytes (the rest is drained, not kept). */
async function boundedText(stream: ReadableStream<Uint8Array>, limit = 64 * 1024): Promise<string> {
  const parts: Uint8Array[] = [];
  let kept = 0;
  for await (const chunk of stream) {
    if (kept >= limit) continue;
    const piece = chunk.subarray(0, limit - kept);
    parts.push(piece);
    kept += piece.length;
  }
  return Buffer.concat(parts).toString("utf8").trim();
}

function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .find((l) => l.trim())
      ?.trim() ?? ""
  );
}
