import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { formatReference, parseReference, parseSourceReference } from "../../src/model/reference.ts";

describe("parseReference", () => {
  test.each([
    ["registry.example.com/team/app:1.2", "registry.example.com", "team/app", "1.2"],
    ["registry.example.com/app", "registry.example.com", "app", "latest"],
    ["localhost/app:dev", "localhost", "app", "dev"],
    ["127.0.0.1:5000/a/b/c/d:v1_2-3", "127.0.0.1:5000", "a/b/c/d", "v1_2-3"],
    ["reg:8443/team/my.app__x-y", "reg:8443", "team/my.app__x-y", "latest"],
  ])("%s", (input, host, repository, tag) => {
    expect(parseReference(input)).toEqual({ host, repository, tag });
    expect(formatReference(parseReference(input))).toBe(tag === "latest" && !input.endsWith(":latest") ? `${input}:latest` : input);
  });

  test.each([
    ["ubuntu:22.04", /names no registry host/],
    ["library/ubuntu", /names no registry host/],
    ["app", /names no registry host/],
    [`reg.io/app@sha256:${"a".repeat(64)}`, /digest reference/],
    ["reg.io/App", /invalid repository "App"/],
    ["reg.io/", /invalid repository ""/],
    ["reg.io/team//app", /invalid repository/],
    ["reg.io/app:", /invalid tag ""/],
    ["reg.io/app:bad/tag", /invalid repository|invalid tag/],
    [`reg.io/app:${"t".repeat(129)}`, /invalid tag/],
    ["reg.io:99999/app", /invalid registry host "reg.io:99999"/],
    ["host:notaport/app", /invalid registry host "host:notaport"/],
    ["reg io.com/app", /invalid registry host/],
  ])("rejects %s", (input, message) => {
    expect(() => parseReference(input)).toThrow(UsageError);
    expect(() => parseReference(input)).toThrow(message);
    expect(() => parseReference(input)).toThrow(/expected <host\[:port\]>\/<repository>\[:<tag>\]/);
  });

  const EXPECTED = "expected <host[:port]>/<repository>[:<tag>], e.g. registry.example.com/team/app:1.2";
  const CREDENTIALS = `a reference cannot carry credentials: set USERNAME_REGISTRY and pipe the password on stdin; ${EXPECTED}`;

  function messageOf(input: string): string {
    try {
      parseReference(input);
    } catch (error) {
      expect(error).toBeInstanceOf(UsageError);
      return (error as Error).message;
    }
    throw new Error(`${input} was accepted`);
  }

  test.each([
    "me:hunter2@reg.io/app",
    "https://me:hunter2@reg.io/app:1",
    "http://me:hunter2@reg.io:5000/team/app",
    "me:hunter2@reg.io",
    "hunter2@reg.io/app",
    "oci://me:hunter2@reg.io/app",
  ])("credentials in %s are refused without echoing any of it", (input) => {
    expect(messageOf(input)).toBe(CREDENTIALS);
  });

  test("a scheme is refused, and only the scheme is named", () => {
    expect(messageOf("https://reg.io/app:1")).toBe(
      `a reference has no scheme: drop "https://" (plain http is INSECURE_HTTP_PUSH=true or --insecure); ${EXPECTED}`,
    );
  });

  test("a digest reference names only what precedes the @", () => {
    expect(messageOf(`reg.io/app@sha256:${"a".repeat(64)}`)).toBe(`cannot push to a digest reference "reg.io/app@...": ${EXPECTED}`);
    expect(messageOf("reg.io/app@me:hunter2")).not.toContain("hunter2");
  });
});

describe("parseReference: the distribution grammar", () => {
  const EXPECTED = "expected <host[:port]>/<repository>[:<tag>], e.g. registry.example.com/team/app:1.2";
  const refusal = (input: string): string => {
    try {
      parseReference(input);
    } catch (error) {
      expect(error).toBeInstanceOf(UsageError);
      return (error as Error).message;
    }
    throw new Error(`${input} was accepted`);
  };

  test.each(["a", "app", "a1", "a.b", "a_b", "a__b", "a-b", "a--b", "a---b", "a.b-c__d_e", "0", "team/a-b/c.d"])("repository %p is valid", (repository) => {
    expect(parseReference(`reg.io/${repository}`).repository).toBe(repository);
  });

  test.each(["app-", "app.", "app_", "-app", ".app", "_app", "a..b", "a___b", "a._b", "a-.b", "a/b-", "a+b", "a b", "app/"])(
    "repository %p is refused",
    (repository) => {
      expect(refusal(`reg.io/${repository}`)).toBe(
        `invalid repository "${repository}" in "reg.io/${repository}" (lowercase letters, digits and . _ - separators): ${EXPECTED}`,
      );
    },
  );

  test.each(["1", "A", "_x", "v1.2.3-rc_1", "t".repeat(128), `_${"-".repeat(127)}`])("tag %p is valid", (tag) => {
    expect(parseReference(`reg.io/app:${tag}`).tag).toBe(tag);
  });

  test.each([".x", "-x", "a+b", `${"t".repeat(129)}`, "a b"])("tag %p is refused", (tag) => {
    expect(refusal(`reg.io/app:${tag}`)).toBe(`invalid tag "${tag}" in "reg.io/app:${tag}": ${EXPECTED}`);
  });

  test("the tag is after the last colon, so a host's port is never a tag", () => {
    expect(parseReference("reg.io:5000/team/app")).toEqual({ host: "reg.io:5000", repository: "team/app", tag: "latest" });
    expect(parseReference("reg.io:5000/team/app:5001")).toEqual({ host: "reg.io:5000", repository: "team/app", tag: "5001" });
  });

  test.each([
    "reg.io",
    "REG.IO",
    "a.b",
    "a-b.c--d.e",
    "0.0",
    "reg.io:1",
    "reg.io:443",
    "reg.io:65535",
    "localhost",
    "localhost:5000",
    "127.0.0.1:5000",
    "[::1]",
    "[::1]:5000",
    "[fe80::a:B]:8443",
  ])("host %p is valid", (host) => {
    expect(parseReference(`${host}/app`).host).toBe(host);
  });

  test.each([
    "reg.io:0",
    "reg.io:65536",
    "reg.io:",
    "reg.io:5000:5001",
    "reg.io:50x",
    "reg.io?x",
    "reg.io#x",
    "reg.io\\evil",
    "reg.io:5000?x",
    "reg%2eio.x",
    "my_reg.local",
    "bücher.de",
    "-reg.io",
    "reg-.io",
    "reg..io",
    ".reg.io",
    "reg.io.",
    "[::1",
    "[]:5000",
    "[::g]",
    "[::1]x:5000",
  ])("host %p is refused", (host) => {
    expect(refusal(`${host}/app`)).toBe(`invalid registry host "${host}" in "${host}/app": ${EXPECTED}`);
  });

  test("something after a scheme-like part of the path is no scheme", () => {
    expect(refusal("reg.io/app:x://y")).toBe(`invalid tag "//y" in "reg.io/app:x://y": ${EXPECTED}`);
  });

  test("a host alone is no reference", () => {
    expect(refusal("reg.io")).toBe(`"reg.io" names no registry host: ${EXPECTED}`);
    expect(refusal("localhost")).toBe(`"localhost" names no registry host: ${EXPECTED}`);
  });
});

describe("parseSourceReference (--from)", () => {
  const digest = `sha256:${"0123456789abcdef".repeat(4)}`;
  const EXPECTED = "expected <host[:port]>/<repository>[:<tag>], e.g. registry.example.com/team/app:1.2";
  const refusal = (input: string): string => {
    try {
      parseSourceReference(input);
    } catch (error) {
      expect(error).toBeInstanceOf(UsageError);
      return (error as Error).message;
    }
    throw new Error(`${input} was accepted`);
  };

  test("a tag, or latest", () => {
    expect(parseSourceReference("reg.io:5000/team/app:1.2")).toEqual({ host: "reg.io:5000", repository: "team/app", reference: "1.2" });
    expect(parseSourceReference("reg.io/app")).toEqual({ host: "reg.io", repository: "app", reference: "latest" });
  });

  test("a digest (a tag before it is dropped: the digest names the manifest)", () => {
    expect(parseSourceReference(`reg.io/team/app@${digest}`)).toEqual({ host: "reg.io", repository: "team/app", reference: digest });
    expect(parseSourceReference(`localhost:5000/app:1@${digest}`)).toEqual({ host: "localhost:5000", repository: "app", reference: digest });
  });

  test.each([
    `sha256:${"0".repeat(63)}`,
    `sha256:${"0".repeat(65)}`,
    `sha256:${"A".repeat(64)}`,
    `sha512:${"0".repeat(64)}`,
    `x${digest}`,
    `${digest}x`,
    "latest",
  ])("@%s is not a sha256 digest", (bad) => {
    expect(refusal(`reg.io/app@${bad}`)).toBe(`--from: "${bad}" is not a sha256 digest`);
  });

  test("a scheme-like text after the @ is a bad digest, not a scheme", () => {
    expect(refusal("reg.io/app@x://y")).toBe('--from: "x://y" is not a sha256 digest');
  });

  test("a long non-digest is quoted only in part", () => {
    const bad = "z".repeat(300);
    expect(refusal(`reg.io/app@${bad}`)).toBe(`--from: "${"z".repeat(80)}" is not a sha256 digest`);
  });

  test.each(["me:pw@reg.io/app", "me@reg.io", `https://reg.io/app@${digest}`, `oci://reg.io/app@${digest}`, "pw@reg.io/app:1"])(
    "credentials or a scheme in %p are refused without echoing them",
    (input) => {
      expect(refusal(input)).toBe(
        `--from: a reference cannot carry credentials or a scheme: log in with docker login (the Docker config is read for the source registry); ${EXPECTED}`,
      );
    },
  );

  test("without an @, the push target's rules apply, words and all", () => {
    expect(refusal("https://reg.io/app")).toBe(`a reference has no scheme: drop "https://" (plain http is INSECURE_HTTP_PUSH=true or --insecure); ${EXPECTED}`);
    expect(refusal("app:1")).toBe(`"app:1" names no registry host: ${EXPECTED}`);
    expect(refusal(`app@${digest}`)).toBe(
      `--from: a reference cannot carry credentials or a scheme: log in with docker login (the Docker config is read for the source registry); ${EXPECTED}`,
    );
    expect(refusal(`reg.io/App@${digest}`)).toBe(`invalid repository "App" in "reg.io/App" (lowercase letters, digits and . _ - separators): ${EXPECTED}`);
  });
});
