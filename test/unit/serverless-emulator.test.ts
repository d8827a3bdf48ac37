/**
 * Proves the serverless-registry emulator is strict: correct uploads commit byte-exact blobs with no
 * violations, and every broken pattern from REGISTRY-NOTES.md is refused the way the real server (or
 * Cloudflare's edge) refuses it, with a violation recorded. Plain fetch only, so a client bug cannot hide
 * an emulator bug.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type Emulator, type EmulatorOptions, startServerlessEmulator } from "../support/serverless-emulator.ts";
import { digestOf } from "../support/fixtures.ts";

const MiB = 1024 * 1024;
const REPO = "team/sub/app";
const AUTH = `Basic ${btoa("user:secret")}`;
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

let em: Emulator;
let extra: Emulator[] = [];

beforeEach(async () => {
  em = await startServerlessEmulator();
});

afterEach(async () => {
  await Promise.all([em, ...extra].map((e) => e.stop()));
  extra = [];
});

/** For tests that need other options; stopped with the default one. */
async function emulatorWith(opts: EmulatorOptions): Promise<Emulator> {
  const e = await startServerlessEmulator(opts);
  extra.push(e);
  return e;
}

function randomBlob(size: number): Uint8Array {
  return new Uint8Array(randomBytes(size));
}

interface CallInit {
  body?: RequestInit["body"];
  headers?: Record<string, string>;
}

function call(e: Emulator, method: string, path: string, init: CallInit = {}) {
  return fetch(e.url + path, { method, body: init.body, headers: { Authorization: AUTH, ...init.headers } });
}

/** Typed as plain Uint8Array so it compares with the blobs the tests generate. */
async function bodyBytes(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

function locationOf(res: Response): string {
  const location = res.headers.get("location");
  if (location === null) throw new Error(`no Location on a ${res.status} answer`);
  return location;
}

async function openUpload(e: Emulator, name = REPO): Promise<string> {
  const res = await call(e, "POST", `/v2/${name}/blobs/uploads/`, { headers: { "Content-Length": "0" } });
  expect(res.status).toBe(202);
  return locationOf(res);
}

/** A well-formed PATCH of `chunk` at `offset`; `contentRange: null` leaves the header out. */
function patch(e: Emulator, location: string, chunk: Uint8Array, offset: number, contentRange?: string | null) {
  const range = contentRange === undefined ? `${offset}-${offset + chunk.byteLength - 1}` : contentRange;
  const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
  if (range !== null) headers["Content-Range"] = range;
  return call(e, "PATCH", location, { body: chunk, headers });
}

function putBlob(e: Emulator, location: string, digest: string, body: Uint8Array = new Uint8Array(0)) {
  return call(e, "PUT", withDigest(location, digest), {
    body,
    headers: { "Content-Type": "application/octet-stream" },
  });
}

/** Sends `blob` from `offset` on as PATCHes of the given sizes (all must be accepted); returns the newest Location. */
async function patchAll(e: Emulator, location: string, blob: Uint8Array, sizes: number[], offset = 0): Promise<string> {
  for (const size of sizes) {
    const res = await patch(e, location, blob.subarray(offset, offset + size), offset);
    expect(res.status).toBe(202);
    location = locationOf(res);
    offset += size;
  }
  return location;
}

async function pushBlob(e: Emulator, blob: Uint8Array, name = REPO): Promise<string> {
  const digest = digestOf(blob);
  const res = await putBlob(e, await openUpload(e, name), digest, blob);
  expect(res.status).toBe(201);
  return digest;
}

async function errorCode(res: Response): Promise<string | undefined> {
  const body: unknown = await res.json();
  const parsed = body as { errors?: { code?: string }[] };
  return parsed.errors?.[0]?.code;
}

/** The answer has `status` and the emulator recorded exactly one violation mentioning `fragment`. */
function expectViolation(e: Emulator, res: Response, status: number, fragment: string): void {
  expect(res.status).toBe(status);
  expect(e.violations.filter((v) => v.includes(fragment))).toHaveLength(1);
}

function imageManifest(config: Uint8Array, layers: Uint8Array[], mediaType: string = OCI_MANIFEST): Uint8Array {
  const descriptor = (mt: string, bytes: Uint8Array) => ({
    mediaType: mt,
    digest: digestOf(bytes),
    size: bytes.byteLength,
  });
  const doc = {
    schemaVersion: 2,
    mediaType,
    config: descriptor("application/vnd.oci.image.config.v1+json", config),
    layers: layers.map((l) => descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)),
  };
  return new TextEncoder().encode(JSON.stringify(doc));
}

function putManifest(e: Emulator, ref: string, bytes: Uint8Array, contentType: string | null = OCI_MANIFEST) {
  const headers: Record<string, string> = contentType === null ? {} : { "Content-Type": contentType };
  return call(e, "PUT", `/v2/${REPO}/manifests/${ref}`, { body: bytes, headers });
}

describe("correct clients", () => {
  test("chunked upload of 13 MiB in 6 MiB chunks commits the exact blob", async () => {
    const blob = randomBlob(13 * MiB);
    const digest = digestOf(blob);
    const opened = await call(em, "POST", `/v2/${REPO}/blobs/uploads/`, { headers: { "Content-Length": "0" } });
    expect(opened.status).toBe(202);
    expect(locationOf(opened)).toMatch(/^\/v2\/team\/sub\/app\/blobs\/uploads\/[0-9a-f-]+\?_stateHash=[0-9a-f]{64}$/);
    expect(opened.headers.get("range")).toBe("0-0");
    expect(opened.headers.get("docker-upload-uuid")).toBeTruthy();
    expect(opened.headers.get("oci-chunk-min-length")).toBe(String(5 * MiB));
    expect(opened.headers.get("oci-chunk-max-length")).toBe(String(6 * MiB));

    const first = await patch(em, locationOf(opened), blob.subarray(0, 6 * MiB), 0);
    expect(first.status).toBe(202);
    expect(first.headers.get("range")).toBe(`0-${6 * MiB - 1}`);
    expect(locationOf(first)).not.toBe(locationOf(opened));

    const status = await call(em, "GET", locationOf(first));
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${6 * MiB - 1}`);
    expect(status.headers.get("oci-chunk-max-length")).toBe(String(6 * MiB));

    const location = await patchAll(em, locationOf(status), blob, [6 * MiB, MiB], 6 * MiB);
    const done = await putBlob(em, location, digest);
    expect(done.status).toBe(201);
    expect(done.headers.get("docker-content-digest")).toBe(digest);
    expect(locationOf(done)).toBe(`/v2/${REPO}/blobs/${digest}`);

    const head = await call(em, "HEAD", `/v2/${REPO}/blobs/${digest}`);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(blob.byteLength));
    const pulled = await bodyBytes(await call(em, "GET", `/v2/${REPO}/blobs/${digest}`));
    expect(digestOf(pulled)).toBe(digest);
    expect(em.blobs.get(digest)).toEqual(blob);
    expect(em.violations).toEqual([]);
  });

  test("monolithic PUT commits, HEAD is 404 before and 200 after", async () => {
    const blob = randomBlob(2 * MiB);
    const digest = digestOf(blob);
    expect((await call(em, "HEAD", `/v2/${REPO}/blobs/${digest}`)).status).toBe(404);
    await pushBlob(em, blob);
    expect((await call(em, "HEAD", `/v2/${REPO}/blobs/${digest}`)).status).toBe(200);
    expect(em.blobs.get(digest)).toEqual(blob);
    expect(em.violations).toEqual([]);
  });

  test("manifest PUT stores the exact bytes, pullable by tag and by digest", async () => {
    const config = new TextEncoder().encode('{"architecture":"amd64","os":"linux","config":{"Labels":{"x":"é"}}}');
    const layer = randomBlob(1000);
    await pushBlob(em, config);
    await pushBlob(em, layer);
    const manifest = imageManifest(config, [layer]);
    const res = await putManifest(em, "v1", manifest);
    expect(res.status).toBe(201);
    const digest = digestOf(manifest);
    expect(res.headers.get("docker-content-digest")).toBe(digest);
    for (const ref of ["v1", digest]) {
      const got = await call(em, "GET", `/v2/${REPO}/manifests/${ref}`);
      expect(got.headers.get("content-type")).toBe(OCI_MANIFEST);
      expect(got.headers.get("docker-content-digest")).toBe(digest);
      expect(await bodyBytes(got)).toEqual(manifest);
    }
    expect(em.manifests.get(`${REPO}:v1`)?.bytes).toEqual(manifest);
    expect(em.violations).toEqual([]);
  });

  test("cross-repo mount: 201 from a repo holding the blob, 202 otherwise; HEAD reports the link size", async () => {
    const blob = randomBlob(4096);
    const digest = await pushBlob(em, blob, "source/app");
    const mounted = await call(em, "POST", `/v2/${REPO}/blobs/uploads/?mount=${digest}&from=source/app`);
    expect(mounted.status).toBe(201);
    expect(mounted.headers.get("docker-content-digest")).toBe(digest);
    const head = await call(em, "HEAD", `/v2/${REPO}/blobs/${digest}`);
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(`source/app/blobs/${digest}`.length));
    const pulled = await call(em, "GET", `/v2/${REPO}/blobs/${digest}`);
    expect(await bodyBytes(pulled)).toEqual(blob);

    const notThere = await call(em, "POST", `/v2/${REPO}/blobs/uploads/?mount=${digest}&from=elsewhere`);
    expect(notThere.status).toBe(202);
    expect((await call(em, "HEAD", `/v2/other/blobs/${digest}`)).status).toBe(404);
    expect(em.violations).toEqual([]);
  });

  test("anonymous GET /v2/ gets the Basic challenge without counting as a violation", async () => {
    const res = await fetch(`${em.url}/v2/`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toStartWith("Basic realm=");
    expect(await errorCode(res)).toBe("UNAUTHORIZED");
    expect((await call(em, "GET", "/v2/")).status).toBe(200);
    expect(em.violations).toEqual([]);
  });

  test("advertiseChunkHeaders: false sends no chunk headers", async () => {
    const quiet = await emulatorWith({ advertiseChunkHeaders: false });
    const res = await call(quiet, "POST", `/v2/${REPO}/blobs/uploads/`);
    expect(res.status).toBe(202);
    expect(res.headers.get("oci-chunk-min-length")).toBeNull();
    expect(res.headers.get("oci-chunk-max-length")).toBeNull();
  });
});

describe("chunk rules", () => {
  test("a chunk larger than the previous one gets 416 and the upload can go on", async () => {
    const blob = randomBlob(11 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [5 * MiB]);
    const res = await patch(em, location, blob.subarray(5 * MiB), 5 * MiB);
    expectViolation(em, res, 416, "larger than the previous chunk");
    expect(res.headers.get("range")).toBe(`0-${5 * MiB - 1}`);
    expect(locationOf(res)).toBe(location);
  });

  test("unequal non-last parts are accepted by PATCH but the final PUT fails with 500", async () => {
    const blob = randomBlob(12 * MiB);
    const sizes = [6 * MiB, 5.5 * MiB, 0.5 * MiB];
    const location = await patchAll(em, await openUpload(em), blob, sizes);
    expect(em.violations).toEqual([]);
    const res = await putBlob(em, location, digestOf(blob));
    expectViolation(em, res, 500, "same size");
    expect(em.blobs.size).toBe(0);
  });

  test("a chunk below the minimum followed by a smaller one fails at the final PUT", async () => {
    const blob = randomBlob(7 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [4 * MiB, 3 * MiB]);
    const res = await putBlob(em, location, digestOf(blob));
    expectViolation(em, res, 500, `>= ${5 * MiB}`);
  });

  test("a chunk below the minimum followed by one of the same size gets 416", async () => {
    const blob = randomBlob(8 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [4 * MiB]);
    expectViolation(em, await patch(em, location, blob.subarray(4 * MiB), 4 * MiB), 416, "cannot continue");
  });

  test("PATCH without Content-Range gets 416", async () => {
    const res = await patch(em, await openUpload(em), randomBlob(MiB), 0, null);
    expectViolation(em, res, 416, "without Content-Range");
  });

  test('Content-Range with a "bytes " prefix gets 416', async () => {
    const res = await patch(em, await openUpload(em), randomBlob(MiB), 0, `bytes 0-${MiB - 1}`);
    expectViolation(em, res, 416, "prefix");
  });

  test("a wrong start offset gets 416", async () => {
    const blob = randomBlob(7 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [5 * MiB]);
    const res = await patch(em, location, blob.subarray(5 * MiB), 5 * MiB + 1);
    expectViolation(em, res, 416, "starts at");
  });

  test("a Content-Range that does not match the body length gets 416", async () => {
    const res = await patch(em, await openUpload(em), randomBlob(MiB), 0, `0-${MiB}`);
    expectViolation(em, res, 416, "does not cover");
  });

  test("a 1-byte chunk gets 416, as on the real server", async () => {
    const blob = randomBlob(5 * MiB + 1);
    const location = await patchAll(em, await openUpload(em), blob, [5 * MiB]);
    expectViolation(em, await patch(em, location, blob.subarray(5 * MiB), 5 * MiB), 416, "1-byte");
  });

  test("a stale Location gets 416 with the fresh one, which still works", async () => {
    const blob = randomBlob(10 * MiB);
    const stale = await openUpload(em);
    const fresh = await patchAll(em, stale, blob, [5 * MiB]);
    const res = await patch(em, stale, blob.subarray(5 * MiB), 5 * MiB);
    expectViolation(em, res, 416, "stale Location");
    expect(locationOf(res)).toBe(fresh);
    expect(res.headers.get("range")).toBe(`0-${5 * MiB - 1}`);
    const location = await patchAll(em, locationOf(res), blob, [5 * MiB], 5 * MiB);
    expect((await putBlob(em, location, digestOf(blob))).status).toBe(201);
  });

  test("a Location without _stateHash gets 500", async () => {
    const location = (await openUpload(em)).replace(/\?.*$/, "");
    expectViolation(em, await patch(em, location, randomBlob(MiB), 0), 500, "_stateHash");
  });

  test("a cancelled upload is gone: later use gets 404 BLOB_UPLOAD_UNKNOWN", async () => {
    const location = await openUpload(em);
    expect((await call(em, "DELETE", location)).status).toBe(204);
    const res = await patch(em, location, randomBlob(MiB), 0);
    expect(await errorCode(res)).toBe("BLOB_UPLOAD_UNKNOWN");
    expectViolation(em, res, 404, "unknown");
  });
});

describe("edge limit and final PUT", () => {
  test("a body over the edge limit gets Cloudflare's 413 HTML page", async () => {
    const res = await patch(em, await openUpload(em), randomBlob(6 * MiB + 1), 0);
    expect(res.headers.get("content-type")).toStartWith("text/html");
    const page = await res.text();
    expect(page).toContain("413 Request Entity Too Large");
    expect(page).toContain("cloudflare");
    expectViolation(em, res, 413, "edge limit");
  });

  test("a streamed body without Content-Length meets the same limit, and is a violation even below it", async () => {
    const streamedPatch = async (chunk: Uint8Array) => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(chunk);
          controller.close();
        },
      });
      const headers = { "Content-Type": "application/octet-stream", "Content-Range": `0-${chunk.byteLength - 1}` };
      const res = await call(em, "PATCH", await openUpload(em), { body, headers });
      expect(em.requests.at(-1)?.headers["content-length"]).toBeUndefined();
      return res;
    };
    expectViolation(em, await streamedPatch(randomBlob(6 * MiB + 1)), 413, "edge limit");
    expectViolation(em, await streamedPatch(randomBlob(5 * MiB)), 202, "without Content-Length");
  });

  test("the last chunk sent in the final PUT body is lost: violation and digest mismatch 500", async () => {
    const blob = randomBlob(7 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [5 * MiB]);
    const res = await putBlob(em, location, digestOf(blob), blob.subarray(5 * MiB));
    expectViolation(em, res, 500, "digest mismatch");
    expect(em.violations.filter((v) => v.includes("ignores"))).toHaveLength(1);
  });

  test("a non-empty final PUT body is a violation even when the digest works out", async () => {
    const blob = randomBlob(5 * MiB);
    const location = await patchAll(em, await openUpload(em), blob, [5 * MiB]);
    const res = await putBlob(em, location, digestOf(blob), randomBlob(10));
    expectViolation(em, res, 201, "ignores");
  });

  test("a monolithic PUT with the wrong digest gets 500", async () => {
    const res = await putBlob(em, await openUpload(em), digestOf(randomBlob(10)), randomBlob(MiB));
    expectViolation(em, res, 500, "digest mismatch");
  });

  test("single-request POST ?digest= drops the body and opens a session", async () => {
    const blob = randomBlob(1000);
    const res = await call(em, "POST", `/v2/${REPO}/blobs/uploads/?digest=${digestOf(blob)}`, { body: blob });
    expectViolation(em, res, 202, "not supported");
    expect(em.blobs.size).toBe(0);
  });
});

describe("manifests, auth and routes", () => {
  async function pushedImage(): Promise<{ config: Uint8Array; layer: Uint8Array }> {
    const config = new TextEncoder().encode('{"os":"linux"}');
    const layer = randomBlob(100);
    await pushBlob(em, config);
    await pushBlob(em, layer);
    return { config, layer };
  }

  test("a manifest without Content-Type gets 400 MANIFEST_INVALID", async () => {
    const { config, layer } = await pushedImage();
    const res = await putManifest(em, "v1", imageManifest(config, [layer]), null);
    expect(await errorCode(res)).toBe("MANIFEST_INVALID");
    expect(em.requests.at(-1)?.headers["content-type"]).toBeUndefined();
    expectViolation(em, res, 400, "without a Content-Type header");
  });

  test("a manifest whose mediaType differs from Content-Type gets 400", async () => {
    const { config, layer } = await pushedImage();
    const manifest = imageManifest(config, [layer], "application/vnd.docker.distribution.manifest.v2+json");
    expectViolation(em, await putManifest(em, "v1", manifest), 400, "differs from the manifest's mediaType");
  });

  test("a manifest referencing a missing blob gets 400 MANIFEST_BLOB_UNKNOWN", async () => {
    const { config } = await pushedImage();
    const res = await putManifest(em, "v1", imageManifest(config, [randomBlob(100)]));
    expect(await errorCode(res)).toBe("MANIFEST_BLOB_UNKNOWN");
    expectViolation(em, res, 400, "references blob");
  });

  test("a descriptor size that is not the blob's byte length gets 400", async () => {
    const { config, layer } = await pushedImage();
    const manifest = new TextDecoder().decode(imageManifest(config, [layer]));
    const wrong = manifest.replace(`"size":${config.byteLength}`, `"size":${config.byteLength + 1}`);
    expectViolation(em, await putManifest(em, "v1", new TextEncoder().encode(wrong)), 400, "says size");
  });

  test("wrong credentials get 401 with a Basic challenge", async () => {
    const res = await fetch(`${em.url}/v2/`, { headers: { Authorization: `Basic ${btoa("user:nope")}` } });
    expect(res.headers.get("www-authenticate")).toStartWith("Basic realm=");
    expect(await errorCode(res)).toBe("UNAUTHORIZED");
    expectViolation(em, res, 401, "wrong credentials");
  });

  test("missing credentials on a registry route get 401", async () => {
    const res = await fetch(`${em.url}/v2/${REPO}/blobs/uploads/`, { method: "POST" });
    expectViolation(em, res, 401, "no Authorization header");
  });

  test("unknown routes get a JSON 404", async () => {
    const res = await call(em, "GET", `/v2/${REPO}/nowhere`);
    expect(await errorCode(res)).toBe("NOT_FOUND");
    expectViolation(em, res, 404, "no route");
  });

  test("every request is recorded with the status answered", async () => {
    const absent = `/v2/${REPO}/blobs/${digestOf(randomBlob(1))}`;
    await call(em, "GET", "/v2/");
    await call(em, "HEAD", absent);
    const patchInit = { body: randomBlob(10), headers: { "Content-Range": "0-9" } };
    await call(em, "PATCH", `/v2/${REPO}/blobs/uploads/x?_stateHash=0`, patchInit);
    expect(em.requests.map((r) => [r.method, r.path, r.status, r.bodyBytes])).toEqual([
      ["GET", "/v2/", 200, 0],
      ["HEAD", absent, 404, 0],
      ["PATCH", `/v2/${REPO}/blobs/uploads/x`, 404, 10],
    ]);
    expect(em.requests[2]?.query).toBe("_stateHash=0");
    expect(em.requests[0]?.headers.authorization).toBe(AUTH);
  });
});
