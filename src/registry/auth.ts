import { PushError } from "../errors.ts";

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

type TokenFetch = (url: string, headers: Record<string, string>) => Promise<Response>;

/**
 * What goes in `Authorization`. Starts empty; the registry's 401 challenge decides: Basic with the
 * user's credentials, or a Bearer token from the challenge's realm (Docker token auth), fetched with
 * those credentials, refreshed before it expires and whenever the registry refuses it mid-push.
 */
export class Authenticator {
  private value?: string;
  private bearer?: { realm: string; service?: string; scopes: string[]; expiresAt: number };
  private refreshing?: Promise<void>;

  constructor(
    private readonly credentials: Credentials | undefined,
    private readonly defaultScope: string,
    private readonly fetchToken: TokenFetch,
    private readonly secureRegistry: boolean,
    private readonly now: () => number = Date.now,
  ) {}

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
      const scopes = mergeScopes([this.defaultScope, challenge.params.scope ?? "", ...(this.bearer?.scopes ?? [])]);
      if (sentHeader !== this.value && this.value?.startsWith("Bearer ")) return true; // another request renewed it meanwhile
      this.bearer = { realm: challenge.params.realm, service: challenge.params.service, scopes, expiresAt: 0 };
      await this.renew();
      return sentHeader !== this.value;
    }
    if (!this.credentials) return false;
    const basic = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString("base64")}`;
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
    if (this.credentials && (url.protocol === "https:" || !this.secureRegistry)) {
      headers.Authorization = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString("base64")}`;
    }
    const response = await this.fetchToken(url.toString(), headers);
    const text = await response.text().catch(() => "");
    if (response.status === 401 || response.status === 403) {
      throw new PushError(
        this.credentials
          ? `the token service ${url.origin} rejected the username "${this.credentials.username}" or its password (HTTP ${response.status})`
          : `the token service ${url.origin} requires authentication: set USERNAME_REGISTRY=<user> and pipe the password on stdin`,
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // Reported below with the status.
    }
    const token = body.token ?? body.access_token;
    if (!response.ok || !token) {
      throw new PushError(`the token service ${url.origin} did not issue a token (HTTP ${response.status})`);
    }
    // Renew a little early; the spec's default lifetime is 60 s when none is given.
    const lifetime = Math.max((body.expires_in ?? 60) - 10, 1) * 1000;
    this.bearer = { ...bearer, expiresAt: this.now() + lifetime };
    this.value = `Bearer ${token}`;
  }
}
