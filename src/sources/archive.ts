import { open } from "node:fs/promises";
import { sha256Digest } from "../model/digest.ts";
import { PushError } from "../errors.ts";
import { OCI_CONFIG } from "../model/manifest.ts";
import { TarIndex, type TarEntry } from "./tar-index.ts";

export type Compression = "none" | "gzip" | "zstd";

/** One layer as it sits in the archive: a byte range of the tar. */
export interface ArchiveLayer {
  entry: TarEntry;
  compression: Compression;
  /** sha256 of the uncompressed layer, from the config's rootfs.diff_ids. */
  diffId: string;
}

export interface ArchiveImage {
  archive: string;
  config: { bytes: Uint8Array; digest: string; mediaType: string };
  layers: ArchiveLayer[];
}

interface SaveManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

interface OciDescriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}

interface OciIndexOrManifest {
  mediaType?: string;
  manifests?: OciDescriptor[];
  config?: OciDescriptor;
  layers?: OciDescriptor[];
}

/**
 * Reads the image out of a `docker save` / `podman save` archive or an OCI layout tar, without
 * extracting it. `reference` picks the image when an archive holds several.
 */
export async function readArchive(path: string, reference?: string): Promise<ArchiveImage> {
  const tar = await TarIndex.read(path);
  if (tar.has("manifest.json")) return fromSaveManifest(tar, reference);
  if (tar.has("index.json")) return fromOciLayout(tar, reference);
  throw new PushError(
    `archive ${path} is not a docker save, podman save or OCI layout tar: it has neither manifest.json nor index.json`,
  );
}

// Every docker save format (classic, Docker >= 25, containerd store) and podman's docker-archive
// carry manifest.json; its Layers are in diff_ids order and may be compressed or not.
async function fromSaveManifest(tar: TarIndex, reference?: string): Promise<ArchiveImage> {
  const entries = parseJson<SaveManifestEntry[]>(await readEntry(tar, "manifest.json"), tar, "manifest.json");
  if (!Array.isArray(entries) || entries.length === 0) throw corrupt(tar, "manifest.json lists no image");
  if (!entries.every((e) => typeof e?.Config === "string" && Array.isArray(e.Layers) && e.Layers.every((l) => typeof l === "string"))) {
    throw corrupt(tar, "manifest.json entries need a Config file name and a Layers list");
  }
  const chosen =
    entries.length === 1 ? entries[0] : entries.find((e) => reference && e.RepoTags?.includes(reference));
  if (!chosen) {
    const tags = entries.map((e) => e.RepoTags?.join(",") ?? "(untagged)").join("; ");
    throw new PushError(`archive ${tar.path} holds ${entries.length} images (${tags}); none is tagged ${reference}`);
  }
  const configBytes = await readEntry(tar, chosen.Config);
  const config = { bytes: configBytes, digest: sha256Digest(configBytes), mediaType: OCI_CONFIG };
  const layers = await describeLayers(tar, chosen.Layers.map((name) => tar.get(name)), configBytes);
  return { archive: tar.path, config, layers };
}

// An OCI image layout with no manifest.json (podman save --format oci-archive, skopeo oci-archive:).
async function fromOciLayout(tar: TarIndex, reference?: string): Promise<ArchiveImage> {
  const candidates: OciDescriptor[] = [];
  const walk = async (name: string, depth: number): Promise<void> => {
    const index = parseJson<OciIndexOrManifest>(await readEntry(tar, name), tar, name);
    if (!Array.isArray(index.manifests) || !index.manifests.every(isDescriptor)) {
      throw corrupt(tar, `${name} has no valid manifests list`);
    }
    for (const descriptor of index.manifests) {
      if (isIndex(descriptor.mediaType) && depth < 4) await walk(blobName(descriptor.digest), depth + 1);
      else candidates.push(descriptor);
    }
  };
  await walk("index.json", 0);
  const manifestDescriptor = chooseManifest(candidates, reference);
  if (!manifestDescriptor) throw corrupt(tar, "index.json names no image manifest");
  const manifestName = blobName(manifestDescriptor.digest);
  const manifest = parseJson<OciIndexOrManifest>(await readBlob(tar, manifestDescriptor.digest), tar, manifestName);
  if (!isDescriptor(manifest.config) || !Array.isArray(manifest.layers) || !manifest.layers.every(isDescriptor)) {
    throw corrupt(tar, `${manifestName} is not an image manifest`);
  }
  const configBytes = await readBlob(tar, manifest.config.digest);
  const config = {
    bytes: configBytes,
    digest: manifest.config.digest,
    mediaType: manifest.config.mediaType ?? OCI_CONFIG,
  };
  const layerEntries = manifest.layers.map((layer) => tar.get(blobName(layer.digest)));
  return { archive: tar.path, config, layers: await describeLayers(tar, layerEntries, configBytes) };
}

async function describeLayers(tar: TarIndex, entries: TarEntry[], configBytes: Uint8Array): Promise<ArchiveLayer[]> {
  const config = parseJson<{ rootfs?: { diff_ids?: string[] } }>(configBytes, tar, "the image config");
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (!Array.isArray(diffIds) || !diffIds.every((d) => typeof d === "string" && SHA256.test(d))) {
    throw corrupt(tar, "the config's rootfs.diff_ids are not sha256 digests");
  }
  if (diffIds.length !== entries.length) {
    throw corrupt(tar, `the config lists ${diffIds.length} layers (diff_ids) but the manifest ${entries.length}`);
  }
  return Promise.all(
    entries.map(async (entry, i) => ({ entry, compression: await sniff(tar, entry), diffId: diffIds[i] as string })),
  );
}

// The media type in a manifest can lie (Docker-media-type layers in OCI layouts, containerd saves);
// the first bytes cannot.
async function sniff(tar: TarIndex, entry: TarEntry): Promise<Compression> {
  const head = await readRange(tar.path, entry.offset, Math.min(4, entry.size));
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

function chooseManifest(candidates: OciDescriptor[], reference?: string): OciDescriptor | undefined {
  if (candidates.length <= 1) return candidates[0];
  const tag = reference?.slice(reference.lastIndexOf(":") + 1);
  const arch = ({ x64: "amd64", arm64: "arm64" } as Record<string, string>)[process.arch] ?? process.arch;
  return (
    candidates.find((d) => {
      const name = d.annotations?.["org.opencontainers.image.ref.name"];
      return name !== undefined && (name === reference || name === tag);
    }) ??
    candidates.find((d) => d.platform?.os === "linux" && d.platform.architecture === arch) ??
    candidates[0]
  );
}

const SHA256 = /^sha256:[a-f0-9]{64}$/;

function isDescriptor(value: unknown): value is OciDescriptor {
  const d = value as OciDescriptor | undefined;
  return typeof d?.digest === "string" && SHA256.test(d.digest);
}

function isIndex(mediaType?: string): boolean {
  return mediaType === "application/vnd.oci.image.index.v1+json" ||
    mediaType === "application/vnd.docker.distribution.manifest.list.v2+json";
}

function blobName(digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return `blobs/${algorithm}/${hex}`;
}

// Blobs of an OCI layout are named by their digest; one that does not match is a corrupt archive.
async function readBlob(tar: TarIndex, digest: string): Promise<Uint8Array> {
  const bytes = await readEntry(tar, blobName(digest));
  if (sha256Digest(bytes) !== digest) throw corrupt(tar, `blob ${digest} does not match its digest`);
  return bytes;
}

async function readEntry(tar: TarIndex, name: string): Promise<Uint8Array> {
  const entry = tar.get(name);
  return readRange(tar.path, entry.offset, entry.size);
}

async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function parseJson<T>(bytes: Uint8Array, tar: TarIndex, what: string): T {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as T;
  } catch {
    throw corrupt(tar, `${what} is not valid JSON`);
  }
}

function corrupt(tar: TarIndex, why: string): PushError {
  return new PushError(`archive ${tar.path} is corrupt: ${why}`);
}
