import { parseArgs } from "node:util";
import { UsageError } from "../errors.ts";
import type { Platform } from "../model/descriptor.ts";
import type { ManifestFormat } from "../model/media-types.ts";
import { parsePlatformText } from "../model/platform.ts";
import { parseReference, parseSourceReference, type Reference, type SourceReference } from "../model/reference.ts";

export type Compression = "gzip" | "zstd";

export interface Options {
  reference: Reference;
  /** More tags that get the same manifest. */
  extraTags: string[];
  /** Push this archive (tar, .tar.gz, .tar.zst) or OCI layout directory instead of running `docker save`. */
  archive?: string;
  /** Copy from another registry instead. */
  from?: SourceReference;
  /** Plain http for --from's registry. */
  fromInsecure: boolean;
  /** Which image of a multi-image archive. */
  image?: string;
  /** The platforms to push (all when empty). */
  platforms: Platform[];
  /** The manifest format to write when a manifest must be written (default: the source's, else OCI). */
  format?: ManifestFormat;
  /** Repositories of the same registry to mount blobs from. */
  mountFrom: string[];
  /** Remove the saved `<id>.tar` after a successful push. */
  rmArchive: boolean;
  /** The program that saves images: `docker`, `podman`, or a path. */
  engine: string;
  cacheDir?: string;
  /** Largest request body to send, when the registry does not advertise one. */
  chunkCap?: number;
  /** Layers prepared and uploaded at once. */
  concurrency: number;
  compression: Compression;
  compressionLevel: number;
  /** Further attempts of a failed request (and of a failed chunk, resumed where the server stands). */
  retries: number;
  /** A request that moves no byte for this long is abandoned and retried. */
  timeoutMs: number;
  insecure: boolean;
  username?: string;
  /** Read the password from stdin even on a terminal (like `docker login --password-stdin`). */
  passwordStdin: boolean;
  quiet: boolean;
  json: boolean;
  dryRun: boolean;
}

export interface PruneCommandOptions {
  cacheDir?: string;
  maxAgeMs?: number;
  maxBytes?: number;
  dryRun: boolean;
}

export type ParsedCommand =
  | { kind: "push"; options: Options }
  | { kind: "prune"; options: PruneCommandOptions }
  | { kind: "help"; text: string }
  | { kind: "version" };

export const PRUNE_USAGE = `Usage: bun run index.ts prune [--cache-dir <dir>] [--max-age <age>] [--max-size <size>] [--dry-run]

Bounds the cache folder (default ./.cache): removes compressed layers no push used for --max-age
(default 30d; units s, m, h, d), then the least recently used ones until it holds at most --max-size
(bytes, or 10GB, 500MiB). What the latest pushes used goes last. --dry-run only reports.`;

/** Reads \`prune\`'s flags. */
function parsePrune(argv: string[]): ParsedCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: false,
      strict: true,
      options: {
        "cache-dir": { type: "string" },
        "max-age": { type: "string" },
        "max-size": { type: "string" },
        "dry-run": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new UsageError(`prune: ${(error as Error).message}`, PRUNE_USAGE);
  }
  const { values } = parsed;
  if (values.help) return { kind: "help", text: PRUNE_USAGE };
  try {
    return {
      kind: "prune",
      options: {
        cacheDir: values["cache-dir"],
        maxAgeMs: parseAge(values["max-age"] ?? "30d"),
        maxBytes: values["max-size"] === undefined ? undefined : parseSize(values["max-size"], "--max-size"),
        dryRun: values["dry-run"] ?? false,
      },
    };
  } catch (error) {
    throw error instanceof UsageError ? new UsageError(error.message, PRUNE_USAGE) : error;
  }
}

const AGE_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function parseAge(text: string): number {
  const match = /^\s*(\d+)\s*([smhd])\s*$/i.exec(text);
  if (!match) throw new UsageError(`--max-age: "${text}" is not an age (e.g. 30d, 12h, 90m)`);
  return Number(match[1]) * (AGE_UNITS[(match[2] as string).toLowerCase()] as number);
}

export const USAGE = `Usage: echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts [options] <host[:port]/repository[:tag]>

Pushes an image to a registry in chunks the registry accepts (Cloudflare serverless-registry and any
OCI registry), every platform it holds, unchanged where it can. The image comes from the local engine
(\`docker save\`, or \`podman save\` with --engine podman), an archive, or another registry.

Registry and credentials:
  -u, --username <user>       user for the registry (env USERNAME_REGISTRY); password from stdin,
                              a prompt on a terminal, or ~/.docker/config.json when no user is given
      --password-stdin        read the password from stdin even on a terminal
      --insecure              plain http, e.g. a registry on localhost (env INSECURE_HTTP_PUSH=true)
  -t, --tag <tag>             also tag the pushed manifest with <tag> (repeatable)

Image source (default: the local engine's image named like the target):
      --archive <path>        a docker save / podman save / OCI layout tar, the same gzip- or
                              zstd-compressed (.tar.gz, .tar.zst), or an OCI layout directory
      --from <host/repo[:tag|@digest]>
                              copy from another registry (its credentials from the Docker config)
      --from-insecure         plain http for --from's registry (a loopback one follows --insecure)
      --image <name>          which image of a multi-image archive (a RepoTag or ref.name)
      --engine <docker|podman|path>
                              what runs \`save\` when no --archive is given (env DOCKER_BIN; default docker)
      --platform <os/arch[/variant]>
                              push only these platforms of a multi-platform image (repeatable)
      --rm-archive            remove the saved <image id>.tar after a successful push

Layers and manifests:
      --cache-dir <dir>       where compressed layers are kept (default ./.cache)
      --compression <gzip|zstd>   for uncompressed layers (default gzip); zstd layers need
                              Docker 23+, containerd 1.5+ or podman to pull
      --compression-level <n>     gzip 1-9 (default 2), zstd 1-19 (default 3)
      --format <oci|docker>   manifest format when one is written (default: the source's, else oci)

Upload:
      --chunk-size <size>     largest request body (bytes, or 95MiB, 100MB, 1GiB; env CHUNK_SIZE)
      --concurrency <n>       blobs uploaded at once (default 3)
      --mount-from <repo>     mount blobs from this repository of the same registry (repeatable)
      --retries <n>           further attempts of a failed request or chunk (default 5)
      --timeout <seconds>     retry a request that makes no progress for this long (default 60)
      --dry-run               show what would be uploaded and how; send nothing but HEADs and one
                              opened-and-cancelled upload session

Output:
  -q, --quiet                 print only errors and the result line
      --json                  print one JSON object with the result (or the error) on stdout
  -h, --help                  show this help
  -v, --version               show the version

Exit codes: 0 pushed, 1 push failed, 2 usage error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.`;

// Measured in bench/ on 2 cores: gzip 2 pushes 4% more bytes than skopeo in 0.78x its time; zlib's
// default 6 is 3% smaller but 1.2x slower. zstd 3 is both smaller and faster.
const DEFAULT_LEVEL: Record<Compression, number> = { gzip: 2, zstd: 3 };
const LEVEL_RANGE: Record<Compression, [number, number]> = { gzip: [1, 9], zstd: [1, 19] };

/** Reads the command line and the environment; throws UsageError naming what is wrong. */
export function parseCommand(argv: string[], env: Record<string, string | undefined>): ParsedCommand {
  if (argv[0] === "prune") return parsePrune(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        username: { type: "string", short: "u" },
        "password-stdin": { type: "boolean" },
        insecure: { type: "boolean" },
        tag: { type: "string", short: "t", multiple: true },
        archive: { type: "string" },
        from: { type: "string" },
        "from-insecure": { type: "boolean" },
        image: { type: "string" },
        platform: { type: "string", multiple: true },
        format: { type: "string" },
        "mount-from": { type: "string", multiple: true },
        "rm-archive": { type: "boolean" },
        engine: { type: "string" },
        "cache-dir": { type: "string" },
        compression: { type: "string" },
        "compression-level": { type: "string" },
        "chunk-size": { type: "string" },
        concurrency: { type: "string" },
        retries: { type: "string" },
        timeout: { type: "string" },
        "dry-run": { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help", text: USAGE };
  if (values.version) return { kind: "version" };
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? "no image reference given" : `expected one image reference, got ${positionals.length}`);
  }
  const reference = parseReference(positionals[0] as string);
  const extraTags = (values.tag ?? []).map((tag) => parseReference(`${reference.host}/${reference.repository}:${tag}`).tag);
  const compression = oneOf(values.compression ?? "gzip", "--compression", ["gzip", "zstd"] as const);
  const [minLevel, maxLevel] = LEVEL_RANGE[compression];
  const chunkSize = values["chunk-size"] ?? env.CHUNK_SIZE;
  const options: Options = {
    reference,
    extraTags: extraTags.filter((tag, i) => tag !== reference.tag && extraTags.indexOf(tag) === i),
    archive: values.archive,
    from: values.from === undefined ? undefined : parseSourceReference(values.from),
    fromInsecure: values["from-insecure"] ?? false,
    image: values.image,
    platforms: (values.platform ?? [])
      .flatMap((p) => p.split(","))
      .filter((p) => p.trim() !== "")
      .map(parsePlatformFlag),
    format: values.format === undefined ? undefined : oneOf(values.format, "--format", ["oci", "docker"] as const),
    mountFrom: (values["mount-from"] ?? []).map((repo) => parseReference(`${reference.host}/${repo}`).repository),
    rmArchive: values["rm-archive"] ?? false,
    engine: values.engine ?? (env.DOCKER_BIN || "docker"),
    cacheDir: values["cache-dir"],
    chunkCap: chunkSize === undefined || chunkSize === "" ? undefined : parseChunkSize(chunkSize),
    concurrency: parseInteger(values.concurrency ?? "3", "--concurrency", 1, 64),
    compression,
    compressionLevel: parseInteger(values["compression-level"] ?? String(DEFAULT_LEVEL[compression]), "--compression-level", minLevel, maxLevel),
    retries: parseInteger(values.retries ?? "5", "--retries", 0, 100),
    timeoutMs: parseInteger(values.timeout ?? "60", "--timeout", 1, 86_400) * 1000,
    insecure: values.insecure ?? /^(1|true|yes)$/i.test(env.INSECURE_HTTP_PUSH ?? ""),
    username: values.username ?? (env.USERNAME_REGISTRY || undefined),
    passwordStdin: values["password-stdin"] ?? false,
    quiet: values.quiet ?? false,
    json: values.json ?? false,
    dryRun: values["dry-run"] ?? false,
  };
  if (options.archive !== undefined && options.from !== undefined) throw new UsageError("--archive and --from name two sources: give one");
  if (options.format === "docker" && options.compression === "zstd") {
    throw new UsageError("--format docker cannot describe zstd layers: use --compression gzip, or the OCI format");
  }
  if (options.passwordStdin && !options.username) {
    throw new UsageError("--password-stdin needs a user: --username <user> or USERNAME_REGISTRY");
  }
  return { kind: "push", options };
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/** `95MiB`, `100MB`, `1048576`: decimal units are powers of 1000, `i` units powers of 1024. */
export function parseSize(text: string, flag: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = UNITS[match?.[2]?.toLowerCase() ?? "?"];
  const bytes = match && unit ? Math.floor(Number(match[1]) * unit) : NaN;
  if (!(bytes >= 1)) throw new UsageError(`${flag}: "${text}" is not a size (use bytes, or units like 95MiB, 100MB)`);
  return bytes;
}

// Smaller chunks only multiply requests; every registry's own minimum is far above this.
const MIN_CHUNK = 1024;

function parseChunkSize(text: string): number {
  const bytes = parseSize(text, "--chunk-size");
  if (bytes < MIN_CHUNK) throw new UsageError(`--chunk-size: "${text}" is below the smallest sensible chunk, 1 KiB`);
  return bytes;
}

function parsePlatformFlag(text: string): Platform {
  const platform = parsePlatformText(text);
  if (!platform) throw new UsageError(`--platform: "${text}" is not os/arch[/variant], e.g. linux/arm64 or linux/arm/v7`);
  return platform;
}

function parseInteger(text: string, flag: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag}: "${text}" must be a whole number from ${min} to ${max}`);
  }
  return value;
}

function oneOf<T extends string>(text: string, flag: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) throw new UsageError(`${flag}: "${text}" must be one of ${allowed.join(", ")}`);
  return text as T;
}
