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

  test("a record with the source's manifest: proven by the id, refused when edited or naming other blobs", async () => {
    const records = await open();
    const base = classicRecord([A]);
    const stored = { digest: B, size: 10, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" };
    const manifestOf = (layer: { digest: string; size: number }) =>
      new TextEncoder().encode(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: base.configDigest, size: base.config.length },
          layers: [{ mediaType: stored.mediaType, ...layer }],
        }),
      );
    const manifest = manifestOf(stored);
    // The containerd store's image id is the manifest's digest.
    const record: ImageRecord = { ...base, id: sha256Digest(manifest), layers: [{ diffId: A, stored }], manifest };
    await records.saveImage(record);
    expect((await records.image(record.id))?.manifest).toEqual(manifest);
    const path = join(dir, ".cache", "images", `${record.id.slice(7)}.json`);
    const value = JSON.parse(await readFile(path, "utf8"));
    // Other manifest bytes under the same id: not what the id proves, and no seal vouches for them.
    // (valid, naming the same blobs, only a space more: its digest is no longer the id)
    const edited = new Uint8Array([0x20, ...manifest]);
    await writeFile(path, JSON.stringify({ ...value, manifest: Buffer.from(edited).toString("base64") }));
    expect(await records.image(record.id)).toBeUndefined();
    // A sealed record whose manifest names another blob than the record's layer.
    const sealer = Sealer.withKey(Buffer.alloc(32, 9));
    const sealed = await open(sealer);
    const other = manifestOf({ digest: A, size: 10 });
    await sealed.saveImage({ ...record, manifest: other });
    expect(await sealed.image(record.id)).toBeUndefined();
  });
});
