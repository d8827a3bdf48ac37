/**
 * The token-auth harness itself (test/support/token-registry.ts): Debian's docker-registry with
 * `auth.token` and our JWT-signing token server. Plain fetch pins down the exact 401s the CLI's token
 * logic must handle (missing token, expired token, insufficient scope); skopeo proves the setup is the
 * standard Docker token flow, not something only our client understands.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { runOk, sleep } from "../support/ports.ts";
import { pullAndVerify, skopeoPush } from "../support/skopeo.ts";
import { startTokenRegistry, type TokenRegistry } from "../support/token-registry.ts";
import { digestOf } from "../support/fixtures.ts";
import { basicHeader } from "../support/scripted-registry.ts";

let registry: TokenRegistry;
let work: string;

beforeAll(async () => {
  registry = await startTokenRegistry();
  work = await mkdtemp(join(tmpdir(), "token-registry-test-"));
}, 30_000);

afterAll(async () => {
  await registry?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
}, 10_000);

const ZERO_DIGEST = `sha256:${"0".repeat(64)}`;

const basic = (username: string, password: string): string => basicHeader({ username, password });

interface TokenBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

function isTokenBody(value: unknown): value is TokenBody {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.token === "string" && typeof v.access_token === "string" && typeof v.expires_in === "number" && typeof v.issued_at === "string";
}

/** GET realm?service=&scope= the way a client does after a Bearer challenge. */
async function fetchToken(scope: string | null, auth: string | null): Promise<{ status: number; body: TokenBody | null; wwwAuthenticate: string | null }> {
  const url = new URL(registry.realm);
  url.searchParams.set("service", registry.service);
  if (scope !== null) url.searchParams.set("scope", scope);
  const res = await fetch(url, { headers: auth === null ? {} : { Authorization: auth } });
  const json: unknown = await res.json();
  return { status: res.status, body: isTokenBody(json) ? json : null, wwwAuthenticate: res.headers.get("www-authenticate") };
}

async function pushToken(repo: string): Promise<string> {
  const { status, body } = await fetchToken(`repository:${repo}:pull,push`, basic(registry.username, registry.password));
  expect(status).toBe(200);
  if (body === null) throw new Error("token server gave no token");
  return body.token;
}

function decodeJwtPart(token: string, index: 0 | 1): Record<string, unknown> {
  const part = token.split(".")[index];
  if (part === undefined) throw new Error("not a JWT");
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8")) as Record<string, unknown>;
}

/** The challenge the registry sends; `scope`/`error` are left out when undefined. */
function challenge(opts: { scope?: string; error?: string } = {}): string {
  let value = `Bearer realm="${registry.realm}",service="${registry.service}"`;
  if (opts.scope !== undefined) value += `,scope="${opts.scope}"`;
  if (opts.error !== undefined) value += `,error="${opts.error}"`;
  return value;
}

/**
 * Parses `Bearer k="v",k="v"` and sorts the scope's actions: distribution builds the challenge's scope
 * from a Go map, so "pull,push" and "push,pull" both occur for the same request (seen on invalid_token
 * and insufficient_scope). A client must treat the actions as a set.
 */
function normalizeChallenge(header: string | null): string | null {
  if (header === null) return null;
  const m = /^Bearer (.*)$/.exec(header);
  if (m === null) return header;
  const params = [...(m[1] ?? "").matchAll(/([a-z_]+)="([^"]*)"/g)].map(([, k = "", v = ""]) => {
    if (k !== "scope") return `${k}="${v}"`;
    const scope = v.replace(/:([^:]*)$/, (_all, actions: string) => `:${actions.split(",").sort().join(",")}`);
    return `${k}="${scope}"`;
  });
  return `Bearer ${params.join(",")}`;
}

function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

/** POST a session and monolithic PUT of `data`; returns the final PUT's response. */
async function uploadBlob(repo: string, token: string, data: Uint8Array): Promise<Response> {
  const post = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, {
    method: "POST",
    headers: { ...bearer(token), "Content-Length": "0" },
  });
  await post.arrayBuffer();
  expect(post.status).toBe(202);
  const location = post.headers.get("location");
  if (location === null) throw new Error("POST gave no Location");
  const put = new URL(location, registry.url);
  put.searchParams.set("digest", digestOf(data));
  return fetch(put, {
    method: "PUT",
    headers: { ...bearer(token), "Content-Type": "application/octet-stream", "Content-Length": String(data.length) },
    body: data,
  });
}

describe("registry challenge", () => {
  test("/v2/ without a token: 401 Bearer realm + service, no scope", async () => {
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(401);
    expect(normalizeChallenge(res.headers.get("www-authenticate"))).toBe(challenge());
    expect(await res.json()).toEqual({ errors: [{ code: "UNAUTHORIZED", message: "authentication required", detail: null }] });
  });

  test("repository requests without a token name the scope they need", async () => {
    const head = await fetch(`${registry.url}/v2/tok/none/blobs/${ZERO_DIGEST}`, { method: "HEAD" });
    expect(head.status).toBe(401);
    expect(normalizeChallenge(head.headers.get("www-authenticate"))).toBe(challenge({ scope: "repository:tok/none:pull" }));

    const post = await fetch(`${registry.url}/v2/tok/none/blobs/uploads/`, { method: "POST", headers: { "Content-Length": "0" } });
    await post.arrayBuffer();
    expect(post.status).toBe(401);
    expect(normalizeChallenge(post.headers.get("www-authenticate"))).toBe(challenge({ scope: "repository:tok/none:pull,push" }));
  });
});

describe("token server", () => {
  test("credentials give a signed JWT granting the requested actions", async () => {
    registry.tokenRequests.length = 0;
    const { status, body } = await fetchToken("repository:tok/app:pull,push", basic(registry.username, registry.password));
    expect(status).toBe(200);
    if (body === null) throw new Error("no token body");
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    expect(Number.isNaN(Date.parse(body.issued_at))).toBe(false);

    const header = decodeJwtPart(body.token, 0);
    expect(header.alg).toBe("RS256");
    expect(header.typ).toBe("JWT");
    expect(Array.isArray(header.x5c)).toBe(true);
    const claims = decodeJwtPart(body.token, 1);
    expect(claims.iss).toBe(registry.issuer);
    expect(claims.aud).toBe(registry.service);
    expect(claims.sub).toBe(registry.username);
    expect(claims.access).toEqual([{ type: "repository", name: "tok/app", actions: ["pull", "push"] }]);

    expect(registry.tokenRequests).toHaveLength(1);
    expect(registry.tokenRequests[0]).toMatchObject({
      scope: "repository:tok/app:pull,push",
      service: registry.service,
      authorized: true,
      status: 200,
    });
  });

  test("wrong password: 401 with a Basic challenge, no token", async () => {
    registry.tokenRequests.length = 0;
    const res = await fetchToken("repository:tok/app:pull,push", basic(registry.username, "wrong"));
    expect(res.status).toBe(401);
    expect(res.body).toBeNull();
    expect(res.wwwAuthenticate).toStartWith("Basic realm=");
    expect(registry.tokenRequests[0]).toMatchObject({ authorized: false, status: 401 });
  });

  test("anonymous: a pull-only token", async () => {
    const { status, body } = await fetchToken("repository:tok/app:pull,push", null);
    expect(status).toBe(200);
    if (body === null) throw new Error("no token body");
    expect(decodeJwtPart(body.token, 1).access).toEqual([{ type: "repository", name: "tok/app", actions: ["pull"] }]);
  });
});

describe("pushing with a token (plain fetch)", () => {
  test("HEAD 404, POST 202, monolithic PUT 201, manifest PUT 201", async () => {
    const repo = "tok/app";
    const token = await pushToken(repo);

    const layerTar = new TextEncoder().encode("not really a tar, the registry does not look\n");
    const layer = new Uint8Array(gzipSync(layerTar));
    const config = new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [digestOf(layerTar)] } }));

    const head = await fetch(`${registry.url}/v2/${repo}/blobs/${digestOf(layer)}`, { method: "HEAD", headers: bearer(token) });
    expect(head.status).toBe(404);

    for (const blob of [layer, config]) {
      const put = await uploadBlob(repo, token, blob);
      await put.arrayBuffer();
      expect(put.status).toBe(201);
      expect(put.headers.get("docker-content-digest")).toBe(digestOf(blob));
    }

    const manifest = new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digestOf(layer), size: layer.length }],
      }),
    );
    const put = await fetch(`${registry.url}/v2/${repo}/manifests/1`, {
      method: "PUT",
      headers: { ...bearer(token), "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
      body: manifest,
    });
    await put.arrayBuffer();
    expect(put.status).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(digestOf(manifest));

    const get = await fetch(`${registry.url}/v2/${repo}/manifests/1`, {
      headers: { ...bearer(token), Accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(get.status).toBe(200);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(manifest);
  });

  test("the registry also accepts kid (libtrust key id) and jwk headers", async () => {
    try {
      for (const header of ["kid", "jwk"] as const) {
        registry.setKeyHeader(header);
        const token = await pushToken("tok/app");
        expect(Object.keys(decodeJwtPart(token, 0))).toContain(header);
        const res = await fetch(`${registry.url}/v2/tok/app/blobs/${ZERO_DIGEST}`, { method: "HEAD", headers: bearer(token) });
        expect(res.status).toBe(404);
      }
    } finally {
      registry.setKeyHeader("x5c");
    }
  });

  test("insufficient scope: pull-only token on POST, token for another repository", async () => {
    const anon = await fetchToken("repository:tok/app:pull,push", null);
    if (anon.body === null) throw new Error("no anonymous token");
    // Pull works with it...
    const head = await fetch(`${registry.url}/v2/tok/app/blobs/${ZERO_DIGEST}`, { method: "HEAD", headers: bearer(anon.body.token) });
    expect(head.status).toBe(404);
    // ...push does not.
    const post = await fetch(`${registry.url}/v2/tok/app/blobs/uploads/`, {
      method: "POST",
      headers: { ...bearer(anon.body.token), "Content-Length": "0" },
    });
    expect(post.status).toBe(401);
    expect(normalizeChallenge(post.headers.get("www-authenticate"))).toBe(challenge({ scope: "repository:tok/app:pull,push", error: "insufficient_scope" }));
    expect(await post.json()).toMatchObject({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] });

    const other = await pushToken("tok/other");
    const wrongRepo = await fetch(`${registry.url}/v2/tok/app/blobs/uploads/`, {
      method: "POST",
      headers: { ...bearer(other), "Content-Length": "0" },
    });
    await wrongRepo.arrayBuffer();
    expect(wrongRepo.status).toBe(401);
    expect(normalizeChallenge(wrongRepo.headers.get("www-authenticate"))).toBe(
      challenge({ scope: "repository:tok/app:pull,push", error: "insufficient_scope" }),
    );
  });

  test("a token for the wrong service (aud) is invalid_token", async () => {
    const token = registry.issueToken({ audience: "some-other-service", access: [{ type: "repository", name: "tok/app", actions: ["pull", "push"] }] });
    const res = await fetch(`${registry.url}/v2/tok/app/blobs/uploads/`, { method: "POST", headers: { ...bearer(token), "Content-Length": "0" } });
    await res.arrayBuffer();
    expect(res.status).toBe(401);
    expect(normalizeChallenge(res.headers.get("www-authenticate"))).toBe(challenge({ scope: "repository:tok/app:pull,push", error: "invalid_token" }));
  });

  test("a 2 s token works, then is refused with invalid_token once expired", async () => {
    registry.setTokenLifetime(2);
    try {
      const issuedAt = Date.now();
      const { body } = await fetchToken("repository:tok/app:pull,push", basic(registry.username, registry.password));
      if (body === null) throw new Error("no token body");
      expect(body.expires_in).toBe(2);
      const post = (): Promise<Response> =>
        fetch(`${registry.url}/v2/tok/app/blobs/uploads/`, { method: "POST", headers: { ...bearer(body.token), "Content-Length": "0" } });

      const fresh = await post();
      await fresh.arrayBuffer();
      expect(fresh.status).toBe(202);

      await sleep(1900);
      let refused: Response | null = null;
      while (Date.now() - issuedAt < 5000) {
        const res = await post();
        if (res.status === 401) {
          refused = res;
          break;
        }
        await res.arrayBuffer();
        expect(res.status).toBe(202);
        await sleep(100);
      }
      if (refused === null) throw new Error("token still accepted 5 s after it was issued");
      const elapsed = Date.now() - issuedAt;
      // Never refused before expires_in, and at most about a second after.
      expect(elapsed).toBeGreaterThanOrEqual(2000);
      expect(elapsed).toBeLessThan(4000);
      expect(normalizeChallenge(refused.headers.get("www-authenticate"))).toBe(challenge({ scope: "repository:tok/app:pull,push", error: "invalid_token" }));
      expect(await refused.json()).toMatchObject({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] });

      const base = await fetch(`${registry.url}/v2/`, { headers: bearer(body.token) });
      await base.arrayBuffer();
      expect(base.status).toBe(401);
      expect(normalizeChallenge(base.headers.get("www-authenticate"))).toBe(challenge({ error: "invalid_token" }));
    } finally {
      registry.setTokenLifetime(300);
    }
  }, 10_000);
});

describe("standard clients", () => {
  test("skopeo copy --dest-creds pushes a GNU tar docker-archive through the token flow", async () => {
    const dir = join(work, "archive");
    const rootfs = join(dir, "rootfs");
    await mkdir(rootfs, { recursive: true });
    await writeFile(join(rootfs, "hello.txt"), "hello from a token-auth push\n");
    const layerPath = join(dir, "layer.tar");
    await runOk(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-cf", layerPath, "-C", rootfs, "."]);
    const diffId = digestOf(await readFile(layerPath));
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [diffId] } }),
    );
    await writeFile(join(dir, "manifest.json"), JSON.stringify([{ Config: "config.json", RepoTags: ["tok/skopeo:1"], Layers: ["layer.tar"] }]));
    const archive = join(work, "image.tar");
    await runOk(["tar", "-cf", archive, "-C", dir, "manifest.json", "config.json", "layer.tar"]);

    registry.tokenRequests.length = 0;
    const ref = `${registry.host}/tok/skopeo:1`;
    await skopeoPush({ source: `docker-archive:${archive}`, ref, username: registry.username, password: registry.password });
    const pushes = registry.tokenRequests.filter((r) => r.authorized && (r.scope ?? "").includes("repository:tok/skopeo:") && (r.scope ?? "").includes("push"));
    expect(pushes.length).toBeGreaterThan(0);
    expect(pushes[0]?.service).toBe(registry.service);

    const pulled = await pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });
    expect(pulled.diffIds).toEqual([diffId]);
  }, 20_000);
});

describe("EC P-256 keys", () => {
  test("ES256 tokens (raw r||s signature) are accepted too", async () => {
    const ec = await startTokenRegistry({ keyType: "ec" });
    try {
      const url = new URL(ec.realm);
      url.searchParams.set("service", ec.service);
      url.searchParams.set("scope", "repository:tok/ec:pull,push");
      const res = await fetch(url, { headers: { Authorization: basic(ec.username, ec.password) } });
      const body: unknown = await res.json();
      if (!isTokenBody(body)) throw new Error("no token body");
      expect(decodeJwtPart(body.token, 0).alg).toBe("ES256");
      const post = await fetch(`${ec.url}/v2/tok/ec/blobs/uploads/`, { method: "POST", headers: { ...bearer(body.token), "Content-Length": "0" } });
      await post.arrayBuffer();
      expect(post.status).toBe(202);
    } finally {
      await ec.stop();
    }
  }, 20_000);
});
