/** Runs a command under GNU `/usr/bin/time -v` and reads wall time, CPU time and peak RSS from it. */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "./support.ts";

export const TIME_BINARY = "/usr/bin/time";

export interface Measurement {
  exitCode: number;
  wallSeconds: number;
  /** User + system time of the command and the children it waited for. */
  cpuSeconds: number;
  /** Largest resident set of the command or any one of its children. */
  peakRssMB: number;
  stdout: string;
  stderr: string;
}

export async function measure(cmd: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<Measurement> {
  const dir = await mkdtemp(join(tmpdir(), "chunked-push-bench-time-"));
  const report = join(dir, "time.txt");
  try {
    // -o keeps time's report apart from the command's own stderr.
    const { stdout, stderr, exitCode } = await run([TIME_BINARY, "-v", "-o", report, ...cmd], { ...options, allowFailure: true });
    return { exitCode, stdout, stderr, ...parseTimeReport(await readFile(report, "utf8")) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function parseTimeReport(text: string): Pick<Measurement, "wallSeconds" | "cpuSeconds" | "peakRssMB"> {
  const field = (label: string): string => {
    const line = text.split("\n").find((l) => l.trim().startsWith(label));
    if (!line) throw new Error(`/usr/bin/time -v printed no "${label}" line:\n${text}`);
    return line.slice(line.lastIndexOf(": ") + 2).trim();
  };
  const user = Number(field("User time (seconds)"));
  const system = Number(field("System time (seconds)"));
  const rssKB = Number(field("Maximum resident set size (kbytes)"));
  return { wallSeconds: parseClock(field("Elapsed (wall clock) time")), cpuSeconds: user + system, peakRssMB: (rssKB * 1024) / 1e6 };
}

/** `h:mm:ss` or `m:ss.ss` to seconds. */
function parseClock(clock: string): number {
  return clock.split(":").reduce((total, part) => total * 60 + Number(part), 0);
}
