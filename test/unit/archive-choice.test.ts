/**
 * Choosing the image among several in one archive (--image): by the names an OCI layout gives its
 * entries (ref.name, io.containerd.image.name, with Docker's docker.io/library normalisation), and what
 * the user is told when nothing, or no entry at all, carries a name.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../../src/errors.ts";
import type { ImageNode, ManifestNode } from "../../src/model/image.ts";
import { readArchive } from "../../src/sources/archive-reader.ts";
import { DirStore } from "../../src/sources/dir-store.ts";
import { TarStore } from "../../src/sources/tar-store.ts";
import { makeConfig, makeLayerTar, MEDIA, writeOciArchive, type WrittenArchive } from "../support/fixtures.ts";
import { twoImageDockerArchive } from "../support/multiplatform.ts";
import { runOk } from "../support/ports.ts";
import { tempDirs } from "../support/temp.ts";

const tempDir = tempDirs();
let dir: string;
let one: WrittenArchive;
let two: WrittenArchive;

/** Two different one-layer images, each written as an OCI archive. */
beforeAll(async () => {
  dir = await tempDir("archive-choice-");
  const images = ["one", "two"].map((name) => {
    const layer = makeLayerTar({ [`etc/${name}`]: `${name}\n` });
    return { layers: [layer], config: makeConfig([`sha256:${new Bun.CryptoHasher("sha256").update(layer).digest("hex")}`], { name }) };
  });
  one = await writeOciArchive(join(dir, "one.tar"), images[0]!);
  two = await writeOciArchive(join(dir, "two.tar"), images[1]!);
});

function image(node: ManifestNode): ImageNode {
  if (node.kind !== "image") throw new Error(`expected an image, got ${node.kind}`);
  return node;
}

async function refusal(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => new Error("it was accepted"),
    (e: unknown) => e as Error,
  );
  expect(error).toBeInstanceOf(UsageError);
  return error;
}

/** Both images' blobs in one layout folder, with an index.json listing them with these annotations. */
async function layoutOfBoth(name: string, annotations: [Record<string, string>, Record<string, string>]): Promise<string> {
  const layout = await tempDir(`${name}-`);
  for (const written of [one, two]) await runOk(["tar", "-xf", written.path, "-C", layout]);
  const manifests = [one, two].map((w, i) => ({
    mediaType: MEDIA.ociManifest,
    digest: w.manifestDigest!,
    size: w.manifestBytes!.length,
    ...(Object.keys(annotations[i]!).length > 0 ? { annotations: annotations[i] } : {}),
  }));
  await writeFile(join(layout, "index.json"), JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests }));
  return layout;
}

describe("an OCI layout holding two named images", () => {
  test("without --image: a usage error naming both; with it, each is found by its ref.name or its containerd name", async () => {
    const layout = await layoutOfBoth("named", [
      { "org.opencontainers.image.ref.name": "team/one:1" },
      { "io.containerd.image.name": "docker.io/library/two:latest" },
    ]);
    const read = async (choose?: string) => readArchive(await DirStore.open(layout), choose);
    expect((await refusal(read())).message).toBe(
      `OCI layout ${layout} holds 2 images: choose one with --image <name> (team/one:1; docker.io/library/two:latest)`,
    );
    expect(image((await read("team/one:1")).root).config.digest).toBe(one.configDigest);
    // Docker's short name means docker.io/library/two:latest.
    expect(image((await read("two")).root).config.digest).toBe(two.configDigest);
    expect((await read("two")).names).toEqual(["docker.io/library/two:latest"]);
    expect((await refusal(read("three"))).message).toBe(
      `--image three: OCI layout ${layout} has no image of that name (team/one:1; docker.io/library/two:latest)`,
    );
  });
});

describe("images that carry no name", () => {
  test("a docker save of two untagged images: listed as '(no name)', and no --image can pick one", async () => {
    const { path } = await twoImageDockerArchive(join(dir, "untagged-source.tar"));
    const extracted = await tempDir("untagged-");
    await runOk(["tar", "-xf", path, "-C", extracted]);
    const manifest = JSON.parse(await readFile(join(extracted, "manifest.json"), "utf8")) as { RepoTags: string[] }[];
    for (const entry of manifest) entry.RepoTags = [];
    await writeFile(join(extracted, "manifest.json"), JSON.stringify(manifest));
    const untagged = join(dir, "untagged.tar");
    await runOk(["tar", "-cf", untagged, "-C", extracted, "."]);
    const read = async (choose?: string) => readArchive(await TarStore.open(untagged), choose);
    expect((await refusal(read())).message).toBe(`archive ${untagged} holds 2 images: choose one with --image <name> ((no name); (no name))`);
    expect((await refusal(read("fixture/one:1"))).message).toBe(`--image fixture/one:1: archive ${untagged} has no image of that name ((no name); (no name))`);
  });

  test("a layout whose entries carry no name is one multi-image index: pushed whole, and --image has nothing to match", async () => {
    const layout = await layoutOfBoth("unnamed", [{}, {}]);
    const read = async (choose?: string) => readArchive(await DirStore.open(layout), choose);
    const whole = await read();
    expect(whole.root.kind).toBe("index");
    expect(whole.names).toEqual([]);
    if (whole.root.kind === "index") expect(whole.root.children.map((c) => c.descriptor.digest)).toEqual([one.manifestDigest!, two.manifestDigest!]);
    expect((await refusal(read("one"))).message).toBe(`--image one: OCI layout ${layout} has no image of that name (it names none)`);
  });
});
