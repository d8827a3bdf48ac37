import { planUpload, type Chunk } from "./chunks.ts";
import { PushError } from "./errors.ts";
import type { BlobSource } from "./layers.ts";
import type { Logger } from "./log.ts";
import { drain, type RegistryClient } from "./registry.ts";

export interface UploadOptions {
  /** --chunk-size: a body limit the registry does not advertise. */
  chunkCap?: number;
  /** Names the blob in messages, e.g. `layer 2/5 sha256:0123456789ab`. */
  label: string;
  log: Logger;
}

export interface UploadOutcome {
  status: "pushed" | "exists";
  /** Requests that carried the blob's bytes: 1 for a monolithic PUT. */
  requests: number;
}

const OCTET = "application/octet-stream";
// serverless-registry fails blobs over ~5 GiB when the upload completes (its issue #69).
const SERVERLESS_BLOB_LIMIT = 5 * 1024 ** 3;

/**
 * Pushes one blob: HEAD to skip what is there, POST to open a session, then one PUT when the blob
 * fits in a request, or equal-size PATCH chunks followed by an empty PUT. The registry's newest
 * `Location` is always used, and the `Range` it returns is checked after every chunk.
 */
export async function pushBlob(
  client: RegistryClient,
  repository: string,
  blob: BlobSource,
  options: UploadOptions,
): Promise<UploadOutcome> {
  const { label } = options;
  const head = await client.send("HEAD", `/v2/${repository}/blobs/${blob.digest}`);
  if (head.ok) return { status: "exists", requests: 0 };
  if (head.status !== 404) throw await client.failure(head, `${label}: checking whether the registry has it`);

  const opened = await client.send("POST", `/v2/${repository}/blobs/uploads/`, { headers: { "Content-Length": "0" }, body: "" });
  if (opened.status !== 202) throw await client.failure(opened, `${label}: opening an upload session`);
  await drain(opened);
  let location = requireLocation(opened, label);

  const limits = {
    min: headerNumber(opened, "oci-chunk-min-length"),
    max: headerNumber(opened, "oci-chunk-max-length"),
    cap: options.chunkCap,
  };
  let plan;
  try {
    plan = planUpload(blob.size, limits);
  } catch (error) {
    await abandon(client, location);
    throw new PushError(`${label}: ${(error as Error).message}`);
  }
  if (limits.max !== undefined && blob.size > SERVERLESS_BLOB_LIMIT) {
    options.log.warn(
      `${label} is ${blob.size} bytes: serverless-registry currently fails blobs over 5 GiB when the upload completes (its issue #69)`,
    );
  }

  try {
    if (plan.kind === "monolithic") {
      const put = await client.send("PUT", withDigest(location, blob.digest), {
        headers: { "Content-Type": OCTET },
        body: blob.body(),
      });
      await expectCommitted(client, put, blob, `${label}: uploading in one request`);
      return { status: "pushed", requests: 1 };
    }
    const body = blob.body();
    for (const [i, chunk] of plan.chunks.entries()) {
      const what = `${label}: chunk ${i + 1}/${plan.chunks.length} (bytes ${chunk.start}-${chunk.end})`;
      const patch = await client.send("PATCH", location, {
        headers: { "Content-Type": OCTET, "Content-Range": `${chunk.start}-${chunk.end}` },
        body: body.slice(chunk.start, chunk.end + 1),
      });
      if (patch.status !== 202) throw await client.failure(patch, what);
      await drain(patch);
      location = requireLocation(patch, label, location);
      checkRange(patch, chunk, what);
    }
    // serverless-registry ignores this body once chunks were sent, so it must be empty.
    const put = await client.send("PUT", withDigest(location, blob.digest), {
      headers: { "Content-Type": OCTET, "Content-Length": "0" },
      body: "",
    });
    await expectCommitted(client, put, blob, `${label}: completing the chunked upload`);
    return { status: "pushed", requests: plan.chunks.length };
  } catch (error) {
    await abandon(client, location);
    throw error;
  }
}

/** Appends the digest to a Location, keeping its query (serverless-registry's `_stateHash`) as given. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

function requireLocation(response: Response, label: string, previous?: string): string {
  const location = response.headers.get("location") ?? previous;
  if (!location) throw new PushError(`${label}: the registry answered ${response.status} without a Location header`);
  return location;
}

function headerNumber(response: Response, name: string): number | undefined {
  const value = Number.parseInt(response.headers.get(name) ?? "", 10);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

// Range is `0-<end>` (some registries write `bytes=0-<end>`); a registry that sends none is trusted.
function checkRange(response: Response, chunk: Chunk, what: string): void {
  const range = response.headers.get("range");
  if (!range) return;
  const end = Number(/(\d+)\s*$/.exec(range)?.[1]);
  if (end !== chunk.end) {
    throw new PushError(`${what}: the registry reports it holds bytes ${range}, expected 0-${chunk.end}`);
  }
}

async function expectCommitted(client: RegistryClient, response: Response, blob: BlobSource, what: string): Promise<void> {
  if (response.status !== 201) throw await client.failure(response, what);
  await drain(response);
  const stored = response.headers.get("docker-content-digest");
  if (stored && stored !== blob.digest) {
    throw new PushError(`${what}: the registry stored ${stored}, not ${blob.digest}`);
  }
}

// A failed session would otherwise hold storage on the registry until it expires.
async function abandon(client: RegistryClient, location: string): Promise<void> {
  try {
    const response = await client.send("DELETE", location);
    await drain(response);
  } catch {
    // The push already failed; its own error is the one to report.
  }
}
