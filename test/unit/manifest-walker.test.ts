/**
 * The manifest walker over an in-memory blob store: what it builds from indexes, manifests and configs,
 * what it reads (once each, with the right limit and kind), and each refusal with its exact message.
 */
import { describe, expect, test } from "bun:test";
import { type Descriptor, DocumentError } from "../../src/model/descriptor.ts";
import { sha256Digest } from "../../src/model/digest.ts";
import type { ArtifactNode, ImageNode, IndexNode, ManifestNode } from "../../src/model/image.ts";
import { sniffCompression } from "../../src/model/media-types.ts";
import {
  type BlobStore,
  CONFIG_LIMIT,
  DOCUMENT_BUDGET,
  isArtifact,
  MANIFEST_LIMIT,
  MAX_DEPTH,
  MAX_ENTRIES,
  MAX_MANIFESTS,
  ManifestWalker,
} from "../../src/sources/manifest-walker.ts";
import { ArchiveError } from "../../src/sources/store.ts";

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
const GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
const LABEL = "test store";

const utf8 = (text: string) => new TextEncoder().encode(text);
const json = (value: unknown) => utf8(JSON.stringify(value));
const fake = (c: string) => `sha256:${c.repeat(64)}`;

/** Blobs by digest, with every read recorded; `sizes` makes a blob claim another size than its bytes. */
class MemoryBlobs implements BlobStore {
  readonly label = LABEL;
  readonly blobs = new Map<string, Uint8Array>();
  readonly sizes = new Map<string, number>();
  readonly reads: [string, number, string][] = [];

  /** Stores the bytes; returns their descriptor. */
  put(bytes: Uint8Array, mediaType: string, extra: Partial<Descriptor> = {}): Descriptor {
    const digest = sha256Digest(bytes);
    this.blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length, ...extra };
  }

  async has(digest: string): Promise<boolean> {
    return this.blobs.has(digest);
  }

  async read(digest: string, limit: number, kind: "manifest" | "config"): Promise<Uint8Array> {
    this.reads.push([digest, limit, kind]);
    const bytes = this.blobs.get(digest);
    if (!bytes) throw new Error(`read of absent ${digest}`);
    return bytes;
  }

  async blob(descriptor: Descriptor) {
    const bytes = this.blobs.get(descriptor.digest);
    if (!bytes) throw new Error(`blob of absent ${descriptor.digest}`);
    const size = this.sizes.get(descriptor.digest) ?? bytes.length;
    return { bytes: { kind: "file" as const, path: `mem:${descriptor.digest}`, offset: 0, size }, size, compression: sniffCompression(bytes) };
  }
}

interface BuiltImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  diffIds: string[];
}

/** An image with `layers` gzip layers (distinct bytes), its config's platform fields, in `store`. */
function putImage(
  store: MemoryBlobs,
  opts: {
    layers?: number;
    seed?: string;
    config?: Record<string, unknown>;
    configMediaType?: string;
    manifestExtra?: Record<string, unknown>;
    skip?: ("config" | number)[];
  } = {},
): BuiltImage {
  const seed = opts.seed ?? "x";
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < (opts.layers ?? 2); i++) {
    const bytes = new Uint8Array([0x1f, 0x8b, ...utf8(`${seed} layer ${i}`)]);
    const layer = opts.skip?.includes(i) ? { mediaType: GZIP_LAYER, digest: sha256Digest(bytes), size: bytes.length } : store.put(bytes, GZIP_LAYER);
    layers.push(layer);
    diffIds.push(sha256Digest(`${seed} diff ${i}`));
  }
  const configBytes = json({ ...(opts.config ?? { architecture: "amd64", os: "linux" }), rootfs: { type: "layers", diff_ids: diffIds } });
  const configType = opts.configMediaType ?? OCI_CONFIG;
  const config = opts.skip?.includes("config")
    ? { mediaType: configType, digest: sha256Digest(configBytes), size: configBytes.length }
    : store.put(configBytes, configType);
  const manifest = store.put(json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers, ...opts.manifestExtra }), OCI_MANIFEST);
  return { manifest, config, layers, diffIds };
}

function putIndex(store: MemoryBlobs, manifests: Descriptor[], mediaType = OCI_INDEX): Descriptor {
  return store.put(json({ schemaVersion: 2, mediaType, manifests }), mediaType);
}

async function walk(store: MemoryBlobs, d: Descriptor): Promise<ManifestNode | { missing: string }> {
  return new ManifestWalker(store).node(d, 0, []);
}

function asImage(node: ManifestNode | { missing: string } | undefined): ImageNode {
  if (!node || "missing" in node || node.kind !== "image") throw new Error(`expected an image, got ${JSON.stringify(node)}`);
  return node;
}

function asIndex(node: ManifestNode | { missing: string } | undefined): IndexNode {
  if (!node || "missing" in node || node.kind !== "index") throw new Error(`expected an index, got ${JSON.stringify(node)}`);
  return node;
}

function asArtifact(node: ManifestNode | { missing: string } | undefined): ArtifactNode {
  if (!node || "missing" in node || node.kind !== "artifact") throw new Error(`expected an artifact, got ${JSON.stringify(node)}`);
  return node;
}

async function refusal(run: () => Promise<unknown>): Promise<string> {
  const error = await run().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ArchiveError);
  return (error as Error).message;
}

describe("an image manifest", () => {
  test("becomes an image node: its raw bytes, config, layers with their diff_ids, the config's platform", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store, { config: { architecture: "arm", os: "linux", variant: "v7" } });
    const node = asImage(await walk(store, built.manifest));
    expect(node.raw).toEqual(store.blobs.get(built.manifest.digest)!);
    expect(node.manifest?.config).toEqual(built.config);
    expect(node.config).toEqual({ bytes: store.blobs.get(built.config.digest)!, digest: built.config.digest, mediaType: OCI_CONFIG });
    expect(node.layers).toEqual(
      built.layers.map((descriptor, i) => ({
        diffId: built.diffIds[i]!,
        descriptor,
        compression: "gzip",
        bytes: { kind: "file", path: `mem:${descriptor.digest}`, offset: 0, size: descriptor.size },
      })),
    );
    expect(node.platform).toStrictEqual({ os: "linux", architecture: "arm", variant: "v7" });
  });

  test("each document is read once with its limit and kind: manifests 4 MiB, configs 8 MiB", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    const walker = new ManifestWalker(store);
    expect(await walker.configDigestOf(built.manifest)).toBe(built.config.digest);
    await walker.node(built.manifest, 0, []);
    await walker.node(built.manifest, 0, []);
    expect(MANIFEST_LIMIT).toBe(4 * 1024 * 1024);
    expect(CONFIG_LIMIT).toBe(8 * 1024 * 1024);
    expect(store.reads).toEqual([
      [built.manifest.digest, MANIFEST_LIMIT, "manifest"],
      [built.config.digest, CONFIG_LIMIT, "config"],
    ]);
  });

  test("no variant key when the config has none or an empty one; no platform when os or architecture is missing", async () => {
    for (const [config, platform] of [
      [
        { architecture: "amd64", os: "linux" },
        { os: "linux", architecture: "amd64" },
      ],
      [
        { architecture: "amd64", os: "linux", variant: "" },
        { os: "linux", architecture: "amd64" },
      ],
      [{ os: "linux" }, undefined],
      [{ architecture: "amd64" }, undefined],
    ] as const) {
      const store = new MemoryBlobs();
      const node = asImage(await walk(store, putImage(store, { config }).manifest));
      expect(node.platform).toStrictEqual(platform);
      expect("platform" in node).toBe(platform !== undefined);
    }
  });

  test("the index entry's platform wins over the config's", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store, { config: { architecture: "amd64", os: "linux" } });
    const platform = { os: "linux", architecture: "arm64", variant: "v8" };
    expect(asImage(await walk(store, { ...built.manifest, platform })).platform).toEqual(platform);
  });

  test("a config descriptor without a media type is taken as OCI's; Docker's is kept", async () => {
    const store = new MemoryBlobs();
    const untyped = putImage(store, { configMediaType: "", seed: "u" });
    expect(asImage(await walk(store, untyped.manifest)).config.mediaType).toBe(OCI_CONFIG);
    const docker = putImage(store, { configMediaType: DOCKER_CONFIG, seed: "d" });
    expect(asImage(await walk(store, docker.manifest)).config.mediaType).toBe(DOCKER_CONFIG);
  });

  test("a manifest read by its shape when the descriptor's type says nothing", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    expect(asImage(await walk(store, { ...built.manifest, mediaType: "" })).layers).toHaveLength(2);
  });

  test("missing blobs make it missing, with the reason", async () => {
    const store = new MemoryBlobs();
    const noConfig = putImage(store, { skip: ["config"], seed: "c" });
    expect(await walk(store, noConfig.manifest)).toEqual({ missing: `its config ${noConfig.config.digest} is not in ${LABEL}` });
    const noLayer = putImage(store, { skip: [1], seed: "l" });
    expect(await walk(store, noLayer.manifest)).toEqual({ missing: `its layer ${noLayer.layers[1]!.digest} is not in ${LABEL}` });
    const manifest = { mediaType: OCI_MANIFEST, digest: fake("a"), size: 10 };
    expect(await walk(store, manifest)).toEqual({ missing: `its manifest ${fake("a")} is not in ${LABEL}` });
    expect(store.reads.map(([digest]) => digest)).not.toContain(fake("a"));
  });

  test("a layer whose stored size differs from its descriptor is refused", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    store.sizes.set(built.layers[1]!.digest, built.layers[1]!.size + 1);
    expect(await refusal(() => walk(store, built.manifest))).toBe(
      `${LABEL} is corrupt: layer ${built.layers[1]!.digest} has ${built.layers[1]!.size + 1} bytes, its descriptor says ${built.layers[1]!.size}`,
    );
  });

  test("a config listing another number of diff_ids than the manifest has layers is refused", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store, { layers: 2 });
    const config = store.put(json({ rootfs: { type: "layers", diff_ids: [fake("1")] } }), OCI_CONFIG);
    const manifest = store.put(json({ schemaVersion: 2, config, layers: built.layers }), OCI_MANIFEST);
    expect(await refusal(() => walk(store, manifest))).toBe(`${LABEL} is corrupt: config ${config.digest} lists 1 layers (diff_ids) but its manifest 2`);
  });

  test("bytes that do not hash to their digest, or have another size, are refused", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    const other = json({ schemaVersion: 2 });
    store.blobs.set(built.manifest.digest, other);
    expect(await refusal(() => walk(store, built.manifest))).toBe(`${LABEL} is corrupt: blob ${built.manifest.digest} hashes to ${sha256Digest(other)}`);

    const fresh = new MemoryBlobs();
    const image = putImage(fresh);
    expect(await refusal(() => walk(fresh, { ...image.manifest, size: image.manifest.size - 1 }))).toBe(
      `${LABEL} is corrupt: blob ${image.manifest.digest} has ${image.manifest.size} bytes, its descriptor says ${image.manifest.size - 1}`,
    );
    const config = new MemoryBlobs();
    const lying = putImage(config, { seed: "cfg" });
    const manifest = config.put(json({ schemaVersion: 2, config: { ...lying.config, size: lying.config.size + 3 }, layers: lying.layers }), OCI_MANIFEST);
    expect(await refusal(() => walk(config, manifest))).toBe(
      `${LABEL} is corrupt: blob ${lying.config.digest} has ${lying.config.size} bytes, its descriptor says ${lying.config.size + 3}`,
    );
  });

  test("a document that is neither a manifest nor an index is refused", async () => {
    const store = new MemoryBlobs();
    const d = store.put(json({ schemaVersion: 2, hello: "world" }), OCI_MANIFEST);
    expect(await refusal(() => walk(store, d))).toBe(`${LABEL} is corrupt: ${d.digest} is neither an image manifest nor an index`);
  });
});

describe("documents that are not what their descriptor says", () => {
  async function documentRefusal(run: () => Promise<unknown>): Promise<string> {
    const error = await run().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DocumentError);
    return (error as Error).message;
  }

  test("each is named by its kind and digest", async () => {
    const store = new MemoryBlobs();
    const notJson = store.put(utf8("<html>"), OCI_MANIFEST);
    expect(await documentRefusal(() => walk(store, notJson))).toBe(`manifest ${notJson.digest} is not valid JSON`);
    expect(await documentRefusal(() => new ManifestWalker(store).configDigestOf(notJson))).toBe(`manifest ${notJson.digest} is not valid JSON`);

    const badConfig = store.put(json({ schemaVersion: 2, config: {}, layers: [] }), OCI_MANIFEST);
    expect(await documentRefusal(() => walk(store, badConfig))).toBe(`manifest ${badConfig.digest} config has no sha256 digest`);
    expect(await documentRefusal(() => new ManifestWalker(store).configDigestOf(badConfig))).toBe(`manifest ${badConfig.digest} config has no sha256 digest`);

    const badIndex = store.put(json({ schemaVersion: 2, manifests: [{ digest: "x", size: 1 }] }), OCI_INDEX);
    expect(await documentRefusal(() => walk(store, badIndex))).toBe(`index ${badIndex.digest} entry 1 has no sha256 digest (got "x")`);

    const config = store.put(json({ rootfs: { diff_ids: "none" } }), OCI_CONFIG);
    const manifest = store.put(json({ schemaVersion: 2, config, layers: [] }), OCI_MANIFEST);
    expect(await documentRefusal(() => walk(store, manifest))).toBe(`config ${config.digest}'s rootfs.diff_ids are not a list of sha256 digests`);
  });
});

describe("an index", () => {
  test("children in order, each with its descriptor; nested indexes walked; the raw bytes and document kept", async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store, { seed: "amd" });
    const arm = putImage(store, { seed: "arm", config: { architecture: "arm64", os: "linux" } });
    const inner = putIndex(store, [{ ...arm.manifest, platform: { os: "linux", architecture: "arm64" } }], DOCKER_LIST);
    const top = putIndex(store, [{ ...amd.manifest, platform: { os: "linux", architecture: "amd64" } }, inner]);
    const root = asIndex(await walk(store, top));
    expect(root.raw).toEqual(store.blobs.get(top.digest)!);
    expect(root.document.manifests.map((m) => m.digest)).toEqual([amd.manifest.digest, inner.digest]);
    expect(root.children.map((c) => c.descriptor.digest)).toEqual([amd.manifest.digest, inner.digest]);
    expect(asImage(root.children[0]!.node).config.digest).toBe(amd.config.digest);
    const nested = asIndex(root.children[1]!.node);
    expect(asImage(nested.children[0]!.node).platform).toEqual({ os: "linux", architecture: "arm64" });
  });

  test("an index read by its shape when its descriptor says manifest", async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store);
    const top = putIndex(store, [amd.manifest]);
    expect(asIndex(await walk(store, { ...top, mediaType: OCI_MANIFEST })).children).toHaveLength(1);
  });

  test("the same child listed twice is walked once and is the same node", async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store);
    const root = asIndex(await walk(store, putIndex(store, [amd.manifest, amd.manifest])));
    expect(root.children[0]!.node).toBe(root.children[1]!.node!);
    expect(store.reads.filter(([digest]) => digest === amd.manifest.digest)).toHaveLength(1);
  });

  test("children whose blobs are absent are kept as missing, and listed with a name for each", async () => {
    const store = new MemoryBlobs();
    const arm = putImage(store, { seed: "arm", skip: [0] });
    const v7 = putImage(store, { seed: "v7", skip: ["config"] });
    const gone = { mediaType: OCI_MANIFEST, digest: fake("b"), size: 100 };
    const attestation = { mediaType: OCI_MANIFEST, digest: fake("c"), size: 100, annotations: { "vnd.docker.reference.type": "attestation-manifest" } };
    const top = putIndex(store, [
      { ...arm.manifest, platform: { os: "linux", architecture: "arm64" } },
      { ...v7.manifest, platform: { os: "linux", architecture: "arm", variant: "v7" } },
      gone,
      attestation,
    ]);
    const walker = new ManifestWalker(store);
    const root = asIndex(await walker.node(top, 0, []));
    expect(root.children.map((c) => c.missing)).toEqual([
      `its layer ${arm.layers[0]!.digest} is not in ${LABEL}`,
      `its config ${v7.config.digest} is not in ${LABEL}`,
      `its manifest ${fake("b")} is not in ${LABEL}`,
      `its manifest ${fake("c")} is not in ${LABEL}`,
    ]);
    expect(root.children.every((c) => c.node === undefined)).toBe(true);
    expect(walker.missing).toEqual([
      `linux/arm64: its layer ${arm.layers[0]!.digest} is not in ${LABEL}`,
      `linux/arm/v7: its config ${v7.config.digest} is not in ${LABEL}`,
      `sha256:bbbbbbbbbbbb: its manifest ${fake("b")} is not in ${LABEL}`,
      `attestation sha256:cccccccccccc: its manifest ${fake("c")} is not in ${LABEL}`,
    ]);
  });

  test("an entry already on the walk's path is a loop", async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store);
    // Real digests cannot form a cycle; a source that names one (or a caller's path) is refused before any read.
    expect(await refusal(async () => new ManifestWalker(store).node(amd.manifest, 0, [fake("0"), amd.manifest.digest]))).toBe(
      `${LABEL} is corrupt: index ${amd.manifest.digest} contains itself`,
    );
    expect(store.reads).toEqual([]);
  });

  test("the indexes above a child are on the path it is walked with", async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store);
    const inner = putIndex(store, [amd.manifest]);
    const outer = putIndex(store, [inner]);
    // Walked from a caller that already holds the image: the loop shows two levels down.
    expect(await refusal(() => new ManifestWalker(store).node(outer, 0, [amd.manifest.digest]))).toBe(
      `${LABEL} is corrupt: index ${amd.manifest.digest} contains itself`,
    );
  });

  test(`indexes may nest ${MAX_DEPTH} levels, not ${MAX_DEPTH + 1}`, async () => {
    const store = new MemoryBlobs();
    const image = putImage(store);
    let d = image.manifest;
    for (let level = 1; level <= MAX_DEPTH; level++) d = putIndex(store, [d]);
    expect(MAX_DEPTH).toBe(8);
    let node = await walk(store, d);
    for (let level = 1; level <= MAX_DEPTH; level++) node = asIndex(node).children[0]!.node!;
    expect(asImage(node).config.digest).toBe(image.config.digest);
    expect(await refusal(() => walk(store, putIndex(store, [d])))).toBe(`${LABEL}: indexes nest deeper than 8 levels`);
  });

  test(`an index may list ${MAX_ENTRIES} entries, not one more`, async () => {
    const store = new MemoryBlobs();
    const amd = putImage(store);
    expect(MAX_ENTRIES).toBe(10_000);
    const most = asIndex(await walk(store, putIndex(store, Array(MAX_ENTRIES).fill(amd.manifest))));
    expect(most.children).toHaveLength(MAX_ENTRIES);
    const over = putIndex(store, Array(MAX_ENTRIES + 1).fill(amd.manifest));
    expect(await refusal(() => walk(store, over))).toBe(`${LABEL}: index ${over.digest} lists more than 10000 manifests`);
  });

  test(`a walk reaches at most ${MAX_MANIFESTS} distinct manifests`, async () => {
    const store = new MemoryBlobs();
    const absent = (i: number) => ({ mediaType: OCI_MANIFEST, digest: `sha256:${i.toString(16).padStart(64, "0")}`, size: 10 });
    expect(MAX_MANIFESTS).toBe(1000);
    const entries = Array.from({ length: MAX_MANIFESTS }, (_, i) => absent(i));
    const bytes = json({ schemaVersion: 2, manifests: entries });
    const walker = new ManifestWalker(store);
    const root = await walker.index(bytes, { mediaType: OCI_INDEX, digest: sha256Digest(bytes), size: bytes.length }, 0, []);
    expect(root.children).toHaveLength(MAX_MANIFESTS);
    expect(walker.missing).toHaveLength(MAX_MANIFESTS);
    const more = json({ schemaVersion: 2, manifests: [...entries, absent(MAX_MANIFESTS)] });
    expect(await refusal(() => new ManifestWalker(store).index(more, { mediaType: OCI_INDEX, digest: sha256Digest(more), size: more.length }, 0, []))).toBe(
      `${LABEL} lists more than 1000 manifests`,
    );
  });

  test("a descriptor claiming more than the limit is counted at the limit, and refused for its size", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    const claim = DOCUMENT_BUDGET * 2;
    expect(await refusal(() => walk(store, { ...built.manifest, size: claim }))).toBe(
      `${LABEL} is corrupt: blob ${built.manifest.digest} has ${built.manifest.size} bytes, its descriptor says ${claim}`,
    );
  });
});

describe("configDigestOf: naming an image by its config", () => {
  test("an image manifest's config digest", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    expect(await new ManifestWalker(store).configDigestOf(built.manifest)).toBe(built.config.digest);
    expect(await new ManifestWalker(store).configDigestOf({ ...built.manifest, mediaType: DOCKER_MANIFEST })).toBe(built.config.digest);
  });

  test("nothing for an index, an absent manifest or one too large to be a manifest, without reading it", async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    const walker = new ManifestWalker(store);
    const index = putIndex(store, [built.manifest]);
    expect(await walker.configDigestOf(index)).toBeUndefined();
    expect(await walker.configDigestOf({ ...index, mediaType: DOCKER_LIST })).toBeUndefined();
    expect(await walker.configDigestOf({ mediaType: OCI_MANIFEST, digest: fake("d"), size: 3 })).toBeUndefined();
    expect(await walker.configDigestOf({ ...built.manifest, size: MANIFEST_LIMIT + 1 })).toBeUndefined();
    expect(store.reads).toEqual([]);
    // Exactly at the limit it is read (and then refused for its real size).
    expect(await refusal(() => walker.configDigestOf({ ...built.manifest, size: MANIFEST_LIMIT }))).toBe(
      `${LABEL} is corrupt: blob ${built.manifest.digest} has ${built.manifest.size} bytes, its descriptor says ${MANIFEST_LIMIT}`,
    );
  });

  test("nothing for an index whose descriptor says manifest", async () => {
    const store = new MemoryBlobs();
    const index = putIndex(store, [putImage(store).manifest]);
    expect(await new ManifestWalker(store).configDigestOf({ ...index, mediaType: OCI_MANIFEST })).toBeUndefined();
  });

  test(`at most ${MAX_MANIFESTS} manifests are read for names`, async () => {
    const store = new MemoryBlobs();
    const built = putImage(store);
    const walker = new ManifestWalker(store);
    for (let i = 0; i < MAX_MANIFESTS; i++) await walker.configDigestOf(built.manifest);
    expect(await refusal(() => walker.configDigestOf(built.manifest))).toBe(`${LABEL} lists more than 1000 manifests`);
  });
});

describe("artifacts", () => {
  test("an attestation is pushed as stored: its blobs with their descriptors", async () => {
    const store = new MemoryBlobs();
    const statement = store.put(utf8('{"_type":"https://in-toto.io/Statement/v0.1"}'), "application/vnd.in-toto+json");
    const config = store.put(utf8("{}"), OCI_CONFIG);
    const manifest = store.put(json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [statement] }), OCI_MANIFEST);
    const node = asArtifact(await walk(store, manifest));
    expect(node.raw).toEqual(store.blobs.get(manifest.digest)!);
    expect(node.manifest.layers).toEqual([statement]);
    expect(node.blobs).toEqual([
      { descriptor: config, bytes: { kind: "file", path: `mem:${config.digest}`, offset: 0, size: config.size } },
      { descriptor: statement, bytes: { kind: "file", path: `mem:${statement.digest}`, offset: 0, size: statement.size } },
    ]);
  });

  test("an artifact's absent blob makes it missing; a blob of another size is refused", async () => {
    const store = new MemoryBlobs();
    const config = store.put(utf8("{}"), "application/vnd.example.config+json");
    const absent = { mediaType: "application/octet-stream", digest: fake("e"), size: 4 };
    const manifest = store.put(json({ schemaVersion: 2, config, layers: [absent] }), OCI_MANIFEST);
    expect(await walk(store, manifest)).toEqual({ missing: `its blob ${fake("e")} is not in ${LABEL}` });

    const sized = new MemoryBlobs();
    const cfg = sized.put(utf8("{}"), "application/vnd.example.config+json");
    sized.sizes.set(cfg.digest, 7);
    const m = sized.put(json({ schemaVersion: 2, config: cfg, layers: [] }), OCI_MANIFEST);
    expect(await refusal(() => walk(sized, m))).toBe(`${LABEL} is corrupt: blob ${cfg.digest} has 7 bytes, its descriptor says 2`);
  });

  test("a config of another type makes an artifact even with no layers to read", async () => {
    const store = new MemoryBlobs();
    const config = store.put(utf8("not json"), "application/vnd.cncf.helm.config.v1+json");
    const manifest = store.put(json({ schemaVersion: 2, config, layers: [] }), OCI_MANIFEST);
    expect(asArtifact(await walk(store, manifest)).blobs.map((b) => b.descriptor)).toEqual([config]);
  });
});

describe("isArtifact", () => {
  const config = { mediaType: OCI_CONFIG, digest: fake("c"), size: 2 };
  const layer = (mediaType: string) => ({ mediaType, digest: fake("1"), size: 1 });
  const manifest = (layers: string[], extra: Record<string, unknown> = {}) => ({ schemaVersion: 2, config, layers: layers.map(layer), ...extra });

  test.each([
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "",
  ])("layers of type %p make an image", (mediaType) => {
    expect(isArtifact(undefined, manifest([mediaType, "application/vnd.oci.image.layer.v1.tar+gzip"]))).toBe(false);
  });

  test.each([
    "application/vnd.in-toto+json",
    "application/octet-stream",
    "text/application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v2.tar",
    "application/vnd.oci.image.layer.foreign.v1.tar",
    "application/vnd.docker.image.rootfs.nondistributable.diff.tar",
  ])("one layer of type %p makes an artifact", (mediaType) => {
    expect(isArtifact(undefined, manifest(["application/vnd.oci.image.layer.v1.tar+gzip", mediaType]))).toBe(true);
  });

  test("an image's config types, with or without layers, make an image; any other config type an artifact", () => {
    expect(isArtifact(undefined, manifest([]))).toBe(false);
    expect(isArtifact(undefined, { ...manifest([]), config: { ...config, mediaType: DOCKER_CONFIG } })).toBe(false);
    expect(isArtifact(undefined, { ...manifest([]), config: { ...config, mediaType: "" } })).toBe(false);
    expect(isArtifact(undefined, { ...manifest([]), config: { ...config, mediaType: "application/vnd.oci.empty.v1+json" } })).toBe(true);
  });

  test("an artifactType, or the attestation annotation on the index entry, makes an artifact", () => {
    expect(isArtifact(undefined, manifest([GZIP_LAYER], { artifactType: "application/vnd.example" }))).toBe(true);
    const entry = { mediaType: OCI_MANIFEST, digest: fake("a"), size: 1 };
    expect(isArtifact({ ...entry, annotations: { "vnd.docker.reference.type": "attestation-manifest" } }, manifest([GZIP_LAYER]))).toBe(true);
    expect(isArtifact({ ...entry, annotations: { "vnd.docker.reference.type": "other" } }, manifest([GZIP_LAYER]))).toBe(false);
    expect(isArtifact(entry, manifest([GZIP_LAYER]))).toBe(false);
  });
});

// Last in the file, so a run that already failed (a mutant caught; `bun test --bail`) stops before it.
describe("the document budget", () => {
  test(
    "the manifests, indexes and configs one walk reads add up to at most 64 MiB",
    async () => {
      expect(DOCUMENT_BUDGET).toBe(64 * 1024 * 1024);
      const store = new MemoryBlobs();
      // Manifests of exactly MANIFEST_LIMIT bytes (JSON padded with spaces) whose configs are absent,
      // cut from one buffer so the test does not build 64 MiB of strings.
      const pages = Buffer.alloc(DOCUMENT_BUDGET, 0x20);
      const within: Descriptor[] = [];
      for (let i = 0; i < DOCUMENT_BUDGET / MANIFEST_LIMIT; i++) {
        const page = pages.subarray(i * MANIFEST_LIMIT, (i + 1) * MANIFEST_LIMIT);
        page.set(json({ schemaVersion: 2, config: { mediaType: OCI_CONFIG, digest: fake("c"), size: 2 }, layers: [], annotations: { n: String(i) } }));
        within.push(store.put(page, OCI_MANIFEST));
      }
      const walker = new ManifestWalker(store);
      const bytes = json({ schemaVersion: 2, manifests: within });
      const root = await walker.index(bytes, { mediaType: OCI_INDEX, digest: sha256Digest(bytes), size: bytes.length }, 0, []);
      expect(root.children.map((c) => c.missing)).toEqual(within.map(() => `its config ${fake("c")} is not in ${LABEL}`));
      // Exactly at the budget: one byte more is refused, before it is read.
      const small = putImage(store).manifest;
      expect(await refusal(() => walker.node(small, 0, []))).toBe(
        `${LABEL}: its manifests, indexes and configs add up to more than 67108864 bytes: refusing it`,
      );
      expect(store.reads.map(([digest]) => digest)).not.toContain(small.digest);
    },
    { timeout: 30_000 },
  );
});
