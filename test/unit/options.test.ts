import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { parseCommand, parseSize, PRUNE_USAGE, USAGE, type Options } from "../../src/cli/options.ts";

function options(argv: string[], env: Record<string, string> = {}): Options {
  const command = parseCommand(argv, env);
  if (command.kind !== "push") throw new Error(`expected a push, got ${command.kind}`);
  return command.options;
}

describe("parseSize", () => {
  test.each([
    ["1048576", 1048576],
    ["95MiB", 95 * 1024 ** 2],
    ["100MB", 100_000_000],
    ["100mb", 100_000_000],
    ["1GiB", 1024 ** 3],
    ["1.5MiB", 1.5 * 1024 ** 2],
    ["512k", 512_000],
  ])("%s", (text, bytes) => expect(parseSize(text, "--chunk-size")).toBe(bytes));

  test.each(["", "abc", "10XB", "-5", "0", "MiB"])("rejects %p naming the flag", (text) => {
    expect(() => parseSize(text, "--chunk-size")).toThrow(UsageError);
    expect(() => parseSize(text, "--chunk-size")).toThrow(/--chunk-size/);
  });
});

describe("parseCommand", () => {
  test("reads the environment of the user's card", () => {
    const o = options(["reg.io/app"], { USERNAME_REGISTRY: "me", INSECURE_HTTP_PUSH: "true", CHUNK_SIZE: "50MB", DOCKER_BIN: "/opt/podman" });
    expect(o).toMatchObject({ username: "me", insecure: true, chunkCap: 50_000_000, engine: "/opt/podman", concurrency: 3 });
    expect(o).toMatchObject({ compression: "gzip", compressionLevel: 2, retries: 5, timeoutMs: 60_000, quiet: false, json: false, dryRun: false });
    expect(o.reference).toEqual({ host: "reg.io", repository: "app", tag: "latest" });
  });

  test("every environment variable has a flag, and flags win", () => {
    const env = { USERNAME_REGISTRY: "env-user", CHUNK_SIZE: "1", DOCKER_BIN: "docker" };
    const o = options(["--username", "flag-user", "--insecure", "--chunk-size", "6MiB", "--engine", "podman", "reg.io/app:1"], env);
    expect(o).toMatchObject({ username: "flag-user", insecure: true, chunkCap: 6 * 1024 ** 2, engine: "podman" });
  });

  test("short flags, repeatable --tag (deduplicated, main tag dropped), output modes", () => {
    const o = options(["-u", "me", "-t", "2", "--tag", "latest", "-t", "2", "-t", "1", "-q", "--json", "--dry-run", "reg.io/app:1"]);
    expect(o).toMatchObject({ username: "me", extraTags: ["2", "latest"], quiet: true, json: true, dryRun: true });
  });

  test("zstd defaults to level 3 and allows up to 19; gzip stops at 9", () => {
    expect(options(["--compression", "zstd", "reg.io/app"])).toMatchObject({ compression: "zstd", compressionLevel: 3 });
    expect(options(["--compression", "zstd", "--compression-level", "19", "reg.io/app"]).compressionLevel).toBe(19);
    expect(() => options(["--compression-level", "19", "reg.io/app"])).toThrow(/--compression-level: "19" must be a whole number from 1 to 9/);
  });

  test("--help and --version", () => {
    expect(parseCommand(["--help"], {})).toEqual({ kind: "help", text: USAGE });
    expect(parseCommand(["prune", "--help"], {})).toEqual({ kind: "help", text: PRUNE_USAGE });
    expect(parseCommand(["-v"], {})).toEqual({ kind: "version" });
  });

  test.each([
    [[], /no image reference/],
    [["a.io/x", "b.io/y"], /expected one image reference, got 2/],
    [["--bogus", "a.io/x"], /--bogus/],
    [["--concurrency", "0", "a.io/x"], /--concurrency/],
    [["--compression", "brotli", "a.io/x"], /--compression: "brotli" must be one of gzip, zstd/],
    [["--chunk-size", "lots", "a.io/x"], /--chunk-size/],
    [["--chunk-size", "1", "a.io/x"], /--chunk-size: "1" is below the smallest sensible chunk, 1 KiB/],
    [["--retries", "-1", "a.io/x"], /--retries/],
    [["--timeout", "0", "a.io/x"], /--timeout/],
    [["--tag", "bad/tag", "a.io/x"], /invalid tag/],
    [["--password-stdin", "a.io/x"], /--password-stdin needs a user/],
    [["--archive"], /--archive/],
  ])("usage errors: %p", (argv, message) => {
    expect(() => parseCommand(argv, {})).toThrow(UsageError);
    expect(() => parseCommand(argv, {})).toThrow(message);
  });
});

describe("prune", () => {
  test("defaults to blobs unused for 30 days, no size bound", () => {
    expect(parseCommand(["prune"], {})).toEqual({
      kind: "prune",
      options: { cacheDir: undefined, maxAgeMs: 30 * 86_400_000, maxBytes: undefined, dryRun: false },
    });
  });

  test("--max-age, --max-size, --cache-dir and --dry-run", () => {
    expect(parseCommand(["prune", "--max-age", "12h", "--max-size", "1GB", "--cache-dir", "/c", "--dry-run"], {})).toEqual({
      kind: "prune",
      options: { cacheDir: "/c", maxAgeMs: 12 * 3_600_000, maxBytes: 1e9, dryRun: true },
    });
  });

  test("an unreadable age or size, or a push flag, is a usage error naming it", () => {
    expect(() => parseCommand(["prune", "--max-age", "soon"], {})).toThrow('--max-age: "soon" is not an age (e.g. 30d, 12h, 90m)');
    expect(() => parseCommand(["prune", "--max-size", "big"], {})).toThrow('--max-size: "big" is not a size');
    expect(() => parseCommand(["prune", "--archive", "x"], {})).toThrow(/^prune: Unknown option '--archive'/);
  });
});
