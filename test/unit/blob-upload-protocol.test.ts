/**
 * The upload protocol against small scripted registries (Bun.serve), for behaviour the real servers
 * cannot be made to show on demand: redirects to storage, lying digests, short Ranges, 401 on POST.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { blobOf, pushBlob, type TestBlob } from "../support/blobs.ts";
import type { Logger } from "../../src/log.ts";
import { putManifest } from "../../src/registry/manifest-put.ts";
import { buildImageManifest } from "../../src/model/manifest.ts";
import { OCI_CONFIG } from "../../src/model/media-types.ts";
import { RegistryClient } from "../../src/registry/client.ts";

type Handler = (request: Request, url: URL) => Response | Promise<Response>;
const servers: { stop(force?: boolean): void }[] = [];

afterEach(() => {
  for (const server of servers.splice(0)) server.stop(true);
});

function serve(handler: Handler): string {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (request) => handler(request, new URL(request.url)) });
  servers.push(server);
  return `127.0.0.1:${server.port}`;
}

function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(m), warn: (m) => lines.push(`warning: ${m}`) };
}

function client(host: string, withCredentials = true, log?: Logger) {
  return new RegistryClient({
    host,
    insecure: true,
    credentials: withCredentials ? { username: "u", password: "p4ss" } : undefined,
    repository: "r",
    retry: { retries: 2, baseMs: 1, maxMs: 5 },
    log,
  });
}

const bytes = new TextEncoder().encode("x".repeat(1000));

describe("blob upload protocol", () => {
  test("a redirect to storage on another host is followed without Authorization", async () => {
    const seen: { where: string; auth: string | null; length: number }[] = [];
    const storage = serve(async (request) => {
      seen.push({ where: "storage", auth: request.headers.get("authorization"), length: (await request.arrayBuffer()).byteLength });
      return new Response(null, { status: 201, headers: { "Docker-Content-Digest": blobOf(bytes).digest } });
    });
    const registry = serve(async (request, url) => {
      if (!request.headers.get("authorization")) return new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } });
      seen.push({ where: `${request.method} ${url.pathname}`, auth: request.headers.get("authorization"), length: 0 });
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      if (request.method === "POST") return new Response(null, { status: 202, headers: { Location: "/v2/r/blobs/uploads/1" } });
      return new Response(null, { status: 307, headers: { Location: `http://${storage}/bucket/object?sig=abc` } });
    });
    const outcome = await pushBlob(client(registry), "r", blobOf(bytes), { label: "blob", log: recordingLog() });
    expect(outcome.status).toBe("pushed");
    expect(seen.filter((s) => s.where !== "storage").map((s) => s.auth)).toEqual(Array(3).fill(`Basic ${btoa("u:p4ss")}`));
    expect(seen.find((s) => s.where === "storage")).toEqual({ where: "storage", auth: null, length: 1000 });
  });

  test("an absolute Location on another host gets no Authorization either", async () => {
    const auths: (string | null)[] = [];
    const other = serve((request) => {
      auths.push(request.headers.get("authorization"));
      return new Response(null, { status: 201 });
    });
    const registry = serve((request) => {
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      return new Response(null, { status: 202, headers: { Location: `http://${other}/upload/1` } });
    });
    await pushBlob(client(registry), "r", blobOf(bytes), { label: "blob", log: recordingLog() });
    expect(auths).toEqual([null]);
  });

  test("a registry that stores another digest than the one sent is an error", async () => {
    const registry = serve((request) => {
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      if (request.method === "POST") return new Response(null, { status: 202, headers: { Location: "/u/1" } });
      return new Response(null, { status: 201, headers: { "Docker-Content-Digest": `sha256:${"0".repeat(64)}` } });
    });
    await expect(pushBlob(client(registry), "r", blobOf(bytes), { label: "layer 1/1", log: recordingLog() })).rejects.toThrow(
      `layer 1/1: uploading in one request: the registry stored sha256:${"0".repeat(64)}, not ${blobOf(bytes).digest}`,
    );
  });

  test("a manifest digest that differs from the bytes sent is an error", async () => {
    const registry = serve(() => new Response(null, { status: 201, headers: { "Docker-Content-Digest": `sha256:${"1".repeat(64)}` } }));
    const manifest = buildImageManifest({ format: "oci", config: { mediaType: OCI_CONFIG, digest: `sha256:${"2".repeat(64)}`, size: 2 }, layers: [] });
    await expect(putManifest(client(registry), "r", "t", manifest)).rejects.toThrow(
      `manifest r:t: the registry reports digest sha256:${"1".repeat(64)}, but the bytes sent hash to ${manifest.digest}`,
    );
  });

  test("a PATCH that lands short is resumed from the registry's offset (no chunk rules advertised)", async () => {
    const data = new Uint8Array(100).map((_, i) => i);
    let stored = new Uint8Array(0);
    let patches = 0;
    const registry = serve(async (request) => {
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      if (request.method === "POST") return new Response(null, { status: 202, headers: { Location: "/u/1" } });
      const range = () => `0-${Math.max(stored.length - 1, 0)}`;
      if (request.method === "GET") return new Response(null, { status: 204, headers: { Location: "/u/1", Range: range() } });
      if (request.method === "PATCH") {
        let body = new Uint8Array(await request.arrayBuffer());
        // The second PATCH keeps only half of what it was sent, like a cut connection on distribution.
        if (++patches === 2) body = body.subarray(0, 15);
        stored = new Uint8Array([...stored, ...body]);
        return new Response(null, { status: 202, headers: { Location: "/u/1", Range: range() } });
      }
      const ok = createHash("sha256").update(stored).digest("hex") === blobOf(data).digest.slice(7);
      return new Response(null, { status: ok ? 201 : 400 });
    });
    const log = recordingLog();
    const outcome = await pushBlob(client(registry), "r", blobOf(data), { label: "blob", chunkCap: 40, log });
    expect(outcome.status).toBe("pushed");
    expect(Buffer.from(stored).equals(Buffer.from(data))).toBe(true);
    expect(log.lines.some((l) => l.includes("the registry reports it holds bytes 0-54, expected 0-79"))).toBe(true);
  });

  test("a blob over 5 GiB warns before upload when the registry advertises chunk limits", async () => {
    const registry = serve((request) => {
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      if (request.method === "POST") {
        return new Response(null, { status: 202, headers: { Location: "/u/1", "OCI-Chunk-Max-Length": "100000000", "OCI-Chunk-Min-Length": "5242880" } });
      }
      return Response.json({ errors: [{ code: "DENIED", message: "stop here" }] }, { status: 403 });
    });
    const huge: TestBlob = { ...blobOf(bytes), claimedSize: 6 * 1024 ** 3 };
    const log = recordingLog();
    await expect(pushBlob(client(registry), "r", huge, { label: "layer 1/1", log })).rejects.toThrow(
      "layer 1/1: chunk 1/65 (bytes 0-99999999): HTTP 403 DENIED: stop here (the user may not push to this repository (a read-only user?))",
    );
    expect(log.lines[0]).toContain("warning: layer 1/1 is 6442450944 bytes: serverless-registry currently fails blobs over 5 GiB");
  });

  test("a JSON 401 on POST without credentials says to set USERNAME_REGISTRY", async () => {
    const registry = serve((request) => {
      if (request.method === "HEAD") return new Response(null, { status: 404 });
      return Response.json({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }, { status: 401 });
    });
    await expect(pushBlob(client(registry, false), "r", blobOf(bytes), { label: "layer 1/1", log: recordingLog() })).rejects.toThrow(
      "layer 1/1: opening an upload session: the registry requires authentication (HTTP 401 UNAUTHORIZED: authentication required): set USERNAME_REGISTRY=<user> and pipe the password on stdin",
    );
  });

  test("transient answers are retried with the server's Retry-After, then the push goes on", async () => {
    let heads = 0;
    const registry = serve((request) => {
      if (request.method === "HEAD")
        return ++heads === 1 ? new Response(null, { status: 429, headers: { "Retry-After": "0" } }) : new Response(null, { status: 200 });
      return new Response(null, { status: 500 });
    });
    const log = recordingLog();
    expect((await pushBlob(client(registry, true, log), "r", blobOf(bytes), { label: "layer 1/1", log })).status).toBe("exists");
    expect(log.lines).toEqual(["warning: layer 1/1: checking whether the registry has it: HTTP 429; retrying in 0.0 s (attempt 2 of 3)"]);
  });
});
