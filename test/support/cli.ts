/**
 * Runs the real CLI (`bun run index.ts ...`) as a subprocess, the way a user would, so tests cover
 * argument parsing, env handling, exit codes and output. The variables the CLI reads are stripped from
 * the inherited env unless the test passes them, so a developer's shell cannot change test outcomes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { run, type RunResult } from "./ports.ts";

/** Repository root (this file lives in `<root>/test/support`). */
export const REPO_ROOT = resolve(import.meta.dir, "..", "..");

/** Absolute path of the CLI entry point. */
export const CLI_ENTRY = join(REPO_ROOT, "index.ts");

/**
 * Everything the CLI (or the programs it runs: docker, podman, credential helpers) reads from the
 * environment. None of it is inherited from the test runner's shell: a developer's `docker login`
 * (`~/.docker/config.json` with `credsStore`), `DOCKER_BIN`, `DOCKER_HOST`, a proxy or `DEBUG=1` must not
 * change what a test sees. A test that wants one passes it in `env`.
 */
export const CLI_ENV_VARS = [
  "USERNAME_REGISTRY",
  "INSECURE_HTTP_PUSH",
  "CHUNK_SIZE",
  "DOCKER_BIN",
  "DOCKER_HOST",
  "DOCKER_CONFIG",
  "DOCKER_CONTEXT",
  "DOCKER_CERT_PATH",
  "DOCKER_TLS_VERIFY",
  "CONTAINERS_STORAGE_CONF",
  "CONTAINERS_CONF",
  "REGISTRY_AUTH_FILE",
  "XDG_STATE_HOME",
  "XDG_CONFIG_HOME",
  "XDG_RUNTIME_DIR",
  "TERM",
  "DEBUG",
  "NODE_EXTRA_CA_CERTS",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "all_proxy",
] as const;

/**
 * The CLI's HOME unless a test gives its own: an empty folder of this test process, so the CLI's cache
 * seal key (`~/.local/state/chunked-push`) is the same across the runs of one test file and never the
 * developer's.
 */
let sharedHome: string | undefined;
export function testHome(): string {
  if (!sharedHome) {
    sharedHome = mkdtempSync(join(tmpdir(), "chunked-push-home-"));
    const home = sharedHome;
    process.once("exit", () => rmSync(home, { recursive: true, force: true }));
  }
  return sharedHome;
}

export interface RunCliOptions {
  /** Added to the clean environment (PATH, HOME and nothing the CLI reads). */
  env?: Record<string, string>;
  /** Text fed to stdin (e.g. a password); stdin is closed/empty otherwise. */
  stdin?: string;
  /** Working directory (where the CLI looks for saved archives); default the repo root. */
  cwd?: string;
  /** Kill the CLI after this long; default 120 s. */
  timeoutMs?: number;
}

/** Environment the CLI would see for these options (exported for tests that spawn it themselves). */
export function cliEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of CLI_ENV_VARS) delete env[name];
  env.HOME = testHome();
  return { ...env, ...extra };
}

/** Spawns `bun run <repo>/index.ts ...args` and resolves with its exit code and output. */
export function runCli(args: string[], opts: RunCliOptions = {}): Promise<RunResult> {
  return run([process.execPath, "run", CLI_ENTRY, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: cliEnv(opts.env),
    stdin: opts.stdin,
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
}
