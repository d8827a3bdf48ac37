/** Small helpers shared by the benchmark scripts. */
import { join } from "node:path";

/** Everything the benchmark builds or downloads lives here (gitignored), so reruns reuse it. */
export const WORK_DIR = join(import.meta.dir, ".work");

export const formatMB = (bytes: number): string => (bytes / 1e6).toFixed(1);

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs a command to completion; throws with its stderr unless `allowFailure`. */
export async function run(cmd: string[], options: { cwd?: string; env?: Record<string, string | undefined>; allowFailure?: boolean } = {}): Promise<RunResult> {
  const child = Bun.spawn(cmd, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (exitCode !== 0 && !options.allowFailure) {
    throw new Error(`${cmd.join(" ")} exited with ${exitCode}: ${stderr.trim().slice(-2000)}`);
  }
  return { stdout, stderr, exitCode };
}
