/**
 * Small records kept in the cache folder beside the blobs, so later runs need less work:
 * - `images/<id>.json`: an image's config bytes and layers, so a push of an image whose layers are all
 *   cached needs `docker image inspect` only, not another `docker save`;
 * - `uploads/<key>.json`: an upload session in progress, so a run killed mid-layer resumes it;
 * - `mounts/<registry>.json`: which repositories of a registry hold which blobs, so a push to another
 *   repository mounts them instead of sending the bytes again.
 * Every record is a hint checked before use: config bytes against the image id, sessions against the
 * registry's own answer, mounts by the registry (a failed mount is just a normal upload).
 */
import { createHash } from "node:crypto";
import { lstat, mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { sha256Digest } from "../model/digest.ts";
import { parseConfig, parseManifest, SHA256_DIGEST } from "../model/descriptor.ts";
import type { BlobCache } from "./cache.ts";
import type { Sealer } from "./seal.ts";

export interface ImageRecordLayer {
  diffId: string;
  /** For layers the source stores compressed: the stored blob, kept in the cache under its digest. */
  stored?: { digest: string; size: number; mediaType: string };
}

export interface ImageRecord {
  /** The engine's image id. */
  id: string;
  config: Uint8Array;
  configDigest: string;
  configMediaType: string;
  layers: ImageRecordLayer[];
  /** The source's own manifest bytes (a containerd-store save): pushed again unchanged, so the digest stays. */
  manifest?: Uint8Array;
}

export interface UploadRecord {
  registry: string;
  repository: string;
  /** What is being uploaded: the blob digest, or `<diffId>/<variant>` while compression still runs. */
  key: string;
  location: string;
  /** Every chunk but the last has this size (serverless-registry's equal parts). */
  chunkSize: number;
  /** Bytes the registry confirmed. */
  offset: number;
  /** Other names the same session is recorded under (a streamed layer's entry, its diff_id): dropped with it. */
  also?: string[];
}

const RECORD_LIMIT = 8 * 1024 * 1024;
const MOUNT_REPOS_PER_BLOB = 4;
const MOUNT_BLOBS = 20_000;

export class Records {
  constructor(
    private readonly cache: BlobCache,
    private readonly sealer: Sealer,
  ) {}

  private folder(name: string): string {
    return join(this.cache.dir, name);
  }

  private async write(folder: string, name: string, value: unknown): Promise<void> {
    const dir = this.folder(folder);
    await mkdir(dir, { recursive: true });
    await this.cache.writeAtomic(join(dir, name), JSON.stringify(value));
  }

  private async read(folder: string, name: string): Promise<Record<string, unknown> | undefined> {
    const path = join(this.folder(folder), name);
    const info = await lstat(path).catch(() => undefined);
    if (!info?.isFile() || info.size > RECORD_LIMIT) return undefined;
    try {
      const value: unknown = JSON.parse(await readFile(path, "utf8"));
      return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  // --- images ---------------------------------------------------------------------------------

  async saveImage(record: ImageRecord): Promise<void> {
    await this.write("images", `${hex(record.id)}.json`, {
      id: record.id,
      config: Buffer.from(record.config).toString("base64"),
      configDigest: record.configDigest,
      configMediaType: record.configMediaType,
      layers: record.layers,
      ...(record.manifest ? { manifest: Buffer.from(record.manifest).toString("base64") } : {}),
      seal: this.sealer.mark(...imageSealFields(record.id, record.configDigest, record.layers, record.manifest)),
    }).catch(() => undefined);
  }

  /**
   * The record of image `id`, if its config bytes still hash to the digest it names, and either that
   * digest is the id (Docker's classic store, podman) or this user's seal vouches for the pairing.
   */
  async image(id: string): Promise<ImageRecord | undefined> {
    const value = await this.read("images", `${hex(id)}.json`);
    if (!value || value.id !== id || typeof value.config !== "string" || typeof value.configDigest !== "string") return undefined;
    const config = new Uint8Array(Buffer.from(value.config, "base64"));
    if (sha256Digest(config) !== value.configDigest) return undefined;
    const layers = Array.isArray(value.layers) ? value.layers.filter(isRecordLayer) : [];
    if (!Array.isArray(value.layers) || layers.length !== value.layers.length) return undefined;
    // The layers must be the ones the config describes, whatever vouches for the record.
    if (layers.map((l) => l.diffId).join() !== describedLayers(config)) return undefined;
    if (value.manifest !== undefined && typeof value.manifest !== "string") return undefined;
    const manifest = typeof value.manifest === "string" ? new Uint8Array(Buffer.from(value.manifest, "base64")) : undefined;
    // The image id is the config's digest in Docker's classic store and podman, the manifest's in the
    // containerd store: either proves the record's bytes; otherwise only this user's seal does.
    const proven = manifest ? sha256Digest(manifest) === id : value.configDigest === id;
    const vouched = proven || this.sealer.check(value.seal, ...imageSealFields(id, value.configDigest, layers, manifest));
    if (!vouched) return undefined;
    if (manifest && !describesRecord(manifest, value.configDigest, layers)) return undefined;
    return {
      id,
      config,
      configDigest: value.configDigest,
      configMediaType: typeof value.configMediaType === "string" ? value.configMediaType : "application/vnd.oci.image.config.v1+json",
      layers,
      ...(manifest ? { manifest } : {}),
    };
  }

  // --- upload sessions --------------------------------------------------------------------------

  async saveUpload(record: UploadRecord): Promise<void> {
    await this.write("uploads", uploadName(record), record).catch(() => undefined);
  }

  async upload(registry: string, repository: string, key: string): Promise<UploadRecord | undefined> {
    const value = await this.read("uploads", uploadName({ registry, repository, key }));
    if (!value || value.registry !== registry || value.repository !== repository || value.key !== key) return undefined;
    const { location, chunkSize, offset } = value;
    if (typeof location !== "string" || !isCount(chunkSize) || !isCount(offset)) return undefined;
    const also = Array.isArray(value.also) ? value.also.filter((name): name is string => typeof name === "string").slice(0, 4) : [];
    return { registry, repository, key, location, chunkSize, offset, ...(also.length ? { also } : {}) };
  }

  /** Drops the session record, and its other names. */
  async dropUpload(registry: string, repository: string, key: string): Promise<void> {
    const also = (await this.upload(registry, repository, key))?.also ?? [];
    for (const name of [key, ...also]) {
      await rm(join(this.folder("uploads"), uploadName({ registry, repository, key: name })), { force: true }).catch(() => undefined);
    }
  }

  // --- mounts -----------------------------------------------------------------------------------

  /** Repositories of `registry` known to hold each digest (most recent first). */
  async mountSources(registry: string): Promise<Map<string, string[]>> {
    const value = await this.read("mounts", `${hashName(registry)}.json`);
    const blobs = value?.registry === registry && typeof value.blobs === "object" && value.blobs !== null ? value.blobs : {};
    const map = new Map<string, string[]>();
    for (const [digest, repos] of Object.entries(blobs as Record<string, unknown>)) {
      if (SHA256_DIGEST.test(digest) && Array.isArray(repos))
        map.set(
          digest,
          repos.filter((r): r is string => typeof r === "string"),
        );
    }
    return map;
  }

  /** Remembers that `repository` of `registry` now holds `digests`. Best effort, bounded. */
  async rememberPushed(registry: string, repository: string, digests: string[]): Promise<void> {
    const map = await this.mountSources(registry);
    for (const digest of digests) {
      const repos = [repository, ...(map.get(digest) ?? []).filter((r) => r !== repository)].slice(0, MOUNT_REPOS_PER_BLOB);
      map.delete(digest);
      map.set(digest, repos);
    }
    const kept = [...map].slice(-MOUNT_BLOBS);
    await this.write("mounts", `${hashName(registry)}.json`, { registry, blobs: Object.fromEntries(kept) }).catch(() => undefined);
  }
}

function isRecordLayer(value: unknown): value is ImageRecordLayer {
  if (typeof value !== "object" || value === null) return false;
  const layer = value as Record<string, unknown>;
  if (typeof layer.diffId !== "string" || !SHA256_DIGEST.test(layer.diffId)) return false;
  if (layer.stored === undefined) return true;
  const stored = layer.stored as Record<string, unknown> | null;
  return !!stored && typeof stored.digest === "string" && SHA256_DIGEST.test(stored.digest) && isCount(stored.size) && typeof stored.mediaType === "string";
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function hex(digest: string): string {
  return SHA256_DIGEST.test(digest) ? digest.slice(7) : hashName(digest);
}

function hashName(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 40);
}

function uploadName(record: { registry: string; repository: string; key: string }): string {
  return `${hashName(`${record.registry}\n${record.repository}\n${record.key}`)}.json`;
}

/** The config's diff_ids joined, or undefined when it is not a config. */
function describedLayers(config: Uint8Array): string | undefined {
  try {
    return parseConfig(config, "the recorded config").rootfs.diff_ids.join();
  } catch {
    return undefined;
  }
}

/** What an image record's seal covers; a record without manifest bytes keeps the fields it always had. */
function imageSealFields(id: string, configDigest: string, layers: ImageRecordLayer[], manifest: Uint8Array | undefined): string[] {
  const fields = ["image", id, configDigest, JSON.stringify(layers)];
  return manifest ? [...fields, sha256Digest(manifest)] : fields;
}

/** Whether manifest bytes name exactly the record's config and stored layers, in order. */
function describesRecord(bytes: Uint8Array, configDigest: string, layers: ImageRecordLayer[]): boolean {
  try {
    const manifest = parseManifest(bytes, "the recorded manifest");
    return (
      manifest.config.digest === configDigest &&
      manifest.layers.length === layers.length &&
      manifest.layers.every((d, i) => d.digest === layers[i]?.stored?.digest && d.size === layers[i]?.stored?.size)
    );
  } catch {
    return false;
  }
}
