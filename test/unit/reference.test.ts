import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { formatReference, parseReference } from "../../src/model/reference.ts";

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
