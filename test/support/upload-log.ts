/**
 * Reading a registry's request log (the serverless emulator's `requests`, or a fault proxy's) as upload
 * sessions: which requests carried which blob, so tests can count bytes per blob and compare times.
 */
import { expect } from "bun:test";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Emulator } from "./serverless-emulator.ts";

/** The fields the emulator's and the fault proxy's records share. */
export interface LoggedRequest {
  method: string;
  path: string;
  query: string;
  bodyBytes: number;
  status: number | string;
  /** Emulator: wall-clock ms when the headers arrived. */
  startedAt?: number;
}

export interface UploadSession<R extends LoggedRequest = LoggedRequest> {
  uuid: string;
  repository: string;
  /** The POST that opened it (absent when it was opened before the log started). */
  opened?: R;
  patches: R[];
  /** The final `PUT ?digest=`, if one was sent. */
  put?: R;
  /** From the final PUT's `?digest=`. */
  digest?: string;
  /** Body bytes of every PATCH and PUT of the session, broken-off ones included. */
  bytes: number;
}

const SESSION_PATH = /^\/v2\/(.+)\/blobs\/uploads\/([^/?]+)$/;

/**
 * Groups the PATCH/PUT/GET requests by upload session. The emulator's Locations are relative paths with
 * the session uuid last; docker-registry's carry the uuid in the same place.
 */
export function uploadSessions<R extends LoggedRequest>(requests: R[]): UploadSession<R>[] {
  const sessions = new Map<string, UploadSession<R>>();
  for (const request of requests) {
    const match = SESSION_PATH.exec(request.path);
    if (!match) continue;
    const [, repository = "", uuid = ""] = match;
    let session = sessions.get(uuid);
    if (!session) {
      session = { uuid, repository, patches: [], bytes: 0 };
      sessions.set(uuid, session);
    }
    if (request.method === "PATCH") {
      session.patches.push(request);
      session.bytes += request.bodyBytes;
    } else if (request.method === "PUT") {
      session.bytes += request.bodyBytes;
      const digest = new URLSearchParams(request.query).get("digest");
      if (digest) {
        session.put = request;
        session.digest = digest;
      }
    }
  }
  return [...sessions.values()];
}

/** Sessions that carried blob `digest` (every attempt: killed, restarted, completed). */
export function sessionsFor<R extends LoggedRequest>(requests: R[], digest: string): UploadSession<R>[] {
  return uploadSessions(requests).filter((s) => s.digest === digest);
}

/** Body bytes of every blob upload request in the log: PATCHes and PUTs to upload sessions. */
export function blobBodyBytes(requests: LoggedRequest[]): number {
  return requests.filter((r) => (r.method === "PATCH" || r.method === "PUT") && SESSION_PATH.test(r.path)).reduce((sum, r) => sum + r.bodyBytes, 0);
}

/** Cross-repository mounts the log shows, as `digest from <repo>` with the status answered. */
export function mounts(requests: LoggedRequest[]): { digest: string; from: string; status: number | string }[] {
  return requests
    .filter((r) => r.method === "POST" && r.query.includes("mount="))
    .map((r) => {
      const params = new URLSearchParams(r.query);
      return { digest: params.get("mount") ?? "", from: params.get("from") ?? "", status: r.status };
    });
}

/**
 * When the compressor wrote the last byte of cached blob `digest`: the blob file's mtime (wall-clock ms).
 * The cache renames a finished file into place, which keeps its mtime, and nothing writes it after.
 */
export async function compressedAt(cacheDir: string, digest: string): Promise<number> {
  return (await stat(join(cacheDir, digest.slice("sha256:".length)))).mtimeMs;
}

/**
 * The proof of streaming, for every layer that went in several chunks: its first PATCH arrived before
 * the compressor wrote the layer's last byte; every chunk but the last is exactly the advertised
 * maximum, the last no larger; the emulation saw no rule broken.
 */
export async function expectStreamed(registry: Emulator, cacheDir: string, chunk: number): Promise<void> {
  expect(registry.violations).toEqual([]);
  const chunked = uploadSessions(registry.requests).filter((s) => s.patches.length > 1 && s.put?.status === 201);
  expect(chunked.length).toBeGreaterThanOrEqual(1);
  for (const session of chunked) {
    const firstPatch = session.patches[0]!.startedAt!;
    const lastByteWritten = await compressedAt(cacheDir, session.digest!);
    expect({
      digest: session.digest,
      firstPatchBeforeCompressionEnded: firstPatch < lastByteWritten,
      by: Math.round(lastByteWritten - firstPatch),
    }).toMatchObject({ firstPatchBeforeCompressionEnded: true });
    expect(session.patches.slice(0, -1).map((p) => p.bodyBytes)).toEqual(session.patches.slice(0, -1).map(() => chunk));
    expect(session.patches.at(-1)!.bodyBytes).toBeLessThanOrEqual(chunk);
    expect(session.patches.every((p) => p.status === 202)).toBe(true);
  }
}
