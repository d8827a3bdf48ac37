/**
 * The cache folder's own rules: temporary files and folders of dead runs are removed when a run opens
 * the cache (a live run's are kept, another host's only once a day old), and a layer's pointer is kept
 * per compression algorithm and level, so switching either never serves a blob made another way.
 */
import { describe, expect, test } from "bun:test";
import { lstat, mkdir, readdir, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BlobCache } from "../../src/layers/cache.ts";
import { Sealer } from "../../src/layers/seal.ts";
import { variantOf } from "../../src/push/prepare.ts";
import { digestOf } from "../support/fixtures.ts";
import { deadPid } from "../support/hostile-archives.ts";
import { tempDirs } from "../support/temp.ts";

const tempDir = tempDirs();

/** This machine's mark in temporary names, as the cache writes it (`.tmp-<pid>@<host>-<hex>`). */
function hostMark(cache: BlobCache): string {
  const mark = /^\.tmp-\d+@([a-f0-9]{8})-[a-f0-9]+$/.exec(cache.tempPath().slice(cache.dir.length + 1))?.[1];
  if (!mark) throw new Error(`unexpected temporary name ${cache.tempPath()}`);
  return mark;
}

describe("temporary files of runs that died are removed when a run opens the cache", () => {
  test("files and folders of dead pids go; this run's, another live run's, a young foreign one and unrelated names stay", async () => {
    const dir = await tempDir("cache-orphans-");
    const cache = new BlobCache(dir);
    const host = hostMark(cache);
    const dead = deadPid();
    const DAY = 24 * 3600 * 1000;
    const old = new Date(Date.now() - 2 * DAY);
    const gone = [
      `.tmp-${dead}-0123456789ab`, // a dead run's file, named before temporary names carried the host
      `.tmp-${dead}@${host}-0123456789ab`, // a dead run of this host
      `.tmp-${dead}@${host}-folder`, // a folder under such a name, with something inside
      `.tmp-${dead}@00000000-oldforeign`, // another host's, more than a day old
    ];
    const kept = [
      `.tmp-${process.pid}@${host}-livefile`, // this run's own
      `.tmp-1@${host}-init`, // pid 1 is alive
      `.tmp-${dead}@00000000-youngforeign`, // another host's pid means nothing here, and it is young
      ".tmpnotours",
      "notes.txt",
    ];
    for (const name of [...gone, ...kept]) {
      if (name.endsWith("-folder")) {
        await mkdir(join(dir, name, "inside"), { recursive: true });
        await writeFile(join(dir, name, "inside", "part"), "x");
      } else await writeFile(join(dir, name), name);
    }
    await utimes(join(dir, `.tmp-${dead}@00000000-oldforeign`), old, old);

    await cache.init();

    expect((await readdir(dir)).sort()).toEqual([...kept].sort());
    expect(await lstat(join(dir, `.tmp-${process.pid}@${host}-livefile`)).then((s) => s.isFile())).toBe(true);
  });
});

describe("a layer's cached blob is found only under the compression that made it", () => {
  test("gzip level 6, gzip level 9 and zstd level 3 each point at their own blob", async () => {
    const dir = await tempDir("cache-variants-");
    const cache = new BlobCache(dir, Sealer.none());
    await cache.init();
    const diffId = digestOf("the layer's uncompressed bytes");
    const variants = [variantOf({ algorithm: "gzip", level: 6 }), variantOf({ algorithm: "gzip", level: 9 }), variantOf({ algorithm: "zstd", level: 3 })];
    expect(variants).toEqual(["gzip-6", "gzip-9", "zstd-3"]);

    // Only the gzip-6 blob exists: no other setting may take it.
    const gzip6 = new TextEncoder().encode("gzip level 6 bytes");
    const temp = cache.tempPath();
    await writeFile(temp, gzip6);
    await cache.commit(temp, { digest: digestOf(gzip6), size: gzip6.length }, diffId, "gzip-6");
    expect((await cache.lookup(diffId, "gzip-6"))?.digest).toBe(digestOf(gzip6));
    expect(await cache.lookup(diffId, "gzip-9")).toBeUndefined();
    expect(await cache.lookup(diffId, "zstd-3")).toBeUndefined();

    // Each setting then finds its own.
    for (const variant of ["gzip-9", "zstd-3"]) {
      const bytes = new TextEncoder().encode(`${variant} bytes`);
      const path = cache.tempPath();
      await writeFile(path, bytes);
      await cache.commit(path, { digest: digestOf(bytes), size: bytes.length }, diffId, variant);
    }
    for (const variant of variants) {
      expect((await cache.lookup(diffId, variant))?.digest).toBe(
        digestOf(new TextEncoder().encode(`${variant === "gzip-6" ? "gzip level 6" : variant} bytes`)),
      );
    }
  });
});
