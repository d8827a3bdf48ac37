#!/usr/bin/env bun
/**
 * Pushes a container image to a registry that caps request bodies (Cloudflare's serverless-registry)
 * or any OCI registry:
 *   echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts <host[:port]/repository[:tag]>
 * The flow: options -> credentials and the registry -> the image's source -> push -> report.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import packageJson from "./package.json" with { type: "json" };
import { resolveCredentials } from "./src/cli/credentials.ts";
import { parseCommand, USAGE, type Options, type PruneCommandOptions } from "./src/cli/options.ts";
import { chooseMode, createProgress, type Progress } from "./src/cli/progress.ts";
import { promptHidden } from "./src/cli/prompt.ts";
import { jsonFailure, jsonReport, resultLine, summaryLines } from "./src/cli/report.ts";
import { Interrupted, PushError, UsageError } from "./src/errors.ts";
import { BlobCache } from "./src/layers/cache.ts";
import { closeCompressWorkers } from "./src/layers/parallel-compress.ts";
import { pruneCache } from "./src/layers/prune.ts";
import { Records } from "./src/layers/records.ts";
import { Sealer } from "./src/layers/seal.ts";
import type { Logger } from "./src/log.ts";
import { formatReference } from "./src/model/reference.ts";
import { RepairableError, variantOf } from "./src/push/prepare.ts";
import { Pusher, type PushResult } from "./src/push/pusher.ts";
import { RegistryClient, type Credentials } from "./src/registry/client.ts";
import { dockerConfigCredentials } from "./src/registry/docker-config.ts";
import { DEFAULT_RETRY } from "./src/registry/retry.ts";
import { openSource, type OpenedSource, type SourceSpec } from "./src/sources/open.ts";

let progress: Progress | undefined;
let json = false;

async function main(argv: string[]): Promise<number> {
  json = argv.includes("--json");
  const command = parseCommand(argv, process.env);
  if (command.kind === "help") return print(command.text);
  if (command.kind === "version") return print(packageJson.version);
  if (command.kind === "prune") return prune(command.options);
  const { options } = command;
  json = options.json;
  const { reference } = options;
  const target = formatReference(reference);
  progress = createProgress({ stream: process.stderr, mode: chooseMode(process.stderr, options.quiet, process.env) });
  const log = loggerFor(progress);
  const abort = stopOnSignals(log);

  const credentials = await resolveCredentials({
    username: options.username,
    passwordStdin: options.passwordStdin,
    host: reference.host,
    stdin: { isTTY: process.stdin.isTTY, text: () => Bun.stdin.text(), stream: () => Bun.stdin.stream() },
    prompt: promptHidden,
    env: process.env,
  });
  const client = clientFor(options, reference.host, reference.repository, credentials, abort.signal, log);
  // Check the registry and the credentials before the slow work of saving and compressing.
  await client.ping();

  const sealer = await Sealer.load(process.env);
  const cache = new BlobCache(options.cacheDir ?? join(process.cwd(), ".cache"), sealer);
  await cache.init();
  const records = new Records(cache, sealer);
  const spec = await sourceSpec(options, target, log, abort.signal);

  // A bad cache entry met where the source cannot give the layer again (an image built from the
  // cache's record) is repaired by pushing once more from a fresh save.
  let pushed: { result: PushResult; source: OpenedSource } | undefined;
  for (const repair of [false, true]) {
    const attempt = new AbortController();
    const forward = () => attempt.abort(abort.signal.reason);
    abort.signal.addEventListener("abort", forward, { once: true });
    try {
      const pusher = new Pusher({
        client: client.fork(attempt.signal),
        registry: reference.host,
        repository: reference.repository,
        tags: [reference.tag, ...options.extraTags],
        cache,
        records,
        compression: { algorithm: options.compression, level: options.compressionLevel },
        format: options.format,
        platforms: options.platforms,
        chunkCap: options.chunkCap,
        concurrency: options.concurrency,
        mountFrom: options.from && options.from.host === reference.host ? [options.from.repository, ...options.mountFrom] : options.mountFrom,
        dryRun: options.dryRun,
        trustRemoteDigests: true,
        events: progress,
        log,
        abort: attempt,
        // An engine's save holds the one image asked for; an archive may hold others, not to be sent.
        uploadAsStreamed: spec.kind === "daemon" && options.platforms.length === 0,
      });
      const variant = variantOf({ algorithm: options.compression, level: options.compressionLevel });
      // Said once, as soon as the source is known: a stream's layers are at work before it is read whole.
      let announced = false;
      const announce = (description: string) => {
        if (announced) return;
        announced = true;
        log.info(`${options.dryRun ? "Dry run: checking" : "Pushing"} ${target} from ${description}`);
      };
      const source = await openSource(spec, {
        sink: pusher.sink,
        cache,
        records,
        variant,
        image: options.image,
        noRecord: repair,
        announce,
        log,
        signal: attempt.signal,
      });
      pusher.describeSource(source.description);
      announce(source.description);
      pushed = { result: await pusher.push(source.root), source };
      break;
    } catch (error) {
      if (!(error instanceof RepairableError)) throw error;
      if (repair || spec.kind !== "daemon") throw new PushError(error.message);
      log.warn(`${error.message}; saving the image again to repair the cache`);
    } finally {
      abort.signal.removeEventListener("abort", forward);
    }
  }
  if (!pushed) throw new PushError("the push did not complete");
  progress.finish();

  const { result, source } = pushed;
  if (options.rmArchive && source.archive && !options.dryRun) {
    await Bun.file(source.archive)
      .delete()
      .catch(() => undefined);
    log.info(`Removed ${source.archive}`);
  }
  const report = { reference, tags: [reference.tag, ...options.extraTags], result, dryRun: options.dryRun, source: source.description };
  if (!options.quiet) for (const line of summaryLines(report)) process.stderr.write(`${line}\n`);
  if (options.json) process.stdout.write(`${jsonReport(report)}\n`);
  else if (!options.dryRun) process.stdout.write(`${resultLine(report)}\n`);
  return 0;
}

/** One registry, one scheme, one set of credentials; a fresh client per attempt so a repair starts clean. */
function clientFor(
  options: Options,
  host: string,
  repository: string,
  credentials: Credentials | undefined,
  signal: AbortSignal,
  log: Logger,
  source?: { scope: string[]; loginHint: string },
): RegistryClient {
  return new RegistryClient({
    host,
    insecure: options.insecure,
    credentials,
    repository,
    ...(source ?? {}),
    signal,
    retry: { ...DEFAULT_RETRY, retries: options.retries },
    idleTimeoutMs: options.timeoutMs,
    log,
  });
}

async function sourceSpec(options: Options, target: string, log: Logger, signal: AbortSignal): Promise<SourceSpec> {
  if (options.archive !== undefined) return { kind: "archive", path: options.archive };
  if (options.from) {
    const from = options.from;
    // The source registry's own credentials (Docker config), never the destination's password.
    const credentials = await dockerConfigCredentials(from.host, process.env);
    // The source's scheme is its own: --insecure for an http destination must not send a remote source's
    // credentials in clear. A registry on this machine follows --insecure, as Docker treats 127.0.0.0/8.
    const insecure = options.fromInsecure || (options.insecure && isLoopback(from.host));
    const loginHint = `log in to it with docker login ${from.host}: a source registry's credentials come from the Docker config (${process.env.DOCKER_CONFIG ? "DOCKER_CONFIG" : "~/.docker/config.json"}), never from USERNAME_REGISTRY`;
    const client = clientFor({ ...options, insecure }, from.host, from.repository, credentials, signal, log, {
      scope: [`repository:${from.repository}:pull`],
      loginHint,
    });
    return { kind: "remote", reference: from, client };
  }
  return { kind: "daemon", engine: options.engine, reference: target, folder: process.cwd() };
}

/** `prune`: bounds the cache folder and says what it removed and what it keeps. */
async function prune(options: PruneCommandOptions): Promise<number> {
  const dir = options.cacheDir ?? join(process.cwd(), ".cache");
  // A mistyped --cache-dir is named, not created empty and reported as pruned.
  const isFolder = await stat(dir).then(
    (info) => info.isDirectory(),
    () => false,
  );
  if (!isFolder) throw new PushError(`prune: there is no cache folder at ${dir}`);
  const cache = new BlobCache(dir);
  await cache.init();
  const report = await pruneCache(dir, options);
  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
  const verb = options.dryRun ? "would remove" : "removed";
  return print(
    `${dir}: ${verb} ${report.removedBlobs} ${report.removedBlobs === 1 ? "blob" : "blobs"} (${mb(report.removedBytes)}); ` +
      `${options.dryRun ? "would keep" : "keeps"} ${report.keptBlobs} (${mb(report.keptBytes)})`,
  );
}

function isLoopback(host: string): boolean {
  const name = host.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return name === "localhost" || name === "::1" || /^127\.\d+\.\d+\.\d+$/.test(name);
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
 * DELETEd, temporary files removed, then exit 128 + the signal's number (130, 143), as a shell reports
 * a process a signal ended. A second one, or a cleanup that hangs, quits at once.
 */
function stopOnSignals(log: Logger): AbortController {
  const abort = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (abort.signal.aborted) process.exit(signalExitCode(signal));
      log.warn(`${signal}: stopping and cancelling open uploads (again to quit at once)`);
      abort.abort(new Interrupted(signal));
      setTimeout(() => process.exit(signalExitCode(signal)), 15_000).unref();
    });
  }
  return abort;
}

function signalExitCode(signal: string): number {
  return signal === "SIGTERM" ? 143 : 130;
}

// Both ends of main() exit explicitly, so the event loop running dry means main() never settled (a
// wait nobody will end): that must not pass for a successful push, which Bun's default exit 0 would.
process.on("beforeExit", () => {
  progress?.finish();
  process.stderr.write("error: unexpected failure: the push stopped before it finished (nothing left to wait for)\n");
  process.exit(1);
});

main(process.argv.slice(2)).then(
  (code) => {
    closeCompressWorkers();
    process.exit(code);
  },
  (error: unknown) => {
    progress?.finish();
    const usage = error instanceof UsageError;
    // A stack helps us, not the user; DEBUG=1 shows it.
    const detail = process.env.DEBUG ? (error as Error)?.stack : (error as Error)?.message;
    const message = usage || error instanceof PushError ? (error as Error).message : `unexpected failure: ${detail ?? error}`;
    const code = usage ? 2 : error instanceof Interrupted ? signalExitCode(error.signal) : 1;
    if (json) process.stdout.write(`${jsonFailure(message, code)}\n`);
    if (usage) process.stderr.write(`error: ${message}\n${((error as UsageError).usage ?? USAGE).split("\n")[0]}\nRun with --help for the options.\n`);
    else process.stderr.write(`error: ${message}\n`);
    process.exit(code);
  },
);
