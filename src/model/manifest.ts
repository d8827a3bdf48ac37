import { sha256Digest } from "./digest.ts";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface BuiltManifest {
  mediaType: string;
  /** The exact bytes to PUT; the registry stores them and names them by their sha256. */
  bytes: Uint8Array;
  digest: string;
}

/** An OCI image manifest for a config and its layers, in the config's diff_ids order. */
export function buildManifest(config: Descriptor, layers: readonly Descriptor[]): BuiltManifest {
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: pick(config),
    layers: layers.map(pick),
  };
  const bytes = new TextEncoder().encode(JSON.stringify(manifest, null, 2));
  return { mediaType: OCI_MANIFEST, bytes, digest: sha256Digest(bytes) };
}

// Keeps the descriptor's fields in the spec's order and drops anything else the caller carries.
function pick({ mediaType, digest, size }: Descriptor): Descriptor {
  return { mediaType, digest, size };
}
