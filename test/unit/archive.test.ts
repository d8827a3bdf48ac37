import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { readArchive, type ArchiveImage } from "../../src/sources/archive.ts";
import { PushError } from "../../src/errors.ts";
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

let dir: string;
const sample = makeSampleImage({ bigBytes: 256 * 1024 });

beforeAll(async () => {
  dir = await makeTempDir("archive-test-");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The bytes of a layer as the archive holds them, read back through the index. */
async function layerBytes(image: ArchiveImage, i: number): Promise<Uint8Array> {
  const { offset, size } = image.layers[i]!.entry;
  return new Uint8Array(await Bun.file(image.archive).slice(offset, offset + size).arrayBuffer());
}

async function sha256(bytes: Uint8Array): Promise<string> {
  return `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;
}

function expectSameImage(image: ArchiveImage, written: WrittenArchive): void {
  expect(image.config.digest).toBe(written.configDigest);
  expect(Buffer.from(image.config.bytes).equals(Buffer.from(written.configBytes))).toBe(true);
  expect(image.layers.map((l) => l.diffId)).toEqual(written.diffIds);
}

describe("readArchive", () => {
  test("classic docker save (Docker < 25): uncompressed <id>/layer.tar, duplicates kept in order", async () => {
    const written = await writeClassicDockerArchive(join(dir, "classic.tar"), sample);
    const image = await readArchive(written.path);
    expectSameImage(image, written);
    expect(image.layers.map((l) => l.compression)).toEqual(["none", "none", "none", "none"]);
    for (const [i, diffId] of written.diffIds.entries()) expect(await sha256(await layerBytes(image, i))).toBe(diffId);
  });

  test("Docker >= 25: OCI layout plus manifest.json pointing into blobs/sha256", async () => {
    const written = await writeDocker25Archive(join(dir, "docker25.tar"), sample);
    const image = await readArchive(written.path);
    expectSameImage(image, written);
    expect(image.layers.every((l) => l.compression === "none")).toBe(true);
    expect(await sha256(await layerBytes(image, 0))).toBe(written.diffIds[0]!);
  });

  test("containerd store: compressed gzip and zstd blobs are found as they are", async () => {
    const written = await writeContainerdArchive(join(dir, "containerd.tar"), sample);
    const image = await readArchive(written.path);
    expectSameImage(image, written);
    expect(image.layers.map((l) => l.compression)).toEqual(["gzip", "gzip", "zstd", "gzip"]);
    for (const [i, digest] of written.layerDigests.entries()) expect(await sha256(await layerBytes(image, i))).toBe(digest);
  });

  test("OCI layout without manifest.json (podman --format oci-archive), nested index and attestation", async () => {
    const written = await writeOciArchive(join(dir, "oci.tar"), sample);
    const image = await readArchive(written.path);
    expectSameImage(image, written);
    expect(image.layers.every((l) => l.compression === "gzip")).toBe(true);
    for (const [i, digest] of written.layerDigests.entries()) expect(await sha256(await layerBytes(image, i))).toBe(digest);

    const nested = await writeContainerdArchive(join(dir, "attest.tar"), sample, { attestation: true });
    expectSameImage(await readArchive(nested.path), nested);
  });

  test("a truncated archive is refused as corrupt", async () => {
    const corrupt = await writeCorruptArchive(join(dir, "corrupt.tar"), sample);
    await expect(readArchive(corrupt.path)).rejects.toThrow(/corrupt or truncated/);
  });

  test("a tar that is no image is refused naming what is missing", async () => {
    const path = join(dir, "plain.tar");
    const child = Bun.spawn(["tar", "-cf", path, "-C", import.meta.dir, "manifest.test.ts"]);
    await child.exited;
    await expect(readArchive(path)).rejects.toThrow(/neither manifest.json nor index.json/);
  });

  for (const variant of EVIL_VARIANTS) {
    test(`a hostile archive (${variant}) is refused and nothing is written outside`, async () => {
      const evil = await writeEvilArchive(join(dir, `evil-${variant}.tar`), variant);
      const result = readArchive(evil.path);
      await expect(result).rejects.toThrow(PushError);
      await expect(result).rejects.toThrow(/unsafe entry|pointing outside|has no file/);
      for (const path of evil.mustNotExist) expect(existsSync(path)).toBe(false);
    });
  }
});
