/**
 * The image model every source produces and the pusher walks, after go-containerregistry's `v1.Image`
 * and `v1.ImageIndex`: an index holds manifests, an image holds a config and layers, and each blob is a
 * descriptor plus a way to read its bytes. The pusher never knows where an image came from.
 */
import type { Descriptor, IndexDocument, ManifestDocument, Platform } from "./descriptor.ts";
import type { Compression } from "./media-types.ts";

/** Where a blob's stored bytes can be read. */
export type BlobBytes =
  /** A byte range of a file: an archive entry read in place, a layout's blob, a cached blob. */
  | { kind: "file"; path: string; offset: number; size: number }
  /** Bytes a streaming source already handed to its sink as they went by (`docker save` output). */
  | { kind: "taken"; taken: Taken }
  /** Bytes in another registry, fetched when needed. */
  | { kind: "remote"; size: number; open(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> }
  /** Not at hand this run (an image rebuilt from the cache's record): the cache must serve it. */
  | { kind: "unavailable"; reason: string };

/** A layer as the source stores it. */
export interface Layer {
  /** sha256 of the uncompressed tar, from the config's rootfs.diff_ids. */
  diffId: string;
  /** The source manifest's descriptor for it, when the source has a manifest (layouts, registries). */
  descriptor?: Descriptor;
  /** How the stored bytes are compressed: from their first bytes, not from the media type. */
  compression: Compression;
  bytes: BlobBytes;
}

/** An image manifest with its config and layers. */
export interface ImageNode {
  kind: "image";
  /** The source's manifest bytes; absent for docker-archive images, which have none to keep. */
  raw?: Uint8Array;
  manifest?: ManifestDocument;
  /** From the parent index's descriptor, else from the config. */
  platform?: Platform;
  config: { bytes: Uint8Array; digest: string; mediaType: string };
  layers: Layer[];
}

/** A manifest whose blobs are not image layers (attestations, signatures, artifacts): pushed exactly as stored. */
export interface ArtifactNode {
  kind: "artifact";
  raw: Uint8Array;
  manifest: ManifestDocument;
  blobs: { descriptor: Descriptor; bytes: BlobBytes }[];
}

export interface IndexNode {
  kind: "index";
  raw: Uint8Array;
  document: IndexDocument;
  children: IndexChild[];
}

export interface IndexChild {
  /** As the index lists it: platform, annotations, and the digest of the child's raw bytes. */
  descriptor: Descriptor;
  /** Absent when the source lacks the child's blobs (a partial containerd save). */
  node?: ManifestNode;
  /** Why the child cannot be pushed, when `node` is absent. */
  missing?: string;
}

export type ManifestNode = ImageNode | ArtifactNode | IndexNode;

/**
 * Bytes a streaming source could not keep: its sink took them as they passed and tells what they were.
 * The sink (the pusher) decides what to do with them (compress, cache, upload at once).
 */
export interface Taken {
  /** sha256 and size of the bytes as stored in the stream. */
  readonly stored: Promise<{ digest: string; size: number }>;
  /** How they were compressed in the stream. */
  readonly compression: Compression;
  /** The first bytes, when small enough to keep (configs and manifests are read from these). */
  readonly small?: Uint8Array;
}

/** One entry of a streaming source, as the sink gets it. */
export interface StreamEntryInfo {
  name: string;
  size: number;
  /** The digest the entry's name claims (`blobs/sha256/<hex>`), if any. */
  expectedDigest?: string;
}

/** What a streaming source hands the bytes of each entry to, in stream order. */
export interface StreamSink {
  /**
   * Consumes `stream` (one entry of the source, `size` bytes) and resolves once it is read; the work
   * it started (compression, upload) may go on. `expectedDigest` is the digest the entry's name claims.
   */
  take(entry: StreamEntryInfo, stream: ReadableStream<Uint8Array>): Promise<Taken>;
}

/** Names an image goes by in its source (RepoTags, ref.name annotations), for `--image`. */
export interface NamedImage {
  names: string[];
  node: ManifestNode;
}
