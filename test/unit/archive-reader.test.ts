/**
 * readArchive over an in-memory archive: every decision of archive-reader.ts (which format, which
 * image, which names, what is refused and with which words) without writing a tar. archive.test.ts
 * reads real archives of every format through the real stores.
 */
import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import type { Descriptor } from "../../src/model/descriptor.ts";
import { sha256Digest } from "../../src/model/digest.ts";
import type { ImageNode, ManifestNode } from "../../src/model/image.ts";
import { sniffCompression } from "../../src/model/media-types.ts";
import { normalizeName, readArchive } from "../../src/sources/archive-reader.ts";
import { ArchiveError, type ArchiveStore } from "../../src/sources/store.ts";

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME = "io.containerd.image.name";
const LABEL = "archive mem.tar";
const MANIFEST_LIMIT = 4 * 1024 * 1024;
const CONFIG_LIMIT = 8 * 1024 * 1024;

const utf8 = (text: string) => new TextEncoder().encode(text);
const json = (value: unknown) => utf8(JSON.stringify(value));
const hex = (digest: string) => digest.slice("sha256:".length);

/** An archive's files in memory; `small` reads are recorded with their limit. */
class MemoryArchive implements ArchiveStore {
  readonly label = LABEL;
  readonly files = new Map<string, Uint8Array>();
  readonly smallReads: [string, number][] = [];

  put(name: string, bytes: Uint8Array): void {
    this.files.set(name, bytes);
  }

  /** A layout blob; returns its descriptor. */
  blobOf(bytes: Uint8Array, mediaType: string, extra: Partial<Descriptor> = {}): Descriptor {
    const digest = sha256Digest(bytes);
    this.put(`blobs/sha256/${hex(digest)}`, bytes);
    return { mediaType, digest, size: bytes.length, ...extra };
  }

  has(name: string): boolean {
    return this.files.has(name);
  }

  async small(name: string, limit: number): Promise<Uint8Array> {
    this.smallReads.push([name, limit]);
    const bytes = this.files.get(name);
    if (!bytes) throw new Error(`small read of absent ${name}`);
    return bytes;
  }

  async blob(name: string) {
    const bytes = this.files.get(name);
    if (!bytes) throw new Error(`blob read of absent ${name}`);
    return { bytes: { kind: "file" as const, path: `mem:${name}`, offset: 0, size: bytes.length }, size: bytes.length, compression: sniffCompression(bytes) };
  }
}

function configBytes(diffIds: string[], platform: Record<string, string> = { architecture: "amd64", os: "linux" }): Uint8Array {
  return json({ ...platform, rootfs: { type: "layers", diff_ids: diffIds } });
}

const layerBytes = (seed: string, i: number) => new Uint8Array([0x1f, 0x8b, ...utf8(`${seed} ${i}`)]);
const diffId = (seed: string, i: number) => sha256Digest(`${seed} diff ${i}`);

interface SavedImage {
  configName: string;
  configDigest: string;
  layerNames: string[];
  diffIds: string[];
}

/** A classic `docker save` image: `<config hex>.json` and `<id>/layer.tar` files. */
function saveImage(archive: MemoryArchive, seed: string, opts: { layers?: number; platform?: Record<string, string>; layerName?: (i: number) => string } = {}) {
  const diffIds = Array.from({ length: opts.layers ?? 2 }, (_, i) => diffId(seed, i));
  const config = configBytes(diffIds, opts.platform);
  const configDigest = sha256Digest(config);
  const configName = `${hex(configDigest)}.json`;
  archive.put(configName, config);
  const layerNames = diffIds.map((_, i) => opts.layerName?.(i) ?? `${seed}${i}/layer.tar`);
  for (const [i, name] of layerNames.entries()) archive.put(name, layerBytes(seed, i));
  return { configName, configDigest, layerNames, diffIds } satisfies SavedImage;
}

function manifestJson(archive: MemoryArchive, entries: unknown[]): void {
  archive.put("manifest.json", json(entries));
}

const entryOf = (image: SavedImage, repoTags?: unknown) => ({ Config: image.configName, RepoTags: repoTags, Layers: image.layerNames });

/** An image in a layout: its manifest descriptor (with `extra` for the index entry). */
function layoutImage(
  archive: MemoryArchive,
  seed: string,
  extra: Partial<Descriptor> = {},
  opts: { skipLayer?: boolean } = {},
): Descriptor & { config: string } {
  const layers = [0, 1].map((i) => {
    const bytes = layerBytes(seed, i);
    return opts.skipLayer && i === 1 ? { mediaType: GZIP_LAYER, digest: sha256Digest(bytes), size: bytes.length } : archive.blobOf(bytes, GZIP_LAYER);
  });
  const config = archive.blobOf(configBytes([diffId(seed, 0), diffId(seed, 1)]), OCI_CONFIG);
  return { ...archive.blobOf(json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }), OCI_MANIFEST, extra), config: config.digest };
}

function indexJson(archive: MemoryArchive, manifests: Descriptor[]): Uint8Array {
  const bytes = json({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: manifests.map(({ mediaType, digest, size, annotations, platform }) => ({ mediaType, digest, size, annotations, platform })),
  });
  archive.put("index.json", bytes);
  return bytes;
}

function image(node: ManifestNode): ImageNode {
  if (node.kind !== "image") throw new Error(`expected an image, got ${node.kind}`);
  return node;
}

async function refusal(run: () => Promise<unknown>, kind: typeof ArchiveError | typeof UsageError): Promise<string> {
  const error = await run().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(kind);
  return (error as Error).message;
}

describe("a docker save (manifest.json)", () => {
  test("the image: config as read, layers with diff_ids and stored bytes, the config's platform, its RepoTags", async () => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "a", { platform: { architecture: "arm", os: "linux", variant: "v7" } });
    manifestJson(archive, [entryOf(saved, ["app:1", 7, "app:latest"])]);
    const read = await readArchive(archive);
    expect(read.names).toEqual(["app:1", "app:latest"]);
    expect(read.missing).toEqual([]);
    const node = image(read.root);
    expect(node).toStrictEqual({
      kind: "image",
      config: { bytes: archive.files.get(saved.configName)!, digest: saved.configDigest, mediaType: OCI_CONFIG },
      layers: saved.layerNames.map((name, i) => ({
        diffId: saved.diffIds[i]!,
        compression: "gzip",
        bytes: { kind: "file", path: `mem:${name}`, offset: 0, size: archive.files.get(name)!.length },
      })),
      platform: { os: "linux", architecture: "arm", variant: "v7" },
    });
    expect(archive.smallReads).toEqual([
      ["manifest.json", MANIFEST_LIMIT],
      [saved.configName, CONFIG_LIMIT],
    ]);
  });

  test("layers named by their digest get a descriptor with that digest and their size", async () => {
    const archive = new MemoryArchive();
    const names = [0, 1].map((i) => `blobs/sha256/${hex(sha256Digest(layerBytes("d", i)))}`);
    const saved = saveImage(archive, "d", { layerName: (i) => names[i]! });
    manifestJson(archive, [entryOf(saved)]);
    const node = image((await readArchive(archive)).root);
    expect(node.layers.map((l) => l.descriptor)).toEqual(
      [0, 1].map((i) => ({ mediaType: "", digest: sha256Digest(layerBytes("d", i)), size: layerBytes("d", i).length })),
    );
  });

  test("no platform without os and architecture; no variant key without a variant; no names without RepoTags", async () => {
    for (const [platform, expected] of [
      [{ os: "linux" }, undefined],
      [{ architecture: "amd64" }, undefined],
      [
        { architecture: "amd64", os: "linux" },
        { os: "linux", architecture: "amd64" },
      ],
    ] as const) {
      const archive = new MemoryArchive();
      const saved = saveImage(archive, "p", { platform });
      manifestJson(archive, [entryOf(saved)]);
      const read = await readArchive(archive);
      expect(image(read.root).platform).toStrictEqual(expected);
      expect("platform" in read.root).toBe(expected !== undefined);
      expect(read.names).toEqual([]);
    }
  });

  test("a config whose name claims another digest is refused; a name claiming none is not checked", async () => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "c");
    const liar = `${"0".repeat(64)}.json`;
    archive.put(liar, archive.files.get(saved.configName)!);
    manifestJson(archive, [{ ...entryOf(saved), Config: liar }]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: the config ${liar} hashes to ${saved.configDigest}`);

    archive.put("config.json", archive.files.get(saved.configName)!);
    manifestJson(archive, [{ ...entryOf(saved), Config: "config.json" }]);
    expect(image((await readArchive(archive)).root).config.digest).toBe(saved.configDigest);
  });

  test("a config listing another number of layers, and a layer that is not in the archive, are refused", async () => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "n", { layers: 3 });
    manifestJson(archive, [{ ...entryOf(saved), Layers: saved.layerNames.slice(0, 2) }]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: the config lists 3 layers (diff_ids) but manifest.json 2`);

    manifestJson(archive, [{ ...entryOf(saved), Layers: [saved.layerNames[0], "gone/layer.tar", saved.layerNames[2]] }]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: layer 2 (gone/layer.tar) is not in it`);
  });

  test.each([
    ["an absolute config", { Config: "/etc/passwd" }, "/etc/passwd"],
    ["a config going up", { Config: "x/../../etc/passwd" }, "x/../../etc/passwd"],
    ["a layer going up", { Layers: ["a0/layer.tar", "../a1/layer.tar"] }, "../a1/layer.tar"],
    ["an absolute layer", { Layers: ["/a0/layer.tar", "a1/layer.tar"] }, "/a0/layer.tar"],
  ])("%s is refused before anything is read", async (_what, change, name) => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "a");
    manifestJson(archive, [{ ...entryOf(saved), ...change }]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL}: manifest.json names "${name}", outside the archive: refusing it`);
    expect(archive.smallReads).toEqual([["manifest.json", MANIFEST_LIMIT]]);
  });

  test("names with dots that stay inside are read", async () => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "a", { layerName: (i) => `..a${i}/layer..tar` });
    manifestJson(archive, [entryOf(saved)]);
    expect(image((await readArchive(archive)).root).layers).toHaveLength(2);
  });

  test.each([
    ["an object", {}, "manifest.json lists no image"],
    ["an empty list", [], "manifest.json lists no image"],
    ["a null entry", [null], "manifest.json entry 1 needs a Config file name and a Layers list"],
    ["no Config", [{ Layers: [] }], "manifest.json entry 1 needs a Config file name and a Layers list"],
    ["a numeric Config", [{ Config: 1, Layers: [] }], "manifest.json entry 1 needs a Config file name and a Layers list"],
    ["Layers not a list", [{ Config: "c.json", Layers: "l.tar" }], "manifest.json entry 1 needs a Config file name and a Layers list"],
    ["a numeric layer", [{ Config: "c.json", Layers: ["a.tar", 2] }], "manifest.json entry 1 needs a Config file name and a Layers list"],
  ])("manifest.json with %s is corrupt", async (_what, value, message) => {
    const archive = new MemoryArchive();
    archive.put("manifest.json", json(value));
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: ${message}`);
  });

  test("the entry that is wrong is named", async () => {
    const archive = new MemoryArchive();
    const saved = saveImage(archive, "a");
    manifestJson(archive, [entryOf(saved, ["a:1"]), { Config: "c.json" }]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(
      `${LABEL} is corrupt: manifest.json entry 2 needs a Config file name and a Layers list`,
    );
  });

  test("documents that are not valid JSON, or not of their shape, make the archive corrupt", async () => {
    const archive = new MemoryArchive();
    archive.put("manifest.json", utf8("[{"));
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: manifest.json is not valid JSON`);
    const saved = saveImage(archive, "a");
    archive.put(saved.configName, utf8('{"rootfs":{}}'));
    manifestJson(archive, [{ ...entryOf(saved), Config: saved.configName.replace(/^[0-9a-f]{64}/, "cfg") }]);
    archive.put("cfg.json", utf8('{"rootfs":{}}'));
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(
      `${LABEL} is corrupt: the image config's rootfs.diff_ids are not a list of sha256 digests`,
    );
  });

  test("an archive with neither manifest.json nor index.json is no image archive", async () => {
    const archive = new MemoryArchive();
    archive.put("etc/passwd", utf8("root"));
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(
      `${LABEL} is not a docker save, podman save or OCI layout: it has neither manifest.json nor index.json`,
    );
  });
});

describe("choosing among the images of a docker save", () => {
  function twoImages(): { archive: MemoryArchive; one: SavedImage; two: SavedImage } {
    const archive = new MemoryArchive();
    const one = saveImage(archive, "one");
    const two = saveImage(archive, "two");
    manifestJson(archive, [entryOf(one, ["reg.io/team/one:1", "one:latest"]), entryOf(two, ["two"])]);
    return { archive, one, two };
  }

  test("without --image: a usage error listing every image's names", async () => {
    const { archive } = twoImages();
    expect(await refusal(() => readArchive(archive), UsageError)).toBe(
      `${LABEL} holds 2 images: choose one with --image <name> (reg.io/team/one:1, one:latest; two)`,
    );
  });

  test("--image picks by exact name or by Docker's normalised name", async () => {
    const { archive, one, two } = twoImages();
    for (const name of ["reg.io/team/one:1", "one", "docker.io/library/one:latest", "one:latest"]) {
      const read = await readArchive(archive, name);
      expect(image(read.root).config.digest).toBe(one.configDigest);
      expect(read.names).toEqual(["reg.io/team/one:1", "one:latest"]);
    }
    // The archive's "two" is docker.io/library/two:latest once normalised.
    expect(image((await readArchive(archive, "docker.io/library/two")).root).config.digest).toBe(two.configDigest);
  });

  test("--image matching no image, or several, is a usage error", async () => {
    const { archive } = twoImages();
    expect(await refusal(() => readArchive(archive, "three"), UsageError)).toBe(
      `--image three: ${LABEL} has no image of that name (reg.io/team/one:1, one:latest; two)`,
    );
    const same = new MemoryArchive();
    const a = saveImage(same, "a");
    const b = saveImage(same, "b");
    manifestJson(same, [entryOf(a, ["app:1"]), entryOf(b, ["docker.io/library/app:1"])]);
    expect(await refusal(() => readArchive(same, "app:1"), UsageError)).toBe(`--image app:1 names 2 images of ${LABEL}`);
  });

  test("images without names are listed as such, and a long list is cut after 20", async () => {
    const archive = new MemoryArchive();
    const entries = Array.from({ length: 23 }, (_, i) => entryOf(saveImage(archive, `i${i}`, { layers: 1 }), i === 0 ? [] : [`app:${i}`]));
    manifestJson(archive, entries);
    const names = ["(no name)", ...Array.from({ length: 19 }, (_, i) => `app:${i + 1}`)].join("; ");
    expect(await refusal(() => readArchive(archive), UsageError)).toBe(`${LABEL} holds 23 images: choose one with --image <name> (${names}; and 3 more)`);
    manifestJson(archive, entries.slice(0, 20));
    expect(await refusal(() => readArchive(archive), UsageError)).toBe(`${LABEL} holds 20 images: choose one with --image <name> (${names})`);
  });

  test("--image on an image without names says it names none", async () => {
    const archive = new MemoryArchive();
    manifestJson(archive, [entryOf(saveImage(archive, "a"))]);
    expect(await refusal(() => readArchive(archive, "a"), UsageError)).toBe(`--image a: ${LABEL} has no image of that name ((no name))`);
  });
});

describe("an OCI layout (index.json)", () => {
  test("one entry is the image, named by its annotations (containerd's first), read with the manifest limit", async () => {
    const archive = new MemoryArchive();
    const d = layoutImage(archive, "a", { annotations: { [REF_NAME]: "1.0", [CONTAINERD_NAME]: "docker.io/library/app:1.0" } });
    indexJson(archive, [d]);
    const read = await readArchive(archive);
    expect(read.names).toEqual(["docker.io/library/app:1.0", "1.0"]);
    expect(read.missing).toEqual([]);
    const node = image(read.root);
    expect(node.raw).toEqual(archive.files.get(`blobs/sha256/${hex(d.digest)}`)!);
    expect(node.config.digest).toBe(d.config);
    expect(archive.smallReads).toEqual([
      ["index.json", MANIFEST_LIMIT],
      [`blobs/sha256/${hex(d.digest)}`, MANIFEST_LIMIT],
      [`blobs/sha256/${hex(d.config)}`, CONFIG_LIMIT],
    ]);
    expect(image((await readArchive(archive, "app:1.0")).root).config.digest).toBe(d.config);
  });

  test("--image on a single-image layout must name it", async () => {
    const archive = new MemoryArchive();
    indexJson(archive, [layoutImage(archive, "a", { annotations: { [REF_NAME]: "app:1" } })]);
    expect(await refusal(() => readArchive(archive, "other:1"), UsageError)).toBe(`--image other:1: ${LABEL} has no image of that name (app:1)`);
  });

  test("a manifest.json beside index.json naming other configs adds no name", async () => {
    const archive = new MemoryArchive();
    const d = layoutImage(archive, "a", { annotations: { [REF_NAME]: "app:1" } });
    indexJson(archive, [d]);
    archive.put("manifest.json", json([{ Config: `blobs/sha256/${"e".repeat(64)}`, RepoTags: ["stranger:1"], Layers: [] }]));
    expect((await readArchive(archive)).names).toEqual(["app:1"]);
  });

  test.each([
    ["no manifest.json", undefined],
    ["a manifest.json naming no config by digest", [{ Config: "config.json", RepoTags: ["x:1"], Layers: [] }]],
  ])("with %s, the image not chosen is not read: its broken manifest does not matter", async (_what, manifest) => {
    const archive = new MemoryArchive();
    const good = layoutImage(archive, "good", { annotations: { [REF_NAME]: "good:1" } });
    const broken = layoutImage(archive, "broken", { annotations: { [REF_NAME]: "broken:1" } });
    archive.put(`blobs/sha256/${hex(broken.digest)}`, utf8("not the manifest"));
    indexJson(archive, [good, broken]);
    if (manifest) archive.put("manifest.json", json(manifest));
    const read = await readArchive(archive, "good:1");
    expect(image(read.root).config.digest).toBe(good.config);
    expect(archive.smallReads.map(([name]) => name)).not.toContain(`blobs/sha256/${hex(broken.digest)}`);
  });

  test("an empty name annotation is no name", async () => {
    const archive = new MemoryArchive();
    indexJson(archive, [layoutImage(archive, "a", { annotations: { [REF_NAME]: "", [CONTAINERD_NAME]: "app" } })]);
    expect((await readArchive(archive)).names).toEqual(["app"]);
  });

  test("index.json is preferred to a manifest.json beside it, whose RepoTags name the images by config", async () => {
    const archive = new MemoryArchive();
    const d = layoutImage(archive, "a", { annotations: { [REF_NAME]: "app:1" } });
    indexJson(archive, [d]);
    // Docker >= 25: manifest.json lists the config by its layout path; a second entry names the same config.
    archive.put(
      "manifest.json",
      json([
        { Config: `blobs/sha256/${hex(d.config)}`, RepoTags: ["app:1", "reg.io/app:1"], Layers: [] },
        { Config: `blobs/sha256/${hex(d.config)}`, RepoTags: ["other:2"], Layers: [] },
        { Config: "no-digest.json", RepoTags: ["ghost:1"], Layers: [] },
      ]),
    );
    const read = await readArchive(archive);
    expect(image(read.root).config.digest).toBe(d.config);
    expect(read.names).toEqual(["app:1", "reg.io/app:1", "other:2"]);
  });

  test("an unreadable manifest.json beside index.json only loses its names", async () => {
    const archive = new MemoryArchive();
    const d = layoutImage(archive, "a");
    indexJson(archive, [d]);
    archive.put("manifest.json", utf8("{not json"));
    const read = await readArchive(archive);
    expect(read.names).toEqual([]);
    expect(image(read.root).config.digest).toBe(d.config);
  });

  test("several entries without names: index.json itself is the root index, with its own digest", async () => {
    const archive = new MemoryArchive();
    const amd = layoutImage(archive, "amd", { platform: { os: "linux", architecture: "amd64" } });
    const arm = layoutImage(archive, "arm", { platform: { os: "linux", architecture: "arm64" } }, { skipLayer: true });
    const bytes = indexJson(archive, [amd, arm]);
    const read = await readArchive(archive);
    expect(read.names).toEqual([]);
    if (read.root.kind !== "index") throw new Error(`expected an index, got ${read.root.kind}`);
    expect(read.root.raw).toEqual(bytes);
    expect(image(read.root.children[0]!.node!).config.digest).toBe(amd.config);
    expect(read.root.children[1]!.node).toBeUndefined();
    const missing = `its layer ${sha256Digest(layerBytes("arm", 1))} is not in ${LABEL}`;
    expect(read.missing).toEqual([`linux/arm64: ${missing}`]);
    expect(await refusal(() => readArchive(archive, "app"), UsageError)).toBe(`--image app: ${LABEL} has no image of that name (it names none)`);
  });

  test("the same manifest listed many times is one image with every name it goes by", async () => {
    const archive = new MemoryArchive();
    const d = layoutImage(archive, "a");
    indexJson(archive, [
      { ...d, annotations: { [REF_NAME]: "app:1" } },
      { ...d, annotations: { [REF_NAME]: "app:2" } },
      { ...d, annotations: { [REF_NAME]: "app:1" } },
    ]);
    const read = await readArchive(archive);
    expect(image(read.root).config.digest).toBe(d.config);
    expect(read.names).toEqual(["app:1", "app:2"]);
    expect(image((await readArchive(archive, "app:2")).root).config.digest).toBe(d.config);
  });

  test("several named images: --image chooses, and the chosen image's names come back", async () => {
    const archive = new MemoryArchive();
    const one = layoutImage(archive, "one", { annotations: { [REF_NAME]: "one:1" } });
    const two = layoutImage(archive, "two", { annotations: { [CONTAINERD_NAME]: "reg.io/two:2" } });
    indexJson(archive, [one, two]);
    expect(await refusal(() => readArchive(archive), UsageError)).toBe(`${LABEL} holds 2 images: choose one with --image <name> (one:1; reg.io/two:2)`);
    const read = await readArchive(archive, "reg.io/two:2");
    expect(image(read.root).config.digest).toBe(two.config);
    expect(read.names).toEqual(["reg.io/two:2"]);
    expect(read.missing).toEqual([]);
  });

  test("one named and one unnamed entry are two images to choose from", async () => {
    const archive = new MemoryArchive();
    const one = layoutImage(archive, "one", { annotations: { [REF_NAME]: "one:1" } });
    const two = layoutImage(archive, "two");
    indexJson(archive, [one, two]);
    expect(await refusal(() => readArchive(archive), UsageError)).toBe(`${LABEL} holds 2 images: choose one with --image <name> (one:1; (no name))`);
  });

  test("an image whose blobs are absent cannot be pushed, whether it is the only one or the chosen one", async () => {
    const archive = new MemoryArchive();
    const broken = layoutImage(archive, "b", { annotations: { [REF_NAME]: "b:1" } }, { skipLayer: true });
    const missing = `its layer ${sha256Digest(layerBytes("b", 1))} is not in ${LABEL}`;
    indexJson(archive, [broken]);
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL}: the image it holds cannot be pushed: ${missing}`);
    const fine = layoutImage(archive, "f", { annotations: { [REF_NAME]: "f:1" } });
    indexJson(archive, [broken, fine]);
    expect(await refusal(() => readArchive(archive, "b:1"), ArchiveError)).toBe(`${LABEL}: the chosen image cannot be pushed: ${missing}`);
    expect(image((await readArchive(archive, "f:1")).root).config.digest).toBe(fine.config);
  });

  test("an index.json listing more than 10000 manifests is refused before any is read", async () => {
    const archive = new MemoryArchive();
    // Distinct absent manifests: 10000 pass this bound and meet the walker's (1000 manifests a walk).
    const absent = (i: number) => ({ mediaType: OCI_MANIFEST, digest: `sha256:${i.toString(16).padStart(64, "0")}`, size: 10 });
    indexJson(
      archive,
      Array.from({ length: 10_000 }, (_, i) => absent(i)),
    );
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} lists more than 1000 manifests`);
    indexJson(
      archive,
      Array.from({ length: 10_001 }, (_, i) => absent(i)),
    );
    archive.smallReads.length = 0;
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL}: index.json lists 10001 manifests, more than 10000`);
    expect(archive.smallReads).toEqual([["index.json", MANIFEST_LIMIT]]);
  });

  test("an index.json that is not an index makes the archive corrupt", async () => {
    const archive = new MemoryArchive();
    archive.put("index.json", json({ schemaVersion: 2 }));
    expect(await refusal(() => readArchive(archive), ArchiveError)).toBe(`${LABEL} is corrupt: index.json is not an image index`);
  });
});

describe("normalizeName", () => {
  test.each([
    ["app", "docker.io/library/app:latest"],
    [" app ", "docker.io/library/app:latest"],
    ["app:1", "docker.io/library/app:1"],
    ["team/app", "docker.io/team/app:latest"],
    ["docker.io/library/app", "docker.io/library/app:latest"],
    ["reg.io/app", "reg.io/app:latest"],
    ["reg:5000/app", "reg:5000/app:latest"],
    ["reg:5000/team/app:2", "reg:5000/team/app:2"],
    ["localhost/app", "localhost/app:latest"],
    ["localhostx/app", "docker.io/localhostx/app:latest"],
    [`app@sha256:${"a".repeat(64)}`, `docker.io/library/app@sha256:${"a".repeat(64)}`],
  ])("%p is %p", (name, normal) => {
    expect(normalizeName(name)).toBe(normal);
  });
});
