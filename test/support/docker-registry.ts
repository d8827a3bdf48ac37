/**
 * Starts Debian's `docker-registry` (CNCF distribution 2.8.2) on a free 127.0.0.1 port with its own
 * temp storage, so end-to-end tests push to a real registry without touching anything shared.
 * Note from REGISTRY-NOTES.md: it ignores Content-Range and sends no chunk-length headers, so it proves
 * protocol conformance and content, not chunk-size rules (that is the serverless emulator's job).
 */
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, waitFor } from "./ports.ts";

export interface DockerRegistryOptions {
  username?: string;
  password?: string;
  /** htpasswd Basic auth; default true. */
  auth?: boolean;
  /** How long to wait for `/v2/` to answer; default 15 s. */
  startTimeoutMs?: number;
}

export interface DockerRegistry {
  /** `127.0.0.1:<port>`, the form the CLI takes as `<host[:port]>`. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  username: string;
  password: string;
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

/** Children still alive, killed synchronously if the test process exits without calling stop(). */
const live = new Set<Subprocess>();
process.once("exit", () => {
  for (const proc of live) proc.kill("SIGKILL");
});

/** Runs `htpasswd -Bbn` (bcrypt, as distribution requires) and returns the htpasswd line. */
async function htpasswdLine(username: string, password: string): Promise<string> {
  const proc = Bun.spawn(["htpasswd", "-Bbn", username, password], { stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) throw new Error(`htpasswd failed (${code}): ${stderr}`);
  return stdout.trim();
}

/** YAML for distribution's config; JSON string quoting is valid YAML, which keeps paths safe. */
function configYaml(storageDir: string, port: number, htpasswdPath: string | null): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [
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
    "  secret: harness-not-a-secret",
  ];
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
  const configPath = join(dir, "config.yml");
  const htpasswdPath = join(dir, "htpasswd");
  const logPath = join(dir, "registry.log");
  try {
    if (auth) await writeFile(htpasswdPath, `${await htpasswdLine(username, password)}\n`);

    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      await writeFile(configPath, configYaml(storageDir, port, auth ? htpasswdPath : null));
      // One append-mode fd shared by stdout and stderr, so the two streams do not overwrite each other.
      const logFd = openSync(logPath, "a");
      const proc = Bun.spawn(["docker-registry", "serve", configPath], {
        cwd: dir,
        stdin: "ignore",
        stdout: logFd,
        stderr: logFd,
      });
      closeSync(logFd);
      live.add(proc);
      const url = `http://127.0.0.1:${port}`;
      const stopProc = async (): Promise<void> => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill("SIGTERM");
          const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
          await proc.exited;
          clearTimeout(timer);
        }
        live.delete(proc);
      };
      try {
        await waitFor(
          async () => {
            if (proc.exitCode !== null) throw new Error(`docker-registry exited with ${proc.exitCode}`);
            const res = await fetch(`${url}/v2/`);
            await res.arrayBuffer();
            return res.status === (auth ? 401 : 200);
          },
          timeoutMs,
          `docker-registry on ${url}`,
        );
      } catch (err) {
        await stopProc();
        lastError = new Error(`${err instanceof Error ? err.message : String(err)}\n--- registry.log ---\n${await logTail(logPath)}`);
        continue;
      }
      let stopped = false;
      return {
        host: `127.0.0.1:${port}`,
        url,
        username,
        password,
        dir,
        storageDir,
        logPath,
        async stop(): Promise<void> {
          if (stopped) return;
          stopped = true;
          await stopProc();
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    throw lastError instanceof Error ? lastError : new Error("docker-registry did not start");
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
