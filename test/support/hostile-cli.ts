/**
 * The CLI as the hostile-input tests run it (through cli.ts, with a HOME of its own and no Docker
 * config), measured by /usr/bin/time for peak memory and by the test for wall time, plus the checks
 * every hostile case makes on what reached the hostile registry.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "./cli.ts";
import type { HostileOrigin, HostileRequest } from "./hostile-registry.ts";
import type { RunResult } from "./ports.ts";

/** The bound on every hostile input. */
export const PEAK_RSS_LIMIT_KB = 256 * 1024;

export interface MeasuredRun extends RunResult {
  /** Maximum resident set size of the CLI process, from /usr/bin/time (%M). */
  peakKb: number;
  /** Wall time of the whole run, as the test saw it. */
  elapsedMs: number;
  /** The last line of stderr (the error line of a failed run), without its newline. */
  lastLine: string;
}

export interface HostileCliOptions {
  /** Added to the clean environment. */
  env?: Record<string, string>;
  stdin?: string;
  /** HOME for the run (the seal key lives under it); a fresh one, removed afterwards, when omitted. */
  home?: string;
  /** Working directory (the push folder of the daemon source); HOME when omitted. */
  cwd?: string;
  timeoutMs?: number;
}

/** Runs `bun run index.ts ...args` under /usr/bin/time with a clean environment. */
export async function runHostileCli(args: string[], options: HostileCliOptions = {}): Promise<MeasuredRun> {
  const timeDir = await mkdtemp(join(tmpdir(), "hostile-cli-time-"));
  const timeFile = join(timeDir, "peak-rss");
  try {
    const started = performance.now();
    const result = await runCli(args, {
      under: ["/usr/bin/time", "-o", timeFile, "-f", "%M"],
      home: options.home ?? "fresh",
      cwd: options.cwd ?? options.home,
      // A HOME of the test's own gets the same empty Docker config a fresh one does.
      env: options.home === undefined ? options.env : { DOCKER_CONFIG: join(options.home, ".docker-none"), ...options.env },
      stdin: options.stdin,
      // Below the tests' own 60 s budget, so a run that hangs is killed and reported with its output.
      timeoutMs: options.timeoutMs ?? 45_000,
    });
    const elapsedMs = performance.now() - started;
    // A killed child makes time(1) write "Command terminated by signal N" first: the figure is last.
    const lines = (await readFile(timeFile, "utf8")).trim().split("\n");
    const peakKb = Number(lines[lines.length - 1]);
    const errorLines = result.stderr.replace(/\n$/, "").split("\n");
    return { ...result, peakKb, elapsedMs, lastLine: errorLines[errorLines.length - 1] ?? "" };
  } finally {
    await rm(timeDir, { recursive: true, force: true });
  }
}

/** Requests an origin received for repository `repo` (its /v2/<repo>/ paths). */
export function requestsFor(origin: HostileOrigin, repo: string): HostileRequest[] {
  return origin.requests.filter((r) => r.path.startsWith(`/v2/${repo}/`));
}

/** Manifest PUTs that reached the origin for `repo`. */
export function manifestPuts(origin: HostileOrigin, repo: string): HostileRequest[] {
  return requestsFor(origin, repo).filter((r) => r.route === "manifest" && r.method === "PUT");
}

/** Of `requests`, those naming `digest` in their target (HEAD, mount, `?digest=` of a final PUT). */
export function naming(requests: HostileRequest[], digest: string): HostileRequest[] {
  return requests.filter((r) => decodeURIComponent(r.target).includes(digest));
}
