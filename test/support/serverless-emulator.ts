/**
 * A strict, in-process emulation of Cloudflare's serverless-registry (a Worker on R2) behind Cloudflare's
 * edge request-body limit, for tests. Debian's docker-registry ignores Content-Range and chunk sizes, so
 * this is where chunk rules get proven. Behaviour follows /work/shared/REGISTRY-NOTES.md and the
 * serverless-registry source: where the real server silently accepts something that breaks later
 * (a PUT body after PATCHes, a wrong descriptor size), the emulator still answers like the real one but
 * records a violation, so a test can assert `violations` is empty after a correct push.
 */
import { randomBytes, randomUUID } from "node:crypto";

export interface EmulatorOptions {
  /** Advertised OCI-Chunk-Min-Length, and the R2 minimum part size enforced; default 5 MiB. */
  minChunk?: number;
  /** Advertised OCI-Chunk-Max-Length; default 6 MiB (small so tests are fast). */
  maxChunk?: number;
  /** Cloudflare edge body limit: any larger request body gets a 413 HTML page; default = maxChunk. */
  edgeLimit?: number;
  /** Basic auth is required on every route (incl. GET /v2/) unless this is ""; default "user". */
  username?: string;
  /** Default "secret". */
  password?: string;
  /**
   * A pull-only user, like serverless-registry's READONLY_USERNAME/READONLY_PASSWORD: GET and HEAD
   * pass; anything else gets the same 401 as bad credentials (its verifyPayload refuses the request).
   */
  readonlyUsername?: string;
  readonlyPassword?: string;
  /** Default true; false = behave like a proxy-limited registry that sends no chunk headers. */
  advertiseChunkHeaders?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** The query string without its leading "?". */
  query: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  bodyBytes: number;
  /** What was answered; 0 when the client went away before its body was complete (nothing was answered). */
  status: number;
  /** Wall-clock ms (Date.now()) when the request line and headers arrived, before its body was read. */
  startedAt: number;
  /** Wall-clock ms when the answer was made (or the body broke off). */
  endedAt: number;
}

export interface Emulator {
  /** "http://127.0.0.1:<port>" */
  url: string;
  /** "127.0.0.1:<port>" */
  host: string;
  /**
   * Every request, in the order they ended, with the status answered. A request whose body broke off
   * (the client was killed mid-PATCH) is recorded too, with status 0 and the body bytes that arrived.
   */
  requests: RecordedRequest[];
  /**
   * Resolves with the first recorded request (already recorded, or recorded later) for which `match`
   * holds; rejects after `timeoutMs` (default 60 s). Lets a test act on an event instead of sleeping.
   */
  waitForRequest(match: (request: RecordedRequest, index: number, all: RecordedRequest[]) => boolean, timeoutMs?: number): Promise<RecordedRequest>;
  /** Like waitForRequest(), but called when a request's headers arrive, before its body is read. */
  waitForArrival(match: (request: { method: string; path: string; query: string; startedAt: number }) => boolean, timeoutMs?: number): Promise<void>;
  /** One human-readable line per rule a client broke, prefixed with the request line. */
  violations: string[];
  /** Committed blobs by digest ("sha256:<hex>"). */
  blobs: Map<string, Uint8Array>;
  /** Stored manifests by "<name>:<tag>" and "<name>@<digest>". */
  manifests: Map<string, { contentType: string; bytes: Uint8Array }>;
  stop(): Promise<void>;
}

const MiB = 1024 * 1024;
const OCTET_STREAM = "application/octet-stream";
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;
/** Bun's own limit must never be what answers: the emulated edge decides. */
const BUN_BODY_LIMIT = 2 ** 40;

type Settings = Required<Omit<EmulatorOptions, "readonlyUsername" | "readonlyPassword">> & Pick<EmulatorOptions, "readonlyUsername" | "readonlyPassword">;

interface UploadSession {
  name: string;
  uuid: string;
  /** Rotated on every PATCH, as the real server re-encodes its state: older Locations go stale. */
  stateHash: string;
  /** Each PATCH body becomes one R2 multipart part. */
  parts: Uint8Array[];
  received: number;
}

/**
 * What a repository holds for a digest: its own object, or the link object a cross-repository mount
 * writes. HEAD reports the link object's own size and checksum (a real-server quirk); GET follows it.
 */
type RepoBlob = { kind: "object" } | { kind: "link"; target: string };

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

type ParsedManifest = { kind: "image"; blobs: Descriptor[] } | { kind: "index"; manifests: Descriptor[] };

interface RequestContext {
  method: string;
  url: URL;
  headers: Headers;
  body: Uint8Array;
  violate(message: string): void;
}

type Handler = (ctx: RequestContext, name: string, ref: string) => Response;

interface Route {
  methods: string[];
  pattern: RegExp;
  handler: Handler;
}

export async function startServerlessEmulator(opts: EmulatorOptions = {}): Promise<Emulator> {
  const maxChunk = opts.maxChunk ?? 6 * MiB;
  const registry = new ServerlessRegistry({
    minChunk: opts.minChunk ?? 5 * MiB,
    maxChunk,
    edgeLimit: opts.edgeLimit ?? maxChunk,
    username: opts.username ?? "user",
    password: opts.password ?? "secret",
    readonlyUsername: opts.readonlyUsername,
    readonlyPassword: opts.readonlyPassword,
    advertiseChunkHeaders: opts.advertiseChunkHeaders ?? true,
  });
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    maxRequestBodySize: BUN_BODY_LIMIT,
    fetch: (req) => registry.handle(req),
  });
  const host = `127.0.0.1:${server.port}`;
  return {
    url: `http://${host}`,
    host,
    requests: registry.requests,
    waitForRequest: (match, timeoutMs = 60_000) => registry.waitFor("end", match, timeoutMs),
    waitForArrival: (match, timeoutMs = 60_000) => registry.waitFor("start", match, timeoutMs).then(() => undefined),
    violations: registry.violations,
    blobs: registry.blobs,
    manifests: registry.manifests,
    stop: () => server.stop(true),
  };
}

class ServerlessRegistry {
  readonly requests: RecordedRequest[] = [];
  readonly violations: string[] = [];
  readonly blobs = new Map<string, Uint8Array>();
  readonly manifests = new Map<string, { contentType: string; bytes: Uint8Array }>();
  /** Keyed by "<name>@<digest>": blobs live per repository on the real server, not globally. */
  private readonly repoBlobs = new Map<string, RepoBlob>();
  private readonly sessions = new Map<string, UploadSession>();
  private readonly listeners = new Set<{ on: "start" | "end"; check: (request: RecordedRequest) => boolean }>();

  private readonly routes: Route[] = [
    { methods: ["GET"], pattern: /^\/v2\/$/, handler: () => empty(200) },
    {
      methods: ["POST"],
      pattern: /^\/v2\/(.+)\/blobs\/uploads\/?$/,
      handler: (ctx, name) => this.startUpload(ctx, name),
    },
    {
      methods: ["GET", "PATCH", "PUT", "DELETE"],
      pattern: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/,
      handler: (ctx, name, uuid) => this.sessionRoute(ctx, name, uuid),
    },
    {
      methods: ["GET", "HEAD"],
      pattern: /^\/v2\/(.+)\/blobs\/([^/]+)$/,
      handler: (ctx, name, digest) => this.getBlob(ctx, name, digest),
    },
    {
      methods: ["GET", "HEAD", "PUT"],
      pattern: /^\/v2\/(.+)\/manifests\/([^/]+)$/,
      handler: (ctx, name, ref) => (ctx.method === "PUT" ? this.putManifest(ctx, name, ref) : this.getManifest(name, ref)),
    },
  ];

  constructor(private readonly settings: Settings) {}

  /** Resolves on the first request (past or future, for "end") matching `match`. */
  waitFor(
    on: "start" | "end",
    match: (request: RecordedRequest, index: number, all: RecordedRequest[]) => boolean,
    timeoutMs: number,
  ): Promise<RecordedRequest> {
    if (on === "end") {
      const found = this.requests.find(match);
      if (found) return Promise.resolve(found);
    }
    return new Promise((resolve, reject) => {
      const listener = {
        on,
        check: (request: RecordedRequest) => {
          if (!match(request, this.requests.length, this.requests)) return false;
          clearTimeout(timer);
          this.listeners.delete(listener);
          resolve(request);
          return true;
        },
      };
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`the emulator saw no matching request (${on}) within ${timeoutMs} ms`));
      }, timeoutMs);
      this.listeners.add(listener);
    });
  }

  private notify(on: "start" | "end", request: RecordedRequest): void {
    for (const listener of [...this.listeners]) if (listener.on === on) listener.check(request);
  }

  async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const startedAt = Date.now();
    const base = { method: req.method, path: url.pathname, query: url.search.replace(/^\?/, ""), headers: Object.fromEntries(req.headers.entries()) };
    this.notify("start", { ...base, bodyBytes: 0, status: 0, startedAt, endedAt: 0 });
    const counted = { length: 0 };
    let body: { bytes: Uint8Array | null; length: number };
    try {
      body = await readBody(req, this.settings.edgeLimit, counted);
    } catch (error) {
      // The client went away mid-body: nothing is stored, but what arrived is counted.
      const broken = { ...base, bodyBytes: counted.length, status: 0, startedAt, endedAt: Date.now() };
      this.requests.push(broken);
      this.notify("end", broken);
      throw error;
    }
    const { bytes, length } = body;
    const ctx: RequestContext = {
      method: req.method,
      url,
      headers: req.headers,
      body: bytes ?? new Uint8Array(0),
      violate: (message) => this.violations.push(`${req.method} ${url.pathname}${url.search}: ${message}`),
    };
    const response = bytes === null ? edgeTooLarge(ctx, length, this.settings.edgeLimit) : this.dispatch(ctx);
    const recorded = { ...base, bodyBytes: length, status: response.status, startedAt, endedAt: Date.now() };
    this.requests.push(recorded);
    this.notify("end", recorded);
    return response;
  }

  private dispatch(ctx: RequestContext): Response {
    const denied = this.authenticate(ctx);
    if (denied) return denied;
    for (const route of this.routes) {
      const match = route.pattern.exec(ctx.url.pathname);
      if (match && route.methods.includes(ctx.method)) return route.handler(ctx, match[1] ?? "", match[2] ?? "");
    }
    return reject(ctx, 404, "NOT_FOUND", `no route for ${ctx.method} ${ctx.url.pathname}`);
  }

  private authenticate(ctx: RequestContext): Response | null {
    const { username, password } = this.settings;
    if (username === "") return null;
    const given = ctx.headers.get("authorization");
    if (given === `Basic ${btoa(`${username}:${password}`)}`) return null;
    const { readonlyUsername, readonlyPassword } = this.settings;
    const readOnly = readonlyUsername !== undefined && given === `Basic ${btoa(`${readonlyUsername}:${readonlyPassword ?? ""}`)}`;
    if (readOnly && (ctx.method === "GET" || ctx.method === "HEAD")) return null;
    const headers = { "WWW-Authenticate": `Basic realm="${ctx.url.href}"` };
    // An anonymous GET /v2/ is the standard way to discover the auth scheme, not a mistake.
    if (given === null && ctx.method === "GET" && ctx.url.pathname === "/v2/") {
      return errorResponse(401, "UNAUTHORIZED", "authentication required", null, headers);
    }
    const why = given === null ? "no Authorization header" : readOnly ? "a read-only user may not push" : "wrong credentials";
    return reject(ctx, 401, "UNAUTHORIZED", `authentication required (${why})`, null, headers);
  }

  // ---- uploads ----

  private startUpload(ctx: RequestContext, name: string): Response {
    const params = ctx.url.searchParams;
    if (params.has("digest")) {
      ctx.violate("single-request POST ?digest= is not supported: the body is dropped and a normal session opens");
    } else if (ctx.body.byteLength > 0) {
      ctx.violate(`POST opening an upload carried a ${ctx.body.byteLength}-byte body, which is dropped`);
    }
    const mount = params.get("mount");
    const from = params.get("from");
    if (mount !== null && from !== null) {
      const mounted = this.mount(name, mount, from);
      if (mounted) return mounted;
    }
    const session: UploadSession = { name, uuid: randomUUID(), stateHash: newStateHash(), parts: [], received: 0 };
    this.sessions.set(session.uuid, session);
    return empty(202, {
      "Content-Length": "0",
      "Content-Range": "0-0",
      ...this.sessionHeaders(session),
      // The real server answers "0-0" here even though nothing was received yet.
      Range: "0-0",
      ...this.chunkHeaders(),
    });
  }

  /** The real server mounts only from the named source repository, and never onto itself. */
  private mount(name: string, digest: string, from: string): Response | null {
    const source = this.repoBlobs.get(`${from}@${digest}`);
    if (source === undefined || from === name) return null;
    const target = `${from}/blobs/${digest}`;
    this.repoBlobs.set(`${name}@${digest}`, { kind: "link", target });
    return empty(201, {
      "Content-Length": "0",
      Location: `/v2/${name}/blobs/${digest}`,
      "Docker-Content-Digest": this.describeRepoBlob(digest, source).digest,
    });
  }

  private sessionRoute(ctx: RequestContext, name: string, uuid: string): Response {
    const session = this.sessions.get(uuid);
    const stateHash = ctx.url.searchParams.get("_stateHash");
    const needsState = ctx.method === "PATCH" || ctx.method === "PUT";
    // The real server reads _stateHash before it looks the session up, hence 500 ahead of 404.
    if (needsState && stateHash === null) {
      return reject(ctx, 500, "INTERNAL_ERROR", "the upload Location's _stateHash query parameter is missing");
    }
    if (session === undefined || session.name !== name) {
      return reject(ctx, 404, "BLOB_UPLOAD_UNKNOWN", `upload ${uuid} is unknown (finished, cancelled or never opened)`);
    }
    if (needsState && stateHash !== session.stateHash) {
      return this.rangeError(ctx, session, "stale Location: _stateHash is not the newest one (use the last Location)");
    }
    switch (ctx.method) {
      case "PATCH":
        return this.patchChunk(ctx, session);
      case "PUT":
        return this.finishUpload(ctx, session);
      case "DELETE":
        this.sessions.delete(uuid);
        return empty(204, { "Content-Length": "0" });
      default:
        return empty(204, { ...this.sessionHeaders(session), ...this.chunkHeaders() });
    }
  }

  private patchChunk(ctx: RequestContext, session: UploadSession): Response {
    const size = ctx.body.byteLength;
    noteBlobRequestHeaders(ctx, "PATCH");
    const rangeProblem = contentRangeProblem(ctx.headers.get("content-range"), session.received, size);
    if (rangeProblem) return this.rangeError(ctx, session, rangeProblem);
    const orderProblem = chunkOrderProblem(
      session.parts.map((p) => p.byteLength),
      size,
      this.settings.minChunk,
    );
    if (orderProblem) return this.rangeError(ctx, session, orderProblem);
    if (size > this.settings.maxChunk) {
      ctx.violate(`chunk of ${size} bytes exceeds the advertised OCI-Chunk-Max-Length ${this.settings.maxChunk}`);
    }
    session.parts.push(ctx.body);
    session.received += size;
    session.stateHash = newStateHash();
    return empty(202, { "Content-Length": "0", ...this.sessionHeaders(session) });
  }

  private finishUpload(ctx: RequestContext, session: UploadSession): Response {
    const digest = ctx.url.searchParams.get("digest");
    if (digest === null || !SHA256_DIGEST.test(digest)) {
      return reject(ctx, 500, "INTERNAL_ERROR", `final PUT needs ?digest=sha256:<64 hex>, got ${digest ?? "none"}`);
    }
    const bytes = session.parts.length === 0 ? monolithicBody(ctx) : this.completeMultipart(ctx, session);
    if (bytes instanceof Response) return bytes;
    const actual = sha256Digest(bytes);
    if (actual !== digest) {
      const message = `digest mismatch: ?digest=${digest} but the ${bytes.byteLength} bytes hash to ${actual}`;
      return reject(ctx, 500, "INTERNAL_ERROR", message);
    }
    this.sessions.delete(session.uuid);
    this.blobs.set(digest, bytes);
    this.repoBlobs.set(`${session.name}@${digest}`, { kind: "object" });
    return empty(201, {
      "Content-Length": "0",
      Location: `/v2/${session.name}/blobs/${digest}`,
      "Docker-Content-Digest": digest,
    });
  }

  private completeMultipart(ctx: RequestContext, session: UploadSession): Uint8Array | Response {
    if (ctx.body.byteLength > 0) {
      ctx.violate(`final PUT after PATCH carried ${ctx.body.byteLength} bytes: the real server ignores them`);
    }
    // A failed multipart completion leaves the real upload unusable, so the session ends either way.
    this.sessions.delete(session.uuid);
    const problem = partRuleProblem(
      session.parts.map((p) => p.byteLength),
      this.settings.minChunk,
    );
    if (problem) return reject(ctx, 500, "INTERNAL_ERROR", `R2 refused to complete the multipart upload: ${problem}`);
    return concat(session.parts, session.received);
  }

  /** The real 416: Location keeps the current (valid) _stateHash and Range reports what is stored. */
  private rangeError(ctx: RequestContext, session: UploadSession, message: string): Response {
    return reject(ctx, 416, "RANGE_ERROR", message, null, this.sessionHeaders(session));
  }

  private sessionHeaders(session: UploadSession): Record<string, string> {
    return {
      Location: `/v2/${session.name}/blobs/uploads/${session.uuid}?_stateHash=${session.stateHash}`,
      // Inclusive end, computed like the real server: "0--1" while nothing has been received.
      Range: `0-${session.received - 1}`,
      "Docker-Upload-UUID": session.uuid,
    };
  }

  private chunkHeaders(): Record<string, string> {
    if (!this.settings.advertiseChunkHeaders) return {};
    return {
      "OCI-Chunk-Min-Length": String(this.settings.minChunk),
      "OCI-Chunk-Max-Length": String(this.settings.maxChunk),
    };
  }

  // ---- blobs ----

  private getBlob(ctx: RequestContext, name: string, digest: string): Response {
    const entry = this.repoBlobs.get(`${name}@${digest}`);
    const bytes = this.blobs.get(digest);
    if (entry === undefined || bytes === undefined) {
      return errorResponse(404, "BLOB_UNKNOWN", `blob ${digest} is not in ${name}`);
    }
    if (ctx.method === "HEAD") {
      const { size, digest: reported } = this.describeRepoBlob(digest, entry);
      return empty(200, { "Content-Length": String(size), "Docker-Content-Digest": reported });
    }
    return new Response(bytes, {
      headers: {
        "Content-Type": OCTET_STREAM,
        "Content-Length": String(bytes.byteLength),
        "Docker-Content-Digest": digest,
      },
    });
  }

  /** Size and checksum of the R2 object itself: for a mount link that is the link text, not the blob. */
  private describeRepoBlob(digest: string, entry: RepoBlob): { size: number; digest: string } {
    if (entry.kind === "link") {
      const text = new TextEncoder().encode(entry.target);
      return { size: text.byteLength, digest: sha256Digest(text) };
    }
    return { size: this.blobs.get(digest)?.byteLength ?? 0, digest };
  }

  // ---- manifests ----

  private putManifest(ctx: RequestContext, name: string, ref: string): Response {
    const contentType = ctx.headers.get("content-type");
    if (!contentType) return reject(ctx, 400, "MANIFEST_INVALID", "manifest PUT without a Content-Type header");
    const parsed = parseManifest(ctx.body, contentType);
    if (typeof parsed === "string") return reject(ctx, 400, "MANIFEST_INVALID", parsed);
    const missing = this.missingReference(name, parsed);
    if (missing) return reject(ctx, 400, "MANIFEST_BLOB_UNKNOWN", missing);
    const sizeProblem = this.descriptorSizeProblem(name, parsed);
    if (sizeProblem) return reject(ctx, 400, "MANIFEST_INVALID", sizeProblem);
    const digest = sha256Digest(ctx.body);
    if (isDigest(ref) && ref !== digest) {
      return reject(ctx, 400, "DIGEST_INVALID", `manifest PUT by digest ${ref} but the bytes hash to ${digest}`);
    }
    const stored = { contentType, bytes: ctx.body };
    this.manifests.set(manifestKey(name, ref), stored);
    this.manifests.set(manifestKey(name, digest), stored);
    return empty(201, {
      "Content-Length": "0",
      Location: `/v2/${name}/manifests/${ref}`,
      "Docker-Content-Digest": digest,
    });
  }

  private missingReference(name: string, manifest: ParsedManifest): string | null {
    if (manifest.kind === "index") {
      const absent = manifest.manifests.find((d) => !this.manifests.has(manifestKey(name, d.digest)));
      return absent ? `index references manifest ${absent.digest}, not pushed to ${name} first` : null;
    }
    const absent = manifest.blobs.find((d) => !this.repoBlobs.has(`${name}@${d.digest}`));
    return absent ? `manifest references blob ${absent.digest}, not present in ${name} (push or mount it first)` : null;
  }

  /** The real server does not check sizes, but pulls verify them: a wrong size is a broken image. */
  private descriptorSizeProblem(name: string, manifest: ParsedManifest): string | null {
    const descriptors = manifest.kind === "index" ? manifest.manifests : manifest.blobs;
    for (const d of descriptors) {
      const actual = manifest.kind === "index" ? this.manifests.get(manifestKey(name, d.digest))?.bytes.byteLength : this.blobs.get(d.digest)?.byteLength;
      if (actual !== d.size) return `descriptor ${d.digest} says size ${d.size} but the content is ${actual} bytes`;
    }
    return null;
  }

  private getManifest(name: string, ref: string): Response {
    const stored = this.manifests.get(manifestKey(name, ref));
    if (stored === undefined) return errorResponse(404, "MANIFEST_UNKNOWN", `manifest ${ref} is not in ${name}`);
    return new Response(stored.bytes, {
      headers: {
        "Content-Type": stored.contentType,
        "Content-Length": String(stored.bytes.byteLength),
        "Docker-Content-Digest": sha256Digest(stored.bytes),
      },
    });
  }
}

// ---- upload rules ----

/**
 * Content-Range must be "<start>-<end>" (inclusive, no "bytes " prefix) continuing at the current offset
 * and covering exactly the body. The real server also refuses start == end, so a 1-byte chunk always fails.
 */
function contentRangeProblem(header: string | null, offset: number, size: number): string | null {
  if (header === null) return "PATCH without Content-Range";
  const match = /^(\d+)-(\d+)$/.exec(header);
  if (!match) return `Content-Range "${header}" is not "<start>-<end>" (no "bytes " prefix)`;
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (start !== offset) return `Content-Range starts at ${start} but the upload holds ${offset} bytes`;
  if (end !== start + size - 1) return `Content-Range "${header}" does not cover the ${size}-byte body`;
  if (start >= end) return `Content-Range "${header}": the real server refuses start >= end (a 1-byte chunk)`;
  return null;
}

/**
 * The PATCH-time decision of the real server (default compatibility mode): a chunk is taken if it is the
 * first, smaller than the previous one, or the same size as a run of equal parts that are each >= the minimum.
 */
function chunkOrderProblem(previous: number[], size: number, min: number): string | null {
  const last = previous.at(-1);
  if (last === undefined || size < last) return null;
  if (size === last && isRegularRun(previous, min)) return null;
  if (size > last) return `chunk of ${size} bytes is larger than the previous chunk (${last} bytes)`;
  const parts = previous.join(", ");
  return `chunk of ${size} bytes repeats a size that cannot continue (parts so far: ${parts}; minimum ${min})`;
}

function isRegularRun(sizes: number[], min: number): boolean {
  const first = sizes[0];
  return first !== undefined && first >= min && sizes.every((s) => s === first);
}

/** R2 multipart completion: every part but the last equal and >= the minimum; the last never larger. */
function partRuleProblem(sizes: number[], min: number): string | null {
  const first = sizes[0];
  const last = sizes.at(-1);
  if (first === undefined || last === undefined || sizes.length === 1) return null;
  if (!isRegularRun(sizes.slice(0, -1), min)) {
    return `parts before the last must all be the same size and >= ${min} bytes (parts: ${sizes.join(", ")})`;
  }
  return last > first ? `the last part (${last} bytes) is larger than the others (${first} bytes)` : null;
}

function monolithicBody(ctx: RequestContext): Uint8Array | Response {
  noteBlobRequestHeaders(ctx, "PUT");
  // R2 refuses a stream of unknown length, so a chunked-transfer monolithic PUT fails on the real server.
  if (ctx.headers.get("content-length") === null) {
    return reject(ctx, 500, "INTERNAL_ERROR", "monolithic PUT without Content-Length");
  }
  return ctx.body;
}

/** distribution answers 500 to a PATCH with another Content-Type, so a portable client always sends it. */
function noteBlobRequestHeaders(ctx: RequestContext, kind: "PATCH" | "PUT"): void {
  const contentType = ctx.headers.get("content-type");
  if (kind === "PATCH" && ctx.headers.get("content-length") === null) {
    ctx.violate("PATCH without Content-Length (a streamed body cannot be sized before it hits the edge limit)");
  }
  if (ctx.body.byteLength > 0 && contentType !== OCTET_STREAM) {
    ctx.violate(`${kind} with Content-Type ${contentType ?? "none"}, expected ${OCTET_STREAM}`);
  }
}

// ---- manifests ----

function parseManifest(bytes: Uint8Array, contentType: string): ParsedManifest | string {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return "manifest body is not JSON";
  }
  if (!isRecord(doc) || doc.schemaVersion !== 2) return "manifest is not a JSON object with schemaVersion 2";
  if (typeof doc.mediaType !== "string") return "manifest has no mediaType field";
  if (doc.mediaType !== contentType) {
    return `Content-Type "${contentType}" differs from the manifest's mediaType "${doc.mediaType}"`;
  }
  if (doc.manifests !== undefined) {
    const entries = descriptorList(doc.manifests);
    if (entries === null) return "index entries need mediaType, digest and integer size";
    // The real server's schema requires a platform on every index entry.
    if (!entries.every((entry) => isRecord(entry.raw.platform))) return "index entry without platform";
    return { kind: "index", manifests: entries.map((entry) => entry.descriptor) };
  }
  const config = asDescriptor(doc.config);
  const layers = descriptorList(doc.layers);
  if (config === null || layers === null) {
    return "image manifest needs config and layers descriptors with mediaType, digest and integer size";
  }
  return { kind: "image", blobs: [config, ...layers.map((entry) => entry.descriptor)] };
}

function descriptorList(value: unknown): { raw: Record<string, unknown>; descriptor: Descriptor }[] | null {
  if (!Array.isArray(value)) return null;
  const items: unknown[] = value;
  const entries = [];
  for (const raw of items) {
    if (!isRecord(raw)) return null;
    const descriptor = asDescriptor(raw);
    if (descriptor === null) return null;
    entries.push({ raw, descriptor });
  }
  return entries;
}

function asDescriptor(value: unknown): Descriptor | null {
  if (!isRecord(value)) return null;
  const { mediaType, digest, size } = value;
  if (typeof mediaType !== "string" || typeof digest !== "string" || !Number.isInteger(size)) return null;
  return { mediaType, digest, size: Number(size) };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isDigest(ref: string): boolean {
  return ref.includes(":");
}

function manifestKey(name: string, ref: string): string {
  return isDigest(ref) ? `${name}@${ref}` : `${name}:${ref}`;
}

// ---- HTTP plumbing ----

/**
 * Reads the whole body, keeping it only while it fits the edge limit (a larger one is just counted),
 * so a streamed body with no Content-Length meets the same limit as a declared one.
 */
async function readBody(req: Request, limit: number, counted: { length: number }): Promise<{ bytes: Uint8Array | null; length: number }> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  const chunks: Uint8Array[] = [];
  let length = 0;
  if (req.body !== null) {
    const reader = req.body.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      length += r.value.byteLength;
      counted.length = length;
      if (length <= limit) chunks.push(r.value);
    }
  }
  const fits = length <= limit && declared <= limit;
  return { bytes: fits ? concat(chunks, length) : null, length };
}

/** Cloudflare's edge answers before the Worker runs, with an HTML page rather than a registry error. */
function edgeTooLarge(ctx: RequestContext, length: number, limit: number): Response {
  ctx.violate(`request body of ${length} bytes exceeds the edge limit of ${limit} bytes (413 from Cloudflare)`);
  const html = [
    "<html>",
    "<head><title>413 Request Entity Too Large</title></head>",
    "<body>",
    "<center><h1>413 Request Entity Too Large</h1></center>",
    "<hr><center>cloudflare</center>",
    "</body>",
    "</html>",
    "",
  ].join("\r\n");
  return new Response(html, { status: 413, headers: { "Content-Type": "text/html", Server: "cloudflare" } });
}

/** errorResponse(), recorded as a violation of the request context. */
function reject(ctx: RequestContext, ...args: Parameters<typeof errorResponse>): Response {
  const [status, code, message] = args;
  ctx.violate(`${status} ${code}: ${message}`);
  return errorResponse(...args);
}

function errorResponse(status: number, code: string, message: string, detail: unknown = null, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ errors: [{ code, message, detail }] }), {
    status,
    headers: { ...headers, "Content-Type": "application/json;charset=UTF-8" },
  });
}

function empty(status: number, headers: Record<string, string> = {}): Response {
  return new Response(null, { status, headers });
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;
}

function newStateHash(): string {
  return randomBytes(32).toString("hex");
}
