import { PushError } from "../errors.ts";
import { answerExcerpt } from "./failure.ts";
import { terminalSafe } from "./sanitize.ts";
import { readTextBounded, TOKEN_BODY_LIMIT } from "./transport/bounded.ts";

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"` (quoted values may hold commas). */
export function parseChallenge(header: string | null): Challenge | undefined {
  const match = /^\s*(\w+)\s*(.*)$/s.exec(header ?? "");
  if (!match?.[1]) return undefined;
  const params: Record<string, string> = {};
  for (const [, key, quoted, bare] of (match[2] ?? "").matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    if (key) params[key.toLowerCase()] = (quoted ?? bare ?? "").replace(/\\(.)/g, "$1");
  }
  return { scheme: match[1].toLowerCase(), params };
}

/** Joins scopes, merging the actions of the same resource: `repository:a:pull` + `repository:a:push` -> `repository:a:pull,push`. */
export function mergeScopes(scopes: string[]): string[] {
  const merged = new Map<string, Set<string>>();
  for (const scope of scopes.flatMap((s) => s.split(" ")).filter(Boolean)) {
    const cut = scope.lastIndexOf(":");
    const resource = scope.slice(0, cut);
    const actions = merged.get(resource) ?? new Set<string>();
    for (const action of scope.slice(cut + 1).split(",")) if (action) actions.add(action);
    merged.set(resource, actions);
  }
  return [...merged].map(([resource, actions]) => `${resource}:${[...actions].sort().join(",")}`);
}

/** Asks the token service; the answer's body may be unread (it is read here with a bound). */
export type TokenFetch = (url: string, headers: Record<string, string>) => Promise<Response>;

/**
 * What goes in `Authorization`. Starts empty; the registry's 401 challenge decides: Basic with the
 * user's credentials, or a Bearer token from the challenge's realm (Docker token auth), fetched with
 * those credentials, refreshed before it expires and whenever the registry refuses it mid-push.
 * Only the registry's own 401s reach it (see transport/authorize.ts).
 */
export class Authenticator {
  private value?: string;
  private bearer?: { realm: URL; service?: string; scopes: string[]; expiresAt: number };
  private refreshing?: Promise<void>;
  private readonly defaultScopes: string[];

  constructor(
    private readonly credentials: Credentials | undefined,
    /** What a token is asked for, e.g. `repository:team/app:pull,push`, or `...:pull` for a source registry. */
    defaultScopes: string | string[],
    private readonly fetchToken: TokenFetch,
    private readonly secureRegistry: boolean,
    private readonly now: () => number = Date.now,
    /** What to do without credentials (a source registry's come from the Docker config, not USERNAME_REGISTRY). */
    private readonly loginHint = "set USERNAME_REGISTRY=<user> and pipe the password on stdin",
  ) {
    this.defaultScopes = typeof defaultScopes === "string" ? [defaultScopes] : defaultScopes;
  }

  /** The header for the next request; renews a token that is about to expire. */
  async header(): Promise<string | undefined> {
    if (this.bearer && this.now() > this.bearer.expiresAt) await this.renew();
    return this.value;
  }

  /**
   * After a 401: true when a new `Authorization` is now ready and the request is worth one more try,
   * false when nothing we have would change the answer.
   */
  async unauthorized(wwwAuthenticate: string | null, sentHeader: string | undefined): Promise<boolean> {
    const challenge = parseChallenge(wwwAuthenticate);
    if (challenge?.scheme === "bearer" && challenge.params.realm) {
      const realm = tokenRealm(challenge.params.realm);
      const scopes = mergeScopes([...this.defaultScopes, challenge.params.scope ?? "", ...(this.bearer?.scopes ?? [])]);
      if (sentHeader !== this.value && this.value?.startsWith("Bearer ")) return true; // another request renewed it meanwhile
      this.bearer = { realm, service: challenge.params.service, scopes, expiresAt: 0 };
      await this.renew();
      return sentHeader !== this.value;
    }
    if (!this.credentials) return false;
    const basic = basicHeader(this.credentials);
    if (sentHeader === basic) return false;
    this.value = basic;
    return true;
  }

  private renew(): Promise<void> {
    this.refreshing ??= this.fetch().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async fetch(): Promise<void> {
    const bearer = this.bearer;
    if (!bearer) return;
    const url = new URL(bearer.realm);
    if (bearer.service) url.searchParams.set("service", bearer.service);
    for (const scope of bearer.scopes) url.searchParams.append("scope", scope);
    const headers: Record<string, string> = {};
    // Credentials go to the realm the registry named, but never in clear from an https registry.
    if (this.credentials && (url.protocol === "https:" || !this.secureRegistry)) headers.Authorization = basicHeader(this.credentials);
    const service = `the token service ${url.origin}`;
    const response = await this.fetchToken(url.toString(), headers);
    const { text } = await readTextBounded(response, TOKEN_BODY_LIMIT);
    const user = this.credentials ? `"${terminalSafe(this.credentials.username)}"` : undefined;
    if (response.status === 401) {
      throw new PushError(
        user ? `${service} rejected the username ${user} or its password (HTTP 401)` : `${service} requires authentication: ${this.loginHint}`,
      );
    }
    if (response.status === 403) {
      throw new PushError(
        user
          ? `${service} refused user ${user} a token for ${bearer.scopes.join(" ")} (HTTP 403): may this user access that repository?`
          : `${service} refused an anonymous token for ${bearer.scopes.join(" ")} (HTTP 403): ${this.loginHint}`,
      );
    }
    if (!response.ok) {
      const said = answerExcerpt(response.headers.get("content-type") ?? "", text);
      throw new PushError(`${service} did not issue a token (HTTP ${response.status}${said ? `: ${said}` : ""})`);
    }
    const body = parseTokenAnswer(text);
    const token = body?.token ?? body?.access_token;
    if (!token) throw new PushError(`${service} answered HTTP ${response.status} without a token`);
    // Renew a little early; the spec's default lifetime is 60 s when none is given.
    const expiresIn = typeof body?.expires_in === "number" && Number.isFinite(body.expires_in) ? body.expires_in : 60;
    const lifetime = Math.max(expiresIn - 10, 1) * 1000;
    this.bearer = { ...bearer, expiresAt: this.now() + lifetime };
    this.value = `Bearer ${token}`;
  }
}

interface TokenAnswer {
  token?: string;
  access_token?: string;
  expires_in?: number;
}

function parseTokenAnswer(text: string): TokenAnswer | undefined {
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!parsed || typeof parsed !== "object") return undefined;
    const { token, access_token, expires_in } = parsed as Record<string, unknown>;
    // A token goes into a header: anything but a plain string of header-safe characters is not one.
    const usable = (value: unknown) => (typeof value === "string" && /^[\x21-\x7e]+$/.test(value) ? value : undefined);
    return { token: usable(token), access_token: usable(access_token), expires_in: typeof expires_in === "number" ? expires_in : undefined };
  } catch {
    return undefined;
  }
}

/** The realm as a URL we may ask: http(s) only, and never with credentials of its own in it. */
function tokenRealm(realm: string): URL {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new PushError(`the registry named a token service that is not a URL: "${terminalSafe(realm).slice(0, 200)}"`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new PushError(`the registry named a token service that is not http(s): ${url.protocol}`);
  }
  url.username = "";
  url.password = "";
  return url;
}

function basicHeader(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}
