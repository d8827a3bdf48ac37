/** choosePlatforms: which manifests of an index go, and when the source's own index goes unchanged. */
import { describe, expect, test } from "bun:test";
import type { Descriptor, Platform } from "../../src/model/descriptor.ts";
import type { ArtifactNode, ImageNode, IndexChild, IndexNode } from "../../src/model/image.ts";
import { UsageError } from "../../src/errors.ts";
import { choosePlatforms } from "../../src/push/choose.ts";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const digest = (c: string) => `sha256:${c.repeat(64)}`;

function image(platform: Platform): ImageNode {
  return { kind: "image", platform, config: { bytes: new Uint8Array(0), digest: digest("c"), mediaType: "x" }, layers: [] };
}

function artifact(): ArtifactNode {
  return {
    kind: "artifact",
    raw: new Uint8Array(0),
    manifest: { schemaVersion: 2, config: { mediaType: "x", digest: digest("e"), size: 0 }, layers: [] },
    blobs: [],
  };
}

function entry(d: string, node: ImageNode | ArtifactNode, extra: Partial<Descriptor> = {}): IndexChild {
  return { descriptor: { mediaType: MANIFEST, digest: digest(d), size: 1, ...extra }, node };
}

function index(children: IndexChild[]): IndexNode {
  return { kind: "index", raw: new Uint8Array([1]), document: { schemaVersion: 2, manifests: children.map((c) => c.descriptor) }, children };
}

const AMD64 = { os: "linux", architecture: "amd64" };
const ARMV6 = { os: "linux", architecture: "arm", variant: "v6" };
const ARMV7 = { os: "linux", architecture: "arm", variant: "v7" };

describe("choosePlatforms", () => {
  // One manifest serving two variants: the walker gives both entries the same node, platform of the first.
  const shared = image(ARMV6);
  const children = [entry("1", image(AMD64), { platform: AMD64 }), entry("2", shared, { platform: ARMV6 }), entry("2", shared, { platform: ARMV7 })];

  test("one manifest listed for two platforms: both entries kept, the index unchanged", () => {
    const root = index(children);
    const leftOut: string[] = [];
    expect(choosePlatforms(root, [], leftOut)).toBe(root);
    expect(leftOut).toEqual([]);
  });

  test("--platform picks the entry by its own platform, not by the first entry naming the same manifest", () => {
    const leftOut: string[] = [];
    const chosen = choosePlatforms(index(children), [ARMV7], leftOut);
    expect(chosen).toBe(shared);
    expect((chosen as ImageNode).platform).toEqual(ARMV7);
    expect(leftOut).toEqual(["linux/amd64 is left out: not a chosen --platform", "linux/arm/v6 is left out: not a chosen --platform"]);
  });

  test("an attestation naming no image is kept with the whole index, and named when platforms are chosen", () => {
    const attestation = entry("a", artifact(), { annotations: { "vnd.docker.reference.type": "attestation-manifest" } });
    const root = index([entry("1", image(AMD64), { platform: AMD64 }), entry("3", image(ARMV7), { platform: ARMV7 }), attestation]);
    const leftOut: string[] = [];
    expect(choosePlatforms(root, [], leftOut)).toBe(root);
    expect(leftOut).toEqual([]);
    const chosen = choosePlatforms(root, [AMD64, ARMV7], leftOut) as IndexNode;
    expect(chosen.children.map((c) => c.descriptor.digest)).toEqual([digest("1"), digest("3")]);
    expect(leftOut).toEqual([`the attestation sha256:aaaaaaaaaaaa is left out: it names no image of the index`]);
  });

  test("an index listing the very same entry twice is read once (no multiplication through nesting)", () => {
    const one = entry("1", image(AMD64), { platform: AMD64 });
    const inner = index([one, one, one]);
    const root = index([
      { descriptor: { mediaType: "application/vnd.oci.image.index.v1+json", digest: digest("9"), size: 1 }, node: inner },
      { descriptor: { mediaType: "application/vnd.oci.image.index.v1+json", digest: digest("9"), size: 1 }, node: inner },
    ]);
    const chosen = choosePlatforms(root, [], []) as IndexNode;
    expect(chosen.children).toEqual([one]);
  });

  test("a platform the image lacks is a usage error naming the flag: a single image, or an index", () => {
    const S390X = { os: "linux", architecture: "s390x" };
    expect(() => choosePlatforms(image(AMD64), [S390X], [])).toThrow(new UsageError("--platform linux/s390x: the image is linux/amd64 only"));
    expect(() => choosePlatforms(index(children), [S390X, { os: "linux", architecture: "ppc64le" }], [])).toThrow(
      new UsageError("--platform linux/s390x --platform linux/ppc64le: no platform of the image matches (it has linux/amd64, linux/arm/v6, linux/arm/v7)"),
    );
    expect(() => choosePlatforms(image(AMD64), [S390X], [])).toThrow(UsageError);
  });
});
