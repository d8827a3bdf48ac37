import type { BuiltManifest } from "../model/manifest.ts";
import type { BlobResult } from "../push/blobs.ts";
import type { Reference } from "../model/reference.ts";
import { formatReference } from "../model/reference.ts";

export interface PushReport {
  reference: Reference;
  /** Every tag the manifest went under, the main one first. */
  tags: string[];
  manifest: BuiltManifest;
  blobs: BlobResult[];
  dryRun: boolean;
}

/** The one stdout line scripts read: `<host>/<repository>:<tag>@sha256:<digest>`. */
export function resultLine({ reference, manifest }: PushReport): string {
  return `${formatReference(reference)}@${manifest.digest}`;
}

/** The closing stderr lines, as docker push ends: `<tag>: digest: ... size: N`, then what was sent. */
export function summaryLines(report: PushReport): string[] {
  const { manifest, blobs, dryRun } = report;
  const pushed = blobs.filter((b) => b.status !== "skipped");
  const bytes = pushed.reduce((sum, b) => sum + b.size, 0);
  const verb = dryRun ? "would push" : "pushed";
  return [
    ...report.tags.map((tag) => `${tag}: digest: ${manifest.digest} size: ${manifest.bytes.byteLength}${dryRun ? " (dry run: nothing sent)" : ""}`),
    `${blobs.length} blobs: ${pushed.length} ${verb}, ${blobs.length - pushed.length} already present; ${bytes} bytes ${dryRun ? "to send" : "sent"}`,
  ];
}

/** --json: one object with the result, for scripts that want more than the result line. */
export function jsonReport(report: PushReport): string {
  const { reference, manifest, blobs } = report;
  return JSON.stringify({
    reference: resultLine(report),
    repository: `${reference.host}/${reference.repository}`,
    tags: report.tags,
    digest: manifest.digest,
    mediaType: manifest.mediaType,
    size: manifest.bytes.byteLength,
    dryRun: report.dryRun,
    blobs: blobs.map((b) => ({
      name: b.label,
      digest: b.digest,
      size: b.size,
      mediaType: b.mediaType,
      status: b.status,
      chunks: b.status === "skipped" ? 0 : b.chunks,
    })),
  });
}
