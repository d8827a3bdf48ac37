#!/usr/bin/env bun
/**
 * Pushes a Docker image to a registry that caps request bodies (Cloudflare's serverless-registry)
 * or any OCI registry:
 *   echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts <host[:port]/repository[:tag]>
 */
import { join } from "node:path";
import { readArchive } from "./src/archive.ts";
import { BlobCache } from "./src/cache.ts";
import { readCredentials } from "./src/credentials.ts";
import { dockerSave } from "./src/docker-save.ts";
import { Interrupted, PushError, UsageError } from "./src/errors.ts";
import { stderrLogger as log } from "./src/log.ts";
import { buildManifest } from "./src/manifest.ts";
import { putManifest } from "./src/manifest-upload.ts";
import { parseOptions, USAGE } from "./src/options.ts";
import { pushImageBlobs } from "./src/push-blobs.ts";
import { formatReference } from "./src/reference.ts";
import { RegistryClient } from "./src/registry.ts";
import { DEFAULT_RETRY } from "./src/retry.ts";

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv, process.env);
  if (!options) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const { reference } = options;
  const target = formatReference(reference);
  const credentials = await readCredentials(options.username, { isTTY: process.stdin.isTTY, text: () => Bun.stdin.text() });
  const abort = stopOnSignals();

  // Check the registry and the credentials before the slow work of saving and compressing.
  const client = new RegistryClient({
    host: reference.host,
    insecure: options.insecure,
    credentials,
    signal: abort.signal,
    retry: { ...DEFAULT_RETRY, retries: options.retries },
    idleTimeoutMs: options.timeoutMs,
    log,
  });
  await client.ping();

  const pushFolder = process.cwd();
  const archivePath = options.archive ?? (await dockerSave(target, pushFolder, log, abort.signal));
  const image = await readArchive(archivePath, target);
  abort.signal.throwIfAborted();
  log.info(`Pushing ${target}: ${image.layers.length} layers from ${archivePath}`);

  const cache = new BlobCache(join(pushFolder, ".cache"));
  await cache.init();
  const blobs = await pushImageBlobs(image, {
    client,
    repository: reference.repository,
    cache,
    concurrency: options.concurrency,
    gzipLevel: options.gzipLevel,
    chunkCap: options.chunkCap,
    log,
    abort,
  });

  abort.signal.throwIfAborted();
  const manifest = buildManifest(blobs.config, blobs.layers);
  await putManifest(client, reference.repository, reference.tag, manifest);
  log.info(`${reference.tag}: digest: ${manifest.digest} size: ${manifest.bytes.byteLength}`);
  process.stdout.write(`${target}@${manifest.digest}\n`);
  return 0;
}

/**
 * The first Ctrl-C or SIGTERM aborts the run: requests in flight stop, open upload sessions are
 * DELETEd, temporary files removed, then exit 130. A second one, or a cleanup that hangs, quits at once.
 */
function stopOnSignals(): AbortController {
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
    if (error instanceof Interrupted) {
      process.stderr.write(`error: ${error.message}\n`);
      process.exit(130);
    }
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n${USAGE.split("\n")[0]}\nRun with --help for the options.\n`);
      process.exit(2);
    }
    // A stack helps us, not the user; DEBUG=1 shows it.
    const detail = process.env.DEBUG ? (error as Error)?.stack : (error as Error)?.message;
    const message = error instanceof PushError ? error.message : `unexpected failure: ${detail ?? error}`;
    process.stderr.write(`error: ${message}\n`);
    process.exit(1);
  },
);
