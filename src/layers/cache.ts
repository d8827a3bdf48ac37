import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { digestHex } from "../model/digest.ts";
import { PushError } from "../errors.ts";

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
    await this.removeOrphans();
  }

  /** Temporary files of runs that died (kill -9, power loss): their pid is in the name. */
  private async removeOrphans(): Promise<void> {
    for (const name of await readdir(this.dir).catch(() => [])) {
      const pid = Number(/^\.tmp-(\d+)-/.exec(name)?.[1]);
      if (pid && pid !== process.pid && !alive(pid)) await rm(join(this.dir, name), { force: true });
    }
  }

  blobPath(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  /** A fresh temporary path in the cache folder (same file system, so rename is atomic). */
  tempPath(): string {
    return join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
  }

  /**
   * The blob a layer became earlier. Trusted only if the pointer parses, the blob has the recorded
   * size and its bytes still hash to its name (sha256 runs at ~1 GB/s, far faster than any upload);
   * anything else is removed so the layer is compressed again.
   */
  async lookup(layerDigest: string, variant: string, signal?: AbortSignal): Promise<CachedBlob | undefined> {
    const pointerPath = this.pointerPath(layerDigest, variant);
    const pointer = await readFile(pointerPath, "utf8").catch(() => undefined);
    if (pointer === undefined) return undefined;
    let blob: CachedBlob | undefined;
    try {
      const { digest, size } = JSON.parse(pointer) as { digest: string; size: number };
      const path = this.blobPath(digest);
      if ((await stat(path)).size === size && (await hashFile(path, signal)) === digest) blob = { digest, size, path };
      else await rm(path, { force: true });
    } catch {
      signal?.throwIfAborted();
      blob = undefined;
    }
    if (!blob) await rm(pointerPath, { force: true });
    return blob;
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

async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest("hex")}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
