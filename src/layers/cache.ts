import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { link, lstat, mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PushError } from "../errors.ts";
import { digestHex } from "../model/digest.ts";
import { SHA256_DIGEST } from "../model/descriptor.ts";
import type { BlobIdentity } from "./blob-file.ts";
import { Sealer } from "./seal.ts";
import { isAlive } from "../pids.ts";

/** A compressed blob in the cache, and whether this user's own runs vouch for what it is. */
export interface CachedBlob extends BlobIdentity {
  path: string;
  /** The pointer carries this user's seal: the layer really became this blob. */
  sealed: boolean;
}

/** This machine (and container), as it appears in temporary names: pids are only meaningful here. */
const HOST = createHash("sha256").update(`${hostname()}\n${readMachineId()}`).digest("hex").slice(0, 8);
const FOREIGN_TEMP_MS = 24 * 3600 * 1000;

function readMachineId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

// Pointers and fact files are a few dozen bytes; anything bigger was not written by us.
const SMALL_FILE = 4096;

/**
 * `.cache/<sha256 hex>` holds compressed blobs; `.cache/<layer hex>-<algorithm>-<level>-ptr` records
 * which blob (digest and size) a layer became, so a later run reuses it instead of compressing again;
 * `.cache/<blob hex>-verified` records what a stored compressed blob decompresses to. Pointers and facts
 * carry a seal (see seal.ts): without a valid one they are only hints, checked before use. Everything
 * is written under a temporary name and renamed when complete: a file with a final name is whole.
 * Nothing found in the folder can break a run: unknown entries are left alone, unreadable ones ignored.
 */
export class BlobCache {
  constructor(
    readonly dir: string,
    private readonly sealer: Sealer = Sealer.none(),
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true }).catch((error: NodeJS.ErrnoException) => {
      throw new PushError(`cannot create the cache folder ${this.dir}: ${error.message}`);
    });
    const info = await stat(this.dir);
    if (!info.isDirectory()) throw new PushError(`the cache folder ${this.dir} is not a folder`);
    await this.removeOrphans();
  }

  /**
   * Temporary files of runs that died (kill -9, power loss): their pid is in the name. A folder with
   * such a name (made by hand or by another tool) is removed the same way rather than failing runs.
   */
  private async removeOrphans(): Promise<void> {
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const match = /^\.tmp-(\d+)(?:@([a-f0-9]{8}))?-/.exec(name);
      if (!match) continue;
      const pid = Number(match[1]);
      const host = match[2];
      // A pid means something only on the machine (and PID namespace) that wrote it: another host's
      // temporary file (a cache folder shared between containers) goes only once it is a day old.
      const orphan =
        host === undefined || host === HOST
          ? pid !== process.pid && !isAlive(pid)
          : Date.now() - ((await lstat(join(this.dir, name)).catch(() => undefined))?.mtimeMs ?? Date.now()) > FOREIGN_TEMP_MS;
      if (orphan) await rm(join(this.dir, name), { recursive: true, force: true }).catch(() => undefined);
    }
  }

  blobPath(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  /** A fresh temporary path in the cache folder (same file system, so rename is atomic). */
  tempPath(): string {
    return join(this.dir, `.tmp-${process.pid}@${HOST}-${randomBytes(6).toString("hex")}`);
  }

  /**
   * The blob a layer became earlier, if the pointer parses and the blob file has the recorded size.
   * Its bytes are not read here: the caller asks the registry first and verifies only what it uses.
   */
  async lookup(diffId: string, variant: string): Promise<CachedBlob | undefined> {
    const pointer = await readSmallJson(this.pointerPath(diffId, variant));
    if (!pointer) return undefined;
    const { digest, size, seal } = pointer;
    if (typeof digest !== "string" || !SHA256_DIGEST.test(digest) || typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
      await this.forget(diffId, variant);
      return undefined;
    }
    const path = this.blobPath(digest);
    const info = await lstat(path).catch(() => undefined);
    if (!info?.isFile() || info.size !== size) {
      await this.forget(diffId, variant);
      return undefined;
    }
    return { digest, size, path, sealed: this.sealer.check(seal, "ptr", diffId, variant, digest, size) };
  }

  /** Moves a finished temporary file to its digest name and points the layer at it, sealed. */
  async commit(tempPath: string, blob: BlobIdentity, diffId: string, variant: string): Promise<string> {
    const path = await this.adopt(tempPath, blob);
    await this.point(diffId, variant, blob);
    return path;
  }

  /** Points the layer at a blob this run proved it became, with this user's seal. */
  async point(diffId: string, variant: string, blob: BlobIdentity): Promise<void> {
    await this.writeAtomic(
      this.pointerPath(diffId, variant),
      JSON.stringify({
        digest: blob.digest,
        size: blob.size,
        seal: this.sealer.mark("ptr", diffId, variant, blob.digest, blob.size),
      }),
    );
  }

  /** Moves a finished temporary file to its digest name (a stored blob kept for retries and resumes). */
  async adopt(tempPath: string, blob: BlobIdentity): Promise<string> {
    const path = this.blobPath(blob.digest);
    await rename(tempPath, path);
    return path;
  }

  /** Drops a pointer that lied or broke, so the layer is compressed again. */
  async forget(diffId: string, variant: string): Promise<void> {
    await rm(this.pointerPath(diffId, variant), { force: true }).catch(() => undefined);
  }

  /** Removes a blob whose bytes are not what its name says. */
  async discardBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true }).catch(() => undefined);
  }

  /** Marks a blob as just used: `prune` removes the least recently used first. Best effort. */
  async touch(path: string): Promise<void> {
    const now = new Date();
    await utimes(path, now, now).catch(() => undefined);
  }

  async discard(tempPath: string): Promise<void> {
    await rm(tempPath, { force: true }).catch(() => undefined);
  }

  /** What this user's runs proved a stored blob decompresses to; undefined when not proved (or not sealed). */
  async provenDiffId(digest: string, size: number): Promise<string | undefined> {
    const facts = await readSmallJson(this.factsPath(digest));
    if (!facts || typeof facts.diffId !== "string") return undefined;
    return this.sealer.check(facts.seal, "verified", digest, size, facts.diffId) ? facts.diffId : undefined;
  }

  /** Records (sealed) that the blob `digest` of `size` bytes decompresses to `diffId`. Best effort. */
  async prove(digest: string, size: number, diffId: string): Promise<void> {
    if (!this.sealer.enabled) return;
    const text = JSON.stringify({ digest, size, diffId, seal: this.sealer.mark("verified", digest, size, diffId) });
    await this.writeAtomic(this.factsPath(digest), text).catch(() => undefined);
  }

  /** Whether a blob named by `digest` is in the cache with `size` bytes (its content is checked on use). */
  async has(digest: string, size: number): Promise<string | undefined> {
    const path = this.blobPath(digest);
    const info = await lstat(path).catch(() => undefined);
    return info?.isFile() && info.size === size ? path : undefined;
  }

  /** Links a file into the cache under its digest without copying (an archive's blob kept for resume). */
  async linkIn(path: string, digest: string): Promise<void> {
    await link(path, this.blobPath(digest)).catch(() => undefined);
  }

  private pointerPath(diffId: string, variant: string): string {
    return join(this.dir, `${digestHex(diffId)}-${variant}-ptr`);
  }

  private factsPath(digest: string): string {
    return join(this.dir, `${digestHex(digest)}-verified`);
  }

  async writeAtomic(path: string, data: string): Promise<void> {
    const temp = this.tempPath();
    try {
      await writeFile(temp, data);
      await rename(temp, path);
    } catch (error) {
      await this.discard(temp);
      throw error;
    }
  }
}

/** A small JSON object from a file we wrote; anything else (missing, a folder, huge, not JSON) is undefined. */
export async function readSmallJson(path: string): Promise<Record<string, unknown> | undefined> {
  const info = await lstat(path).catch(() => undefined);
  if (!info?.isFile() || info.size > SMALL_FILE) return undefined;
  const text = await readFile(path, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
