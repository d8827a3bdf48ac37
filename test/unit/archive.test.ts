/**
 * Reading every archive format into the image model, the same way whether the archive is a tar read
 * in place, an OCI layout directory, or a compressed tar read as a stream.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { UsageError } from "../../src/errors.ts";
import type { ImageNode, ManifestNode, StreamSink, Taken } from "../../src/model/image.ts";
import { readArchive, type ArchiveImage } from "../../src/sources/archive-reader.ts";
import { DirStore } from "../../src/sources/dir-store.ts";
import { ArchiveError } from "../../src/sources/store.ts";
import { StreamStore } from "../../src/sources/stream-store.ts";
import { TarStore } from "../../src/sources/tar-store.ts";
import {
  EVIL_VARIANTS,
  makeSampleImage,
  makeTempDir,
  writeClassicDockerArchive,
  writeContainerdArchive,
  writeCorruptArchive,
  writeDocker25Archive,
  writeEvilArchive,
  writeOciArchive,
  type WrittenArchive,
} from "../support/fixtures.ts";
import { twoImageDockerArchive } from "../support/multiplatform.ts";

let dir: string;
const sample = makeSampleImage({ bigBytes: 256 * 1024 });

beforeAll(async () => {
  dir = await makeTempDir("archive-test-");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fromTar = async (path: string, choose?: string) => readArchive(await TarStore.open(path), choose);

function image(node: ManifestNode): ImageNode {
  if (node.kind !== "image") throw new Error(`expected an image, got ${node.kind}`);
  return node;
}

/** The bytes of a layer as the archive holds them. */
async function layerBytes(node: ImageNode, i: number): Promise<Uint8Array> {
  const bytes = node.layers[i]!.bytes;
  if (bytes.kind !== "file") throw new Error(`layer ${i} is ${bytes.kind}`);
  return new Uint8Array(
    await Bun.file(bytes.path)
      .slice(bytes.offset, bytes.offset + bytes.size)
      .arrayBuffer(),
  );
}

const sha256 = (bytes: Uint8Array) => `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;

function expectSameImage(read: ArchiveImage, written: WrittenArchive): ImageNode {
  const node = image(read.root);
  expect(node.config.digest).toBe(written.configDigest);
  expect(Buffer.from(node.config.bytes).equals(Buffer.from(written.configBytes))).toBe(true);
  expect(node.layers.map((l) => l.diffId)).toEqual(written.diffIds);
  return node;
}

describe("readArchive over a tar read in place", () => {
  test("classic docker save (Docker < 25): uncompressed <id>/layer.tar, duplicates kept in order, no manifest to keep", async () => {
    const written = await writeClassicDockerArchive(join(dir, "classic.tar"), sample);
    const node = expectSameImage(await fromTar(written.path), written);
    expect(node.raw).toBeUndefined();
    expect(node.layers.map((l) => l.compression)).toEqual(["none", "none", "none", "none"]);
    for (const [i, diffId] of written.diffIds.entries()) expect(sha256(await layerBytes(node, i))).toBe(diffId);
  });

  test("Docker >= 25: the OCI layout is read (manifest kept), uncompressed layers", async () => {
    const written = await writeDocker25Archive(join(dir, "docker25.tar"), sample);
    const read = await fromTar(written.path);
    const node = expectSameImage(read, written);
    expect(node.raw).toBeDefined();
    expect(node.layers.every((l) => l.compression === "none")).toBe(true);
    expect(sha256(await layerBytes(node, 0))).toBe(written.diffIds[0]!);
  });

  test("containerd store: gzip and zstd blobs found as stored, each with its manifest descriptor", async () => {
    const written = await writeContainerdArchive(join(dir, "containerd.tar"), sample);
    const read = await fromTar(written.path);
    const node = image(read.root.kind === "index" ? read.root.children[0]!.node! : read.root);
    expect(node.layers.map((l) => l.compression)).toEqual(["gzip", "gzip", "zstd", "gzip"]);
    expect(node.layers.map((l) => l.descriptor?.digest)).toEqual(written.layerDigests);
    for (const [i, digest] of written.layerDigests.entries()) expect(sha256(await layerBytes(node, i))).toBe(digest);
  });

  test("a nested index with an attestation: the index is the root, the attestation an artifact beside the image", async () => {
    const written = await writeContainerdArchive(join(dir, "attest.tar"), sample, { attestation: true });
    const read = await fromTar(written.path);
    expect(read.root.kind).toBe("index");
    if (read.root.kind !== "index") return;
    expect(read.root.children.map((c) => c.node?.kind)).toEqual(["image", "artifact"]);
    const node = image(read.root.children[0]!.node!);
    expect(node.platform).toEqual({ os: "linux", architecture: "amd64" });
    expect(node.layers.map((l) => l.diffId)).toEqual(written.diffIds);
    expect(read.root.children[1]!.descriptor.annotations?.["vnd.docker.reference.type"]).toBe("attestation-manifest");
  });

  test("OCI layout without manifest.json (podman --format oci-archive)", async () => {
    const written = await writeOciArchive(join(dir, "oci.tar"), sample);
    const read = await fromTar(written.path);
    const node = image(read.root.kind === "index" ? read.root.children[0]!.node! : read.root);
    expect(node.layers.map((l) => l.diffId)).toEqual(written.diffIds);
    expect(node.layers.every((l) => l.compression === "gzip")).toBe(true);
  });

  test("a truncated archive is refused as corrupt", async () => {
    const corrupt = await writeCorruptArchive(join(dir, "corrupt.tar"), sample);
    await expect(fromTar(corrupt.path)).rejects.toThrow(
      `archive ${corrupt.path} is corrupt or truncated: entry "${corrupt.truncatedEntry}" ends past the end of the file`,
    );
  });

  test("a tar that is no image is refused naming what is missing", async () => {
    const path = join(dir, "plain.tar");
    await Bun.spawn(["tar", "-cf", path, "-C", import.meta.dir, "manifest.test.ts"]).exited;
    await expect(fromTar(path)).rejects.toThrow(`archive ${path} is not a docker save, podman save or OCI layout: it has neither manifest.json nor index.json`);
  });

  const refusals: Record<(typeof EVIL_VARIANTS)[number], RegExp> = {
    dotdot: /has an unsafe entry "\.\.\/chunked-push-escape-[a-f0-9]+\.txt" \(absolute or with "\.\."\): refusing it$/,
    absolute: /has an unsafe entry "\/.*chunked-push-escape-[a-f0-9]+\.txt" \(absolute or with "\.\."\): refusing it$/,
    "symlink-absolute": /has a link "[a-f0-9]{64}\/layer\.tar" -> "\/etc\/passwd" pointing outside the archive: refusing it$/,
    "symlink-relative": /has a link "[a-f0-9]{64}\/layer\.tar" -> "\.\.\/\.\.\/x" pointing outside the archive: refusing it$/,
    "symlink-write-through": /has a link "evil-link" -> "\/.*" pointing outside the archive: refusing it$/,
    "manifest-escape": /manifest\.json names "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd", outside the archive: refusing it$/,
  };
  for (const variant of EVIL_VARIANTS) {
    test(`a hostile archive (${variant}) is refused with its own reason`, async () => {
      const evil = await writeEvilArchive(join(dir, `evil-${variant}.tar`), variant);
      const error = await fromTar(evil.path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toMatch(refusals[variant]);
    });
  }
});

describe("choosing an image", () => {
  test("a multi-image docker-archive needs --image, which picks by RepoTag (Docker's normalised names too)", async () => {
    const { path, images } = await twoImageDockerArchive(join(dir, "two.tar"), ["fixture/one:1", "docker.io/library/two:latest"]);
    const refused = await fromTar(path).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UsageError);
    expect((refused as Error).message).toBe(`archive ${path} holds 2 images: choose one with --image <name> (fixture/one:1; docker.io/library/two:latest)`);
    expect(image((await fromTar(path, "fixture/one:1")).root).config.digest).toBe(images[0]!.configDigest);
    expect(image((await fromTar(path, "two")).root).config.digest).toBe(images[1]!.configDigest);
  });

  test("--image on a single-image archive must match one of its names", async () => {
    const written = await writeClassicDockerArchive(join(dir, "named.tar"), sample);
    await expect(fromTar(written.path, "nope:1")).rejects.toThrow(UsageError);
    await expect(fromTar(written.path, "nope:1")).rejects.toThrow(`--image nope:1: archive ${written.path} has no image of that name (fixture/app:1.0)`);
    const read = await fromTar(written.path, "fixture/app:1.0");
    expect(read.names).toEqual(["fixture/app:1.0"]);
  });
});

describe("the same archive read three ways", () => {
  test("a layout directory and a .tar.gz stream give the same image as the tar in place", async () => {
    const written = await writeOciArchive(join(dir, "same.tar"), sample);
    const inPlace = await fromTar(written.path);
    const layout = join(dir, "same-layout");
    await mkdir(layout, { recursive: true });
    expect(await Bun.spawn(["tar", "-xf", written.path, "-C", layout]).exited).toBe(0);
    const fromDir = await readArchive(await DirStore.open(layout));

    const taken: string[] = [];
    const sink: StreamSink = {
      async take(entry, stream): Promise<Taken> {
        taken.push(entry.name);
        const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
        return { compression: "gzip", stored: Promise.resolve({ digest: sha256(bytes), size: bytes.length }) };
      },
    };
    const gz = gzipSync(await Bun.file(written.path).bytes());
    const unzipped = new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"));
    const streamed = await readArchive(await StreamStore.read(unzipped, "archive same.tar.gz", sink));
    for (const read of [inPlace, fromDir, streamed]) {
      const node = image(read.root.kind === "index" ? read.root.children[0]!.node! : read.root);
      expect(node.config.digest).toBe(written.configDigest);
      expect(node.layers.map((l) => l.diffId)).toEqual(written.diffIds);
    }
    // The big layer went to the sink as it passed; configs, manifests and tiny layers stayed in memory.
    const layerNames = written.layerDigests.map((d) => `blobs/sha256/${d.slice(7)}`);
    expect(taken.length).toBeGreaterThan(0);
    expect(taken.every((name) => layerNames.includes(name))).toBe(true);
  });

  test("a blob whose bytes do not match its name is refused", async () => {
    const written = await writeOciArchive(join(dir, "lie.tar"), sample);
    const layout = join(dir, "lie-layout");
    await mkdir(layout, { recursive: true });
    await Bun.spawn(["tar", "-xf", written.path, "-C", layout]).exited;
    const configPath = join(layout, "blobs", "sha256", written.configDigest.slice(7));
    const config = await Bun.file(configPath).text();
    await Bun.write(configPath, config.replace("{", "{ "));
    await expect(readArchive(await DirStore.open(layout))).rejects.toThrow(ArchiveError);
    await expect(readArchive(await DirStore.open(layout))).rejects.toThrow(`OCI layout ${layout} is corrupt: blob ${written.configDigest} hashes to`);
  });
});
