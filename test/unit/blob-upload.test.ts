import { describe, expect, test } from "bun:test";
import { uploadOffset, withDigest } from "../../src/registry/blob-upload.ts";

describe("uploadOffset", () => {
  test.each([
    ["0-6291455", 6291456],
    ["bytes=0-99", 100],
    ["0-0", 0],
    ["0--1", 0],
    [" 0-1 ", 2],
  ])("%p -> %p", (range, offset) => expect(uploadOffset(range)).toBe(offset));

  test.each([null, "", "garbage", "5", "5-10"])("unreadable %p", (range) => expect(uploadOffset(range)).toBeUndefined());
});

describe("withDigest", () => {
  const digest = `sha256:${"a".repeat(64)}`;
  test("keeps an existing query as given", () => {
    expect(withDigest("/v2/a/blobs/uploads/u?_stateHash=ab%2Fc", digest)).toBe(`/v2/a/blobs/uploads/u?_stateHash=ab%2Fc&digest=${digest}`);
  });
  test("starts a query when there is none", () => {
    expect(withDigest("http://r/v2/a/blobs/uploads/u", digest)).toBe(`http://r/v2/a/blobs/uploads/u?digest=${digest}`);
  });
});
