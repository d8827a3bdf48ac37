import nodeFetch from "node-fetch";
import { Authenticator, type Credentials } from "./auth.ts";
import { PushError, RegistryError } from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import { describeFailure } from "./failure.ts";
import { backoffMs, DEFAULT_RETRY, isTransientStatus, parseRetryAfter, type RetryPolicy } from "./retry.ts";

// Bun serves node-fetch from its native fetch; this only bridges node-fetch's own type declarations.
const fetch = nodeFetch as unknown as typeof globalThis.fetch;

export type { Credentials } from "./auth.ts";

export interface ClientOptions {
  /** `host[:port]` of the registry. */
  host: string;
  /** Plain http instead of https (INSECURE_HTTP_PUSH). */
  insecure: boolean;
  credentials?: Credentials;
  /** The repository pushed to: the scope of the tokens asked for. */
  repository: string;
  /** Aborts every request in flight: Ctrl-C, or another blob already failed. */
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** A request that moves no byte for this long is abandoned (and retried). */
  idleTimeoutMs?: number;
  /** Where retries are reported. */
  log?: Logger;
}

/**
 * A body produced while it is sent (a blob still being compressed): `length` when known, else chunked
 * transfer encoding. The producer calls `pause()` while it waits for its own bytes, so the idle timer
 * does not mistake a slow producer for a stalled network.
 */
export interface BodySource {
  length?: number;
  open(hooks: { pause(): void; resume(): void }): ReadableStream<Uint8Array>;
}

export type Body = Blob | Uint8Array | string | BodySource;

export interface SendOptions {
  headers?: Record<string, string>;
  body?: Body;
  /** Names the request in retry messages and errors, e.g. `layer 2/5 sha256:...: chunk 3/7`. */
  what?: string;
  /** false: one attempt, the caller recovers itself (a PATCH must ask the server where it stands). */
  retry?: boolean;
  /** Overrides the client's idle timeout, e.g. for a final PUT while the server assembles parts. */
  idleTimeoutMs?: number;
  /** Not cancelled by the run's abort signal: cleanup requests after Ctrl-C or a failure. */
  detached?: boolean;
  /** Bytes of the body handed to the connection so far. */
  onProgress?: (sent: number) => void;
  /** Hand back the answer with its body unread (blob downloads); redirects are still followed. */
  stream?: boolean;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** A request that got no answer (refused, reset, cut, idle): the caller may resume or retry. */
export class NetworkError extends PushError {
  constructor(
    what: string,
    readonly reason: string,
    readonly attempts: number,
  ) {
    super(`${what}: ${reason}${attempts > 1 ? ` (gave up after ${attempts} attempts)` : ""}`);
  }
}

/** Thrown inside a request that moved no byte for too long; retried like a dropped connection. */
class IdleTimeout extends Error {
  constructor(ms: number) {
    super(`no progress for ${Math.round(ms / 1000)} s`);
  }
}

/**
 * Reads a raw fetch response we only need the headers of to its end, so its connection can be reused.
 * (Answers from `send` arrive with their bodies read already.)
 */
async function drain(response: Response): Promise<void> {
  await response.arrayBuffer().catch(() => undefined);
}

/**
 * One registry, one scheme, one set of credentials. Every request goes through `send`, which retries
 * transient failures with backoff, abandons requests that stop moving, resolves relative `Location`s,
 * and follows redirects itself so `Authorization` never travels to another host (storage back ends
 * hand out pre-signed URLs).
 */
export class RegistryClient {
  readonly base: string;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;
  private readonly log: Logger;
  /** The credentials passed GET /v2/: a later 401 means "not allowed", not "wrong password". */
  private readAccepted = false;
  /** Bytes per ms of the slowest upload so far; unknown until a large body went through. */
  private linkRate?: number;

  constructor(private readonly options: ClientOptions) {
    this.base = `${options.insecure ? "http" : "https"}://${options.host}`;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.log = options.log ?? silentLogger;
    this.auth = new Authenticator(
      options.credentials,
      `repository:${options.repository}:pull,push`,
      (url, headers) => this.fetchToken(url, headers),
      !options.insecure,
    );
  }

  get retries(): number {
    return this.retry.retries;
  }

  /**
   * The same registry session (credentials already accepted, tokens, the link's pace) under another
   * abort signal: a repaired push starts clean without asking for credentials again.
   */
  fork(signal: AbortSignal): RegistryClient {
    const fork = new RegistryClient({ ...this.options, signal });
    Object.assign(fork, { auth: this.auth, readAccepted: this.readAccepted, linkRate: this.linkRate });
    return fork;
  }

  /** The run's abort signal, for work that waits on something other than a request. */
  get signal(): AbortSignal | undefined {
    return this.options.signal;
  }

  /** An absolute URL for a path or a `Location` the registry gave (which may be relative). */
  url(target: string): string {
    return new URL(target, this.base).toString();
  }

  async send(method: string, target: string, options: SendOptions = {}): Promise<Response> {
    const what = options.what ?? `${method} ${new URL(this.url(target)).pathname}`;
    const retries = options.retry === false ? 0 : this.retry.retries;
    let reauthenticated = false;
    for (let attempt = 1; ; attempt++) {
      let reason: string;
      let retryAfter: number | undefined;
      try {
        const { response, authorization } = await this.attempt(method, target, options);
        // A 401 is the registry asking for (new) credentials: answer it once per request.
        if (response.status === 401 && !reauthenticated) {
          reauthenticated = true;
          if (await this.auth.unauthorized(response.headers.get("www-authenticate"), authorization)) {
            attempt--;
            continue;
          }
        }
        if (!isTransientStatus(response.status) || attempt > retries) return response;
        reason = `HTTP ${response.status}`;
        retryAfter = parseRetryAfter(response.headers.get("retry-after"), Date.now());
      } catch (error) {
        if (!options.detached) this.options.signal?.throwIfAborted();
        if (error instanceof PushError) throw error;
        reason = describeNetworkError(error);
        if (isCertificateError(error)) {
          throw new PushError(
            `${what}: ${reason}: the registry's TLS certificate is not trusted; if it is yours, trust its CA with NODE_EXTRA_CA_CERTS=<ca.pem>`,
          );
        }
        if (attempt > retries) throw new NetworkError(what, reason, attempt);
      }
      const wait = this.backoff(attempt, retryAfter);
      this.log.warn(`${what}: ${reason}; retrying in ${(wait / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${retries + 1})`);
      await sleep(wait, options.detached ? undefined : this.options.signal);
    }
  }

  /** Time for `bytes` still in socket buffers to reach the registry, at the slowest pace seen. */
  private drainMs(bytes: number): number {
    return Math.min(bytes, BUFFERED_MAX) / (this.linkRate ?? FLOOR_RATE);
  }

  /** What an upload took from its first byte to the answer: the link's pace, and then some. */
  private learnRate(bytes: number, ms: number): void {
    if (bytes < 1024 * 1024) return;
    const rate = bytes / Math.max(ms, 1);
    this.linkRate = Math.min(this.linkRate ?? rate, rate);
  }

  /** A token service is a server too: its transient failures are retried like the registry's. */
  private async fetchToken(url: string, headers: Record<string, string>): Promise<Response> {
    const what = `token service ${new URL(url).origin}`;
    for (let attempt = 1; ; attempt++) {
      let reason: string;
      let retryAfter: number | undefined;
      try {
        this.options.signal?.throwIfAborted();
        const response = await fetch(url, { headers, redirect: "manual", signal: AbortSignal.timeout(30_000) });
        if (!isTransientStatus(response.status) || attempt > this.retry.retries) return response;
        reason = `HTTP ${response.status}`;
        retryAfter = parseRetryAfter(response.headers.get("retry-after"), Date.now());
        await drain(response);
      } catch (error) {
        this.options.signal?.throwIfAborted();
        reason = describeNetworkError(error);
        if (attempt > this.retry.retries) throw new NetworkError(what, reason, attempt);
      }
      const wait = this.backoff(attempt, retryAfter);
      this.log.warn(`${what}: ${reason}; retrying in ${(wait / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${this.retry.retries + 1})`);
      await this.sleep(wait);
    }
  }

  /** The wait before attempt `attempt + 1`, for callers that retry on their own (resumed chunks). */
  backoff(attempt: number, retryAfterMs?: number): number {
    return backoffMs(attempt, this.retry, retryAfterMs);
  }

  /** Waits, but gives up at once when the run is aborted. */
  sleep(ms: number): Promise<void> {
    return sleep(ms, this.options.signal);
  }

  /**
   * `GET /v2/`: proves the scheme, the host and the credentials before any heavy work, and explains
   * each way that can fail.
   */
  async ping(): Promise<void> {
    const { host, credentials, insecure } = this.options;
    let response: Response;
    try {
      response = await this.send("GET", "/v2/", { retry: false, what: `cannot reach ${this.base}` });
    } catch (error) {
      if (!(error instanceof NetworkError)) throw error;
      if (!insecure && (await this.answersPlainHttp())) {
        throw new PushError(`registry ${host} answers over plain http, not https: set INSECURE_HTTP_PUSH=true to push to it`);
      }
      response = await this.send("GET", "/v2/", { what: `cannot reach ${this.base}` });
    }
    if (isTransientStatus(response.status)) response = await this.send("GET", "/v2/", { what: `registry ${host}` });
    if (response.ok) {
      this.readAccepted = credentials !== undefined;
      return;
    }
    if (response.status === 401) {
      throw new PushError(
        credentials
          ? `registry ${host} rejected the username "${credentials.username}" or its password (HTTP 401)`
          : `registry ${host} requires authentication: set USERNAME_REGISTRY=<user> and pipe the password on stdin`,
      );
    }
    throw await this.failure(response, `registry ${host} did not answer GET /v2/ as a registry`);
  }

  /** A RegistryError describing a response we cannot continue from, with `context` in front. */
  async failure(response: Response, context: string): Promise<RegistryError> {
    const body = await response.text().catch(() => "");
    const failure = describeFailure(response.status, response.statusText, response.headers.get("content-type") ?? "", body);
    const plain = failure.text.replace(/ \(the registry did not accept.*\)$/, "");
    const { credentials } = this.options;
    let text = failure.text;
    if (response.status === 401 && !credentials) {
      text = `the registry requires authentication (${plain}): set USERNAME_REGISTRY=<user> and pipe the password on stdin`;
    } else if (response.status === 401 && this.readAccepted) {
      // serverless-registry answers a READONLY user's write with the same 401 as a wrong password.
      text = `the registry accepted user "${credentials?.username}" for reading but refused this (${plain}): is it a read-only user?`;
    }
    return new RegistryError(`${context}: ${text}`, failure.status, failure.code);
  }

  /**
   * One attempt: redirects followed by hand, an idle watch over the body going out and the answer
   * coming back. The answer's body (registries send small JSON or HTML) is read here, under the same
   * watch and abort signal, so a response that stalls mid-body cannot hang the caller.
   */
  private async attempt(method: string, target: string, options: SendOptions): Promise<{ response: Response; authorization?: string }> {
    const outer = options.detached ? undefined : this.options.signal;
    outer?.throwIfAborted();
    const controller = new AbortController();
    const watch = new IdleWatch(options.idleTimeoutMs ?? this.options.idleTimeoutMs ?? 60_000, controller, (bytes) => this.drainMs(bytes));
    const started = Date.now();
    const cancel = () => controller.abort(outer?.reason);
    outer?.addEventListener("abort", cancel, { once: true });
    try {
      const authorization = await this.auth.header();
      let url = this.url(target);
      for (let hop = 0; ; hop++) {
        const headers: Record<string, string> = { ...options.headers };
        if (authorization && new URL(url).origin === new URL(this.base).origin) {
          headers.Authorization = authorization;
        }
        const body = prepareBody(options.body, headers, watch, options.onProgress);
        const init = { method, headers, body, redirect: "manual", signal: controller.signal, duplex: "half" };
        const fetched = await fetch(url, init as RequestInit).catch((error: unknown) => {
          throw controller.signal.aborted ? controller.signal.reason : error;
        });
        watch.answered();
        if (options.body instanceof Blob) this.learnRate(options.body.size, Date.now() - started);
        else if (isBodySource(options.body) && options.body.length !== undefined) this.learnRate(options.body.length, Date.now() - started);
        const response = await (options.stream && !REDIRECTS.has(fetched.status) ? Promise.resolve(withUrl(fetched, url)) : buffered(fetched, url)).catch((error: unknown) => {
          throw controller.signal.aborted ? controller.signal.reason : error;
        });
        const location = response.headers.get("location");
        if (!REDIRECTS.has(response.status) || !location || method === "POST" || hop >= 5) return { response, authorization };
        url = new URL(location, url).toString();
        if (response.status === 303) {
          method = "GET";
          options = { ...options, body: undefined };
        }
      }
    } finally {
      watch.stop();
      outer?.removeEventListener("abort", cancel);
    }
  }

  /**
   * Whether the host speaks registry over plain http. Only an answer that looks like a registry's
   * counts: a TLS server answering http with 400, or a port-80 redirector, must not make us suggest
   * sending the password in clear.
   */
  private async answersPlainHttp(): Promise<boolean> {
    try {
      const response = await fetch(`http://${this.options.host}/v2/`, { redirect: "manual", signal: AbortSignal.timeout(5000) });
      await drain(response);
      return response.headers.has("docker-distribution-api-version") || response.status === 200 || response.status === 401;
    } catch {
      return false;
    }
  }
}

function isBodySource(body: unknown): body is BodySource {
  return typeof body === "object" && body !== null && typeof (body as BodySource).open === "function";
}

/**
 * File bodies are streamed through a counter so the idle watch sees progress and callers can report
 * it; the exact Content-Length is still sent (registries refuse chunked transfer encoding).
 */
function prepareBody(
  body: Body | undefined,
  headers: Record<string, string>,
  watch: IdleWatch,
  onProgress?: (sent: number) => void,
): RequestInit["body"] {
  if (isBodySource(body)) {
    if (body.length !== undefined) headers["Content-Length"] = String(body.length);
    let sent = 0;
    const stream = body.open({ pause: () => watch.pause(), resume: () => watch.read() });
    return stream.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          sent += chunk.byteLength;
          watch.read();
          onProgress?.(sent);
          controller.enqueue(chunk);
        },
        flush: () => watch.bodyRead(sent),
      }),
    );
  }
  if (!(body instanceof Blob)) return body;
  headers["Content-Length"] = String(body.size);
  let sent = 0;
  return body.stream().pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        sent += chunk.byteLength;
        watch.read();
        onProgress?.(sent);
        controller.enqueue(chunk);
      },
      flush: () => watch.bodyRead(body.size),
    }),
  );
}

// Bun and the kernel hold several MB of a body in socket buffers after it has been read (8 MB seen
// on loopback). Until an upload showed the link's pace, assume a slow one: 128 kB/s.
const BUFFERED_MAX = 16 * 1024 * 1024;
const FLOOR_RATE = 128;

/**
 * Abandons a request that stops moving. Every block read from the body counts as progress; once the
 * whole body is read, what still sits in socket buffers needs time to drain at the link's pace, so
 * the watch allows for that before calling the request stalled.
 */
class IdleWatch {
  private timer?: ReturnType<typeof setTimeout>;

  constructor(
    private readonly ms: number,
    private readonly controller: AbortController,
    private readonly drainMs: (bytes: number) => number,
  ) {
    this.arm(ms);
  }

  read(): void {
    this.arm(this.ms);
  }

  /** The body's producer is waiting for its own bytes: not the network's fault, so no timeout. */
  pause(): void {
    clearTimeout(this.timer);
  }

  bodyRead(size: number): void {
    this.arm(this.ms + this.drainMs(size));
  }

  /** Headers arrived: the answer's body gets the plain idle time. */
  answered(): void {
    this.arm(this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.controller.abort(new IdleTimeout(this.ms)), ms);
  }
}

function withUrl(response: Response, url: string): Response {
  if (!response.url) Object.defineProperty(response, "url", { value: url });
  return response;
}

/** The response with its (small) body already read, so no caller can hang on it later. */
async function buffered(response: Response, url: string): Promise<Response> {
  const bytes = await response.arrayBuffer();
  // A null body for empty answers: Response refuses a body with 204, 205 or 304.
  const copy = new Response(bytes.byteLength ? bytes : null, { status: response.status, statusText: response.statusText, headers: response.headers });
  // Locations are resolved against the URL that answered.
  Object.defineProperty(copy, "url", { value: url });
  return copy;
}

// Retrying cannot make a certificate trusted.
function isCertificateError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code);
}

function describeNetworkError(error: unknown): string {
  if (error instanceof IdleTimeout) return error.message;
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  if (code && message && !message.startsWith(code)) return `${code}: ${message}`;
  return message || code || String(error);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", stop);
      resolve();
    }, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", stop, { once: true });
  });
}
