/**
 * How the client behaves when the network or the server misbehaves in ways a proxy cannot stage
 * neatly: slow links, answers that stall mid-body, sessions that keep vanishing, lost answers.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { blobOf, pushBlob } from "../support/blobs.ts";
import { quietLog as quiet, scriptedRegistry, testClient as client } from "../support/scripted-registry.ts";
import { tempDirs } from "../support/temp.ts";
import { closeAll, listenHttp, listenNet } from "../support/transport-servers.ts";

afterEach(closeAll);
const tempDir = tempDirs();

describe("the client under trying conditions", () => {
  test("an upload that keeps moving slowly is never cut, even past the idle time", async () => {
    const size = 8_000_000;
    let received = 0;
    // Reads 2 MB a second: about 4 s for the body (less what the socket buffers hold), 1 s idle timeout.
    const host = await listenNet((socket) => {
      let budget = 0;
      socket.pause();
      const tick = setInterval(() => {
        budget += 200_000;
        if (budget > 0) socket.resume();
      }, 100);
      socket.on("data", (data) => {
        received += data.length;
        budget -= data.length;
        if (budget <= 0) socket.pause();
        if (received >= size) {
          clearInterval(tick);
          socket.end("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
      });
      socket.on("close", () => clearInterval(tick));
    });
    // A file slice, as the CLI sends: read in blocks as the socket drains.
    const file = join(await tempDir("slow-upload-"), "chunk");
    await Bun.write(file, new Uint8Array(size + 10));
    const started = Date.now();
    const response = await client(host, { idleTimeoutMs: 1000 }).send("PATCH", "/upload", { body: Bun.file(file).slice(5, size + 5), retry: false });
    expect(response.status).toBe(202);
    expect(received).toBeGreaterThan(size); // the body and the request's headers
    expect(Date.now() - started).toBeGreaterThan(2500);
  }, 20_000);

  test("an answer that stalls in the middle of its body is abandoned after the idle time", async () => {
    const host = await listenNet((socket) => {
      socket.once("data", () => socket.write('HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"err'));
    });
    const started = Date.now();
    await expect(client(host, { idleTimeoutMs: 500, retries: 1 }).send("GET", "/v2/r/blobs/uploads/x")).rejects.toThrow(
      `GET /v2/r/blobs/uploads/x: no progress for 1 s on the connection to http://${host} (gave up after 2 attempts)`,
    );
    expect(Date.now() - started).toBeLessThan(5000);
  }, 10_000);

  test("an aborted run sends nothing more and does not wait", async () => {
    const registry = scriptedRegistry();
    const abort = new AbortController();
    abort.abort(new Error("stopped by the user"));
    const c = client(registry.host, { signal: abort.signal });
    await expect(c.send("HEAD", "/v2/r/blobs/sha256:x")).rejects.toThrow("stopped by the user");
    await expect(c.sleep(60_000)).rejects.toThrow("stopped by the user");
    expect(registry.seen).toEqual([]);
  });

  test("a registry that keeps losing the session makes the blob give up after --retries new sessions", async () => {
    let posts = 0;
    let patches = 0;
    const { host } = scriptedRegistry({
      post: () => new Response(null, { status: 202, headers: { Location: `/u/${++posts}` } }),
      // The first chunk lands; the second always finds the session gone.
      patch: (request) =>
        ++patches % 2 === 1 ? new Response(null, { status: 202, headers: { Location: request.url, Range: "0-39" } }) : new Response(null, { status: 404 }),
      delete: () => new Response(null, { status: 204 }),
    });
    await expect(pushBlob(client(host, { retries: 2 }), "r", blobOf(new Uint8Array(100)), { label: "layer 1/1", chunkCap: 40, log: quiet })).rejects.toThrow(
      "layer 1/1: the registry lost the upload session (gave up after 3 upload sessions)",
    );
    expect(posts).toBe(3);
  });

  test("GET /v2/ answering 503 once is retried", async () => {
    let pings = 0;
    const { host } = scriptedRegistry({ get: () => new Response(null, { status: ++pings === 1 ? 503 : 200 }) });
    await client(host).ping();
    expect(pings).toBe(2);
  });

  test("a token service answering 503 once is retried", async () => {
    let tokenCalls = 0;
    const tokens = scriptedRegistry({ get: () => (++tokenCalls === 1 ? new Response(null, { status: 503 }) : Response.json({ token: "t", expires_in: 300 })) });
    const { host } = scriptedRegistry({
      get: (request) =>
        request.headers.get("authorization") === "Bearer t"
          ? new Response(null, { status: 200 })
          : new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="s"` } }),
    });
    await client(host).ping();
    expect(tokenCalls).toBe(2);
  });

  test("a final PUT whose answer is lost counts as done when the blob is there", async () => {
    const data = new Uint8Array(100).fill(7);
    const blob = blobOf(data);
    let committed = false;
    const host = await listenHttp((request, response) => {
      const url = new URL(request.url ?? "/", "http://x");
      request.resume();
      request.on("end", () => {
        if (request.method === "HEAD") return response.writeHead(committed ? 200 : 404).end();
        if (request.method === "POST") return response.writeHead(202, { Location: "/u/1" }).end();
        if (request.method === "PATCH")
          return response.writeHead(202, { Location: "/u/1", Range: `0-${request.headers["content-range"]?.split("-")[1]}` }).end();
        if (request.method === "PUT" && url.searchParams.get("digest") === blob.digest) {
          committed = true;
          return request.socket.destroy(); // stored, but the answer never arrives
        }
        response.writeHead(404).end();
      });
    });
    const outcome = await pushBlob(client(host, { retries: 1 }), "r", blob, { label: "layer 1/1", chunkCap: 40, log: quiet });
    expect(outcome.status).toBe("pushed");
    expect(committed).toBe(true);
  });
});
