import { formatReference, type Reference } from "../model/reference.ts";
import type { PushResult } from "../push/pusher.ts";
import { formatBytes } from "./progress.ts";

export interface PushReport {
  reference: Reference;
  /** Every tag the manifest went under, the main one first. */
  tags: string[];
  result: PushResult;
  dryRun: boolean;
  /** Where the image came from, e.g. "docker save of app:1". */
  source: string;
}

/** The one stdout line scripts read after a push: `<host>/<repository>:<tag>@sha256:<digest>`. */
export function resultLine({ reference, result }: PushReport): string {
  return `${formatReference(reference)}@${result.digest}`;
}

/** The closing stderr lines, as docker push ends: `<tag>: digest: ... size: N`, then what was sent. */
export function summaryLines(report: PushReport): string[] {
  const { result, dryRun } = report;
  const lines: string[] = [];
  if (result.kind === "index" || result.platforms.length > 1) {
    for (const p of result.platforms) {
      lines.push(`${p.platform}: ${p.layers} ${plural(p.layers, "layer")}, manifest ${p.digest}${p.unchanged ? " (as in the source)" : ""}`);
    }
  }
  const kind = result.kind === "index" ? `index of ${result.platforms.length} ${plural(result.platforms.length, "platform")}` : "manifest";
  const same = result.unchanged ? ", the source's own" : "";
  for (const tag of report.tags) {
    lines.push(
      dryRun
        ? `${tag}: would get ${kind} ${result.digest} size: ${result.size}${same} (dry run: no manifest sent)`
        : `${tag}: digest: ${result.digest} size: ${result.size} (${kind}${same})`,
    );
  }
  const blobs = result.blobs;
  const count = (status: string) => blobs.filter((b) => b.status === status).length;
  const pushed = dryRun ? count("would push") : count("pushed");
  const parts = [`${pushed} ${dryRun ? "to push" : "pushed"}`];
  if (count("mounted")) parts.push(`${count("mounted")} mounted`);
  parts.push(`${count("skipped")} already present`);
  const resent = result.bytesResent > 0 ? ` (${formatBytes(result.bytesResent)} of it re-sent after faults)` : "";
  const sent = dryRun
    ? `${blobs.filter((b) => b.status === "would push").reduce((sum, b) => sum + b.size, 0)} bytes to send`
    : `${result.bytesSent} bytes sent${resent}`;
  lines.push(`${blobs.length} ${plural(blobs.length, "blob")}: ${parts.join(", ")}; ${sent}`);
  return lines;
}

/** --json: one object with the result, for scripts that want more than the result line. */
export function jsonReport(report: PushReport): string {
  const { reference, result } = report;
  return JSON.stringify({
    reference: report.dryRun ? null : resultLine(report),
    repository: `${reference.host}/${reference.repository}`,
    tags: report.tags,
    digest: result.digest,
    mediaType: result.mediaType,
    size: result.size,
    kind: result.kind,
    unchanged: result.unchanged,
    dryRun: report.dryRun,
    source: report.source,
    platforms: result.platforms,
    leftOut: result.leftOut,
    bytesSent: result.bytesSent,
    bytesResent: result.bytesResent,
    blobs: result.blobs.map((b) => ({
      name: b.label,
      digest: b.digest,
      size: b.size,
      mediaType: b.mediaType,
      status: b.status,
      chunks: b.status === "skipped" || b.status === "mounted" ? 0 : b.chunks,
    })),
  });
}

/** --json when the push failed: one object on stdout, so a script never parses nothing. */
export function jsonFailure(message: string, exitCode: number): string {
  return JSON.stringify({ error: { message, exitCode } });
}

function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}
