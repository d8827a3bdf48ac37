import type { HeaderData } from "tar";
import { ArchiveError } from "./store.ts";
import { applyExtended, EXTENDED_HEADER_LIMIT, extendedName, linkpathOf, parseHeader, safeLink, safeName } from "./tar-index.ts";

/** One entry of a tar stream, as its header describes it. */
export interface StreamEntry {
  name: string;
  type: string;
  size: number;
  linkpath?: string;
}

const BLOCK = 512;
// GNU tar pads to 10 KiB records; anything much longer after the end blocks is not padding.
const TRAILER_LIMIT = 1024 * 1024;

/**
 * Walks a tar as it arrives (a `docker save` running, a .tar.gz being decompressed) without holding
 * more than one read in memory: each regular file's bytes are handed to `onEntry` as a stream of exactly
 * its size, which must be read (or cancelled) before the walk moves on. Names that could escape a folder
 * are refused, as in the random-access reader; extended headers are bounded before anything is allocated.
 */
export async function walkTarStream(
  input: ReadableStream<Uint8Array>,
  label: string,
  onEntry: (entry: StreamEntry, body: ReadableStream<Uint8Array>) => Promise<void>,
): Promise<void> {
  const bytes = new ByteReader(input);
  let extended: HeaderData | undefined;
  let global: HeaderData | undefined;
  let offset = 0;
  const corrupt = (why: string) => new ArchiveError(`${label} is corrupt or truncated: ${why}`);
  try {
    for (;;) {
      const block = await bytes.exact(BLOCK);
      if (!block) return; // a tar cut after a whole entry still holds every entry before the cut
      const header = parseHeader(Buffer.from(block.buffer, block.byteOffset, block.byteLength), offset, extended, global, corrupt);
      if (header.nullBlock) {
        // Read the end-of-archive blocks and record padding the writer still sends: closing the pipe
        // under a running `docker save` would make it fail (EPIPE) after a complete archive.
        await bytes.skipToEnd(TRAILER_LIMIT);
        return;
      }
      if (!header.cksumValid) throw corrupt(`bad header checksum at byte ${offset}`);
      const size = header.size ?? 0;
      if (!Number.isSafeInteger(size) || size < 0) throw corrupt(`the entry at byte ${offset} has an impossible size`);
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      offset += BLOCK;
      const type = header.type ?? "File";
      if (
        type === "ExtendedHeader" ||
        type === "GlobalExtendedHeader" ||
        type === "NextFileHasLongPath" ||
        type === "OldGnuLongPath" ||
        type === "NextFileHasLongLinkpath"
      ) {
        if (size > EXTENDED_HEADER_LIMIT) throw corrupt(`${extendedName(type)} at byte ${offset - BLOCK} claims ${size} bytes`);
        const data = await bytes.exact(size);
        if (!data) throw corrupt(`the stream ends inside ${extendedName(type)}`);
        await bytes.skip(padded - size);
        ({ extended, global } = applyExtended(type, Buffer.from(data), extended, global));
        offset += padded;
        continue;
      }
      const linkpath = linkpathOf(header, extended, global);
      extended = undefined;
      const entry: StreamEntry = { name: safeName(header.path ?? "", label), type, size };
      if (type === "SymbolicLink" || type === "Link") {
        entry.linkpath = linkpath;
        safeLink({ name: entry.name, type, linkpath: entry.linkpath }, label);
      }
      if (type === "File" || type === "OldFile" || type === "ContiguousFile") {
        const body = bytes.slice(size);
        try {
          await onEntry(entry, body.stream);
        } catch (error) {
          // A consumer that failed because the entry was cut short (its header claims more than the
          // stream holds) reports a truncated archive, not its own trouble with the short input.
          if (!body.complete) throw corrupt(`the stream ends inside "${entry.name}", which claims ${size} bytes`);
          throw error;
        }
        await body.drain();
        if (!body.complete) throw corrupt(`the stream ends inside "${entry.name}", which claims ${size} bytes`);
      } else {
        await onEntry(entry, emptyStream());
        if (!(await bytes.skip(size))) throw corrupt(`the stream ends inside "${entry.name}"`);
      }
      if (!(await bytes.skip(padded - size))) return;
      offset += padded;
    }
  } finally {
    await bytes.close();
  }
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ start: (c) => c.close() });
}

/** Sequential reads from a stream: exact byte counts, skips, and sub-streams of a given length. */
class ByteReader {
  private readonly reader;
  private pending?: Uint8Array;
  private ended = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  private async next(): Promise<Uint8Array | undefined> {
    if (this.pending) {
      const piece = this.pending;
      this.pending = undefined;
      return piece;
    }
    if (this.ended) return undefined;
    const { done, value } = await this.reader.read();
    if (done) {
      this.ended = true;
      return undefined;
    }
    return value;
  }

  /** Exactly `n` bytes, or undefined if the stream ends first (at a clean boundary or not). */
  async exact(n: number): Promise<Uint8Array | undefined> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const piece = await this.next();
      if (!piece) return undefined;
      const take = Math.min(piece.length, n - filled);
      out.set(piece.subarray(0, take), filled);
      filled += take;
      if (take < piece.length) this.pending = piece.subarray(take);
    }
    return out;
  }

  /** Reads and drops what is left, up to `limit` bytes (then gives up on the rest). */
  async skipToEnd(limit: number): Promise<void> {
    let skipped = 0;
    while (skipped < limit) {
      const piece = await this.next();
      if (!piece) return;
      skipped += piece.length;
    }
  }

  /** Skips `n` bytes; false if the stream ends first. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      const piece = await this.next();
      if (!piece) return false;
      if (piece.length > left) {
        this.pending = piece.subarray(left);
        return true;
      }
      left -= piece.length;
    }
    return true;
  }

  /** The next `n` bytes as a stream of their own; `drain()` skips whatever its reader left. */
  slice(n: number): { stream: ReadableStream<Uint8Array>; drain(): Promise<void>; readonly complete: boolean } {
    let left = n;
    let short = false;
    const pull = async (): Promise<Uint8Array | undefined> => {
      if (left === 0) return undefined;
      const piece = await this.next();
      if (!piece) {
        short = true;
        return undefined;
      }
      if (piece.length > left) {
        this.pending = piece.subarray(left);
        const head = piece.subarray(0, left);
        left = 0;
        return head;
      }
      left -= piece.length;
      return piece;
    };
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          const piece = await pull();
          if (piece) controller.enqueue(piece);
          else controller.close();
        },
      },
      { highWaterMark: 0 },
    );
    return {
      stream,
      drain: async () => {
        while (await pull());
      },
      get complete() {
        return !short;
      },
    };
  }

  async close(): Promise<void> {
    await this.reader.cancel().catch(() => undefined);
  }
}
