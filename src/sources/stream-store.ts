import type { BlobBytes, StreamSink, Taken } from "../model/image.ts";
import { sha256Digest } from "../model/digest.ts";
import { sniffCompression, type Compression } from "../model/media-types.ts";
import { peek, startsLikeJson } from "../streams.ts";
import { ArchiveError, digestFromName, type ArchiveStore } from "./store.ts";
import { clean, ENTRY_LIMIT, linkTarget, NAME_LIMIT } from "./tar-index.ts";
import { walkTarStream, type StreamEntry } from "./tar-stream.ts";

// What stays in memory: JSON documents (configs, manifests, indexes) and tiny files. A layer is at
// least 1024 bytes (a tar's end blocks) and never starts with "{", so it goes to the sink instead.
const SMALL_JSON = 8 * 1024 * 1024;
const TINY = 1024;
const MEMORY_BUDGET = 64 * 1024 * 1024;
// Image archives hold a few hundred entries with names under a few hundred characters.
const ENTRY_OVERHEAD = 256;

interface Kept {
  type: string;
  size: number;
  small?: Uint8Array;
  taken?: Taken;
  linkpath?: string;
}

/**
 * The files of a tar stream, after it went by: small JSON files kept in memory, every other file
 * handed to the sink as it passed (compressed into the cache and uploaded at once, or kept as stored).
 * Nothing of the stream is read twice and nothing big is held.
 */
export class StreamStore implements ArchiveStore {
  private readonly entries = new Map<string, Kept>();
  private held = 0;

  private constructor(readonly label: string) {}

  /** Reads the whole stream, handing what it cannot keep to `sink`. */
  static async read(input: ReadableStream<Uint8Array>, label: string, sink: StreamSink): Promise<StreamStore> {
    const store = new StreamStore(label);
    await walkTarStream(input, label, (entry, body) => store.accept(entry, body, sink));
    return store;
  }

  /** Every entry kept costs its name and some bookkeeping: a hostile tar of empty files must not add up. */
  private remember(entry: StreamEntry, bytes: number): void {
    if (entry.name.length > NAME_LIMIT) throw new ArchiveError(`${this.label} has an entry name of ${entry.name.length} characters: refusing it`);
    if (this.entries.size >= ENTRY_LIMIT) throw new ArchiveError(`${this.label} has more than ${ENTRY_LIMIT} entries: refusing it`);
    this.held += bytes + entry.name.length + (entry.linkpath?.length ?? 0) + ENTRY_OVERHEAD;
    if (this.held > MEMORY_BUDGET) throw new ArchiveError(`${this.label} holds more than ${MEMORY_BUDGET} bytes of names and JSON files: refusing it`);
  }

  private async accept(entry: StreamEntry, body: ReadableStream<Uint8Array>, sink: StreamSink): Promise<void> {
    if (entry.type !== "File" && entry.type !== "OldFile" && entry.type !== "ContiguousFile" && entry.type !== "SymbolicLink" && entry.type !== "Link") return;
    if (entry.type === "SymbolicLink" || entry.type === "Link") {
      this.remember(entry, 0);
      this.entries.set(entry.name, { type: entry.type, size: 0, linkpath: entry.linkpath });
      return;
    }
    if (entry.type !== "File" && entry.type !== "OldFile" && entry.type !== "ContiguousFile") return;
    // Enough of the start to tell a JSON document from a layer; `whole` gives every byte, that start first.
    const { head, whole } = await peek(body);
    const small = entry.size < TINY || (startsLikeJson(head) && entry.size <= SMALL_JSON);
    this.remember(entry, small ? entry.size : 0);
    if (small) {
      const bytes = new Uint8Array(entry.size);
      let filled = 0;
      for await (const chunk of whole) {
        bytes.set(chunk.subarray(0, entry.size - filled), filled);
        filled += Math.min(chunk.length, entry.size - filled);
        if (filled >= entry.size) break;
      }
      this.entries.set(entry.name, { type: "File", size: entry.size, small: bytes });
      return;
    }
    const expectedDigest = digestFromName(entry.name);
    const info = { name: entry.name, size: entry.size, ...(expectedDigest ? { expectedDigest } : {}) };
    const taken = await sink.take(info, whole);
    this.entries.set(entry.name, { type: "File", size: entry.size, taken });
  }

  private find(name: string): Kept | undefined {
    let entry = this.entries.get(clean(name));
    let at = clean(name);
    for (let hops = 0; entry && hops < 16; hops++) {
      if (entry.type !== "SymbolicLink" && entry.type !== "Link") return entry;
      at = linkTarget({ name: at, type: entry.type, linkpath: entry.linkpath });
      entry = this.entries.get(at);
    }
    return undefined;
  }

  private get(name: string): Kept {
    const entry = this.find(name);
    if (!entry) throw new ArchiveError(`${this.label} has no file "${name}"`);
    return entry;
  }

  has(name: string): boolean {
    return this.find(name) !== undefined;
  }

  async small(name: string, limit: number): Promise<Uint8Array> {
    const entry = this.get(name);
    if (entry.size > limit || !entry.small) {
      throw new ArchiveError(`${this.label}: ${name} is ${entry.size} bytes and not JSON, where a manifest or config must be`);
    }
    return entry.small;
  }

  async blob(name: string): Promise<{ bytes: BlobBytes; size: number; compression: Compression }> {
    const entry = this.get(name);
    if (entry.taken) return { bytes: { kind: "taken", taken: entry.taken }, size: entry.size, compression: entry.taken.compression };
    // A layer small enough to have stayed in memory (or one that looks like JSON): rare, and tiny.
    const taken = memoryTaken(entry.small ?? new Uint8Array(0));
    return { bytes: { kind: "taken", taken }, size: entry.size, compression: taken.compression };
  }
}

/** Bytes that stayed in memory, as a Taken the pusher can compress like any other. */
export function memoryTaken(bytes: Uint8Array): Taken & { memory: Uint8Array } {
  return {
    memory: bytes,
    compression: sniffCompression(bytes),
    small: bytes,
    stored: Promise.resolve({ digest: sha256Digest(bytes), size: bytes.length }),
  };
}
