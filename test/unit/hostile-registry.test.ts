/**
 * Self-test of the scriptable hostile registry (test/support/hostile-registry.ts) with plain fetch: it
 * serves a correct push when unscripted, and every scripted misbehaviour does what the CLI tests will
 * rely on, as seen in its per-origin records (what reached the registry, what reached each foreign host,
 * how many body bytes the server really sent).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { digestOf } from "../support/fixtures.ts";
import {
  endlessJsonError,
  endlessManifest,
  endlessTokenAnswer,
  escapeSequenceError,
  HOSTILE_ESCAPE_TEXT,
  type HostileRegistry,
  type HostileScript,
  hugeJsonError,
  startHostileRegistry,
  terminalControlsIn,
} from "../support/hostile-registry.ts";

const REPO = "team/app";
const OCTET = "application/octet-stream";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const MB = 1_000_000;

/** Registries started by the running test, stopped after it whatever happened. */
const live: HostileRegistry[] = [];

afterEach(async () => {
  await Promise.all(live.splice(0).map((r) => r.stop()));
});

async function start(script: HostileScript = {}): Promise<HostileRegistry> {
  const r = await startHostileRegistry(script);
  live.push(r);
  return r;
}

/** fetch relative to `base`, never following redirects (a test looks at them). */
async function call(
  base: string,
  method: string,
  target: string,
  init: { body?: Uint8Array | string; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  return fetch(new URL(target, base), { method, body: init.body, headers: init.headers, signal: init.signal, redirect: "manual" });
}

/** Reads `limit` bytes of a body (or all of it, if shorter), then cancels the rest. */
async function readSome(res: Response, limit: number): Promise<{ bytes: number; ended: boolean; head: string }> {
  const reader = res.body?.getReader();
  if (reader === undefined) return { bytes: 0, ended: true, head: "" };
  let bytes = 0;
  let head = "";
  for (;;) {
    const r = await reader.read();
    if (r.done) return { bytes, ended: true, head };
    if (head.length < 200) head += new TextDecoder().decode(r.value.subarray(0, 200));
    bytes += r.value.byteLength;
    if (bytes >= limit) {
      await reader.cancel();
      return { bytes, ended: false, head };
    }
  }
}

describe("unscripted: a correct registry", () => {
  test("monolithic and chunked uploads, digest checks, manifests, and every request recorded as received", async () => {
    const r = await start();
    const auth = "Basic dXNlcjpzZWNyZXQ=";
    expect((await call(r.url, "GET", "/v2/", { headers: { Authorization: auth } })).status).toBe(200);

    const small = new TextEncoder().encode("small blob");
    const post = await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`, { body: "" });
    expect(post.status).toBe(202);
    const loc = post.headers.get("location") ?? "";
    expect(loc).toMatch(new RegExp(`^/v2/${REPO}/blobs/uploads/[0-9a-f-]+\\?_state=`));
    const put = await call(r.url, "PUT", `${loc}&digest=${digestOf(small)}`, { body: small, headers: { "Content-Type": OCTET } });
    expect(put.status).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(digestOf(small));

    const big = new Uint8Array(3000).map((_, i) => i % 251);
    let at = (await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`)).headers.get("location") ?? "";
    for (const [start, end] of [
      [0, 1499],
      [1500, 2999],
    ] as const) {
      const patch = await call(r.url, "PATCH", at, {
        body: big.subarray(start, end + 1),
        headers: { "Content-Range": `${start}-${end}`, "Content-Type": OCTET },
      });
      expect(patch.status).toBe(202);
      expect(patch.headers.get("range")).toBe(`0-${end}`);
      at = patch.headers.get("location") ?? "";
    }
    const status = await call(r.url, "GET", at);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-2999");
    const wrong = await call(r.url, "PUT", `${at}&digest=${digestOf("not it")}`);
    expect(wrong.status).toBe(400);
    expect(await wrong.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
    expect((await call(r.url, "PUT", `${at}&digest=${digestOf(big)}`)).status).toBe(201);

    const head = await call(r.url, "HEAD", `/v2/${REPO}/blobs/${digestOf(big)}`);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("3000");
    expect((await call(r.url, "HEAD", `/v2/${REPO}/blobs/${digestOf("absent")}`)).status).toBe(404);

    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(small), size: small.byteLength },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digestOf(big), size: 3000 }],
    });
    const missing = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: digestOf("absent") }, layers: [] });
    expect((await call(r.url, "PUT", `/v2/${REPO}/manifests/bad`, { body: missing, headers: { "Content-Type": OCI_MANIFEST } })).status).toBe(400);
    const mput = await call(r.url, "PUT", `/v2/${REPO}/manifests/1.0`, { body: manifest, headers: { "Content-Type": OCI_MANIFEST } });
    expect(mput.status).toBe(201);
    expect(mput.headers.get("docker-content-digest")).toBe(digestOf(manifest));
    const mget = await call(r.url, "GET", `/v2/${REPO}/manifests/${digestOf(manifest)}`);
    expect(await mget.text()).toBe(manifest);
    expect(mget.headers.get("content-type")).toBe(OCI_MANIFEST);

    expect(r.blobs.get(digestOf(big))).toEqual(big);
    const first = r.registry.requests[0];
    expect(first?.authorization).toEqual([auth]);
    expect(first?.rawHeaders).toContainEqual(["Authorization", auth]);
    const patches = r.registry.requests.filter((q) => q.method === "PATCH");
    expect(patches.map((q) => [q.route, q.bodyBytes, q.headers["content-range"], q.status])).toEqual([
      ["upload", 1500, "0-1499", 202],
      ["upload", 1500, "1500-2999", 202],
    ]);
    expect(r.requests.every((q) => q.origin === "registry" && q.doneAt !== undefined && q.doneAt >= q.at)).toBe(true);
    expect(r.foreign.requests).toHaveLength(0);
    expect(r.registry.bytesSent()).toBeGreaterThan(manifest.length);
  });

  test("Basic auth on the registry: 401 with a Basic challenge, then served with the right credentials", async () => {
    const r = await start({ auth: { registry: { scheme: "basic", username: "user", password: "secret", realm: "hostile" } } });
    const anonymous = await call(r.url, "GET", "/v2/");
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe('Basic realm="hostile"');
    expect((await call(r.url, "GET", "/v2/", { headers: { Authorization: `Basic ${btoa("user:wrong")}` } })).status).toBe(401);
    expect((await call(r.url, "GET", "/v2/", { headers: { Authorization: `Basic ${btoa("user:secret")}` } })).status).toBe(200);
    expect(r.registry.credentialsSeen()).toEqual([`Basic ${btoa("user:wrong")}`, `Basic ${btoa("user:secret")}`]);
  });

  for (const realm of ["registry", "third"] as const) {
    test(`Bearer auth with the token service on the ${realm} origin: challenge, token with Basic, then served`, async () => {
      const r = await start({ auth: { registry: { scheme: "bearer", realm, service: "svc", username: "user", password: "secret" } } });
      const denied = await call(r.url, "HEAD", `/v2/${REPO}/blobs/${digestOf("x")}`);
      expect(denied.status).toBe(401);
      const challenge = denied.headers.get("www-authenticate") ?? "";
      const realmUrl = `${r.origins[realm].url}/token`;
      expect(challenge).toBe(`Bearer realm="${realmUrl}",service="svc",scope="repository:${REPO}:pull,push"`);

      expect((await call(realmUrl, "GET", "?service=svc")).status).toBe(401);
      const answer = await call(realmUrl, "GET", `?service=svc&scope=repository:${REPO}:pull,push`, {
        headers: { Authorization: `Basic ${btoa("user:secret")}` },
      });
      const { token } = (await answer.json()) as { token: string };
      expect(r.tokens).toEqual([{ token, by: realm, service: "svc", user: "user" }]);
      expect((await call(r.url, "HEAD", `/v2/${REPO}/blobs/${digestOf("x")}`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(404);
      expect((await call(r.url, "GET", "/v2/", { headers: { Authorization: "Bearer forged" } })).status).toBe(401);
      expect(r.origins[realm].requests.filter((q) => q.route === "token")).toHaveLength(2);
    });
  }
});

describe("foreign hosts", () => {
  test("POST answers an absolute Location on the foreign origin, which challenges with its own Bearer realm and records credentials", async () => {
    const r = await start({
      auth: {
        registry: { scheme: "basic", username: "user", password: "secret" },
        foreign: { scheme: "bearer", realm: "foreign", service: "storage", username: "storage-user", password: "storage-pass" },
      },
      rules: [{ route: "upload-start", behaviour: { kind: "serve", location: "foreign" } }],
    });
    expect(r.foreign.url).toStartWith("http://127.0.0.2:");
    const basic = `Basic ${btoa("user:secret")}`;
    const post = await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`, { headers: { Authorization: basic } });
    expect(post.status).toBe(202);
    const location = post.headers.get("location") ?? "";
    expect(location).toStartWith(`${r.foreign.url}/v2/${REPO}/blobs/uploads/`);

    // A careless client sends the registry's credentials along, then asks the foreign token service with them.
    const patch = await fetch(location, { method: "PATCH", body: "abc", headers: { Authorization: basic, "Content-Range": "0-2" } });
    expect(patch.status).toBe(401);
    expect(patch.headers.get("www-authenticate")).toStartWith(`Bearer realm="${r.foreign.url}/token",service="storage"`);
    expect((await call(r.foreign.url, "GET", "/token?service=storage", { headers: { Authorization: basic } })).status).toBe(401);

    expect(r.foreign.credentialsSeen()).toEqual([basic, basic]);
    expect(r.foreign.requests.map((q) => [q.route, q.method, q.status])).toEqual([
      ["upload", "PATCH", 401],
      ["token", "GET", 401],
    ]);
    expect(r.registry.requests.map((q) => q.route)).toEqual(["upload-start"]);
    expect(r.third.requests).toHaveLength(0);
  });

  test("the foreign origin serves the session it was handed, with its own Basic challenge when asked", async () => {
    const r = await start({
      auth: { third: { scheme: "basic", username: "cdn", password: "cdn-pass", realm: "cdn" } },
      rules: [{ route: "upload-start", behaviour: { kind: "serve", location: "third" } }],
    });
    const location = (await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`)).headers.get("location") ?? "";
    expect(location).toStartWith(r.third.url);
    const put = await fetch(`${location}&digest=${digestOf("abc")}`, { method: "PUT", body: "abc" });
    expect(put.status).toBe(401);
    expect(put.headers.get("www-authenticate")).toBe('Basic realm="cdn"');
    const again = await fetch(`${location}&digest=${digestOf("abc")}`, {
      method: "PUT",
      body: "abc",
      headers: { Authorization: `Basic ${btoa("cdn:cdn-pass")}` },
    });
    expect(again.status).toBe(201);
    expect(r.blobs.has(digestOf("abc"))).toBe(true);
    expect(r.third.requests.map((q) => [q.method, q.bodyBytes, q.status])).toEqual([
      ["PUT", 3, 401],
      ["PUT", 3, 201],
    ]);
  });

  for (const status of [307, 308, 303] as const) {
    test(`a ${status} redirect of blob, manifest and upload requests to the foreign origin keeps path and query`, async () => {
      const r = await start({ rules: [{ origin: "registry", route: ["blob", "manifest", "upload"], behaviour: { kind: "redirect", status, to: "foreign" } }] });
      for (const target of [
        `/v2/${REPO}/blobs/${digestOf("x")}`,
        `/v2/${REPO}/manifests/1.0`,
        `/v2/${REPO}/blobs/uploads/abc?_state=1&digest=${digestOf("x")}`,
      ]) {
        const res = await call(r.url, "GET", target, { headers: { Authorization: "Bearer registry-token" } });
        expect(res.status).toBe(status);
        expect(res.headers.get("location")).toBe(`${r.foreign.url}${target}`);
      }
      expect(r.registry.requests.every((q) => q.behaviour === "redirect")).toBe(true);
    });
  }

  test("Bun's fetch, following a redirect to the foreign origin itself, drops Authorization (recorded by the foreign origin)", async () => {
    const r = await start({ rules: [{ origin: "registry", route: "blob", behaviour: { kind: "redirect", status: 307, to: "foreign" } }] });
    const digest = r.putBlob(new TextEncoder().encode("hello"));
    const res = await fetch(`${r.url}/v2/${REPO}/blobs/${digest}`, { headers: { Authorization: "Basic dTpw" } });
    expect(await res.text()).toBe("hello");
    expect(r.registry.credentialsSeen()).toEqual(["Basic dTpw"]);
    expect(r.foreign.requests).toHaveLength(1);
    expect(r.foreign.credentialsSeen()).toEqual([]);
  });

  test("same host name, another port: foreignAddress 127.0.0.1", async () => {
    const r = await start({ foreignAddress: "127.0.0.1", rules: [{ route: "upload-start", behaviour: { kind: "serve", location: "foreign" } }] });
    expect(r.foreign.host).toStartWith("127.0.0.1:");
    expect(r.foreign.host).not.toBe(r.host);
    const location = (await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`)).headers.get("location") ?? "";
    expect(location).toStartWith(r.foreign.url);
  });
});

describe("bodies that never end, or are huge", () => {
  test("an endless JSON error streams as fast as it is read, and stops when the client does", async () => {
    const r = await start({ rules: [{ method: "PATCH", behaviour: endlessJsonError(500) }] });
    const res = await call(r.url, "PATCH", `/v2/${REPO}/blobs/uploads/x`, { body: "abc" });
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("content-length")).toBeNull();
    const read = await readSome(res, 50 * MB);
    expect(read.ended).toBe(false);
    expect(read.head).toStartWith('{"errors":[{"code":"UNKNOWN","message":"AAAA');
    const entry = await r.waitForRequest((q) => q.method === "PATCH" && q.clientClosed, 10_000, "the client to leave");
    // What the server handed its socket: what was read plus at most the socket buffers in between
    // (loopback here: tcp_rmem max 32 MiB + tcp_wmem max 4 MiB), far from endless.
    expect(entry.responseBytes).toBeGreaterThanOrEqual(read.bytes);
    expect(entry.responseBytes).toBeLessThan(read.bytes + 64 * MB);
    expect(entry.bodyBytes).toBe(3);
    const settled = entry.responseBytes;
    await r.waitUntil(() => r.requests.length === 1 && entry.doneAt !== undefined);
    expect(entry.responseBytes).toBe(settled);
  });

  test("a huge JSON error declares its length, and a bounded one is exact, valid JSON", async () => {
    const r = await start({
      rules: [
        { nth: 1, times: 1, behaviour: hugeJsonError(400) },
        { nth: 2, times: 1, behaviour: hugeJsonError(400, 3 * MB) },
      ],
    });
    const huge = await call(r.url, "GET", "/v2/");
    expect(huge.headers.get("content-length")).toBe(String(200 * MB));
    const partial = await readSome(huge, MB);
    expect(partial.ended).toBe(false);
    const entry = await r.waitForRequest((q) => q.seq === 1 && q.clientClosed);
    expect(entry.responseBytes).toBeLessThan(100 * MB); // half of the 200 MB: the rest was never sent

    const bounded = await call(r.url, "GET", "/v2/");
    const text = await bounded.text();
    expect(text.length).toBe(3 * MB);
    const parsed = JSON.parse(text) as { errors: { code: string; message: string }[] };
    expect(parsed.errors[0]?.message).toMatch(/^A+$/);
    await r.waitUntil(() => r.requests[1]?.responseBytes === 3 * MB, 5000, "the whole bounded body counted");
  });

  test("endless token answer and endless manifest GET; a paced trickle; a stall after N bytes", async () => {
    const r = await start({
      auth: { registry: { scheme: "bearer", realm: "foreign" } },
      rules: [
        { origin: "foreign", route: "token", behaviour: endlessTokenAnswer() },
        { route: "manifest", nth: 1, times: 1, behaviour: endlessManifest() },
        { route: "manifest", nth: 2, times: 1, behaviour: { ...endlessManifest(), chunkBytes: 1000, intervalMs: 20 } },
        { route: "manifest", nth: 3, times: 1, behaviour: { ...endlessManifest(), stallAfterBytes: 10_000 } },
      ],
    });
    const token = await call(r.foreign.url, "GET", "/token?service=hostile-registry");
    expect(token.status).toBe(200);
    const tokenRead = await readSome(token, 5 * MB);
    expect(tokenRead.head).toStartWith('{"expires_in":300,"token":"tttt');
    expect(tokenRead.ended).toBe(false);

    const manifest = await call(r.url, "GET", `/v2/${REPO}/manifests/1.0`);
    expect(manifest.headers.get("content-type")).toBe(OCI_MANIFEST);
    expect((await readSome(manifest, 5 * MB)).ended).toBe(false);

    const trickle = await call(r.url, "GET", `/v2/${REPO}/manifests/1.0`);
    const started = performance.now();
    const slow = await readSome(trickle, 5000);
    expect(slow.bytes).toBeGreaterThanOrEqual(5000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(60); // at least 4 pauses of 20 ms

    const stalled = await call(r.url, "GET", `/v2/${REPO}/manifests/1.0`);
    const abort = AbortSignal.timeout(300);
    const reader = stalled.body?.getReader();
    let got = 0;
    const outcome = await (async () => {
      try {
        for (;;) {
          const chunk = await Promise.race([
            reader?.read(),
            new Promise<never>((_, reject) => abort.addEventListener("abort", () => reject(new Error("stalled")))),
          ]);
          if (chunk === undefined || chunk.done) return "ended";
          got += chunk.value.byteLength;
        }
      } catch (error) {
        return error instanceof Error ? error.message : "error";
      }
    })();
    await reader?.cancel().catch(() => undefined);
    expect(outcome).toBe("stalled");
    expect(got).toBe(10_000);
    const manifests = r.requests.filter((q) => q.route === "manifest");
    expect(manifests[2]?.responseBytes).toBe(10_000);
  });
});

describe("token services that misbehave", () => {
  const bearer: HostileScript["auth"] = { registry: { scheme: "bearer", realm: "foreign", service: "svc" } };

  test("silent: the connection is accepted and never answered", async () => {
    const r = await start({ auth: bearer, rules: [{ route: "token", behaviour: { kind: "silent" } }] });
    const challenge = (await call(r.url, "GET", "/v2/")).headers.get("www-authenticate") ?? "";
    const realm = /realm="([^"]+)"/.exec(challenge)?.[1] ?? "";
    expect(realm).toBe(`${r.foreign.url}/token`);
    const error = await call(realm, "GET", "?service=svc", { headers: { Authorization: `Basic ${btoa("u:p")}` }, signal: AbortSignal.timeout(300) }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DOMException);
    expect((error as DOMException).name).toBe("TimeoutError");
    const entry = await r.waitForRequest((q) => q.route === "token" && q.clientClosed);
    expect(entry.origin).toBe("foreign");
    expect(entry.status).toBe("silent");
    expect(entry.authorization).toEqual([`Basic ${btoa("u:p")}`]);
  });

  test("slow, 403, and 200 without a token", async () => {
    const r = await start({
      auth: bearer,
      rules: [
        { route: "token", nth: 1, times: 1, behaviour: { kind: "delay", ms: 150 } },
        { route: "token", nth: 2, times: 1, behaviour: { kind: "error", status: 403, code: "DENIED", message: "no" } },
        {
          route: "token",
          nth: 3,
          times: 1,
          behaviour: { kind: "status", status: 200, headers: { "Content-Type": "application/json" }, body: '{"expires_in":300}' },
        },
      ],
    });
    const slow = await call(r.foreign.url, "GET", "/token?service=svc");
    expect(slow.status).toBe(200);
    expect(((await slow.json()) as { token: string }).token).toStartWith("hostile-foreign-");
    const first = r.foreign.requests[0];
    expect((first?.doneAt ?? 0) - (first?.at ?? 0)).toBeGreaterThanOrEqual(140);
    expect((await call(r.foreign.url, "GET", "/token?service=svc")).status).toBe(403);
    const empty = await call(r.foreign.url, "GET", "/token?service=svc");
    expect(await empty.json()).toEqual({ expires_in: 300 });
    expect(r.foreign.requests.map((q) => q.behaviour)).toEqual(["delay", "error", "status"]);
  });

  test("a 401 challenge on any route whatever was sent, Bearer with a realm on another origin", async () => {
    const r = await start({
      rules: [{ method: "PATCH", behaviour: { kind: "challenge", scheme: "bearer", realm: "third", service: "s", error: "invalid_token" } }],
    });
    const res = await call(r.url, "PATCH", `/v2/${REPO}/blobs/uploads/x`, { headers: { Authorization: "Bearer whatever" } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(
      `Bearer realm="${r.third.url}/token",service="s",scope="repository:${REPO}:pull,push",error="invalid_token"`,
    );
  });
});

describe("upload Range and chunk headers", () => {
  async function session(r: HostileRegistry): Promise<string> {
    return (await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`)).headers.get("location") ?? "";
  }

  async function patch(r: HostileRegistry, at: string, start: number, size: number): Promise<Response> {
    return call(r.url, "PATCH", at, { body: new Uint8Array(size), headers: { "Content-Range": `${start}-${start + size - 1}`, "Content-Type": OCTET } });
  }

  test("rewind: every PATCH and status GET answers Range 0-0 with 202, while the bytes are really stored", async () => {
    const r = await start({ rules: [{ route: "upload", behaviour: { kind: "serve", range: "rewind" } }] });
    let at = await session(r);
    for (let i = 0; i < 3; i++) {
      const res = await patch(r, at, i * 100, 100);
      expect(res.status).toBe(202);
      expect(res.headers.get("range")).toBe("0-0");
      at = res.headers.get("location") ?? "";
    }
    const status = await call(r.url, "GET", at);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-0");
    // Lenient resume: believing the lie (restart at byte 1) is accepted and cuts the stored bytes there.
    const again = await patch(r, at, 1, 10);
    expect(again.status).toBe(202);
    expect((await call(r.url, "PUT", `${again.headers.get("location")}&digest=${digestOf(new Uint8Array(11))}`)).status).toBe(201);
  });

  test("backwards: each answer reports less than the one before", async () => {
    const r = await start({ rules: [{ route: "upload", behaviour: { kind: "serve", range: "backwards", backStep: 10 } }] });
    let at = await session(r);
    const ends: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await patch(r, at, i * 100, 100);
      ends.push(res.headers.get("range") ?? "");
      at = res.headers.get("location") ?? "";
    }
    ends.push((await call(r.url, "GET", at)).headers.get("range") ?? "");
    expect(ends).toEqual(["0-89", "0-79", "0-69", "0-59", "0-49"]);
    const custom = await start({ rules: [{ route: "upload", behaviour: { kind: "serve", range: (s) => `0-${s.received * 2}` } }] });
    const res = await patch(custom, await session(custom), 0, 50);
    expect(res.headers.get("range")).toBe("0-100");
  });

  test("absurd OCI-Chunk-Min/Max-Length on POST and status GET, globally or per rule", async () => {
    const r = await start({
      chunkHeaders: { min: "-5", max: "1e30" },
      rules: [{ route: "upload-start", nth: 2, times: 1, behaviour: { kind: "serve", chunkMin: "99999999999999999999", chunkMax: "abc" } }],
    });
    const first = await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`);
    expect([first.headers.get("oci-chunk-min-length"), first.headers.get("oci-chunk-max-length")]).toEqual(["-5", "1e30"]);
    const status = await call(r.url, "GET", first.headers.get("location") ?? "");
    expect([status.headers.get("oci-chunk-min-length"), status.headers.get("oci-chunk-max-length")]).toEqual(["-5", "1e30"]);
    const second = await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`);
    expect([second.headers.get("oci-chunk-min-length"), second.headers.get("oci-chunk-max-length")]).toEqual(["99999999999999999999", "abc"]);
    expect(r.requests.map((q) => q.responseHeaders["oci-chunk-max-length"])).toEqual(["1e30", "1e30", "abc"]);
  });

  test("min larger than max, and zero", async () => {
    const r = await start({ chunkHeaders: { min: "10000000", max: "0" } });
    const post = await call(r.url, "POST", `/v2/${REPO}/blobs/uploads/`);
    expect(Number(post.headers.get("oci-chunk-min-length"))).toBeGreaterThan(Number(post.headers.get("oci-chunk-max-length")));
  });
});

describe("escape sequences, silence, resets, raw answers and rule windows", () => {
  test("an error message full of terminal controls arrives intact in the JSON", async () => {
    const r = await start({ rules: [{ route: "manifest", behaviour: escapeSequenceError(400) }] });
    const res = await call(r.url, "PUT", `/v2/${REPO}/manifests/1.0`, { body: "{}" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { errors: { code: string; message: string; detail: { reason: string } }[] };
    expect(body.errors[0]?.message).toBe(HOSTILE_ESCAPE_TEXT);
    expect(body.errors[0]?.detail.reason).toBe(HOSTILE_ESCAPE_TEXT);
    const controls = terminalControlsIn(HOSTILE_ESCAPE_TEXT);
    expect(controls).toEqual(expect.arrayContaining(["U+001B", "U+0007", "U+000D", "U+0008", "U+0000", "U+007F", "U+009B", "U+009D", "U+009C", "U+0085"]));
    expect(terminalControlsIn("HOSTILE-BEGIN red bell\tHOSTILE-END\n")).toEqual([]);
  });

  test("silent, reset and raw; a script error in a header is recorded as a reset", async () => {
    const r = await start({
      rules: [
        { route: "ping", nth: 1, times: 1, behaviour: { kind: "reset" } },
        {
          route: "ping",
          nth: 2,
          times: 1,
          behaviour: { kind: "raw", bytes: "HTTP/1.1 418 Teapot\r\nX-C1: \x9b31m\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi" },
        },
        { route: "ping", nth: 3, times: 1, behaviour: { kind: "serve", headers: { "X-Evil": "a\u001bb" } } },
        { route: "blob", behaviour: { kind: "silent", readBody: false } },
      ],
    });
    const reset = await call(r.url, "GET", "/v2/").catch((e: unknown) => e);
    expect(reset).toBeInstanceOf(Error);
    const raw = await call(r.url, "GET", "/v2/");
    expect(raw.status).toBe(418);
    expect(raw.headers.get("x-c1")).toBe("\u009b31m");
    expect(await raw.text()).toBe("hi");
    expect(await call(r.url, "GET", "/v2/").catch((e: unknown) => e)).toBeInstanceOf(Error);
    expect(r.requests[2]?.error).toContain("x-evil");

    const silent = call(r.url, "GET", `/v2/${REPO}/blobs/${digestOf("x")}`).catch((e: unknown) => e);
    await r.waitForRequest((q) => q.route === "blob" && q.status === "silent");
    await r.stop();
    expect(await silent).toBeInstanceOf(Error);
    expect(r.requests.map((q) => q.status)).toEqual(["reset", "raw", "reset", "silent"]);
  });

  test("nth and times pick which requests misbehave; added rules count from when they are added", async () => {
    const r = await start({ rules: [{ route: "ping", nth: 2, times: 2, behaviour: { kind: "status", status: 503 } }] });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await call(r.url, "GET", "/v2/")).status);
    expect(statuses).toEqual([200, 503, 503, 200, 200]);
    r.addRule({ route: "ping", behaviour: { kind: "status", status: 429, headers: { "Retry-After": "0" } } });
    expect((await call(r.url, "GET", "/v2/")).status).toBe(429);
    r.clearRules();
    expect((await call(r.url, "GET", "/v2/")).status).toBe(200);
    expect(r.requests.map((q) => q.rule ?? null)).toEqual([null, 0, 0, null, null, 1, null]);
  });

  test("stop() ends endless bodies and silent connections at once", async () => {
    const r = await start({
      rules: [
        { route: "ping", behaviour: endlessJsonError() },
        { route: "blob", behaviour: { kind: "silent" } },
      ],
    });
    const endless = await call(r.url, "GET", "/v2/");
    const silent = call(r.url, "GET", `/v2/${REPO}/blobs/${digestOf("x")}`).catch((e: unknown) => e);
    await r.waitForRequest((q) => q.route === "blob");
    const drained = readSome(endless, Infinity).catch((e: unknown) => ({ error: e }));
    await r.stop();
    expect(await silent).toBeInstanceOf(Error);
    const outcome = await drained;
    expect("error" in outcome || outcome.ended).toBe(true);
  });
});
