/**
 * Which manifests of the source go: `--platform` applied, platforms whose blobs the source lacks
 * left out (with the reason), attestations kept with the image they describe. Pure: it only reads the
 * model and returns the root to push (the source's own, one image of it, or a new index of some).
 */
import { PushError, UsageError } from "../errors.ts";
import type { Descriptor, Platform } from "../model/descriptor.ts";
import { shortDigest } from "../model/digest.ts";
import type { ArtifactNode, ImageNode, IndexChild, IndexNode, ManifestNode } from "../model/image.ts";
import { formatPlatform, platformMatches } from "../model/platform.ts";

/**
 * Applies --platform and drops what the source lacks. One platform chosen gives its plain manifest;
 * several give an index of them; attestations go with the images they describe.
 */
export function choosePlatforms(root: ManifestNode, wanted: Platform[], leftOut: string[]): ManifestNode {
  if (root.kind === "image") {
    if (wanted.length > 0 && !wanted.some((p) => platformMatches(p, root.platform))) {
      throw new UsageError(`${platformFlags(wanted)}: the image is ${formatPlatform(root.platform)} only`);
    }
    return root;
  }
  if (root.kind === "artifact") return root;
  const flat = flatten(root);
  const available = flat.filter((c) => c.node?.kind === "image" || (c.node === undefined && !isAttestation(c.descriptor)));
  const keep = new Set<IndexChild>();
  for (const child of flat) {
    if (!child.node) {
      leftOut.push(`${describeChild(child.descriptor)} is left out: ${child.missing}`);
      continue;
    }
    if (isAttestation(child.descriptor)) continue;
    // The index entry's platform first: one manifest may be listed for two platforms (arm/v6 and arm/v7).
    const platform = child.descriptor.platform ?? (child.node.kind === "image" ? child.node.platform : undefined);
    if (child.node.kind !== "image" || wanted.length === 0 || wanted.some((p) => platformMatches(p, platform))) keep.add(child);
    else leftOut.push(`${describeChild(child.descriptor)} is left out: not a chosen --platform`);
  }
  // Attestations go with the image they describe (buildx names it in vnd.docker.reference.digest).
  const keptDigests = new Set([...keep].map((c) => c.descriptor.digest));
  const listed = new Set(flat.map((c) => c.descriptor.digest));
  for (const child of flat) {
    if (!child.node || !isAttestation(child.descriptor)) continue;
    const subject = child.descriptor.annotations?.["vnd.docker.reference.digest"];
    if (subject && keptDigests.has(subject)) keep.add(child);
    else if (subject === undefined || !listed.has(subject)) {
      // Nothing ties it to a platform left out: the whole index keeps it; a choice of platforms cannot.
      if (wanted.length === 0) keep.add(child);
      else leftOut.push(`${describeChild(child.descriptor)} is left out: it names no image of the index`);
    }
  }
  const kept = flat.filter((c) => keep.has(c));
  const images = kept.filter((c) => c.node?.kind === "image");
  if (images.length === 0) {
    const names = available.map((c) => describeChild(c.descriptor)).join(", ");
    if (wanted.length > 0) throw new UsageError(`${platformFlags(wanted)}: no platform of the image matches (it has ${names || "none it can push"})`);
    throw new PushError(`the image index holds no platform that can be pushed (${names || "it lists none"})`);
  }
  if (wanted.length > 0 && images.length === 1) {
    const only = images[0]!;
    const image = only.node as ImageNode;
    if (only.descriptor.platform) image.platform = only.descriptor.platform;
    for (const other of kept)
      if (other !== only) leftOut.push(`${describeChild(other.descriptor)} is left out: a single-platform push has no index to carry it`);
    return image;
  }
  if (kept.length === root.children.length && kept.every((c, i) => c === root.children[i])) return root;
  // A new index of what is kept, in the source's order.
  return { kind: "index", raw: root.raw, document: root.document, children: kept };
}

/** "--platform linux/s390x", "--platform linux/amd64 --platform linux/s390x": as the user gave them. */
function platformFlags(wanted: Platform[]): string {
  return wanted.map((p) => `--platform ${formatPlatform(p)}`).join(" ");
}

export function isAttestation(d: Descriptor): boolean {
  return d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest";
}

function describeChild(d: Descriptor): string {
  if (isAttestation(d)) return `the attestation ${shortDigest(d.digest)}`;
  return d.platform ? formatPlatform(d.platform) : `manifest ${shortDigest(d.digest)}`;
}

/**
 * The children of an index, nested indexes opened (a containerd save's index.json -> index -> images).
 * Each nested index once, and each entry once: indexes that list the next one many times over would
 * otherwise multiply into millions of entries (width^depth) from a few kilobytes. An entry is its whole
 * descriptor, not its digest: one manifest listed for two platforms is two entries.
 */
export function flatten(index: IndexNode, seen = new Set<string>()): IndexChild[] {
  const out: IndexChild[] = [];
  for (const child of index.children) {
    const key = child.node?.kind === "index" ? child.descriptor.digest : entryKey(child.descriptor);
    if (seen.has(key)) continue;
    seen.add(key);
    if (child.node?.kind === "index") out.push(...flatten(child.node, seen));
    else out.push(child);
  }
  return out;
}

function entryKey(d: Descriptor): string {
  return JSON.stringify([d.digest, d.platform ?? null, d.annotations ?? null]);
}

/**
 * Names for the artifacts under `root` that tell them apart in progress lines and the summary (which key
 * blobs by name): an attestation by the platform of the image it describes ("linux/arm64 attestation"),
 * else by its own digest.
 */
export function artifactNames(root: ManifestNode): Map<ManifestNode, string> {
  const names = new Map<ManifestNode, string>();
  if (root.kind !== "index") return names;
  const children = flatten(root);
  const taken = new Set<string>();
  for (const child of children) {
    if (child.node?.kind !== "artifact") continue;
    const subject = child.descriptor.annotations?.["vnd.docker.reference.digest"];
    const image = subject ? children.find((c) => c.descriptor.digest === subject && c.node?.kind === "image") : undefined;
    const platform = image ? ((image.node as ImageNode).platform ?? image.descriptor.platform) : undefined;
    let name = platform ? `${formatPlatform(platform)} attestation` : `attestation ${shortDigest(child.descriptor.digest)}`;
    if (taken.has(name)) name = `${name} ${shortDigest(child.descriptor.digest)}`;
    taken.add(name);
    names.set(child.node, name);
  }
  return names;
}

/** Every image and artifact under a node, each once. */
export function collect(node: ManifestNode, seen = new Set<ManifestNode>()): (ImageNode | ArtifactNode)[] {
  if (seen.has(node)) return [];
  seen.add(node);
  if (node.kind !== "index") return [node];
  return node.children.flatMap((c) => (c.node ? collect(c.node, seen) : []));
}
