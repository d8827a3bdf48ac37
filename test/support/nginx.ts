/**
 * Debian's nginx as a reverse proxy with a request-body limit in front of a registry, the way many
 * self-hosted registries are deployed: what `client_max_body_size` answers (nginx's own HTML 413) is
 * what the CLI meets behind such a proxy.
 *
 *   const proxy = await startBodyLimitProxy({ upstream: registry.url, maxBodySize: "10m" });
 *   // push to proxy.host; bodies over 10 MiB (10485760 bytes) get 413 from nginx
 *   await proxy.requests();   // [{method, uri, status, requestLength, upstreamStatus}, ...] (access log)
 *   await proxy.waitForRequest((e) => e.status === 413);
 *   await proxy.stop(); // kills nginx, removes its temp dir
 *
 * nginx runs in the foreground (`nginx -p <tmp> -e <tmp>/error.log -c <tmp>/nginx.conf -g 'daemon off;'`),
 * one worker as root (its temp dirs are in our 0700 temp dir), with pid, logs and every *_temp_path under
 * the temp dir, listening on a free 127.0.0.1 port. Proxying:
 * - `proxy_request_buffering off` and `proxy_http_version 1.1`: request bodies stream to the registry as
 *   they arrive (big uploads are not spooled to disk first); `proxy_buffering off` likewise for answers.
 * - `proxy_set_header Host $http_host`: the registry sees the proxy's host:port, so the absolute Locations
 *   docker-registry builds point back at the proxy; relative ones pass unchanged (`proxy_redirect off`).
 * - A body larger than the limit is refused by its Content-Length before anything reaches the registry:
 *   413 with nginx's HTML page, and nginx closes the connection.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, spawnService, stopService, waitFor } from "./ports.ts";

export interface BodyLimitProxyOptions {
  /** `http://127.0.0.1:<port>` of what to proxy to (no path). */
  upstream: string;
  /** nginx size syntax: "10m" (MiB), "512k", or bytes; default "10m". "0" disables the limit. */
  maxBodySize?: string;
  /** How long to wait for the proxy to answer; default 15 s. */
  startTimeoutMs?: number;
}

export interface ProxyLogEntry {
  method: string;
  /** Path and query as the client sent them. */
  uri: string;
  /** What nginx answered the client. */
  status: number;
  /** Bytes of the request nginx read (line, headers and body). */
  requestLength: number;
  /** What the upstream answered, or null when nginx answered itself (e.g. its 413). */
  upstreamStatus: number | null;
}

export interface BodyLimitProxy {
  /** `127.0.0.1:<port>` of the proxy, the form the CLI takes as `<host[:port]>`. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The limit as configured. */
  maxBodySize: string;
  /** The limit in bytes (nginx: k = 1024, m = 1024 * 1024, g = 1024^3). */
  maxBodyBytes: number;
  /** Temp dir holding nginx.conf, logs and temp paths. */
  dir: string;
  accessLogPath: string;
  errorLogPath: string;
  /**
   * Every request nginx has logged, oldest first. nginx logs a request when it is done with the
   * connection's part of it: a 413 only after its lingering close, i.e. after the client already has the
   * answer. Use waitForRequest() to wait for a particular entry.
   */
  requests(): Promise<ProxyLogEntry[]>;
  /** Waits (default 10 s) until an entry matching `pred` is logged, and returns it. */
  waitForRequest(pred: (e: ProxyLogEntry) => boolean, timeoutMs?: number): Promise<ProxyLogEntry>;
  /** Stops nginx and removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

/** nginx's size syntax in bytes. */
export function nginxSizeBytes(size: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(size.trim());
  if (m === null) throw new Error(`not an nginx size: ${size}`);
  const n = Number(m[1]);
  const unit = (m[2] ?? "").toLowerCase();
  return unit === "k" ? n * 1024 : unit === "m" ? n * 1024 * 1024 : unit === "g" ? n * 1024 * 1024 * 1024 : n;
}

function nginxConf(dir: string, port: number, upstream: string, maxBodySize: string): string {
  const p = (name: string): string => join(dir, name);
  return `worker_processes 1;
user root;
pid ${p("nginx.pid")};
error_log ${p("error.log")} info;
events { worker_connections 256; }
http {
  log_format limits '$request_method\\t$request_uri\\t$status\\t$request_length\\t$upstream_status';
  access_log ${p("access.log")} limits;
  client_body_temp_path ${p("tmp/client_body")};
  proxy_temp_path ${p("tmp/proxy")};
  fastcgi_temp_path ${p("tmp/fastcgi")};
  uwsgi_temp_path ${p("tmp/uwsgi")};
  scgi_temp_path ${p("tmp/scgi")};
  server {
    listen 127.0.0.1:${port};
    client_max_body_size ${maxBodySize};
    location / {
      proxy_pass ${upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_redirect off;
      proxy_read_timeout 900s;
      proxy_send_timeout 900s;
    }
  }
}
`;
}

function parseAccessLog(text: string): ProxyLogEntry[] {
  const entries: ProxyLogEntry[] = [];
  for (const line of text.split("\n")) {
    const [method, uri, status, requestLength, upstreamStatus] = line.split("\t");
    if (method === undefined || uri === undefined || status === undefined || requestLength === undefined) continue;
    const upstream = upstreamStatus === undefined || upstreamStatus === "-" ? null : Number.parseInt(upstreamStatus, 10);
    entries.push({ method, uri, status: Number(status), requestLength: Number(requestLength), upstreamStatus: Number.isNaN(upstream) ? null : upstream });
  }
  return entries;
}

/**
 * Starts nginx in front of `upstream` and resolves once `GET /v2/` through it gets the upstream's answer
 * (any status with upstream headers). Retries on a new port up to three times if the port was taken.
 */
export async function startBodyLimitProxy(opts: BodyLimitProxyOptions): Promise<BodyLimitProxy> {
  const maxBodySize = opts.maxBodySize ?? "10m";
  const maxBodyBytes = nginxSizeBytes(maxBodySize);
  const upstream = opts.upstream.replace(/\/+$/, "");
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(upstream)) throw new Error(`startBodyLimitProxy: upstream must be http://127.0.0.1:<port>, got ${upstream}`);
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  const dir = await mkdtemp(join(tmpdir(), "chunked-push-nginx-"));
  const confPath = join(dir, "nginx.conf");
  const errorLogPath = join(dir, "error.log");
  const accessLogPath = join(dir, "access.log");
  await mkdir(join(dir, "tmp"));
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    await writeFile(confPath, nginxConf(dir, port, upstream, maxBodySize));
    const proc = spawnService(["nginx", "-p", dir, "-e", errorLogPath, "-c", confPath, "-g", "daemon off;"], join(dir, "nginx.out"));
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor(
        async () => {
          if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode}`);
          const res = await fetch(`${url}/v2/`);
          await res.arrayBuffer();
          // Upstream answered (not nginx's 502 while the registry is unreachable).
          return res.status !== 502 && res.status !== 504;
        },
        timeoutMs,
        `nginx on ${url} proxying to ${upstream}`,
      );
    } catch (err) {
      await stopService(proc, 3000);
      const log = await readFile(errorLogPath, "utf8").catch(() => "(no log)");
      lastError = new Error(`${err instanceof Error ? err.message : String(err)}\n--- error.log ---\n${log.slice(-2000)}`);
      continue;
    }
    let stopped = false;
    const requests = async (): Promise<ProxyLogEntry[]> => parseAccessLog(await readFile(accessLogPath, "utf8").catch(() => ""));
    return {
      host: `127.0.0.1:${port}`,
      url,
      maxBodySize,
      maxBodyBytes,
      dir,
      accessLogPath,
      errorLogPath,
      requests,
      waitForRequest(pred, waitMs = 10_000) {
        return waitFor(async () => (await requests()).find(pred), waitMs, "a matching request in nginx's access log");
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopService(proc, 5000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError instanceof Error ? lastError : new Error("nginx did not start");
}
