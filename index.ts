#!/usr/bin/env bun
/**
 * Pushes a Docker image to a registry that caps request bodies (Cloudflare's serverless-registry)
 * or any OCI registry:
 *   echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts <host[:port]/repository[:tag]>
 */
import { join } from "node:path";
import packageJson from "./package.json" with { type: "json" };
import { readArchive } from "./src/sources/archive.ts";
import { BlobCache } from "./src/layers/cache.ts";
import { resolveCredentials } from "./src/cli/credentials.ts";
import { Interrupted, PushError, UsageError } from "./src/errors.ts";
import type { Logger } from "./src/log.ts";
import { buildManifest } from "./src/model/manifest.ts";
import { putManifest } from "./src/registry/manifest-put.ts";
import { parseCommand, USAGE } from "./src/cli/options.ts";
import { chooseMode, createProgress, type Progress } from "./src/cli/progress.ts";
import { promptHidden } from "./src/cli/prompt.ts";
import { pushImageBlobs } from "./src/push/blobs.ts";
import { formatReference } from "./src/model/reference.ts";
import { RegistryClient } from "./src/registry/client.ts";
import { jsonReport, resultLine, summaryLines } from "./src/cli/report.ts";
import { DEFAULT_RETRY } from "./src/registry/retry.ts";
import { saveImage } from "./src/sources/daemon.ts";

let progress: Progress | undefined;

async function main(argv: string[]): Promise<number> {
  const command = parseCommand(argv, process.env);
  if (command.kind === "help") return print(USAGE);
  if (command.kind === "version") return print(packageJson.version);
  const { options } = command;
  const { reference } = options;
  const target = formatReference(reference);
  progress = createProgress({ stream: process.stderr, mode: chooseMode(process.stderr, options.quiet, process.env) });
  const log = loggerFor(progress);
  const abort = stopOnSignals(log);

  const credentials = await resolveCredentials({
    username: options.username,
    passwordStdin: options.passwordStdin,
    host: reference.host,
    stdin: { isTTY: process.stdin.isTTY, text: () => Bun.stdin.text() },
    prompt: promptHidden,
    env: process.env,
  });
  const client = new RegistryClient({
    host: reference.host,
    insecure: options.insecure,
    credentials,
    repository: reference.repository,
    signal: abort.signal,
    retry: { ...DEFAULT_RETRY, retries: options.retries },
    idleTimeoutMs: options.timeoutMs,
    log,
  });
  // Check the registry and the credentials before the slow work of saving and compressing.
  await client.ping();

  const pushFolder = process.cwd();
  const archivePath = options.archive ?? (await saveImage(options.engine, target, pushFolder, log, abort.signal));
  const image = await readArchive(archivePath, target);
  abort.signal.throwIfAborted();
  log.info(`${options.dryRun ? "Dry run: checking" : "Pushing"} ${target}: ${image.layers.length} layers from ${archivePath}`);

  const cache = new BlobCache(options.cacheDir ?? join(pushFolder, ".cache"));
  await cache.init();
  const blobs = await pushImageBlobs(image, {
    client,
    repository: reference.repository,
    cache,
    concurrency: options.concurrency,
    compression: { algorithm: options.compression, level: options.compressionLevel },
    chunkCap: options.chunkCap,
    log,
    progress,
    dryRun: options.dryRun,
    abort,
  });

  abort.signal.throwIfAborted();
  const manifest = buildManifest(blobs.config, blobs.layers);
  const tags = [reference.tag, ...options.extraTags];
  if (!options.dryRun) {
    for (const tag of tags) await putManifest(client, reference.repository, tag, manifest);
  }
  progress.finish();

  const report = { reference, tags, manifest, blobs: blobs.results, dryRun: options.dryRun };
  if (!options.quiet) for (const line of summaryLines(report)) process.stderr.write(`${line}\n`);
  process.stdout.write(`${options.json ? jsonReport(report) : resultLine(report)}\n`);
  return 0;
}

function print(text: string): number {
  process.stdout.write(`${text}\n`);
  return 0;
}

/** Messages go through the progress display, so they land above its live lines on a terminal. */
function loggerFor(display: Progress): Logger {
  return { info: (message) => display.log(message), warn: (message) => display.log(`warning: ${message}`) };
}

/**
 * The first Ctrl-C or SIGTERM aborts the run: requests in flight stop, open upload sessions are
 * DELETEd, temporary files removed, then exit 130. A second one, or a cleanup that hangs, quits at once.
 */
function stopOnSignals(log: Logger): AbortController {
  const abort = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (abort.signal.aborted) process.exit(130);
      log.warn(`${signal}: stopping and cancelling open uploads (again to quit at once)`);
      abort.abort(new Interrupted(signal));
      setTimeout(() => process.exit(130), 15_000).unref();
    });
  }
  return abort;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    progress?.finish();
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n${USAGE.split("\n")[0]}\nRun with --help for the options.\n`);
      process.exit(2);
    }
    // A stack helps us, not the user; DEBUG=1 shows it.
    const detail = process.env.DEBUG ? (error as Error)?.stack : (error as Error)?.message;
    const message = error instanceof PushError ? error.message : `unexpected failure: ${detail ?? error}`;
    process.stderr.write(`error: ${message}\n`);
    process.exit(error instanceof Interrupted ? 130 : 1);
  },
);
