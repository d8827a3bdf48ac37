/** What a failed registry response says, shortened for a person and safe for a terminal. */
import { excerpt } from "./sanitize.ts";

export interface Failure {
  status: number;
  code?: string;
  text: string;
}

export interface FailureDetails {
  /** Size of the request body the registry refused: a 413's hint suggests a --chunk-size below it. */
  bodyBytes?: number;
}

interface RegistryError {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
}

interface ErrorBody {
  errors?: unknown[];
}

const HINTS: Record<number, string> = {
  401: "the registry did not accept the credentials: check USERNAME_REGISTRY and the password piped on stdin",
  403: "the user may not push to this repository (a read-only user?)",
  416: "the registry refused the chunk's byte range",
  429: "the registry is rate limiting: wait and try again",
};

// However long a registry's words, a message shows this much of them.
const MESSAGE_CHARS = 200;
const DETAIL_CHARS = 160;
const ERRORS_SHOWN = 3;

/**
 * Formats a registry answer: its own error codes and messages when the body is the distribution
 * spec's JSON, otherwise the status and a hint (proxies and CDNs answer with HTML pages). Everything
 * taken from the answer is stripped of control characters and cut short.
 */
export function describeFailure(status: number, statusText: string, contentType: string, body: string, details: FailureDetails = {}): Failure {
  const json = parseErrors(contentType, body);
  if (json?.length) {
    const shown = json.slice(0, ERRORS_SHOWN).map((e) => [text(e.code, 60), text(e.message, MESSAGE_CHARS)].filter(Boolean).join(": ") + detail(e.detail));
    if (json.length > ERRORS_SHOWN) shown.push(`and ${json.length - ERRORS_SHOWN} more`);
    const hint = status === 413 ? tooLargeHint(details.bodyBytes) : status === 403 ? HINTS[403] : undefined;
    const code = text(json[0]?.code, 60) || undefined;
    return { status, code, text: `HTTP ${status} ${shown.join("; ")}${hint ? ` (${hint})` : ""}` };
  }
  const summary = answerExcerpt(contentType, body);
  const reason = excerpt(statusText, 60);
  const what = [`HTTP ${status}${reason ? ` ${reason}` : ""}`, summary].filter(Boolean).join(": ");
  const hint =
    status === 413 ? tooLargeHint(details.bodyBytes) : (HINTS[status] ?? (status >= 500 ? "the registry or its origin failed; try again" : undefined));
  return { status, text: hint ? `${what} (${hint})` : what };
}

/**
 * What an answer's body says in a line: the distribution spec's error list, an HTML page's title, or
 * the start of a plain text; undefined for other HTML. Used for registries and token services alike.
 */
export function answerExcerpt(contentType: string, body: string): string | undefined {
  const json = parseErrors(contentType, body);
  if (json?.length)
    return json
      .slice(0, ERRORS_SHOWN)
      .map((e) => [text(e.code, 60), text(e.message, MESSAGE_CHARS)].filter(Boolean).join(": "))
      .join("; ");
  const title = /<title>([^<]{1,400})<\/title>/i.exec(body)?.[1];
  if (title !== undefined) return excerpt(title, MESSAGE_CHARS) || undefined;
  if (/^\s*</.test(body)) return undefined;
  // Docker Hub's token service answers {"details": "..."}.
  const details = parseJson(body);
  if (details && typeof details === "object" && "details" in details) return text((details as { details: unknown }).details, MESSAGE_CHARS) || undefined;
  return excerpt(body, MESSAGE_CHARS) || undefined;
}

// Just under the body limits proxies and CDNs commonly set: Cloudflare's 100 MB, nginx's 50m, 32m, 10m.
const USUAL_LIMITS = [95_000_000, 45_000_000, 30_000_000, 20_000_000, 9_000_000];

/**
 * A `--chunk-size` worth trying after a request body of `refusedBytes` was refused: at most half of it
 * (so the next try is clearly under whatever limit refused it), taken from sizes just under usual proxy
 * limits so a 10 MB nginx limit is not met with an 11 MB suggestion, and never under
 * serverless-registry's 5 MiB minimum part size unless the refused body was itself no larger than that.
 */
export function suggestChunkSize(refusedBytes: number): string {
  const MiB5 = 5 * 1024 * 1024;
  const half = Math.floor(refusedBytes / 2);
  if (refusedBytes > MiB5) {
    const usual = USUAL_LIMITS.find((size) => size <= half);
    return usual === undefined ? "5MiB" : `${usual / 1_000_000}MB`;
  }
  if (half >= 1_000_000) return `${Math.floor(half / 1_000_000)}MB`;
  return `${Math.max(1, Math.floor(half / 1024))}KiB`;
}

/** The hint a 413 gets: with the refused body's size when known, a --chunk-size below it. */
export function tooLargeHint(refusedBytes?: number): string {
  const body = refusedBytes === undefined ? "the request body" : `the request body (${refusedBytes} bytes)`;
  const example = refusedBytes === undefined ? "50MB" : suggestChunkSize(refusedBytes);
  return `${body} was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size ${example}`;
}

function parseErrors(contentType: string, body: string): RegistryError[] | undefined {
  if (!contentType.includes("json") && !body.trimStart().startsWith("{")) return undefined;
  const parsed = parseJson(body) as ErrorBody | undefined;
  if (!parsed || !Array.isArray(parsed.errors)) return undefined;
  // Only entries that say something: a broken or hostile registry's [null] made the message itself
  // throw, and [1] or [{}] left "HTTP 400 " with nothing after it; the status and body are shown instead.
  return parsed.errors.filter(
    (e): e is RegistryError =>
      typeof e === "object" && e !== null && (text((e as RegistryError).code, 60) !== "" || text((e as RegistryError).message, MESSAGE_CHARS) !== ""),
  );
}

function parseJson(body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

/** A field of the answer as short, terminal-safe text ("" when absent). */
function text(value: unknown, max: number): string {
  if (value === undefined || value === null) return "";
  return excerpt(typeof value === "string" ? value : JSON.stringify(value), max);
}

function detail(value: unknown): string {
  const shown = text(value, DETAIL_CHARS);
  return shown === "" || shown === '""' ? "" : ` (${shown})`;
}
