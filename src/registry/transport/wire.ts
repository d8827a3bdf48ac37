/**
 * One HTTP exchange: the body goes out and the answer comes back under one idle watch and the run's
 * abort signal; the answer's body is read here with a bound (or, when asked, handed over as a stream
 * still under the watch). Everything a peer sent that may reach a terminal (status text, header values)
 * is made terminal-safe before any caller sees it.
 */
import nodeFetch from "node-fetch";
import { PushError } from "../../errors.ts";
import { terminalSafe } from "../sanitize.ts";
import { prepareBody, type PreparedBody } from "./body.ts";
import { BodyTooLarge, bodyStream, ERROR_BODY_LIMIT, readBounded } from "./bounded.ts";
import { ConnectionFailure, connectionFailure } from "./connection-errors.ts";
import { IdleTimeout, IdleWatch, type LinkPace } from "./idle-watch.ts";
import { NetworkError } from "./network-error.ts";
import type { RoundTrip, TransportRequest } from "./types.ts";

// Bun serves node-fetch from its native fetch; this only bridges node-fetch's own type declarations.
const fetch = nodeFetch as unknown as typeof globalThis.fetch;

const sentBytes = new WeakMap<Response, number>();

/** The size of the body whose request got this answer, when it was known (e.g. for a 413's hint). */
export function sentBodyBytes(response: Response): number | undefined {
  return sentBytes.get(response);
}

export function wire(pace: LinkPace): RoundTrip {
  return async (request) => {
    const outer = request.signal;
    outer?.throwIfAborted();
    const controller = new AbortController();
    const origin = new URL(request.url).origin;
    const watch = new IdleWatch(request.idleTimeoutMs, () => controller.abort(new IdleTimeout(request.idleTimeoutMs, origin)), pace);
    const cancel = () => controller.abort(outer?.reason);
    outer?.addEventListener("abort", cancel, { once: true });
    const release = () => {
      watch.stop();
      outer?.removeEventListener("abort", cancel);
    };
    let handedOver = false;
    let prepared: PreparedBody | undefined;
    const explain = (error: unknown): unknown => explainFailure(error, request, controller.signal, prepared);
    try {
      const headers = { ...request.headers };
      prepared = prepareBody(request.body, headers, watch, request.onProgress);
      const started = Date.now();
      const init = { method: request.method, headers, body: prepared.init, redirect: "manual", signal: controller.signal, duplex: "half" };
      const fetched = await fetch(request.url, init as RequestInit).catch((error: unknown) => {
        throw explain(error);
      });
      watch.answered();
      if (prepared.bytes !== undefined && prepared.measurable()) pace.learn(prepared.bytes, Date.now() - started);
      const answer = bodyStream(fetched);
      if (fetched.status < 200 || fetched.status > 599) {
        await answer?.cancel().catch(() => undefined);
        throw new ConnectionFailure(`${origin} answered with the invalid status ${fetched.status}`, "malformed", true, origin);
      }
      const success = fetched.status >= 200 && fetched.status < 300;
      if (request.stream && success && answer) {
        handedOver = true;
        return remember(streamed(fetched, answer, request, watch, controller.signal, release), request.url, prepared.bytes);
      }
      const limit = success ? request.maxBodyBytes : ERROR_BODY_LIMIT;
      // A HEAD's Content-Length is the size of what a GET would bring (a blob's), not a body coming now.
      if (success && request.method !== "HEAD" && Number(fetched.headers.get("content-length") ?? 0) > limit) {
        await answer?.cancel().catch(() => undefined);
        throw new BodyTooLarge(request.what, origin, limit);
      }
      // An error answer is only ever shown as an excerpt: past the limit the rest is dropped, unread.
      const { bytes, truncated } = await readBounded(answer, limit, () => watch.progress()).catch((error: unknown) => {
        throw explain(error);
      });
      if (success && truncated) throw new BodyTooLarge(request.what, origin, limit);
      // A null body for empty answers: Response refuses a body with 204, 205 or 304.
      const copy = new Response(bytes.byteLength ? bytes : null, safeInit(fetched));
      return remember(copy, request.url, prepared.bytes);
    } finally {
      if (!handedOver) release();
    }
  };
}

/** Why an exchange failed: the producer's broken promise, the run's abort, or the connection. */
function explainFailure(error: unknown, request: TransportRequest, signal: AbortSignal, prepared: PreparedBody | undefined): unknown {
  const broken = prepared?.broken();
  if (broken) return new PushError(`${request.what}: ${broken.message}`);
  if (error instanceof PushError || error instanceof ConnectionFailure) return error;
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    return reason instanceof IdleTimeout ? connectionFailure(reason, request.url) : reason;
  }
  return connectionFailure(error, request.url);
}

/**
 * A successful answer whose body the caller reads. The idle watch runs only while the caller waits for
 * the next block (a slow consumer is not a stalled network), and the connection is released however
 * the reading ends.
 */
function streamed(
  fetched: Response,
  answer: ReadableStream<Uint8Array>,
  request: TransportRequest,
  watch: IdleWatch,
  signal: AbortSignal,
  release: () => void,
): Response {
  const reader = answer.getReader();
  watch.pause();
  let finished = false;
  const finish = () => {
    if (!finished) release();
    finished = true;
  };
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        watch.resume();
        try {
          const { done, value } = await reader.read();
          watch.pause();
          if (done) {
            finish();
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (error) {
          finish();
          const explained = explainFailure(error, request, signal, undefined);
          controller.error(explained instanceof ConnectionFailure ? streamFailure(request, explained) : explained);
        }
      },
      async cancel(reason) {
        finish();
        await reader.cancel(reason).catch(() => undefined);
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(body, safeInit(fetched));
}

/** A streamed body that broke off: the caller may resume with a Range request. */
function streamFailure(request: TransportRequest, failure: ConnectionFailure): NetworkError {
  return new NetworkError(request.what, failure.reason, 1, failure.origin);
}

function safeInit(fetched: Response): ResponseInit {
  const headers = new Headers();
  for (const [name, value] of fetched.headers) headers.append(name, terminalSafe(value));
  return { status: fetched.status, statusText: terminalSafe(fetched.statusText), headers };
}

function remember(response: Response, url: string, bytes: number | undefined): Response {
  // Locations are resolved against the URL that answered, and 401s judged by who sent them.
  Object.defineProperty(response, "url", { value: url });
  if (bytes !== undefined) sentBytes.set(response, bytes);
  return response;
}
