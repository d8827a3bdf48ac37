/**
 * Hostile inputs for the CLI, built on disk: archives that lie (layers that do not match their diff_id,
 * blobs that do not match their digest, compressed layers that are not), OCI indexes that loop, nest
 * deeply or fan out, tar headers claiming absurd sizes, an image archive saved under the wrong image
 * id, a fake container engine to go with it, and helpers that poison a `.cache` folder the way a bad
 * disk, a bad actor or a killed run would.
 *
 * Every builder is deterministic and small, and returns its path plus what a correct tool must report,
 * so the CLI tests can assert on the message rather than re-derive the lie. Valid parts come from
 * fixtures.ts (makeTar, makeLayerTar, makeConfig, compressLayer, the write*Archive writers).
 */
import { spawnSync } from "node:child_process";
import { chmod, mkdir, open, readdir, readFile, rename, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  compressLayer,
  deterministicBytes,
  digestOf,
  FIXTURE_MTIME,
  hexOf,
  type LayerCompression,
  makeConfig,
  makeLayerTar,
  makeTar,
  MEDIA,
  ociLayoutEntries,
  sha256Hex,
  sortWalkOrder,
  utf8,
  writeClassicDockerArchive,
  writeContainerdArchive,
  writeDocker25Archive,
  writeOciArchive,
} from "./fixtures.ts";

/** What every builder returns. */
export interface HostileArchive {
  path: string;
  /** In words, what a correct tool must report or refuse (for test names and failure messages). */
  mustReport: string;
}

const GOOD_LAYER = makeLayerTar({ "etc/good.txt": "an honest layer that matches its diff_id\n" });
const REAL_LAYER = makeLayerTar({ "etc/real.txt": "the layer really stored in the archive\n" });
const OTHER_LAYER = makeLayerTar({ "etc/claimed.txt": "the layer the config claims, stored nowhere\n" });
const REPO_TAG = "hostile/app:1.0";

// ---------------------------------------------------------------------------------------------------
// Layers whose content does not match the config's diff_id

export type HostileFormat = "classic" | "docker25" | "containerd" | "oci";

export interface DiffIdMismatchArchive extends HostileArchive {
  format: HostileFormat;
  /** How the bad layer is stored ("none" = an uncompressed tar). */
  compression: LayerCompression;
  /** Index of the bad layer in rootfs.diff_ids (layer 0 is honest, so a check of only the first fails). */
  layerIndex: number;
  /** What the config claims. */
  claimedDiffId: string;
  /** sha256 of the layer once decompressed. */
  actualDiffId: string;
  /** Digest of the stored bytes (honest: the blob matches its own name). */
  storedDigest: string;
  configDigest: string;
}

/**
 * An archive whose second layer, once decompressed, does not hash to the config's diff_id. The stored
 * blob is honest about itself (its name is its digest); only the diff_id lies. `claim`:
 * - "other-layer" (default): the diff_id of a different tar that is nowhere in the archive;
 * - "stored-bytes": the digest of the stored compressed bytes, the classic digest/diff_id confusion, so a
 *   tool that hashes the stored bytes without decompressing them sees a match.
 * `compression` "gzip" with format "classic" stores gzip bytes as `<id>/layer.tar`, which docker load
 * accepts; a tool must decompress it to check the diff_id (and must not gzip it a second time).
 */
export async function writeDiffIdMismatchArchive(
  outPath: string,
  opts: { format?: HostileFormat; compression?: LayerCompression; claim?: "other-layer" | "stored-bytes" } = {},
): Promise<DiffIdMismatchArchive> {
  const format = opts.format ?? "oci";
  const compression = opts.compression ?? (format === "classic" || format === "docker25" ? "none" : "gzip");
  const claim = opts.claim ?? "other-layer";
  if (format === "containerd" && compression === "none") throw new Error("containerd saves hold compressed layers: use gzip or zstd");
  const stored = compressLayer(REAL_LAYER, compression);
  const storedDigest = digestOf(stored);
  if (claim === "stored-bytes" && compression === "none") throw new Error('claim "stored-bytes" of an uncompressed layer is not a lie');
  const claimedDiffId = claim === "stored-bytes" ? storedDigest : digestOf(OTHER_LAYER);
  const config = makeConfig([digestOf(GOOD_LAYER), claimedDiffId]);
  switch (format) {
    case "classic":
      // The writers take layers as stored; the config names what they should have been.
      await writeClassicDockerArchive(outPath, { layers: [GOOD_LAYER, stored], config, repoTag: REPO_TAG });
      break;
    case "docker25":
      await writeDocker25Archive(outPath, { layers: [GOOD_LAYER, stored], config, repoTag: REPO_TAG });
      break;
    case "containerd":
      await writeContainerdArchive(outPath, { layers: [GOOD_LAYER, REAL_LAYER], config, repoTag: REPO_TAG }, { zstdLayer: compression === "zstd" ? 1 : -1 });
      break;
    case "oci":
      await writeOciArchive(outPath, { layers: [GOOD_LAYER, REAL_LAYER], config, repoTag: REPO_TAG }, { compression });
      break;
  }
  return {
    path: outPath,
    format,
    compression,
    layerIndex: 1,
    claimedDiffId,
    actualDiffId: digestOf(REAL_LAYER),
    storedDigest,
    configDigest: digestOf(config),
    mustReport: `layer 2/2 decompresses to ${digestOf(REAL_LAYER)} but the config's diff_id is ${claimedDiffId}: refuse before uploading anything`,
  };
}

// ---------------------------------------------------------------------------------------------------
// A compressed layer that is not valid compressed data

export interface BrokenCompressionArchive extends HostileArchive {
  format: "classic" | "containerd" | "oci";
  compression: "gzip" | "zstd";
  layerIndex: number;
  /** Tar entry holding the broken bytes. */
  entryName: string;
  /** Digest of the broken bytes (they match their own name). */
  storedDigest: string;
  /** The bytes themselves: the format's magic, then 4 KiB of noise. */
  storedBytes: Uint8Array<ArrayBuffer>;
}

/** A gzip member header (magic, deflate, no flags, mtime 0, OS unknown) or the zstd frame magic. */
const GZIP_HEADER = Uint8Array.of(0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff);
const ZSTD_MAGIC = Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd);

/** Magic bytes that promise gzip (or zstd), then deterministic noise that no decompressor accepts. */
export function brokenCompressedBytes(compression: "gzip" | "zstd", size = 4096): Uint8Array<ArrayBuffer> {
  const magic = compression === "gzip" ? GZIP_HEADER : ZSTD_MAGIC;
  const out = new Uint8Array(magic.length + size);
  out.set(magic, 0);
  out.set(deterministicBytes(size, 0xbad5eed), magic.length);
  // Block header 0b111 (final, reserved type 3): deflate rejects it at the first block; zstd's frame
  // header descriptor 0xff asks for a reserved bit, rejected at once.
  out[magic.length] = 0xff;
  return out;
}

/**
 * An archive whose second layer is labelled gzip (or zstd), starts with the right magic and is garbage
 * after it. classic: the bytes are `<id>/layer.tar`; containerd/oci: a blob with a `+gzip`/`+zstd`
 * media type whose digest is honest.
 */
export async function writeBrokenCompressionArchive(
  outPath: string,
  opts: { format?: "classic" | "containerd" | "oci"; compression?: "gzip" | "zstd" } = {},
): Promise<BrokenCompressionArchive> {
  const format = opts.format ?? "oci";
  const compression = opts.compression ?? "gzip";
  const broken = brokenCompressedBytes(compression);
  const storedDigest = digestOf(broken);
  const config = makeConfig([digestOf(GOOD_LAYER), digestOf(REAL_LAYER)]);
  let entryName: string;
  if (format === "classic") {
    await writeClassicDockerArchive(outPath, { layers: [GOOD_LAYER, broken], config, repoTag: REPO_TAG });
    entryName = (await manifestJsonOf(outPath))[0]?.Layers[1] ?? "";
  } else {
    const good = compressLayer(GOOD_LAYER, compression);
    const mediaType = compression === "gzip" ? MEDIA.ociLayerGzip : MEDIA.ociLayerZstd;
    await writeLayoutArchive(outPath, {
      config,
      layers: [
        { bytes: good, mediaType },
        { bytes: broken, mediaType },
      ],
      manifestJson: format === "containerd",
    });
    entryName = `blobs/sha256/${hexOf(storedDigest)}`;
  }
  return {
    path: outPath,
    format,
    compression,
    layerIndex: 1,
    entryName,
    storedDigest,
    storedBytes: broken,
    mustReport: `layer 2/2 (${entryName}) is not valid ${compression} data: refuse before uploading anything`,
  };
}

/** manifest.json of an archive written by fixtures.ts (to name the entry of the n-th layer). */
async function manifestJsonOf(path: string): Promise<{ Config: string; Layers: string[] }[]> {
  const entry = readTarFiles(new Uint8Array(await Bun.file(path).arrayBuffer())).get("manifest.json");
  if (entry === undefined) throw new Error(`${path} has no manifest.json`);
  return JSON.parse(new TextDecoder().decode(entry)) as { Config: string; Layers: string[] }[];
}

// ---------------------------------------------------------------------------------------------------
// Blobs that do not match their digest

export type LyingBlob = "layer" | "config" | "manifest";

export interface DigestLieArchive extends HostileArchive {
  target: LyingBlob;
  format: "oci" | "containerd";
  /** The digest the descriptor (and the file name `blobs/sha256/<hex>`) claims. */
  claimedDigest: string;
  /** What the stored bytes really hash to. */
  actualDigest: string;
  /** Same for both: the lie keeps the size, so only a hash catches it. */
  size: number;
}

/**
 * An OCI layout (or containerd-style save with manifest.json) where one blob's bytes are not what its
 * descriptor and file name say, with the size kept so only hashing catches it:
 * - layer: another valid gzip stream of the same length (a different tar inside);
 * - config, manifest: the same JSON with its keys in another order (same length, same meaning).
 */
export async function writeDigestLieArchive(outPath: string, target: LyingBlob, opts: { format?: "oci" | "containerd" } = {}): Promise<DigestLieArchive> {
  const format = opts.format ?? "oci";
  const layer = compressLayer(REAL_LAYER, "gzip");
  const config = makeConfig([digestOf(REAL_LAYER)]);
  const swap = (bytes: Uint8Array<ArrayBuffer>, which: LyingBlob): Uint8Array<ArrayBuffer> | undefined => {
    if (which !== target) return undefined;
    return which === "layer" ? sameSizeCompressed(bytes.length, OTHER_LAYER, "gzip") : reorderJsonKeys(bytes);
  };
  const layerLie = swap(layer, "layer");
  const configLie = swap(config, "config");
  const { manifest } = await writeLayoutArchive(outPath, {
    config,
    configStored: configLie,
    layers: [{ bytes: layer, mediaType: MEDIA.ociLayerGzip, stored: layerLie }],
    manifestJson: format === "containerd",
    manifestStored: (bytes) => swap(bytes, "manifest"),
  });
  const honest = target === "layer" ? layer : target === "config" ? config : manifest.bytes;
  const lie = layerLie ?? configLie ?? manifest.stored;
  if (lie === undefined) throw new Error("unreachable: no blob was swapped");
  return {
    path: outPath,
    target,
    format,
    claimedDigest: digestOf(honest),
    actualDigest: digestOf(lie),
    size: lie.length,
    mustReport: `the ${target} blob blobs/sha256/${hexOf(digestOf(honest))} hashes to ${digestOf(lie)}, not to its digest: refuse`,
  };
}

/** The same JSON object with its top-level keys in reverse order: same length, other bytes. */
export function reorderJsonKeys(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("reorderJsonKeys: not a JSON object");
  const reversed = Object.fromEntries(Object.entries(value).reverse());
  const out = utf8(JSON.stringify(reversed));
  if (out.length !== bytes.length || Buffer.from(out).equals(Buffer.from(bytes))) {
    throw new Error("reorderJsonKeys: the input must be compact JSON with at least two keys");
  }
  return out;
}

/**
 * A valid gzip (or zstd) stream of exactly `size` bytes that decompresses to `content` (default: a
 * small layer tar with a `poisoned.txt`). gzip pads with a header comment (FCOMMENT), zstd with a
 * skippable frame; both are standard and every decompressor accepts them.
 */
export function sameSizeCompressed(size: number, content?: Uint8Array, compression: "gzip" | "zstd" = "gzip"): Uint8Array<ArrayBuffer> {
  for (let attempt = 0; attempt < 64; attempt++) {
    const payload =
      content ??
      (attempt < 32 ? makeLayerTar({ "poisoned.txt": `this blob was swapped${".".repeat(attempt)}\n` }) : new Uint8Array(1024 + (attempt - 32) * 512));
    const base = compression === "gzip" ? new Uint8Array(gzipSync(payload, { level: 9 })) : new Uint8Array(Bun.zstdCompressSync(payload, { level: 19 }));
    const pad = size - base.length;
    if (pad === 0) return base;
    if (compression === "gzip" && pad > 0) {
      const out = new Uint8Array(size);
      out.set(base.subarray(0, 10), 0);
      out[3] = (base[3] ?? 0) | 0x10; // FCOMMENT: a NUL-terminated comment follows the 10-byte header
      out.fill(0x70, 10, 10 + pad - 1); // "ppp..."
      out[10 + pad - 1] = 0;
      out.set(base.subarray(10), 10 + pad);
      return out;
    }
    if (compression === "zstd" && pad >= 8) {
      const out = new Uint8Array(size);
      out.set(base, 0);
      const view = new DataView(out.buffer);
      view.setUint32(base.length, 0x184d2a50, true); // skippable frame magic
      view.setUint32(base.length + 4, pad - 8, true);
      return out;
    }
    if (content !== undefined && pad < 0) break;
  }
  throw new Error(`sameSizeCompressed: cannot make a ${compression} stream of exactly ${size} bytes`);
}

// ---------------------------------------------------------------------------------------------------
// OCI layouts written from chosen blobs

interface LayoutLayer {
  bytes: Uint8Array<ArrayBuffer>;
  mediaType: string;
  /** Bytes stored under the layer's name instead of `bytes` (a lie); default `bytes`. */
  stored?: Uint8Array<ArrayBuffer>;
}

/**
 * A one-image OCI layout: index.json -> manifest -> config + layers, each named by the digest of its
 * honest bytes, but holding `stored` bytes where given. With `manifestJson`, a containerd-style save
 * (manifest.json and `repositories` alongside). Returns the manifest written.
 */
async function writeLayoutArchive(
  outPath: string,
  opts: {
    config: Uint8Array<ArrayBuffer>;
    configStored?: Uint8Array<ArrayBuffer>;
    layers: LayoutLayer[];
    manifestJson: boolean;
    manifestStored?: (honest: Uint8Array<ArrayBuffer>) => Uint8Array<ArrayBuffer> | undefined;
  },
): Promise<{ manifest: { bytes: Uint8Array<ArrayBuffer>; digest: string; stored?: Uint8Array<ArrayBuffer> } }> {
  const blobs = new Map<string, Uint8Array>();
  const configDigest = digestOf(opts.config);
  const manifestBytes = utf8(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: opts.config.length },
      layers: opts.layers.map((l) => ({ mediaType: l.mediaType, digest: digestOf(l.bytes), size: l.bytes.length })),
    }),
  );
  const manifestDigest = digestOf(manifestBytes);
  const manifestStored = opts.manifestStored?.(manifestBytes);
  for (const layer of opts.layers) blobs.set(digestOf(layer.bytes), layer.stored ?? layer.bytes);
  blobs.set(configDigest, opts.configStored ?? opts.config);
  blobs.set(manifestDigest, manifestStored ?? manifestBytes);
  const tag = REPO_TAG.slice(REPO_TAG.lastIndexOf(":") + 1);
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: [
      { mediaType: MEDIA.ociManifest, digest: manifestDigest, size: manifestBytes.length, annotations: { "org.opencontainers.image.ref.name": tag } },
    ],
  };
  const entries = ociLayoutEntries(blobs, index);
  if (opts.manifestJson) {
    const manifestJson = [
      { Config: `blobs/sha256/${hexOf(configDigest)}`, RepoTags: [REPO_TAG], Layers: opts.layers.map((l) => `blobs/sha256/${hexOf(digestOf(l.bytes))}`) },
    ];
    entries.push({ path: "manifest.json", data: JSON.stringify(manifestJson) });
  }
  await Bun.write(outPath, makeTar(sortWalkOrder(entries)));
  return { manifest: { bytes: manifestBytes, digest: manifestDigest, stored: manifestStored } };
}

// ---------------------------------------------------------------------------------------------------
// Index loops, deep chains and fan-out

export type IndexShape =
  /** index.json -> A -> B -> A. A is stored under a name that is not its hash: a real cycle needs one lie. */
  | { kind: "cycle" }
  /** index.json lists the same nested index `count` times (default 4096). */
  | { kind: "repeat"; count?: number }
  /** A chain of `depth` nested indexes (default 12), the last one listing the image. */
  | { kind: "deep"; depth?: number }
  /** One nested index listing `count` manifests (default 4096): distinct ones, or one repeated with other platforms. */
  | { kind: "fanout"; count?: number; distinct?: boolean }
  /** `levels` nested indexes (default 4), each listing the next `width` times (default 100): width^levels paths. */
  | { kind: "bomb"; levels?: number; width?: number };

export interface IndexArchive extends HostileArchive {
  shape: IndexShape["kind"];
  /** Digest of the one real image manifest (config + one gzip layer) at the leaves. */
  imageManifestDigest: string;
  /** Nested index digests, outermost first (for "cycle": A's claimed name, then B). */
  indexDigests: string[];
  /** Root-to-leaf paths a walk that does not remember what it visited would follow (Infinity for a cycle). */
  naivePaths: number;
  /** Longest chain of nested indexes below index.json. */
  depth: number;
  /** Bytes of the tar on disk. */
  archiveBytes: number;
  /** For "cycle": A's actual digest (its name is a lie). */
  cycleActualDigest?: string;
}

const LINUX_AMD64 = { architecture: "amd64", os: "linux" };

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Record<string, string>;
  annotations?: Record<string, string>;
}

function indexBytes(manifests: Descriptor[]): Uint8Array<ArrayBuffer> {
  return utf8(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests }));
}

function describeIndex(bytes: Uint8Array): Descriptor {
  return { mediaType: MEDIA.ociIndex, digest: digestOf(bytes), size: bytes.length };
}

/** The small real image every index shape leads to; its blobs go into `blobs`. */
function leafImage(blobs: Map<string, Uint8Array>, annotation?: string): Descriptor {
  const layer = compressLayer(REAL_LAYER, "gzip");
  const config = makeConfig([digestOf(REAL_LAYER)]);
  const manifest = utf8(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: digestOf(config), size: config.length },
      layers: [{ mediaType: MEDIA.ociLayerGzip, digest: digestOf(layer), size: layer.length }],
      ...(annotation === undefined ? {} : { annotations: { "org.example.copy": annotation } }),
    }),
  );
  blobs.set(digestOf(layer), layer);
  blobs.set(digestOf(config), config);
  blobs.set(digestOf(manifest), manifest);
  return { mediaType: MEDIA.ociManifest, digest: digestOf(manifest), size: manifest.length, platform: LINUX_AMD64 };
}

/** An OCI layout tar (no manifest.json, so a tool must walk index.json) shaped as asked. */
export async function writeIndexArchive(outPath: string, shape: IndexShape): Promise<IndexArchive> {
  const blobs = new Map<string, Uint8Array>();
  const image = leafImage(blobs);
  const indexDigests: string[] = [];
  let top: Descriptor[];
  let naivePaths: number;
  let depth: number;
  let cycleActualDigest: string | undefined;
  let mustReport: string;
  switch (shape.kind) {
    case "cycle": {
      const nameOfA = `sha256:${sha256Hex("chunked-push hostile index cycle: this name is not the hash of its content")}`;
      // A's size is written into B and B's digest and size into A: iterate until the sizes settle.
      let sizeA = 0;
      let a = new Uint8Array(0);
      let b = new Uint8Array(0);
      for (let i = 0; i < 8; i++) {
        b = indexBytes([{ mediaType: MEDIA.ociIndex, digest: nameOfA, size: sizeA }]);
        a = indexBytes([describeIndex(b), image]);
        if (a.length === sizeA) break;
        sizeA = a.length;
      }
      blobs.set(nameOfA, a);
      blobs.set(digestOf(b), b);
      indexDigests.push(nameOfA, digestOf(b));
      top = [{ mediaType: MEDIA.ociIndex, digest: nameOfA, size: a.length }];
      naivePaths = Infinity;
      depth = Infinity;
      cycleActualDigest = digestOf(a);
      mustReport = `index ${nameOfA} does not hash to its name (and leads back to itself through ${digestOf(b)}): refuse, never loop`;
      break;
    }
    case "repeat": {
      const count = shape.count ?? 4096;
      const nested = indexBytes([image]);
      blobs.set(digestOf(nested), nested);
      indexDigests.push(digestOf(nested));
      top = Array.from({ length: count }, () => describeIndex(nested));
      naivePaths = count;
      depth = 1;
      mustReport = `index.json lists the nested index ${digestOf(nested)} ${count} times: read it once and push the one image`;
      break;
    }
    case "deep": {
      const levels = shape.depth ?? 12;
      let below: Descriptor = image;
      const chain: string[] = [];
      for (let i = 0; i < levels; i++) {
        const bytes = indexBytes([below]);
        blobs.set(digestOf(bytes), bytes);
        chain.unshift(digestOf(bytes));
        below = describeIndex(bytes);
      }
      indexDigests.push(...chain);
      top = [below];
      naivePaths = 1;
      depth = levels;
      mustReport = `nested indexes ${levels} deep: refuse beyond a small depth limit (or push the one image), never recurse without bound`;
      break;
    }
    case "fanout": {
      const count = shape.count ?? 4096;
      const manifests = Array.from({ length: count }, (_, i) =>
        shape.distinct === true ? leafImage(blobs, `copy ${i}`) : { ...image, platform: { ...LINUX_AMD64, variant: `v${i}` } },
      );
      const nested = indexBytes(manifests);
      blobs.set(digestOf(nested), nested);
      indexDigests.push(digestOf(nested));
      top = [describeIndex(nested)];
      naivePaths = count;
      depth = 1;
      mustReport = `one index lists ${count} image manifests: choose one (or refuse as ambiguous) without reading them all into memory at once`;
      break;
    }
    case "bomb": {
      const levels = shape.levels ?? 4;
      const width = shape.width ?? 100;
      let below: Descriptor = image;
      const chain: string[] = [];
      for (let i = 0; i < levels; i++) {
        const bytes = indexBytes(Array.from({ length: i === 0 ? 1 : width }, () => below));
        blobs.set(digestOf(bytes), bytes);
        chain.unshift(digestOf(bytes));
        below = describeIndex(bytes);
      }
      indexDigests.push(...chain);
      top = Array.from({ length: width }, () => below);
      naivePaths = width ** levels;
      depth = levels;
      mustReport = `${levels} levels of indexes each listing the next ${width} times (${width ** levels} paths): visit each digest once`;
      break;
    }
  }
  const tag = REPO_TAG.slice(REPO_TAG.lastIndexOf(":") + 1);
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: top.map((d, i) => (i === 0 ? { ...d, annotations: { "org.opencontainers.image.ref.name": tag } } : d)),
  };
  const tar = makeTar(sortWalkOrder(ociLayoutEntries(blobs, index)));
  await Bun.write(outPath, tar);
  return {
    path: outPath,
    shape: shape.kind,
    imageManifestDigest: image.digest,
    indexDigests,
    naivePaths,
    depth,
    archiveBytes: tar.length,
    ...(cycleActualDigest === undefined ? {} : { cycleActualDigest }),
    mustReport,
  };
}

// ---------------------------------------------------------------------------------------------------
// Tar headers that claim absurd sizes

/**
 * - "pax-header-size": a pax extended header ('x') whose own ustar size field claims `claimedSize`;
 * - "pax-record-size": an honest 'x' header whose `size=` record gives the next file `claimedSize`;
 * - "gnu-longname-size": a GNU long name ('L', `././@LongLink`) claiming `claimedSize`;
 * - "past-eof": after a valid archive's entries, a regular file claiming `claimedSize` with 512 bytes
 *   present before the file ends.
 * The first three come first in the archive, before a valid classic docker-archive.
 */
export type AbsurdHeaderVariant = "pax-header-size" | "pax-record-size" | "gnu-longname-size" | "past-eof";

export interface AbsurdTarArchive extends HostileArchive {
  variant: AbsurdHeaderVariant;
  claimedSize: bigint;
  /** Offset of the header that makes the claim, and of the data it claims. */
  headerOffset: number;
  dataOffset: number;
  /** How the ustar size field is encoded: octal up to 8 GiB - 1, base-256 (GNU) beyond. */
  sizeField: "octal" | "base-256" | "pax-record";
  /** The file's apparent size. */
  fileSize: number;
  /** The claimed data exists as a hole in a sparse file, so end-of-file checks pass. */
  covered: boolean;
}

const BLOCK = 512;

/** One ustar header block, written by hand so any size (bigint, base-256) and type flag can be claimed. */
export function rawTarHeader(fields: { name: string; typeflag: string; size: bigint | number; mode?: number; linkname?: string }): Uint8Array<ArrayBuffer> {
  const block = Buffer.alloc(BLOCK);
  const text = (value: string, offset: number, length: number): void => {
    block.write(value, offset, Math.min(length, Buffer.byteLength(value)), "utf8");
  };
  const octal = (value: number | bigint, offset: number, length: number): void => {
    text(`${value.toString(8).padStart(length - 1, "0")}\0`, offset, length);
  };
  text(fields.name, 0, 100);
  octal(fields.mode ?? 0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  const size = BigInt(fields.size);
  if (size < 0n) throw new Error("rawTarHeader: negative size");
  if (size < 8n ** 11n) octal(size, 124, 12);
  else {
    if (size >= 1n << 88n) throw new Error("rawTarHeader: size beyond base-256's 88 bits");
    block[124] = 0x80;
    for (let i = 11, rest = size; i >= 1; i--, rest >>= 8n) block[124 + i] = Number(rest & 0xffn);
  }
  octal(Math.floor(FIXTURE_MTIME.getTime() / 1000), 136, 12);
  text(fields.typeflag, 156, 1);
  text(fields.linkname ?? "", 157, 100);
  text("ustar\u000000", 257, 8);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  text(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
  return new Uint8Array(block);
}

/** One pax record: "<length> key=value\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (`${length}${body}`.length !== length) length++;
  return `${length}${body}`;
}

function padded(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.length / BLOCK) * BLOCK);
  out.set(data, 0);
  return out;
}

/**
 * A tar with one header claiming `claimedSize` (default 8 GiB, so base-256 in the ustar field) and a
 * valid classic docker-archive around it. With `coverClaim`, the file is extended sparsely so the
 * claimed data exists (as a hole) and the valid archive follows it: a reader that checks the claim
 * against the file size passes, and only one that refuses to allocate or buffer it survives. Tiny on
 * disk either way.
 */
export async function writeAbsurdTarArchive(
  outPath: string,
  variant: AbsurdHeaderVariant,
  opts: { claimedSize?: bigint | number; coverClaim?: boolean } = {},
): Promise<AbsurdTarArchive> {
  const claimedSize = BigInt(opts.claimedSize ?? 8n * 1024n ** 3n);
  const covered = opts.coverClaim ?? false;
  if (covered && variant === "past-eof") throw new Error('"past-eof" cannot be covered: then it is just a big sparse entry');
  if (covered && claimedSize > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("coverClaim needs a claim a file can hold");
  // A valid archive written first to the same path, then rewritten around the hostile header.
  await writeClassicDockerArchive(outPath, { layers: [GOOD_LAYER], repoTag: REPO_TAG });
  const validBytes = new Uint8Array(await Bun.file(outPath).arrayBuffer());
  const valid = validBytes.subarray(0, validBytes.length - 2 * BLOCK); // without the end-of-archive blocks
  const sizeField = variant === "pax-record-size" ? "pax-record" : claimedSize < 8n ** 11n ? "octal" : "base-256";

  let head: Uint8Array;
  let dataOffset: number;
  let headerOffset = 0;
  switch (variant) {
    case "pax-header-size": {
      head = concat(rawTarHeader({ name: "PaxHeaders.0/manifest.json", typeflag: "x", size: claimedSize }), padded(utf8(paxRecord("path", "manifest.json"))));
      dataOffset = BLOCK;
      break;
    }
    case "pax-record-size": {
      const records = utf8(paxRecord("size", claimedSize.toString()) + paxRecord("path", "huge.bin"));
      const pax = concat(rawTarHeader({ name: "PaxHeaders.0/huge.bin", typeflag: "x", size: records.length }), padded(records));
      headerOffset = pax.length;
      head = concat(pax, rawTarHeader({ name: "huge.bin", typeflag: "0", size: 0 }), padded(utf8("the pax record says this file is huge\n")));
      dataOffset = headerOffset + BLOCK;
      break;
    }
    case "gnu-longname-size": {
      head = concat(rawTarHeader({ name: "././@LongLink", typeflag: "L", size: claimedSize }), padded(utf8("manifest.json\0")));
      dataOffset = BLOCK;
      break;
    }
    case "past-eof": {
      headerOffset = valid.length;
      head = concat(
        valid,
        rawTarHeader({ name: "zz-past-eof.bin", typeflag: "0", size: claimedSize }),
        padded(utf8("only one block of the claimed data is here\n")),
      );
      dataOffset = headerOffset + BLOCK;
      break;
    }
  }
  const handle = await open(outPath, "w");
  let fileSize: number;
  try {
    await handle.write(head, 0, head.length, 0);
    if (variant === "past-eof") fileSize = head.length;
    else if (covered) {
      const after = dataOffset + Math.ceil(Number(claimedSize) / BLOCK) * BLOCK;
      await handle.write(validBytes, 0, validBytes.length, after);
      fileSize = after + validBytes.length;
    } else {
      await handle.write(validBytes, 0, validBytes.length, head.length);
      fileSize = head.length + validBytes.length;
    }
  } finally {
    await handle.close();
  }
  const what = {
    "pax-header-size": "pax extended header",
    "pax-record-size": "pax size record",
    "gnu-longname-size": "GNU long-name entry",
    "past-eof": "regular entry",
  }[variant];
  return {
    path: outPath,
    variant,
    claimedSize,
    headerOffset,
    dataOffset,
    sizeField,
    fileSize,
    covered,
    mustReport: covered
      ? `a ${what} claims ${claimedSize} bytes: refuse it (or skip it) without allocating or buffering that much`
      : `a ${what} claims ${claimedSize} bytes but the file ends at byte ${fileSize}: refuse the archive as corrupt, without allocating the claim`,
  };
}

/** Regular files of a plain ustar archive as makeTar writes it (no pax, no GNU extensions). */
function readTarFiles(bytes: Uint8Array): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  const buffer = Buffer.from(bytes);
  for (let offset = 0; offset + BLOCK <= buffer.length; ) {
    const header = buffer.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break;
    const field = (start: number, length: number): string => header.toString("utf8", start, start + length).replace(/\0.*$/s, "");
    const size = Number.parseInt(field(124, 12).trim() || "0", 8);
    if (field(156, 1) === "0" || field(156, 1) === "") files.set(field(0, 100), new Uint8Array(buffer.subarray(offset + BLOCK, offset + BLOCK + size)));
    offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  return files;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------------
// An image archive under the wrong image id, and a fake engine that reports that id

export interface WrongIdArchive extends HostileArchive {
  /** The id in the file name (`<claimedId>.tar`): what the engine will say the image is. */
  claimedId: string;
  /** The config digest hex of the image really inside. */
  actualId: string;
  /** Config bytes of the claimed image (whose sha256 is claimedId), for a fake engine to save if asked. */
  claimedConfig: Uint8Array<ArrayBuffer>;
}

/**
 * A valid classic docker-archive of one image, saved in `folder` as `<id of another image>.tar`: the
 * name the daemon path reuses without saving again. A correct tool checks that the reused archive's
 * config digest is the id it asked for, and saves again (or refuses) when it is not.
 */
export async function writeWrongIdArchive(folder: string, opts: { claimedId?: string } = {}): Promise<WrongIdArchive> {
  const claimedConfig = makeConfig([digestOf(GOOD_LAYER)], { "org.example.which": "the image the engine reports" });
  const claimedId = opts.claimedId ?? hexOf(digestOf(claimedConfig));
  const config = makeConfig([digestOf(GOOD_LAYER)], { "org.example.which": "an older image left under that name" });
  const path = join(folder, `${claimedId}.tar`);
  const written = await writeClassicDockerArchive(path, { layers: [GOOD_LAYER], config, repoTag: REPO_TAG });
  const actualId = hexOf(written.configDigest);
  return {
    path,
    claimedId,
    actualId,
    claimedConfig,
    mustReport: `${claimedId}.tar holds image ${actualId}, not ${claimedId}: do not push it as ${claimedId}`,
  };
}

export interface FakeEngine {
  /** Executable to pass as `--engine` / DOCKER_BIN. */
  path: string;
  /** One line per invocation: the arguments, space-separated. */
  logPath: string;
  calls(): Promise<string[]>;
}

/**
 * A `docker`-like script: `image inspect ...` prints `sha256:<id>`; `save -o <file> <ref>` copies
 * `saveFrom` there and `save <ref>` writes it to stdout (both fail when it is unset, so a test proves no
 * save happened); anything else fails.
 */
export async function writeFakeEngine(dir: string, opts: { id: string; saveFrom?: string }): Promise<FakeEngine> {
  const path = join(dir, "fake-docker");
  const logPath = join(dir, "fake-docker.log");
  const q = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;
  const script = [
    "#!/bin/sh",
    `printf '%s\\n' "$*" >> ${q(logPath)}`,
    'if [ "$1" = image ] && [ "$2" = inspect ]; then',
    `  echo ${q(`sha256:${opts.id}`)}`,
    "  exit 0",
    "fi",
    'if [ "$1" = save ] && [ "$2" = -o ]; then',
    opts.saveFrom === undefined ? '  echo "fake engine: save is not allowed in this test" >&2; exit 1' : `  cp ${q(opts.saveFrom)} "$3" && exit 0; exit 1`,
    "fi",
    // `docker save <ref>` writes the archive to stdout: the form the CLI uses, reading it as it comes.
    'if [ "$1" = save ]; then',
    opts.saveFrom === undefined ? '  echo "fake engine: save is not allowed in this test" >&2; exit 1' : `  exec cat ${q(opts.saveFrom)}`,
    "fi",
    'echo "fake engine: unsupported: $*" >&2',
    "exit 2",
    "",
  ].join("\n");
  await writeFile(path, script);
  await chmod(path, 0o755);
  return {
    path,
    logPath,
    calls: async () => (await readFile(logPath, "utf8").catch(() => "")).split("\n").filter((line) => line !== ""),
  };
}

// ---------------------------------------------------------------------------------------------------
// .cache poisoning

/**
 * The tool's cache: `<sha256 hex>` = a compressed blob, `<layer diff_id hex>-<algorithm>-<level>-ptr` =
 * JSON `{"digest":"sha256:...","size":N}` naming the blob the layer became (more fields may come:
 * every helper here keeps what it does not know).
 */
export interface CachePointer {
  /** File name and full path. */
  name: string;
  path: string;
  layerHex: string;
  algorithm: string;
  level: string;
  /** The whole JSON object, unknown fields included. */
  fields: Record<string, unknown>;
  digest: string;
  size: number;
}

const POINTER_NAME = /^([a-f0-9]{64})-(.+)-([^-]+)-ptr$/;

/** Every pointer file in `cacheDir`, parsed (ones that do not parse as an object are skipped). */
export async function readCachePointers(cacheDir: string): Promise<CachePointer[]> {
  const out: CachePointer[] = [];
  for (const name of (await readdir(cacheDir)).sort()) {
    const match = POINTER_NAME.exec(name);
    if (match === null) continue;
    const path = join(cacheDir, name);
    let fields: unknown;
    try {
      fields = JSON.parse(await readFile(path, "utf8"));
    } catch {
      continue;
    }
    if (typeof fields !== "object" || fields === null || Array.isArray(fields)) continue;
    const record = fields as Record<string, unknown>;
    out.push({
      name,
      path,
      layerHex: match[1] ?? "",
      algorithm: match[2] ?? "",
      level: match[3] ?? "",
      fields: record,
      digest: typeof record.digest === "string" ? record.digest : "",
      size: typeof record.size === "number" ? record.size : Number.NaN,
    });
  }
  return out;
}

export interface SeededLayer {
  pointer: CachePointer;
  /** The uncompressed layer (its digest is the pointer's diff_id). */
  layer: Uint8Array;
  blobPath: string;
}

/**
 * Writes a cache the way the tool does (blob files named by digest, one pointer per layer), from layers
 * compressed here, so cache tests need not run the tool first. `extraFields` are added to each pointer.
 */
export async function seedCache(
  cacheDir: string,
  layers: Uint8Array[],
  opts: { compression?: "gzip" | "zstd"; level?: number; extraFields?: Record<string, unknown> } = {},
): Promise<SeededLayer[]> {
  const compression = opts.compression ?? "gzip";
  const level = opts.level ?? (compression === "gzip" ? 2 : 3);
  await mkdir(cacheDir, { recursive: true });
  const seeded: SeededLayer[] = [];
  for (const layer of layers) {
    const blob = compression === "gzip" ? new Uint8Array(gzipSync(layer, { level })) : new Uint8Array(Bun.zstdCompressSync(layer, { level }));
    const digest = digestOf(blob);
    const blobPath = join(cacheDir, hexOf(digest));
    await writeFile(blobPath, blob);
    const name = `${sha256Hex(layer)}-${compression}-${level}-ptr`;
    const fields = { digest, size: blob.length, ...opts.extraFields };
    await writeFile(join(cacheDir, name), JSON.stringify(fields));
    seeded.push({
      pointer: {
        name,
        path: join(cacheDir, name),
        layerHex: sha256Hex(layer),
        algorithm: compression,
        level: String(level),
        fields,
        digest,
        size: blob.length,
      },
      layer,
      blobPath,
    });
  }
  return seeded;
}

/** Swaps two pointer files' contents byte for byte: each layer now claims the other's blob. */
export async function swapCachePointers(cacheDir: string, a: string | CachePointer, b: string | CachePointer): Promise<void> {
  const pathA = join(cacheDir, typeof a === "string" ? a : a.name);
  const pathB = join(cacheDir, typeof b === "string" ? b : b.name);
  const [bytesA, bytesB] = await Promise.all([readFile(pathA), readFile(pathB)]);
  await Promise.all([writeFile(pathA, bytesB), writeFile(pathB, bytesA)]);
}

/** Merges `patch` into a pointer's JSON (other fields kept), e.g. to name a missing blob or a wrong size. */
export async function rewriteCachePointer(cacheDir: string, pointer: string | CachePointer, patch: Record<string, unknown>): Promise<Record<string, unknown>> {
  const path = join(cacheDir, typeof pointer === "string" ? pointer : pointer.name);
  const current: unknown = JSON.parse(await readFile(path, "utf8"));
  const fields = { ...(typeof current === "object" && current !== null ? current : {}), ...patch };
  await writeFile(path, JSON.stringify(fields));
  return fields;
}

export interface ReplacedBlob extends HostileArchive {
  /** The blob's name (what it claims to be) and its unchanged size. */
  claimedDigest: string;
  size: number;
  /** What the file now hashes to, and what it decompresses to. */
  actualDigest: string;
  actualDiffId: string;
  compression: "gzip" | "zstd" | "none";
}

/**
 * Replaces the cached blob `digest` with another valid blob of exactly the same size: a gzip (or zstd,
 * by its magic) stream of a different layer tar; bytes of another pattern for anything else. Size
 * checks pass; only re-hashing the file catches it.
 */
export async function replaceCachedBlobSameSize(cacheDir: string, digest: string): Promise<ReplacedBlob> {
  const path = join(cacheDir, hexOf(digest));
  const original = new Uint8Array(await readFile(path));
  const compression = startsWith(original, GZIP_HEADER.subarray(0, 2)) ? "gzip" : startsWith(original, ZSTD_MAGIC) ? "zstd" : "none";
  let replacement: Uint8Array;
  let content: Uint8Array;
  if (compression === "none") {
    replacement = original.map((byte) => byte ^ 0x5a);
    content = replacement;
  } else {
    replacement = sameSizeCompressed(original.length, undefined, compression);
    content = compression === "gzip" ? new Uint8Array(gunzipSync(replacement)) : new Uint8Array(Bun.zstdDecompressSync(replacement));
  }
  // Through a temporary name, as a cache writer would: the swap is atomic for a concurrent reader.
  const temp = `${path}.poison`;
  await writeFile(temp, replacement);
  await rename(temp, path);
  return {
    path,
    claimedDigest: digest,
    size: original.length,
    actualDigest: digestOf(replacement),
    actualDiffId: digestOf(content),
    compression,
    mustReport: `cached blob ${digest} now hashes to ${digestOf(replacement)}: do not reuse or upload it; compress the layer again`,
  };
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return prefix.every((byte, i) => bytes[i] === byte);
}

export interface DroppedTemp extends HostileArchive {
  /** The pid written into the name. */
  pid: number;
  kind: "directory" | "symlink";
  /** For "symlink": a file outside the cache that must still exist after the tool's clean-up. */
  mustSurvive?: string;
}

/**
 * Drops something named like a temporary file of a dead run (`.tmp-<pid>-<hex>`) into the cache: by
 * default a non-empty directory (a clean-up calling rm without recursive fails on it), or a symlink to
 * a folder outside the cache holding a file that must survive (a clean-up must not follow it).
 * `pid` defaults to one that is certainly not running.
 */
export async function dropTempInCache(
  cacheDir: string,
  opts: { pid?: number; kind?: "directory" | "symlink"; outsideDir?: string } = {},
): Promise<DroppedTemp> {
  const pid = opts.pid ?? deadPid();
  const kind = opts.kind ?? "directory";
  const path = join(cacheDir, `.tmp-${pid}-${sha256Hex(`${cacheDir}:${pid}:${kind}`).slice(0, 12)}`);
  if (kind === "directory") {
    await mkdir(path);
    await writeFile(join(path, "inside.txt"), "a file inside a directory named like a temp file\n");
    return { path, pid, kind, mustReport: `${path} is a directory: the orphan clean-up must skip or remove it without failing the run` };
  }
  const outside = opts.outsideDir;
  if (outside === undefined) throw new Error('dropTempInCache: kind "symlink" needs outsideDir');
  const mustSurvive = join(outside, "precious.txt");
  await writeFile(mustSurvive, "must survive the cache clean-up\n");
  await symlink(outside, path);
  return { path, pid, kind, mustSurvive, mustReport: `${path} is a symlink out of the cache: clean-up may remove the link, never ${mustSurvive}` };
}

/** The pid of a child that has exited, checked to be free (pids are recycled only after wrapping). */
export function deadPid(): number {
  for (let i = 0; i < 10; i++) {
    const child = spawnSync("/bin/sh", ["-c", "echo $$"], { encoding: "utf8" });
    const pid = Number(child.stdout.trim());
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ESRCH") return pid;
    }
  }
  throw new Error("deadPid: could not find a pid that is not running");
}
