import { planUpload, type Chunk, type ChunkLimits, type UploadPlan } from "./chunks.ts";
import { PushError } from "../errors.ts";
import type { BlobSource } from "../push/prepare-layer.ts";
import type { Logger } from "../log.ts";
import { NetworkError, type RegistryClient } from "./client.ts";
import { isTransientStatus, parseRetryAfter } from "./retry.ts";

export interface UploadOptions {
  /** --chunk-size: a body limit the registry does not advertise. */
  chunkCap?: number;
  /** Names the blob in messages, e.g. `layer 2/5 sha256:0123456789ab`. */
  label: string;
  log: Logger;
  /** Bytes of the blob the registry has been handed so far, and the chunk on its way. */
  onProgress?: (bytes: number, chunk?: { index: number; count: number }) => void;
  /** Called once the blob is known to be missing, before any byte goes (e.g. to show "uploading"). */
  onStart?: (plan: UploadPlan) => void;
  /** Look only: HEAD, and say how the blob would travel. */
  dryRun?: boolean;
}

export interface UploadOutcome {
  status: "pushed" | "exists" | "absent";
  /** Requests that carried the blob's bytes, retries included: 1 for a clean monolithic PUT. */
  requests: number;
  /** Chunks of the plan (1 when monolithic). */
  chunks: number;
}

const OCTET = "application/octet-stream";
// serverless-registry fails blobs over ~5 GiB when the upload completes (its issue #69).
const SERVERLESS_BLOB_LIMIT = 5 * 1024 ** 3;
// The final PUT of a chunked upload waits while the server assembles the parts: give it time.
const ASSEMBLY_MS_PER_GIB = 60_000;

/**
 * Pushes one blob: HEAD to skip what is there, POST to open a session, then one PUT when the blob
 * fits in a request, or equal-size PATCH chunks followed by an empty PUT. The registry's newest
 * `Location` is always used and the `Range` it returns is checked after every chunk. A failed chunk
 * is resumed from where the server says the upload stands, so a fault costs at most one chunk.
 */
export async function pushBlob(
  client: RegistryClient,
  repository: string,
  blob: BlobSource,
  options: UploadOptions,
): Promise<UploadOutcome> {
  return new BlobUpload(client, repository, blob, options).run();
}

/** Appends the digest to a Location, keeping its query (serverless-registry's `_stateHash`) as given. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

/**
 * Where the server says an upload stands, from a `Range: 0-<end>` header: the next byte it expects.
 * `0-0` means nothing yet (distribution cannot say one byte, and we never send one-byte chunks);
 * serverless-registry writes `0--1`.
 */
export function uploadOffset(range: string | null): number | undefined {
  const match = /^\s*(?:bytes=)?0-(-?\d+)\s*$/.exec(range ?? "");
  if (!match) return undefined;
  const end = Number(match[1]);
  return end <= 0 ? 0 : end + 1;
}

class BlobUpload {
  private location = "";
  private limits: ChunkLimits = {};
  private requests = 0;
  private restarts = 0;
  private readonly label: string;

  constructor(
    private readonly client: RegistryClient,
    private readonly repository: string,
    private readonly blob: BlobSource,
    private readonly options: UploadOptions,
  ) {
    this.label = options.label;
  }

  async run(): Promise<UploadOutcome> {
    if (await this.exists()) return { status: "exists", requests: 0, chunks: 0 };
    if (this.options.dryRun) {
      // No session is opened, so only --chunk-size is known; the registry may advertise less.
      this.limits = { cap: this.options.chunkCap };
      return { status: "absent", requests: 0, chunks: chunkCount(this.plan()) };
    }
    await this.open();
    try {
      const plan = this.plan();
      this.options.onStart?.(plan);
      if (this.limits.max !== undefined && this.blob.size > SERVERLESS_BLOB_LIMIT) {
        this.options.log.warn(
          `${this.label} is ${this.blob.size} bytes: serverless-registry currently fails blobs over 5 GiB when the upload completes (its issue #69)`,
        );
      }
      if (plan.kind === "monolithic") await this.monolithic();
      else await this.chunked(plan.chunks, plan.chunkSize);
      return { status: "pushed", requests: this.requests, chunks: chunkCount(plan) };
    } catch (error) {
      await this.abandon();
      throw error;
    }
  }

  private async exists(): Promise<boolean> {
    const head = await this.client.send("HEAD", `/v2/${this.repository}/blobs/${this.blob.digest}`, {
      what: `${this.label}: checking whether the registry has it`,
    });
    if (head.ok || head.status === 404) return head.ok;
    throw await this.client.failure(head, `${this.label}: checking whether the registry has it`);
  }

  private async open(): Promise<void> {
    const what = `${this.label}: opening an upload session`;
    const opened = await this.client.send("POST", `/v2/${this.repository}/blobs/uploads/`, {
      headers: { "Content-Length": "0" },
      body: "",
      what,
    });
    if (opened.status !== 202) throw await this.client.failure(opened, what);
    this.location = this.newest(opened);
    this.limits = {
      min: headerNumber(opened, "oci-chunk-min-length"),
      max: headerNumber(opened, "oci-chunk-max-length"),
      cap: this.options.chunkCap,
    };
  }

  private plan() {
    try {
      return planUpload(this.blob.size, this.limits);
    } catch (error) {
      throw new PushError(`${this.label}: ${(error as Error).message}`);
    }
  }

  /** One PUT with the whole blob. A failed attempt may have left bytes in its session, so each retry opens a new one. */
  private async monolithic(): Promise<void> {
    const what = `${this.label}: uploading in one request`;
    for (let fault = 0; ; fault++) {
      let reason: string;
      let wait: number | undefined;
      try {
        this.requests++;
        const put = await this.client.send("PUT", withDigest(this.location, this.blob.digest), {
          headers: { "Content-Type": OCTET },
          body: this.blob.body(),
          what,
          retry: false,
          onProgress: this.options.onProgress,
        });
        if (put.status === 201) return this.committed(put, what);
        if (!isTransientStatus(put.status)) throw await this.client.failure(put, what);
        reason = `HTTP ${put.status}`;
        wait = parseRetryAfter(put.headers.get("retry-after"), Date.now());
      } catch (error) {
        reason = this.recoverable(error);
      }
      await this.pause(fault, what, reason, wait, "in a new session");
      await this.abandon();
      await this.open();
    }
  }

  private async chunked(planned: Chunk[], chunkSize: number): Promise<void> {
    let chunks = planned;
    let faults = 0;
    for (let i = 0; i < chunks.length; ) {
      const chunk = chunks[i] as Chunk;
      const what = `${this.label}: chunk ${i + 1}/${chunks.length} (bytes ${chunk.start}-${chunk.end})`;
      let reason: string;
      let wait: number | undefined;
      try {
        this.requests++;
        const patch = await this.client.send("PATCH", this.location, {
          headers: { "Content-Type": OCTET, "Content-Range": `${chunk.start}-${chunk.end}` },
          body: this.blob.body().slice(chunk.start, chunk.end + 1),
          what,
          retry: false,
          onProgress: (sent) => this.options.onProgress?.(chunk.start + sent, { index: i + 1, count: chunks.length }),
        });
        if (patch.status === 202) {
          this.location = this.newest(patch);
          const offset = uploadOffset(patch.headers.get("range"));
          if (offset === undefined || offset === chunk.end + 1) {
            i++;
            faults = 0;
            // What the registry confirmed: the bytes read so far run ahead of it by the socket buffers.
            if (i < chunks.length) this.options.onProgress?.(chunk.end + 1, { index: i + 1, count: chunks.length });
            continue;
          }
          reason = `the registry reports it holds bytes ${patch.headers.get("range")}, expected 0-${chunk.end}`;
        } else if (isTransientStatus(patch.status) || patch.status === 416 || patch.status === 404) {
          // A 416 carries serverless-registry's current state: follow its Location.
          this.location = this.newest(patch);
          reason = `HTTP ${patch.status}`;
          wait = parseRetryAfter(patch.headers.get("retry-after"), Date.now());
        } else {
          throw await this.client.failure(patch, what);
        }
      } catch (error) {
        reason = this.recoverable(error);
      }
      await this.pause(faults++, what, reason, wait, "from where the registry stands");
      ({ chunks, index: i } = await this.resume(planned, chunks, chunkSize));
    }
    await this.complete();
  }

  /**
   * Asks the server how many bytes it holds and picks the chunk to continue with. Where the offset
   * is not a chunk boundary, registries that advertise part rules (serverless-registry's equal R2
   * parts) need the blob again from the start in a new session; others simply continue from there.
   */
  private async resume(planned: Chunk[], chunks: Chunk[], chunkSize: number): Promise<{ chunks: Chunk[]; index: number }> {
    const what = `${this.label}: asking where the upload stands`;
    const status = await this.client.send("GET", this.location, { what });
    if (status.status !== 204 && status.status !== 200 && status.status !== 202 && status.status !== 404) {
      throw await this.client.failure(status, what);
    }
    if (status.status === 404) return this.restart(planned, "the registry lost the upload session");
    this.location = this.newest(status);
    const offset = uploadOffset(status.headers.get("range")) ?? 0;
    if (offset === this.blob.size) return { chunks, index: chunks.length };
    const index = chunks.findIndex((c) => c.start === offset);
    if (index !== -1) return { chunks, index };
    if (this.limits.min === undefined && this.limits.max === undefined) {
      const rest: Chunk[] = [];
      for (let start = offset; start < this.blob.size; start += chunkSize) {
        rest.push({ start, end: Math.min(start + chunkSize, this.blob.size) - 1 });
      }
      return { chunks: rest, index: 0 };
    }
    return this.restart(planned, `the registry holds ${offset} bytes, not a whole number of chunks`);
  }

  private async restart(planned: Chunk[], why: string): Promise<{ chunks: Chunk[]; index: number }> {
    // Each restart re-sends the blob, so they count against --retries on their own.
    if (++this.restarts > this.client.retries) {
      throw new PushError(`${this.label}: ${why} (gave up after ${this.restarts} upload sessions)`);
    }
    this.options.log.warn(`${this.label}: ${why}; uploading the blob again in a new session`);
    await this.abandon();
    await this.open();
    return { chunks: planned, index: 0 };
  }

  /** The empty PUT that commits the parts; if its answer was lost, the blob may be there anyway. */
  private async complete(): Promise<void> {
    const what = `${this.label}: completing the chunked upload`;
    let put: Response;
    try {
      put = await this.client.send("PUT", withDigest(this.location, this.blob.digest), {
        // serverless-registry ignores this body once chunks were sent, so it must be empty.
        headers: { "Content-Type": OCTET, "Content-Length": "0" },
        body: "",
        what,
        idleTimeoutMs: Math.max(60_000, (this.blob.size / 1024 ** 3) * ASSEMBLY_MS_PER_GIB),
      });
    } catch (error) {
      if (error instanceof NetworkError && (await this.exists())) return;
      throw error;
    }
    if (put.status === 201) return this.committed(put, what);
    if (await this.exists()) return;
    throw await this.client.failure(put, what);
  }

  private committed(response: Response, what: string): void {
    const stored = response.headers.get("docker-content-digest");
    if (stored && stored !== this.blob.digest) {
      throw new PushError(`${what}: the registry stored ${stored}, not ${this.blob.digest}`);
    }
  }

  /** A request that got no answer may be retried; anything else (an abort, a bug) goes up as it is. */
  private recoverable(error: unknown): string {
    if (error instanceof NetworkError) return error.reason;
    throw error;
  }

  /** Counts a fault against --retries, reports it, and waits before the next attempt. */
  private async pause(fault: number, what: string, reason: string, retryAfter: number | undefined, how: string): Promise<void> {
    const retries = this.client.retries;
    if (fault >= retries) throw new PushError(`${what}: ${reason} (gave up after ${fault + 1} attempts)`);
    const wait = this.client.backoff(fault + 1, retryAfter);
    this.options.log.warn(`${what}: ${reason}; retrying ${how} in ${(wait / 1000).toFixed(1)} s (attempt ${fault + 2} of ${retries + 1})`);
    await this.client.sleep(wait);
  }

  /** The newest Location, resolved against the URL that answered (it may be path-relative). */
  private newest(response: Response): string {
    const location = response.headers.get("location");
    if (location) return response.url ? new URL(location, response.url).toString() : location;
    if (this.location) return this.location;
    throw new PushError(`${this.label}: the registry answered ${response.status} without a Location header`);
  }

  // A failed session would otherwise hold storage on the registry until it expires.
  private async abandon(): Promise<void> {
    if (!this.location) return;
    const location = this.location;
    this.location = "";
    try {
      await this.client.send("DELETE", location, { retry: false, detached: true, idleTimeoutMs: 5000 });
    } catch {
      // The push already failed or moves on in a new session; the session will expire on its own.
    }
  }
}

function chunkCount(plan: UploadPlan): number {
  return plan.kind === "monolithic" ? 1 : plan.chunks.length;
}

function headerNumber(response: Response, name: string): number | undefined {
  const value = Number.parseInt(response.headers.get(name) ?? "", 10);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}
