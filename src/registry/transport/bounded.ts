/**
 * Reading a body a peer controls, never more than we mean to hold. Past the limit the stream is
 * cancelled, which drops the connection: an endless answer costs `limit` bytes of memory, not all of it.
 */
import { Readable } from "node:stream";
import { PushError } from "../../errors.ts";

/** Error answers are a JSON error list or a proxy's HTML page: a few kB. Only an excerpt is shown. */
export const ERROR_BODY_LIMIT = 64 * 1024;
/** A token answer is a JWT or two and a lifetime; 1 MiB is far above any real one. */
export const TOKEN_BODY_LIMIT = 1024 * 1024;
/** The OCI distribution spec lets registries refuse manifests over 4 MiB; clients may refuse them too. */
export const MANIFEST_BODY_LIMIT = 4 * 1024 * 1024;
/** What `send` reads of a successful answer unless told otherwise: upload answers are empty or tiny. */
export const DEFAULT_BODY_LIMIT = 64 * 1024;

export interface BoundedRead {
  bytes: Uint8Array;
  /** The body went on past the limit; `bytes` holds its first `limit` bytes. */
  truncated: boolean;
}

/** Reads `stream` to its end or to `limit` bytes, whichever comes first; `onChunk` sees each block arrive. */
export async function readBounded(stream: ReadableStream<Uint8Array> | null, limit: number, onChunk?: () => void): Promise<BoundedRead> {
  if (!stream) return { bytes: new Uint8Array(0), truncated: false };
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { bytes: concat(parts, total), truncated: false };
      onChunk?.();
      if (total + value.byteLength > limit) {
        parts.push(value.subarray(0, limit - total));
        total = limit;
        // Cancelling a fetch body closes its connection: the peer cannot make us read on.
        await reader.cancel().catch(() => undefined);
        return { bytes: concat(parts, total), truncated: true };
      }
      parts.push(value);
      total += value.byteLength;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * A response's body as a web stream. node-fetch under Bun (what the client fetches with) hands out a
 * Node Readable over the native stream; cancelling the converted stream still closes the connection.
 */
export function bodyStream(response: Response): ReadableStream<Uint8Array> | null {
  const body: unknown = response.body;
  if (body === null || body === undefined) return null;
  if (body instanceof ReadableStream) return body as ReadableStream<Uint8Array>;
  if (body instanceof Readable) return Readable.toWeb(body) as ReadableStream<Uint8Array>;
  return null;
}

/** The text of a response, at most `limit` bytes of it; "" when its body was already read. */
export async function readTextBounded(response: Response, limit: number): Promise<BoundedText> {
  if (response.bodyUsed) return { text: "", truncated: false };
  const { bytes, truncated } = await readBounded(bodyStream(response), limit);
  return { text: new TextDecoder().decode(bytes), truncated };
}

export interface BoundedText {
  text: string;
  truncated: boolean;
}

/** `64 KiB`, `4 MiB`: limits are powers of two. */
export function formatLimit(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes`;
}

/** An answer we needed whole was larger than anything legitimate of its kind. */
export class BodyTooLarge extends PushError {
  constructor(
    what: string,
    origin: string,
    readonly limit: number,
  ) {
    super(`${what}: the answer from ${origin} is larger than ${formatLimit(limit)}; stopped reading it`);
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1 && parts[0]?.byteLength === total) return parts[0];
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  return bytes;
}
