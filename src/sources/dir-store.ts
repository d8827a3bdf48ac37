import { lstat, readdir, realpath } from "node:fs/promises";
import { join, sep } from "node:path";
import type { BlobBytes } from "../model/image.ts";
import { sniffCompression, type Compression } from "../model/media-types.ts";
import { ArchiveError, type ArchiveStore } from "./store.ts";
import { readRange } from "./tar-store.ts";

/**
 * An OCI image layout directory (`skopeo copy ... oci:<dir>`, `umoci`, buildx `type=oci,tar=false`).
 * Only the layout's own names are read (`index.json`, `oci-layout`, `blobs/<alg>/<hex>`), and a name
 * whose real path leaves the directory (a symlink pointing out) is refused.
 */
export class DirStore implements ArchiveStore {
  private readonly sizes = new Map<string, number>();

  private constructor(
    private readonly root: string,
    readonly label: string,
  ) {}

  static async open(dir: string): Promise<DirStore> {
    const root = await realpath(dir);
    const store = new DirStore(root, `OCI layout ${dir}`);
    if (!(await store.probe("index.json"))) {
      throw new ArchiveError(`${dir} is a folder but not an OCI image layout: it has no index.json`);
    }
    await store.probe("oci-layout");
    await store.probe("manifest.json");
    const blobs = await readdir(join(root, "blobs", "sha256")).catch(() => [] as string[]);
    for (const hex of blobs) await store.probe(`blobs/sha256/${hex}`);
    return store;
  }

  /** Learns whether a layout file exists (and its size), refusing links that lead out. */
  private async probe(name: string): Promise<boolean> {
    if (!/^(index\.json|oci-layout|manifest\.json|blobs\/sha256\/[a-f0-9]{64})$/.test(name)) return false;
    const path = join(this.root, name);
    const info = await lstat(path).catch(() => undefined);
    if (!info) return false;
    const real = await realpath(path).catch(() => undefined);
    if (!real?.startsWith(this.root + sep)) throw new ArchiveError(`${this.label}: ${name} points outside the layout: refusing it`);
    const target = info.isSymbolicLink() ? await lstat(real) : info;
    if (!target.isFile()) return false;
    this.sizes.set(name, target.size);
    return true;
  }

  has(name: string): boolean {
    return this.sizes.has(name);
  }

  private size(name: string): number {
    const size = this.sizes.get(name);
    if (size === undefined) throw new ArchiveError(`${this.label} has no file "${name}"`);
    return size;
  }

  async small(name: string, limit: number): Promise<Uint8Array> {
    const size = this.size(name);
    if (size > limit) throw new ArchiveError(`${this.label}: ${name} is ${size} bytes, more than the ${limit} a manifest or config may have`);
    return readRange(join(this.root, name), 0, size);
  }

  async blob(name: string): Promise<{ bytes: BlobBytes; size: number; compression: Compression }> {
    const size = this.size(name);
    const path = join(this.root, name);
    const head = await readRange(path, 0, Math.min(4, size));
    return { bytes: { kind: "file", path, offset: 0, size }, size, compression: sniffCompression(head) };
  }
}
