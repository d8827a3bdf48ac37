/**
 * Manifests and indexes the tool writes itself, when it cannot push the source's bytes unchanged (it
 * compressed layers, or `--platform` chose some platforms of an index). The output depends only on the
 * input: fields in the spec's order, no timestamps, so the same image always gets the same digest.
 */
import type { Descriptor, Platform } from "./descriptor.ts";
import { sha256Digest } from "./digest.ts";
import { configMediaType, indexMediaType, manifestMediaType, type ManifestFormat } from "./media-types.ts";

/** Bytes ready to PUT, with the media type to send and the digest the registry must answer. */
export interface BuiltManifest {
  mediaType: string;
  bytes: Uint8Array;
  digest: string;
}

export interface ImageManifestInput {
  format: ManifestFormat;
  config: Descriptor;
  /** In the config's diff_ids order. */
  layers: readonly Descriptor[];
  /** Kept from the source manifest (OCI only: Docker's schema has none). */
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export function buildImageManifest(input: ImageManifestInput): BuiltManifest {
  const { format } = input;
  const mediaType = manifestMediaType(format);
  const oci = format === "oci";
  const document: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    config: descriptorJson({ ...input.config, mediaType: configMediaType(format) }, oci),
    layers: input.layers.map((layer) => descriptorJson(layer, oci)),
  };
  if (oci && input.subject) document.subject = descriptorJson(input.subject, true);
  if (oci && input.annotations && Object.keys(input.annotations).length > 0) document.annotations = sortedMap(input.annotations);
  return encode(mediaType, document);
}

export interface IndexInput {
  format: ManifestFormat;
  /** The child manifests, each with its platform and annotations. */
  manifests: readonly Descriptor[];
  annotations?: Record<string, string>;
}

export function buildIndex(input: IndexInput): BuiltManifest {
  const mediaType = indexMediaType(input.format);
  const oci = input.format === "oci";
  const document: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    manifests: input.manifests.map((m) => descriptorJson(m, oci)),
  };
  if (oci && input.annotations && Object.keys(input.annotations).length > 0) document.annotations = sortedMap(input.annotations);
  return encode(mediaType, document);
}

/** The source's own bytes, pushed unchanged. */
export function rawManifest(mediaType: string, bytes: Uint8Array): BuiltManifest {
  return { mediaType, bytes, digest: sha256Digest(bytes) };
}

function encode(mediaType: string, document: Record<string, unknown>): BuiltManifest {
  const bytes = new TextEncoder().encode(JSON.stringify(document, null, 2));
  return { mediaType, bytes, digest: sha256Digest(bytes) };
}

// Fields in the spec's order; annotations only where the format has them.
function descriptorJson(d: Descriptor, withAnnotations: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.urls?.length) out.urls = d.urls;
  if (withAnnotations && d.annotations && Object.keys(d.annotations).length > 0) out.annotations = sortedMap(d.annotations);
  if (d.platform) out.platform = platformJson(d.platform);
  if (withAnnotations && d.artifactType) out.artifactType = d.artifactType;
  return out;
}

function platformJson(p: Platform): Record<string, unknown> {
  const out: Record<string, unknown> = { architecture: p.architecture, os: p.os };
  if (p["os.version"]) out["os.version"] = p["os.version"];
  if (p["os.features"]?.length) out["os.features"] = p["os.features"];
  if (p.variant) out.variant = p.variant;
  return out;
}

function sortedMap(map: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
