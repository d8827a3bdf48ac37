/**
 * The upload protocol against small scripted registries (Bun.serve), for behaviour the real servers
 * cannot be made to show on demand: redirects to storage, lying digests, short Ranges, 401 on POST.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { buildImageManifest } from "../../src/model/manifest.ts";
import { OCI_CONFIG } from "../../src/model/media-types.ts";
import { putManifest } from "../../src/registry/manifest-put.ts";
import { blobOf, pushBlob, type TestBlob } from "../support/blobs.ts";
import { basicHeader, recordingLog, scriptedRegistry, testClient } from "../support/scripted-registry.ts";
import { closeAll } from "../support/transport-servers.ts";

afterEach(closeAll);

const USER = { username: "u", password: "p4ss" };
const BASIC = basicHeader(USER);

/** The client under test: the CLI's, with the user's credentials unless told otherwise. */
function client(host: string, withCredentials = true) {
  return testClient(host, withCredentials ? { credentials: USER } : {});
}

const bytes = new TextEncoder().encode("x".repeat(1000));

describe("blob upload protocol", () => {
  test("a redirect to storage on another host is followed without Authorization", async () => {
    const storage = scriptedRegistry({
      put: () => new Response(null, { status: 201, headers: { "Docker-Content-Digest": blobOf(bytes).digest } }),
    });
    const registry = scriptedRegistry({
      basic: USER,
      put: () => new Response(null, { status: 307, headers: { Location: `http://${storage.host}/bucket/object?sig=abc` } }),
    });
    const outcome = await pushBlob(client(registry.host), "r", blobOf(bytes), { label: "blob", log: recordingLog() });
    expect(outcome.status).toBe("pushed");
    // Each registry request was challenged once, then carried the password; storage got the body bare.
    expect(registry.seen.map((r) => [r.method, r.authorization])).toEqual([
      ["HEAD", undefined],
      ["HEAD", BASIC],
      ["POST", BASIC],
      ["PUT", BASIC],
    ]);
    expect(storage.seen.map((r) => [r.method, r.path, r.authorization, r.body.byteLength])).toEqual([["PUT", "/bucket/object?sig=abc", undefined, 1000]]);
  });

  test("an absolute Location on another host gets no Authorization either", async () => {
    const other = scriptedRegistry({ put: () => new Response(null, { status: 201 }) });
    // The registry challenges, so the client holds the password when it follows the Location.
    const registry = scriptedRegistry({ basic: USER, post: () => new Response(null, { status: 202, headers: { Location: `http://${other.host}/upload/1` } }) });
    const outcome = await pushBlob(client(registry.host), "r", blobOf(bytes), { label: "blob", log: recordingLog() });
    expect(outcome.status).toBe("pushed");
    expect(registry.seen.filter((r) => r.authorization === BASIC).map((r) => r.method)).toEqual(["HEAD", "POST"]);
    expect(other.seen.map((r) => [r.method, r.path, r.authorization])).toEqual([["PUT", `/upload/1?digest=${blobOf(bytes).digest}`, undefined]]);
  });

  test("a registry that stores another digest than the one sent is an error", async () => {
    const registry = scriptedRegistry({ put: () => new Response(null, { status: 201, headers: { "Docker-Content-Digest": `sha256:${"0".repeat(64)}` } }) });
    await expect(pushBlob(client(registry.host), "r", blobOf(bytes), { label: "layer 1/1", log: recordingLog() })).rejects.toThrow(
      `layer 1/1: uploading in one request: the registry stored sha256:${"0".repeat(64)}, not ${blobOf(bytes).digest}`,
    );
  });

  test("a manifest digest that differs from the bytes sent is an error", async () => {
    const registry = scriptedRegistry({ put: () => new Response(null, { status: 201, headers: { "Docker-Content-Digest": `sha256:${"1".repeat(64)}` } }) });
    const manifest = buildImageManifest({ format: "oci", config: { mediaType: OCI_CONFIG, digest: `sha256:${"2".repeat(64)}`, size: 2 }, layers: [] });
    await expect(putManifest(client(registry.host), "r", "t", manifest)).rejects.toThrow(
      `manifest r:t: the registry reports digest sha256:${"1".repeat(64)}, but the bytes sent hash to ${manifest.digest}`,
    );
  });

  test("a PATCH that lands short is resumed from the registry's offset (no chunk rules advertised)", async () => {
    const data = new Uint8Array(100).map((_, i) => i);
    let stored = new Uint8Array(0);
    let patches = 0;
    const range = () => `0-${Math.max(stored.length - 1, 0)}`;
    const registry = scriptedRegistry({
      get: () => new Response(null, { status: 204, headers: { Location: "/u/1", Range: range() } }),
      patch: (_request, _url, sent) => {
        // The second PATCH keeps only part of what it was sent, like a cut connection on distribution.
        const body = ++patches === 2 ? sent.subarray(0, 15) : sent;
        stored = new Uint8Array([...stored, ...body]);
        return new Response(null, { status: 202, headers: { Location: "/u/1", Range: range() } });
      },
      put: () => {
        const ok = createHash("sha256").update(stored).digest("hex") === blobOf(data).digest.slice(7);
        return new Response(null, { status: ok ? 201 : 400 });
      },
    });
    const log = recordingLog();
    const outcome = await pushBlob(client(registry.host), "r", blobOf(data), { label: "blob", chunkCap: 40, log });
    expect(outcome.status).toBe("pushed");
    expect(Buffer.from(stored).equals(Buffer.from(data))).toBe(true);
    expect(log.lines.some((l) => l.includes("the registry reports it holds bytes 0-54, expected 0-79"))).toBe(true);
  });

  test("the PUT that completes a chunked upload waits at least --timeout for its answer", async () => {
    // Assembling the parts may take the registry a while, so that PUT gets at least 60 s; a longer
    // --timeout still applies to it.
    const data = new Uint8Array(100).map((_, i) => i);
    let stored = new Uint8Array(0);
    const range = () => `0-${Math.max(stored.length - 1, 0)}`;
    const registry = scriptedRegistry({
      patch: (_request, _url, sent) => {
        stored = new Uint8Array([...stored, ...sent]);
        return new Response(null, { status: 202, headers: { Location: "/u/1", Range: range() } });
      },
      put: () => new Response(null, { status: 201 }),
    });
    const waits: Array<number | undefined> = [];
    const c = testClient(registry.host, { idleTimeoutMs: 90_000 });
    const send = c.send.bind(c);
    c.send = (method, target, options) => {
      if (method === "PUT") waits.push(options?.idleTimeoutMs);
      return send(method, target, options);
    };
    const outcome = await pushBlob(c, "r", blobOf(data), { label: "blob", chunkCap: 40, log: recordingLog() });
    expect(outcome.status).toBe("pushed");
    expect(waits).toEqual([90_000]);
  });

  test("a blob over 5 GiB warns before upload when the registry advertises chunk limits", async () => {
    const registry = scriptedRegistry({
      post: () => new Response(null, { status: 202, headers: { Location: "/u/1", "OCI-Chunk-Max-Length": "100000000", "OCI-Chunk-Min-Length": "5242880" } }),
      patch: () => Response.json({ errors: [{ code: "DENIED", message: "stop here" }] }, { status: 403 }),
    });
    const huge: TestBlob = { ...blobOf(bytes), claimedSize: 6 * 1024 ** 3 };
    const log = recordingLog();
    await expect(pushBlob(client(registry.host), "r", huge, { label: "layer 1/1", log })).rejects.toThrow(
      "layer 1/1: chunk 1/65 (bytes 0-99999999): HTTP 403 DENIED: stop here (the user may not push to this repository (a read-only user?))",
    );
    expect(log.lines[0]).toContain("warning: layer 1/1 is 6442450944 bytes: serverless-registry currently fails blobs over 5 GiB");
  });

  test("a JSON 401 on POST without credentials says to set USERNAME_REGISTRY", async () => {
    const registry = scriptedRegistry({
      post: () => Response.json({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }, { status: 401 }),
    });
    await expect(pushBlob(client(registry.host, false), "r", blobOf(bytes), { label: "layer 1/1", log: recordingLog() })).rejects.toThrow(
      "layer 1/1: opening an upload session: the registry requires authentication (HTTP 401 UNAUTHORIZED: authentication required): set USERNAME_REGISTRY=<user> and pipe the password on stdin",
    );
  });

  test("a registry that loses confirmed bytes after each new chunk is given up on after --retries rewinds", async () => {
    // Each cycle confirms one chunk more than ever before (which resets the fault count), then fails the
    // next PATCH and reports nothing stored: unbounded, the blob would go out about K²/2 chunks' worth.
    const CHUNK = 100;
    const data = new Uint8Array(CHUNK * 20).map((_, i) => i & 255);
    let stored = 0;
    let best = 0;
    let failNext = false;
    let patches = 0;
    const state = () => ({
      Location: "/v2/r/blobs/uploads/1",
      Range: `0-${stored - 1}`,
      "OCI-Chunk-Min-Length": String(CHUNK),
      "OCI-Chunk-Max-Length": String(CHUNK),
    });
    const registry = scriptedRegistry({
      post: () => new Response(null, { status: 202, headers: state() }),
      get: (_request, url) => (url.pathname === "/v2/" ? new Response("{}") : new Response(null, { status: 204, headers: state() })),
      patch: (_request, _url, body) => {
        patches++;
        if (failNext) {
          failNext = false;
          stored = 0;
          return new Response(null, { status: 503 });
        }
        stored += body.byteLength;
        if (stored > best) {
          best = stored;
          failNext = true;
        }
        return new Response(null, { status: 202, headers: state() });
      },
      put: () => new Response(null, { status: 201 }),
    });
    const log = recordingLog();
    const c = testClient(registry.host, { retries: 2, log });
    await expect(pushBlob(c, "r", blobOf(data), { label: "layer 1/1", log })).rejects.toThrow(
      new Error("layer 1/1: the registry lost bytes it had confirmed (back to byte 0 after byte 300), 3 times: giving up"),
    );
    expect(patches).toBe(9);
  });

  test("transient answers are retried with the server's Retry-After, then the push goes on", async () => {
    let heads = 0;
    const registry = scriptedRegistry({
      head: () => (++heads === 1 ? new Response(null, { status: 429, headers: { "Retry-After": "0" } }) : new Response(null, { status: 200 })),
    });
    const log = recordingLog();
    const c = testClient(registry.host, { credentials: USER, log });
    expect((await pushBlob(c, "r", blobOf(bytes), { label: "layer 1/1", log })).status).toBe("exists");
    expect(log.lines).toEqual(["warning: layer 1/1: checking whether the registry has it: HTTP 429; retrying in 0.0 s (attempt 2 of 3)"]);
  });
});
