/**
 * Uploads one blob, following regclient's scheme/reg/blob.go: one readable path per upload style,
 * with the resume logic next to the request that needs it.
 * - HEAD first (skip what is there), then a cross-repository mount when another repository of the
 *   registry is known to hold it.
 * - monolithic: one PUT when the blob is complete and fits in one request;
 * - chunked: equal-size PATCHes (serverless-registry turns them into R2 parts that must be equal),
 *   each sent as soon as its bytes exist, then an empty PUT with the digest;
 * - streamed: one PATCH that follows the file while a compressor still writes it (registries with no
 *   body limit), then the PUT.
 * A failed chunk is resumed where the registry says the upload stands, so a fault costs at most one
 * chunk; sessions are recorded so a killed run's next run continues them.
 */
import { PushError } from "../errors.ts";
import type { BlobFile } from "../layers/blob-file.ts";
import type { Logger } from "../log.ts";
import { ceilingOf, negotiateLimits, planUpload, type ChunkLimits } from "./chunks.ts";
import { NetworkError, type BodySource, type RegistryClient } from "./client.ts";
import { attemptsText, isTransientStatus, parseRetryAfter } from "./retry.ts";

/** Where upload sessions are kept between runs. */
export interface SessionStore {
  load(key: string): Promise<{ location: string; chunkSize: number; offset: number } | undefined>;
  save(key: string, state: { location: string; chunkSize: number; offset: number }): Promise<void>;
  drop(key: string): Promise<void>;
}

export interface UploadOptions {
  /** Names the blob in messages, e.g. `layer 2/5 sha256:0123456789ab`. */
  label: string;
  log: Logger;
  /** --chunk-size: a body limit the registry does not advertise. */
  chunkCap?: number;
  /** The digest, when known before the bytes are complete; else the file's final digest is used. */
  digest?: string;
  /** Names the upload for sessions kept between runs. */
  key?: string;
  sessions?: SessionStore;
  /** Repositories of this registry that may already hold the blob. */
  mountFrom?: string[];
  /** Look only: HEAD, open and cancel a session to learn the limits, and plan the chunks. */
  dryRun?: boolean;
  /** What is still writing a growing blob, for how it travels: "compressed" (default), "downloaded", "read". */
  growingAs?: string;
  /** The blob is missing: how it will travel ("in 4 chunks", "streamed as it is compressed"). */
  onStart?: (how: string | undefined, total: number | undefined) => void;
  /** Bytes of the blob the registry has been handed so far, and the chunk on its way. */
  /** Bytes handed over so far; while chunked, which chunk, and `confirmed` once the registry took it whole. */
  onProgress?: (bytes: number, chunk?: { index: number; count?: number; confirmed?: boolean }) => void;
  /** Awaited before the final PUT commits the blob (e.g. the compressed input matched its diff_id). */
  beforeCommit?: () => Promise<unknown>;
}

export interface UploadOutcome {
  status: "pushed" | "exists" | "mounted" | "absent";
  /** Chunks the blob went (or would go) in; 1 for one request. */
  chunks: number;
  /** Body bytes sent in all attempts, re-sent ones included. */
  bytesSent: number;
  /** The blob's size. */
  size: number;
  /** The chunk size, when chunked (or, for a dry run, when it would be). */
  chunkSize?: number;
  /** Where a resumed session stood when this run took it over. */
  resumedAt?: number;
  mountedFrom?: string;
}

const OCTET = "application/octet-stream";
// serverless-registry fails blobs over ~5 GiB when the upload completes (its issue #69).
const SERVERLESS_BLOB_LIMIT = 5 * 1024 ** 3;
// The final PUT of a chunked upload waits while the server assembles the parts: give it time.
const ASSEMBLY_MS_PER_GIB = 60_000;
// A blob still being compressed that ends below this goes in one request rather than a PATCH and a PUT.
// Small: until it is reached the link waits (zstd's first 1 MiB block makes about 300 kB).
const STREAM_START = 64 * 1024;

export async function uploadBlob(client: RegistryClient, repository: string, file: BlobFile, options: UploadOptions): Promise<UploadOutcome> {
  return new BlobUpload(client, repository, file, options).run();
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
  private readonly label: string;
  private bytesSent = 0;
  /** Bytes of the blob the registry has confirmed at most so far: faults count until it moves past. */
  private highWater = 0;
  private faults = 0;
  private restarts = 0;
  private rewinds = 0;
  private resumedAt?: number;
  private chunkCount = 1;

  constructor(
    private readonly client: RegistryClient,
    private readonly repository: string,
    private readonly file: BlobFile,
    private readonly options: UploadOptions,
  ) {
    this.label = options.label;
  }

  private outcome(status: UploadOutcome["status"], extra: Partial<UploadOutcome> = {}): UploadOutcome {
    const size = this.file.identity?.size ?? this.file.available;
    return {
      status,
      chunks: this.chunkCount,
      bytesSent: this.bytesSent,
      size,
      ...(this.resumedAt !== undefined ? { resumedAt: this.resumedAt } : {}),
      ...extra,
    };
  }

  async run(): Promise<UploadOutcome> {
    const known = this.options.digest ?? this.file.identity?.digest;
    if (known && (await this.exists(known))) return this.outcome("exists", { chunks: 0 });
    if (known && !this.options.dryRun) {
      for (const from of this.options.mountFrom ?? []) {
        if (from === this.repository) continue;
        if (await this.mount(known, from)) return this.outcome("mounted", { chunks: 0, mountedFrom: from });
        if (this.location) break; // the registry opened a normal session instead
      }
    }
    if (this.options.dryRun) return this.dryRun();
    if (!this.location && !(await this.resumeRecorded())) await this.open();
    try {
      await this.transfer();
      if (this.foundLate) {
        // The digest became known before any byte left, and the registry already holds the blob.
        await this.abandon(undefined);
        return this.outcome("exists", { chunks: 0 });
      }
      await this.complete();
      await this.forget();
      return this.outcome("pushed");
    } catch (error) {
      await this.abandon(error);
      throw error;
    }
  }

  // --- session handling ------------------------------------------------------------------------

  private async exists(digest: string): Promise<boolean> {
    const what = `${this.label}: checking whether the registry has it`;
    const head = await this.client.send("HEAD", `/v2/${this.repository}/blobs/${digest}`, { what });
    if (head.ok || head.status === 404) return head.ok;
    throw await this.client.failure(head, what);
  }

  /** `POST ?mount=&from=`: 201 mounted; 202 a normal session (kept for the upload); anything else ignored. */
  private async mount(digest: string, from: string): Promise<boolean> {
    const what = `${this.label}: mounting it from ${from}`;
    const target = `/v2/${this.repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
    let response: Response;
    try {
      response = await this.client.send("POST", target, { headers: { "Content-Length": "0" }, body: "", what });
    } catch (error) {
      if (error instanceof NetworkError) return false;
      throw error;
    }
    if (response.status === 201) {
      const stored = response.headers.get("docker-content-digest");
      if (stored && stored !== digest) {
        // serverless-registry answers a mount from a repository that holds only a link (itself mounted)
        // with the link's checksum; nothing proves what was mounted, so the blob is sent as usual, which
        // replaces whatever the mount left.
        this.options.log.warn(`${what}: the registry answered with digest ${stored}, not ${digest}; uploading the blob instead`);
        return false;
      }
      return true;
    }
    if (response.status === 202 && response.headers.get("location")) this.adopt(response);
    return false;
  }

  private async open(): Promise<void> {
    const what = `${this.label}: opening an upload session`;
    const opened = await this.client.send("POST", `/v2/${this.repository}/blobs/uploads/`, {
      headers: { "Content-Length": "0" },
      body: "",
      what,
    });
    if (opened.status !== 202) throw await this.client.failure(opened, what);
    this.adopt(opened);
  }

  /** Takes a session's Location and the chunk limits its headers advertise. */
  private adopt(response: Response): void {
    this.location = this.newest(response);
    const { limits, notices } = negotiateLimits(
      response.headers.get("oci-chunk-min-length"),
      response.headers.get("oci-chunk-max-length"),
      this.options.chunkCap,
    );
    this.limits = limits;
    for (const notice of notices) this.options.log.warn(`${this.label}: ${notice}`);
  }

  /** Continues a session a killed run recorded, if the registry still has it where the record says. */
  private async resumeRecorded(): Promise<boolean> {
    const { sessions, key } = this.options;
    if (!sessions || !key) return false;
    const record = await sessions.load(key);
    if (!record) return false;
    const registry = new URL(this.client.base).origin;
    if (!URL.canParse(record.location) || new URL(record.location).origin !== registry) {
      await sessions.drop(key);
      return false;
    }
    const what = `${this.label}: asking where the interrupted upload stands`;
    let status: Response;
    try {
      status = await this.client.send("GET", record.location, { what });
    } catch (error) {
      if (error instanceof NetworkError) return false;
      throw error;
    }
    const offset = uploadOffset(status.headers.get("range"));
    if (!(status.status === 204 || status.status === 202 || status.status === 200) || offset === undefined) {
      this.options.log.info(`${this.label}: the registry no longer has the interrupted upload; starting it again`);
      await sessions.drop(key);
      return false;
    }
    this.adopt(status);
    const ceiling = ceilingOf(this.limits);
    const fits = (ceiling === undefined || record.chunkSize <= ceiling) && (this.limits.min === undefined || record.chunkSize >= this.limits.min);
    // A run killed after its last PATCH left a session that only needs its final PUT.
    const whole = this.file.identity !== undefined && offset === this.file.identity.size;
    if (!fits || (offset % record.chunkSize !== 0 && !whole)) {
      this.options.log.info(`${this.label}: the interrupted upload cannot be continued with today's chunk limits; starting it again`);
      await this.abandon(undefined);
      await sessions.drop(key);
      return false;
    }
    this.resumedAt = offset;
    this.highWater = offset;
    this.resumeChunkSize = record.chunkSize;
    this.options.log.info(`${this.label}: resuming the interrupted upload at byte ${offset}`);
    return true;
  }

  private resumeChunkSize?: number;

  private async record(offset: number, chunkSize: number): Promise<void> {
    const { sessions, key } = this.options;
    if (sessions && key) await sessions.save(key, { location: this.location, chunkSize, offset });
  }

  private async forget(): Promise<void> {
    const { sessions, key } = this.options;
    if (sessions && key) await sessions.drop(key);
  }

  // --- transfer --------------------------------------------------------------------------------

  /** Set when a blob whose digest was unknown at the start turned out to be in the registry already. */
  private foundLate = false;

  /** A blob that finished (compressing, downloading) before any byte left is HEADed like any other. */
  private async presentNow(): Promise<boolean> {
    const final = this.file.identity;
    if (!final || this.options.digest !== undefined || this.resumedAt !== undefined) return false;
    this.foundLate = await this.exists(final.digest);
    return this.foundLate;
  }

  private async transfer(): Promise<void> {
    const ceiling = ceilingOf(this.limits);
    const serverless = this.limits.max !== undefined;
    const warnBig = (size: number) => {
      if (serverless && size > SERVERLESS_BLOB_LIMIT) {
        this.options.log.warn(`${this.label} is ${size} bytes: serverless-registry currently fails blobs over 5 GiB when the upload completes (its issue #69)`);
      }
    };
    if (this.resumedAt !== undefined && this.resumeChunkSize !== undefined) {
      this.options.onStart?.(`resumed at byte ${this.resumedAt}`, this.file.identity?.size);
      return this.chunked(this.resumeChunkSize, this.resumedAt);
    }
    if (ceiling === undefined) {
      // No limit: small or complete blobs in one request, growing ones streamed as they are written.
      await this.file.waitFor(STREAM_START, this.client.signal);
      const final = this.file.identity;
      if (final) {
        if (await this.presentNow()) return;
        this.options.onStart?.(undefined, final.size);
        return this.monolithic(final.size);
      }
      this.options.onStart?.(`streamed as it is ${this.options.growingAs ?? "compressed"}`, undefined);
      return this.streamed();
    }
    const chunkSize = this.chunkSizeFor(ceiling);
    await this.file.waitFor(chunkSize + 2, this.client.signal);
    const final = this.file.identity;
    if (final && (await this.presentNow())) return;
    if (final) warnBig(final.size);
    if (final && final.size <= ceiling) {
      this.options.onStart?.(undefined, final.size);
      return this.monolithic(final.size);
    }
    if (final) {
      const plan = this.plan(final.size);
      if (plan.kind === "chunked") {
        this.chunkCount = plan.chunks.length;
        this.options.onStart?.(`in ${plan.chunks.length} chunks`, final.size);
        return this.chunked(plan.chunkSize, 0);
      }
    }
    this.options.onStart?.(`in chunks of ${chunkSize} bytes, each sent as soon as it is ${this.options.growingAs ?? "compressed"}`, undefined);
    return this.chunked(chunkSize, 0);
  }

  private chunkSizeFor(ceiling: number): number {
    if (this.limits.min !== undefined && ceiling < this.limits.min) {
      throw new PushError(
        `${this.label}: the largest request body allowed (${ceiling} bytes${this.options.chunkCap !== undefined ? ", from --chunk-size" : ""}) is below the registry's minimum chunk of ${this.limits.min} bytes` +
          (this.options.chunkCap !== undefined && (this.limits.max ?? Infinity) >= this.limits.min ? `: use --chunk-size ${this.limits.min} or more` : ""),
      );
    }
    return ceiling;
  }

  private plan(size: number) {
    try {
      return planUpload(size, this.limits);
    } catch (error) {
      throw new PushError(`${this.label}: ${(error as Error).message}`);
    }
  }

  /** One PUT with the whole blob. A failed attempt may have left bytes in its session, so each retry opens a new one. */
  private async monolithic(size: number): Promise<void> {
    const what = `${this.label}: uploading in one request`;
    const digest = (await this.file.done).digest;
    await this.options.beforeCommit?.();
    for (;;) {
      let reason: string;
      let wait: number | undefined;
      let sent = 0;
      try {
        const put = await this.client.send("PUT", withDigest(this.location, digest), {
          headers: { "Content-Type": OCTET },
          body: this.body(0, size),
          what,
          retry: false,
          onProgress: (n) => {
            sent = n;
            this.options.onProgress?.(n);
          },
        });
        this.bytesSent += sent;
        if (put.status === 201) return this.committed(put, what, digest);
        if (!isTransientStatus(put.status)) throw await this.refused(put, what, size);
        reason = `HTTP ${put.status}`;
        wait = parseRetryAfter(put.headers.get("retry-after"), Date.now());
      } catch (error) {
        this.bytesSent += sent;
        reason = this.recoverable(error);
      }
      // The registry may have stored the blob and only its answer was lost: one HEAD saves sending it again.
      if (await this.exists(digest)) {
        this.committedAlready = true;
        return;
      }
      await this.pause(what, reason, wait, "in a new session");
      await this.abandon(undefined);
      await this.open();
    }
  }

  /**
   * Equal chunks of `chunkSize` from `offset`, each sent once its bytes exist (and, while the blob
   * grows, once at least two more bytes follow it, so the last chunk is never a single byte, which
   * serverless-registry refuses).
   */
  private async chunked(chunkSize: number, offset: number): Promise<void> {
    for (;;) {
      await this.file.waitFor(offset + chunkSize + 2, this.client.signal);
      const final = this.file.identity;
      if (final && offset >= final.size) return;
      let end = offset + chunkSize;
      if (final) {
        const remaining = final.size - offset;
        if (remaining <= chunkSize) end = final.size;
        else if (remaining % chunkSize === 1) {
          // The blob ended one byte past a chunk boundary: only a new session with another chunk size works.
          return this.restartWith(final.size, "the blob ended one byte into a chunk");
        }
        this.chunkCount = Math.max(this.chunkCount, Math.ceil(final.size / chunkSize));
      } else {
        this.chunkCount = Math.max(this.chunkCount, Math.ceil(offset / chunkSize) + 2);
      }
      const index = Math.floor(offset / chunkSize);
      const next = await this.sendChunk(offset, end, index, chunkSize);
      if (next === undefined) continue; // resumed: `offset` unchanged or moved by the registry
      offset = next;
    }
  }

  /** Sends bytes [start, end) as one PATCH; resolves with the next offset to send from. */
  private async sendChunk(start: number, end: number, index: number, chunkSize: number): Promise<number | undefined> {
    const count = this.file.identity ? Math.ceil(this.file.identity.size / chunkSize) : undefined;
    const of = count ? `/${count}` : "";
    const what = `${this.label}: chunk ${index + 1}${of} (bytes ${start}-${end - 1})`;
    let reason: string;
    let wait: number | undefined;
    let sent = 0;
    try {
      const patch = await this.client.send("PATCH", this.location, {
        headers: { "Content-Type": OCTET, "Content-Range": `${start}-${end - 1}` },
        body: this.body(start, end),
        what,
        retry: false,
        onProgress: (n) => {
          sent = n;
          this.options.onProgress?.(start + n, { index: index + 1, count });
        },
      });
      this.bytesSent += sent;
      if (patch.status === 202) {
        this.location = this.newest(patch);
        const offset = uploadOffset(patch.headers.get("range"));
        if (offset === undefined || offset === end) {
          // The chunk's last word is where the registry stands, whatever the body's read-ahead reported.
          this.options.onProgress?.(end, { index: index + 1, count, confirmed: true });
          this.progressed(end);
          await this.record(end, chunkSize);
          return end;
        }
        reason = `the registry reports it holds bytes ${patch.headers.get("range")}, expected 0-${end - 1}`;
      } else if (isTransientStatus(patch.status) || patch.status === 416 || patch.status === 404) {
        // A 416 carries serverless-registry's current state: follow its Location.
        if (patch.headers.get("location")) this.location = this.newest(patch);
        reason = `HTTP ${patch.status}`;
        wait = parseRetryAfter(patch.headers.get("retry-after"), Date.now());
      } else {
        throw await this.refused(patch, what, end - start);
      }
    } catch (error) {
      this.bytesSent += sent;
      reason = this.recoverable(error);
    }
    await this.pause(what, reason, wait, "from where the registry stands");
    return this.whereNow(chunkSize);
  }

  /**
   * One PATCH whose body follows the file while it is written (no Content-Length: chunked transfer
   * encoding), for registries without a body limit; a fault continues from the registry's offset.
   */
  private async streamed(): Promise<void> {
    let offset = 0;
    for (;;) {
      const what = `${this.label}: streaming the upload from byte ${offset}`;
      let reason: string;
      let wait: number | undefined;
      let sent = 0;
      try {
        const from = offset;
        const patch = await this.client.send("PATCH", this.location, {
          headers: { "Content-Type": OCTET },
          body: this.body(from, undefined),
          what,
          retry: false,
          onProgress: (n) => {
            sent = n;
            this.options.onProgress?.(from + n);
          },
        });
        this.bytesSent += sent;
        const size = this.file.identity?.size;
        if (patch.status === 202) {
          this.location = this.newest(patch);
          const confirmed = uploadOffset(patch.headers.get("range"));
          if (size !== undefined && (confirmed === undefined || confirmed === size)) return this.progressed(size);
          reason = `the registry reports it holds bytes ${patch.headers.get("range")}, expected 0-${(size ?? 0) - 1}`;
        } else if (isTransientStatus(patch.status) || patch.status === 404 || patch.status === 416) {
          reason = `HTTP ${patch.status}`;
          wait = parseRetryAfter(patch.headers.get("retry-after"), Date.now());
        } else {
          throw await this.refused(patch, what, sent);
        }
      } catch (error) {
        this.bytesSent += sent;
        reason = this.recoverable(error);
      }
      await this.pause(what, reason, wait, "from where the registry stands");
      const next = await this.whereNow(undefined);
      offset = next ?? offset;
    }
  }

  /**
   * Asks the registry how many bytes it holds and picks where to continue. An offset that is not a
   * chunk boundary is fine for registries without part rules (distribution appends what comes); for
   * serverless-registry's equal R2 parts the blob starts again in a new session.
   */
  private async whereNow(chunkSize: number | undefined): Promise<number | undefined> {
    const what = `${this.label}: asking where the upload stands`;
    const status = await this.client.send("GET", this.location, { what });
    if (status.status === 404) return this.restart("the registry lost the upload session");
    if (status.status !== 204 && status.status !== 200 && status.status !== 202) throw await this.client.failure(status, what);
    this.location = this.newest(status);
    const offset = uploadOffset(status.headers.get("range")) ?? 0;
    if (offset > this.file.available && !this.file.identity) await this.file.waitFor(offset, this.client.signal);
    const size = this.file.identity?.size;
    if (size !== undefined && offset > size) return this.restart(`the registry holds ${offset} bytes of a ${size}-byte blob`);
    if (offset < this.highWater) this.rewound(offset);
    this.progressed(offset);
    if (chunkSize === undefined || offset % chunkSize === 0 || (this.limits.min === undefined && this.limits.max === undefined)) return offset;
    return this.restart(`the registry holds ${offset} bytes, not a whole number of chunks`);
  }

  /**
   * A registry that loses bytes it had confirmed could trade one new chunk for a re-send of all those
   * before it, again and again, while each new high mark resets the fault count: rewinds never reset.
   */
  private rewound(offset: number): void {
    if (++this.rewinds > this.client.retries) {
      throw new PushError(
        `${this.label}: the registry lost bytes it had confirmed (back to byte ${offset} after byte ${this.highWater}), ${this.rewinds} times: giving up`,
      );
    }
  }

  /** Counts progress: only bytes past the most ever confirmed let the fault count start over. */
  private progressed(offset: number): void {
    if (offset > this.highWater) {
      this.highWater = offset;
      this.faults = 0;
    }
  }

  private async restart(why: string): Promise<number> {
    // Each restart re-sends the blob, so they count against --retries on their own.
    if (++this.restarts > this.client.retries) {
      throw new PushError(`${this.label}: ${why} (gave up after ${this.restarts} upload ${plural(this.restarts, "session")})`);
    }
    this.options.log.warn(`${this.label}: ${why}; uploading the blob again in a new session`);
    await this.abandon(undefined);
    await this.forget();
    await this.open();
    this.highWater = 0;
    return 0;
  }

  private async restartWith(size: number, why: string): Promise<void> {
    await this.restart(why);
    const plan = this.plan(size);
    if (plan.kind === "monolithic") return this.monolithic(size);
    this.chunkCount = plan.chunks.length;
    return this.chunked(plan.chunkSize, 0);
  }

  /** The empty PUT that commits the parts; if its answer is lost or a 5xx, HEAD tells whether it landed. */
  private async complete(): Promise<void> {
    if (this.committedAlready) return;
    const what = `${this.label}: completing the ${this.chunkCount > 1 || this.resumedAt !== undefined ? "chunked " : "streamed "}upload`;
    await this.options.beforeCommit?.();
    const { digest, size } = await this.file.done;
    for (;;) {
      let reason: string;
      let wait: number | undefined;
      try {
        const put = await this.client.send("PUT", withDigest(this.location, digest), {
          // serverless-registry ignores this body once chunks were sent, so it must be empty.
          headers: { "Content-Type": OCTET, "Content-Length": "0" },
          body: "",
          what,
          retry: false,
          // Never less than --timeout, nor than the time the registry may need to assemble the parts.
          idleTimeoutMs: Math.max(this.client.idleTimeoutMs, 60_000, (size / 1024 ** 3) * ASSEMBLY_MS_PER_GIB),
        });
        if (put.status === 201) return this.committed(put, what, digest);
        if (!isTransientStatus(put.status)) {
          if (this.resumedAt !== undefined && put.status === 400) {
            // A resumed session whose earlier bytes were not these: start clean.
            await this.restart("the resumed upload does not complete to this blob");
            this.resumedAt = undefined;
            return this.completeAfterRestart(size);
          }
          throw await this.client.failure(put, what);
        }
        reason = `HTTP ${put.status}`;
        wait = parseRetryAfter(put.headers.get("retry-after"), Date.now());
      } catch (error) {
        reason = this.recoverable(error);
      }
      // serverless-registry answers 500 to a repeated PUT once it completed the first: ask before retrying.
      if (await this.exists(digest)) return;
      if (this.resumedAt !== undefined) {
        // A resumed session that does not complete to this blob (serverless-registry answers 500, not
        // 400, to a digest that does not match its parts): start clean once, in a new session.
        await this.restart(`the resumed upload does not complete to this blob (${reason})`);
        this.resumedAt = undefined;
        return this.completeAfterRestart(size);
      }
      await this.pause(what, reason, wait, "");
    }
  }

  private committedAlready = false;

  private async completeAfterRestart(size: number): Promise<void> {
    const plan = this.plan(size);
    if (plan.kind === "monolithic") {
      await this.monolithic(size);
      this.committedAlready = true;
      return;
    }
    this.chunkCount = plan.chunks.length;
    await this.chunked(plan.chunkSize, 0);
    return this.complete();
  }

  private committed(response: Response, what: string, digest: string): void {
    const stored = response.headers.get("docker-content-digest");
    if (stored && stored !== digest) throw new PushError(`${what}: the registry stored ${stored}, not ${digest}`);
    this.committedAlready = true;
  }

  private async dryRun(): Promise<UploadOutcome> {
    const { digest, size } = await this.file.done;
    if (this.options.digest === undefined && (await this.exists(digest))) return this.outcome("exists", { chunks: 0 });
    await this.open();
    await this.abandon(undefined);
    const ceiling = ceilingOf(this.limits);
    const plan = ceiling === undefined ? undefined : this.plan(size);
    this.chunkCount = plan?.kind === "chunked" ? plan.chunks.length : 1;
    return this.outcome("absent", { size, ...(plan?.kind === "chunked" ? { chunkSize: plan.chunkSize } : {}) });
  }

  // --- helpers ---------------------------------------------------------------------------------

  /** Bytes [start, end) of the file (to its final end when `end` is undefined), as a request body. */
  private body(start: number, end: number | undefined): BodySource {
    const file = this.file;
    const signal = this.client.signal;
    return {
      ...(end !== undefined ? { length: end - start } : {}),
      open: (hooks) => file.stream(start, end, { hooks, signal }),
    };
  }

  /** A refusal; a 413 names a --chunk-size below the body that was refused. */
  private refused(response: Response, what: string, bodyBytes: number): Promise<PushError> {
    return this.client.failure(response, what, { bodyBytes });
  }

  /** A request that got no answer may be retried; anything else (an abort, a bug) goes up as it is. */
  private recoverable(error: unknown): string {
    // The body's own producer failed (a compressor whose input was not the layer, a cut download):
    // no retry can help, and its error is the one to report.
    if (this.file.failed) throw this.file.failed;
    if (error instanceof NetworkError) return error.reason;
    throw error;
  }

  /** Counts a fault against --retries, reports it, and waits before the next attempt. */
  private async pause(what: string, reason: string, retryAfter: number | undefined, how: string): Promise<void> {
    const retries = this.client.retries;
    const fault = this.faults++;
    if (fault >= retries) throw new PushError(`${what}: ${reason} (gave up after ${attemptsText(fault + 1)})`);
    const wait = this.client.backoff(fault + 1, retryAfter);
    this.options.log.warn(`${what}: ${reason}; retrying${how ? ` ${how}` : ""} in ${(wait / 1000).toFixed(1)} s (attempt ${fault + 2} of ${retries + 1})`);
    await this.client.sleep(wait);
  }

  /** The newest Location, resolved against the URL that answered (it may be path-relative). */
  private newest(response: Response): string {
    const location = response.headers.get("location");
    if (location) return response.url ? new URL(location, response.url).toString() : this.client.url(location);
    if (this.location) return this.location;
    throw new PushError(`${this.label}: the registry answered ${response.status} without a Location header`);
  }

  /**
   * A session we give up on would hold storage on the registry until it expires: DELETE it, unless a
   * later run can still continue it (a chunked upload that failed for a reason other than Ctrl-C).
   */
  private async abandon(error: unknown): Promise<void> {
    if (!this.location) return;
    const keep =
      error !== undefined && !this.client.signal?.aborted && this.highWater > 0 && this.options.sessions !== undefined && this.options.key !== undefined;
    if (keep) return;
    const location = this.location;
    this.location = "";
    await this.forget();
    try {
      await this.client.send("DELETE", location, { retry: false, detached: true, idleTimeoutMs: 5000 });
    } catch {
      // The push already failed or moves on in a new session; the session will expire on its own.
    }
  }
}

function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}
