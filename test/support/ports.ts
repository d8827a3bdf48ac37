/**
 * Port, polling and subprocess helpers for tests that start real services (docker-registry, podman).
 * Services bind 127.0.0.1 only, on ports the kernel hands out, so parallel runs never collide.
 */
import { closeSync, openSync } from "node:fs";
import { createServer } from "node:net";
import type { Subprocess } from "bun";

/**
 * Asks the kernel for a free TCP port on 127.0.0.1 by listening on port 0 and closing again.
 * There is a small race (another process may grab it before the service binds), acceptable for tests.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("freePort: could not read the listening address"));
        return;
      }
      const port = address.port;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Sleeps for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `fn` until it returns a truthy value (which is returned) or `timeoutMs` passes.
 * Exceptions thrown by `fn` count as "not yet": services refuse connections while starting.
 * On timeout, throws with `what` and the last error seen, so a failed start says why.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what = "condition", intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`waitFor: timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

/** Outcome of a finished subprocess; stdout/stderr decoded as UTF-8. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Full environment for the child (not merged); defaults to process.env. */
  env?: Record<string, string | undefined>;
  stdin?: string;
  /** Kill the child (SIGKILL) after this long and report code 124-style failure; default 5 minutes. */
  timeoutMs?: number;
}

/** No command a test runs to completion may hang the run: longer than any test's own budget. */
const RUN_BOUND_MS = 5 * 60_000;

/**
 * Runs a command to completion, capturing output. Never throws on a non-zero exit: callers that need
 * success use runOk(), which puts the command line and stderr into the error so CI logs say what broke.
 */
export async function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  const proc = Bun.spawn(cmd, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  let timedOut = false;
  const bound = opts.timeoutMs ?? RUN_BOUND_MS;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, bound);
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (timedOut) {
      return { code: code === 0 ? 124 : code, stdout, stderr: `${stderr}\n(killed after ${bound} ms)` };
    }
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Like run(), but throws (with the command, exit code and stderr) unless the exit code is 0. */
export async function runOk(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  const result = await run(cmd, opts);
  if (result.code !== 0) {
    throw new Error(
      `command failed (exit ${result.code}): ${cmd.join(" ")}\n--- stderr ---\n${result.stderr.slice(-4000)}` +
        (result.stdout ? `\n--- stdout ---\n${result.stdout.slice(-2000)}` : ""),
    );
  }
  return result;
}

/** Services started by spawnService() and not yet stopped, killed synchronously if the test process exits first. */
const liveServices = new Set<Subprocess>();
process.once("exit", () => {
  for (const proc of liveServices) proc.kill("SIGKILL");
});

/**
 * Starts a long-running service (stdin ignored) whose stdout and stderr both append to `logPath`, and
 * remembers it so it is SIGKILLed if the test process exits before stopService().
 */
export function spawnService(
  cmd: string[],
  logPath: string,
  opts: { cwd?: string /** Full environment (not merged); default process.env. */; env?: Record<string, string | undefined> } = {},
): Subprocess {
  // One append-mode fd shared by stdout and stderr, so the two streams do not overwrite each other.
  const logFd = openSync(logPath, "a");
  const proc = Bun.spawn(cmd, { cwd: opts.cwd, env: opts.env ?? process.env, stdin: "ignore", stdout: logFd, stderr: logFd });
  closeSync(logFd);
  liveServices.add(proc);
  return proc;
}

/** Stops a spawnService() child: SIGTERM, SIGKILL if it is still running after `graceMs`. Safe to call twice. */
export async function stopService(proc: Subprocess, graceMs: number): Promise<void> {
  if (proc.exitCode === null && proc.signalCode === null) {
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    await proc.exited;
    clearTimeout(timer);
  }
  liveServices.delete(proc);
}
