/**
 * A fault-injecting HTTP proxy for tests, on 127.0.0.1 only. It sits in front of a registry (the
 * serverless-registry emulator or Debian's docker-registry) and forwards everything unchanged, except the
 * requests its rules pick, which it cuts mid-body, answers itself (503, 522, 429 + Retry-After), stalls,
 * answers with serverless-registry's stale-state 416, or resets. Every request is recorded with the body
 * bytes the proxy actually received, so a test can compute how much a client re-sent after a fault.
 *
 * Built on node:http rather than Bun.serve because a test must be able to drop a connection halfway
 * through a request body (`req.socket.destroy()` after N bytes), which Bun.serve cannot do.
 * How a Bun client sees each fault (checked by test/fault-proxy.test.ts):
 * - cut-body, reset: fetch rejects with a TypeError whose `code` is "ECONNRESET" (message "ECONNRESET: The
 *   socket connection was closed unexpectedly. ...") or, racily while the body is still being written,
 *   "EPIPE" (message `EPIPE fetching "<url>". ...`).
 * - BUT on a reused keep-alive connection fetch itself silently retries GET, HEAD, PUT, DELETE and OPTIONS
 *   once (a PUT with an in-memory body is re-sent whole; one with a Bun.file body is not retried); PATCH
 *   and POST never. Such a fault only reaches the caller with `times: 2`; the proxy records both attempts.
 * - status: an ordinary response (no exception).
 * - stall: no exception from the proxy; a client-side `AbortSignal.timeout()` rejects with a DOMException
 *   named "TimeoutError". The stalled request WAS processed upstream (e.g. a PATCH chunk was stored).
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export type Fault =
  /**
   * Reads `after` bytes of the request body, then destroys the client connection (no response). The
   * request never reaches upstream unless `forward` is true: then the bytes received so far are streamed
   * upstream and the upstream request is aborted too (a connection lost between the edge and the origin,
   * which lets a registry that stores partial bodies, like docker-registry, see a broken PATCH).
   */
  | { kind: "cut-body"; after: number; forward?: boolean }
  /**
   * Answers this without forwarding, after reading the whole request body. With no `body`, 520-524 get a
   * Cloudflare-like HTML error page (Content-Type text/html, Server: cloudflare) and other statuses an
   * empty body.
   */
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string; contentType?: string }
  /** Forwards, but holds upstream's response for `ms` before sending it (the request is processed upstream). */
  | { kind: "stall"; ms: number }
  /**
   * Does not forward: reads the body, asks upstream `GET <same path+query>` (the upload status) and answers
   * 416 with upstream's fresh Location and Range, as serverless-registry does for a stale `_stateHash`.
   * If that GET is not 2xx (e.g. 404 for a session that is gone), its answer is relayed instead.
   */
  | { kind: "stale-416" }
  /** Destroys the connection as soon as the request headers are in, without reading the body. */
  | { kind: "reset" }
  /**
   * Forwards the request (upstream processes it: a final PUT completes the blob), then drops upstream's
   * answer and answers `status` instead: the answer that was lost on the way back.
   */
  | { kind: "lost-answer"; status: number };

export interface FaultRule {
  /** Exact method, case-insensitive; any method when omitted. */
  method?: string;
  /** Substring of the request target (path plus `?query`); any target when omitted. */
  pathIncludes?: string;
  /** true: only requests with `Content-Length: 0` (a PUT that commits uploaded parts); false: only others. */
  emptyBody?: boolean;
  /**
   * 1-based position among the requests matching method+pathIncludes, counted from when the rule was
   * added. Every rule counts every request it matches, even one that another rule faulted.
   */
  nth: number;
  /** How many consecutive matches from the nth on get the fault; default 1, `Infinity` for all of them. */
  times?: number;
  fault: Fault;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  /** Without the leading "?". */
  query: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Bytes of request body the proxy actually received (for a forwarded request: what went upstream). */
  bodyBytes: number;
  /**
   * What the client was answered (for a stall: what upstream answered, even if the client left before it
   * was sent); "cut"/"reset" when the proxy dropped the connection; 0 while in flight or when the client
   * went away before any answer existed.
   */
  status: number | "cut" | "reset";
  /** For a lost answer: what upstream really answered before the proxy replaced it. */
  upstreamStatus?: number;
  faulted: boolean;
  /** The kind of fault applied, when `faulted`. */
  fault?: Fault["kind"];
  /** The client closed the connection before the proxy finished answering (e.g. its timeout fired). */
  clientClosed: boolean;
  /** Ms since the proxy started, when the request headers arrived. */
  at: number;
  /** Ms since the proxy started, when the proxy finished with the request (undefined while in flight). */
  doneAt?: number;
}

export interface FaultProxy {
  /** "http://127.0.0.1:<port>" */
  url: string;
  /** "127.0.0.1:<port>" */
  host: string;
  /** Every request in arrival order; entries are updated in place as requests finish. */
  requests: ProxiedRequest[];
  /**
   * Resolves with the first request (already seen, or seen later) for which `match` holds, checked on
   * every change: a request arriving, upstream answering a forwarded one (even while a stall holds the
   * answer), a request finishing. Rejects after `timeoutMs` (default 30 s). Lets a test act on an event
   * instead of sleeping or polling.
   */
  waitFor(match: (request: ProxiedRequest, index: number, all: ProxiedRequest[]) => boolean, timeoutMs?: number): Promise<ProxiedRequest>;
  addRule(rule: FaultRule): void;
  clearRules(): void;
  /** Destroys every connection (client and upstream) and pending stall at once, then closes the server. */
  stop(): Promise<void>;
}

interface ActiveRule {
  rule: FaultRule;
  seen: number;
}

/** Not forwarded in either direction: they describe one connection, not the message. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]);
/** Dropped from the status GET that stale-416 sends in place of the faulted request. */
const BODY_HEADERS = new Set(["content-length", "content-type", "content-range", "transfer-encoding", "expect"]);

const CLOUDFLARE_REASONS: Record<number, string> = {
  520: "Web server is returning an unknown error",
  521: "Web server is down",
  522: "Connection timed out",
  523: "Origin is unreachable",
  524: "A timeout occurred",
};

export async function startFaultProxy(upstream: string, rules: FaultRule[] = []): Promise<FaultProxy> {
  const upstreamUrl = new URL(upstream);
  if (upstreamUrl.protocol !== "http:") throw new Error(`fault proxy: upstream must be http://, got ${upstream}`);
  const upstreamHost = upstreamUrl.hostname.replace(/^\[(.*)\]$/, "$1");
  const upstreamPort = Number(upstreamUrl.port || 80);

  const started = performance.now();
  const now = (): number => Math.round(performance.now() - started);
  const requests: ProxiedRequest[] = [];
  let active: ActiveRule[] = rules.map((rule) => ({ rule, seen: 0 }));
  const sockets = new Set<Socket>();
  const outgoing = new Set<http.ClientRequest>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let origin = "";
  /** Called on every change a waitFor() may be waiting for. */
  const watchers = new Set<() => void>();
  const changed = (): void => {
    for (const watcher of [...watchers]) watcher();
  };

  /** The first rule whose window the request falls in; every matching rule counts it. */
  function pickFault(method: string, target: string, contentLength: string | undefined): Fault | undefined {
    let chosen: Fault | undefined;
    for (const entry of active) {
      const { rule } = entry;
      if (rule.method !== undefined && rule.method.toUpperCase() !== method) continue;
      if (rule.pathIncludes !== undefined && !target.includes(rule.pathIncludes)) continue;
      if (rule.emptyBody !== undefined && rule.emptyBody !== (contentLength === "0")) continue;
      entry.seen++;
      const times = rule.times ?? 1;
      if (chosen === undefined && entry.seen >= rule.nth && entry.seen < rule.nth + times) chosen = rule.fault;
    }
    return chosen;
  }

  function rewriteLocation(value: string): string {
    let absolute: URL;
    try {
      absolute = new URL(value);
    } catch {
      return value; // relative: stays as it is
    }
    if (absolute.origin !== upstreamUrl.origin) return value;
    return `${origin}${absolute.pathname}${absolute.search}${absolute.hash}`;
  }

  function responseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name === "transfer-encoding") continue;
      out[name] = name === "location" && typeof value === "string" ? rewriteLocation(value) : value;
    }
    return out;
  }

  /** Sends upstream a request with these headers and body source; resolves with its response. */
  function callUpstream(
    method: string,
    target: string,
    headers: Record<string, string | string[]>,
    onRequest: (request: http.ClientRequest) => void,
  ): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const request = http.request({ host: upstreamHost, port: upstreamPort, method, path: target, headers, agent: false }, (response) => {
        response.on("error", () => undefined);
        resolve(response);
      });
      outgoing.add(request);
      request.on("close", () => outgoing.delete(request));
      request.on("error", reject);
      onRequest(request);
    });
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const method = (req.method ?? "GET").toUpperCase();
    const target = req.url ?? "/";
    const parsed = new URL(target, "http://proxy.invalid");
    const entry: ProxiedRequest = {
      method,
      path: parsed.pathname,
      query: parsed.search.replace(/^\?/, ""),
      headers: flatHeaders(req.headers),
      bodyBytes: 0,
      status: 0,
      faulted: false,
      clientClosed: false,
      at: now(),
    };
    requests.push(entry);
    changed();
    const finish = (status: ProxiedRequest["status"]): void => {
      if (entry.doneAt !== undefined) return;
      if (status !== 0) entry.status = status;
      entry.doneAt = now();
      changed();
    };
    // Errors on either side are what this proxy is for: they are recorded, never thrown.
    req.on("error", () => undefined);
    res.on("error", () => undefined);
    res.on("close", () => {
      if (!res.writableFinished && typeof entry.status === "number") entry.clientClosed = true;
      finish(0);
    });
    res.on("finish", () => finish(entry.status));

    const fault = pickFault(method, target, req.headers["content-length"]);
    if (fault !== undefined) {
      entry.faulted = true;
      entry.fault = fault.kind;
    }
    const countBody = (): void => {
      req.on("data", (chunk: Buffer) => {
        entry.bodyBytes += chunk.byteLength;
      });
    };
    const afterBody = (then: () => void): void => {
      countBody();
      req.on("end", then);
      req.resume();
    };

    switch (fault?.kind) {
      case "reset":
        entry.status = "reset";
        finish("reset");
        req.socket.destroy();
        return;
      case "cut-body":
        cutBody(req, entry, fault, finish, target);
        return;
      case "status":
        afterBody(() => answerStatus(res, entry, fault));
        return;
      case "stale-416":
        afterBody(() => void answerStale(req, res, entry, target));
        return;
      case "lost-answer":
        forward(req, res, entry, target, 0, fault.status);
        return;
      default:
        forward(req, res, entry, target, fault?.kind === "stall" ? fault.ms : 0);
    }
  }

  function cutBody(
    req: IncomingMessage,
    entry: ProxiedRequest,
    fault: Extract<Fault, { kind: "cut-body" }>,
    finish: (status: ProxiedRequest["status"]) => void,
    target: string,
  ): void {
    let upstreamRequest: http.ClientRequest | undefined;
    if (fault.forward) {
      callUpstream(entry.method, target, requestHeaders(req.headers), (request) => {
        upstreamRequest = request;
      }).then(
        (response) => response.resume(),
        () => undefined, // aborted on purpose
      );
    }
    const cut = (): void => {
      if (entry.status === "cut") return;
      entry.status = "cut";
      finish("cut");
      req.socket.destroy();
      // Let the bytes already handed to the upstream socket go out before the upstream side drops too.
      if (upstreamRequest !== undefined) {
        const request = upstreamRequest;
        setImmediate(() => request.destroy());
      }
    };
    if (fault.after <= 0) {
      cut();
      return;
    }
    req.on("data", (chunk: Buffer) => {
      if (entry.status === "cut") return;
      entry.bodyBytes += chunk.byteLength;
      upstreamRequest?.write(chunk);
      if (entry.bodyBytes >= fault.after) cut();
    });
    req.on("end", cut);
  }

  function answerStatus(res: ServerResponse, entry: ProxiedRequest, fault: Extract<Fault, { kind: "status" }>): void {
    const reason = CLOUDFLARE_REASONS[fault.status];
    let body = fault.body;
    let contentType = fault.contentType;
    const headers: Record<string, string> = {};
    if (body === undefined && reason !== undefined) {
      body = cloudflarePage(fault.status, reason);
      contentType ??= "text/html; charset=UTF-8";
      headers.server = "cloudflare";
    }
    body ??= "";
    if (contentType !== undefined) headers["content-type"] = contentType;
    for (const [name, value] of Object.entries(fault.headers ?? {})) headers[name.toLowerCase()] = value;
    headers["content-length"] = String(Buffer.byteLength(body));
    entry.status = fault.status;
    res.writeHead(fault.status, reason ?? http.STATUS_CODES[fault.status] ?? "Fault", headers);
    res.end(body);
  }

  async function answerStale(req: IncomingMessage, res: ServerResponse, entry: ProxiedRequest, target: string): Promise<void> {
    const headers = requestHeaders(req.headers);
    for (const name of BODY_HEADERS) delete headers[name];
    let status: IncomingMessage;
    try {
      status = await callUpstream("GET", target, headers, (request) => request.end());
    } catch (error) {
      badGateway(res, entry, error);
      return;
    }
    const code = status.statusCode ?? 502;
    if (code < 200 || code > 299) {
      relay(status, res, entry);
      return;
    }
    status.resume();
    const fresh = responseHeaders(status.headers);
    const out: Record<string, string | string[]> = {};
    for (const name of ["location", "range", "docker-upload-uuid"]) {
      const value = fresh[name];
      if (value !== undefined) out[name] = value;
    }
    const body = JSON.stringify({
      errors: [{ code: "RANGE_ERROR", message: "stale Location: _stateHash is not the newest one (fault proxy)", detail: null }],
    });
    out["content-type"] = "application/json;charset=UTF-8";
    out["content-length"] = String(Buffer.byteLength(body));
    entry.status = 416;
    if (res.destroyed) return;
    res.writeHead(416, "Range Not Satisfiable", out);
    res.end(body);
  }

  function forward(req: IncomingMessage, res: ServerResponse, entry: ProxiedRequest, target: string, stallMs: number, replaceStatus?: number): void {
    let upstreamRequest: http.ClientRequest | undefined;
    // The client left (its timeout, or a test's abort): nothing more to send it, nor upstream.
    res.on("close", () => {
      if (!res.writableFinished) upstreamRequest?.destroy();
    });
    callUpstream(entry.method, target, requestHeaders(req.headers), (request) => {
      upstreamRequest = request;
      req.on("data", (chunk: Buffer) => {
        entry.bodyBytes += chunk.byteLength;
      });
      req.pipe(request);
    }).then(
      (response) => {
        entry.status = response.statusCode ?? 502;
        if (replaceStatus !== undefined) {
          response.resume();
          entry.upstreamStatus = entry.status;
          entry.status = replaceStatus;
          changed();
          res.writeHead(replaceStatus, { "Content-Type": "text/plain", "Content-Length": "0" }).end();
          return;
        }
        changed();
        if (stallMs <= 0) {
          relay(response, res, entry);
          return;
        }
        const timer = setTimeout(() => {
          timers.delete(timer);
          relay(response, res, entry);
        }, stallMs);
        timers.add(timer);
        res.on("close", () => {
          clearTimeout(timer);
          timers.delete(timer);
          response.resume();
        });
      },
      (error: unknown) => badGateway(res, entry, error),
    );
  }

  function relay(response: IncomingMessage, res: ServerResponse, entry: ProxiedRequest): void {
    entry.status = response.statusCode ?? 502;
    if (res.destroyed) {
      response.resume();
      return;
    }
    res.writeHead(entry.status, response.statusMessage ?? "", responseHeaders(response.headers));
    response.pipe(res);
  }

  function badGateway(res: ServerResponse, entry: ProxiedRequest, error: unknown): void {
    if (res.destroyed) return;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `fault proxy: upstream ${upstream} failed: ${error instanceof Error ? error.message : String(error)}\n`;
    entry.status = 502;
    res.writeHead(502, "Bad Gateway", { "content-type": "text/plain", "content-length": String(Buffer.byteLength(body)) });
    res.end(body);
  }

  const server = http.createServer(handle);
  server.keepAliveTimeout = 60_000;
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("clientError", (_error: Error, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("fault proxy: no listening address");
  const host = `127.0.0.1:${address.port}`;
  origin = `http://${host}`;

  let stopped: Promise<void> | undefined;
  return {
    url: origin,
    host,
    requests,
    waitFor(match, timeoutMs = 30_000): Promise<ProxiedRequest> {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = requests.find(match);
          if (found === undefined) return;
          watchers.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(
            new Error(`fault proxy: no request matched within ${timeoutMs} ms; seen: ${requests.map((r) => `${r.method} ${r.path} ${r.status}`).join(", ")}`),
          );
        }, timeoutMs);
        watchers.add(check);
        check();
      });
    },
    addRule(rule: FaultRule): void {
      active.push({ rule, seen: 0 });
    },
    clearRules(): void {
      active = [];
    },
    stop(): Promise<void> {
      stopped ??= new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        server.close(() => resolve());
        for (const request of outgoing) request.destroy();
        for (const socket of sockets) socket.destroy();
      });
      return stopped;
    },
  };
}

function flatHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/** The client's headers as they came (Host, Authorization, Content-Length, Content-Range...), minus hop-by-hop. */
function requestHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

function cloudflarePage(status: number, reason: string): string {
  return [
    "<!DOCTYPE html>",
    `<html><head><title>${status}: ${reason}</title></head>`,
    `<body><h1>Error ${status}</h1><p>${reason}</p><hr><p>cloudflare</p></body>`,
    "</html>",
    "",
  ].join("\n");
}
