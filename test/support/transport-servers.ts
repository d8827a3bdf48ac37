/**
 * Small in-process servers that misbehave in one precise way each, for the registry client's transport
 * tests: closed ports, sockets destroyed mid-request, peers that accept and never answer, endless
 * bodies, self-signed TLS; plus a recording HTTP server.
 * Everything binds 127.0.0.1 on a port the kernel picks, and is closed by `closeAll()`.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, runOk, waitFor } from "./ports.ts";

const closers: (() => void | Promise<void>)[] = [];

/** Closes every server started here since the last call (for afterEach). */
export async function closeAll(): Promise<void> {
  for (const close of closers.splice(0).reverse()) await close();
}

/** A raw TCP server; `host:port`. Its sockets are destroyed on close, so no test waits on a lingering peer. */
export async function listenNet(onSocket: (socket: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A node:http server; `host:port`. */
export async function listenHttp(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

export interface SeenRequest {
  method: string;
  path: string;
  authorization?: string;
  contentLength?: string;
  contentType?: string;
  transferEncoding?: string;
  body: Uint8Array;
}

/** A Bun.serve server that records every request it gets (headers that matter and the whole body). */
export function recordingServer(handler: (request: Request, body: Uint8Array) => Response | Promise<Response>): { host: string; seen: SeenRequest[] } {
  const seen: SeenRequest[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const body = new Uint8Array(await request.arrayBuffer());
      const url = new URL(request.url);
      seen.push({
        method: request.method,
        path: url.pathname + url.search,
        authorization: request.headers.get("authorization") ?? undefined,
        contentLength: request.headers.get("content-length") ?? undefined,
        contentType: request.headers.get("content-type") ?? undefined,
        transferEncoding: request.headers.get("transfer-encoding") ?? undefined,
        body,
      });
      return handler(request, body);
    },
  });
  closers.push(() => server.stop(true));
  return { host: `127.0.0.1:${server.port}`, seen };
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  return freePort();
}

/** Destroys every connection as soon as the request's first bytes arrive. */
export function resettingServer(): Promise<string> {
  return listenNet((socket) => socket.once("data", () => socket.destroy()));
}

/** Accepts connections and never answers; `connections` counts them, `accepted` gets each arrival time. */
export async function silentServer(onConnection?: (at: number) => void): Promise<{ host: string; connections: () => number }> {
  let count = 0;
  const host = await listenNet((socket) => {
    count++;
    onConnection?.(performance.now());
    socket.resume(); // read whatever comes, answer nothing
  });
  return { host, connections: () => count };
}

/**
 * Answers every request with `head` (status line and headers, no Content-Length) and then a body
 * of `fill` repeated as fast as the client takes it, up to `ceiling` bytes (after which the connection
 * stays open, silent). `written()` is how much it got onto the wire; `closed` resolves when the client
 * hung up.
 */
export async function endlessBodyServer(
  head: string,
  fill = "x",
  ceiling = 256 * 1024 * 1024,
): Promise<{ host: string; written: () => number; closed: Promise<void>; requests: () => number }> {
  let written = 0;
  let requests = 0;
  let hungUp: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => (hungUp = resolve));
  const block = Buffer.alloc(64 * 1024, fill);
  const host = await listenNet((socket) => {
    socket.once("data", () => {
      requests++;
      socket.write(`${head}\r\nConnection: close\r\n\r\n`);
      const pump = () => {
        while (written < ceiling) {
          written += block.length;
          if (!socket.write(block)) return;
        }
      };
      socket.on("drain", pump);
      pump();
    });
    socket.on("close", () => hungUp());
  });
  return { host, written: () => written, closed, requests: () => requests };
}

/** A fresh self-signed certificate for 127.0.0.1 (openssl), in a temp folder removed by closeAll(). */
export async function selfSignedCertificate(): Promise<{ cert: string; key: string; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "transport-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  await runOk([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-sha256",
    "-days",
    "2",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  closers.push(() => rm(dir, { recursive: true, force: true }));
  return { cert, key, dir };
}

/** Bun.serve over TLS with a self-signed certificate; `host:port`. */
export async function selfSignedHttpsServer(handler: (request: Request) => Response = () => new Response("{}")): Promise<string> {
  const { cert, key } = await selfSignedCertificate();
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, tls: { cert: Bun.file(cert), key: Bun.file(key) }, fetch: handler });
  closers.push(() => server.stop(true));
  return `127.0.0.1:${server.port}`;
}

/**
 * Debian's docker-registry (Go's net/http) serving https with a self-signed certificate, no auth: a
 * real TLS port that answers plain http with 400 "Client sent an HTTP request to an HTTPS server".
 */
export async function tlsDockerRegistry(): Promise<{ host: string; certificate: string }> {
  const { cert, key, dir } = await selfSignedCertificate();
  const port = await freePort();
  await mkdir(join(dir, "data"));
  await writeFile(
    join(dir, "config.yml"),
    `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n  tls:\n    certificate: ${cert}\n    key: ${key}\n`,
  );
  const child = Bun.spawn(["docker-registry", "serve", join(dir, "config.yml")], { stdout: "ignore", stderr: "ignore" });
  closers.push(async () => {
    child.kill();
    await child.exited;
  });
  await waitFor(() => fetch(`https://127.0.0.1:${port}/v2/`, { tls: { rejectUnauthorized: false } }).then((r) => r.ok), 15_000, "tls docker-registry");
  return { host: `127.0.0.1:${port}`, certificate: cert };
}
