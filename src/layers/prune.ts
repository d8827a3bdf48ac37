/**
 * Bounds the cache folder: blobs unused for longer than `maxAgeMs`, then the least recently used ones
 * until the folder fits in `maxBytes`. A blob's modification time is when a push last used it (the
 * pusher touches what it reads), so what the latest pushes used goes last. Pointers and proofs left
 * without their blob, stale upload sessions and old records go with them. Only the cache's own names
 * are considered: nothing else in the folder is touched.
 */
import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { readSmallJson } from "./cache.ts";

export interface PruneOptions {
  /** Remove blobs not used for this long. */
  maxAgeMs?: number;
  /** Then remove the least recently used blobs until the cache holds at most this many bytes. */
  maxBytes?: number;
  /** For tests. */
  now?: number;
  /** Report what would go without removing anything. */
  dryRun?: boolean;
}

export interface PruneReport {
  removedBlobs: number;
  removedBytes: number;
  keptBlobs: number;
  keptBytes: number;
  /** Other cache files removed: pointers, proofs, sessions and records that lost their reason to be. */
  removedOther: number;
}

const BLOB = /^[a-f0-9]{64}$/;
const POINTER = /^([a-f0-9]{64})-[a-z0-9]+-\d+-ptr$/;
const PROOF = /^([a-f0-9]{64})-verified$/;
// Registries drop unfinished upload sessions within days; a record older than this resumes nothing.
const SESSION_MS = 7 * 24 * 3600 * 1000;

export async function pruneCache(dir: string, options: PruneOptions): Promise<PruneReport> {
  const now = options.now ?? Date.now();
  const names = await readdir(dir).catch(() => [] as string[]);
  const blobs: { name: string; size: number; used: number }[] = [];
  for (const name of names) {
    if (!BLOB.test(name)) continue;
    const info = await stat(join(dir, name)).catch(() => undefined);
    if (info?.isFile()) blobs.push({ name, size: info.size, used: info.mtimeMs });
  }
  blobs.sort((a, b) => a.used - b.used);
  const doomed = new Set<string>();
  if (options.maxAgeMs !== undefined) {
    for (const blob of blobs) if (now - blob.used > options.maxAgeMs) doomed.add(blob.name);
  }
  if (options.maxBytes !== undefined) {
    let total = blobs.filter((b) => !doomed.has(b.name)).reduce((sum, b) => sum + b.size, 0);
    for (const blob of blobs) {
      if (total <= options.maxBytes) break;
      if (doomed.has(blob.name)) continue;
      doomed.add(blob.name);
      total -= blob.size;
    }
  }
  const remove = async (path: string) => {
    if (!options.dryRun) await rm(path, { force: true, recursive: true }).catch(() => undefined);
  };
  const report: PruneReport = { removedBlobs: 0, removedBytes: 0, keptBlobs: 0, keptBytes: 0, removedOther: 0 };
  for (const blob of blobs) {
    if (doomed.has(blob.name)) {
      await remove(join(dir, blob.name));
      report.removedBlobs++;
      report.removedBytes += blob.size;
    } else {
      report.keptBlobs++;
      report.keptBytes += blob.size;
    }
  }
  const kept = new Set(blobs.filter((b) => !doomed.has(b.name)).map((b) => b.name));
  for (const name of names) {
    // A proof names its blob; a pointer's blob is in its JSON: both go when their blob went.
    const proof = PROOF.exec(name)?.[1];
    if (proof !== undefined && !kept.has(proof)) {
      await remove(join(dir, name));
      report.removedOther++;
    }
    if (POINTER.test(name)) {
      // Read like any cache file: a link, a FIFO or a huge file is junk, not something to read to its end.
      const pointer = await readSmallJson(join(dir, name));
      const digest = typeof pointer?.digest === "string" ? /^sha256:([a-f0-9]{64})$/.exec(pointer.digest)?.[1] : undefined;
      if (digest === undefined || !kept.has(digest)) {
        await remove(join(dir, name));
        report.removedOther++;
      }
    }
  }
  for (const [folder, maxAge] of [
    ["uploads", SESSION_MS],
    ["images", options.maxAgeMs],
  ] as const) {
    if (maxAge === undefined) continue;
    for (const name of await readdir(join(dir, folder)).catch(() => [] as string[])) {
      const info = await stat(join(dir, folder, name)).catch(() => undefined);
      if (info?.isFile() && now - info.mtimeMs > maxAge) {
        await remove(join(dir, folder, name));
        report.removedOther++;
      }
    }
  }
  return report;
}
