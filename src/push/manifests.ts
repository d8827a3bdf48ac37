/**
 * The manifest and index bytes a push sends: the source's own when every blob it names goes as stored
 * (same digest, annotations and media types), else rebuilt with consistent media types in the format
 * asked for (`--format`), the source's, or OCI.
 */
import { PushError } from "../errors.ts";
import type { Descriptor } from "../model/descriptor.ts";
import type { ImageNode, IndexNode } from "../model/image.ts";
import { buildImageManifest, buildIndex, rawManifest, type BuiltManifest } from "../model/manifest.ts";
import { formatOf, layerMediaType, type Compression, type ManifestFormat } from "../model/media-types.ts";

/** A layer uploaded and proven: what its manifest entry needs. */
export interface PushedLayer {
  digest: string;
  size: number;
  compression: Compression;
  /** The source's own bytes; `source` is its descriptor in the source manifest, if any. */
  asStored: boolean;
  source?: Descriptor;
}

/** Bytes to PUT, and whether they are the source's own. */
export interface Written {
  manifest: BuiltManifest;
  unchanged: boolean;
}

export function imageManifest(node: ImageNode, config: Descriptor, layers: PushedLayer[], wanted: ManifestFormat | undefined): Written {
  const sourceFormat = node.manifest ? formatOf(node.manifest.mediaType ?? inferManifestType(node)) : undefined;
  if (node.raw && node.manifest && layers.every((l) => l.asStored) && (wanted === undefined || wanted === sourceFormat)) {
    return { manifest: rawManifest(node.manifest.mediaType ?? inferManifestType(node), node.raw), unchanged: true };
  }
  const format = wanted ?? sourceFormat ?? "oci";
  if (format === "docker" && layers.some((l) => l.compression === "zstd")) {
    throw new PushError(`a Docker v2 manifest cannot describe zstd layers: use --format oci (the default) or --compression gzip`);
  }
  const manifest = buildImageManifest({
    format,
    config,
    layers: layers.map((l) => {
      const descriptor: Descriptor = { mediaType: layerMediaType(l.compression, format), digest: l.digest, size: l.size };
      if (l.source?.annotations) descriptor.annotations = l.source.annotations;
      if (l.asStored && l.source?.urls?.length) descriptor.urls = l.source.urls;
      return descriptor;
    }),
    annotations: node.manifest?.annotations,
    subject: node.manifest?.subject,
  });
  return { manifest, unchanged: false };
}

export function indexManifest(
  node: IndexNode,
  children: ({ descriptor: Descriptor } & Written)[],
  wanted: ManifestFormat | undefined,
  rebuilt: boolean,
): Written {
  const formatOk = wanted === undefined || formatOf(node.document.mediaType ?? "") === wanted;
  if (!rebuilt && children.every((c) => c.unchanged) && formatOk) {
    return { manifest: rawManifest(node.document.mediaType ?? "application/vnd.oci.image.index.v1+json", node.raw), unchanged: true };
  }
  const format = wanted ?? formatOf(node.document.mediaType ?? "");
  const renamed = new Map(children.map((c) => [c.descriptor.digest, c.manifest.digest]));
  const manifests = children.map((c) => {
    const d: Descriptor = { ...c.descriptor, mediaType: c.manifest.mediaType, digest: c.manifest.digest, size: c.manifest.bytes.length };
    // An attestation names the image it describes: follow that image's new digest.
    const subject = d.annotations?.["vnd.docker.reference.digest"];
    if (subject && renamed.has(subject)) d.annotations = { ...d.annotations, "vnd.docker.reference.digest": renamed.get(subject)! };
    return d;
  });
  return { manifest: buildIndex({ format, manifests, annotations: node.document.annotations }), unchanged: false };
}

/** A manifest without a mediaType field says what it is through its config's type. */
function inferManifestType(node: ImageNode): string {
  return node.manifest?.config.mediaType === "application/vnd.docker.container.image.v1+json"
    ? "application/vnd.docker.distribution.manifest.v2+json"
    : "application/vnd.oci.image.manifest.v1+json";
}
