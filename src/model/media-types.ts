/** The media types a push meets, and what each says about the bytes behind it. */

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
export const OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar";
export const DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip";
export const DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/** Manifest formats the tool writes when it has to build a manifest. */
export type ManifestFormat = "oci" | "docker";

/** How a layer's bytes are stored. */
export type Compression = "none" | "gzip" | "zstd";

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_LIST;
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST;
}

/** The layer media type for `compression` in `format`; Docker's schema has no zstd type. */
export function layerMediaType(compression: Compression, format: ManifestFormat): string {
  if (format === "docker") {
    if (compression === "zstd") throw new RangeError("Docker v2 manifests cannot describe zstd layers");
    return compression === "gzip" ? DOCKER_LAYER_GZIP : DOCKER_LAYER;
  }
  return compression === "gzip" ? OCI_LAYER_GZIP : compression === "zstd" ? OCI_LAYER_ZSTD : OCI_LAYER;
}

export function configMediaType(format: ManifestFormat): string {
  return format === "docker" ? DOCKER_CONFIG : OCI_CONFIG;
}

export function manifestMediaType(format: ManifestFormat): string {
  return format === "docker" ? DOCKER_MANIFEST : OCI_MANIFEST;
}

export function indexMediaType(format: ManifestFormat): string {
  return format === "docker" ? DOCKER_LIST : OCI_INDEX;
}

/** The format a source manifest is written in, from its media type. */
export function formatOf(mediaType: string): ManifestFormat {
  return mediaType === DOCKER_MANIFEST || mediaType === DOCKER_LIST ? "docker" : "oci";
}

/** What the first bytes of a blob say about its compression: media types can lie, magic numbers cannot. */
export function sniffCompression(head: Uint8Array): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}
