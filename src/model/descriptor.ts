/**
 * Descriptors and the JSON documents that hold them (image manifests, indexes, configs), read strictly:
 * whatever a source hands us is checked for shape before anything trusts it, so a hostile archive or
 * registry gets a clear refusal instead of an exception deep in the push.
 */

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  artifactType?: string;
}

/** An image manifest (OCI or Docker v2 schema 2) as read. */
export interface ManifestDocument {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
  artifactType?: string;
}

/** An image index (OCI) or manifest list (Docker) as read. */
export interface IndexDocument {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
  artifactType?: string;
}

/** The parts of an image config the push needs. */
export interface ConfigDocument {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs: { type: string; diff_ids: string[] };
}

export const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

/** A JSON document that does not have the shape it must have; `why` is for a person. */
export class DocumentError extends Error {
  override readonly name = "DocumentError";
}

export function parseJsonBytes(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new DocumentError(`${what} is not valid JSON`);
  }
}

export function parseDescriptor(value: unknown, what: string): Descriptor {
  if (!isObject(value)) throw new DocumentError(`${what} is not a descriptor`);
  const { mediaType, digest, size } = value;
  if (typeof digest !== "string" || !SHA256_DIGEST.test(digest)) {
    throw new DocumentError(`${what} has no sha256 digest${typeof digest === "string" ? ` (got "${digest.slice(0, 80)}")` : ""}`);
  }
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new DocumentError(`${what} has no valid size`);
  if (mediaType !== undefined && typeof mediaType !== "string") throw new DocumentError(`${what} has a media type that is not a string`);
  const descriptor: Descriptor = { mediaType: mediaType ?? "", digest, size };
  const annotations = stringMap(value.annotations, `${what} annotations`);
  if (annotations) descriptor.annotations = annotations;
  if (value.platform !== undefined) descriptor.platform = parsePlatform(value.platform, `${what} platform`);
  if (Array.isArray(value.urls)) descriptor.urls = value.urls.filter((u): u is string => typeof u === "string");
  if (typeof value.artifactType === "string") descriptor.artifactType = value.artifactType;
  return descriptor;
}

export function parsePlatform(value: unknown, what: string): Platform {
  if (!isObject(value) || typeof value.os !== "string" || typeof value.architecture !== "string") {
    throw new DocumentError(`${what} needs os and architecture`);
  }
  const platform: Platform = { architecture: value.architecture, os: value.os };
  if (typeof value.variant === "string" && value.variant !== "") platform.variant = value.variant;
  if (typeof value["os.version"] === "string") platform["os.version"] = value["os.version"];
  if (Array.isArray(value["os.features"])) platform["os.features"] = value["os.features"].filter((f): f is string => typeof f === "string");
  return platform;
}

/** The document kind a media type (or, when it is missing, the shape) says. */
export function documentKind(value: unknown): "index" | "manifest" | "unknown" {
  if (!isObject(value)) return "unknown";
  if (Array.isArray(value.manifests)) return "index";
  if (isObject(value.config) && Array.isArray(value.layers)) return "manifest";
  return "unknown";
}

export function parseManifest(bytes: Uint8Array, what: string): ManifestDocument {
  const value = parseJsonBytes(bytes, what);
  if (!isObject(value) || !Array.isArray(value.layers) || value.config === undefined) {
    throw new DocumentError(`${what} is not an image manifest`);
  }
  if (value.schemaVersion !== 2) throw new DocumentError(`${what} is not schema version 2`);
  const manifest: ManifestDocument = {
    schemaVersion: 2,
    config: parseDescriptor(value.config, `${what} config`),
    layers: value.layers.map((layer, i) => parseDescriptor(layer, `${what} layer ${i + 1}`)),
  };
  if (typeof value.mediaType === "string") manifest.mediaType = value.mediaType;
  const annotations = stringMap(value.annotations, `${what} annotations`);
  if (annotations) manifest.annotations = annotations;
  if (value.subject !== undefined) manifest.subject = parseDescriptor(value.subject, `${what} subject`);
  if (typeof value.artifactType === "string") manifest.artifactType = value.artifactType;
  return manifest;
}

export function parseIndex(bytes: Uint8Array, what: string): IndexDocument {
  const value = parseJsonBytes(bytes, what);
  if (!isObject(value) || !Array.isArray(value.manifests)) throw new DocumentError(`${what} is not an image index`);
  if (value.schemaVersion !== 2) throw new DocumentError(`${what} is not schema version 2`);
  const index: IndexDocument = {
    schemaVersion: 2,
    manifests: value.manifests.map((m, i) => parseDescriptor(m, `${what} entry ${i + 1}`)),
  };
  if (typeof value.mediaType === "string") index.mediaType = value.mediaType;
  const annotations = stringMap(value.annotations, `${what} annotations`);
  if (annotations) index.annotations = annotations;
  if (value.subject !== undefined) index.subject = parseDescriptor(value.subject, `${what} subject`);
  if (typeof value.artifactType === "string") index.artifactType = value.artifactType;
  return index;
}

export function parseConfig(bytes: Uint8Array, what: string): ConfigDocument {
  const value = parseJsonBytes(bytes, what);
  if (!isObject(value)) throw new DocumentError(`${what} is not a JSON object`);
  const rootfs = value.rootfs;
  const diffIds = isObject(rootfs) ? rootfs.diff_ids : undefined;
  if (!Array.isArray(diffIds) || !diffIds.every((d) => typeof d === "string" && SHA256_DIGEST.test(d))) {
    throw new DocumentError(`${what}'s rootfs.diff_ids are not a list of sha256 digests`);
  }
  const config: ConfigDocument = { rootfs: { type: String((rootfs as Record<string, unknown>).type ?? "layers"), diff_ids: diffIds as string[] } };
  if (typeof value.architecture === "string") config.architecture = value.architecture;
  if (typeof value.os === "string") config.os = value.os;
  if (typeof value.variant === "string" && value.variant !== "") config.variant = value.variant;
  return config;
}

function stringMap(value: unknown, what: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value) || !Object.values(value).every((v) => typeof v === "string")) {
    throw new DocumentError(`${what} are not a map of strings`);
  }
  return value as Record<string, string>;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
