/**
 * A slow uplink in front of a registry, for the benchmark: an HTTP proxy on 127.0.0.1 that lets request
 * bodies through to the registry at most `rate` bytes per second in total (one link shared by every
 * connection, first come first served) and holds each answer `answerDelayMs` before passing it back
 * (the round trip a real registry costs). Answers are not throttled: pushing is about the uplink.
 *
 * It counts every body byte when it leaves for the registry, per second since `mark()`, so the report
 * can say how busy the link was in each second of a push. With no `rate` it only counts.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface LinkProxyOptions {
  /** `http://127.0.0.1:<port>` of the registry. */
  upstream: string;
  /** Bytes per second for request bodies; unlimited when absent. */
  rate?: number;
  /** Added before every answer; default 0. */
  answerDelayMs?: number;
}

export interface LinkProxy {
  /** `127.0.0.1:<port>` */
  host: string;
  /** Body bytes passed to the registry since the last mark(). */
  readonly bytes: number;
  /** Starts counting from zero; the per-second series starts now. */
  mark(): void;
  /** Body bytes passed in each whole second since mark(), up to now. */
  perSecond(): number[];
  /** Ms since mark() when the last body byte went through. */
  readonly lastByteMs: number;
  /** Resolves once `bytes` reaches `n` (counted from the last mark()). */
  whenBytes(n: number): Promise<void>;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]);
// Sleeping for every 64 KiB would cost the machine the CPU the pushes need: wait once ahead by this much.
const SLACK_MS = 4;

export async function startLinkProxy(options: LinkProxyOptions): Promise<LinkProxy> {
  const target = new URL(options.upstream);
  const rate = options.rate;
  const delay = options.answerDelayMs ?? 0;
  let nextFree = 0;
  let start = performance.now();
  let bytes = 0;
  let lastByteMs = 0;
  let seconds: number[] = [];
  let waiters: { n: number; resolve: () => void }[] = [];

  /** The link: a body piece of `n` bytes may leave when the ones before it have gone. */
  async function transmit(n: number): Promise<void> {
    if (rate !== undefined) {
      const now = performance.now();
      nextFree = Math.max(now, nextFree) + (n / rate) * 1000;
      if (nextFree - now > SLACK_MS) await Bun.sleep(nextFree - now);
    }
    const at = performance.now() - start;
    bytes += n;
    lastByteMs = at;
    const second = Math.floor(at / 1000);
    while (seconds.length <= second) seconds.push(0);
    seconds[second] = (seconds[second] ?? 0) + n;
    const ready = waiters.filter((w) => bytes >= w.n);
    waiters = waiters.filter((w) => bytes < w.n);
    for (const w of ready) w.resolve();
  }

  const sockets = new Set<import("node:net").Socket>();
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const headers = { ...req.headers };
    for (const name of HOP_BY_HOP) delete headers[name];
    const upstream = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (answer) => {
      const send = () => {
        const out = { ...answer.headers };
        for (const name of HOP_BY_HOP) delete out[name];
        res.writeHead(answer.statusCode ?? 502, out);
        answer.pipe(res);
      };
      if (delay > 0) setTimeout(send, delay);
      else send();
    });
    upstream.on("error", () => res.destroy());
    req.on("error", () => upstream.destroy());
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    // Body pieces go one at a time through the link; the client is paused meanwhile (backpressure).
    let chain = Promise.resolve();
    req.on("data", (piece: Buffer) => {
      req.pause();
      chain = chain.then(async () => {
        await transmit(piece.length);
        if (!upstream.write(piece)) await new Promise((resolve) => upstream.once("drain", resolve));
        req.resume();
      });
    });
    req.on("end", () => void chain.then(() => upstream.end()));
    req.on("aborted", () => upstream.destroy());
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    get bytes() {
      return bytes;
    },
    get lastByteMs() {
      return lastByteMs;
    },
    mark() {
      start = performance.now();
      bytes = 0;
      lastByteMs = 0;
      seconds = [];
    },
    perSecond: () => [...seconds],
    whenBytes: (n) => (bytes >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
