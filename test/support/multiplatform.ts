/**
 * Multi-platform and multi-image inputs, built offline and deterministically (same inputs, same bytes).
 *
 * Images
 * - buildPlatformImages(workDir, ["linux/amd64", "linux/arm64", "linux/arm/v7"]): one image per platform,
 *   made by umoci (init/new/config --os/--architecture, then unpack + repack for each of 2 layers), with
 *   small files whose contents name the platform. Returns the uncompressed layer tars, umoci's gzip
 *   blobs and the exact config bytes. umoci 0.4.7 has no `--variant`: the variant is written into the
 *   config JSON afterwards. (`umoci insert` is not used: 0.4.7 writes its layer tars without padding or
 *   end-of-archive blocks, which GNU tar and Go's archive/tar reject; repack writes proper tars.)
 *
 * OCI image layouts (directories)
 * - writeMultiPlatformLayout(dir, opts) -> MultiPlatformLayout: index.json names one nested image index
 *   listing a manifest per platform. Options: `compression` of the layers ("gzip" = umoci's blobs, "zstd",
 *   "none"); `manifestAnnotations`, `layerAnnotations`, `indexAnnotations`; `dockerMediaTypes` (Docker v2
 *   schema 2 manifest list, manifests, config and layers inside the OCI layout); `attestations`
 *   (buildx-style attestation manifests, platform unknown/unknown, `vnd.docker.reference.*` annotations,
 *   an `application/vnd.in-toto+json` layer); `missingPlatforms` (listed in the index, but manifest,
 *   config, layers and attestation absent, as in a partial containerd save); `refName`
 *   (`org.opencontainers.image.ref.name`) and `imageName` (`io.containerd.image.name`) on the index.json
 *   entry; `flat` (index.json itself lists the platform manifests, no nested index).
 * - twoImageLayout(dir): index.json lists two single-platform images, ref.name "one" and "two".
 * - checkLayout(dir): walks every descriptor reachable from index.json and checks blob size and sha256;
 *   returns the digests that are absent.
 *
 * Archives (files)
 * - tarDirectory(dir, out): a deterministic tar of a directory (walk order, fixed mtime, uid/gid 0).
 * - compressArchive(tar, "gzip" | "zstd"): `<tar>.gz` / `<tar>.zst` beside it (or at `out`).
 * - ociArchiveWithSkopeo(layoutDir, out): `skopeo copy --all --preserve-digests oci:<dir> oci-archive:<out>`.
 * - containerdStyleSave(out, opts): what `docker save` writes from Docker >= 25's containerd image store:
 *   the multi-platform layout (compressed blobs, nested index, maybe a missing platform) plus
 *   `manifest.json` for one platform (linux/amd64 when present), named `docker.io/<repo>:<tag>`.
 * - twoImageDockerArchive(out): a classic (Docker < 25) docker-archive holding two images with different
 *   RepoTags that share their first layer (stored once), as `docker save a b` writes it.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, readdir, readFile, readlink, rm, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, createZstdCompress } from "node:zlib";
import { FIXTURE_MTIME, compressLayer, digestOf, makeConfig, makeLayerTar, makeTar, makeTempDir, sha256Hex, utf8, type TarEntry } from "./fixtures.ts";
import { runOk } from "./ports.ts";
import { skopeo } from "./skopeo.ts";

export const MT = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  /** containerd's name for it; not in Docker's spec, and containers/image refuses zstd in schema 2. */
  dockerLayerZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  inToto: "application/vnd.in-toto+json",
} as const;

export const ANNOTATION = {
  refName: "org.opencontainers.image.ref.name",
  containerdName: "io.containerd.image.name",
  referenceType: "vnd.docker.reference.type",
  referenceDigest: "vnd.docker.reference.digest",
  predicateType: "in-toto.io/predicate-type",
} as const;

const OCI_LAYOUT = JSON.stringify({ imageLayoutVersion: "1.0.0" });

// ---------------------------------------------------------------------------------------------------
// Platforms

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export const DEFAULT_PLATFORMS = ["linux/amd64", "linux/arm64"] as const;

/** "linux/arm/v7" -> {os: "linux", architecture: "arm", variant: "v7"} */
export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, extra] = text.split("/");
  if (!os || !architecture || extra !== undefined) throw new Error(`not a platform: ${text}`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** {os, architecture, variant} -> "os/architecture[/variant]" */
export function platformKey(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((x) => x !== undefined && x !== "").join("/");
}

/** The index's `platform` object, in the field order the OCI spec and buildx use. */
function platformObject(p: Platform): Record<string, string> {
  return { architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}) };
}

// ---------------------------------------------------------------------------------------------------
// Per-platform images with umoci

export interface PlatformImage {
  platform: Platform;
  /** "linux/arm/v7" */
  key: string;
  /** Files of each layer (path in the image -> content); the contents name the platform. */
  files: Record<string, string>[];
  /** Uncompressed layer tars as umoci wrote them; sha256 = diff_id. */
  layers: Uint8Array[];
  /** umoci's gzip blobs of the same layers. */
  gzipLayers: Uint8Array[];
  diffIds: string[];
  /** Exact config bytes (umoci's, plus `variant` when the platform has one). */
  configBytes: Uint8Array;
  configDigest: string;
}

/** Files of layer `n` (0 or 1) of a platform's image: distinct, small, naming the platform. */
function platformFiles(key: string, n: number): Record<string, string> {
  const slug = key.replaceAll("/", "-");
  return n === 0
    ? { [`etc/platform-${slug}.txt`]: `built for ${key}\n`, "etc/os-release": `ID=fixture\nPLATFORM=${key}\n` }
    : { [`app/${slug}.bin`]: `${`payload for ${key} `.repeat(20)}\n` };
}

/** Sets every path under `root` (and `root`) to FIXTURE_MTIME, so repack output does not depend on the clock. */
async function pinMtimes(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    const path = join(root, name);
    if ((await lstat(path)).isDirectory()) await pinMtimes(path);
    else await utimes(path, FIXTURE_MTIME, FIXTURE_MTIME);
  }
  await utimes(root, FIXTURE_MTIME, FIXTURE_MTIME);
}

interface JsonDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hexOf(digest: string): string {
  const hex = digest.slice("sha256:".length);
  if (!digest.startsWith("sha256:") || !/^[0-9a-f]{64}$/.test(hex)) throw new Error(`not a sha256 digest: ${digest}`);
  return hex;
}

async function readBlob(layoutDir: string, digest: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(join(layoutDir, "blobs", "sha256", hexOf(digest))));
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (!isRecord(value)) throw new Error(`${what}: not a JSON object`);
  return value;
}

function descriptors(value: unknown, what: string): JsonDescriptor[] {
  if (!Array.isArray(value)) throw new Error(`${what}: not an array`);
  return value.map((d, i) => {
    if (!isRecord(d) || typeof d.mediaType !== "string" || typeof d.digest !== "string" || typeof d.size !== "number") {
      throw new Error(`${what}[${i}]: not a descriptor`);
    }
    return { mediaType: d.mediaType, digest: d.digest, size: d.size };
  });
}

/**
 * Builds one image per platform with umoci in `<workDir>/umoci` (an OCI layout the caller may keep; tags
 * are the platform keys with `/` -> `-`) and returns each image's layers and config. Deterministic.
 */
export async function buildPlatformImages(workDir: string, platforms: readonly string[] = DEFAULT_PLATFORMS): Promise<PlatformImage[]> {
  const layout = join(workDir, "umoci");
  await runOk(["umoci", "init", "--layout", layout]);
  const created = FIXTURE_MTIME.toISOString().replace(/\.000Z$/, "Z");
  const images: PlatformImage[] = [];
  for (const key of platforms) {
    const platform = parsePlatform(key);
    const tag = key.replaceAll("/", "-");
    const image = `${layout}:${tag}`;
    const bundle = join(workDir, `bundle-${tag}`);
    await runOk(["umoci", "new", "--image", image]);
    await runOk(["umoci", "config", "--image", image, "--os", platform.os, "--architecture", platform.architecture, "--created", created, "--no-history"]);
    await runOk(["umoci", "unpack", "--image", image, bundle]);
    const files: Record<string, string>[] = [];
    for (let n = 0; n < 2; n++) {
      const layerFiles = platformFiles(key, n);
      files.push(layerFiles);
      for (const [path, content] of Object.entries(layerFiles)) {
        await mkdir(join(bundle, "rootfs", path, ".."), { recursive: true });
        await writeFile(join(bundle, "rootfs", path), content);
      }
      await pinMtimes(join(bundle, "rootfs"));
      await runOk(["umoci", "repack", "--image", image, "--history.created", created, ...(n === 0 ? ["--refresh-bundle"] : []), bundle]);
    }
    await rm(bundle, { recursive: true, force: true });

    const index = parseJson(new Uint8Array(await readFile(join(layout, "index.json"))), "umoci index.json");
    const raw = Array.isArray(index.manifests) ? index.manifests : [];
    const tagged = raw.find((m: unknown) => isRecord(m) && isRecord(m.annotations) && m.annotations[ANNOTATION.refName] === tag);
    const entry = tagged === undefined ? undefined : descriptors([tagged], `umoci index.json entry ${tag}`)[0];
    if (entry === undefined) throw new Error(`umoci layout has no image tagged ${tag}`);
    const manifest = parseJson(await readBlob(layout, entry.digest), `umoci manifest ${tag}`);
    const config = descriptors([manifest.config], "umoci config")[0];
    if (config === undefined) throw new Error("umoci manifest has no config");
    let configBytes = await readBlob(layout, config.digest);
    if (platform.variant !== undefined) {
      // umoci 0.4.7 cannot set it; put it right after "architecture", where Go's image-spec struct has it.
      const text = new TextDecoder().decode(configBytes);
      const patched = text.replace(/("architecture":"[^"]*")/, `$1,"variant":${JSON.stringify(platform.variant)}`);
      if (patched === text) throw new Error(`umoci config for ${key} has no architecture field: ${text}`);
      configBytes = utf8(patched);
    }
    const gzipLayers: Uint8Array[] = [];
    const layers: Uint8Array[] = [];
    for (const layer of descriptors(manifest.layers, "umoci layers")) {
      const blob = await readBlob(layout, layer.digest);
      gzipLayers.push(blob);
      layers.push(new Uint8Array(Bun.gunzipSync(new Uint8Array(blob))));
    }
    const diffIds = layers.map((l) => digestOf(l));
    const configJson = parseJson(configBytes, "config");
    const rootfs = isRecord(configJson.rootfs) ? configJson.rootfs : {};
    if (JSON.stringify(rootfs.diff_ids) !== JSON.stringify(diffIds)) throw new Error(`umoci config diff_ids do not match its layers for ${key}`);
    images.push({ platform, key, files, layers, gzipLayers, diffIds, configBytes, configDigest: digestOf(configBytes) });
  }
  await runOk(["umoci", "gc", "--layout", layout]);
  return images;
}

// ---------------------------------------------------------------------------------------------------
// Multi-platform OCI layout

export type Compression = "gzip" | "zstd" | "none";

export interface MultiPlatformLayoutOptions {
  /** Images to lay out; default: buildPlatformImages() of `platforms` in a temp dir (removed after). */
  images?: PlatformImage[];
  /** Used when `images` is not given; default DEFAULT_PLATFORMS. */
  platforms?: readonly string[];
  /** Layer blobs: "gzip" (default: umoci's own gzip output), "zstd" (level 3) or "none". */
  compression?: Compression;
  /** Put on every platform manifest (`annotations`). */
  manifestAnnotations?: Record<string, string>;
  /** Put on every layer descriptor of every platform manifest. */
  layerAnnotations?: Record<string, string>;
  /** Put on the nested index (on index.json in flat mode). */
  indexAnnotations?: Record<string, string>;
  /** Docker v2 schema 2 media types for the list, manifests, configs and layers (attestations stay OCI). */
  dockerMediaTypes?: boolean;
  /** A buildx-style attestation manifest per platform, listed after the platforms. */
  attestations?: boolean;
  /** Platforms (keys) listed in the index whose manifest, config, layers and attestation are not written. */
  missingPlatforms?: readonly string[];
  /** `org.opencontainers.image.ref.name` on the index.json entry (on each platform entry in flat mode). */
  refName?: string;
  /** `io.containerd.image.name` likewise. */
  imageName?: string;
  /** index.json lists the platform (and attestation) manifests itself; no nested index. */
  flat?: boolean;
}

export interface LayoutAttestation {
  manifestDigest: string;
  manifestBytes: Uint8Array;
  configDigest: string;
  /** The in-toto statement layer. */
  statementDigest: string;
}

export interface LayoutPlatform {
  platform: Platform;
  key: string;
  /** False for a `missingPlatforms` entry: listed, no blobs. */
  present: boolean;
  manifestMediaType: string;
  manifestDigest: string;
  manifestBytes: Uint8Array;
  configMediaType: string;
  configDigest: string;
  configBytes: Uint8Array;
  diffIds: string[];
  layerDigests: string[];
  layerMediaTypes: string[];
  layerSizes: number[];
  attestation?: LayoutAttestation;
}

export interface MultiPlatformLayout {
  dir: string;
  /** Exact bytes of index.json. */
  indexJsonBytes: Uint8Array;
  /** The image index (the nested one, or index.json in flat mode): what a registry stores at the tag. */
  indexMediaType: string;
  indexDigest: string;
  indexBytes: Uint8Array;
  platforms: LayoutPlatform[];
  /** Every blob written under blobs/sha256. */
  blobDigests: string[];
  /** Blobs referenced but deliberately absent (missing platforms). */
  missingDigests: string[];
}

function layerMediaType(compression: Compression, docker: boolean): string {
  if (docker) return compression === "gzip" ? MT.dockerLayerGzip : compression === "zstd" ? MT.dockerLayerZstd : MT.dockerLayer;
  return compression === "gzip" ? MT.ociLayerGzip : compression === "zstd" ? MT.ociLayerZstd : MT.ociLayer;
}

function withAnnotations<T extends Record<string, unknown>>(
  value: T,
  annotations: Record<string, string> | undefined,
): T & { annotations?: Record<string, string> } {
  return annotations === undefined || Object.keys(annotations).length === 0 ? value : { ...value, annotations };
}

/** A buildx-style attestation manifest for `subjectDigest` (SPDX predicate, in-toto statement layer). */
function attestationFor(subjectDigest: string, key: string): { blobs: Map<string, Uint8Array>; attestation: LayoutAttestation } {
  const statement = utf8(
    JSON.stringify({
      _type: "https://in-toto.io/Statement/v0.1",
      predicateType: "https://spdx.dev/Document",
      subject: [{ name: `pkg:docker/fixture@${key}`, digest: { sha256: hexOf(subjectDigest) } }],
      predicate: { spdxVersion: "SPDX-2.3", name: `fixture ${key}` },
    }),
  );
  const config = utf8(JSON.stringify({ architecture: "unknown", os: "unknown", config: {}, rootfs: { type: "layers", diff_ids: [digestOf(statement)] } }));
  const manifest = utf8(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: digestOf(config), size: config.length },
      layers: [
        { mediaType: MT.inToto, digest: digestOf(statement), size: statement.length, annotations: { [ANNOTATION.predicateType]: "https://spdx.dev/Document" } },
      ],
    }),
  );
  const blobs = new Map<string, Uint8Array>([
    [digestOf(statement), statement],
    [digestOf(config), config],
    [digestOf(manifest), manifest],
  ]);
  return {
    blobs,
    attestation: { manifestDigest: digestOf(manifest), manifestBytes: manifest, configDigest: digestOf(config), statementDigest: digestOf(statement) },
  };
}

/** Writes `oci-layout`, `index.json` and the blobs into `dir` (created; must not hold a layout yet). */
async function writeLayoutFiles(dir: string, indexJson: Uint8Array, blobs: Map<string, Uint8Array>): Promise<void> {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  for (const [digest, bytes] of blobs) await writeFile(join(dir, "blobs", "sha256", hexOf(digest)), bytes);
  await writeFile(join(dir, "oci-layout"), OCI_LAYOUT);
  await writeFile(join(dir, "index.json"), indexJson);
}

/**
 * Writes a multi-platform OCI image layout into `dir` (created if needed; it should be new or empty,
 * since stale blobs would stay). See the file comment and the options.
 */
export async function writeMultiPlatformLayout(dir: string, opts: MultiPlatformLayoutOptions = {}): Promise<MultiPlatformLayout> {
  let images = opts.images;
  if (images === undefined) {
    const work = await makeTempDir("chunked-push-umoci-");
    try {
      images = await buildPlatformImages(work, opts.platforms ?? DEFAULT_PLATFORMS);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  const compression = opts.compression ?? "gzip";
  const docker = opts.dockerMediaTypes ?? false;
  const missing = new Set(opts.missingPlatforms ?? []);
  for (const key of missing) if (!images.some((i) => i.key === key)) throw new Error(`missingPlatforms: ${key} is not among the images`);

  const blobs = new Map<string, Uint8Array>();
  const missingDigests = new Set<string>();
  const platforms: LayoutPlatform[] = [];
  const entries: Record<string, unknown>[] = [];
  const attestationEntries: Record<string, unknown>[] = [];
  const nameAnnotations: Record<string, string> = {
    ...(opts.imageName === undefined ? {} : { [ANNOTATION.containerdName]: opts.imageName }),
    ...(opts.refName === undefined ? {} : { [ANNOTATION.refName]: opts.refName }),
  };

  for (const image of images) {
    const present = !missing.has(image.key);
    const own = new Map<string, Uint8Array>();
    const layerMt = layerMediaType(compression, docker);
    const layerBlobs = image.layers.map((layer, i) =>
      compression === "gzip" ? (image.gzipLayers[i] ?? compressLayer(layer, "gzip")) : compressLayer(layer, compression),
    );
    const configMediaType = docker ? MT.dockerConfig : MT.ociConfig;
    const manifestMediaType = docker ? MT.dockerManifest : MT.ociManifest;
    const manifestBytes = utf8(
      JSON.stringify(
        withAnnotations(
          {
            schemaVersion: 2,
            mediaType: manifestMediaType,
            config: { mediaType: configMediaType, digest: image.configDigest, size: image.configBytes.length },
            layers: layerBlobs.map((b) => withAnnotations({ mediaType: layerMt, digest: digestOf(b), size: b.length }, opts.layerAnnotations)),
          },
          opts.manifestAnnotations,
        ),
      ),
    );
    const manifestDigest = digestOf(manifestBytes);
    own.set(image.configDigest, image.configBytes);
    for (const b of layerBlobs) own.set(digestOf(b), b);
    own.set(manifestDigest, manifestBytes);
    const entry = { mediaType: manifestMediaType, digest: manifestDigest, size: manifestBytes.length, platform: platformObject(image.platform) };
    entries.push(opts.flat ? withAnnotations(entry, nameAnnotations) : entry);

    let attestation: LayoutAttestation | undefined;
    if (opts.attestations) {
      const made = attestationFor(manifestDigest, image.key);
      attestation = made.attestation;
      for (const [d, b] of made.blobs) own.set(d, b);
      attestationEntries.push({
        mediaType: MT.ociManifest,
        digest: attestation.manifestDigest,
        size: attestation.manifestBytes.length,
        annotations: { [ANNOTATION.referenceDigest]: manifestDigest, [ANNOTATION.referenceType]: "attestation-manifest" },
        platform: { architecture: "unknown", os: "unknown" },
      });
    }
    for (const [d, b] of own) {
      if (present) blobs.set(d, b);
      else missingDigests.add(d);
    }
    platforms.push({
      platform: image.platform,
      key: image.key,
      present,
      manifestMediaType,
      manifestDigest,
      manifestBytes,
      configMediaType,
      configDigest: image.configDigest,
      configBytes: image.configBytes,
      diffIds: image.diffIds,
      layerDigests: layerBlobs.map((b) => digestOf(b)),
      layerMediaTypes: layerBlobs.map(() => layerMt),
      layerSizes: layerBlobs.map((b) => b.length),
      ...(attestation === undefined ? {} : { attestation }),
    });
  }
  // A blob shared with a present platform is not missing.
  for (const d of blobs.keys()) missingDigests.delete(d);

  const indexMediaType = docker && !opts.flat ? MT.dockerList : MT.ociIndex;
  const indexBytes = utf8(
    JSON.stringify(withAnnotations({ schemaVersion: 2, mediaType: indexMediaType, manifests: [...entries, ...attestationEntries] }, opts.indexAnnotations)),
  );
  let indexJsonBytes: Uint8Array;
  if (opts.flat) {
    indexJsonBytes = indexBytes;
  } else {
    blobs.set(digestOf(indexBytes), indexBytes);
    indexJsonBytes = utf8(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        manifests: [withAnnotations({ mediaType: indexMediaType, digest: digestOf(indexBytes), size: indexBytes.length }, nameAnnotations)],
      }),
    );
  }
  await writeLayoutFiles(dir, indexJsonBytes, blobs);
  return {
    dir,
    indexJsonBytes,
    indexMediaType,
    indexDigest: digestOf(indexBytes),
    indexBytes,
    platforms,
    blobDigests: [...blobs.keys()],
    missingDigests: [...missingDigests],
  };
}

export interface LayoutCheck {
  /** Every digest reachable from index.json, in walk order. */
  reachable: string[];
  /** Reachable digests whose blob file is absent. */
  missing: string[];
}

/**
 * Walks index.json -> indexes -> manifests -> config and layers; throws if a present blob's size or
 * sha256 differs from its descriptor, and returns what is reachable and what is absent.
 */
export async function checkLayout(dir: string): Promise<LayoutCheck> {
  const reachable: string[] = [];
  const missing: string[] = [];
  const seen = new Set<string>();
  const visit = async (desc: JsonDescriptor): Promise<void> => {
    if (seen.has(desc.digest)) return;
    seen.add(desc.digest);
    reachable.push(desc.digest);
    let bytes: Uint8Array;
    try {
      bytes = await readBlob(dir, desc.digest);
    } catch {
      missing.push(desc.digest);
      return;
    }
    if (bytes.length !== desc.size) throw new Error(`${desc.digest}: ${bytes.length} bytes, descriptor says ${desc.size}`);
    if (digestOf(bytes) !== desc.digest) throw new Error(`${desc.digest}: content hashes to ${digestOf(bytes)}`);
    if (desc.mediaType === MT.ociIndex || desc.mediaType === MT.dockerList) {
      for (const d of descriptors(parseJson(bytes, desc.digest).manifests, `${desc.digest} manifests`)) await visit(d);
    } else if (desc.mediaType === MT.ociManifest || desc.mediaType === MT.dockerManifest) {
      const m = parseJson(bytes, desc.digest);
      for (const d of [...descriptors([m.config], `${desc.digest} config`), ...descriptors(m.layers, `${desc.digest} layers`)]) await visit(d);
    }
  };
  const index = parseJson(new Uint8Array(await readFile(join(dir, "index.json"))), "index.json");
  for (const d of descriptors(index.manifests, "index.json manifests")) await visit(d);
  return { reachable, missing };
}

// ---------------------------------------------------------------------------------------------------
// Two images in one layout / one docker-archive

export interface SimpleImage {
  /** ref.name (layout) or RepoTag (docker-archive). */
  name: string;
  configDigest: string;
  configBytes: Uint8Array;
  diffIds: string[];
  /** Layer blobs as stored (gzip in the layout, uncompressed in the docker-archive). */
  layerDigests: string[];
  /** The OCI manifest (layout only). */
  manifestDigest?: string;
  manifestBytes?: Uint8Array;
}

/** Two small images sharing their first layer; `names` label their configs. */
function twoImages(names: [string, string]): { layers: Uint8Array[]; configBytes: Uint8Array; diffIds: string[]; name: string }[] {
  const base = makeLayerTar({ "etc/base.txt": "shared base layer\n" });
  return names.map((name, i) => {
    const own = makeLayerTar({ [`app/image-${i + 1}.txt`]: `image ${i + 1}: ${name}\n` });
    const layers = [base, own];
    const diffIds = layers.map((l) => digestOf(l));
    return { layers, diffIds, configBytes: makeConfig(diffIds, { "org.example.image": name }), name };
  });
}

/**
 * An OCI layout whose index.json lists two single-platform (linux/amd64) images, gzip layers, with
 * `org.opencontainers.image.ref.name` "one" and "two" (override with `refNames`); skopeo reads each as
 * `oci:<dir>:one`.
 */
export async function twoImageLayout(dir: string, refNames: [string, string] = ["one", "two"]): Promise<{ dir: string; images: SimpleImage[] }> {
  const blobs = new Map<string, Uint8Array>();
  const entries: Record<string, unknown>[] = [];
  const images: SimpleImage[] = [];
  for (const img of twoImages(refNames)) {
    const gz = img.layers.map((l) => compressLayer(l, "gzip"));
    const manifestBytes = utf8(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: { mediaType: MT.ociConfig, digest: digestOf(img.configBytes), size: img.configBytes.length },
        layers: gz.map((b) => ({ mediaType: MT.ociLayerGzip, digest: digestOf(b), size: b.length })),
      }),
    );
    for (const b of [...gz, img.configBytes, manifestBytes]) blobs.set(digestOf(b), b);
    entries.push({ mediaType: MT.ociManifest, digest: digestOf(manifestBytes), size: manifestBytes.length, annotations: { [ANNOTATION.refName]: img.name } });
    images.push({
      name: img.name,
      configDigest: digestOf(img.configBytes),
      configBytes: img.configBytes,
      diffIds: img.diffIds,
      layerDigests: gz.map((b) => digestOf(b)),
      manifestDigest: digestOf(manifestBytes),
      manifestBytes,
    });
  }
  await writeLayoutFiles(dir, utf8(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: entries })), blobs);
  return { dir, images };
}

function splitRepoTag(repoTag: string): { repo: string; tag: string } {
  const slash = repoTag.lastIndexOf("/");
  const colon = repoTag.lastIndexOf(":");
  return colon > slash ? { repo: repoTag.slice(0, colon), tag: repoTag.slice(colon + 1) } : { repo: repoTag, tag: "latest" };
}

/**
 * A classic (Docker < 25) docker-archive with two images and different RepoTags (default
 * `fixture/one:1` and `fixture/two:2`): `<v1id>/{VERSION,json,layer.tar}` with the shared first layer
 * stored once, `<config hex>.json` each, manifest.json with two entries, `repositories`.
 */
export async function twoImageDockerArchive(
  out: string,
  repoTags: [string, string] = ["fixture/one:1", "fixture/two:2"],
): Promise<{ path: string; images: SimpleImage[] }> {
  const entries = new Map<string, TarEntry>();
  const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const images: SimpleImage[] = [];
  for (const img of twoImages(repoTags)) {
    let parent = "";
    const ids: string[] = [];
    img.layers.forEach((layer, i) => {
      const id = sha256Hex(`${parent} ${img.diffIds[i] ?? ""}`);
      if (!entries.has(`${id}/`)) {
        entries.set(`${id}/`, { path: `${id}/`, type: "Directory" });
        entries.set(`${id}/VERSION`, { path: `${id}/VERSION`, data: "1.0" });
        entries.set(`${id}/json`, {
          path: `${id}/json`,
          data: JSON.stringify({ id, ...(parent ? { parent } : {}), created: FIXTURE_MTIME.toISOString(), os: "linux" }),
        });
        entries.set(`${id}/layer.tar`, { path: `${id}/layer.tar`, data: layer });
      }
      ids.push(id);
      parent = id;
    });
    const configName = `${sha256Hex(img.configBytes)}.json`;
    entries.set(configName, { path: configName, data: img.configBytes });
    manifest.push({ Config: configName, RepoTags: [img.name], Layers: ids.map((id) => `${id}/layer.tar`) });
    const { repo, tag } = splitRepoTag(img.name);
    repositories[repo] = { ...repositories[repo], [tag]: ids[ids.length - 1] ?? "" };
    images.push({ name: img.name, configDigest: digestOf(img.configBytes), configBytes: img.configBytes, diffIds: img.diffIds, layerDigests: img.diffIds });
  }
  const sorted = [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const all: TarEntry[] = [
    ...sorted,
    { path: "manifest.json", data: JSON.stringify(manifest) },
    { path: "repositories", data: `${JSON.stringify(repositories)}\n` },
  ];
  await Bun.write(out, makeTar(all));
  return { path: out, images };
}

// ---------------------------------------------------------------------------------------------------
// Archive wrappers

/** Entries of `dir` in walk order (directories as `name/`), relative paths, contents read into memory. */
async function walkDirectory(root: string, rel = ""): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const names = (await readdir(join(root, rel))).sort();
  for (const name of names) {
    const path = rel === "" ? name : `${rel}/${name}`;
    const info = await lstat(join(root, path));
    if (info.isDirectory()) {
      entries.push({ path: `${path}/`, type: "Directory" });
      entries.push(...(await walkDirectory(root, path)));
    } else if (info.isSymbolicLink()) {
      entries.push({ path, type: "SymbolicLink", linkpath: await readlink(join(root, path)) });
    } else if (info.isFile()) {
      entries.push({ path, data: new Uint8Array(await readFile(join(root, path))) });
    }
  }
  return entries;
}

/**
 * A deterministic tar of `dir`'s contents (paths relative to it, sorted walk order, fixed mtime, uid/gid
 * 0): an OCI layout directory becomes what skopeo calls `oci-archive:`. Reads the files into memory.
 */
export async function tarDirectory(dir: string, out: string): Promise<string> {
  await Bun.write(out, makeTar(await walkDirectory(dir)));
  return out;
}

/** `<archive>.gz` (gzip level 6, header mtime 0) or `<archive>.zst` (zstd level 3) of a file, streamed. */
export async function compressArchive(archive: string, compression: "gzip" | "zstd", out?: string): Promise<string> {
  const target = out ?? `${archive}${compression === "gzip" ? ".gz" : ".zst"}`;
  const compressor = compression === "gzip" ? createGzip({ level: 6 }) : createZstdCompress();
  await pipeline(createReadStream(archive), compressor, createWriteStream(target));
  return target;
}

/** Gunzips a `.tar.gz` (for tests comparing it with the tar it came from). */
export async function gunzipFile(path: string, out: string): Promise<string> {
  await pipeline(createReadStream(path), createGunzip(), createWriteStream(out));
  return out;
}

/**
 * `skopeo copy --all --preserve-digests oci:<layoutDir>[:ref] oci-archive:<out>`: containers/image's own
 * oci-archive writer (blobs unchanged, index and manifests byte-identical). Fails on missing blobs.
 */
export async function ociArchiveWithSkopeo(layoutDir: string, out: string, ref?: string): Promise<string> {
  await rm(out, { force: true });
  await skopeo(["copy", "--quiet", "--all", "--preserve-digests", `oci:${layoutDir}${ref === undefined ? "" : `:${ref}`}`, `oci-archive:${out}`]);
  return out;
}

export interface ContainerdSave {
  path: string;
  /** What the archive holds; its `dir` is the archive's path (the directory it was built in is gone). */
  layout: MultiPlatformLayout;
  /** The platform manifest.json describes (linux/amd64 when present, else the first present one). */
  manifestJsonPlatform: LayoutPlatform;
  manifestJson: { Config: string; RepoTags: string[]; Layers: string[] }[];
  repoTag: string;
}

/** Docker's normalised name: `app:1` -> `docker.io/library/app:1`, `team/app:1` -> `docker.io/team/app:1`. */
export function dockerImageName(repoTag: string): string {
  const { repo, tag } = splitRepoTag(repoTag);
  const first = repo.split("/")[0] ?? "";
  const hasHost = repo.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  const full = hasHost ? repo : repo.includes("/") ? `docker.io/${repo}` : `docker.io/library/${repo}`;
  return `${full}:${tag}`;
}

/**
 * What `docker save <repoTag>` writes from Docker >= 25's containerd image store (see the file comment):
 * writeMultiPlatformLayout() with `refName` = the tag and `imageName` = Docker's full name (both
 * overridable), plus manifest.json for one present platform. Default `repoTag` is `fixture/multi:1`.
 */
export async function containerdStyleSave(out: string, opts: MultiPlatformLayoutOptions & { repoTag?: string } = {}): Promise<ContainerdSave> {
  const repoTag = opts.repoTag ?? "fixture/multi:1";
  const dir = await makeTempDir("chunked-push-cdsave-");
  try {
    const layout = await writeMultiPlatformLayout(dir, {
      ...opts,
      refName: opts.refName ?? splitRepoTag(repoTag).tag,
      imageName: opts.imageName ?? dockerImageName(repoTag),
    });
    const present = layout.platforms.filter((p) => p.present);
    const chosen = present.find((p) => p.key === "linux/amd64") ?? present[0];
    if (chosen === undefined) throw new Error("containerdStyleSave: every platform is missing");
    const manifestJson = [
      {
        Config: `blobs/sha256/${hexOf(chosen.configDigest)}`,
        RepoTags: [repoTag],
        Layers: chosen.layerDigests.map((d) => `blobs/sha256/${hexOf(d)}`),
      },
    ];
    await writeFile(join(dir, "manifest.json"), JSON.stringify(manifestJson));
    await tarDirectory(dir, out);
    return { path: out, layout: { ...layout, dir: out }, manifestJsonPlatform: chosen, manifestJson, repoTag };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** sha256 of a file, `sha256:<hex>` (for comparing archives). */
export async function fileDigest(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Uint8Array);
  return `sha256:${hash.digest("hex")}`;
}
