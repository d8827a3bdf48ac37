/** The cache's image records: what makes one trusted enough to push an image without saving it. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BlobCache } from "../../src/layers/cache.ts";
import { type ImageRecord, Records } from "../../src/layers/records.ts";
import { Sealer } from "../../src/layers/seal.ts";
import { sha256Digest } from "../../src/model/digest.ts";
import { makeTempDir } from "../support/temp.ts";
import { rm } from "node:fs/promises";

const A = `sha256:${"a".repeat(64)}`;
const B = `sha256:${"b".repeat(64)}`;

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir("records-test-");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A classic-store record: the config's digest is the image id, so no seal is needed to trust it. */
function classicRecord(diffIds: string[]): ImageRecord {
  const config = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: diffIds } }));
  const digest = sha256Digest(config);
  return {
    id: digest,
    config,
    configDigest: digest,
    configMediaType: "application/vnd.docker.container.image.v1+json",
    layers: diffIds.map((diffId) => ({ diffId })),
  };
}

async function open(sealer = Sealer.none()): Promise<Records> {
  const cache = new BlobCache(join(dir, ".cache"), sealer);
  await cache.init();
  return new Records(cache, sealer);
}

describe("image records", () => {
  test("a record whose layers are the config's diff_ids is read back", async () => {
    const records = await open();
    const record = classicRecord([A, B]);
    await records.saveImage(record);
    expect((await records.image(record.id))?.layers).toEqual([{ diffId: A }, { diffId: B }]);
  });

  test("a record edited to list other layers than its config describes is not used", async () => {
    const records = await open();
    const record = classicRecord([A, B]);
    await records.saveImage(record);
    const path = join(dir, ".cache", "images", `${record.id.slice(7)}.json`);
    for (const layers of [[], [{ diffId: A }], [{ diffId: B }, { diffId: A }], [{ diffId: A }, { diffId: B }, { diffId: A }]]) {
      const value = JSON.parse(await readFile(path, "utf8"));
      await writeFile(path, JSON.stringify({ ...value, layers }));
      expect(await records.image(record.id)).toBeUndefined();
    }
  });

  test("a sealed record is held to its config as well", async () => {
    const sealer = Sealer.withKey(Buffer.alloc(32, 7));
    const records = await open(sealer);
    const record = { ...classicRecord([A]), id: `sha256:${"c".repeat(64)}`, layers: [{ diffId: B }] };
    await records.saveImage(record);
    expect(await records.image(record.id)).toBeUndefined();
  });
});
