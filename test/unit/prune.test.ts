import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pruneCache } from "../../src/layers/prune.ts";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 5);
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "prune-test-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A blob of `size` bytes last used `daysAgo` days before NOW, with its pointer and proof. */
async function blob(hex: string, size: number, daysAgo: number): Promise<void> {
  const when = new Date(NOW - daysAgo * DAY);
  await writeFile(join(dir, hex), new Uint8Array(size));
  await utimes(join(dir, hex), when, when);
  await writeFile(join(dir, `${"f".repeat(63)}${hex[0]}-gzip-2-ptr`), JSON.stringify({ digest: `sha256:${hex}`, size }));
  await writeFile(join(dir, `${hex}-verified`), "{}");
}

const hex = (c: string) => c.repeat(64);

describe("pruneCache", () => {
  test("removes blobs unused for longer than --max-age, with their pointers and proofs", async () => {
    await blob(hex("a"), 100, 40);
    await blob(hex("b"), 100, 1);
    const report = await pruneCache(dir, { maxAgeMs: 30 * DAY, now: NOW });
    expect(report).toEqual({ removedBlobs: 1, removedBytes: 100, keptBlobs: 1, keptBytes: 100, removedOther: 2 });
    expect((await readdir(dir)).sort()).toEqual([hex("b"), `${hex("b")}-verified`, `${"f".repeat(63)}b-gzip-2-ptr`].sort());
  });

  test("then the least recently used until the cache fits --max-size; the latest push's blobs go last", async () => {
    await blob(hex("a"), 300, 5);
    await blob(hex("b"), 300, 3);
    await blob(hex("c"), 300, 0);
    const report = await pruneCache(dir, { maxBytes: 600, now: NOW });
    expect(report.removedBlobs).toBe(1);
    expect((await readdir(dir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).sort()).toEqual([hex("b"), hex("c")]);
  });

  test("--dry-run reports and removes nothing; unknown files and folders are left alone", async () => {
    await blob(hex("a"), 100, 40);
    await writeFile(join(dir, "notes.txt"), "mine");
    await mkdir(join(dir, "images"));
    const report = await pruneCache(dir, { maxAgeMs: DAY, maxBytes: 0, now: NOW, dryRun: true });
    expect(report.removedBlobs).toBe(1);
    expect((await readdir(dir)).sort()).toEqual([hex("a"), `${hex("a")}-verified`, `${"f".repeat(63)}a-gzip-2-ptr`, "images", "notes.txt"].sort());
  });

  test("a FIFO or a link named like a pointer is removed as junk, not read", async () => {
    await blob(hex("b"), 100, 1);
    const fifo = join(dir, `${"e".repeat(64)}-gzip-2-ptr`);
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    // A link to a pointer that would keep the blob: the cache never writes links, so it is not followed.
    const outside = join(dir, "..", `${dir.split("/").pop()}-outside.json`);
    await writeFile(outside, JSON.stringify({ digest: `sha256:${hex("b")}`, size: 100 }));
    const link = join(dir, `${"d".repeat(64)}-gzip-2-ptr`);
    await symlink(outside, link);
    try {
      const report = await pruneCache(dir, { maxAgeMs: 30 * DAY, now: NOW });
      expect(report).toEqual({ removedBlobs: 0, removedBytes: 0, keptBlobs: 1, keptBytes: 100, removedOther: 2 });
      expect((await readdir(dir)).sort()).toEqual([hex("b"), `${hex("b")}-verified`, `${"f".repeat(63)}b-gzip-2-ptr`].sort());
    } finally {
      await rm(outside, { force: true });
    }
  }, 10_000);

  test("upload sessions older than a week go; newer ones stay", async () => {
    await mkdir(join(dir, "uploads"));
    for (const [name, days] of [
      ["old.json", 8],
      ["new.json", 1],
    ] as const) {
      await writeFile(join(dir, "uploads", name), "{}");
      await utimes(join(dir, "uploads", name), new Date(NOW - days * DAY), new Date(NOW - days * DAY));
    }
    await pruneCache(dir, { now: NOW });
    expect(await readdir(join(dir, "uploads"))).toEqual(["new.json"]);
  });
});
