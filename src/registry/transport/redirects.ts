/**
 * Redirects are followed here rather than by fetch, so `Authorization` never travels to another
 * origin (storage back ends hand out pre-signed URLs that must get no credentials), and a registry
 * that redirects in circles cannot keep a request going.
 */
import { PushError } from "../../errors.ts";
import type { RoundTrip, TransportRequest } from "./types.ts";

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Redirects followed for one request; the answer after the last must not be another. */
export const MAX_REDIRECTS = 5;

export function followRedirects(next: RoundTrip, maxHops = MAX_REDIRECTS): RoundTrip {
  return async (request) => {
    const origin = new URL(request.url).origin;
    let current = request;
    for (let hop = 0; ; hop++) {
      const response = await next(current);
      const location = response.headers.get("location");
      // A POST's 3xx is not followed: its body would have to go again, and registries never redirect one.
      if (!REDIRECTS.has(response.status) || !location || request.method === "POST") return response;
      const target = new URL(location, current.url);
      if (hop >= maxHops) {
        // The origin only: a pre-signed URL's query is a credential of its own.
        throw new PushError(`${request.what}: more than ${maxHops} redirects (the last to ${target.origin})`);
      }
      current = nextHop(current, target.toString(), response.status === 303, target.origin !== origin);
    }
  };
}

function nextHop(request: TransportRequest, url: string, seeOther: boolean, foreign: boolean): TransportRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    const lower = name.toLowerCase();
    if (foreign && lower === "authorization") continue;
    // 303 means "GET the answer there": the request's body and its description stay behind.
    if (seeOther && lower.startsWith("content-")) continue;
    headers[name] = value;
  }
  return seeOther ? { ...request, url, headers, method: "GET", body: undefined } : { ...request, url, headers };
}
