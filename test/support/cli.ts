/**
 * Runs the real CLI (`bun run index.ts ...`) as a subprocess, the way a user would, so tests cover
 * argument parsing, env handling, exit codes and output. The variables the CLI reads are stripped from
 * the inherited env unless the test passes them, so a developer's shell cannot change test outcomes.
 */
import { join, resolve } from "node:path";
import { run, type RunResult } from "./ports.ts";

/** Repository root (this file lives in `<root>/test/support`). */
export const REPO_ROOT = resolve(import.meta.dir, "..", "..");

/** Absolute path of the CLI entry point. */
export const CLI_ENTRY = join(REPO_ROOT, "index.ts");

/** Variables the CLI reads; never inherited from the test runner's environment. */
export const CLI_ENV_VARS = ["USERNAME_REGISTRY", "INSECURE_HTTP_PUSH", "CHUNK_SIZE"] as const;

export interface RunCliOptions {
  /** Merged over process.env (minus CLI_ENV_VARS). */
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
