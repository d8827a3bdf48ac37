/**
 * One registry, one scheme, one set of credentials: the facade over the transport layers in
 * `transport/` (scheme, auth, retry, redirects, idle timeout, bounded bodies).
 */
import { Authenticator, type Credentials } from "./auth.ts";
import { PushError, RegistryError } from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import { describeFailure, type FailureDetails } from "./failure.ts";
import { backoffMs, DEFAULT_RETRY, type RetryPolicy } from "./retry.ts";
import { terminalSafe } from "./sanitize.ts";
import { authorize, originOf } from "./transport/authorize.ts";
import type { RequestBody } from "./transport/body.ts";
import { DEFAULT_BODY_LIMIT, ERROR_BODY_LIMIT, readTextBounded, TOKEN_BODY_LIMIT } from "./transport/bounded.ts";
import type { ConnectionFailure } from "./transport/connection-errors.ts";
import { LinkPace } from "./transport/idle-watch.ts";
import { followRedirects } from "./transport/redirects.ts";
import { retrying } from "./transport/retrying.ts";
import { answersHttps, answersPlainHttp, baseUrl, isHttpToHttpsAnswer } from "./transport/scheme.ts";
import type { RoundTrip, TransportRequest } from "./transport/types.ts";
import { sentBodyBytes, wire } from "./transport/wire.ts";

export type { Credentials } from "./auth.ts";
export type { Body, BodyHooks, BodySource } from "./transport/body.ts";
export { BodyTooLarge, DEFAULT_BODY_LIMIT, ERROR_BODY_LIMIT, MANIFEST_BODY_LIMIT, TOKEN_BODY_LIMIT } from "./transport/bounded.ts";
export { NetworkError } from "./transport/network-error.ts";
export { MAX_REDIRECTS } from "./transport/redirects.ts";
export type { FailureDetails } from "./failure.ts";

export interface ClientOptions {
  /** `host[:port]` of the registry. */
  host: string;
  /** Plain http instead of https (INSECURE_HTTP_PUSH). */
  insecure: boolean;
  credentials?: Credentials;
  /** The repository worked on: names the default token scope. */
  repository: string;
  /**
   * What tokens are asked for; default `repository:<repository>:pull,push`. A registry only read
   * from (the source of a copy) takes `["repository:<repository>:pull"]`.
   */
  scope?: string[];
  /** Aborts every request in flight: Ctrl-C, or another blob already failed. */
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** A request that moves no byte for this long is abandoned (and retried); the token service's too. */
  idleTimeoutMs?: number;
  /** Where retries are reported. */
  log?: Logger;
  /**
   * What to do when the registry wants credentials we lack or refuses ours; default: set USERNAME_REGISTRY
   * and pipe the password. A source registry's credentials come from the Docker config instead.
   */
  loginHint?: string;
}

const LOGIN_HINT = "set USERNAME_REGISTRY=<user> and pipe the password on stdin";

export interface SendOptions {
  headers?: Record<string, string>;
  /**
   * A string, bytes, a Blob (file slices stream from disk with their exact length), or a BodySource
   * produced while it is sent (exact Content-Length with `length`, chunked transfer encoding without).
   */
  body?: RequestBody;
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
  /**
   * Leave a successful (2xx) answer's body unread and return it as a stream, e.g. a blob GET. Reading
   * it stays under the idle timeout (counted only while the reader waits) and the abort signal; a
   * break midway rejects the read with a NetworkError. Other answers arrive read, as always.
   */
  stream?: boolean;
  /**
   * The most of a successful answer's body read before `send` returns (default 64 KiB; pass
   * MANIFEST_BODY_LIMIT for a manifest GET). Past it `send` rejects with BodyTooLarge.
   */
  maxBodyBytes?: number;
}

/**
 * Every request goes through `send`: resolved against the registry, authorized for the registry's
 * origin only, retried on transient failures with backoff, redirected by hand, abandoned when it stops
 * moving, and answered with a body read under a bound (so no caller can hang on it, or be flooded).
 */
export class RegistryClient {
  readonly base: string;
  private readonly origin: string;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;
  private readonly log: Logger;
  private readonly transport: RoundTrip;
  private readonly tokenTransport: RoundTrip;
  /** The credentials passed GET /v2/: a later 401 means "not allowed", not "wrong password". */
  private readAccepted = false;
  private readonly pace: LinkPace;

  constructor(
    private readonly options: ClientOptions,
    shared?: { auth: Authenticator; pace: LinkPace; readAccepted: boolean },
  ) {
    this.base = baseUrl(options.host, options.insecure);
    this.origin = new URL(this.base).origin;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.log = options.log ?? silentLogger;
    this.auth =
      shared?.auth ??
      new Authenticator(
        options.credentials,
        options.scope ?? [`repository:${options.repository}:pull,push`],
        (url, headers) => this.fetchToken(url, headers),
        !options.insecure,
        undefined,
        options.loginHint,
      );
    this.readAccepted = shared?.readAccepted ?? false;
    this.pace = shared?.pace ?? new LinkPace();
    const pace = this.pace;
    const retryOptions = { policy: this.retry, log: this.log, sleep };
    this.transport = authorize(retrying(followRedirects(wire(pace)), retryOptions), this.auth, this.origin);
    // A token service is a server too, under the same timeout and retries; it never redirects us.
    this.tokenTransport = retrying(wire(pace), retryOptions);
  }

  get retries(): number {
    return this.retry.retries;
  }

  /** The run's abort signal, for work that waits on something other than a request. */
  get signal(): AbortSignal | undefined {
    return this.options.signal;
  }

  /**
   * The same registry session (credentials already accepted, tokens, the link's pace) under another
   * abort signal: a repaired push starts clean without asking for credentials again.
   */
  fork(signal: AbortSignal): RegistryClient {
    return new RegistryClient({ ...this.options, signal }, { auth: this.auth, pace: this.pace, readAccepted: this.readAccepted });
  }

  /** An absolute URL for a path or a `Location` the registry gave (which may be relative). */
  url(target: string): string {
    return new URL(target, this.base).toString();
  }

  send(method: string, target: string, options: SendOptions = {}): Promise<Response> {
    return this.transport(this.request(method, target, options));
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
    const signal = this.options.signal;
    // A host that cannot be found or never answers would not answer the other scheme either.
    const probeMs = Math.min(5000, this.idleTimeoutMs);
    const wrongScheme = async (failure: ConnectionFailure) => {
      if (failure.kind === "dns" || failure.kind === "idle") return;
      if (!insecure && (await answersPlainHttp(host, probeMs, signal))) throw new PushError(plainHttpHint(host));
      if (insecure && (await answersHttps(host, probeMs, signal))) throw new PushError(httpsHint(host));
    };
    const request = this.request("GET", "/v2/", { what: "cannot reach the registry" });
    const response = await this.transport({ ...request, afterFirstFailure: wrongScheme });
    if (response.ok) {
      this.readAccepted = credentials !== undefined;
      return;
    }
    if (insecure && response.status === 400) {
      const { text } = await readTextBounded(response.clone() as Response, ERROR_BODY_LIMIT);
      if (isHttpToHttpsAnswer(response.status, text) || (await answersHttps(host, probeMs, signal))) throw new PushError(httpsHint(host));
    }
    if (response.status === 401 && originOf(response.url) === this.origin) {
      throw new PushError(
        credentials
          ? `registry ${host} rejected the username "${terminalSafe(credentials.username)}" or its password (HTTP 401)`
          : `registry ${host} requires authentication: ${this.options.loginHint ?? LOGIN_HINT}`,
      );
    }
    throw await this.failure(response, `registry ${host} did not answer GET /v2/ as a registry`);
  }

  /**
   * A RegistryError describing a response we cannot continue from, with `context` in front. The body
   * is read with a bound; `details.bodyBytes` (else the size of the body this client sent) sizes a
   * 413's --chunk-size hint.
   */
  async failure(response: Response, context: string, details: FailureDetails = {}): Promise<RegistryError> {
    const { text: body } = await readTextBounded(response, ERROR_BODY_LIMIT).catch(() => ({ text: "" }));
    const bodyBytes = details.bodyBytes ?? sentBodyBytes(response);
    const failure = describeFailure(response.status, response.statusText, response.headers.get("content-type") ?? "", body, { bodyBytes });
    const plain = failure.text.replace(/ \(the registry did not accept.*\)$/, "");
    const { credentials } = this.options;
    const from = originOf(response.url);
    let text = failure.text;
    if (response.status === 401 && from !== undefined && from !== this.origin) {
      // Storage behind a redirect or an absolute Location asked for credentials: it gets none.
      text = `${plain} from ${from}, which is not the registry: credentials go only to ${this.origin} and the token service it names`;
    } else if (response.status === 401 && !credentials) {
      text = `the registry requires authentication (${plain}): ${this.options.loginHint ?? LOGIN_HINT}`;
    } else if (response.status === 401 && this.options.loginHint && !this.readAccepted) {
      text = `the registry did not accept the credentials (${plain}): ${this.options.loginHint}`;
    } else if (response.status === 401 && this.readAccepted) {
      // serverless-registry answers a READONLY user's write with the same 401 as a wrong password.
      text = `the registry accepted user "${terminalSafe(credentials?.username ?? "")}" for reading but refused this (${plain}): is it a read-only user?`;
    }
    return new RegistryError(`${context}: ${text}`, failure.status, failure.code);
  }

  private request(method: string, target: string, options: SendOptions): TransportRequest {
    const url = this.url(target);
    return {
      method,
      url,
      headers: { ...options.headers },
      body: options.body,
      what: options.what ?? `${method} ${new URL(url).pathname}`,
      idleTimeoutMs: options.idleTimeoutMs ?? this.idleTimeoutMs,
      signal: options.detached ? undefined : this.options.signal,
      onProgress: options.onProgress,
      retry: options.retry !== false,
      stream: options.stream === true,
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_BODY_LIMIT,
    };
  }

  /** How long a request may move no byte before it is abandoned (`--timeout`). */
  get idleTimeoutMs(): number {
    return this.options.idleTimeoutMs ?? 60_000;
  }

  private fetchToken(url: string, headers: Record<string, string>): Promise<Response> {
    return this.tokenTransport({
      method: "GET",
      url,
      headers,
      what: `token service ${new URL(url).origin}`,
      idleTimeoutMs: this.idleTimeoutMs,
      signal: this.options.signal,
      retry: true,
      stream: false,
      maxBodyBytes: TOKEN_BODY_LIMIT,
    });
  }
}

function plainHttpHint(host: string): string {
  return `registry ${host} answers over plain http, not https: set INSECURE_HTTP_PUSH=true (or pass --insecure) to push to it`;
}

function httpsHint(host: string): string {
  return `registry ${host} answers over https, not plain http: unset INSECURE_HTTP_PUSH (and drop --insecure) to push to it`;
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
