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
    // prune's mistakes carry prune's usage, not the push's.
    for (const argv of [
      ["prune", "--max-age", "7x"],
      ["prune", "--max-size", "foo"],
      ["prune", "extra"],
    ]) {
      const error = (() => {
        try {
          parseCommand(argv, {});
        } catch (caught) {
          return caught;
        }
      })();
      expect(error).toBeInstanceOf(UsageError);
      expect((error as UsageError).usage).toBe(PRUNE_USAGE);
    }
    expect(() => parseCommand(["prune", "--archive", "x"], {})).toThrow(/^prune: Unknown option '--archive'/);
  });
});

describe("parseCommand: every option", () => {
  test("the defaults, every field", () => {
    expect(options(["reg.io/app"])).toStrictEqual({
      reference: { host: "reg.io", repository: "app", tag: "latest" },
      extraTags: [],
      archive: undefined,
      from: undefined,
      fromInsecure: false,
      image: undefined,
      platforms: [],
      format: undefined,
      mountFrom: [],
      rmArchive: false,
      engine: "docker",
      cacheDir: undefined,
      chunkCap: undefined,
      concurrency: 3,
      compression: "gzip",
      compressionLevel: 2,
      retries: 5,
      timeoutMs: 60_000,
      insecure: false,
      username: undefined,
      passwordStdin: false,
      quiet: false,
      json: false,
      dryRun: false,
    });
  });

  test("each flag sets its field", () => {
    const argv = [
      "--archive",
      "/tmp/app.tar",
      "--image",
      "app:1",
      "--format",
      "docker",
      "--rm-archive",
      "--engine",
      "/usr/bin/podman",
      "--cache-dir",
      "/var/cache/cp",
      "--chunk-size",
      "1024",
      "--concurrency",
      "64",
      "--compression-level",
      "9",
      "--retries",
      "0",
      "--timeout",
      "86400",
      "--username",
      "me",
      "--password-stdin",
      "reg.io:5000/team/app:2",
    ];
    expect(options(argv)).toMatchObject({
      reference: { host: "reg.io:5000", repository: "team/app", tag: "2" },
      archive: "/tmp/app.tar",
      image: "app:1",
      format: "docker",
      rmArchive: true,
      engine: "/usr/bin/podman",
      cacheDir: "/var/cache/cp",
      chunkCap: 1024,
      concurrency: 64,
      compressionLevel: 9,
      retries: 0,
      timeoutMs: 86_400_000,
      username: "me",
      passwordStdin: true,
    });
  });

  test("--from reads a source reference; --from-insecure", () => {
    const digest = `sha256:${"ab".repeat(32)}`;
    expect(options(["--from", `src.io/team/app@${digest}`, "--from-insecure", "reg.io/app"])).toMatchObject({
      from: { host: "src.io", repository: "team/app", reference: digest },
      fromInsecure: true,
    });
    expect(options(["--from", "src.io/app", "reg.io/app"]).from).toEqual({ host: "src.io", repository: "app", reference: "latest" });
  });

  test("--platform: repeatable, comma-separated, blanks skipped, each parsed", () => {
    expect(options(["--platform", "linux/amd64, ,linux/arm64", "--platform", "Linux/ARM/v7,", "--platform", " ", "reg.io/app"]).platforms).toStrictEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
      { os: "linux", architecture: "arm", variant: "v7" },
    ]);
    expect(() => options(["--platform", "linux", "reg.io/app"])).toThrow(
      new UsageError('--platform: "linux" is not os/arch[/variant], e.g. linux/arm64 or linux/arm/v7'),
    );
  });

  test("--mount-from: repeatable repositories of the target's registry", () => {
    expect(options(["--mount-from", "team/base", "--mount-from", "other", "reg.io/app"]).mountFrom).toEqual(["team/base", "other"]);
    expect(() => options(["--mount-from", "Bad", "reg.io/app"])).toThrow(
      'invalid repository "Bad" in "reg.io/Bad" (lowercase letters, digits and . _ - separators)',
    );
  });

  test("--format oci|docker, and docker cannot carry zstd", () => {
    expect(options(["--format", "oci", "reg.io/app"]).format).toBe("oci");
    expect(options(["--format", "oci", "--compression", "zstd", "reg.io/app"])).toMatchObject({ format: "oci", compression: "zstd" });
    expect(options(["--format", "docker", "--compression", "gzip", "reg.io/app"])).toMatchObject({ format: "docker", compression: "gzip" });
    expect(() => options(["--format", "docker", "--compression", "zstd", "reg.io/app"])).toThrow(
      new UsageError("--format docker cannot describe zstd layers: use --compression gzip, or the OCI format"),
    );
    expect(() => options(["--format", "v2", "reg.io/app"])).toThrow(new UsageError('--format: "v2" must be one of oci, docker'));
  });

  test("--archive and --from together name two sources", () => {
    expect(() => options(["--archive", "a.tar", "--from", "src.io/app", "reg.io/app"])).toThrow(
      new UsageError("--archive and --from name two sources: give one"),
    );
  });

  test("INSECURE_HTTP_PUSH: 1, true or yes in any case; anything else is secure", () => {
    for (const value of ["1", "true", "TRUE", "yes", "Yes"]) expect(options(["reg.io/app"], { INSECURE_HTTP_PUSH: value }).insecure).toBe(true);
    for (const value of ["", "0", "false", "no", "truex", "xtrue", "11", "yes please"]) {
      expect(options(["reg.io/app"], { INSECURE_HTTP_PUSH: value }).insecure).toBe(false);
    }
  });

  test("empty environment values count as unset", () => {
    expect(options(["reg.io/app"], { DOCKER_BIN: "", USERNAME_REGISTRY: "", CHUNK_SIZE: "" })).toMatchObject({
      engine: "docker",
      username: undefined,
      chunkCap: undefined,
    });
  });

  test("--chunk-size: 1 KiB is the smallest", () => {
    expect(options(["--chunk-size", "1024", "reg.io/app"]).chunkCap).toBe(1024);
    expect(options(["--chunk-size", "1KiB", "reg.io/app"]).chunkCap).toBe(1024);
    expect(() => options(["--chunk-size", "1023", "reg.io/app"])).toThrow(new UsageError('--chunk-size: "1023" is below the smallest sensible chunk, 1 KiB'));
  });

  test.each([
    [["--concurrency", "1"], { concurrency: 1 }],
    [["--retries", "100"], { retries: 100 }],
    [["--timeout", "1"], { timeoutMs: 1000 }],
    [["--compression-level", "1"], { compressionLevel: 1 }],
    [["--compression", "zstd", "--compression-level", "1"], { compressionLevel: 1 }],
  ])("the bounds of the whole-number flags are allowed: %p", (argv, expected) => {
    expect(options([...argv, "reg.io/app"])).toMatchObject(expected);
  });

  test.each([
    [["--concurrency", "65"], '--concurrency: "65" must be a whole number from 1 to 64'],
    [["--concurrency", "2.5"], '--concurrency: "2.5" must be a whole number from 1 to 64'],
    [["--concurrency", "many"], '--concurrency: "many" must be a whole number from 1 to 64'],
    [["--retries", "101"], '--retries: "101" must be a whole number from 0 to 100'],
    [["--timeout", "86401"], '--timeout: "86401" must be a whole number from 1 to 86400'],
    [["--compression-level", "0"], '--compression-level: "0" must be a whole number from 1 to 9'],
    [["--compression", "zstd", "--compression-level", "20"], '--compression-level: "20" must be a whole number from 1 to 19'],
    [["--compression", "zstd", "--compression-level", "0"], '--compression-level: "0" must be a whole number from 1 to 19'],
  ])("out of bounds: %p", (argv, message) => {
    expect(() => options([...argv, "reg.io/app"])).toThrow(new UsageError(message));
  });
});

describe("parseSize: the grammar", () => {
  test.each([
    [" 10 MB ", 10_000_000],
    ["1.25MiB", 1_310_720],
    ["2b", 2],
    ["3K", 3000],
    ["3kb", 3000],
    ["1g", 1e9],
    ["1GB", 1e9],
    ["2KiB", 2048],
    ["1.5", 1],
  ])("%p is %d bytes", (text, bytes) => {
    expect(parseSize(text, "--max-size")).toBe(bytes);
  });

  test.each(["10MB!", "x10MB", "10 M B", "1.MB", ".5MB", "0.5", "1e3"])("%p is refused with the flag's words", (text) => {
    expect(() => parseSize(text, "--max-size")).toThrow(new UsageError(`--max-size: "${text}" is not a size (use bytes, or units like 95MiB, 100MB)`));
  });
});

describe("prune: ages", () => {
  test.each([
    ["45s", 45_000],
    ["90m", 5_400_000],
    ["12H", 43_200_000],
    ["2d", 172_800_000],
    [" 3 d ", 259_200_000],
    ["0s", 0],
  ])("--max-age %p is %d ms", (age, ms) => {
    expect(parseCommand(["prune", "--max-age", age], {})).toMatchObject({ kind: "prune", options: { maxAgeMs: ms } });
  });

  test.each(["x5d", "5dx", "5", "d", "5w", "1.5d"])("--max-age %p is refused", (age) => {
    expect(() => parseCommand(["prune", "--max-age", age], {})).toThrow(new UsageError(`--max-age: "${age}" is not an age (e.g. 30d, 12h, 90m)`));
  });

  test("prune takes no positional argument", () => {
    expect(() => parseCommand(["prune", "extra"], {})).toThrow(/^prune: Unexpected argument 'extra'/);
  });
});

describe("help texts", () => {
  const FLAGS = [
    "username",
    "password-stdin",
    "insecure",
    "tag",
    "archive",
    "from",
    "from-insecure",
    "image",
    "engine",
    "platform",
    "rm-archive",
    "cache-dir",
    "compression",
    "compression-level",
    "format",
    "chunk-size",
    "concurrency",
    "mount-from",
    "retries",
    "timeout",
    "dry-run",
    "quiet",
    "json",
    "help",
    "version",
  ];

  test("the usage names the command, every flag the parser takes, and the exit codes", () => {
    const { text } = parseCommand(["-h"], {}) as { text: string };
    expect(text).toStartWith('Usage: echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts [options] <host[:port]/repository[:tag]>\n');
    for (const flag of FLAGS) expect(text).toContain(`--${flag}`);
    expect(text).toEndWith("Exit codes: 0 pushed, 1 push failed, 2 usage error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.");
  });

  test("prune's usage names its flags and defaults", () => {
    const { text } = parseCommand(["prune", "-h"], {}) as { text: string };
    expect(text).toStartWith("Usage: bun run index.ts prune [--cache-dir <dir>] [--max-age <age>] [--max-size <size>] [--dry-run]\n");
    expect(text).toContain("default 30d");
  });
});
