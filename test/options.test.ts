import { describe, expect, test } from "bun:test";
import { UsageError } from "../src/errors.ts";
import { parseOptions, parseSize } from "../src/options.ts";

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

describe("parseOptions", () => {
  test("reads the environment of the user's card", () => {
    const options = parseOptions(["reg.io/app"], { USERNAME_REGISTRY: "me", INSECURE_HTTP_PUSH: "true", CHUNK_SIZE: "50MB" });
    expect(options).toMatchObject({ username: "me", insecure: true, chunkCap: 50_000_000, concurrency: 3, gzipLevel: 6 });
    expect(options?.reference).toEqual({ host: "reg.io", repository: "app", tag: "latest" });
  });

  test("--chunk-size wins over CHUNK_SIZE; https and anonymous by default", () => {
    const options = parseOptions(["--chunk-size", "6MiB", "--archive", "x.tar", "reg.io/app:1"], { CHUNK_SIZE: "1" });
    expect(options).toMatchObject({ chunkCap: 6 * 1024 ** 2, archive: "x.tar", insecure: false, username: undefined });
  });

  test("--help returns null", () => expect(parseOptions(["--help"], {})).toBeNull());

  test.each([
    [[], /no image reference/],
    [["a.io/x", "b.io/y"], /expected one image reference, got 2/],
    [["--bogus", "a.io/x"], /--bogus/],
    [["--concurrency", "0", "a.io/x"], /--concurrency/],
    [["--gzip-level", "10", "a.io/x"], /--gzip-level/],
    [["--chunk-size", "lots", "a.io/x"], /--chunk-size/],
  ])("usage errors: %p", (argv, message) => {
    expect(() => parseOptions(argv, {})).toThrow(UsageError);
    expect(() => parseOptions(argv, {})).toThrow(message);
  });
});
