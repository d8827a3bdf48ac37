import { describe, expect, test } from "bun:test";
import type { Platform } from "../../src/model/descriptor.ts";
import { formatPlatform, parsePlatformText, platformMatches, samePlatform } from "../../src/model/platform.ts";

const p = (os: string, architecture: string, variant?: string): Platform => (variant === undefined ? { os, architecture } : { os, architecture, variant });

describe("formatPlatform", () => {
  test("os/arch[/variant], and a name for no platform at all", () => {
    expect(formatPlatform(p("linux", "arm", "v7"))).toBe("linux/arm/v7");
    expect(formatPlatform(p("linux", "amd64"))).toBe("linux/amd64");
    // An empty variant (as some configs write it) adds no trailing slash.
    expect(formatPlatform(p("linux", "amd64", ""))).toBe("linux/amd64");
    expect(formatPlatform(undefined)).toBe("unknown platform");
  });
});

describe("parsePlatformText", () => {
  test("os/arch and os/arch/variant, lowercased and trimmed; no variant key when none is given", () => {
    expect(parsePlatformText("linux/arm64")).toStrictEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatformText(" Linux/ARM/V7 ")).toStrictEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(parsePlatformText("windows/x86_64")).toStrictEqual({ os: "windows", architecture: "x86_64" });
    expect(parsePlatformText("linux/ppc64le/a.b-c")).toStrictEqual({ os: "linux", architecture: "ppc64le", variant: "a.b-c" });
  });

  test.each(["linux", "", "linux/arm/v7/extra", "linux/", "/amd64", "linux//v7", "linux/amd 64", "linux/amd64!", "lin ux/amd64", "linux/arm64/v8 beta"])(
    "%p is not a platform",
    (text) => {
      expect(parsePlatformText(text)).toBeUndefined();
    },
  );
});

describe("platformMatches", () => {
  test("no candidate platform never matches", () => {
    expect(platformMatches(p("linux", "amd64"), undefined)).toBe(false);
  });

  test("os and architecture must both match", () => {
    expect(platformMatches(p("linux", "amd64"), p("linux", "amd64"))).toBe(true);
    expect(platformMatches(p("linux", "amd64"), p("linux", "arm64"))).toBe(false);
    expect(platformMatches(p("windows", "amd64"), p("linux", "amd64"))).toBe(false);
    expect(platformMatches(p("Linux", "AMD64"), p("linux", "amd64"))).toBe(true);
  });

  test("a request without a variant takes every variant of the architecture", () => {
    expect(platformMatches(p("linux", "arm"), p("linux", "arm", "v6"))).toBe(true);
    expect(platformMatches(p("linux", "arm"), p("linux", "arm", "v7"))).toBe(true);
    expect(platformMatches(p("linux", "arm"), p("linux", "arm"))).toBe(true);
  });

  test("a request with a variant needs that variant, defaults filled in (arm64 is v8, arm is v7)", () => {
    expect(platformMatches(p("linux", "arm", "v7"), p("linux", "arm", "v6"))).toBe(false);
    expect(platformMatches(p("linux", "arm", "v7"), p("linux", "arm", "V7"))).toBe(true);
    expect(platformMatches(p("linux", "arm", "v7"), p("linux", "arm"))).toBe(true);
    expect(platformMatches(p("linux", "arm", "V7"), p("linux", "arm"))).toBe(true);
    expect(platformMatches(p("linux", "arm64", "v8"), p("linux", "arm64"))).toBe(true);
    expect(platformMatches(p("linux", "arm64", "v9"), p("linux", "arm64"))).toBe(false);
    expect(platformMatches(p("linux", "amd64", "v2"), p("linux", "amd64"))).toBe(false);
    expect(platformMatches(p("linux", "amd64", "v2"), p("linux", "amd64", "v2"))).toBe(true);
  });

  test.each([
    ["x86_64", "amd64"],
    ["x86-64", "amd64"],
    ["X86_64", "amd64"],
    ["aarch64", "arm64"],
    ["armhf", "arm"],
    ["armel", "arm"],
    ["i386", "386"],
  ])("the engines' name %s is %s", (alias, architecture) => {
    expect(platformMatches(p("linux", architecture), p("linux", alias))).toBe(true);
    expect(platformMatches(p("linux", alias), p("linux", architecture))).toBe(true);
    expect(platformMatches(p("linux", "riscv64"), p("linux", alias))).toBe(false);
  });

  test("an alias gets its architecture's default variant", () => {
    expect(platformMatches(p("linux", "arm64", "v8"), p("linux", "aarch64"))).toBe(true);
    expect(platformMatches(p("linux", "arm", "v7"), p("linux", "armhf"))).toBe(true);
  });
});

describe("samePlatform", () => {
  test("both absent is the same; one absent is not", () => {
    expect(samePlatform(undefined, undefined)).toBe(true);
    expect(samePlatform(p("linux", "amd64"), undefined)).toBe(false);
    expect(samePlatform(undefined, p("linux", "amd64"))).toBe(false);
  });

  test("the same after normalisation: aliases, case, default variants", () => {
    expect(samePlatform(p("linux", "arm64"), p("Linux", "aarch64", "V8"))).toBe(true);
    expect(samePlatform(p("linux", "arm", "v7"), p("linux", "armhf"))).toBe(true);
    expect(samePlatform(p("linux", "amd64"), p("linux", "amd64"))).toBe(true);
  });

  test("os, architecture and variant each tell platforms apart", () => {
    expect(samePlatform(p("linux", "amd64"), p("windows", "amd64"))).toBe(false);
    expect(samePlatform(p("linux", "amd64"), p("linux", "arm64"))).toBe(false);
    expect(samePlatform(p("linux", "amd64"), p("linux", "riscv64"))).toBe(false);
    expect(samePlatform(p("linux", "arm", "v6"), p("linux", "arm", "v7"))).toBe(false);
    // Unlike platformMatches, no variant is not a wildcard here: linux/arm is linux/arm/v7 only.
    expect(samePlatform(p("linux", "arm"), p("linux", "arm", "v6"))).toBe(false);
  });
});
