import { PushError } from "../errors.ts";
import type { BlobBytes } from "../model/image.ts";
import type { Compression } from "../model/media-types.ts";

/**
 * The files of an image archive, however they are held: a tar read in place, an OCI layout directory,
 * or a tar stream (`docker save` as it runs, a .tar.gz) whose entries were taken as they passed. The
 * archive formats are read once, in archive-reader.ts, on top of this.
 */
export interface ArchiveStore {
  /** For messages: `archive /tmp/app.tar`, `OCI layout /tmp/app`, `docker save of app:1`. */
  readonly label: string;
  /** Whether a regular file (after following links inside the archive) has this name. */
  has(name: string): boolean;
  /** A small file's bytes (JSON documents); refused past `limit` bytes. */
  small(name: string, limit: number): Promise<Uint8Array>;
  /** A (possibly large) file: where its bytes are, its size, and its compression from its first bytes. */
  blob(name: string): Promise<{ bytes: BlobBytes; size: number; compression: Compression }>;
}

/** The archive is not what it claims; the message names it and what is wrong. */
export class ArchiveError extends PushError {
  override readonly name = "ArchiveError";
}

/** `blobs/sha256/<hex>`: where an OCI layout keeps the blob with that digest. */
export function blobPath(digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return `blobs/${algorithm}/${hex}`;
}

/** The digest a file name claims (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar`), if it claims one. */
export function digestFromName(name: string): string | undefined {
  // crane and go-containerregistry tarballs name compressed layers <digest>.tar.gz.
  const match = /(?:^|\/)(?:blobs\/sha256\/)?([a-f0-9]{64})(?:\.json|\.tar|\.tar\.gz|\.tar\.zst)?$/.exec(name);
  return match?.[1] ? `sha256:${match[1]}` : undefined;
}
