/**
 * A small but real OCI distribution API server whose answers a test scripts to misbehave, for proving
 * that a push client survives hostile registries: foreign hosts in `Location` and redirects (with their
 * own auth challenges, to catch leaked credentials), bodies that never end, silent or lying token
 * services, upload `Range`s that never progress, absurd chunk-length headers and terminal escape
 * sequences in error messages.
 *
 * It serves three origins at once, all backed by the same blob, upload and manifest store:
 * - `registry` on 127.0.0.1, the one the client is pointed at;
 * - `foreign` on 127.0.0.2 and `third` on 127.0.0.3 (other loopback addresses, so the host name differs,
 *   not just the port), standing for storage back ends, CDNs and other parties a registry may send the
 *   client to. Each origin records its own requests and can demand its own credentials.
 *
 * Built on node:http rather than Bun.serve because a hostile server must be able to leave a request
 * unanswered, reset a connection, write raw bytes, and pace a body by the client's reading speed.
 *
 * Without rules every request is served correctly (`serve`): GET /v2/, HEAD/GET blobs, POST uploads
 * (plus `?digest=` monolithic and `?mount=` which just opens a session), PATCH/PUT/GET/DELETE sessions,
 * PUT/GET/HEAD manifests, and `GET /token` on any origin named as a Bearer realm. Digests are checked.
 * The server is lenient where that lets a lie stay consistent: a PATCH may restart at any offset up to
 * what is stored (the stored bytes are cut there), so a client that believes a lying `Range` still ends
 * up with a correct blob if it resends from there.
 */
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export const ORIGIN_NAMES = ["registry", "foreign", "third"] as const;
export type OriginName = (typeof ORIGIN_NAMES)[number];

/** What a request is, from its method and path; rules match on it. */
export type RouteName = "ping" | "token" | "blob" | "upload-start" | "upload" | "manifest" | "other";

/** Credentials an origin demands before it serves (`serve` only: canned behaviours answer anyone). */
export type OriginAuth =
  | { scheme: "none" }
  /** `WWW-Authenticate: Basic realm="<realm>"` until `Authorization: Basic base64(user:password)`. */
  | { scheme: "basic"; username: string; password: string; realm?: string }
  /**
   * `WWW-Authenticate: Bearer realm="http://<realm origin>/token",service="<service>"[,scope=...]` until
   * a token issued by that token service for that service comes back. The token service gives tokens
   * to anyone when `username` is unset, else only with the right Basic credentials.
   */
  | { scheme: "bearer"; realm: OriginName; service?: string; username?: string; password?: string };

/** State a `range` lie is computed from: the truth and how many answers this session already had. */
export interface RangeState {
  /** Bytes the session really holds. */
  received: number;
  /** Answers already given with a lie on this session (0 for the first). */
  answers: number;
  /** End of the last Range this session reported, or null before any. */
  lastReportedEnd: number | null;
}

/**
 * A `Range` header lie for upload answers (POST, PATCH, status GET):
 * - "rewind": always `0-0`, so the upload never seems to progress;
 * - "backwards": every answer `backStep` bytes below the previous one (the first below the truth),
 *   never below `0-0`;
 * - a function: any header value.
 */
export type RangeLie = "rewind" | "backwards" | ((state: RangeState) => string);

/**
 * Serve correctly, then bend the answer. `location` rewrites a `Location` header into an absolute URL on
 * that origin (same path and query), `"absolute"` on the answering origin; `chunkMin`/`chunkMax` set
 * `OCI-Chunk-Min-Length`/`OCI-Chunk-Max-Length` to any string; `headers` are set last.
 */
export interface ServeBehaviour {
  kind: "serve";
  location?: OriginName | "absolute";
  range?: RangeLie;
  /** Step of the "backwards" lie; default 1 byte. */
  backStep?: number;
  chunkMin?: string;
  chunkMax?: string;
  headers?: Record<string, string>;
}

/**
 * A body generated on the fly: `prefix`, then `filler` repeated, then `suffix`, exactly `totalBytes` long
 * (with Content-Length unless `declareLength` is false), or never ending when `totalBytes` is unset.
 * Written as fast as the client reads (each write waits for the socket to drain), or one `chunkBytes`
 * piece every `intervalMs`. `stallAfterBytes` stops writing there and leaves the connection open.
 */
export interface StreamBehaviour {
  kind: "stream";
  status: number;
  contentType?: string;
  headers?: Record<string, string>;
  prefix?: string;
  filler?: string;
  suffix?: string;
  totalBytes?: number;
  declareLength?: boolean;
  chunkBytes?: number;
  intervalMs?: number;
  stallAfterBytes?: number;
}

export type Behaviour =
  | ServeBehaviour
  /** Answer this, after reading the request body. */
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string | Uint8Array }
  /** A registry JSON error `{"errors":[{code,message,detail}]}`; `message` may hold any character. */
  | { kind: "error"; status: number; code?: string; message: string; detail?: unknown; headers?: Record<string, string> }
  /** 401 with a challenge whatever the request carried; `realm` is the token service's origin for Bearer. */
  | { kind: "challenge"; scheme: "basic" | "bearer"; realm?: OriginName; service?: string; error?: string }
  /** Redirect to the same path and query on another origin, or to `url` when given. */
  | { kind: "redirect"; status: 301 | 302 | 303 | 307 | 308; to: OriginName; url?: string }
  | StreamBehaviour
  /** Accept the request and never answer (the body is read unless `readBody` is false). */
  | { kind: "silent"; readBody?: boolean }
  /** Wait `ms` before doing `then` (default serve): a slow server, not a test sleep. */
  | { kind: "delay"; ms: number; then?: Behaviour }
  /** Destroy the connection as soon as the request headers are in. */
  | { kind: "reset" }
  /** Write these bytes to the socket as the whole answer (headers node:http refuses), then close it. */
  | { kind: "raw"; bytes: string | Uint8Array };

export interface HostileRule {
  /** Any origin when omitted. */
  origin?: OriginName;
  route?: RouteName | RouteName[];
  /** Exact method, case-insensitive. */
  method?: string;
  /** Substring of the request target (path plus `?query`). */
  pathIncludes?: string;
  /**
   * 1-based position among the requests this rule matches, counted from when it was added; default 1.
   * Every rule counts every request it matches, even one another rule decided.
   */
  nth?: number;
  /** How many consecutive matches from the nth on; default Infinity (unlike fault-proxy, where it is 1). */
  times?: number;
  behaviour: Behaviour;
}

export interface HostileScript {
  rules?: HostileRule[];
  /** Per-origin credentials; every origin is open by default. */
  auth?: Partial<Record<OriginName, OriginAuth>>;
  /** Headers every POST 202 and status GET 204 carries, as strings so they can be absurd. */
  chunkHeaders?: { min?: string; max?: string };
  /** Listening addresses; defaults 127.0.0.2 and 127.0.0.3 (use 127.0.0.1 for "same name, other port"). */
  foreignAddress?: string;
  thirdAddress?: string;
}

export interface HostileRequest {
  /** Arrival order over all origins, from 1. */
  seq: number;
  origin: OriginName;
  method: string;
  /** The request target exactly as in the request line (path plus `?query`). */
  target: string;
  path: string;
  /** Without the leading "?". */
  query: string;
  route: RouteName;
  /** Header names and values exactly as received, in order, repeats kept. */
  rawHeaders: [string, string][];
  /** Lower-cased names, repeats joined with ", ". */
  headers: Record<string, string>;
  /** Every Authorization value exactly as received, in order; empty when none came. */
  authorization: string[];
  /** Request body bytes received so far. */
  bodyBytes: number;
  /** Ms since the server started, when the headers arrived, and when the exchange ended. */
  at: number;
  doneAt?: number;
  behaviour: Behaviour["kind"];
  /** Index in the rule list (including added rules) of the rule that decided, if any. */
  rule?: number;
  /** Status answered; "silent" never answered, "reset"/"raw" connection handled by hand; 0 until known. */
  status: number | "silent" | "reset" | "raw";
  /** Lower-cased names of what was answered. */
  responseHeaders: Record<string, string>;
  /**
   * Body bytes handed to the socket so far. The client may not have read them all: up to the socket
   * buffers in between (on this machine's loopback at most 32 MiB receive + 4 MiB send) can be unread.
   */
  responseBytes: number;
  /** The client closed the connection before the answer was complete (or while left silent). */
  clientClosed: boolean;
  /** Why the server could not answer as scripted (e.g. node:http refused a header value); then reset. */
  error?: string;
}

export interface HostileOrigin {
  name: OriginName;
  /** "http://<address>:<port>" */
  url: string;
  /** "<address>:<port>" */
  host: string;
  /** Requests this origin received, oldest first. */
  requests: HostileRequest[];
  /** Sum of responseBytes over this origin's requests. */
  bytesSent(): number;
  /** Every Authorization value this origin received, in order (for "no credentials leaked" checks). */
  credentialsSeen(): string[];
}

export interface IssuedToken {
  token: string;
  /** Origin whose token service issued it. */
  by: OriginName;
  service: string;
  /** User of the Basic credentials it was issued for; null when anonymous. */
  user: string | null;
}

export interface HostileRegistry {
  /** The `registry` origin's url and host, the ones the client is given. */
  url: string;
  host: string;
  registry: HostileOrigin;
  foreign: HostileOrigin;
  third: HostileOrigin;
  origins: Record<OriginName, HostileOrigin>;
  /** Every request over all origins, in arrival order; entries are updated in place. */
  requests: HostileRequest[];
  /** Committed blobs by digest, shared by the origins. */
  blobs: Map<string, Uint8Array>;
  /** Manifests by "<name>:<tag>" and "<name>@<digest>". */
  manifests: Map<string, { contentType: string; bytes: Uint8Array }>;
  tokens: IssuedToken[];
  addRule(rule: HostileRule): void;
  clearRules(): void;
  /** Stores a blob (e.g. for a GET test); returns its digest. */
  putBlob(bytes: Uint8Array): string;
  /** Stores a manifest under `<name>:<ref>` and `<name>@<digest>`; returns its digest. */
  putManifest(name: string, ref: string, bytes: Uint8Array, contentType: string): string;
  /** Resolves with the first recorded request (present or future) for which `match` holds. */
  waitForRequest(match: (r: HostileRequest) => boolean, timeoutMs?: number, what?: string): Promise<HostileRequest>;
  /** Resolves when `condition` holds; checked whenever a request is recorded or updated. */
  waitUntil(condition: () => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Destroys every connection (silent ones and endless bodies too) and closes the servers. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------
// Ready-made behaviours

const JSON_TYPE = "application/json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** An error whose JSON body never ends (a string that never closes), as fast as the client reads. */
export function endlessJsonError(status = 500): StreamBehaviour {
  return { kind: "stream", status, contentType: JSON_TYPE, prefix: '{"errors":[{"code":"UNKNOWN","message":"', filler: "A" };
}

/** A complete, valid JSON error of exactly `totalBytes` (default 200 MB) with Content-Length. */
export function hugeJsonError(status = 500, totalBytes = 200_000_000): StreamBehaviour {
  return { ...endlessJsonError(status), suffix: '","detail":null}]}', totalBytes };
}

/** A token service 200 whose JSON never ends (or is `totalBytes` long, valid, when given). */
export function endlessTokenAnswer(totalBytes?: number): StreamBehaviour {
  return { kind: "stream", status: 200, contentType: JSON_TYPE, prefix: '{"expires_in":300,"token":"', filler: "t", suffix: '"}', totalBytes };
}

/** A manifest GET 200 whose body never ends (or is `totalBytes` long, valid JSON, when given). */
export function endlessManifest(totalBytes?: number): StreamBehaviour {
  return {
    kind: "stream",
    status: 200,
    contentType: OCI_MANIFEST,
    prefix: `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","annotations":{"x":"`,
    filler: "m",
    suffix: '"}}',
    totalBytes,
  };
}

/**
 * Text full of what must never reach a terminal raw: SGR colour, BEL, CR (overwrites the line), erase
 * line and screen, cursor moves, OSC window title, OSC 8 hyperlink, OSC 52 clipboard write, backspaces,
 * NUL, DEL, and C1 controls (CSI U+009B, OSC U+009D, ST U+009C, NEL U+0085) that some terminals obey.
 * The printable words "HOSTILE-BEGIN" and "HOSTILE-END" may survive sanitising.
 */
export const HOSTILE_ESCAPE_TEXT =
  "HOSTILE-BEGIN \u001b[31mred\u001b[0m \u0007bell\u0007 \rcarriage-return \u001b[2K\u001b[1Aerased \u001b[2J" +
  "\u001b]0;pwned-title\u0007 \u001b]8;;http://evil.invalid/\u001b\\link\u001b]8;;\u001b\\ \u001b]52;c;cHduZWQ=\u0007 " +
  "xx\b\bback \u0000nul \u007fdel \u009b31mC1-CSI \u009d0;c1-osc\u009c \u0085nel \u001bcreset HOSTILE-END";

/** C0 controls but TAB and LF, DEL, and C1 controls: what sanitised terminal output must not contain. */
export const TERMINAL_CONTROL_PATTERN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/u;

/** The control characters in `text` (as code points, for readable failures). */
export function terminalControlsIn(text: string): string[] {
  const found: string[] = [];
  for (const char of text) {
    if (TERMINAL_CONTROL_PATTERN.test(char)) found.push(`U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`);
  }
  return found;
}

/** A JSON registry error whose message (and detail) carry HOSTILE_ESCAPE_TEXT. */
export function escapeSequenceError(status = 400, code = "DENIED"): Behaviour {
  return { kind: "error", status, code, message: HOSTILE_ESCAPE_TEXT, detail: { reason: HOSTILE_ESCAPE_TEXT } };
}

// ---------------------------------------------------------------------------------------------------
// Server

const DEFAULT_SERVICE = "hostile-registry";
const EMPTY = new Uint8Array(0);

interface UploadSession {
  uuid: string;
  name: string;
  chunks: Buffer[];
  received: number;
  answers: number;
  lastReportedEnd: number | null;
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  session?: UploadSession;
}

interface Exchange {
  origin: OriginName;
  req: IncomingMessage;
  res: ServerResponse;
  entry: HostileRequest;
  url: URL;
  body: Promise<Buffer>;
}

export async function startHostileRegistry(script: HostileScript = {}): Promise<HostileRegistry> {
  const started = performance.now();
  const now = (): number => Math.round(performance.now() - started);
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const changed = (): void => {
    changes.emit("change");
  };

  const requests: HostileRequest[] = [];
  const perOrigin: Record<OriginName, HostileRequest[]> = { registry: [], foreign: [], third: [] };
  const blobs = new Map<string, Uint8Array>();
  const manifests = new Map<string, { contentType: string; bytes: Uint8Array }>();
  const sessions = new Map<string, UploadSession>();
  const tokens: IssuedToken[] = [];
  const auth: Record<OriginName, OriginAuth> = {
    registry: script.auth?.registry ?? { scheme: "none" },
    foreign: script.auth?.foreign ?? { scheme: "none" },
    third: script.auth?.third ?? { scheme: "none" },
  };
  const rules: { rule: HostileRule; seen: number }[] = (script.rules ?? []).map((rule) => ({ rule, seen: 0 }));
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const urls: Record<OriginName, string> = { registry: "", foreign: "", third: "" };
  let stopping = false;

  const later = (ms: number, fn: () => void): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!stopping) fn();
    }, ms);
    timers.add(timer);
  };

  function pick(origin: OriginName, method: string, route: RouteName, target: string): { behaviour: Behaviour; index?: number } {
    let chosen: { behaviour: Behaviour; index?: number } | undefined;
    rules.forEach((entry, index) => {
      const { rule } = entry;
      if (rule.origin !== undefined && rule.origin !== origin) return;
      if (rule.method !== undefined && rule.method.toUpperCase() !== method) return;
      if (rule.pathIncludes !== undefined && !target.includes(rule.pathIncludes)) return;
      if (rule.route !== undefined && !(Array.isArray(rule.route) ? rule.route.includes(route) : rule.route === route)) return;
      entry.seen++;
      const nth = rule.nth ?? 1;
      if (chosen === undefined && entry.seen >= nth && entry.seen < nth + (rule.times ?? Infinity)) {
        chosen = { behaviour: rule.behaviour, index };
      }
    });
    return chosen ?? { behaviour: { kind: "serve" } };
  }

  // ---- answering ----

  function send(ex: Exchange, status: number, headers: Record<string, string>, body: Uint8Array = EMPTY): void {
    const { res, entry } = ex;
    if (res.destroyed || res.headersSent) return;
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) out[name.toLowerCase()] = value;
    if (status !== 204 && status !== 304) out["content-length"] ??= String(body.byteLength);
    entry.status = status;
    entry.responseHeaders = out;
    if (!writeHead(ex, status, out)) return;
    const withBody = ex.req.method !== "HEAD" && body.byteLength > 0;
    res.end(withBody ? body : undefined, () => {
      if (withBody) entry.responseBytes += body.byteLength;
      changed();
    });
    changed();
  }

  /** writeHead, or on a refused header (node:http checks values) a reset with the reason recorded. */
  function writeHead(ex: Exchange, status: number, headers: Record<string, string>): boolean {
    try {
      ex.res.writeHead(status, headers);
      return true;
    } catch (error) {
      ex.entry.error = error instanceof Error ? error.message : String(error);
      ex.entry.status = "reset";
      ex.req.socket.destroy();
      changed();
      return false;
    }
  }

  function jsonError(status: number, code: string, message: string, detail: unknown = null, headers: Record<string, string> = {}): Reply {
    return {
      status,
      headers: { ...headers, "content-type": JSON_TYPE },
      body: Buffer.from(JSON.stringify({ errors: [{ code, message, detail }] })),
    };
  }

  function challengeHeader(scheme: "basic" | "bearer", realmOrigin: OriginName, service: string, realm: string, scope: string | null, error?: string): string {
    if (scheme === "basic") return `Basic realm="${realm}"`;
    const parts = [`realm="${urls[realmOrigin]}/token"`, `service="${service}"`];
    if (scope !== null) parts.push(`scope="${scope}"`);
    if (error !== undefined) parts.push(`error="${error}"`);
    return `Bearer ${parts.join(",")}`;
  }

  function repoScope(path: string): string | null {
    const name = /^\/v2\/(.+)\/(?:blobs|manifests)\//.exec(path)?.[1];
    return name === undefined ? null : `repository:${name}:pull,push`;
  }

  /** null when the origin's credentials are satisfied, else the 401 to send. */
  function authenticate(ex: Exchange): Reply | null {
    const config = auth[ex.origin];
    if (config.scheme === "none") return null;
    const given = ex.entry.authorization;
    if (config.scheme === "basic") {
      if (given.length === 1 && given[0] === `Basic ${btoa(`${config.username}:${config.password}`)}`) return null;
      const header = challengeHeader("basic", ex.origin, "", config.realm ?? `hostile ${ex.origin}`, null);
      return jsonError(401, "UNAUTHORIZED", "authentication required", null, { "www-authenticate": header });
    }
    const service = config.service ?? DEFAULT_SERVICE;
    const token = given.length === 1 ? /^Bearer (\S+)$/.exec(given[0] ?? "")?.[1] : undefined;
    if (token !== undefined && tokens.some((t) => t.token === token && t.by === config.realm && t.service === service)) return null;
    const header = challengeHeader("bearer", config.realm, service, "", repoScope(ex.url.pathname));
    return jsonError(401, "UNAUTHORIZED", "authentication required", null, { "www-authenticate": header });
  }

  /** `GET /token` on an origin that some origin's Bearer auth names as realm. */
  function tokenService(ex: Exchange): Reply {
    const service = ex.url.searchParams.get("service") ?? DEFAULT_SERVICE;
    const config = ORIGIN_NAMES.map((name) => auth[name]).find(
      (a): a is Extract<OriginAuth, { scheme: "bearer" }> => a.scheme === "bearer" && a.realm === ex.origin && (a.service ?? DEFAULT_SERVICE) === service,
    );
    if (config === undefined) return jsonError(404, "NOT_FOUND", `no token service for service "${service}" on this origin`);
    const given = ex.entry.authorization[0];
    let user: string | null = null;
    if (given !== undefined) {
      const decoded = /^Basic ([A-Za-z0-9+/=]+)$/.exec(given)?.[1];
      const text = decoded === undefined ? "" : Buffer.from(decoded, "base64").toString("utf8");
      const colon = text.indexOf(":");
      if (colon < 0) return tokenDenied("malformed Authorization header");
      user = text.slice(0, colon);
      if (config.username !== undefined && !(user === config.username && text.slice(colon + 1) === (config.password ?? ""))) {
        return tokenDenied("incorrect username or password");
      }
    } else if (config.username !== undefined) {
      return tokenDenied("authentication required");
    }
    const token = `hostile-${ex.origin}-${randomBytes(12).toString("hex")}`;
    tokens.push({ token, by: ex.origin, service, user });
    return {
      status: 200,
      headers: { "content-type": JSON_TYPE },
      body: Buffer.from(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() })),
    };
  }

  function tokenDenied(message: string): Reply {
    return jsonError(401, "UNAUTHORIZED", message, null, { "www-authenticate": 'Basic realm="hostile token service"' });
  }

  // ---- the registry API ----

  function api(ex: Exchange, body: Buffer): Reply {
    const { url } = ex;
    const method = ex.entry.method;
    if (ex.entry.route === "token") return tokenService(ex);
    const denied = authenticate(ex);
    if (denied) return denied;
    const path = url.pathname;
    if (ex.entry.route === "ping" && method === "GET") return { status: 200, headers: { "content-type": JSON_TYPE }, body: Buffer.from("{}") };
    const start = /^\/v2\/(.+)\/blobs\/uploads\/?$/.exec(path);
    if (start && method === "POST") return startUpload(ex, start[1] ?? "", body);
    const session = /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/.exec(path);
    if (session) return sessionRoute(ex, session[1] ?? "", session[2] ?? "", body);
    const blob = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path);
    if (blob && (method === "GET" || method === "HEAD")) return getBlob(blob[2] ?? "");
    const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
    if (manifest) {
      if (method === "PUT") return putManifestRoute(ex, manifest[1] ?? "", manifest[2] ?? "", body);
      if (method === "GET" || method === "HEAD") return getManifest(manifest[1] ?? "", manifest[2] ?? "");
    }
    return jsonError(404, "NOT_FOUND", `no route for ${method} ${path}`);
  }

  function sessionHeaders(session: UploadSession): Record<string, string> {
    return {
      location: `/v2/${session.name}/blobs/uploads/${session.uuid}?_state=${randomBytes(8).toString("hex")}`,
      range: `0-${Math.max(0, session.received - 1)}`,
      "docker-upload-uuid": session.uuid,
    };
  }

  function chunkHeaders(): Record<string, string> {
    const out: Record<string, string> = {};
    if (script.chunkHeaders?.min !== undefined) out["oci-chunk-min-length"] = script.chunkHeaders.min;
    if (script.chunkHeaders?.max !== undefined) out["oci-chunk-max-length"] = script.chunkHeaders.max;
    return out;
  }

  function startUpload(ex: Exchange, name: string, body: Buffer): Reply {
    const digest = ex.url.searchParams.get("digest");
    if (digest !== null) return commitBlob(name, digest, body);
    const session: UploadSession = { uuid: crypto.randomUUID(), name, chunks: [], received: 0, answers: 0, lastReportedEnd: null };
    sessions.set(session.uuid, session);
    return { status: 202, headers: { ...sessionHeaders(session), ...chunkHeaders() }, body: EMPTY, session };
  }

  function sessionRoute(ex: Exchange, name: string, uuid: string, body: Buffer): Reply {
    const session = sessions.get(uuid);
    if (session === undefined || session.name !== name) return jsonError(404, "BLOB_UPLOAD_UNKNOWN", `upload ${uuid} is unknown`);
    switch (ex.entry.method) {
      case "PATCH": {
        const range = ex.entry.headers["content-range"];
        if (range !== undefined) {
          const start = Number(/^(?:bytes[ =])?(\d+)-\d+(?:\/\S+)?$/.exec(range)?.[1] ?? NaN);
          if (!Number.isSafeInteger(start) || start > session.received) {
            const refused = jsonError(416, "BLOB_UPLOAD_INVALID", `Content-Range "${range}" does not continue the ${session.received} bytes held`);
            return { ...refused, headers: { ...refused.headers, ...sessionHeaders(session) }, session };
          }
          truncate(session, start);
        }
        append(session, body);
        return { status: 202, headers: sessionHeaders(session), body: EMPTY, session };
      }
      case "PUT": {
        append(session, body);
        const digest = ex.url.searchParams.get("digest");
        if (digest === null) return jsonError(400, "DIGEST_INVALID", "final PUT needs ?digest=");
        const reply = commitBlob(name, digest, Buffer.concat(session.chunks));
        if (reply.status === 201) sessions.delete(uuid);
        return reply;
      }
      case "DELETE":
        sessions.delete(uuid);
        return { status: 204, headers: {}, body: EMPTY };
      case "GET":
        return { status: 204, headers: { ...sessionHeaders(session), ...chunkHeaders() }, body: EMPTY, session };
      default:
        return jsonError(405, "UNSUPPORTED", `${ex.entry.method} on an upload session`);
    }
  }

  function commitBlob(name: string, digest: string, bytes: Uint8Array): Reply {
    const actual = sha256Digest(bytes);
    if (digest !== actual) return jsonError(400, "DIGEST_INVALID", `?digest=${digest} but the ${bytes.byteLength} bytes hash to ${actual}`);
    blobs.set(digest, new Uint8Array(bytes));
    return { status: 201, headers: { location: `/v2/${name}/blobs/${digest}`, "docker-content-digest": digest }, body: EMPTY };
  }

  function getBlob(digest: string): Reply {
    const bytes = blobs.get(digest);
    if (bytes === undefined) return jsonError(404, "BLOB_UNKNOWN", `blob ${digest} is unknown`);
    return { status: 200, headers: { "content-type": "application/octet-stream", "docker-content-digest": digest }, body: bytes };
  }

  function putManifestRoute(ex: Exchange, name: string, ref: string, body: Buffer): Reply {
    const contentType = ex.entry.headers["content-type"];
    if (contentType === undefined) return jsonError(400, "MANIFEST_INVALID", "manifest PUT without Content-Type");
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString("utf8"));
    } catch {
      return jsonError(400, "MANIFEST_INVALID", "manifest is not JSON");
    }
    const missing = referencedDigests(doc).find((d) => !blobs.has(d) && !manifests.has(`${name}@${d}`));
    if (missing !== undefined) return jsonError(400, "MANIFEST_BLOB_UNKNOWN", `manifest references ${missing}, which is not here`);
    const digest = sha256Digest(body);
    if (ref.includes(":") && ref !== digest) return jsonError(400, "DIGEST_INVALID", `PUT by digest ${ref} but the bytes hash to ${digest}`);
    storeManifest(name, ref, body, contentType);
    return { status: 201, headers: { location: `/v2/${name}/manifests/${digest}`, "docker-content-digest": digest }, body: EMPTY };
  }

  function storeManifest(name: string, ref: string, bytes: Uint8Array, contentType: string): string {
    const digest = sha256Digest(bytes);
    const stored = { contentType, bytes: new Uint8Array(bytes) };
    manifests.set(ref.includes(":") ? `${name}@${ref}` : `${name}:${ref}`, stored);
    manifests.set(`${name}@${digest}`, stored);
    return digest;
  }

  function getManifest(name: string, ref: string): Reply {
    const stored = manifests.get(ref.includes(":") ? `${name}@${ref}` : `${name}:${ref}`);
    if (stored === undefined) return jsonError(404, "MANIFEST_UNKNOWN", `manifest ${ref} is not in ${name}`);
    return { status: 200, headers: { "content-type": stored.contentType, "docker-content-digest": sha256Digest(stored.bytes) }, body: stored.bytes };
  }

  // ---- behaviours ----

  function applyServe(ex: Exchange, b: ServeBehaviour, reply: Reply): Reply {
    const headers = { ...reply.headers };
    const location = headers.location;
    if (b.location !== undefined && location !== undefined) {
      const base = b.location === "absolute" ? urls[ex.origin] : urls[b.location];
      const parsed = new URL(location, urls[ex.origin]);
      headers.location = `${base}${parsed.pathname}${parsed.search}`;
    }
    const session = reply.session;
    if (b.range !== undefined && session !== undefined && headers.range !== undefined) {
      const state: RangeState = { received: session.received, answers: session.answers, lastReportedEnd: session.lastReportedEnd };
      if (b.range === "rewind") headers.range = "0-0";
      else if (b.range === "backwards") {
        const step = b.backStep ?? 1;
        const from = session.lastReportedEnd ?? session.received - 1;
        const end = Math.max(0, from - step);
        headers.range = `0-${end}`;
      } else headers.range = b.range(state);
      session.answers++;
      const end = Number(/^\d+-(-?\d+)$/.exec(headers.range)?.[1] ?? NaN);
      session.lastReportedEnd = Number.isFinite(end) ? end : session.lastReportedEnd;
    }
    if (b.chunkMin !== undefined) headers["oci-chunk-min-length"] = b.chunkMin;
    if (b.chunkMax !== undefined) headers["oci-chunk-max-length"] = b.chunkMax;
    for (const [name, value] of Object.entries(b.headers ?? {})) headers[name.toLowerCase()] = value;
    return { ...reply, headers };
  }

  function perform(ex: Exchange, b: Behaviour): void {
    const { entry, req, res } = ex;
    switch (b.kind) {
      case "serve":
        void ex.body.then((body) => {
          const reply = applyServe(ex, b, api(ex, body));
          send(ex, reply.status, reply.headers, reply.body);
        });
        return;
      case "status":
        void ex.body.then(() => send(ex, b.status, b.headers ?? {}, typeof b.body === "string" ? Buffer.from(b.body) : (b.body ?? EMPTY)));
        return;
      case "error":
        void ex.body.then(() => {
          const reply = jsonError(b.status, b.code ?? "UNKNOWN", b.message, b.detail ?? null, b.headers ?? {});
          send(ex, reply.status, reply.headers, reply.body);
        });
        return;
      case "challenge":
        void ex.body.then(() => {
          const realmOrigin = b.realm ?? ex.origin;
          const header = challengeHeader(b.scheme, realmOrigin, b.service ?? DEFAULT_SERVICE, `hostile ${ex.origin}`, repoScope(ex.url.pathname), b.error);
          const reply = jsonError(401, "UNAUTHORIZED", "authentication required", null, { "www-authenticate": header });
          send(ex, reply.status, reply.headers, reply.body);
        });
        return;
      case "redirect":
        void ex.body.then(() => send(ex, b.status, { location: b.url ?? `${urls[b.to]}${entry.target}` }));
        return;
      case "stream":
        void ex.body.then(() => stream(ex, b));
        return;
      case "silent":
        entry.status = "silent";
        if (b.readBody === false) req.pause();
        changed();
        return;
      case "delay":
        later(b.ms, () => perform(ex, b.then ?? { kind: "serve" }));
        return;
      case "reset":
        entry.status = "reset";
        entry.doneAt = now();
        req.socket.destroy();
        changed();
        return;
      case "raw":
        void ex.body.then(() => {
          entry.status = "raw";
          const bytes = typeof b.bytes === "string" ? Buffer.from(b.bytes, "latin1") : b.bytes;
          req.socket.write(bytes, () => {
            entry.responseBytes += bytes.byteLength;
            changed();
          });
          req.socket.end();
          res.on("error", () => undefined);
        });
        return;
    }
  }

  function stream(ex: Exchange, b: StreamBehaviour): void {
    const { res, entry } = ex;
    if (res.destroyed) return;
    const prefix = Buffer.from(b.prefix ?? "");
    const suffix = Buffer.from(b.suffix ?? "");
    const chunkBytes = b.chunkBytes ?? 64 * 1024;
    const fillerText = b.filler ?? "A";
    const filler = Buffer.from(fillerText.repeat(Math.ceil(chunkBytes / Math.max(1, Buffer.byteLength(fillerText))))).subarray(0, chunkBytes);
    const total = b.totalBytes;
    if (total !== undefined && total < prefix.byteLength + suffix.byteLength) {
      send(ex, 500, { "content-type": "text/plain" }, Buffer.from("hostile registry script error: stream totalBytes < prefix + suffix\n"));
      return;
    }
    const limit = Math.min(total ?? Infinity, b.stallAfterBytes ?? Infinity);
    const headers: Record<string, string> = { "content-type": b.contentType ?? JSON_TYPE };
    for (const [name, value] of Object.entries(b.headers ?? {})) headers[name.toLowerCase()] = value;
    if (total !== undefined && b.declareLength !== false) headers["content-length"] = String(total);
    entry.status = b.status;
    entry.responseHeaders = headers;
    if (!writeHead(ex, b.status, headers)) return;
    changed();
    let produced = 0;
    /** The next piece of the body: prefix, filler, then the suffix's bytes as the total nears. */
    const next = (): Buffer => {
      const want = Math.min(chunkBytes, limit - produced);
      if (produced < prefix.byteLength) return prefix.subarray(produced, produced + want);
      if (total === undefined) return filler.subarray(0, want);
      const suffixStart = total - suffix.byteLength;
      if (produced >= suffixStart) return suffix.subarray(produced - suffixStart, produced - suffixStart + want);
      return filler.subarray(0, Math.min(want, suffixStart - produced));
    };
    const pump = (): void => {
      while (!res.destroyed && !stopping) {
        if (produced >= limit) {
          if (produced === total) res.end(() => changed());
          return; // stallAfterBytes: leave the connection open
        }
        const piece = next();
        produced += piece.byteLength;
        const flushed = res.write(piece, () => {
          entry.responseBytes += piece.byteLength;
          changed();
        });
        if (b.intervalMs !== undefined) {
          later(b.intervalMs, pump);
          return;
        }
        if (!flushed) {
          res.once("drain", pump);
          return;
        }
      }
    };
    pump();
  }

  // ---- wiring ----

  function handle(origin: OriginName, req: IncomingMessage, res: ServerResponse): void {
    const method = (req.method ?? "GET").toUpperCase();
    const target = req.url ?? "/";
    const url = new URL(target, urls[origin]);
    const rawHeaders: [string, string][] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) rawHeaders.push([req.rawHeaders[i] ?? "", req.rawHeaders[i + 1] ?? ""]);
    const headers: Record<string, string> = {};
    for (const [name, value] of rawHeaders) {
      const key = name.toLowerCase();
      headers[key] = headers[key] === undefined ? value : `${headers[key]}, ${value}`;
    }
    const entry: HostileRequest = {
      seq: requests.length + 1,
      origin,
      method,
      target,
      path: url.pathname,
      query: url.search.replace(/^\?/, ""),
      route: routeOf(method, url.pathname),
      rawHeaders,
      headers,
      authorization: rawHeaders.filter(([name]) => name.toLowerCase() === "authorization").map(([, value]) => value),
      bodyBytes: 0,
      at: now(),
      behaviour: "serve",
      status: 0,
      responseHeaders: {},
      responseBytes: 0,
      clientClosed: false,
    };
    requests.push(entry);
    perOrigin[origin].push(entry);
    req.on("error", () => undefined);
    res.on("error", () => undefined);
    res.on("close", () => {
      if (!res.writableFinished && entry.status !== "reset" && entry.status !== "raw") entry.clientClosed = true;
      entry.doneAt ??= now();
      changed();
    });
    const chunks: Buffer[] = [];
    const body = new Promise<Buffer>((resolve) => {
      req.on("data", (chunk: Buffer) => {
        entry.bodyBytes += chunk.byteLength;
        chunks.push(chunk);
        changed();
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
    });
    const { behaviour, index } = pick(origin, method, entry.route, target);
    entry.behaviour = behaviour.kind;
    if (index !== undefined) entry.rule = index;
    changed();
    perform({ origin, req, res, entry, url, body }, behaviour);
  }

  const servers: http.Server[] = [];
  const address: Record<OriginName, string> = {
    registry: "127.0.0.1",
    foreign: script.foreignAddress ?? "127.0.0.2",
    third: script.thirdAddress ?? "127.0.0.3",
  };
  try {
    for (const origin of ORIGIN_NAMES) {
      const server = http.createServer((req, res) => handle(origin, req, res));
      server.keepAliveTimeout = 60_000;
      server.on("connection", (socket: Socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
      });
      server.on("clientError", (_error: Error, socket: Socket) => socket.destroy());
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, address[origin], () => resolve());
      });
      const bound = server.address();
      if (bound === null || typeof bound === "string") throw new Error(`hostile registry: no address for ${origin}`);
      urls[origin] = `http://${address[origin]}:${bound.port}`;
    }
  } catch (error) {
    for (const server of servers) server.close();
    throw error;
  }

  const makeOrigin = (name: OriginName): HostileOrigin => ({
    name,
    url: urls[name],
    host: urls[name].replace(/^http:\/\//, ""),
    requests: perOrigin[name],
    bytesSent: () => perOrigin[name].reduce((sum, r) => sum + r.responseBytes, 0),
    credentialsSeen: () => perOrigin[name].flatMap((r) => r.authorization),
  });
  const origins: Record<OriginName, HostileOrigin> = {
    registry: makeOrigin("registry"),
    foreign: makeOrigin("foreign"),
    third: makeOrigin("third"),
  };

  const waitUntil = (condition: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`hostile registry: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        changes.off("change", check);
      };
      changes.on("change", check);
      check();
    });

  let stopped: Promise<void> | undefined;
  return {
    url: urls.registry,
    host: origins.registry.host,
    registry: origins.registry,
    foreign: origins.foreign,
    third: origins.third,
    origins,
    requests,
    blobs,
    manifests,
    tokens,
    addRule(rule: HostileRule): void {
      rules.push({ rule, seen: 0 });
    },
    clearRules(): void {
      // Keep positions stable for `HostileRequest.rule`: disable rather than remove.
      for (const entry of rules) entry.rule = { ...entry.rule, times: 0 };
    },
    putBlob(bytes: Uint8Array): string {
      const digest = sha256Digest(bytes);
      blobs.set(digest, new Uint8Array(bytes));
      return digest;
    },
    putManifest: storeManifest,
    async waitForRequest(match, timeoutMs = 10_000, what = "a matching request"): Promise<HostileRequest> {
      let found: HostileRequest | undefined;
      await waitUntil(
        () => {
          found = requests.find(match);
          return found !== undefined;
        },
        timeoutMs,
        what,
      );
      if (found === undefined) throw new Error("unreachable");
      return found;
    },
    waitUntil,
    stop(): Promise<void> {
      stopped ??= (async () => {
        stopping = true;
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        const closing = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
        for (const socket of sockets) socket.destroy();
        await Promise.all(closing);
      })();
      return stopped;
    },
  };
}

function routeOf(method: string, path: string): RouteName {
  if (path === "/token" || path.startsWith("/token/")) return "token";
  if (path === "/v2/" || path === "/v2") return "ping";
  if (/^\/v2\/.+\/blobs\/uploads\/?$/.test(path) && method === "POST") return "upload-start";
  if (/^\/v2\/.+\/blobs\/uploads\/[^/]+$/.test(path)) return "upload";
  if (/^\/v2\/.+\/blobs\/[^/]+$/.test(path)) return "blob";
  if (/^\/v2\/.+\/manifests\/[^/]+$/.test(path)) return "manifest";
  return "other";
}

function truncate(session: UploadSession, length: number): void {
  if (length === session.received) return;
  session.chunks = [Buffer.concat(session.chunks).subarray(0, length)];
  session.received = length;
}

function append(session: UploadSession, body: Buffer): void {
  if (body.byteLength === 0) return;
  session.chunks.push(body);
  session.received += body.byteLength;
}

/** Digests an image manifest (config, layers) or index (manifests) refers to; must be present to PUT it. */
function referencedDigests(doc: unknown): string[] {
  if (!isRecord(doc)) return [];
  const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
  const descriptors = [doc.config, ...list(doc.layers), ...list(doc.manifests)];
  return descriptors.flatMap((d) => (isRecord(d) && typeof d.digest === "string" ? [d.digest] : []));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}
