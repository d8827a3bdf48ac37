/**
 * Starts Debian's `docker-registry` (CNCF distribution 2.8.2) on a free 127.0.0.1 port with its own
 * temp storage, so end-to-end tests push to a real registry without touching anything shared.
 *
 *   await startDockerRegistry()                      // http, htpasswd Basic auth (tester / s3cret-pass)
 *   await startDockerRegistry({ auth: false })       // anonymous
 *   await startDockerRegistry({ tls: true })         // https with a fresh CA: .caPath, .certDir
 *   await startDockerRegistry({ relativeUrls: true }) // Location headers as paths, not absolute URLs
 *
 * With `tls`, a throwaway CA (EC P-256) signs a server certificate for IP 127.0.0.1 and DNS localhost:
 * Bun takes `caPath` as NODE_EXTRA_CA_CERTS or `fetch(..., { tls: { ca } })`; skopeo and podman take
 * `certDir` (it holds the CA as `ca.crt`) as `--cert-dir`. Plain http to the TLS port gets Go's
 * 400 "Client sent an HTTP request to an HTTPS server."
 * Note from REGISTRY-NOTES.md: it ignores Content-Range and sends no chunk-length headers, so it proves
 * protocol conformance and content, not chunk-size rules (that is the serverless emulator's job).
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, runOk, spawnService, stopService, waitFor } from "./ports.ts";

export interface DockerRegistryOptions {
  username?: string;
  password?: string;
  /** htpasswd Basic auth; default true. */
  auth?: boolean;
  /** How long to wait for `/v2/` to answer; default 15 s. */
  startTimeoutMs?: number;
  /** Serve https with a certificate from a fresh CA (see the file comment); default false. */
  tls?: boolean;
  /** `http.relativeurls: true`: Location headers are paths instead of absolute URLs; default false. */
  relativeUrls?: boolean;
}

export interface DockerRegistry {
  /** `127.0.0.1:<port>`, the form the CLI takes as `<host[:port]>`. */
  host: string;
  /** `http://127.0.0.1:<port>`, or `https://...` with `tls`. */
  url: string;
  username: string;
  password: string;
  /** With `tls`: PEM of the CA that signed the server certificate; else null. */
  caPath: string | null;
  /** With `tls`: a directory holding only `ca.crt` (the CA), for `--cert-dir`; else null. */
  certDir: string | null;
  /** Temp dir holding config.yml, htpasswd, registry.log and `storage/`. */
  dir: string;
  /** Storage root (`<dir>/storage`), for tests that inspect what landed on disk. */
  storageDir: string;
  /** Path of the registry's combined stdout/stderr log, handy when a test fails. */
  logPath: string;
  /** Kills the registry and removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

export const DEFAULT_REGISTRY_USERNAME = "tester";
export const DEFAULT_REGISTRY_PASSWORD = "s3cret-pass";

/** Runs `htpasswd -Bbn` (bcrypt, as distribution requires) and returns the htpasswd line. */
async function htpasswdLine(username: string, password: string): Promise<string> {
  const proc = Bun.spawn(["htpasswd", "-Bbn", username, password], { stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`htpasswd failed (${code}): ${stderr}`);
  return stdout.trim();
}

/**
 * YAML lines of distribution's config up to (not including) `auth:`: info logging with access log,
 * filesystem storage with delete enabled and upload purging off, `http.addr` 127.0.0.1:<port>.
 * JSON string quoting is valid YAML, which keeps paths safe.
 */
export function registryConfigLines(storageDir: string, port: number, secret: string): string[] {
  const q = (s: string): string => JSON.stringify(s);
  return [
    "version: 0.1",
    "log:",
    "  level: info",
    "  accesslog:",
    "    disabled: false",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${q(storageDir)}`,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    `  secret: ${secret}`,
  ];
}

/** Server TLS files for registryConfigLines()'s `http:` block. */
export interface RegistryTls {
  certificate: string;
  key: string;
}

/** Lines to append right after registryConfigLines() (they belong to its `http:` block). */
export function registryHttpExtraLines(opts: { tls?: RegistryTls | null; relativeUrls?: boolean }): string[] {
  const q = (s: string): string => JSON.stringify(s);
  const lines: string[] = [];
  if (opts.relativeUrls) lines.push("  relativeurls: true");
  if (opts.tls) lines.push("  tls:", `    certificate: ${q(opts.tls.certificate)}`, `    key: ${q(opts.tls.key)}`);
  return lines;
}

/**
 * Makes `<dir>/ca.pem` (a CA), `<dir>/cert.pem` + `<dir>/key.pem` (server certificate for IP 127.0.0.1
 * and DNS localhost, signed by the CA) and `<dir>/certs.d/ca.crt` (the CA again, for `--cert-dir`).
 * EC P-256 keys, valid 2 days.
 */
export async function makeTestCertificates(dir: string, subject = "127.0.0.1"): Promise<{ caPath: string; certDir: string; tls: RegistryTls }> {
  const caKey = join(dir, "ca-key.pem");
  const caPath = join(dir, "ca.pem");
  const key = join(dir, "key.pem");
  const csr = join(dir, "server.csr");
  const certificate = join(dir, "cert.pem");
  const ext = join(dir, "server-ext.cnf");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await runOk(["openssl", "req", "-x509", ...ec, "-sha256", "-days", "2", "-subj", "/CN=chunked-push test CA", "-keyout", caKey, "-out", caPath], {
    timeoutMs: 30_000,
  });
  await runOk(["openssl", "req", "-new", ...ec, "-subj", `/CN=${subject}`, "-keyout", key, "-out", csr], { timeoutMs: 30_000 });
  await writeFile(
    ext,
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  await runOk(
    ["openssl", "x509", "-req", "-in", csr, "-CA", caPath, "-CAkey", caKey, "-CAcreateserial", "-sha256", "-days", "2", "-extfile", ext, "-out", certificate],
    { timeoutMs: 30_000 },
  );
  const certDir = join(dir, "certs.d");
  await mkdir(certDir);
  await copyFile(caPath, join(certDir, "ca.crt"));
  return { caPath, certDir, tls: { certificate, key } };
}

/** config.yml of the Basic-auth (or no-auth) registry. */
function configYaml(storageDir: string, port: number, htpasswdPath: string | null, extra: string[]): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [...registryConfigLines(storageDir, port, "harness-not-a-secret"), ...extra];
  if (htpasswdPath !== null) {
    lines.push("auth:", "  htpasswd:", "    realm: harness-realm", `    path: ${q(htpasswdPath)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Last `n` characters of the log, for error messages. */
async function logTail(logPath: string, n = 2000): Promise<string> {
  try {
    const text = await readFile(logPath, "utf8");
    return text.slice(-n);
  } catch {
    return "(no log)";
  }
}

export interface RegistryServeOptions {
  /** Temp dir made by the caller; config.yml and registry.log go here, and stop() removes it. */
  dir: string;
  /** Text of config.yml for the port picked (see registryConfigLines()). */
  config: (port: number) => string;
  /** True when the answer to `GET /v2/` shows the registry is up with the expected auth. */
  ready: (res: Response) => boolean;
  /** Name in error messages, e.g. `docker-registry (token auth)`. */
  what: string;
  /** How long to wait for `/v2/` to answer. */
  timeoutMs: number;
  /** Set when the config serves https: `url` becomes `https://...` and readiness trusts this CA. */
  caPath?: string;
  /** Run by stop() once the registry has exited, before `dir` is removed (e.g. stop a token server). */
  beforeRemove?: () => Promise<void>;
}

export interface ServedRegistry {
  /** `127.0.0.1:<port>` */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `<dir>/registry.log`, the registry's combined stdout/stderr. */
  logPath: string;
  /** Kills the registry, runs `beforeRemove` and removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * The part shared with token-registry.ts: writes `<dir>/config.yml` for a free 127.0.0.1 port, runs
 * `docker-registry serve` on it and resolves once `GET /v2/` satisfies `ready`. Retries up to three
 * times on a new port (it may be taken between freePort() and bind); on failure it throws with the log
 * tail and leaves `dir` to the caller.
 */
export async function serveRegistry(opts: RegistryServeOptions): Promise<ServedRegistry> {
  const { dir, what } = opts;
  const configPath = join(dir, "config.yml");
  const logPath = join(dir, "registry.log");
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    await writeFile(configPath, opts.config(port));
    const proc = spawnService(["docker-registry", "serve", configPath], logPath, { cwd: dir });
    const url = `${opts.caPath === undefined ? "http" : "https"}://127.0.0.1:${port}`;
    const ca = opts.caPath === undefined ? undefined : await readFile(opts.caPath, "utf8");
    try {
      await waitFor(
        async () => {
          if (proc.exitCode !== null) throw new Error(`docker-registry exited with ${proc.exitCode}`);
          const res = await fetch(`${url}/v2/`, ca === undefined ? {} : { tls: { ca } });
          await res.arrayBuffer();
          return opts.ready(res);
        },
        opts.timeoutMs,
        `${what} on ${url}`,
      );
    } catch (err) {
      await stopService(proc, 3000);
      lastError = new Error(`${err instanceof Error ? err.message : String(err)}\n--- registry.log ---\n${await logTail(logPath)}`);
      continue;
    }
    let stopped = false;
    return {
      host: `127.0.0.1:${port}`,
      url,
      logPath,
      async stop(): Promise<void> {
        if (stopped) return;
        stopped = true;
        await stopService(proc, 3000);
        await opts.beforeRemove?.();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  throw lastError instanceof Error ? lastError : new Error(`${what} did not start`);
}

/**
 * Starts a fresh docker-registry and resolves once `GET /v2/` answers 401 (auth) or 200 (no auth).
 * Retries once on a new port if the first one was taken between freePort() and bind.
 */
export async function startDockerRegistry(opts: DockerRegistryOptions = {}): Promise<DockerRegistry> {
  const username = opts.username ?? DEFAULT_REGISTRY_USERNAME;
  const password = opts.password ?? DEFAULT_REGISTRY_PASSWORD;
  const auth = opts.auth ?? true;
  const timeoutMs = opts.startTimeoutMs ?? 15_000;

  const dir = await mkdtemp(join(tmpdir(), "chunked-push-registry-"));
  const storageDir = join(dir, "storage");
  const htpasswdPath = join(dir, "htpasswd");
  try {
    if (auth) await writeFile(htpasswdPath, `${await htpasswdLine(username, password)}\n`);
    const certs = opts.tls ? await makeTestCertificates(dir) : null;
    const extra = registryHttpExtraLines({ tls: certs?.tls ?? null, relativeUrls: opts.relativeUrls ?? false });
    const registry = await serveRegistry({
      dir,
      config: (port) => configYaml(storageDir, port, auth ? htpasswdPath : null, extra),
      ready: (res) => res.status === (auth ? 401 : 200),
      what: opts.tls ? "docker-registry (https)" : "docker-registry",
      timeoutMs,
      ...(certs === null ? {} : { caPath: certs.caPath }),
    });
    return {
      host: registry.host,
      url: registry.url,
      username,
      password,
      caPath: certs?.caPath ?? null,
      certDir: certs?.certDir ?? null,
      dir,
      storageDir,
      logPath: registry.logPath,
      stop: registry.stop,
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * The blobs (configs and layers) linked into `repository` on disk, as sorted `sha256:<hex>` digests: what
 * a push uploaded or mounted there. Empty when the repository has none. Manifests are not blobs here.
 */
export async function repositoryBlobs(registry: Pick<DockerRegistry, "storageDir">, repository: string): Promise<string[]> {
  const dir = join(registry.storageDir, "docker", "registry", "v2", "repositories", repository, "_layers", "sha256");
  const hexes = await readdir(dir).catch(() => [] as string[]);
  return hexes.map((hex) => `sha256:${hex}`).sort();
}
