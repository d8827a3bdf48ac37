/**
 * Reads the image formats an archive can hold into the image model: the OCI image layout (`index.json`,
 * `blobs/sha256/…`: skopeo, podman's oci-archive, buildx, Docker >= 25 saves, containerd-store saves with
 * nested multi-platform indexes) and Docker's `manifest.json` (every `docker save` and podman's
 * docker-archive). The same code serves a tar read in place, a layout directory and a tar stream.
 *
 * Everything is checked as it is read: each manifest and config hashes to the digest that names it,
 * indexes may not loop and are bounded in depth and count, and a platform whose blobs are absent is
 * left out with a reason (a partial containerd save) rather than failing the push.
 */
import { UsageError } from "../errors.ts";
import { DocumentError, parseConfig, parseIndex, parseJsonBytes, type Descriptor } from "../model/descriptor.ts";
import { sha256Digest } from "../model/digest.ts";
import type { ImageNode, Layer, ManifestNode } from "../model/image.ts";
import { OCI_CONFIG, OCI_INDEX } from "../model/media-types.ts";
import { ArchiveError, blobPath, digestFromName, type ArchiveStore } from "./store.ts";
import { CONFIG_LIMIT, MANIFEST_LIMIT, MAX_ENTRIES, ManifestWalker, type BlobStore } from "./manifest-walker.ts";

export interface ArchiveImage {
  root: ManifestNode;
  /** The names the chosen image goes by in the archive (RepoTags, ref.name), maybe none. */
  names: string[];
  /** Platforms the archive lists but lacks the blobs of, with the reason. */
  missing: string[];
}

const REF_NAME = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME = "io.containerd.image.name";
const LISTED_NAMES = 20;

/** Reads the image `choose` names (the only one when it names none) out of an archive's files. */
export async function readArchive(store: ArchiveStore, choose?: string): Promise<ArchiveImage> {
  try {
    if (store.has("index.json")) return await fromLayout(store, choose);
    if (store.has("manifest.json")) return await fromDockerManifest(store, choose);
  } catch (error) {
    if (error instanceof DocumentError) throw new ArchiveError(`${store.label} is corrupt: ${error.message}`);
    throw error;
  }
  throw new ArchiveError(`${store.label} is not a docker save, podman save or OCI layout: it has neither manifest.json nor index.json`);
}

// --- Docker's manifest.json ------------------------------------------------------------------------

interface SaveEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

async function saveEntries(store: ArchiveStore): Promise<SaveEntry[]> {
  const value = parseJsonBytes(await store.small("manifest.json", MANIFEST_LIMIT), "manifest.json");
  if (!Array.isArray(value) || value.length === 0) throw new ArchiveError(`${store.label} is corrupt: manifest.json lists no image`);
  return value.map((entry: unknown, i) => {
    const e = entry as Partial<Record<keyof SaveEntry, unknown>> | null;
    if (!e || typeof e.Config !== "string" || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === "string")) {
      throw new ArchiveError(`${store.label} is corrupt: manifest.json entry ${i + 1} needs a Config file name and a Layers list`);
    }
    const tags = Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === "string") : [];
    return { Config: e.Config, RepoTags: tags, Layers: e.Layers as string[] };
  });
}

async function fromDockerManifest(store: ArchiveStore, choose?: string): Promise<ArchiveImage> {
  const entries = await saveEntries(store);
  const chosen = pick(
    store,
    entries.map((e) => ({ names: e.RepoTags, value: e })),
    choose,
  );
  for (const name of [chosen.Config, ...chosen.Layers]) {
    if (name.startsWith("/") || name.split("/").includes("..")) {
      throw new ArchiveError(`${store.label}: manifest.json names "${name}", outside the archive: refusing it`);
    }
  }
  const configBytes = await store.small(chosen.Config, CONFIG_LIMIT);
  const configDigest = sha256Digest(configBytes);
  const claimed = digestFromName(chosen.Config);
  if (claimed && claimed !== configDigest) {
    throw new ArchiveError(`${store.label} is corrupt: the config ${chosen.Config} hashes to ${configDigest}`);
  }
  const config = parseConfig(configBytes, "the image config");
  if (config.rootfs.diff_ids.length !== chosen.Layers.length) {
    throw new ArchiveError(
      `${store.label} is corrupt: the config lists ${config.rootfs.diff_ids.length} layers (diff_ids) but manifest.json ${chosen.Layers.length}`,
    );
  }
  const layers: Layer[] = [];
  for (const [i, name] of chosen.Layers.entries()) {
    if (!store.has(name)) throw new ArchiveError(`${store.label} is corrupt: layer ${i + 1} (${name}) is not in it`);
    const blob = await store.blob(name);
    const stored = digestFromName(name);
    const layer: Layer = { diffId: config.rootfs.diff_ids[i] as string, compression: blob.compression, bytes: blob.bytes };
    if (stored) layer.descriptor = { mediaType: "", digest: stored, size: blob.size };
    layers.push(layer);
  }
  const image: ImageNode = {
    kind: "image",
    config: { bytes: configBytes, digest: configDigest, mediaType: OCI_CONFIG },
    layers,
  };
  const platform =
    config.os && config.architecture ? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) } : undefined;
  if (platform) image.platform = platform;
  return { root: image, names: chosen.RepoTags, missing: [] };
}

// --- OCI image layout ------------------------------------------------------------------------------

async function fromLayout(store: ArchiveStore, choose?: string): Promise<ArchiveImage> {
  const indexBytes = await store.small("index.json", MANIFEST_LIMIT);
  const top = parseIndex(indexBytes, "index.json");
  if (top.manifests.length > MAX_ENTRIES)
    throw new ArchiveError(`${store.label}: index.json lists ${top.manifests.length} manifests, more than ${MAX_ENTRIES}`);
  const loader = new ManifestWalker(layoutBlobs(store));
  // Docker >= 25 also writes manifest.json: its RepoTags name the images index.json lists.
  const repoTags = store.has("manifest.json") ? await repoTagsByConfig(store) : new Map<string, string[]>();
  const namesOf = async (d: Descriptor): Promise<string[]> => {
    const names = [d.annotations?.[CONTAINERD_NAME], d.annotations?.[REF_NAME]].filter((n): n is string => !!n);
    // Only Docker's manifest.json needs the manifest read to name the image (by its config).
    const configDigest = repoTags.size > 0 ? await loader.configDigestOf(d) : undefined;
    return unique([...names, ...(configDigest ? (repoTags.get(configDigest) ?? []) : [])]);
  };
  // The same manifest listed again is the same image (a hostile index.json repeats one entry
  // thousands of times): one candidate per digest, with every name it goes by.
  const byDigest = new Map<string, Descriptor[]>();
  for (const d of top.manifests) byDigest.set(d.digest, [...(byDigest.get(d.digest) ?? []), d]);
  const entries = [...byDigest.values()].map((same) => same[0]!);
  // One at a time: a hostile index.json listing thousands of manifests must not have them all in memory.
  const named: { names: string[]; value: Descriptor }[] = [];
  for (const same of byDigest.values()) {
    const names: string[] = [];
    for (const d of same) names.push(...(await namesOf(d)));
    named.push({ names: unique(names), value: same[0]! });
  }
  // One entry: that image. Several without names (a flat multi-platform layout, buildx's attestations
  // beside their images): index.json itself is the image index. Several with names: several images.
  if (entries.length === 1 || named.every((e) => e.names.length === 0)) {
    if (entries.length === 1) {
      const only = named[0]!;
      if (choose !== undefined) pick(store, [only], choose);
      const root = await loader.node(only.value, 0, []);
      if ("missing" in root) throw new ArchiveError(`${store.label}: the image it holds cannot be pushed: ${root.missing}`);
      return { root, names: only.names, missing: loader.missing };
    }
    if (choose !== undefined) pick(store, [], choose);
    const root = await loader.index(indexBytes, { mediaType: OCI_INDEX, digest: sha256Digest(indexBytes), size: indexBytes.length }, 0, []);
    return { root, names: [], missing: loader.missing };
  }
  const chosen = pick(store, named, choose);
  const root = await loader.node(chosen, 0, []);
  if ("missing" in root) throw new ArchiveError(`${store.label}: the chosen image cannot be pushed: ${root.missing}`);
  return { root, names: await namesOf(chosen), missing: loader.missing };
}

/** The layout's blobs, as the manifest walker reads them. */
function layoutBlobs(store: ArchiveStore): BlobStore {
  return {
    label: store.label,
    has: async (digest) => store.has(blobPath(digest)),
    read: (digest, limit) => store.small(blobPath(digest), limit),
    blob: (descriptor) => store.blob(blobPath(descriptor.digest)),
  };
}

async function repoTagsByConfig(store: ArchiveStore): Promise<Map<string, string[]>> {
  const map = new Map<string, string[]>();
  for (const entry of await saveEntries(store).catch(() => [] as SaveEntry[])) {
    const digest = digestFromName(entry.Config);
    if (digest) map.set(digest, [...(map.get(digest) ?? []), ...entry.RepoTags]);
  }
  return map;
}

/** The one candidate `choose` names; without a name, the only candidate. Usage errors list the names. */
function pick<T>(store: ArchiveStore, candidates: { names: string[]; value: T }[], choose?: string): T {
  // A hostile index lists thousands: name a few, count the rest.
  const shown = candidates.slice(0, LISTED_NAMES).map((c) => (c.names.length ? c.names.join(", ") : "(no name)"));
  const listed = shown.join("; ") + (candidates.length > LISTED_NAMES ? `; and ${candidates.length - LISTED_NAMES} more` : "");
  if (choose === undefined) {
    if (candidates.length === 1) return candidates[0]!.value;
    throw new UsageError(`${store.label} holds ${candidates.length} images: choose one with --image <name> (${listed})`);
  }
  const wanted = normalizeName(choose);
  const found = candidates.filter((c) => c.names.some((n) => n === choose || normalizeName(n) === wanted));
  if (found.length === 1) return found[0]!.value;
  if (found.length > 1) throw new UsageError(`--image ${choose} names ${found.length} images of ${store.label}`);
  throw new UsageError(`--image ${choose}: ${store.label} has no image of that name (${listed || "it names none"})`);
}

/** `app` and `docker.io/library/app:latest` name the same image, as Docker reads names. */
export function normalizeName(name: string): string {
  let n = name.trim();
  const slash = n.indexOf("/");
  const first = slash === -1 ? "" : n.slice(0, slash);
  if (!(first.includes(".") || first.includes(":") || first === "localhost")) n = `docker.io/${n.includes("/") ? n : `library/${n}`}`;
  const lastPart = n.slice(n.lastIndexOf("/") + 1);
  if (!lastPart.includes(":") && !lastPart.includes("@")) n = `${n}:latest`;
  return n;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
