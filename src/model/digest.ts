import { createHash } from "node:crypto";

/** `sha256:<hex>` of some bytes, the form registries name blobs by. */
export function sha256Digest(bytes: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** The hex part of a `sha256:<hex>` digest; throws on anything else, so it is safe in a file name. */
export function digestHex(digest: string): string {
  const match = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!match?.[1]) throw new Error(`not a sha256 digest: ${digest}`);
  return match[1];
}

/** `sha256:0123456789ab`, short enough for a log line, long enough to tell blobs apart. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 19);
}
