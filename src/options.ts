import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";
import { parseReference, type Reference } from "./reference.ts";

export interface Options {
  reference: Reference;
  /** Push this archive instead of running `docker save`. */
  archive?: string;
  /** Largest request body to send, when the registry does not advertise one. */
  chunkCap?: number;
  /** Layers prepared and uploaded at once. */
  concurrency: number;
  gzipLevel: number;
  /** Further attempts of a failed request (and of a failed chunk, resumed where the server stands). */
  retries: number;
  /** A request that moves no byte for this long is abandoned and retried. */
  timeoutMs: number;
  insecure: boolean;
  username?: string;
}

export const USAGE = `Usage: echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts [options] <host[:port]/repository[:tag]>

Pushes a Docker image to a registry in chunks the registry accepts (Cloudflare serverless-registry
and any OCI registry). Runs \`docker save\` unless --archive is given.

Options:
  --archive <file.tar>   push this docker save / podman save / OCI layout tar instead of running docker save
  --chunk-size <size>    largest request body to send (bytes, or 95MiB, 100MB, 1GiB); env CHUNK_SIZE
  --concurrency <n>      layers prepared and uploaded at once (default 3)
  --gzip-level <0-9>     gzip level for uncompressed layers (default 6)
  --retries <n>          further attempts of a failed request or chunk (default 5)
  --timeout <seconds>    abandon and retry a request that makes no progress for this long (default 60)
  -h, --help             show this help

Environment:
  USERNAME_REGISTRY      user for Basic auth; the password is read from stdin
  INSECURE_HTTP_PUSH     true: talk plain http (e.g. a registry on localhost)
  CHUNK_SIZE             as --chunk-size

Exit codes: 0 pushed, 1 push failed, 2 usage error.`;

/** Reads the command line and the environment; throws UsageError naming what is wrong. Null means --help. */
export function parseOptions(argv: string[], env: Record<string, string | undefined>): Options | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        archive: { type: "string" },
        "chunk-size": { type: "string" },
        concurrency: { type: "string" },
        "gzip-level": { type: "string" },
        retries: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return null;
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? "no image reference given" : `expected one image reference, got ${positionals.length}`,
    );
  }
  const chunkSize = values["chunk-size"] ?? env.CHUNK_SIZE;
  return {
    reference: parseReference(positionals[0] as string),
    archive: values.archive,
    chunkCap: chunkSize === undefined || chunkSize === "" ? undefined : parseSize(chunkSize, "--chunk-size"),
    concurrency: parseInteger(values.concurrency ?? "3", "--concurrency", 1, 64),
    gzipLevel: parseInteger(values["gzip-level"] ?? "6", "--gzip-level", 0, 9),
    retries: parseInteger(values.retries ?? "5", "--retries", 0, 100),
    timeoutMs: parseInteger(values.timeout ?? "60", "--timeout", 1, 86_400) * 1000,
    insecure: /^(1|true|yes)$/i.test(env.INSECURE_HTTP_PUSH ?? ""),
    username: env.USERNAME_REGISTRY || undefined,
  };
}

const UNITS: Record<string, number> = {
  "": 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3,
};

/** `95MiB`, `100MB`, `1048576`: decimal units are powers of 1000, `i` units powers of 1024. */
export function parseSize(text: string, flag: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = UNITS[match?.[2]?.toLowerCase() ?? "?"];
  const bytes = match && unit ? Math.floor(Number(match[1]) * unit) : NaN;
  if (!(bytes >= 1)) throw new UsageError(`${flag}: "${text}" is not a size (use bytes, or units like 95MiB, 100MB)`);
  return bytes;
}

function parseInteger(text: string, flag: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag}: "${text}" must be a whole number from ${min} to ${max}`);
  }
  return value;
}
