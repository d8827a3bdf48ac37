import { open } from "node:fs/promises";
import { sniffCompression, type Compression } from "../model/media-types.ts";
import type { BlobBytes } from "../model/image.ts";
import { ArchiveError, type ArchiveStore } from "./store.ts";
import { TarIndex } from "./tar-index.ts";

/** An uncompressed tar on disk, indexed once and read in place: layers are byte ranges of the file. */
export class TarStore implements ArchiveStore {
  private constructor(
    private readonly tar: TarIndex,
    readonly label: string,
  ) {}

  static async open(path: string): Promise<TarStore> {
    return new TarStore(await TarIndex.read(path), `archive ${path}`);
  }

  has(name: string): boolean {
    return this.tar.has(name);
  }

  async small(name: string, limit: number): Promise<Uint8Array> {
    const entry = this.tar.get(name);
    if (entry.size > limit)
      throw new ArchiveError(
        `${this.label}: ${name} is ${entry.size} bytes, more than the ${limit} a ${name.endsWith(".json") ? "JSON file" : "manifest or config"} may have`,
      );
    return readRange(this.tar.path, entry.offset, entry.size);
  }

  async blob(name: string): Promise<{ bytes: BlobBytes; size: number; compression: Compression }> {
    const entry = this.tar.get(name);
    const head = await readRange(this.tar.path, entry.offset, Math.min(4, entry.size));
    return { bytes: { kind: "file", path: this.tar.path, offset: entry.offset, size: entry.size }, size: entry.size, compression: sniffCompression(head) };
  }
}

export async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const buffer = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await handle.read(buffer, filled, length - filled, offset + filled);
      if (bytesRead === 0) throw new ArchiveError(`${path} ends before byte ${offset + length}`);
      filled += bytesRead;
    }
    return buffer;
  } finally {
    await handle.close();
  }
}
