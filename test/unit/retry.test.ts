import { describe, expect, test } from "bun:test";
import { attemptsText, backoffMs, DEFAULT_RETRY, isTransientStatus, parseRetryAfter } from "../../src/registry/retry.ts";

describe("retry policy", () => {
  test("transient statuses are retried; answers about the request are not", () => {
    for (const status of [408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524]) expect(isTransientStatus(status)).toBe(true);
    for (const status of [400, 401, 403, 404, 405, 413, 416, 501, 505]) expect(isTransientStatus(status)).toBe(false);
  });

  test("Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2026-11-26T12:00:00Z");
    expect(parseRetryAfter("1", now)).toBe(1000);
    expect(parseRetryAfter(" 120 ", now)).toBe(120_000);
    expect(parseRetryAfter("Thu, 26 Nov 2026 12:00:05 GMT", now)).toBe(5000);
    expect(parseRetryAfter("Thu, 26 Nov 2026 11:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
  });

  test("backoff doubles with jitter between half and all of the step, capped", () => {
    const policy = { retries: 5, baseMs: 500, maxMs: 4000 };
    expect(backoffMs(1, policy, undefined, () => 0)).toBe(250);
    expect(backoffMs(1, policy, undefined, () => 1)).toBe(500);
    expect(backoffMs(3, policy, undefined, () => 1)).toBe(2000);
    expect(backoffMs(10, policy, undefined, () => 1)).toBe(4000);
    expect(backoffMs(10, policy, undefined, () => 0)).toBe(2000);
  });

  test("the server's Retry-After wins over backoff, within the cap", () => {
    expect(backoffMs(1, DEFAULT_RETRY, 1000)).toBe(1000);
    expect(backoffMs(1, DEFAULT_RETRY, 3_600_000)).toBe(DEFAULT_RETRY.maxMs);
  });

  test("Retry-After that is neither whole seconds nor an HTTP date is unreadable: the backoff applies", () => {
    const now = Date.parse("2026-11-26T12:00:00Z");
    for (const value of ["", "5 seconds", "x1", "5x", "1e3", "0x10", "1.5", "-1", "+3"]) expect(parseRetryAfter(value, now)).toBeUndefined();
  });

  test("the default policy: 5 retries from half a second, at most 30 s apart", () => {
    expect(DEFAULT_RETRY).toEqual({ retries: 5, baseMs: 500, maxMs: 30_000 });
  });

  test("attempts are counted in words for messages", () => {
    expect(attemptsText(1)).toBe("1 attempt");
    expect(attemptsText(0)).toBe("0 attempts");
    expect(attemptsText(6)).toBe("6 attempts");
  });
});
