/**
 * Credentials for the registry and nobody else. `Authorization` is added only to requests for the
 * registry's own origin, and only the registry's own 401 may ask for credentials: a 401 from any other
 * origin (an upload Location or a redirect pointing at storage) is answered with nothing, neither the
 * password nor a token request to a realm that host names.
 */
import type { Authenticator } from "../auth.ts";
import type { RoundTrip } from "./types.ts";

/**
 * New credentials tried for one request after a 401: one round may only find that another request
 * renewed the token meanwhile, a second fetches a token with a wider scope. More would only let a
 * registry that always answers 401 keep a request (and its token service) busy.
 */
export const MAX_AUTH_ROUNDS = 2;

export function authorize(next: RoundTrip, authenticator: Authenticator, registryOrigin: string): RoundTrip {
  return async (request) => {
    if (new URL(request.url).origin !== registryOrigin) return next(request);
    for (let round = 0; ; round++) {
      const header = await authenticator.header();
      const response = await next(header ? { ...request, headers: { ...request.headers, Authorization: header } } : request);
      if (response.status !== 401 || round >= MAX_AUTH_ROUNDS) return response;
      // A redirect may have carried the request elsewhere: only the registry's own 401 counts.
      if (originOf(response.url) !== registryOrigin) return response;
      if (!(await authenticator.unauthorized(response.headers.get("www-authenticate"), header))) return response;
    }
  };
}

/** `scheme://host[:port]` of a URL; undefined for anything that is not one. */
export function originOf(url: string): string | undefined {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}
