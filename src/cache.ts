import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { digestHex } from "./digest.ts";
import { PushError } from "./errors.ts";

/** A compressed blob in the cache, named by its digest. */
export interface CachedBlob {
  digest: string;
  size: number;
  path: string;
}

/**
 * `.cache/<sha256 hex>` holds compressed blobs; `.cache/<layer hex>-<algorithm>-<level>-ptr` records
 * which blob (digest and size) a layer became, so a later run reuses it instead of compressing again.
 * Everything is written under a temporary name and renamed when complete: a file with a final name is
 * always whole.
 */
export class BlobCache {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true }).catch((error: NodeJS.ErrnoException) => {
      throw new PushError(`cannot create the cache folder ${this.dir}: ${error.message}`);
    });
  }

  blobPath(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  /** A fresh temporary path in the cache folder (same file system, so rename is atomic). */
  tempPath(): string {
    return join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
  }

  /** The blob a layer became earlier, if its pointer and a blob of the recorded size are both there. */
  async lookup(layerDigest: string, variant: string): Promise<CachedBlob | undefined> {
    const pointer = await readFile(this.pointerPath(layerDigest, variant), "utf8").catch(() => undefined);
    if (pointer === undefined) return undefined;
    try {
      const { digest, size } = JSON.parse(pointer) as { digest: string; size: number };
      const path = this.blobPath(digest);
      const stats = await stat(path);
      return stats.size === size ? { digest, size, path } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Moves a finished temporary file to its digest name and points the layer at it. */
  async commit(tempPath: string, blob: { digest: string; size: number }, layerDigest: string, variant: string): Promise<CachedBlob> {
    const path = this.blobPath(blob.digest);
    await rename(tempPath, path);
    await this.writeAtomic(this.pointerPath(layerDigest, variant), JSON.stringify({ digest: blob.digest, size: blob.size }));
    return { ...blob, path };
  }

  async discard(tempPath: string): Promise<void> {
    await rm(tempPath, { force: true });
  }

  private pointerPath(layerDigest: string, variant: string): string {
    return join(this.dir, `${digestHex(layerDigest)}-${variant}-ptr`);
  }

  private async writeAtomic(path: string, data: string): Promise<void> {
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
