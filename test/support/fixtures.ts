/**
 * Test images and image archives.
 *
 * - buildTestImage(): a real podman-built image (big partly-compressible layer, small layers, and one
 *   layer whose diff_id appears twice in rootfs.diff_ids) for end-to-end pushes.
 * - write*Archive(): deterministic hand-built tars in each `docker save` layout from REGISTRY-NOTES.md,
 *   so the archive reader is tested against formats we cannot produce here (no Docker engine).
 * - writeEvilArchive()/writeCorruptArchive(): hostile and broken inputs the CLI must reject safely.
 *
 * Everything here is deterministic: same inputs, same bytes, same digests.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Header, Pax } from "tar";
import type { PodmanStore } from "./podman.ts";

// ---------------------------------------------------------------------------------------------------
// Small helpers

/** Fixed timestamp for every entry and config, so archives are byte-for-byte reproducible. */
export const FIXTURE_MTIME = new Date("2024-01-02T03:04:05Z");

const encoder = new TextEncoder();

/** UTF-8 bytes of a string (never use `.length` of a string as a byte count). */
export function utf8(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text);
}

/** Lower-case hex sha256 of some bytes. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** `sha256:<hex>` digest of some bytes. */
export function digestOf(data: Uint8Array | string): string {
  return `sha256:${sha256Hex(data)}`;
}

/** Hex part of a `sha256:<hex>` digest. */
export function hexOf(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice("sha256:".length) : "";
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`not a sha256 digest: ${digest}`);
  return hex;
}

/**
 * Deterministic bytes that compress only partly: 64 KiB blocks alternating between xorshift32 noise
 * (incompressible) and repeated text lines (very compressible). Fast: about 24 MB in tens of ms.
 */
export function deterministicBytes(size: number, seed = 0x9e3779b9): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  const block = 64 * 1024;
  let state = seed >>> 0 || 1;
  /** One xorshift32 step; returns the new state. */
  const next = (): number => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
  const textBlock = new Uint8Array(block);
  {
    let line = 0;
    let off = 0;
    while (off < block) {
      const bytes = utf8(`chunked-push fixture line ${String(line++).padStart(6, "0")}: the quick brown fox\n`);
      const n = Math.min(bytes.length, block - off);
      textBlock.set(bytes.subarray(0, n), off);
      off += n;
    }
  }
  for (let start = 0, index = 0; start < size; start += block, index++) {
    const end = Math.min(size, start + block);
    if (index % 2 === 1) {
      out.set(textBlock.subarray(0, end - start), start);
      continue;
    }
    // Fill whole 32-bit words where aligned, then the tail byte by byte.
    let i = start;
    for (; i + 4 <= end; i += 4) {
      const word = next();
      out[i] = word & 0xff;
      out[i + 1] = (word >>> 8) & 0xff;
      out[i + 2] = (word >>> 16) & 0xff;
      out[i + 3] = word >>> 24;
    }
    for (; i < end; i++) out[i] = next() & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Tar writing (ustar headers via the `tar` package's Header, PAX only when a name needs it)

export type TarEntryType = "File" | "Directory" | "SymbolicLink" | "Link";

export interface TarEntry {
  /** Entry name exactly as written (no normalisation: evil archives need `../x` and `/x`). */
  path: string;
  type?: TarEntryType;
  data?: Uint8Array | string;
  linkpath?: string;
  mode?: number;
  mtime?: Date;
}

function encodeHeader(entry: TarEntry, size: number): Uint8Array {
  const type = entry.type ?? "File";
  const mode = entry.mode ?? (type === "Directory" ? 0o755 : type === "SymbolicLink" ? 0o777 : 0o644);
  const header = new Header({
    path: entry.path,
    type,
    size,
    mode,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    mtime: entry.mtime ?? FIXTURE_MTIME,
    linkpath: entry.linkpath ?? "",
  });
  const block = Buffer.alloc(512);
  const needPax = header.encode(block, 0);
  if (!needPax) return block;
  const pax = new Pax({ path: entry.path, linkpath: entry.linkpath, size, mtime: entry.mtime ?? FIXTURE_MTIME });
  return Buffer.concat([pax.encode(), block]);
}

/**
 * Serialises entries into one uncompressed tar, in the given order, with the two zero end blocks.
 * Deterministic: fixed mtime, uid/gid 0, no user names.
 */
export function makeTar(entries: TarEntry[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  for (const entry of entries) {
    const data = entry.data === undefined ? new Uint8Array(0) : typeof entry.data === "string" ? utf8(entry.data) : entry.data;
    const type = entry.type ?? "File";
    const size = type === "File" ? data.length : 0;
    parts.push(encodeHeader(entry, size));
    if (size > 0) {
      parts.push(data);
      const pad = (512 - (size % 512)) % 512;
      if (pad > 0) parts.push(new Uint8Array(pad));
    }
  }
  parts.push(new Uint8Array(1024));
  return Buffer.concat(parts);
}

/** Orders paths the way Go's filepath.Walk emits them (segment by segment), as `docker save` does. */
function walkCompare(a: string, b: string): number {
  const sa = a.replace(/\/$/, "").split("/");
  const sb = b.replace(/\/$/, "").split("/");
  for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
    const x = sa[i] ?? "";
    const y = sb[i] ?? "";
    if (x !== y) return x < y ? -1 : 1;
  }
  return sa.length - sb.length;
}

/** Entries in the order `docker save` writes them (see walkCompare). */
export function sortWalkOrder(entries: TarEntry[]): TarEntry[] {
  return [...entries].sort((a, b) => walkCompare(a.path, b.path));
}

/**
 * An uncompressed layer tar holding `files` (paths relative to the image root; a leading `/` is dropped),
 * with parent directory entries added, in walk order. Its sha256 is the layer's diff_id.
 */
export function makeLayerTar(files: Record<string, string | Uint8Array>): Uint8Array<ArrayBuffer> {
  const entries = new Map<string, TarEntry>();
  for (const [rawPath, data] of Object.entries(files)) {
    const path = rawPath.replace(/^\/+/, "");
    const segments = path.split("/");
    for (let i = 1; i < segments.length; i++) {
      const dir = `${segments.slice(0, i).join("/")}/`;
      if (!entries.has(dir)) entries.set(dir, { path: dir, type: "Directory" });
    }
    entries.set(path, { path, type: "File", data });
  }
  return makeTar(sortWalkOrder([...entries.values()]));
}

// ---------------------------------------------------------------------------------------------------
// Image config and sample image

/** Labels every fixture config carries: non-ASCII so byte length differs from string length. */
export const FIXTURE_LABELS: Readonly<Record<string, string>> = {
  maintainer: "José Müller",
  "org.example.note": "naïve café ☃ 日本語",
};

/**
 * Exact bytes of an image config (compact JSON, UTF-8) for these diff_ids. `labels` are merged over
 * FIXTURE_LABELS. One history entry per layer, fixed timestamps. Push these bytes unchanged.
 */
export function makeConfig(diffIds: string[], labels: Record<string, string> = {}): Uint8Array<ArrayBuffer> {
  const created = FIXTURE_MTIME.toISOString();
  const config = {
    architecture: "amd64",
    config: {
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      Labels: { ...FIXTURE_LABELS, ...labels },
    },
    created,
    history: diffIds.map((_, i) => ({ created, created_by: `fixture layer ${i}` })),
    os: "linux",
    rootfs: { type: "layers", diff_ids: diffIds },
  };
  return utf8(JSON.stringify(config));
}

/** Input of the archive writers. */
export interface ArchiveImage {
  /** Uncompressed layer tars in image order; the same bytes may appear more than once. */
  layers: Uint8Array[];
  /** Config bytes (pushed as-is) or an object (JSON-serialised). Default: makeConfig(diff_ids). */
  config?: Uint8Array | Record<string, unknown>;
  /** Repo tag recorded in the archive; default DEFAULT_REPO_TAG. */
  repoTag?: string;
}

export const DEFAULT_REPO_TAG = "fixture/app:1.0";

/**
 * A ready-made image for archive tests: [big, small-a, small-b, small-a]; layer 3 duplicates layer 1.
 * `bigBytes` (default 1 MiB) sizes the first layer's payload.
 */
export function makeSampleImage(opts: { bigBytes?: number } = {}): Required<ArchiveImage> & { diffIds: string[] } {
  const big = makeLayerTar({ "data/big.bin": deterministicBytes(opts.bigBytes ?? 1024 * 1024) });
  const smallA = makeLayerTar({ "etc/hello.txt": "hello from layer A\n" });
  const smallB = makeLayerTar({ "etc/other.txt": "layer B says hi, a bit longer than A\n" });
  const layers = [big, smallA, smallB, smallA];
  const diffIds = layers.map((l) => digestOf(l));
  return { layers, config: makeConfig(diffIds), repoTag: DEFAULT_REPO_TAG, diffIds };
}

// ---------------------------------------------------------------------------------------------------
// Archive writers

export const MEDIA = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
} as const;

export type ArchiveFormat = "classic" | "docker25" | "containerd" | "oci";

/** What a writer produced, so tests can assert the registry ends up with exactly this. */
export interface WrittenArchive {
  path: string;
  format: ArchiveFormat;
  repoTag: string;
  configBytes: Uint8Array<ArrayBuffer>;
  configDigest: string;
  /** rootfs.diff_ids (uncompressed digests), duplicates included. */
  diffIds: string[];
  /** Digest of each layer blob as stored (compressed for containerd/oci, else equal to diffIds). */
  layerDigests: string[];
  layerMediaTypes: string[];
  /** The OCI image manifest stored in the archive (not for classic). */
  manifestBytes?: Uint8Array<ArrayBuffer>;
  manifestDigest?: string;
  /** Tar entry names in write order. */
  entries: string[];
}

interface ResolvedImage {
  layers: Uint8Array[];
  diffIds: string[];
  configBytes: Uint8Array<ArrayBuffer>;
  configDigest: string;
  repoTag: string;
}

function resolveImage(image: ArchiveImage): ResolvedImage {
  const diffIds = image.layers.map((l) => digestOf(l));
  const configBytes =
    image.config === undefined ? makeConfig(diffIds) : image.config instanceof Uint8Array ? new Uint8Array(image.config) : utf8(JSON.stringify(image.config));
  return { layers: image.layers, diffIds, configBytes, configDigest: digestOf(configBytes), repoTag: image.repoTag ?? DEFAULT_REPO_TAG };
}

async function writeTarFile(path: string, entries: TarEntry[]): Promise<string[]> {
  await Bun.write(path, makeTar(entries));
  return entries.map((e) => e.path);
}

/** The end every archive writer shares: writes `entries` in walk order and describes what it wrote. */
async function writeArchive(
  outPath: string,
  img: ResolvedImage,
  entries: TarEntry[],
  format: ArchiveFormat,
  /** The layer blobs as stored, in image order. */
  layers: { digest: string; mediaType: string }[],
  manifest?: { bytes: Uint8Array<ArrayBuffer>; digest: string },
): Promise<WrittenArchive> {
  const names = await writeTarFile(outPath, sortWalkOrder(entries));
  return {
    path: outPath,
    format,
    repoTag: img.repoTag,
    configBytes: img.configBytes,
    configDigest: img.configDigest,
    diffIds: img.diffIds,
    layerDigests: layers.map((l) => l.digest),
    layerMediaTypes: layers.map((l) => l.mediaType),
    ...(manifest === undefined ? {} : { manifestBytes: manifest.bytes, manifestDigest: manifest.digest }),
    entries: names,
  };
}

function splitRepoTag(repoTag: string): { repo: string; tag: string } {
  const slash = repoTag.lastIndexOf("/");
  const colon = repoTag.lastIndexOf(":");
  return colon > slash ? { repo: repoTag.slice(0, colon), tag: repoTag.slice(colon + 1) } : { repo: repoTag, tag: "latest" };
}

/** Classic v1 layer IDs: chained hashes, so a repeated diff_id still gets its own directory. */
function v1Ids(diffIds: string[]): string[] {
  const ids: string[] = [];
  let parent = "";
  for (const diffId of diffIds) {
    parent = sha256Hex(`${parent} ${diffId}`);
    ids.push(parent);
  }
  return ids;
}

/** Entries and manifest.json of a classic (Docker < 25) archive; shared by the evil/corrupt writers. */
function classicLayout(img: ResolvedImage): { entries: TarEntry[]; manifestJson: { Config: string; RepoTags: string[]; Layers: string[] }[]; ids: string[] } {
  const ids = v1Ids(img.diffIds);
  const entries: TarEntry[] = [];
  const firstPathOf = new Map<string, string>();
  img.layers.forEach((layer, i) => {
    const id = ids[i] ?? "";
    const diffId = img.diffIds[i] ?? "";
    const parent = i > 0 ? ids[i - 1] : undefined;
    entries.push({ path: `${id}/`, type: "Directory" });
    entries.push({ path: `${id}/VERSION`, data: "1.0" });
    entries.push({ path: `${id}/json`, data: JSON.stringify({ id, ...(parent ? { parent } : {}), created: FIXTURE_MTIME.toISOString(), os: "linux" }) });
    const first = firstPathOf.get(diffId);
    if (first === undefined) {
      entries.push({ path: `${id}/layer.tar`, data: layer });
      firstPathOf.set(diffId, `${id}/layer.tar`);
    } else {
      // What Docker's saver does for a repeated diff_id: a relative symlink to the first copy.
      entries.push({ path: `${id}/layer.tar`, type: "SymbolicLink", linkpath: `../${first}` });
    }
  });
  const configName = `${hexOf(img.configDigest)}.json`;
  entries.push({ path: configName, data: img.configBytes });
  const manifestJson = [{ Config: configName, RepoTags: [img.repoTag], Layers: ids.map((id) => `${id}/layer.tar`) }];
  entries.push({ path: "manifest.json", data: JSON.stringify(manifestJson) });
  const { repo, tag } = splitRepoTag(img.repoTag);
  entries.push({ path: "repositories", data: `${JSON.stringify({ [repo]: { [tag]: ids[ids.length - 1] ?? "" } })}\n` });
  return { entries, manifestJson, ids };
}

/**
 * Docker < 25 `docker save`: `<v1id>/{VERSION,json,layer.tar}`, `<config hex>.json`, `manifest.json`
 * (Layers = `<v1id>/layer.tar`), `repositories`, in walk order (manifest.json comes after the layers).
 * A repeated layer's `layer.tar` is a symlink `../<first v1id>/layer.tar`, as Docker writes it.
 */
export async function writeClassicDockerArchive(outPath: string, image: ArchiveImage): Promise<WrittenArchive> {
  const img = resolveImage(image);
  const { entries } = classicLayout(img);
  return writeArchive(
    outPath,
    img,
    entries,
    "classic",
    img.diffIds.map((digest) => ({ digest, mediaType: MEDIA.ociLayer })),
  );
}

/** Builds an OCI image manifest (bytes and digest) for the given config and layer descriptors. */
function ociManifest(img: ResolvedImage, layers: { digest: string; size: number; mediaType: string }[]): { bytes: Uint8Array<ArrayBuffer>; digest: string } {
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: img.configDigest, size: img.configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const bytes = utf8(JSON.stringify(manifest));
  return { bytes, digest: digestOf(bytes) };
}

/** Unique blob entries (each digest once), plus the OCI `blobs/` and `blobs/sha256/` directories. */
function blobEntries(blobs: Map<string, Uint8Array>): TarEntry[] {
  const entries: TarEntry[] = [
    { path: "blobs/", type: "Directory" },
    { path: "blobs/sha256/", type: "Directory" },
  ];
  for (const [digest, bytes] of blobs) entries.push({ path: `blobs/sha256/${hexOf(digest)}`, data: bytes });
  return entries;
}

const OCI_LAYOUT = JSON.stringify({ imageLayoutVersion: "1.0.0" });

/**
 * An OCI image layout's entries: `oci-layout`, `index.json` (this object) and each blob under
 * `blobs/sha256/<hex of its key>`. The key need not be the bytes' digest, so hostile layouts can lie.
 */
export function ociLayoutEntries(blobs: Map<string, Uint8Array>, index: unknown): TarEntry[] {
  return [...blobEntries(blobs), { path: "index.json", data: JSON.stringify(index) }, { path: "oci-layout", data: OCI_LAYOUT }];
}

/**
 * What every Docker >= 25 `docker save` holds: the blobs, `index.json` with one entry (`top`, named with
 * the containerd and OCI ref annotations), `manifest.json` pointing into `blobs/sha256/`, `oci-layout`.
 */
function dockerSaveEntries(
  img: ResolvedImage,
  blobs: Map<string, Uint8Array>,
  top: { mediaType: string; digest: string; size: number },
  layerDigests: string[],
): TarEntry[] {
  const { repo, tag } = splitRepoTag(img.repoTag);
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: [
      {
        mediaType: top.mediaType,
        digest: top.digest,
        size: top.size,
        annotations: { "io.containerd.image.name": `docker.io/${repo}:${tag}`, "org.opencontainers.image.ref.name": tag },
      },
    ],
  };
  const manifestJson = [
    {
      Config: `blobs/sha256/${hexOf(img.configDigest)}`,
      RepoTags: [img.repoTag],
      Layers: layerDigests.map((d) => `blobs/sha256/${hexOf(d)}`),
    },
  ];
  return [
    ...blobEntries(blobs),
    { path: "index.json", data: JSON.stringify(index) },
    { path: "manifest.json", data: JSON.stringify(manifestJson) },
    { path: "oci-layout", data: OCI_LAYOUT },
  ];
}

/**
 * Docker >= 25 `docker save` (classic store): OCI layout (`oci-layout`, `index.json`, `blobs/sha256/*`)
 * plus `manifest.json` whose Config/Layers point into `blobs/sha256/`, plus `repositories`. Layers are
 * uncompressed (`application/vnd.oci.image.layer.v1.tar`); a repeated layer's blob is stored once.
 */
export async function writeDocker25Archive(outPath: string, image: ArchiveImage): Promise<WrittenArchive> {
  const img = resolveImage(image);
  const blobs = new Map<string, Uint8Array>();
  for (const [i, layer] of img.layers.entries()) blobs.set(img.diffIds[i] ?? "", layer);
  const descriptors = img.layers.map((l, i) => ({ digest: img.diffIds[i] ?? "", size: l.length, mediaType: MEDIA.ociLayer }));
  const manifest = ociManifest(img, descriptors);
  blobs.set(img.configDigest, img.configBytes);
  blobs.set(manifest.digest, manifest.bytes);
  const { repo, tag } = splitRepoTag(img.repoTag);
  const entries: TarEntry[] = [
    ...dockerSaveEntries(img, blobs, { mediaType: MEDIA.ociManifest, digest: manifest.digest, size: manifest.bytes.length }, img.diffIds),
    { path: "repositories", data: `${JSON.stringify({ [repo]: { [tag]: hexOf(manifest.digest) } })}\n` },
  ];
  return writeArchive(outPath, img, entries, "docker25", descriptors, manifest);
}

export type LayerCompression = "gzip" | "zstd" | "none";

/** Compresses one layer deterministically (gzip header mtime 0, fixed levels). */
export function compressLayer(layer: Uint8Array, compression: LayerCompression): Uint8Array<ArrayBuffer> {
  if (compression === "gzip") return new Uint8Array(gzipSync(layer, { level: 6 }));
  if (compression === "zstd") return new Uint8Array(Bun.zstdCompressSync(layer, { level: 3 }));
  return new Uint8Array(layer);
}

function mediaTypeFor(compression: LayerCompression): string {
  return compression === "gzip" ? MEDIA.ociLayerGzip : compression === "zstd" ? MEDIA.ociLayerZstd : MEDIA.ociLayer;
}

/** Compresses each distinct layer once (so repeats share a blob); returns descriptors in image order. */
function compressLayers(
  img: ResolvedImage,
  pick: (firstIndex: number) => LayerCompression,
): { descriptors: { digest: string; size: number; mediaType: string }[]; blobs: Map<string, Uint8Array> } {
  const byDiffId = new Map<string, { digest: string; size: number; mediaType: string }>();
  const blobs = new Map<string, Uint8Array>();
  const descriptors = img.layers.map((layer, i) => {
    const diffId = img.diffIds[i] ?? "";
    const known = byDiffId.get(diffId);
    if (known) return known;
    const compression = pick(byDiffId.size);
    const bytes = compressLayer(layer, compression);
    const desc = { digest: digestOf(bytes), size: bytes.length, mediaType: mediaTypeFor(compression) };
    byDiffId.set(diffId, desc);
    blobs.set(desc.digest, bytes);
    return desc;
  });
  return { descriptors, blobs };
}

/**
 * `docker save` from the containerd image store: the Docker 25 layout, but layer blobs are the stored
 * compressed ones (gzip, and the distinct layer number `zstdLayer`, default the last distinct one,
 * as zstd) with matching media types; manifest.json Layers point at the compressed blobs; index.json
 * points at a nested image index (linux/amd64 manifest, plus an attestation manifest if asked).
 * Push the blobs as they are: recompressing changes the digests.
 */
export async function writeContainerdArchive(
  outPath: string,
  image: ArchiveImage,
  opts: { zstdLayer?: number; attestation?: boolean } = {},
): Promise<WrittenArchive> {
  const img = resolveImage(image);
  const distinct = new Set(img.diffIds).size;
  const zstdLayer = opts.zstdLayer ?? distinct - 1;
  const { descriptors, blobs } = compressLayers(img, (n) => (n === zstdLayer ? "zstd" : "gzip"));
  const manifest = ociManifest(img, descriptors);
  blobs.set(img.configDigest, img.configBytes);
  blobs.set(manifest.digest, manifest.bytes);

  const nestedManifests: Record<string, unknown>[] = [
    { mediaType: MEDIA.ociManifest, digest: manifest.digest, size: manifest.bytes.length, platform: { architecture: "amd64", os: "linux" } },
  ];
  if (opts.attestation) {
    const statement = utf8(
      JSON.stringify({
        _type: "https://in-toto.io/Statement/v0.1",
        predicateType: "https://spdx.dev/Document",
        subject: [{ name: "fixture", digest: { sha256: hexOf(manifest.digest) } }],
        predicate: {},
      }),
    );
    const attConfig = utf8(JSON.stringify({ architecture: "unknown", os: "unknown", config: {}, rootfs: { type: "layers", diff_ids: [digestOf(statement)] } }));
    const attManifest = utf8(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociConfig, digest: digestOf(attConfig), size: attConfig.length },
        layers: [
          {
            mediaType: "application/vnd.in-toto+json",
            digest: digestOf(statement),
            size: statement.length,
            annotations: { "in-toto.io/predicate-type": "https://spdx.dev/Document" },
          },
        ],
      }),
    );
    blobs.set(digestOf(statement), statement);
    blobs.set(digestOf(attConfig), attConfig);
    blobs.set(digestOf(attManifest), attManifest);
    nestedManifests.push({
      mediaType: MEDIA.ociManifest,
      digest: digestOf(attManifest),
      size: attManifest.length,
      annotations: { "vnd.docker.reference.digest": manifest.digest, "vnd.docker.reference.type": "attestation-manifest" },
      platform: { architecture: "unknown", os: "unknown" },
    });
  }
  const nestedIndex = utf8(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: nestedManifests }));
  blobs.set(digestOf(nestedIndex), nestedIndex);

  const top = { mediaType: MEDIA.ociIndex, digest: digestOf(nestedIndex), size: nestedIndex.length };
  const entries = dockerSaveEntries(
    img,
    blobs,
    top,
    descriptors.map((d) => d.digest),
  );
  return writeArchive(outPath, img, entries, "containerd", descriptors, manifest);
}

/**
 * An OCI image layout tar only (`podman save --format oci-archive` / skopeo `oci-archive:`): `oci-layout`,
 * `index.json` (ref.name annotation = tag), `blobs/sha256/*`; no manifest.json. Layers gzip by default.
 */
export async function writeOciArchive(outPath: string, image: ArchiveImage, opts: { compression?: LayerCompression } = {}): Promise<WrittenArchive> {
  const img = resolveImage(image);
  const compression = opts.compression ?? "gzip";
  const { descriptors, blobs } = compressLayers(img, () => compression);
  const manifest = ociManifest(img, descriptors);
  blobs.set(img.configDigest, img.configBytes);
  blobs.set(manifest.digest, manifest.bytes);
  const { tag } = splitRepoTag(img.repoTag);
  const index = {
    schemaVersion: 2,
    manifests: [
      { mediaType: MEDIA.ociManifest, digest: manifest.digest, size: manifest.bytes.length, annotations: { "org.opencontainers.image.ref.name": tag } },
    ],
  };
  const entries: TarEntry[] = [...blobEntries(blobs), { path: "index.json", data: JSON.stringify(index) }, { path: "oci-layout", data: OCI_LAYOUT }];
  return writeArchive(outPath, img, entries, "oci", descriptors, manifest);
}

// ---------------------------------------------------------------------------------------------------
// Hostile and broken archives

/**
 * - `dotdot`: extra entry `../<name>` (path traversal).
 * - `absolute`: extra entry `<tmpdir>/<name>` with an absolute path.
 * - `symlink-absolute`: the first layer's `layer.tar` is a symlink to `/etc/passwd` (reading through it
 *   would push a host file).
 * - `symlink-relative`: the first layer's `layer.tar` is a symlink to `../../x` (escapes the archive root).
 * - `symlink-write-through`: a symlink `evil-link -> <tmpdir>` followed by a file `evil-link/<name>`.
 * - `manifest-escape`: manifest.json's first Layers entry is `../../../../etc/passwd`.
 */
export type EvilVariant = "dotdot" | "absolute" | "symlink-absolute" | "symlink-relative" | "symlink-write-through" | "manifest-escape";

export const EVIL_VARIANTS: readonly EvilVariant[] = ["dotdot", "absolute", "symlink-absolute", "symlink-relative", "symlink-write-through", "manifest-escape"];

export interface EvilArchive {
  path: string;
  variant: EvilVariant;
  /** Unique file name used by the escaping entry (`chunked-push-escape-<nonce>.txt`). */
  escapeName: string;
  /** Absolute host paths that must NOT exist after the CLI ran (known ones; `dotdot` depends on cwd). */
  mustNotExist: string[];
}

/**
 * A classic archive that is valid apart from one hostile construct (placed first, so a streaming reader
 * meets it before anything else). The CLI must refuse it (or at least never write or read outside).
 */
export async function writeEvilArchive(
  outPath: string,
  variant: EvilVariant,
  image: ArchiveImage = makeSampleImage({ bigBytes: 64 * 1024 }),
): Promise<EvilArchive> {
  const img = resolveImage(image);
  const escapeName = `chunked-push-escape-${randomBytes(6).toString("hex")}.txt`;
  const payload = "if you can read this outside the archive, extraction escaped\n";
  const { entries: base, manifestJson, ids } = classicLayout(img);
  let entries = sortWalkOrder(base);
  const mustNotExist: string[] = [];
  const firstLayer = `${ids[0] ?? ""}/layer.tar`;
  const replaceFirstLayer = (linkpath: string): void => {
    entries = entries.map((e) => (e.path === firstLayer ? { path: firstLayer, type: "SymbolicLink", linkpath } : e));
    // A later duplicate may link to the first copy: fine, it now resolves to the evil link too.
  };
  switch (variant) {
    case "dotdot":
      entries.unshift({ path: `../${escapeName}`, data: payload });
      mustNotExist.push(join(tmpdir(), escapeName));
      break;
    case "absolute": {
      const abs = join(tmpdir(), escapeName);
      entries.unshift({ path: abs, data: payload });
      mustNotExist.push(abs);
      break;
    }
    case "symlink-absolute":
      replaceFirstLayer("/etc/passwd");
      break;
    case "symlink-relative":
      replaceFirstLayer("../../x");
      break;
    case "symlink-write-through":
      entries.unshift({ path: "evil-link", type: "SymbolicLink", linkpath: tmpdir() }, { path: `evil-link/${escapeName}`, data: payload });
      mustNotExist.push(join(tmpdir(), escapeName));
      break;
    case "manifest-escape": {
      const first = manifestJson[0];
      if (first) first.Layers[0] = "../../../../etc/passwd";
      entries = entries.map((e) => (e.path === "manifest.json" ? { path: "manifest.json", data: JSON.stringify(manifestJson) } : e));
      break;
    }
  }
  await writeTarFile(outPath, entries);
  return { path: outPath, variant, escapeName, mustNotExist };
}

export interface CorruptArchive {
  path: string;
  /** Size the complete archive would have had. */
  fullSize: number;
  /** Bytes actually written (the file ends here, mid-layer). */
  truncatedAt: number;
  /** Entry name of the layer cut in half. */
  truncatedEntry: string;
}

/**
 * A classic archive cut off in the middle of its largest layer's data. manifest.json, the config and
 * `repositories` are written first so a reader gets as far as the layer before hitting the end.
 */
export async function writeCorruptArchive(outPath: string, image: ArchiveImage = makeSampleImage()): Promise<CorruptArchive> {
  const img = resolveImage(image);
  const { entries: base } = classicLayout(img);
  const front = base.filter((e) => !e.path.includes("/"));
  const rest = sortWalkOrder(base.filter((e) => e.path.includes("/")));
  const entries = [...front, ...rest];
  // Locate the largest layer.tar's data in the serialised tar.
  let offset = 0;
  let target: { start: number; size: number; path: string } | null = null;
  for (const entry of entries) {
    const size =
      (entry.type ?? "File") === "File" && entry.data !== undefined ? (typeof entry.data === "string" ? utf8(entry.data).length : entry.data.length) : 0;
    const headerLen = encodeHeader(entry, size).length;
    if (entry.path.endsWith("/layer.tar") && size > 0 && (target === null || size > target.size)) {
      target = { start: offset + headerLen, size, path: entry.path };
    }
    offset += headerLen + Math.ceil(size / 512) * 512;
  }
  if (target === null) throw new Error("writeCorruptArchive: image has no layer data to truncate");
  const full = makeTar(entries);
  const truncatedAt = target.start + Math.floor(target.size / 2);
  await Bun.write(outPath, full.subarray(0, truncatedAt));
  return { path: outPath, fullSize: full.length, truncatedAt, truncatedEntry: target.path };
}

// ---------------------------------------------------------------------------------------------------
// Real image built with podman

export interface TestImage {
  tag: string;
  imageId: string;
  /** rootfs.diff_ids as podman reports them; index 2 and 4 are the same layer. */
  diffIds: string[];
  /** Payload size of the big layer's file. */
  bigBytes: number;
}

/** Default big-layer payload: 24 MiB, half noise, half text (compresses to roughly 12-13 MB). */
export const TEST_IMAGE_BIG_BYTES = 24 * 1024 * 1024;

/**
 * Builds a five-layer image in `store` (FROM scratch, LABEL maintainer=José):
 *   0. /data/big.bin, `bigBytes` of deterministicBytes()     (big, partly compressible)
 *   1. /hello.txt                                            (small)
 *   2. /dup.txt = dup-a.txt                                  (small, "A")
 *   3. /dup.txt = dup-b.txt (different size)                 (small, "B")
 *   4. /dup.txt = dup-a.txt again                            (same diff_id as layer 2)
 * Why A/B/A: podman (vfs) computes layer diffs by comparing size and mtime, so copying a file over an
 * identical one yields the empty layer (sha256:5f70bf18..., the same for any no-op step) and even a
 * same-size same-mtime different-content file is missed. Changing the size in between and restoring
 * the original (same bytes, same fixed mtime) gives a real non-empty layer with a repeated diff_id.
 * Throws if the built image does not have the expected duplicate.
 */
export async function buildTestImage(store: PodmanStore, tag: string, opts: { bigBytes?: number } = {}): Promise<TestImage> {
  const bigBytes = opts.bigBytes ?? TEST_IMAGE_BIG_BYTES;
  const ctx = await mkdtemp(join(store.dir, "build-context-"));
  try {
    const files: Record<string, Uint8Array | string> = {
      "big.bin": deterministicBytes(bigBytes),
      "hello.txt": "hello from the chunked-push harness, ¡olé!\n",
      "dup-a.txt": "duplicated layer payload A\n",
      "dup-b.txt": "a different, clearly longer payload B that changes the file size\n",
      Containerfile: [
        "FROM scratch",
        'LABEL maintainer="José"',
        "COPY big.bin /data/big.bin",
        "COPY hello.txt /hello.txt",
        "COPY dup-a.txt /dup.txt",
        "COPY dup-b.txt /dup.txt",
        "COPY dup-a.txt /dup.txt",
        "",
      ].join("\n"),
    };
    for (const [name, data] of Object.entries(files)) {
      const p = join(ctx, name);
      await writeFile(p, data);
      await utimes(p, FIXTURE_MTIME, FIXTURE_MTIME);
    }
    const imageId = await store.build(ctx, tag);
    const { stdout } = await store.podmanOk(["image", "inspect", "--format", "{{json .RootFS.Layers}}", tag]);
    const diffIds: unknown = JSON.parse(stdout);
    if (!Array.isArray(diffIds) || !diffIds.every((d): d is string => typeof d === "string")) {
      throw new Error(`buildTestImage: unexpected RootFS.Layers: ${stdout}`);
    }
    if (diffIds.length !== 5 || diffIds[2] !== diffIds[4] || new Set(diffIds).size !== 4) {
      throw new Error(`buildTestImage: expected 5 layers with layer 2 == layer 4, got ${stdout}`);
    }
    return { tag, imageId, diffIds, bigBytes };
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}

/** A value a beforeAll set up; a clear failure (not a TypeError) when that setup failed. */
export function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} not set up (an earlier step failed)`);
  return value;
}

/** A fresh temp dir (for archives written by these helpers); caller removes it. Defined in temp.ts. */
export { makeTempDir } from "./temp.ts";
