/**
 * Bodies both ways: answers are read with a bound fitting their use (an endless answer costs a
 * bounded amount of memory and a clear error), request bodies may be produced while they are sent
 * (BodySource), and big answers may be streamed by the caller under the idle watch.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { MANIFEST_BODY_LIMIT, NetworkError, type BodySource } from "../../src/registry/client.ts";
import { messageOf, testClient, type TestClientOptions } from "../support/scripted-registry.ts";
import { closeAll, endlessBodyServer, listenNet, recordingServer } from "../support/transport-servers.ts";

afterEach(closeAll);

/** One attempt and a 5 s idle bound unless a test says otherwise. */
const client = (host: string, options: TestClientOptions = {}) => testClient(host, { retries: 0, idleTimeoutMs: 5000, ...options });

const MiB = 1024 * 1024;

/** What the process holds now, after a collection, so growth reflects what was kept. */
function rss(): number {
  Bun.gc(true);
  return process.memoryUsage().rss;
}

describe("answers read with a bound", () => {
  test("an endless error body: 64 KiB are read, the connection dropped, an excerpt shown", async () => {
    const server = await endlessBodyServer("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain", "x");
    const before = rss();
    const c = client(server.host);
    const response = await c.send("GET", "/v2/r/blobs/sha256:x", { what: "layer 1/1" });
    expect(response.status).toBe(404);
    expect((await c.failure(response, "layer 1/1")).message).toBe(`layer 1/1: HTTP 404 Not Found: ${"x".repeat(197)}...`);
    await server.closed; // the client hung up
    expect(server.written()).toBeLessThan(64 * MiB);
    expect(rss() - before).toBeLessThan(48 * MiB);
  });

  test("an endless manifest: stops at 4 MiB with a clear error", async () => {
    const server = await endlessBodyServer("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json", "{");
    const before = rss();
    expect(await messageOf(client(server.host).send("GET", "/v2/r/manifests/1", { what: "manifest r:1", maxBodyBytes: MANIFEST_BODY_LIMIT }))).toBe(
      `manifest r:1: the answer from http://${server.host} is larger than 4 MiB; stopped reading it`,
    );
    await server.closed;
    expect(server.written()).toBeLessThan(64 * MiB);
    expect(rss() - before).toBeLessThan(48 * MiB);
  });

  test("a manifest announced larger than 4 MiB is refused before it is read", async () => {
    const server = await endlessBodyServer(`HTTP/1.1 200 OK\r\nContent-Length: ${MANIFEST_BODY_LIMIT + 1}`, "{", MANIFEST_BODY_LIMIT + 1);
    expect(await messageOf(client(server.host).send("GET", "/v2/r/manifests/1", { what: "manifest r:1", maxBodyBytes: MANIFEST_BODY_LIMIT }))).toBe(
      `manifest r:1: the answer from http://${server.host} is larger than 4 MiB; stopped reading it`,
    );
  });

  test("a HEAD announcing a 5 GiB blob is an answer, not a body to refuse", async () => {
    const host = await listenNet((socket) =>
      socket.once("data", () => socket.end("HTTP/1.1 200 OK\r\nContent-Length: 5368709120\r\nDocker-Content-Digest: sha256:x\r\n\r\n")),
    );
    const response = await client(host).send("HEAD", "/v2/r/blobs/sha256:x");
    expect([response.status, response.headers.get("content-length")]).toEqual([200, "5368709120"]);
  });

  test("a successful answer past the default 64 KiB is an error too", async () => {
    const server = await endlessBodyServer("HTTP/1.1 202 Accepted", "z");
    expect(await messageOf(client(server.host).send("PATCH", "/v2/r/blobs/uploads/1", { body: "abc", what: "chunk 1/1" }))).toBe(
      `chunk 1/1: the answer from http://${server.host} is larger than 64 KiB; stopped reading it`,
    );
  });

  test("an endless token answer: stops at 1 MiB with a clear error", async () => {
    const tokens = await endlessBodyServer('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"token":"', "a");
    const registry = recordingServer(
      () => new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="reg"` } }),
    );
    const before = rss();
    expect(await messageOf(client(registry.host).ping())).toBe(
      `token service http://${tokens.host}: the answer from http://${tokens.host} is larger than 1 MiB; stopped reading it`,
    );
    await tokens.closed;
    expect(tokens.requests()).toBe(1); // too large is not a reason to ask again
    expect(rss() - before).toBeLessThan(48 * MiB);
  });
});

describe("request bodies produced while they are sent", () => {
  function source(parts: string[], length?: number, between?: (hooks: { pause(): void; resume(): void }) => Promise<void>): BodySource {
    return {
      length,
      open: (hooks) => {
        let i = 0;
        return new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (i === 1 && between) await between(hooks);
            const part = parts[i++];
            if (part === undefined) controller.close();
            else controller.enqueue(new TextEncoder().encode(part));
          },
        });
      },
    };
  }

  test("with a length: exactly that Content-Length, and progress counts the bytes read", async () => {
    const server = recordingServer(() => new Response(null, { status: 202 }));
    const progress: number[] = [];
    const response = await client(server.host).send("PATCH", "/v2/r/blobs/uploads/1", {
      body: source(["hello ", "world"], 11),
      onProgress: (n) => progress.push(n),
    });
    expect(response.status).toBe(202);
    expect(server.seen.map((r) => [r.contentLength, r.transferEncoding, new TextDecoder().decode(r.body)])).toEqual([["11", undefined, "hello world"]]);
    expect(progress).toEqual([6, 11]);
  });

  test("without a length: chunked transfer encoding", async () => {
    const server = recordingServer(() => new Response(null, { status: 202 }));
    await client(server.host).send("PATCH", "/v2/r/blobs/uploads/1", { body: source(["abc", "def", "g"]) });
    expect(server.seen.map((r) => [r.contentLength, r.transferEncoding, new TextDecoder().decode(r.body)])).toEqual([[undefined, "chunked", "abcdefg"]]);
  });

  // The producer's wait stands for a compressor still writing: it is the scenario, longer than the timeout.
  const compressorWait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

  test("a paused producer is not a stalled network: no timeout while it waits for its own data", async () => {
    const server = recordingServer(() => new Response(null, { status: 202 }));
    const body = source(["first ", "second"], undefined, async (hooks) => {
      hooks.pause();
      await compressorWait(1500);
      hooks.resume();
    });
    const response = await client(server.host, { idleTimeoutMs: 500 }).send("PATCH", "/v2/r/blobs/uploads/1", { body });
    expect(response.status).toBe(202);
    expect(new TextDecoder().decode(server.seen[0]?.body)).toBe("first second");
  });

  test("the same wait without pause() is cut by the idle timeout", async () => {
    const server = recordingServer(() => new Response(null, { status: 202 }));
    const body = source(["first ", "second"], undefined, () => compressorWait(1500));
    expect(await messageOf(client(server.host, { idleTimeoutMs: 500 }).send("PATCH", "/v2/r/blobs/uploads/1", { body, what: "chunk 1/1" }))).toBe(
      `chunk 1/1: no progress for 1 s on the connection to http://${server.host} (gave up after 1 attempt)`,
    );
  });

  test("a producer that breaks its announced length fails the request, not retried", async () => {
    const server = recordingServer(() => new Response(null, { status: 202 }));
    const c = client(server.host, { retries: 3 });
    expect(await messageOf(c.send("PATCH", "/v2/r/blobs/uploads/1", { body: source(["abc"], 5), what: "chunk 1/1" }))).toBe(
      "chunk 1/1: the request body ended after 3 of the 5 bytes it announced",
    );
    expect(await messageOf(c.send("PATCH", "/v2/r/blobs/uploads/1", { body: source(["abcdef"], 5), what: "chunk 1/1" }))).toBe(
      "chunk 1/1: the request body gave more than the 5 bytes it announced",
    );
  });
});

describe("streamed answers", () => {
  test("a blob GET is streamed; a redirect to storage gets no Authorization", async () => {
    const blob = new Uint8Array(3 * MiB).map((_, i) => i % 251);
    const storage = recordingServer(() => new Response(blob));
    const registry = recordingServer((request) =>
      request.headers.get("authorization")
        ? new Response(null, { status: 307, headers: { Location: `http://${storage.host}/blob?sig=1` } })
        : new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } }),
    );
    const response = await client(registry.host, { credentials: { username: "u", password: "p" } }).send("GET", "/v2/r/blobs/sha256:x", { stream: true });
    expect(response.status).toBe(200);
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(blob);
    expect(storage.seen.map((r) => r.authorization)).toEqual([undefined]);
    expect(registry.seen.map((r) => r.authorization)).toEqual([undefined, `Basic ${btoa("u:p")}`]);
  });

  test("a stream that stalls midway fails the read with a NetworkError after the idle time", async () => {
    const host = await listenNet((socket) => socket.once("data", () => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n${"b".repeat(1000)}`)));
    const response = await client(host, { idleTimeoutMs: 500 }).send("GET", "/v2/r/blobs/sha256:x", { stream: true, what: "source blob" });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let received = 0;
    const error = await (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return undefined;
        received += value.byteLength;
      }
    })().catch((e: unknown) => e);
    expect(received).toBe(1000);
    expect(error).toBeInstanceOf(NetworkError);
    expect((error as NetworkError).message).toBe(`source blob: no progress for 1 s on the connection to http://${host}`);
  });

  test("a caller that reads slowly is not a stalled network", async () => {
    let sendRest: () => void = () => undefined;
    const host = await listenNet((socket) =>
      socket.once("data", () => {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n${"a".repeat(1000)}`);
        sendRest = () => socket.write("b".repeat(1000));
      }),
    );
    const response = await client(host, { idleTimeoutMs: 500 }).send("GET", "/v2/r/blobs/sha256:x", { stream: true });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let text = new TextDecoder().decode((await reader.read()).value);
    // Between two reads the caller is busy elsewhere (e.g. its own upload) for longer than the idle time.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    sendRest();
    for (let next = await reader.read(); !next.done; next = await reader.read()) text += new TextDecoder().decode(next.value);
    expect(text).toBe("a".repeat(1000) + "b".repeat(1000));
  });

  test("an error answer to a streamed request arrives read, with the usual bound", async () => {
    const server = await endlessBodyServer("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain", "n");
    const c = client(server.host);
    const response = await c.send("GET", "/v2/r/blobs/sha256:x", { stream: true });
    expect(response.status).toBe(404);
    await server.closed;
    expect((await c.failure(response, "blob")).message).toBe(`blob: HTTP 404 Not Found: ${"n".repeat(197)}...`);
  });
});

describe("a 413's hint knows the body it refused", () => {
  const html = "<html><head><title>413 Request Entity Too Large</title></head><body>cloudflare</body></html>";

  test("the size of the body this client sent sizes the suggested --chunk-size", async () => {
    const server = recordingServer(() => new Response(html, { status: 413, statusText: "Payload Too Large", headers: { "Content-Type": "text/html" } }));
    const c = client(server.host);
    const response = await c.send("PUT", "/v2/r/blobs/uploads/1?digest=sha256:x", { body: new Blob([new Uint8Array(12_000_000)]), what: "layer 1/1" });
    expect((await c.failure(response, "layer 1/1: uploading in one request")).message).toBe(
      "layer 1/1: uploading in one request: HTTP 413 Payload Too Large: 413 Request Entity Too Large (the request body (12000000 bytes) was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size 5MiB)",
    );
    const again = await c.send("PUT", "/v2/r/blobs/uploads/1?digest=sha256:x", { body: new Blob([new Uint8Array(12_000_000)]) });
    expect((await c.failure(again, "chunk", { bodyBytes: 100_000_000 })).message).toEndWith("e.g. --chunk-size 45MB)");
  });
});

test("header values and the status text a peer sends arrive without control characters", async () => {
  // Bun refuses C0 controls in a head; 8-bit C1 bytes (read as latin1) pass, so the client strips them.
  const host = await listenNet((socket) =>
    socket.once("data", () =>
      socket.end(Buffer.from("HTTP/1.1 202 Acc\x9b2Jepted\r\nDocker-Upload-UUID: 1\x9b31m2\r\nRange: 0-\x9d0;t\x9c9\r\nContent-Length: 0\r\n\r\n", "latin1")),
    ),
  );
  const response = await client(host).send("PATCH", "/v2/r/blobs/uploads/1", { body: "x" });
  expect([response.status, response.headers.get("docker-upload-uuid"), response.headers.get("range")]).toEqual([202, "12", "0-9"]);
  // Bun itself decodes the status line as UTF-8 (a lone 0x9b becomes U+FFFD); either way no control survives.
  expect(response.statusText).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
});
