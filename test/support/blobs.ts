/**
 * Blobs for upload tests: bytes written to a temp file and handed to the real uploader as a BlobFile,
 * the way the pusher hands it cached or compressed layers.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlobFile } from "../../src/layers/blob-file.ts";
import { uploadBlob, type UploadOptions, type UploadOutcome } from "../../src/registry/blob-upload.ts";
import type { RegistryClient } from "../../src/registry/client.ts";

export interface TestBlob {
  digest: string;
  size: number;
  bytes: Uint8Array;
  /** A size bigger than `bytes`: the file is extended (sparse) to it, for tests of huge blobs. */
  claimedSize?: number;
}

export function blobOf(bytes: Uint8Array): TestBlob {
  return { digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`, size: bytes.byteLength, bytes };
}

/** Uploads `blob` with the real uploader; the digest is known up front (a HEAD goes first). */
export async function pushBlob(client: RegistryClient, repository: string, blob: TestBlob, options: Omit<UploadOptions, "digest">): Promise<UploadOutcome> {
  const dir = mkdtempSync(join(tmpdir(), "chunked-push-blob-"));
  const path = join(dir, "blob");
  writeFileSync(path, blob.bytes);
  // A blob claimed bigger than its bytes is a sparse file of that size: nothing is written to disk.
  if (blob.claimedSize !== undefined) truncateSync(path, blob.claimedSize);
  const file = await BlobFile.complete(path, 0, blob.claimedSize ?? blob.size, blob.digest);
  try {
    return await uploadBlob(client, repository, file, { ...options, digest: blob.digest });
  } finally {
    await file.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
