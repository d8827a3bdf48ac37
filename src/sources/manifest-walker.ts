/**
 * Walks manifests and indexes from their descriptors, wherever their blobs are (an archive, a layout,
 * another registry): each document is read once (by digest), checked against its digest and size,
 * and the walk refuses loops, runaway nesting and fan-out. A child whose blobs are absent is kept as
 * "missing" with a reason, so a partial multi-platform save pushes the platforms it has.
 */
import { documentKind, parseConfig, parseIndex, parseJsonBytes, parseManifest, type Descriptor, type ManifestDocument } from "../model/descriptor.ts";
import { sha256Digest } from "../model/digest.ts";
import type { ArtifactNode, BlobBytes, ImageNode, IndexChild, IndexNode, Layer, ManifestNode } from "../model/image.ts";
import { DOCKER_CONFIG, isIndexType, OCI_CONFIG, type Compression } from "../model/media-types.ts";
import { ArchiveError } from "./store.ts";

// The OCI spec's recommended manifest limit; configs with long histories can be larger.
export const MANIFEST_LIMIT = 4 * 1024 * 1024;
export const CONFIG_LIMIT = 8 * 1024 * 1024;
// Real indexes nest two levels (index.json -> multi-platform index) and list tens of entries.
export const MAX_DEPTH = 8;
export const MAX_MANIFESTS = 1000;
export const MAX_ENTRIES = 10_000;
// Every manifest, index and config read is kept (by digest) while the walk runs: bounded in bytes too.
export const DOCUMENT_BUDGET = 64 * 1024 * 1024;

const ATTESTATION = "attestation-manifest";

/** Where the walker finds blobs by digest. */
export interface BlobStore {
  /** For messages. */
  label: string;
  has(digest: string): Promise<boolean>;
  /**
   * A small blob's bytes (a manifest, an index, a config), refused past `limit`. `kind` says which: a
   * registry serves manifests and configs at different paths.
   */
  read(digest: string, limit: number, kind: "manifest" | "config"): Promise<Uint8Array>;
  /** A layer or other big blob: where its bytes are, and how they are compressed. */
  blob(descriptor: Descriptor): Promise<{ bytes: BlobBytes; size: number; compression: Compression }>;
}

type Walked = ManifestNode | { missing: string };

/** Reads manifests and indexes once each (by digest), refusing loops and runaway nesting. */
export class ManifestWalker {
  readonly missing: string[] = [];
  private readonly nodes = new Map<string, Promise<Walked>>();
  private readonly documents = new Map<string, Promise<Uint8Array>>();

  constructor(private readonly store: BlobStore) {}

  /** The bytes of the manifest or index `d` names, checked against its digest and size. */
  private document(d: Descriptor): Promise<Uint8Array> {
    let bytes = this.documents.get(d.digest);
    if (!bytes) {
      bytes = this.readChecked(d, MANIFEST_LIMIT, "manifest");
      this.documents.set(d.digest, bytes);
    }
    return bytes;
  }

  private async readChecked(d: Descriptor, limit: number, kind: "manifest" | "config"): Promise<Uint8Array> {
    // Counted before reading, from the descriptor (checked against the bytes just after).
    this.documentBytes += Math.min(d.size, limit);
    if (this.documentBytes > DOCUMENT_BUDGET) {
      throw new ArchiveError(`${this.store.label}: its manifests, indexes and configs add up to more than ${DOCUMENT_BUDGET} bytes: refusing it`);
    }
    const bytes = await this.store.read(d.digest, limit, kind);
    const digest = sha256Digest(bytes);
    if (digest !== d.digest) throw new ArchiveError(`${this.store.label} is corrupt: blob ${d.digest} hashes to ${digest}`);
    if (bytes.length !== d.size)
      throw new ArchiveError(`${this.store.label} is corrupt: blob ${d.digest} has ${bytes.length} bytes, its descriptor says ${d.size}`);
    return bytes;
  }

  /** The config digest of the image `d` names (for matching Docker's RepoTags), if it is an image manifest. */
  async configDigestOf(d: Descriptor): Promise<string | undefined> {
    if (isIndexType(d.mediaType) || d.size > MANIFEST_LIMIT || !(await this.store.has(d.digest))) return undefined;
    if (++this.namesRead > MAX_MANIFESTS) throw new ArchiveError(`${this.store.label} lists more than ${MAX_MANIFESTS} manifests`);
    // A document that fails its digest fails the archive (the walk would refuse it anyway).
    const bytes = await this.document(d);
    const value = parseJsonBytes(bytes, `manifest ${d.digest}`);
    return documentKind(value) === "manifest" ? parseManifest(bytes, `manifest ${d.digest}`).config.digest : undefined;
  }

  private namesRead = 0;
  private documentBytes = 0;

  node(d: Descriptor, depth: number, path: string[]): Promise<Walked> {
    if (path.includes(d.digest)) throw new ArchiveError(`${this.store.label} is corrupt: index ${d.digest} contains itself`);
    let node = this.nodes.get(d.digest);
    if (!node) {
      if (this.nodes.size >= MAX_MANIFESTS) throw new ArchiveError(`${this.store.label} lists more than ${MAX_MANIFESTS} manifests`);
      node = this.load(d, depth, path);
      this.nodes.set(d.digest, node);
    }
    return node;
  }

  private async load(d: Descriptor, depth: number, path: string[]): Promise<Walked> {
    if (!(await this.store.has(d.digest))) return { missing: `its manifest ${d.digest} is not in ${this.store.label}` };
    const bytes = await this.document(d);
    const kind = isIndexType(d.mediaType) ? "index" : documentKind(parseJsonBytes(bytes, `manifest ${d.digest}`));
    if (kind === "index") return this.index(bytes, d, depth + 1, [...path, d.digest]);
    if (kind !== "manifest") throw new ArchiveError(`${this.store.label} is corrupt: ${d.digest} is neither an image manifest nor an index`);
    const manifest = parseManifest(bytes, `manifest ${d.digest}`);
    if (isArtifact(d, manifest)) return this.artifact(bytes, manifest);
    return this.image(bytes, manifest, d);
  }

  async index(bytes: Uint8Array, d: Descriptor, depth: number, path: string[]): Promise<IndexNode> {
    if (depth > MAX_DEPTH) throw new ArchiveError(`${this.store.label}: indexes nest deeper than ${MAX_DEPTH} levels`);
    const document = parseIndex(bytes, `index ${d.digest}`);
    if (document.manifests.length > MAX_ENTRIES) throw new ArchiveError(`${this.store.label}: index ${d.digest} lists more than ${MAX_ENTRIES} manifests`);
    const children: IndexChild[] = [];
    for (const descriptor of document.manifests) {
      const node = await this.node(descriptor, depth, path);
      if ("missing" in node) {
        this.missing.push(`${describe(descriptor)}: ${node.missing}`);
        children.push({ descriptor, missing: node.missing });
      } else children.push({ descriptor, node });
    }
    return { kind: "index", raw: bytes, document, children };
  }

  private async image(raw: Uint8Array, manifest: ManifestDocument, d: Descriptor): Promise<ImageNode | { missing: string }> {
    if (!(await this.store.has(manifest.config.digest))) return { missing: `its config ${manifest.config.digest} is not in ${this.store.label}` };
    const configBytes = await this.readChecked(manifest.config, CONFIG_LIMIT, "config");
    const config = parseConfig(configBytes, `config ${manifest.config.digest}`);
    if (config.rootfs.diff_ids.length !== manifest.layers.length) {
      throw new ArchiveError(
        `${this.store.label} is corrupt: config ${manifest.config.digest} lists ${config.rootfs.diff_ids.length} layers (diff_ids) but its manifest ${manifest.layers.length}`,
      );
    }
    const layers: Layer[] = [];
    for (const [i, descriptor] of manifest.layers.entries()) {
      if (!(await this.store.has(descriptor.digest))) return { missing: `its layer ${descriptor.digest} is not in ${this.store.label}` };
      const blob = await this.store.blob(descriptor);
      if (blob.size !== descriptor.size) {
        throw new ArchiveError(`${this.store.label} is corrupt: layer ${descriptor.digest} has ${blob.size} bytes, its descriptor says ${descriptor.size}`);
      }
      layers.push({ diffId: config.rootfs.diff_ids[i] as string, descriptor, compression: blob.compression, bytes: blob.bytes });
    }
    const configMediaType = manifest.config.mediaType || OCI_CONFIG;
    const node: ImageNode = {
      kind: "image",
      raw,
      manifest,
      config: { bytes: configBytes, digest: manifest.config.digest, mediaType: configMediaType },
      layers,
    };
    const platform =
      d.platform ??
      (config.os && config.architecture
        ? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }
        : undefined);
    if (platform) node.platform = platform;
    return node;
  }

  private async artifact(raw: Uint8Array, manifest: ManifestDocument): Promise<ArtifactNode | { missing: string }> {
    const blobs: ArtifactNode["blobs"] = [];
    for (const descriptor of [manifest.config, ...manifest.layers]) {
      if (!(await this.store.has(descriptor.digest))) return { missing: `its blob ${descriptor.digest} is not in ${this.store.label}` };
      const blob = await this.store.blob(descriptor);
      if (blob.size !== descriptor.size) {
        throw new ArchiveError(`${this.store.label} is corrupt: blob ${descriptor.digest} has ${blob.size} bytes, its descriptor says ${descriptor.size}`);
      }
      blobs.push({ descriptor, bytes: blob.bytes });
    }
    return { kind: "artifact", raw, manifest, blobs };
  }
}

/**
 * Attestations (buildx's in-toto manifests), signatures and other artifacts are not images of a
 * platform: they have no layers to compress and go exactly as stored.
 */
export function isArtifact(d: Descriptor | undefined, manifest: ManifestDocument): boolean {
  if (d?.annotations?.["vnd.docker.reference.type"] === ATTESTATION) return true;
  if (manifest.artifactType) return true;
  const config = manifest.config.mediaType;
  if (config && config !== OCI_CONFIG && config !== DOCKER_CONFIG) return true;
  return !manifest.layers.every(
    (l) =>
      l.mediaType === "" ||
      /^application\/vnd\.(oci\.image\.layer\.(nondistributable\.)?v1\.tar|docker\.image\.rootfs\.(foreign\.)?diff\.tar)/.test(l.mediaType),
  );
}

function describe(d: Descriptor): string {
  const p = d.platform;
  if (d.annotations?.["vnd.docker.reference.type"] === ATTESTATION) return `attestation ${d.digest.slice(0, 19)}`;
  return p ? [p.os, p.architecture, p.variant].filter(Boolean).join("/") : d.digest.slice(0, 19);
}
