/**
 * Debian's `docker-registry` (CNCF distribution 2.8.2) configured for token auth (`auth.token`), plus a
 * small token server (Bun.serve) that signs the JWTs it accepts. Both listen on 127.0.0.1 only, each run
 * gets its own temp dir (key, certificate, config, storage, log), so tests never touch anything shared.
 *
 * How the pieces fit (checked against distribution's registry/auth/token and by the tests):
 * - `openssl req -x509` makes a key pair and a self-signed certificate; the registry's `rootcertbundle`
 *   is that certificate, so it trusts tokens whose header carries the certificate in `x5c`, or names the
 *   key by its libtrust key id in `kid`, or embeds the public key as `jwk` (all three work; `x5c` is the
 *   default). RSA 2048 signs RS256, EC P-256 signs ES256 (raw r||s, as JOSE requires).
 * - Claims: `iss` (= the registry's `issuer`), `sub`, `aud` (= `service`), `exp`, `nbf`, `iat`, `jti`,
 *   `access: [{type, name, actions}]`.
 * - distribution adds 60 s of leeway to `exp` (clock skew). So that a token really stops working when
 *   `expires_in` says, `exp` is written 60 s early: the registry refuses the token between `lifetime`
 *   and `lifetime + 1` seconds after it was issued (never earlier than `expires_in`).
 *
 * Token server: `GET /token?service=<s>&scope=<type>:<name>:<actions>` (scope may repeat, and one value
 * may hold several scopes separated by spaces, as the Docker token spec allows).
 * - correct Basic credentials: a token granting exactly the requested actions;
 * - wrong credentials (or a malformed Authorization header): 401 with `WWW-Authenticate: Basic`;
 * - no credentials: by default a token whose actions are cut down to `pull` (like Docker Hub's anonymous
 *   tokens), so a push with it gets `insufficient_scope` from the registry; `anonymous: "deny"` answers
 *   401 instead.
 * `aud` is the `service` the client asked for (the configured one when absent), so a client that sends the
 * wrong service gets a token the registry refuses, as it would in real life.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, X509Certificate, type KeyObject } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "bun";
import { registryConfigLines, serveRegistry } from "./docker-registry.ts";
import { runOk } from "./ports.ts";

export type TokenKeyType = "rsa" | "ec";
/** How the JWT header identifies the signing key. */
export type TokenKeyHeader = "x5c" | "kid" | "jwk";

export interface TokenRegistryOptions {
  username?: string;
  password?: string;
  /** `expires_in` of new tokens; default 300 (Docker Hub's value). Change later with setTokenLifetime(). */
  tokenLifetimeSeconds?: number;
  /** What `expires_in` claims, when it should differ from the real lifetime (a token that dies early). */
  advertisedLifetimeSeconds?: number;
  /** What a token request without credentials gets: a pull-only token (default) or a 401. */
  anonymous?: "pull" | "deny";
  /** RSA 2048 + RS256 (default) or EC P-256 + ES256. */
  keyType?: TokenKeyType;
  /** How the JWT header names the key; default `x5c`. Change later with setKeyHeader(). */
  keyHeader?: TokenKeyHeader;
  /** How long to wait for `/v2/` to answer; default 15 s. */
  startTimeoutMs?: number;
}

export interface TokenRequest {
  /** The `scope` parameters as sent, joined with a space when repeated; null when absent. */
  scope: string | null;
  service: string | null;
  /** True when correct Basic credentials came with the request (anonymous and wrong ones: false). */
  authorized: boolean;
  /** Date.now() when the request arrived. */
  at: number;
  /** HTTP status the token server answered (200 or 401). */
  status: number;
}

export interface TokenRegistry {
  /** `127.0.0.1:<port>` of the registry (plain http), the form the CLI takes as `<host[:port]>`. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `http://127.0.0.1:<port>/token` of the token server. */
  realm: string;
  service: string;
  issuer: string;
  username: string;
  password: string;
  /** Every request the token server saw, oldest first. Tests may clear it (`length = 0`). */
  tokenRequests: TokenRequest[];
  /** Lifetime of tokens issued from now on (already issued tokens keep theirs). */
  setTokenLifetime(seconds: number): void;
  setKeyHeader(header: TokenKeyHeader): void;
  /**
   * Signs a token directly (no HTTP), e.g. to hand a client one with chosen access or lifetime.
   * `access` defaults to nothing; `lifetimeSeconds` to the current lifetime.
   */
  issueToken(opts?: { subject?: string; audience?: string; access?: TokenAccess[]; lifetimeSeconds?: number }): string;
  /** Temp dir holding key.pem, cert.pem, config.yml, registry.log and `storage/`. */
  dir: string;
  storageDir: string;
  logPath: string;
  /** Stops the registry and the token server and removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

export interface TokenAccess {
  type: string;
  class?: string;
  name: string;
  actions: string[];
}

export const DEFAULT_TOKEN_USERNAME = "token-tester";
export const DEFAULT_TOKEN_PASSWORD = "t0ken-s3cret";
export const TOKEN_SERVICE = "chunked-push-test-registry";
export const TOKEN_ISSUER = "chunked-push-test-token-issuer";
/** distribution's registry/auth/token Leeway, added to `exp` (and taken from `nbf`) when verifying. */
const REGISTRY_LEEWAY_SECONDS = 60;

function base64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

/**
 * libtrust's key id: sha256 of the DER SubjectPublicKeyInfo, first 30 bytes, base32 without padding,
 * in 12 groups of 4 joined by ':' (what distribution puts in its trusted-keys map for each root cert).
 */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: "spki", format: "der" });
  const b32 = base32(createHash("sha256").update(der).digest().subarray(0, 30));
  const groups: string[] = [];
  for (let i = 0; i < b32.length; i += 4) groups.push(b32.slice(i, i + 4));
  return groups.join(":");
}

/** RFC 4648 base32 (upper case), without padding. */
function base32(bytes: Uint8Array): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** Parses one scope `type[(class)]:name:actions`; the name may contain ':' (the last ':' splits actions). */
function parseScope(scope: string): TokenAccess | null {
  const m = /^([a-z0-9]+)(?:\(([^)]*)\))?:(.+):([^:]*)$/.exec(scope);
  if (m === null) return null;
  const [, type = "", cls, name = "", actions = ""] = m;
  const access: TokenAccess = { type, name, actions: actions.split(",").filter((a) => a !== "") };
  if (cls !== undefined) access.class = cls;
  return access;
}

function parseBasic(header: string | null): { username: string; password: string } | "malformed" | null {
  if (header === null) return null;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (m === null) return "malformed";
  const decoded = Buffer.from(m[1] ?? "", "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return "malformed";
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Constant-time-ish string comparison (a test server, but there is no reason to be sloppy). */
function sameString(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return ha.equals(hb) && a.length === b.length;
}

function configYaml(opts: { storageDir: string; port: number; realm: string; certPath: string }): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    ...registryConfigLines(opts.storageDir, opts.port, "token-harness-not-a-secret"),
    "auth:",
    "  token:",
    `    realm: ${q(opts.realm)}`,
    `    service: ${q(TOKEN_SERVICE)}`,
    `    issuer: ${q(TOKEN_ISSUER)}`,
    `    rootcertbundle: ${q(opts.certPath)}`,
    "",
  ].join("\n");
}

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/**
 * Starts the token server, then a fresh docker-registry trusting its certificate, and resolves once the
 * registry's `GET /v2/` answers 401 with a `Bearer realm=...,service=...` challenge.
 */
export async function startTokenRegistry(opts: TokenRegistryOptions = {}): Promise<TokenRegistry> {
  const username = opts.username ?? DEFAULT_TOKEN_USERNAME;
  const password = opts.password ?? DEFAULT_TOKEN_PASSWORD;
  const anonymous = opts.anonymous ?? "pull";
  const keyType = opts.keyType ?? "rsa";
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  let lifetime = opts.tokenLifetimeSeconds ?? 300;
  let keyHeader: TokenKeyHeader = opts.keyHeader ?? "x5c";
  const checkLifetime = (seconds: number): number => {
    if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`token lifetime must be a whole number of seconds >= 1, got ${seconds}`);
    return seconds;
  };
  checkLifetime(lifetime);

  const dir = await mkdtemp(join(tmpdir(), "chunked-push-token-registry-"));
  const storageDir = join(dir, "storage");
  const keyPath = join(dir, "key.pem");
  const certPath = join(dir, "cert.pem");
  let server: Server<undefined> | undefined;
  try {
    const keyArgs = keyType === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    await runOk(
      ["openssl", "req", "-x509", ...keyArgs, "-nodes", "-sha256", "-days", "2", "-subj", `/CN=${TOKEN_ISSUER}`, "-keyout", keyPath, "-out", certPath],
      { timeoutMs: 30_000 },
    );
    const privateKey = createPrivateKey(await readFile(keyPath));
    const certPem = await readFile(certPath, "utf8");
    const cert = new X509Certificate(certPem);
    const publicKey = createPublicKey(certPem);
    const x5c = [cert.raw.toString("base64")];
    const kid = libtrustKeyId(publicKey);
    const jwk = publicKey.export({ format: "jwk" });
    const alg = keyType === "rsa" ? "RS256" : "ES256";

    const issueToken = (o: { subject?: string; audience?: string; access?: TokenAccess[]; lifetimeSeconds?: number } = {}): string => {
      const seconds = checkLifetime(o.lifetimeSeconds ?? lifetime);
      const now = Date.now() / 1000;
      const header: Record<string, unknown> = { typ: "JWT", alg };
      if (keyHeader === "x5c") header.x5c = x5c;
      else if (keyHeader === "kid") header.kid = kid;
      else header.jwk = jwk;
      const claims = {
        iss: TOKEN_ISSUER,
        sub: o.subject ?? "",
        aud: o.audience ?? TOKEN_SERVICE,
        // See the file comment: the registry accepts a token until exp + 60 s.
        exp: Math.ceil(now) + seconds - REGISTRY_LEEWAY_SECONDS,
        nbf: Math.floor(now) - 1,
        iat: Math.floor(now),
        jti: randomBytes(16).toString("hex"),
        access: o.access ?? [],
      };
      const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
      const signature =
        keyType === "rsa"
          ? sign("sha256", Buffer.from(signingInput), privateKey)
          : sign("sha256", Buffer.from(signingInput), { key: privateKey, dsaEncoding: "ieee-p1363" });
      return `${signingInput}.${base64url(signature)}`;
    };

    const tokenRequests: TokenRequest[] = [];
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req: Request): Response {
        const url = new URL(req.url);
        if (url.pathname !== "/token") return jsonResponse(404, { errors: [{ code: "NOT_FOUND", message: "only /token here" }] });
        if (req.method !== "GET") {
          return jsonResponse(405, { errors: [{ code: "UNSUPPORTED", message: "only GET /token (no OAuth2 POST)" }] }, { Allow: "GET" });
        }
        const scopes = url.searchParams.getAll("scope");
        const service = url.searchParams.get("service");
        const record: TokenRequest = {
          scope: scopes.length === 0 ? null : scopes.join(" "),
          service,
          authorized: false,
          at: Date.now(),
          status: 401,
        };
        tokenRequests.push(record);
        const creds = parseBasic(req.headers.get("authorization"));
        const denied = (message: string): Response =>
          jsonResponse(401, { errors: [{ code: "UNAUTHORIZED", message }] }, { "WWW-Authenticate": `Basic realm="${TOKEN_ISSUER}"` });
        if (creds === "malformed") return denied("malformed Authorization header");
        if (creds !== null && !(sameString(creds.username, username) && sameString(creds.password, password))) {
          return denied("incorrect username or password");
        }
        if (creds === null && anonymous === "deny") return denied("authentication required");
        record.authorized = creds !== null;

        const access: TokenAccess[] = [];
        for (const scope of scopes.flatMap((s) => s.split(" ")).filter((s) => s !== "")) {
          const parsed = parseScope(scope);
          if (parsed === null) continue;
          if (!record.authorized) parsed.actions = parsed.actions.filter((a) => a === "pull");
          access.push(parsed);
        }
        const token = issueToken({ subject: creds?.username ?? "", audience: service ?? TOKEN_SERVICE, access });
        record.status = 200;
        const expiresIn = opts.advertisedLifetimeSeconds ?? lifetime;
        return jsonResponse(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
      },
    });
    const realm = `http://127.0.0.1:${server.port}/token`;

    const tokenServer = server;
    const registry = await serveRegistry({
      dir,
      config: (port) => configYaml({ storageDir, port, realm, certPath }),
      ready: (res) => res.status === 401 && (res.headers.get("www-authenticate") ?? "").startsWith(`Bearer realm="${realm}"`),
      what: "docker-registry (token auth)",
      timeoutMs,
      beforeRemove: () => tokenServer.stop(true),
    });
    return {
      host: registry.host,
      url: registry.url,
      realm,
      service: TOKEN_SERVICE,
      issuer: TOKEN_ISSUER,
      username,
      password,
      tokenRequests,
      setTokenLifetime(seconds: number): void {
        lifetime = checkLifetime(seconds);
      },
      setKeyHeader(header: TokenKeyHeader): void {
        keyHeader = header;
      },
      issueToken,
      dir,
      storageDir,
      logPath: registry.logPath,
      stop: registry.stop,
    };
  } catch (err) {
    await server?.stop(true);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
