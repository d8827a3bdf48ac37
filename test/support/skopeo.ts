/**
 * Independent verification of what landed in a registry: skopeo (containers/image, not our code) pulls
 * the image into a `dir:` layout, then every blob is re-hashed, every layer decompressed according to
 * its media type and checked against the config's rootfs.diff_ids. If the CLI pushed a wrong byte, a
 * recompressed blob, a mislabelled media type or a config with different bytes, this throws.
 *
 * Pull-back verifiers, each reading a pushed image the way a different client does:
 * - pullAndVerify({ref, username, password, tlsVerify}) / verifyDirImage(dir): the checks above.
 * - inspectRaw(ref, access) -> {mediaType, bytes, digest}: the exact manifest (or index) at a tag.
 * - pullPlatform(ref, {os, arch, variant}, access): one platform of an index via skopeo's
 *   --override-os/--override-arch/--override-variant, verified as above (gzip, zstd and plain layers).
 * - podmanPullPlatform(store, ref, platform, access): `podman pull --platform` + `podman image inspect`.
 * - dockerdPullPlatform(dockerd, ref, platform, access): `docker pull --platform` on a private dockerd 20.10
 *   (which cannot pull zstd layers).
 * `access` holds optional credentials and, for an https registry, a `certDir` holding its `ca.crt`;
 * without `certDir` TLS is not verified (the local registries speak plain http).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import type { Dockerd } from "./dockerd.ts";
import type { PodmanStore } from "./podman.ts";
import { run, runOk, type RunResult } from "./ports.ts";

/** Flags every skopeo call gets: no dependence on the machine's policy.json or stored credentials. */
const SKOPEO_GLOBAL = ["--insecure-policy"];

/** Where containers/image keeps its blob-info cache when run as root (skopeo has no flag to move it). */
const BLOB_INFO_CACHE_DIR = "/var/lib/containers/cache";

let canIsolateCache: boolean | null = null;

/**
 * The argv that runs `skopeo --insecure-policy ...args` with a fresh, empty blob-info cache. skopeo 1.9.3
 * remembers, machine-wide, which compressed blobs it has seen for each diff_id and where; a later copy
 * then swaps a layer for another compression of it already in the destination registry (so an
 * oci-archive's gzip layers arrive with different digests) or, from a docker-archive, mounts an
 * uncompressed copy labelled `tar.gzip`. Results would depend on what earlier tests pushed. As root, each
 * call runs in a private mount namespace with a tmpfs over the cache dir; otherwise skopeo runs as is.
 */
export function skopeoArgv(args: string[]): string[] {
  if (canIsolateCache === null) {
    canIsolateCache =
      process.getuid?.() === 0 &&
      Bun.spawnSync(["unshare", "--mount", "--propagation", "private", "--", "true"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
  }
  if (!canIsolateCache) return ["skopeo", ...SKOPEO_GLOBAL, ...args];
  const script = `mkdir -p ${BLOB_INFO_CACHE_DIR} && mount -t tmpfs -o size=64m,mode=0700 skopeo-blob-cache ${BLOB_INFO_CACHE_DIR} && exec "$@"`;
  return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", "skopeo", ...SKOPEO_GLOBAL, ...args];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** The parts of a Docker v2 schema 2 / OCI image manifest we check. */
export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  [key: string]: unknown;
}

export interface ImageConfig {
  rootfs: { type: string; diff_ids: string[] };
  config?: { Labels?: Record<string, string> | null; [key: string]: unknown };
  [key: string]: unknown;
}

export interface PulledImage {
  manifest: ImageManifest;
  /** sha256 of the manifest bytes as pulled (what the registry reports as Docker-Content-Digest). */
  manifestDigest: string;
  manifestBytes: Uint8Array;
  configDigest: string;
  configBytes: Uint8Array;
  config: ImageConfig;
  /** Layer digests from the manifest, in order (duplicates kept). */
  layerDigests: string[];
  layerMediaTypes: string[];
  layerSizes: number[];
  /** rootfs.diff_ids from the config; each verified against the decompressed layer. */
  diffIds: string[];
}

export interface PullOptions {
  /** `host:port/repo:tag` or `host:port/repo@sha256:...` */
  ref: string;
  username?: string;
  password?: string;
  /** Always false here (plain-HTTP local registries); kept explicit so call sites read clearly. */
  tlsVerify: false;
}

/** Runs skopeo with the isolating global flags; throws with stderr on failure. */
export function skopeo(args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return runOk(skopeoArgv(args), { timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** Like skopeo(), but never throws: for tests that expect skopeo to refuse something. */
export function skopeoRun(args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return run(skopeoArgv(args), { timeoutMs: opts.timeoutMs ?? 120_000 });
}

function credsArgs(side: "src" | "dest", username?: string, password?: string): string[] {
  if (username === undefined) return [`--${side}-no-creds`];
  return [`--${side}-creds`, `${username}:${password ?? ""}`];
}

/**
 * `skopeo copy <source> docker://<ref>` to a plain-HTTP registry, e.g. to seed a registry with a
 * reference push or to check that a hand-built archive is readable by containers/image.
 * `source` is a full skopeo reference: `docker-archive:/x.tar`, `oci-archive:/x.tar:tag`, ...
 */
export async function skopeoPush(opts: { source: string; ref: string; username?: string; password?: string; extraArgs?: string[] }): Promise<RunResult> {
  return skopeo([
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    ...credsArgs("dest", opts.username, opts.password),
    ...(opts.extraArgs ?? []),
    opts.source,
    `docker://${opts.ref}`,
  ]);
}

/** sha256 of a stream, as `sha256:<hex>`, plus the number of bytes seen. */
async function hashStream(stream: Readable | ReadableStream<Uint8Array>): Promise<{ digest: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

function hashFile(path: string): Promise<{ digest: string; size: number }> {
  return hashStream(createReadStream(path));
}

type Compression = "gzip" | "zstd" | "none";

/** Compression a layer media type promises; throws on media types we do not know. */
function compressionOf(mediaType: string): Compression {
  if (/[.+]gzip$/.test(mediaType)) return "gzip";
  if (/[.+]zstd$/.test(mediaType)) return "zstd";
  if (mediaType === "application/vnd.oci.image.layer.v1.tar" || mediaType === "application/vnd.docker.image.rootfs.diff.tar") return "none";
  throw new Error(`unknown layer media type ${mediaType}`);
}

/** Compression the first bytes actually show (gzip 1f 8b, zstd 28 b5 2f fd, else assume tar). */
async function sniffCompression(path: string): Promise<Compression> {
  const handle = Bun.file(path).slice(0, 4);
  const head = new Uint8Array(await handle.arrayBuffer());
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

/** sha256 of the decompressed layer, streaming (layers may be large). */
function diffIdOf(path: string, compression: Compression): Promise<{ digest: string; size: number }> {
  const source = createReadStream(path);
  if (compression === "none") return hashStream(source);
  const decompressor = compression === "gzip" ? createGunzip() : createZstdDecompress();
  source.on("error", (err) => decompressor.destroy(err));
  return hashStream(source.pipe(decompressor));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isRecord(value) || typeof value.digest !== "string" || typeof value.mediaType !== "string" || typeof value.size !== "number") {
    throw new Error(`${where}: not a descriptor: ${JSON.stringify(value)}`);
  }
  if (!/^sha256:[0-9a-f]{64}$/.test(value.digest)) throw new Error(`${where}: bad digest ${value.digest}`);
  return { mediaType: value.mediaType, digest: value.digest, size: value.size };
}

function parseManifest(bytes: Uint8Array): ImageManifest {
  const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (!isRecord(value) || value.schemaVersion !== 2 || !Array.isArray(value.layers)) {
    throw new Error(`pulled manifest is not a schema 2 image manifest: ${new TextDecoder().decode(bytes).slice(0, 500)}`);
  }
  const config = parseDescriptor(value.config, "manifest.config");
  const layers = value.layers.map((l, i) => parseDescriptor(l, `manifest.layers[${i}]`));
  return { ...value, schemaVersion: 2, config, layers };
}

function parseConfig(bytes: Uint8Array): ImageConfig {
  const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (!isRecord(value) || !isRecord(value.rootfs) || !Array.isArray(value.rootfs.diff_ids)) {
    throw new Error("config has no rootfs.diff_ids");
  }
  const diffIds = value.rootfs.diff_ids;
  if (!diffIds.every((d): d is string => typeof d === "string")) throw new Error("config rootfs.diff_ids are not strings");
  const rootfsType = typeof value.rootfs.type === "string" ? value.rootfs.type : "";
  return { ...value, rootfs: { type: rootfsType, diff_ids: diffIds } } as ImageConfig;
}

/** Checks one blob file in the dir layout: exists, size matches the descriptor, sha256 matches its name. */
async function verifyBlob(dir: string, desc: Descriptor, what: string): Promise<string> {
  const path = join(dir, desc.digest.slice("sha256:".length));
  const info = await stat(path).catch(() => null);
  if (info === null) throw new Error(`${what} ${desc.digest}: blob missing from the pulled image`);
  const { digest, size } = await hashFile(path);
  if (digest !== desc.digest) throw new Error(`${what}: content sha256 is ${digest} but the manifest says ${desc.digest}`);
  if (size !== desc.size) throw new Error(`${what} ${desc.digest}: ${size} bytes but the manifest says ${desc.size}`);
  return path;
}

/**
 * Pulls `ref` with skopeo into a temp `dir:` layout and verifies it completely (see file comment).
 * Throws a descriptive Error on the first mismatch; the temp dir is always removed.
 */
export async function pullAndVerify(opts: PullOptions): Promise<PulledImage> {
  const dir = await mkdtemp(join(tmpdir(), "chunked-push-pull-"));
  try {
    const out = join(dir, "image");
    await skopeo([
      "copy",
      "--quiet",
      `--src-tls-verify=${opts.tlsVerify ? "true" : "false"}`,
      ...credsArgs("src", opts.username, opts.password),
      `docker://${opts.ref}`,
      `dir:${out}`,
    ]);
    return await verifyDirImage(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Verifies a skopeo `dir:` layout (manifest.json plus blobs named by hex digest) as pullAndVerify()
 * does: every blob's size and sha256, each layer's compression against its media type, and each
 * decompressed layer's sha256 against the config's diff_ids.
 */
export async function verifyDirImage(out: string): Promise<PulledImage> {
  const manifestBytes = new Uint8Array(await readFile(join(out, "manifest.json")));
  const manifestDigest = `sha256:${createHash("sha256").update(manifestBytes).digest("hex")}`;
  const manifest = parseManifest(manifestBytes);

  const configPath = await verifyBlob(out, manifest.config, "config");
  const configBytes = new Uint8Array(await readFile(configPath));
  const config = parseConfig(configBytes);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new Error(`manifest has ${manifest.layers.length} layers but config has ${diffIds.length} diff_ids`);
  }

  // Each distinct blob is checked once, but every position's diff_id is compared.
  const verified = new Map<string, string>();
  for (const [i, layer] of manifest.layers.entries()) {
    let diffId = verified.get(layer.digest);
    if (diffId === undefined) {
      const path = await verifyBlob(out, layer, `layer ${i}`);
      const declared = compressionOf(layer.mediaType);
      const actual = await sniffCompression(path);
      if (declared !== actual) {
        throw new Error(`layer ${i} ${layer.digest}: media type ${layer.mediaType} says ${declared} but the bytes are ${actual}`);
      }
      try {
        diffId = (await diffIdOf(path, declared)).digest;
      } catch (err) {
        throw new Error(`layer ${i} ${layer.digest}: cannot decompress as ${declared}: ${err instanceof Error ? err.message : String(err)}`);
      }
      verified.set(layer.digest, diffId);
    }
    if (diffId !== diffIds[i]) {
      throw new Error(`layer ${i} ${layer.digest}: uncompressed sha256 is ${diffId} but config rootfs.diff_ids[${i}] is ${diffIds[i]}`);
    }
  }
  return {
    manifest,
    manifestDigest,
    manifestBytes,
    configDigest: manifest.config.digest,
    configBytes,
    config,
    layerDigests: manifest.layers.map((l) => l.digest),
    layerMediaTypes: manifest.layers.map((l) => l.mediaType),
    layerSizes: manifest.layers.map((l) => l.size),
    diffIds,
  };
}

// ---------------------------------------------------------------------------------------------------
// Pull-back verifiers by platform, and raw manifests

/** Credentials and TLS for reading a test registry. */
export interface RegistryAccess {
  username?: string;
  password?: string;
  /**
   * Directory with the registry's `ca.crt`: TLS is then verified; without it (or null), not (plain http).
   * A DockerRegistry is a RegistryAccess as it is.
   */
  certDir?: string | null;
}

/** A platform as the CLIs spell it (`os/arch[/variant]`). */
export interface PlatformSpec {
  os: string;
  arch: string;
  variant?: string;
}

/** `os/arch[/variant]` */
export function platformString(p: PlatformSpec): string {
  return [p.os, p.arch, p.variant].filter((x) => x !== undefined && x !== "").join("/");
}

/** skopeo flags for reading from a registry with `access`; `prefix` is "src-" for copy, "" for inspect. */
function readArgs(access: RegistryAccess, prefix: "src-" | ""): string[] {
  const creds = access.username === undefined ? [`--${prefix}no-creds`] : [`--${prefix}creds`, `${access.username}:${access.password ?? ""}`];
  const tls = access.certDir == null ? [`--${prefix}tls-verify=false`] : [`--${prefix}cert-dir`, access.certDir, `--${prefix}tls-verify=true`];
  return [...creds, ...tls];
}

export interface RawManifest {
  /** The `mediaType` field, or when absent what the shape says (OCI index if it has `manifests`, else OCI manifest). */
  mediaType: string;
  /** Exact bytes the registry serves. */
  bytes: Uint8Array;
  /** sha256 of `bytes` (the registry's Docker-Content-Digest). */
  digest: string;
  /** The parsed JSON, for convenience. */
  json: Record<string, unknown>;
}

/** `skopeo inspect --raw docker://<ref>`, bytes kept exact (stdout is not decoded as text). */
export async function inspectRaw(ref: string, access: RegistryAccess = {}): Promise<RawManifest> {
  const cmd = skopeoArgv(["inspect", "--raw", ...readArgs(access, ""), `docker://${ref}`]);
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, stderr, code] = await Promise.all([new Response(proc.stdout).arrayBuffer(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`command failed (exit ${code}): ${cmd.join(" ")}\n--- stderr ---\n${stderr.slice(-4000)}`);
  const bytes = new Uint8Array(out);
  const json: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (!isRecord(json)) throw new Error(`inspectRaw ${ref}: not a JSON object`);
  const mediaType =
    typeof json.mediaType === "string"
      ? json.mediaType
      : Array.isArray(json.manifests)
        ? "application/vnd.oci.image.index.v1+json"
        : "application/vnd.oci.image.manifest.v1+json";
  return { mediaType, bytes, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`, json };
}

export interface PulledPlatformImage extends PulledImage {
  /** From the pulled config. */
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * Pulls one platform of `ref` (an index or a single manifest) with skopeo's platform overrides into a temp
 * `dir:` and verifies it like pullAndVerify(); also checks the config names the platform asked for.
 */
export async function pullPlatform(ref: string, platform: PlatformSpec, access: RegistryAccess = {}): Promise<PulledPlatformImage> {
  const dir = await mkdtemp(join(tmpdir(), "chunked-push-pull-"));
  try {
    const out = join(dir, "image");
    const overrides = ["--override-os", platform.os, "--override-arch", platform.arch];
    if (platform.variant !== undefined) overrides.push("--override-variant", platform.variant);
    await skopeo([...overrides, "copy", "--quiet", ...readArgs(access, "src-"), `docker://${ref}`, `dir:${out}`]);
    const image = await verifyDirImage(out);
    const os = typeof image.config.os === "string" ? image.config.os : "";
    const architecture = typeof image.config.architecture === "string" ? image.config.architecture : "";
    const variant = typeof image.config.variant === "string" ? image.config.variant : undefined;
    if (os !== platform.os || architecture !== platform.arch || (platform.variant !== undefined && variant !== platform.variant)) {
      throw new Error(`pullPlatform ${ref} ${platformString(platform)}: got a config for ${platformString({ os, arch: architecture, variant })}`);
    }
    return { ...image, os, architecture, ...(variant === undefined ? {} : { variant }) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What an engine (podman, dockerd) reports about an image it pulled. */
export interface EngineImage {
  /** `sha256:<hex>`: the config digest. */
  imageId: string;
  /** RootFS.Layers: the diff_ids. */
  layers: string[];
  os: string;
  architecture: string;
  variant?: string;
}

interface InspectedImage {
  Id?: unknown;
  Os?: unknown;
  Architecture?: unknown;
  Variant?: unknown;
  RootFS?: { Layers?: unknown };
}

function engineImage(stdout: string, what: string): EngineImage {
  const parsed: unknown = JSON.parse(stdout);
  const first: unknown = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!isRecord(first)) throw new Error(`${what}: unexpected inspect output ${stdout.slice(0, 300)}`);
  const img = first as InspectedImage;
  const id = typeof img.Id === "string" ? img.Id : "";
  const imageId = id.startsWith("sha256:") ? id : `sha256:${id}`;
  const layers = Array.isArray(img.RootFS?.Layers) ? img.RootFS.Layers.filter((l): l is string => typeof l === "string") : [];
  if (!/^sha256:[0-9a-f]{64}$/.test(imageId)) throw new Error(`${what}: unexpected image id ${id}`);
  const variant = typeof img.Variant === "string" && img.Variant !== "" ? img.Variant : undefined;
  return {
    imageId,
    layers,
    os: typeof img.Os === "string" ? img.Os : "",
    architecture: typeof img.Architecture === "string" ? img.Architecture : "",
    ...(variant === undefined ? {} : { variant }),
  };
}

/**
 * `podman pull --platform os/arch[/variant]` of `ref` into `store`, then `podman image inspect` of the ID
 * the pull printed (the tag moves when several platforms of one ref are pulled into one store).
 */
export async function podmanPullPlatform(store: PodmanStore, ref: string, platform: PlatformSpec, access: RegistryAccess = {}): Promise<EngineImage> {
  const args = ["pull", "--quiet", "--platform", platformString(platform)];
  if (access.username !== undefined) args.push("--creds", `${access.username}:${access.password ?? ""}`);
  if (access.certDir == null) args.push("--tls-verify=false");
  else args.push("--cert-dir", access.certDir, "--tls-verify=true");
  const { stdout } = await store.podmanOk([...args, ref], { timeoutMs: 300_000 });
  const id = stdout.trim().split("\n").pop()?.trim() ?? "";
  if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`podman pull ${ref}: unexpected output ${stdout}`);
  const inspected = await store.podmanOk(["image", "inspect", id]);
  return engineImage(inspected.stdout, `podman image inspect ${id}`);
}

/**
 * `docker pull --platform` of `ref` on a private dockerd (logging in first when `access` has a user), then
 * `docker image inspect`. dockerd's registry CAs come from /etc/docker/certs.d, so only plain http here.
 */
export async function dockerdPullPlatform(dockerd: Dockerd, ref: string, platform: PlatformSpec, access: RegistryAccess = {}): Promise<EngineImage> {
  if (access.certDir != null) throw new Error("dockerdPullPlatform: https registries are not supported (dockerd reads CAs from /etc/docker/certs.d)");
  if (access.username !== undefined) {
    const host = ref.split("/")[0] ?? "";
    await dockerd.login(host, access.username, access.password ?? "");
  }
  const imageId = await dockerd.pull(ref, platform);
  const { stdout } = await dockerd.dockerOk(["image", "inspect", imageId]);
  return engineImage(stdout, `docker image inspect ${imageId}`);
}
