/** What a failed registry response says, shortened for a person. */
export interface Failure {
  status: number;
  code?: string;
  text: string;
}

interface ErrorBody {
  errors?: { code?: string; message?: string; detail?: unknown }[];
}

const HINTS: Record<number, string> = {
  401: "the registry did not accept the credentials: check USERNAME_REGISTRY and the password piped on stdin",
  403: "the user may not push to this repository (a read-only user?)",
  413: "the request body was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size 50MB",
  416: "the registry refused the chunk's byte range",
  429: "the registry is rate limiting: wait and try again",
};

/**
 * Formats a registry answer: its own error codes and messages when the body is the distribution
 * spec's JSON, otherwise the status and a hint (proxies and CDNs answer with HTML pages).
 */
export function describeFailure(status: number, statusText: string, contentType: string, body: string): Failure {
  const json = parseErrors(contentType, body);
  if (json?.length) {
    const text = json.map((e) => [e.code, e.message].filter(Boolean).join(": ") + detail(e.detail)).join("; ");
    const hint = status === 413 || status === 403 ? ` (${HINTS[status]})` : "";
    return { status, code: json[0]?.code, text: `HTTP ${status} ${text}${hint}` };
  }
  const title = /<title>([^<]{1,200})<\/title>/i.exec(body)?.[1]?.trim();
  const plain = !title && body && !/^\s*</.test(body) ? body.trim().slice(0, 200) : undefined;
  const what = [`HTTP ${status}${statusText ? ` ${statusText}` : ""}`, title ?? plain].filter(Boolean).join(": ");
  const hint = HINTS[status] ?? (status >= 500 ? "the registry or its origin failed; try again" : undefined);
  return { status, text: hint ? `${what} (${hint})` : what };
}

function parseErrors(contentType: string, body: string): NonNullable<ErrorBody["errors"]> | undefined {
  if (!contentType.includes("json") && !body.trimStart().startsWith("{")) return undefined;
  try {
    const parsed = JSON.parse(body) as ErrorBody;
    return Array.isArray(parsed.errors) ? parsed.errors : undefined;
  } catch {
    return undefined;
  }
}

function detail(value: unknown): string {
  if (value === undefined || value === null || value === "") return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return ` (${text.length > 160 ? `${text.slice(0, 157)}...` : text})`;
}
