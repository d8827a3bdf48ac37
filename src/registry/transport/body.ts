/** What a request may carry, and how it is handed to fetch so the idle watch and progress see it move. */
import { PushError } from "../../errors.ts";
import type { IdleWatch } from "./idle-watch.ts";

export type Body = Blob | Uint8Array | string;

/** Lets a body producer say when it is waiting for its own data rather than for the network. */
export interface BodyHooks {
  /** No bytes until `resume`: the idle timeout does not run meanwhile. */
  pause(): void;
  resume(): void;
}

/**
 * A body produced while it is sent, e.g. read from a file a compressor is still writing. `open` is
 * called once per attempt (retries and 307/308 redirects send it again), so it must start over each
 * time. With `length` the request carries exactly that `Content-Length` and the stream must yield
 * exactly that many bytes; without it the body goes with chunked transfer encoding.
 */
export interface BodySource {
  length?: number;
  open(hooks: BodyHooks): ReadableStream<Uint8Array>;
}

export type RequestBody = Body | BodySource;

export interface PreparedBody {
  /** What fetch sends. */
  init: string | Uint8Array | ReadableStream<Uint8Array> | undefined;
  /** The body's size when known before sending. */
  bytes?: number;
  /** Whether the upload's duration says something about the link (a producer never made it wait). */
  measurable(): boolean;
  /** A producer that broke its promised length: the request failed because of it, not the network. */
  broken(): PushError | undefined;
}

export function isBodySource(body: RequestBody | undefined): body is BodySource {
  return typeof body === "object" && body !== null && !(body instanceof Blob) && !(body instanceof Uint8Array);
}

/**
 * Streams file and producer bodies through a counter, so the idle watch sees progress and callers can
 * report it; sets `Content-Length` whenever the size is known (registries refuse chunked PUTs, and a
 * file slice must arrive with its exact length).
 */
export function prepareBody(
  body: RequestBody | undefined,
  headers: Record<string, string>,
  watch: IdleWatch,
  onProgress?: (sent: number) => void,
): PreparedBody {
  if (body === undefined) return { init: undefined, measurable: () => false, broken: () => undefined };
  if (typeof body === "string" || body instanceof Uint8Array) {
    const bytes = typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
    // Handed over whole: allow time for it to leave the socket buffers.
    watch.bodySent(bytes);
    return { init: body, bytes, measurable: () => false, broken: () => undefined };
  }
  let paused = false;
  let problem: PushError | undefined;
  const expected = body instanceof Blob ? body.size : body.length;
  if (expected !== undefined) headers["Content-Length"] = String(expected);
  const source =
    body instanceof Blob
      ? body.stream()
      : body.open({
          pause: () => {
            paused = true;
            watch.pause();
          },
          resume: () => watch.resume(),
        });
  let sent = 0;
  const counted = source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        sent += chunk.byteLength;
        if (expected !== undefined && sent > expected) {
          problem = new PushError(`the request body gave more than the ${expected} bytes it announced`);
          controller.error(problem);
          return;
        }
        watch.progress();
        onProgress?.(sent);
        controller.enqueue(chunk);
      },
      flush(controller) {
        if (expected !== undefined && sent !== expected) {
          problem = new PushError(`the request body ended after ${sent} of the ${expected} bytes it announced`);
          controller.error(problem);
          return;
        }
        watch.bodySent(sent);
      },
    }),
  );
  return { init: counted, bytes: expected, measurable: () => !paused, broken: () => problem };
}
