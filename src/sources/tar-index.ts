import { open, type FileHandle } from "node:fs/promises";
import { posix } from "node:path";
import { Header, Pax, type HeaderData } from "tar";
import { PushError } from "../errors.ts";

/** Where one regular file's bytes sit inside a tar. */
export interface TarEntry {
  name: string;
  offset: number;
  size: number;
}

interface RawEntry extends TarEntry {
  type: string;
  linkpath?: string;
}

const BLOCK = 512;
/** Pax and GNU long-name records are a few hundred bytes; one claiming more is not a real archive. */
export const EXTENDED_HEADER_LIMIT = 1024 * 1024;
export const ENTRY_LIMIT = 100_000;
export const NAME_LIMIT = 4096;

/**
 * An index of a tar file's entries, so layers can be read in place (a byte range of the tar) instead
 * of being extracted. node-tar parses headers but does not report byte offsets, so we walk the blocks
 * ourselves and let its Header and Pax classes decode each one. Entries that could escape a folder
 * (absolute names, `..`, links pointing out) make the whole archive refused.
 */
export class TarIndex {
  private constructor(
    readonly path: string,
    private readonly entries: Map<string, RawEntry>,
  ) {}

  static async read(path: string): Promise<TarIndex> {
    const handle = await open(path, "r").catch((error: NodeJS.ErrnoException) => {
      throw new PushError(`cannot open archive ${path}: ${error.code === "ENOENT" ? "no such file" : error.message}`);
    });
    try {
      return new TarIndex(path, await readEntries(handle, path));
    } finally {
      await handle.close();
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.find(name) !== undefined;
  }

  /** The regular file behind `name`, following links inside the archive. */
  find(name: string): TarEntry | undefined {
    let entry = this.entries.get(clean(name));
    for (let hops = 0; entry && hops < 16; hops++) {
      if (entry.type !== "SymbolicLink" && entry.type !== "Link") return entry;
      entry = this.entries.get(linkTarget(entry));
    }
    return undefined;
  }

  get(name: string): TarEntry {
    const entry = this.find(name);
    if (!entry) throw new PushError(`archive ${this.path} has no file "${name}"`);
    return entry;
  }
}

async function readEntries(handle: FileHandle, path: string): Promise<Map<string, RawEntry>> {
  const stats = await handle.stat();
  if (!stats.isFile()) throw new PushError(`archive ${path} is not a file`);
  const fileSize = stats.size;
  const entries = new Map<string, RawEntry>();
  const block = Buffer.alloc(BLOCK);
  let extended: HeaderData | undefined;
  let global: HeaderData | undefined;
  const corrupt = (why: string) => new PushError(`archive ${path} is corrupt or truncated: ${why}`);

  for (let offset = 0; offset + BLOCK <= fileSize; ) {
    const { bytesRead } = await handle.read(block, 0, BLOCK, offset);
    if (bytesRead < BLOCK) throw corrupt(`short read at byte ${offset}`);
    const header = parseHeader(block, offset, extended, global, corrupt);
    if (header.nullBlock) return entries;
    if (!header.cksumValid) throw corrupt(`bad header checksum at byte ${offset}`);
    const size = header.size ?? 0;
    if (!Number.isSafeInteger(size) || size < 0) throw corrupt(`the entry at byte ${offset} has an impossible size`);
    const headerOffset = offset;
    const dataOffset = offset + BLOCK;
    if (dataOffset + size > fileSize) throw corrupt(`entry "${header.path}" ends past the end of the file`);
    offset = dataOffset + Math.ceil(size / BLOCK) * BLOCK;

    switch (header.type) {
      case "ExtendedHeader":
      case "GlobalExtendedHeader":
      case "NextFileHasLongPath":
      case "OldGnuLongPath":
      case "NextFileHasLongLinkpath": {
        if (size > EXTENDED_HEADER_LIMIT) throw corrupt(`${extendedName(header.type)} at byte ${headerOffset} claims ${size} bytes`);
        const data = Buffer.alloc(size);
        await handle.read(data, 0, size, dataOffset);
        ({ extended, global } = applyExtended(header.type, data, extended, global));
        continue;
      }
    }
    const linkpath = linkpathOf(header, extended, global);
    extended = undefined;
    const raw: RawEntry = { name: safeName(header.path ?? "", path), offset: dataOffset, size, type: header.type };
    if (header.type === "SymbolicLink" || header.type === "Link") {
      raw.linkpath = linkpath;
      safeLink(raw, path);
    }
    // Image archives hold a few hundred entries: a tar of millions of empty files is not one.
    if (raw.name.length > NAME_LIMIT) throw corrupt(`an entry name of ${raw.name.length} characters at byte ${headerOffset}`);
    if (entries.size >= ENTRY_LIMIT) throw new PushError(`archive ${path} has more than ${ENTRY_LIMIT} entries: it is not an image archive`);
    entries.set(raw.name, raw);
  }
  // A tar cut short before its end-of-archive blocks still has every entry it lists; only a cut
  // inside an entry is fatal, and that is caught above.
  return entries;
}

/**
 * node-tar's Header, whose plain Error on a size field it cannot represent (base-256 beyond 2^53, as
 * a hostile archive writes) becomes the archive's "corrupt" message rather than an unexpected failure.
 */
export function parseHeader(
  block: Buffer,
  offset: number,
  extended: HeaderData | undefined,
  global: HeaderData | undefined,
  corrupt: (why: string) => Error,
): Header {
  try {
    return new Header(block, 0, extended, global);
  } catch (error) {
    throw corrupt(`the header at byte ${offset} cannot be read (${(error as Error).message})`);
  }
}

/** An extended record's type in words, for messages. */
export function extendedName(type: string): string {
  if (type === "ExtendedHeader") return "a pax extended header";
  if (type === "GlobalExtendedHeader") return "a pax global header";
  if (type === "NextFileHasLongLinkpath") return "a GNU long link-name record";
  return "a GNU long-name record";
}

/** Folds a pax or GNU long-name record into the headers that apply to the next entry (or all of them). */
export function applyExtended(
  type: string,
  data: Buffer,
  extended: HeaderData | undefined,
  global: HeaderData | undefined,
): { extended: HeaderData | undefined; global: HeaderData | undefined } {
  if (type === "GlobalExtendedHeader") return { extended, global: Pax.parse(data.toString("utf8"), global, true) };
  if (type === "ExtendedHeader") return { extended: Pax.parse(data.toString("utf8"), extended, false), global };
  const value = data.toString("utf8").replace(/\0.*$/s, "");
  const key = type === "NextFileHasLongLinkpath" ? "linkpath" : "path";
  return { extended: { ...extended, [key]: value }, global };
}

/**
 * A link entry's target. node-tar's Header reads a long link name (pax `linkpath`, GNU `K` record) and
 * then overwrites it with the header's own 100-character field, so a long target would be cut short.
 */
export function linkpathOf(header: Header, extended: HeaderData | undefined, global: HeaderData | undefined): string {
  return extended?.linkpath ?? global?.linkpath ?? header.linkpath ?? "";
}

export function clean(name: string): string {
  return posix
    .normalize(name)
    .replace(/^(\.\/)+/, "")
    .replace(/\/+$/, "");
}

export function safeName(name: string, archive: string): string {
  if (name.startsWith("/") || name.split("/").includes("..")) {
    throw new PushError(`archive ${archive} has an unsafe entry "${name}" (absolute or with ".."): refusing it`);
  }
  return clean(name);
}

// Symlink targets are relative to the link's folder; hard link targets are archive names.
export function linkTarget(entry: { name: string; type: string; linkpath?: string }): string {
  const target = entry.linkpath ?? "";
  return entry.type === "SymbolicLink" ? posix.join(posix.dirname(entry.name), target) : clean(target);
}

export function safeLink(entry: { name: string; type: string; linkpath?: string }, archive: string): void {
  const target = linkTarget(entry);
  if ((entry.linkpath ?? "").startsWith("/") || target === ".." || target.startsWith("../")) {
    throw new PushError(`archive ${archive} has a link "${entry.name}" -> "${entry.linkpath}" pointing outside the archive: refusing it`);
  }
}
