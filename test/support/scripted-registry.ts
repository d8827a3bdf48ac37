/**
 * A small scripted registry for the client's unit tests: a recording Bun.serve server (transport-servers'
 * recordingServer, closed by its closeAll) whose answers a test writes per method, for behaviour the real
 * servers cannot be made to show on demand (redirects to storage, lying digests, short Ranges, 401 on
 * POST, sessions that vanish). Methods a script leaves out answer like an empty registry: HEAD 404 (no
 * such blob), POST 202 with an upload Location, GET /v2/ 200, anything else 404. With `basic`, every
 * request without those credentials gets a Basic challenge first, as docker-registry's htpasswd does.
 * Also the client and logger every such test builds.
 */
import type { Logger } from "../../src/log.ts";
import { type Credentials, RegistryClient } from "../../src/registry/client.ts";
import { recordingServer, type SeenRequest } from "./transport-servers.ts";

/** One method's answer; `body` is the request body, already read (and recorded). */
export type Route = (request: Request, url: URL, body: Uint8Array) => Response | Promise<Response>;

export interface RegistryScript {
  /** Credentials a request must carry; without them it gets `401 WWW-Authenticate: Basic`. */
  basic?: Credentials;
  head?: Route;
  post?: Route;
  patch?: Route;
  put?: Route;
  get?: Route;
  delete?: Route;
}

/** The Location the default POST answers with. */
export const UPLOAD_LOCATION = "/v2/r/blobs/uploads/1";

export function basicHeader({ username, password }: Credentials): string {
  return `Basic ${btoa(`${username}:${password}`)}`;
}

const DEFAULTS: Required<Omit<RegistryScript, "basic">> = {
  head: () => new Response(null, { status: 404 }),
  post: () => new Response(null, { status: 202, headers: { Location: UPLOAD_LOCATION } }),
  get: (_request, url) => new Response(url.pathname === "/v2/" ? "{}" : null, { status: url.pathname === "/v2/" ? 200 : 404 }),
  patch: () => new Response(null, { status: 404 }),
  put: () => new Response(null, { status: 404 }),
  delete: () => new Response(null, { status: 404 }),
};

/** Starts a scripted registry on 127.0.0.1; `seen` records every request (with its body). */
export function scriptedRegistry(script: RegistryScript = {}): { host: string; seen: SeenRequest[] } {
  const expected = script.basic && basicHeader(script.basic);
  return recordingServer((request, body) => {
    if (expected && request.headers.get("authorization") !== expected) {
      return new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="scripted"' } });
    }
    const method = request.method.toLowerCase() as keyof typeof DEFAULTS;
    const route = script[method] ?? DEFAULTS[method] ?? (() => new Response(null, { status: 405 }));
    return route(request, new URL(request.url), body);
  });
}

export interface TestClientOptions {
  credentials?: Credentials;
  /** Retries after the first attempt; default 2, backing off 1-5 ms. */
  retries?: number;
  idleTimeoutMs?: number;
  log?: Logger;
  signal?: AbortSignal;
  /** Plain http (the scripted servers' scheme); default true. */
  insecure?: boolean;
  scope?: string[];
  repository?: string;
}

/** A RegistryClient for repository `r` of `host`, with fast retries. */
export function testClient(host: string, options: TestClientOptions = {}): RegistryClient {
  return new RegistryClient({
    host,
    insecure: options.insecure ?? true,
    credentials: options.credentials,
    repository: options.repository ?? "r",
    scope: options.scope,
    idleTimeoutMs: options.idleTimeoutMs,
    retry: { retries: options.retries ?? 2, baseMs: 1, maxMs: 5 },
    log: options.log,
    signal: options.signal,
  });
}

/** A logger that keeps its lines (warnings prefixed `warning: `, as the CLI prints them). */
export function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(m), warn: (m) => lines.push(`warning: ${m}`) };
}

/** A logger that drops everything. */
export const quietLog: Logger = { info: () => undefined, warn: () => undefined };

/** The message `promise` rejects with; fails the test if it resolves. */
export async function messageOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("it succeeded");
}
