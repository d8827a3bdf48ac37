/**
 * The one way tests start the real CLI (`bun run index.ts ...`), the way a user would, so they cover
 * argument parsing, env handling, exit codes and output. Every run gets a clean environment (nothing the
 * CLI or the engines it runs read is inherited from the developer's shell), a HOME that is not the
 * developer's, and a wall-clock bound after which it is killed, so a hang is a failure with its output
 * rather than a test that never ends. Three shapes: run to completion (runCli), start and act on what
 * it prints (spawnCli), and run inside a pseudo-terminal, answering its prompt (runCliInTerminal).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { type RunResult, run } from "./ports.ts";

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

/** Families of variables stripped as well, whatever their exact name (new Docker/podman settings, proxies). */
const CLI_ENV_PATTERNS = [/^DOCKER_/, /^CONTAINERS_/, /^XDG_/, /^REGISTRY_/, /_proxy$/i];

/**
 * The CLI's HOME unless a test gives its own: an empty folder of this test process, so the CLI's cache
 * seal key (`~/.local/state/chunked-push`) is the same across the runs of one test file and never the
 * developer's. Removed after the last test by removeTestHome() (test/preflight.ts registers it: Bun's
 * test runner ends without an "exit" event).
 */
let sharedHome: string | undefined;
export function testHome(): string {
  sharedHome ??= mkdtempSync(join(tmpdir(), "chunked-push-home-"));
  return sharedHome;
}

export function removeTestHome(): void {
  if (sharedHome) rmSync(sharedHome, { recursive: true, force: true });
  sharedHome = undefined;
}

/** Environment the CLI sees: the runner's, minus everything it reads, with `home` as HOME, plus `extra`. */
export function cliEnv(extra: Record<string, string> = {}, home = testHome()): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of CLI_ENV_VARS) delete env[name];
  for (const name of Object.keys(env)) if (CLI_ENV_PATTERNS.some((p) => p.test(name))) delete env[name];
  env.HOME = home;
  return { ...env, ...extra };
}

/** A registry user as the CLI gets one: USERNAME_REGISTRY, the password piped on stdin, plain http. */
export interface Login {
  username: string;
  password: string;
}

/** The options of a push as a user runs it: user and plain http from the environment, password on stdin. */
export function loginAs(user: Login, env: Record<string, string> = {}): { stdin: string; env: Record<string, string> } {
  return { stdin: `${user.password}\n`, env: { USERNAME_REGISTRY: user.username, INSECURE_HTTP_PUSH: "true", ...env } };
}

export interface CliOptions {
  /** Added to the clean environment. */
  env?: Record<string, string>;
  /** Text fed to stdin (e.g. a password); stdin is closed/empty otherwise. */
  stdin?: string;
  /** Working directory (the push folder: `.cache`, saved archives); default the repo root, or the fresh HOME. */
  cwd?: string;
  /**
   * HOME of the run. Default: the test process's own (see testHome). `"fresh"`: an empty folder made for
   * this run alone (also its cwd, unless one is given), removed afterwards.
   */
  home?: string | "fresh";
  /** Kill the CLI (SIGKILL) after this long; default 120 s. */
  timeoutMs?: number;
  /** A command the CLI runs under, e.g. `["/usr/bin/time", "-o", file, "-f", "%M"]`. */
  under?: string[];
  /** The CLI as another executable (the compiled binary) instead of `bun run index.ts`. */
  program?: string;
}

const DEFAULT_TIMEOUT_MS = 120_000;

/** The command line that runs the CLI (or `program`) with `args`, under `under` if given. */
export function cliCommand(args: string[], under: string[] = [], program?: string): string[] {
  return [...under, ...(program ? [program] : [process.execPath, "run", CLI_ENTRY]), ...args];
}

/** HOME, cwd and environment of one run, and what to remove after it. */
async function prepare(opts: CliOptions): Promise<{ cwd: string; env: Record<string, string | undefined>; cleanup: () => Promise<void> }> {
  if (opts.home === "fresh") {
    const home = await mkdtemp(join(tmpdir(), "chunked-push-cli-home-"));
    return {
      cwd: opts.cwd ?? home,
      // A Docker config folder that does not exist: no credentials from anywhere but the test.
      env: cliEnv({ DOCKER_CONFIG: join(home, ".docker-none"), ...opts.env }, home),
      cleanup: () => rm(home, { recursive: true, force: true }),
    };
  }
  return { cwd: opts.cwd ?? REPO_ROOT, env: cliEnv(opts.env, opts.home), cleanup: async () => undefined };
}

/** Runs `bun run <repo>/index.ts ...args` to its end and resolves with its exit code and output. */
export async function runCli(args: string[], opts: CliOptions = {}): Promise<RunResult> {
  const { cwd, env, cleanup } = await prepare(opts);
  try {
    return await run(cliCommand(args, opts.under, opts.program), { cwd, env, stdin: opts.stdin, timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
  } finally {
    await cleanup();
  }
}

/** A CLI started by spawnCli, still running or not. */
export interface CliProcess {
  readonly child: Subprocess<"pipe", "pipe", "pipe">;
  /** stderr so far. */
  stderr(): string;
  /**
   * Resolves with stderr so far once it matches `pattern`; rejects when the CLI exits without printing
   * it, or after `timeoutMs` (default 60 s).
   */
  said(pattern: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): void;
  /** The exit code and all output, once the CLI has exited (killed at the wall-clock bound at the latest). */
  finished: Promise<RunResult>;
}

/**
 * Starts the CLI and returns at once, for tests that act while it runs (kill it after a chunk, signal
 * it, wait for a line). Same environment and bound as runCli; the bound kills it with SIGKILL.
 */
export async function spawnCli(args: string[], opts: CliOptions = {}): Promise<CliProcess> {
  const { cwd, env, cleanup } = await prepare(opts);
  const child = Bun.spawn(cliCommand(args, opts.under, opts.program), {
    cwd,
    env,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  if (opts.stdin !== undefined) child.stdin.write(opts.stdin);
  await child.stdin.end();
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);

  let stderr = "";
  const waiters = new Set<{ pattern: RegExp; resolve: (text: string) => void }>();
  const stderrDone = (async () => {
    const decoder = new TextDecoder();
    for await (const piece of child.stderr) {
      stderr += decoder.decode(piece, { stream: true });
      for (const waiter of waiters) {
        if (waiter.pattern.test(stderr)) {
          waiters.delete(waiter);
          waiter.resolve(stderr);
        }
      }
    }
  })();
  const finished = (async (): Promise<RunResult> => {
    try {
      const [stdout, code] = await Promise.all([new Response(child.stdout).text(), child.exited, stderrDone]);
      return { code: timedOut && code === 0 ? 124 : code, stdout, stderr: timedOut ? `${stderr}\n(killed after ${timeoutMs} ms)` : stderr };
    } finally {
      clearTimeout(timer);
      await cleanup();
    }
  })();

  return {
    child,
    stderr: () => stderr,
    said(pattern, waitMs = 60_000) {
      if (pattern.test(stderr)) return Promise.resolve(stderr);
      return new Promise<string>((resolve, reject) => {
        const waiter = { pattern, resolve };
        waiters.add(waiter);
        const fail = (why: string) => {
          if (!waiters.delete(waiter)) return;
          reject(new Error(`the CLI ${why} without printing ${pattern}:\n${stderr}`));
        };
        const bound = setTimeout(() => fail(`ran ${waitMs} ms`), waitMs);
        void finished.then(() => {
          clearTimeout(bound);
          fail("exited");
        });
      });
    },
    kill: (signal = "SIGTERM") => child.kill(signal),
    finished,
  };
}

export interface TerminalOptions extends Omit<CliOptions, "stdin" | "under"> {
  /** Typed once the output shows `prompt` (as a person types a password once asked). */
  answer?: { prompt: string; input: string };
}

/**
 * Runs the CLI inside a pseudo-terminal (util-linux `script`), 100 columns wide, as a person at a
 * terminal would; resolves with the exit code and everything the terminal showed.
 */
export async function runCliInTerminal(args: string[], opts: TerminalOptions = {}): Promise<{ code: number; output: string }> {
  const { cwd, env, cleanup } = await prepare(opts);
  const command = cliCommand(args)
    .map((a) => `'${a.replaceAll("'", `'\\''`)}'`)
    .join(" ");
  const child = Bun.spawn(["script", "-qfec", `stty cols 100 rows 40; ${command}`, "/dev/null"], { cwd, env, stdin: "pipe", stdout: "pipe", stderr: "ignore" });
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  try {
    let output = "";
    let answered = opts.answer === undefined;
    const decoder = new TextDecoder();
    for await (const piece of child.stdout) {
      output += decoder.decode(piece, { stream: true });
      if (!answered && opts.answer && output.includes(opts.answer.prompt)) {
        answered = true;
        child.stdin.write(opts.answer.input);
        await child.stdin.flush();
      }
    }
    return { code: await child.exited, output };
  } finally {
    clearTimeout(timer);
    await cleanup();
  }
}
