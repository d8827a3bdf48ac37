/**
 * Self-test of the fault-injecting proxy (test/support/fault-proxy.ts) in front of the serverless-registry
 * emulator, with plain fetch only: each fault does what the push tests will rely on, and the errors a Bun
 * client sees are pinned here (ECONNRESET or EPIPE for cut/reset, TimeoutError for a client timeout on a
 * stall, and fetch's own silent retry of idempotent requests on a reused connection).
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type FaultProxy, type ProxiedRequest, startFaultProxy } from "../support/fault-proxy.ts";
import { digestOf } from "../support/fixtures.ts";
import { scriptedRegistry } from "../support/scripted-registry.ts";
import { type Emulator, startServerlessEmulator } from "../support/serverless-emulator.ts";
import { closeAll } from "../support/transport-servers.ts";

const MiB = 1024 * 1024;
const CHUNK = 5 * MiB; // the emulator's minimum part size
const REPO = "team/app";
const AUTH = `Basic ${btoa("user:secret")}`;
const OCTET = "application/octet-stream";

let em: Emulator;
let px: FaultProxy;

beforeEach(async () => {
  em = await startServerlessEmulator();
  px = await startFaultProxy(em.url);
});

afterEach(async () => {
  await px.stop();
  await em.stop();
  await closeAll();
});

function call(method: string, target: string, init: { body?: RequestInit["body"]; headers?: Record<string, string>; signal?: AbortSignal } = {}) {
  const url = new URL(target, px.url).toString();
  return fetch(url, {
    method,
    body: init.body,
    headers: { Authorization: AUTH, ...init.headers },
    signal: init.signal,
    redirect: "manual",
  });
}

async function openUpload(): Promise<string> {
  const res = await call("POST", `/v2/${REPO}/blobs/uploads/`, { headers: { "Content-Length": "0" }, body: "" });
  expect(res.status).toBe(202);
  await res.arrayBuffer();
  const location = res.headers.get("location");
  if (location === null) throw new Error("POST answered without a Location");
  return location;
}

function patch(location: string, start: number, bytes: Uint8Array, signal?: AbortSignal): Promise<Response> {
  return call("PATCH", location, {
    headers: { "Content-Type": OCTET, "Content-Range": `${start}-${start + bytes.byteLength - 1}` },
    body: bytes,
    signal,
  });
}

/** PATCH that must succeed; returns the new Location. */
async function patchOk(location: string, start: number, bytes: Uint8Array): Promise<string> {
  const res = await patch(location, start, bytes);
  await res.arrayBuffer();
  expect(res.status).toBe(202);
  expect(res.headers.get("range")).toBe(`0-${start + bytes.byteLength - 1}`);
  return res.headers.get("location") ?? "";
}

function blob(size: number): Uint8Array {
  return new Uint8Array(randomBytes(size));
}

async function finish(location: string, bytes: Uint8Array): Promise<void> {
  const digest = digestOf(bytes);
  const res = await call("PUT", `${location}&digest=${digest}`, { headers: { "Content-Length": "0" }, body: "" });
  await res.arrayBuffer();
  expect(res.status).toBe(201);
  expect(em.blobs.get(digest)).toEqual(bytes);
}

function last(): ProxiedRequest {
  const entry = px.requests.at(-1);
  if (entry === undefined) throw new Error("the proxy recorded nothing");
  return entry;
}

function patchBytes(): number {
  return px.requests.filter((r) => r.method === "PATCH").reduce((sum, r) => sum + r.bodyBytes, 0);
}

/**
 * A dropped connection: Bun's fetch rejects with a TypeError whose code is "ECONNRESET" or, when it was
 * still writing the body (a race, seen mostly with file-backed bodies), "EPIPE".
 */
function expectDropped(error: unknown): void {
  expect(error).toBeInstanceOf(TypeError);
  const { code, message } = error as { code?: string; message: string };
  expect(["ECONNRESET", "EPIPE"]).toContain(code ?? "");
  expect(message).toStartWith(code === "EPIPE" ? "EPIPE fetching" : "ECONNRESET: The socket connection was closed unexpectedly");
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the request to fail");
}

describe("forwarding", () => {
  test("forwards requests unchanged; the Location comes back usable through the proxy", async () => {
    const data = blob(CHUNK + 1000);
    const location = await openUpload();
    expect(location).toStartWith(`/v2/${REPO}/blobs/uploads/`);
    expect(location).toContain("?_stateHash=");
    const loc2 = await patchOk(location, 0, data.subarray(0, CHUNK));
    const loc3 = await patchOk(loc2, CHUNK, data.subarray(CHUNK));
    await finish(loc3, data);

    const head = await call("HEAD", `/v2/${REPO}/blobs/${digestOf(data)}`);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(data.byteLength));

    expect(em.violations).toEqual([]);
    const upstreamPatch = em.requests.find((r) => r.method === "PATCH");
    expect(upstreamPatch?.headers).toMatchObject({
      authorization: AUTH,
      "content-range": `0-${CHUNK - 1}`,
      "content-length": String(CHUNK),
      "content-type": OCTET,
    });
    expect(px.requests.map((r) => [r.method, r.status, r.bodyBytes, r.faulted])).toEqual([
      ["POST", 202, 0, false],
      ["PATCH", 202, CHUNK, false],
      ["PATCH", 202, 1000, false],
      ["PUT", 201, 0, false],
      ["HEAD", 200, 0, false],
    ]);
    expect(em.requests.map((r) => `${r.method} ${r.path}?${r.query}`)).toEqual(px.requests.map((r) => `${r.method} ${r.path}?${r.query}`));
  });

  test("rewrites Locations that point at upstream, keeps others, does not follow redirects", async () => {
    const origin = scriptedRegistry({
      get: (request, { pathname }) => {
        const targets: Record<string, string> = {
          "/absolute": `http://${new URL(request.url).host}/v2/x/blobs/uploads/1?_state=abc`,
          "/foreign": "https://storage.example.com/bucket/blob?sig=1",
          "/relative": "/v2/x/blobs/uploads/2?_stateHash=def",
        };
        return new Response(null, { status: 307, headers: { Location: targets[pathname] ?? "/" } });
      },
    });
    const direct = await startFaultProxy(`http://${origin.host}`);
    try {
      const get = async (path: string) => {
        const res = await fetch(direct.url + path, { redirect: "manual" });
        await res.arrayBuffer();
        expect(res.status).toBe(307);
        return res.headers.get("location");
      };
      expect(await get("/absolute")).toBe(`${direct.url}/v2/x/blobs/uploads/1?_state=abc`);
      expect(await get("/foreign")).toBe("https://storage.example.com/bucket/blob?sig=1");
      expect(await get("/relative")).toBe("/v2/x/blobs/uploads/2?_stateHash=def");
      expect(direct.requests.map((r) => r.path)).toEqual(["/absolute", "/foreign", "/relative"]);
    } finally {
      await direct.stop();
    }
  });
});

describe("faults", () => {
  test("cut-body on the 2nd PATCH: fetch rejects with ECONNRESET, upstream never sees it, resume works", async () => {
    const data = blob(2 * CHUNK);
    const after = MiB;
    px.addRule({ method: "PATCH", nth: 2, fault: { kind: "cut-body", after } });
    const location = await openUpload();
    const loc2 = await patchOk(location, 0, data.subarray(0, CHUNK));
    const upstreamBefore = em.requests.length;

    expectDropped(await caught(patch(loc2, CHUNK, data.subarray(CHUNK))));
    const cut = last();
    expect(cut).toMatchObject({ method: "PATCH", status: "cut", faulted: true, fault: "cut-body" });
    expect(cut.bodyBytes).toBeGreaterThanOrEqual(after);
    expect(cut.bodyBytes).toBeLessThan(CHUNK);
    expect(em.requests.length).toBe(upstreamBefore);

    // The server still holds the first chunk under the same state: ask, then re-send only the lost chunk.
    const status = await call("GET", loc2);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${CHUNK - 1}`);
    expect(status.headers.get("location")).toBe(loc2);
    const loc3 = await patchOk(loc2, CHUNK, data.subarray(CHUNK));
    await finish(loc3, data);
    expect(patchBytes() - data.byteLength).toBe(cut.bodyBytes);
    expect(em.violations).toEqual([]);
  });

  test("cut-body with forward: upstream gets the partial body, then a dropped connection", async () => {
    const data = blob(CHUNK);
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "cut-body", after: MiB, forward: true } });
    const location = await openUpload();
    expectDropped(await caught(patch(location, 0, data)));
    expect(last().bodyBytes).toBeGreaterThanOrEqual(MiB);
    const status = await call("GET", location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0--1"); // nothing stored
    await finish(await patchOk(location, 0, data), data);
  });

  test("status 503 / 522 / 429 are answered without reaching upstream", async () => {
    const location = await openUpload();
    const upstreamBefore = em.requests.length;
    px.addRule({
      method: "GET",
      pathIncludes: "/blobs/uploads/",
      nth: 1,
      fault: { kind: "status", status: 503, contentType: "application/json", body: '{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}' },
    });
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "status", status: 522 } });
    px.addRule({ method: "HEAD", nth: 1, times: 2, fault: { kind: "status", status: 429, headers: { "Retry-After": "1" } } });

    const unavailable = await call("GET", location);
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get("content-type")).toBe("application/json");
    expect(await unavailable.json()).toEqual({ errors: [{ code: "UNAVAILABLE", message: "try later" }] });

    // A big body is read to its end first, so the client gets the answer, not a broken pipe.
    const timedOut = await patch(location, 0, blob(CHUNK));
    expect(timedOut.status).toBe(522);
    expect(timedOut.statusText).toBe("Connection timed out");
    expect(timedOut.headers.get("content-type")).toStartWith("text/html");
    expect(timedOut.headers.get("server")).toBe("cloudflare");
    expect(await timedOut.text()).toContain("Error 522");
    expect(last()).toMatchObject({ method: "PATCH", status: 522, bodyBytes: CHUNK, faulted: true, fault: "status" });

    const headPath = `/v2/${REPO}/blobs/${digestOf(new Uint8Array(1))}`;
    for (let i = 0; i < 2; i++) {
      const limited = await call("HEAD", headPath);
      expect(limited.status).toBe(429);
      expect(limited.headers.get("retry-after")).toBe("1");
    }
    expect(em.requests.length).toBe(upstreamBefore);

    // Each rule fired its window only: the same requests now reach upstream.
    expect((await call("HEAD", headPath)).status).toBe(404);
    expect((await call("GET", location)).status).toBe(204);
    expect(em.requests.length).toBe(upstreamBefore + 2);
    expect(px.requests.filter((r) => r.faulted).map((r) => r.status)).toEqual([503, 522, 429, 429]);
  });

  test("stall holds the response: a client timeout fires, though upstream processed the request", async () => {
    const data = blob(CHUNK);
    const location = await openUpload();

    px.addRule({ method: "GET", nth: 1, fault: { kind: "stall", ms: 400 } });
    const started = performance.now();
    const slow = await call("GET", location);
    expect(slow.status).toBe(204);
    expect(performance.now() - started).toBeGreaterThanOrEqual(380);

    // The client's timeout is started once upstream has answered and the proxy holds that answer, so
    // it fires during the stall however slowly the 5 MiB body travels on a loaded machine.
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "stall", ms: 30_000 } });
    const client = new AbortController();
    void px
      .waitFor((r) => r.method === "PATCH" && r.status === 202)
      .then(() => {
        const timeout = AbortSignal.timeout(100);
        timeout.addEventListener("abort", () => client.abort(timeout.reason));
      });
    const error = await caught(patch(location, 0, data, client.signal));
    expect(error).toBeInstanceOf(DOMException);
    expect(error).toMatchObject({ name: "TimeoutError" });
    // The client's close reaches the proxy a moment later: the held 202 was never sent.
    const stalled = await px.waitFor((r) => r.method === "PATCH" && r.doneAt !== undefined);
    expect(stalled).toMatchObject({ method: "PATCH", status: 202, bodyBytes: CHUNK, fault: "stall", clientClosed: true });

    // The chunk landed although the client never saw the 202: its old Location is now stale.
    const retry = await patch(location, 0, data);
    expect(retry.status).toBe(416);
    expect(retry.headers.get("range")).toBe(`0-${CHUNK - 1}`);
    await retry.arrayBuffer();
    await finish(retry.headers.get("location") ?? "", data);
  });

  test("stale-416 answers with upstream's fresh Location and Range; a PATCH to it succeeds", async () => {
    const data = blob(2 * CHUNK);
    const location = await openUpload();
    const loc2 = await patchOk(location, 0, data.subarray(0, CHUNK));
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "stale-416" } });
    const upstreamBefore = em.requests.length;

    const stale = await patch(loc2, CHUNK, data.subarray(CHUNK));
    expect(stale.status).toBe(416);
    expect(stale.headers.get("range")).toBe(`0-${CHUNK - 1}`);
    const fresh = stale.headers.get("location") ?? "";
    expect(await stale.json()).toMatchObject({ errors: [{ code: "RANGE_ERROR" }] });
    expect(last()).toMatchObject({ method: "PATCH", status: 416, bodyBytes: CHUNK, fault: "stale-416" });
    // Upstream only saw the status GET, and the Location is its current one.
    expect(em.requests.slice(upstreamBefore).map((r) => `${r.method} ${r.status}`)).toEqual(["GET 204"]);
    const direct = await fetch(new URL(loc2, em.url), { headers: { Authorization: AUTH } });
    expect(fresh).toBe(direct.headers.get("location") ?? "missing");
    expect(new URL(fresh, px.url).searchParams.get("_stateHash")).toMatch(/^[a-f0-9]{64}$/);

    await finish(await patchOk(fresh, CHUNK, data.subarray(CHUNK)), data);
    expect(em.violations).toEqual([]);
  });

  test("reset drops the connection before reading: fetch rejects with ECONNRESET", async () => {
    px.addRule({ method: "POST", nth: 1, fault: { kind: "reset" } });
    expectDropped(await caught(call("POST", `/v2/${REPO}/blobs/uploads/`, { headers: { "Content-Length": "0" }, body: "" })));
    expect(last()).toMatchObject({ method: "POST", status: "reset", bodyBytes: 0, faulted: true });
    expect(em.requests.length).toBe(0);
    await openUpload(); // the next one goes through
    expect(em.requests.length).toBe(1);
  });

  test("stop() closes everything at once, a stalled request included", async () => {
    const location = await openUpload();
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "stall", ms: 30_000 } });
    const pending = caught(patch(location, 0, blob(CHUNK)));
    await px.waitFor((r) => r.method === "PATCH" && r.status === 202); // upstream answered; the proxy holds it
    const started = performance.now();
    await px.stop();
    expectDropped(await pending);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe("Bun fetch quirks the client's retry logic must expect", () => {
  test("an idempotent request on a reused keep-alive connection is retried once, silently, by fetch itself", async () => {
    const location = await openUpload(); // leaves a pooled connection to the proxy
    px.addRule({ method: "GET", nth: 1, fault: { kind: "reset" } });
    const status = await call("GET", location);
    expect(status.status).toBe(204); // the reset never reached the caller
    expect(px.requests.slice(1).map((r) => `${r.method} ${r.status}`)).toEqual(["GET reset", "GET 204"]);

    // To make such a fault visible, it has to hit fetch's own retry as well.
    px.addRule({ method: "HEAD", nth: 1, times: 2, fault: { kind: "reset" } });
    expectDropped(await caught(call("HEAD", `/v2/${REPO}/blobs/${digestOf(new Uint8Array(1))}`)));
    expect(px.requests.slice(3).map((r) => `${r.method} ${r.status}`)).toEqual(["HEAD reset", "HEAD reset"]);

    // PATCH and POST are never retried by fetch: one fault, one error.
    await call("GET", location);
    px.addRule({ method: "PATCH", nth: 1, fault: { kind: "reset" } });
    expectDropped(await caught(patch(location, 0, blob(CHUNK))));
    expect(px.requests.filter((r) => r.method === "PATCH").length).toBe(1);
  });
});
