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
    ["reg.io/app@sha256:" + "a".repeat(64), /digest reference/],
    ["reg.io/App", /invalid repository "App"/],
    ["reg.io/", /invalid repository ""/],
    ["reg.io/team//app", /invalid repository/],
    ["reg.io/app:", /invalid tag ""/],
    ["reg.io/app:bad/tag", /invalid repository|invalid tag/],
    ["reg.io/app:" + "t".repeat(129), /invalid tag/],
    ["reg.io:99999/app", /invalid registry host "reg.io:99999"/],
    ["host:notaport/app", /invalid registry host "host:notaport"/],
    ["reg io.com/app", /invalid registry host/],
  ])("rejects %s", (input, message) => {
    expect(() => parseReference(input)).toThrow(UsageError);
    expect(() => parseReference(input)).toThrow(message);
    expect(() => parseReference(input)).toThrow(/expected <host\[:port\]>\/<repository>\[:<tag>\]/);
  });

  test("credentials in a reference are refused without echoing them", () => {
    let message = "";
    try {
      parseReference("me:hunter2@reg.io/app");
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("cannot carry credentials: set USERNAME_REGISTRY");
    expect(message).not.toContain("hunter2");
  });
});
