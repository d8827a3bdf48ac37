import { describe, expect, test } from "bun:test";
import { ceilingOf, negotiateLimits, planUpload, type UploadPlan } from "../../src/registry/chunks.ts";

const MiB = 1024 * 1024;

function sizes(plan: UploadPlan): number[] {
  if (plan.kind !== "chunked") throw new Error("expected a chunked plan");
  return plan.chunks.map((c) => c.end - c.start + 1);
}

/** Every byte covered once, in order: the invariant a registry checks with Content-Range. */
function expectContiguous(plan: UploadPlan, size: number): void {
  if (plan.kind !== "chunked") throw new Error("expected a chunked plan");
  let next = 0;
  for (const chunk of plan.chunks) {
    expect(chunk.start).toBe(next);
    next = chunk.end + 1;
  }
  expect(next).toBe(size);
}

describe("planUpload", () => {
  test("no limits: one request whatever the size", () => {
    expect(planUpload(10 * 1024 ** 3, {})).toEqual({ kind: "monolithic" });
  });

  test("a blob exactly at the max goes in one request; one byte more is chunked without a one-byte tail", () => {
    expect(planUpload(100_000_000, { min: 5 * MiB, max: 100_000_000 })).toEqual({ kind: "monolithic" });
    const plan = planUpload(100_000_001, { min: 5 * MiB, max: 100_000_000 });
    expect(sizes(plan)).toEqual([99_999_999, 2]);
    expectContiguous(plan, 100_000_001);
  });

  test("two bytes more leave a two-byte last chunk at the full size", () => {
    expect(sizes(planUpload(100_000_002, { min: 5 * MiB, max: 100_000_000 }))).toEqual([100_000_000, 2]);
  });

  test("exact multiples give equal chunks and no empty tail", () => {
    const plan = planUpload(3 * 6 * MiB, { min: 5 * MiB, max: 6 * MiB });
    expect(sizes(plan)).toEqual([6 * MiB, 6 * MiB, 6 * MiB]);
    expectContiguous(plan, 18 * MiB);
  });

  test("a one-byte remainder lowers the chunk size: serverless-registry refuses start == end", () => {
    const plan = planUpload(2 * 6 * MiB + 1, { min: 5 * MiB, max: 6 * MiB });
    expect(sizes(plan)).toEqual([6 * MiB - 1, 6 * MiB - 1, 3]);
    expect(plan.kind === "chunked" && plan.chunks[2]).toEqual({ start: 12 * MiB - 2, end: 12 * MiB });
    expectContiguous(plan, 12 * MiB + 1);
  });

  test("no plan when only a one-byte tail fits between min and max", () => {
    expect(() => planUpload(2 * 5 * MiB + 1, { min: 5 * MiB, max: 5 * MiB })).toThrow(/one-byte last chunk/);
  });

  test("odd sizes: every chunk but the last is exactly the chunk size, the last never larger", () => {
    for (const size of [6 * MiB + 1, 13 * MiB - 7, 25 * MiB + 12345, 7 * 6 * MiB - 1]) {
      const plan = planUpload(size, { min: 5 * MiB, max: 6 * MiB });
      const all = sizes(plan);
      const chunkSize = plan.kind === "chunked" ? plan.chunkSize : 0;
      expect(chunkSize).toBeLessThanOrEqual(6 * MiB);
      expect(chunkSize).toBeGreaterThanOrEqual(5 * MiB);
      expect(all.slice(0, -1).every((s) => s === chunkSize)).toBe(true);
      expect(all.at(-1)).toBeLessThanOrEqual(chunkSize);
      expect(all.at(-1)).toBeGreaterThan(1);
      expectContiguous(plan, size);
    }
  });

  test("--chunk-size caps below the advertised max", () => {
    const plan = planUpload(20 * MiB, { min: 5 * MiB, max: 100_000_000, cap: 8 * MiB });
    expect(plan.kind === "chunked" && plan.chunkSize).toBe(8 * MiB);
    expect(sizes(plan)).toEqual([8 * MiB, 8 * MiB, 4 * MiB]);
  });

  test("--chunk-size alone chunks a registry that advertises nothing", () => {
    expect(sizes(planUpload(10, { cap: 4 }))).toEqual([4, 4, 2]);
    expect(sizes(planUpload(9, { cap: 4 }))).toEqual([3, 3, 3]);
    expect(planUpload(4, { cap: 4 })).toEqual({ kind: "monolithic" });
  });

  test("a chunk size equal to the minimum is allowed", () => {
    expect(sizes(planUpload(11 * MiB, { min: 5 * MiB, cap: 5 * MiB }))).toEqual([5 * MiB, 5 * MiB, MiB]);
  });

  test("a chunk size below the minimum is refused with a hint", () => {
    expect(() => planUpload(20 * MiB, { min: 5 * MiB, max: 100_000_000, cap: 5 * MiB - 1 })).toThrow(
      /below the registry's minimum chunk length 5242880: raise --chunk-size/,
    );
  });

  test("a small blob still goes in one request even with a cap below the minimum", () => {
    expect(planUpload(1000, { min: 5 * MiB, cap: 4 * MiB })).toEqual({ kind: "monolithic" });
  });

  test("an empty blob goes in one request", () => {
    expect(planUpload(0, { min: 5 * MiB, max: 6 * MiB })).toEqual({ kind: "monolithic" });
  });
});

describe("negotiateLimits", () => {
  const MIN = "OCI-Chunk-Min-Length";
  const MAX = "OCI-Chunk-Max-Length";
  const unusable = (name: string, text: string) => `the registry sent ${name}: ${JSON.stringify(text)}, which is not a usable size: ignoring it`;

  test("nothing advertised, no --chunk-size: no limits, nothing to say", () => {
    expect(negotiateLimits(null, null, undefined)).toStrictEqual({ limits: {}, notices: [] });
  });

  test("the registry's sizes and --chunk-size are kept as given, with nothing to say when the cap is the smaller", () => {
    expect(negotiateLimits("5242880", "100000000", 50_000_000)).toStrictEqual({ limits: { min: 5_242_880, max: 100_000_000, cap: 50_000_000 }, notices: [] });
    expect(negotiateLimits(" 10 ", null, undefined)).toStrictEqual({ limits: { min: 10 }, notices: [] });
    expect(negotiateLimits(null, "20", undefined)).toStrictEqual({ limits: { max: 20 }, notices: [] });
    expect(negotiateLimits(null, null, 4096)).toStrictEqual({ limits: { cap: 4096 }, notices: [] });
  });

  test("empty or blank headers count as absent, silently", () => {
    expect(negotiateLimits("", "  ", 4096)).toStrictEqual({ limits: { cap: 4096 }, notices: [] });
  });

  test("the smallest and the largest usable sizes: 1 byte and 2^50 bytes", () => {
    expect(negotiateLimits("1", String(2 ** 50), undefined)).toStrictEqual({ limits: { min: 1, max: 2 ** 50 }, notices: [] });
  });

  test.each([
    ["0", "0"],
    ["-5", "-5"],
    ["1e30", "1e30"],
    ["1.5", "1.5"],
    ["0x10", "0x10"],
    ["12abc", "12abc"],
    ["abc12", "abc12"],
    ["1 000", "1 000"],
    [String(2 ** 50 + 1), String(2 ** 50 + 1)],
    ["9".repeat(60), "9".repeat(40)],
  ])("%p is not a usable size: ignored with a notice quoting (at most 40 characters of) it", (header, quoted) => {
    expect(negotiateLimits(header, null, undefined)).toStrictEqual({ limits: {}, notices: [unusable(MIN, quoted)] });
    expect(negotiateLimits(null, ` ${header} `, 8192)).toStrictEqual({ limits: { cap: 8192 }, notices: [unusable(MAX, quoted)] });
  });

  test("a minimum above the maximum is ignored, and said; equal is fine", () => {
    expect(negotiateLimits("200", "100", undefined)).toStrictEqual({
      limits: { max: 100 },
      notices: ["the registry's OCI-Chunk-Min-Length (200) is above its OCI-Chunk-Max-Length (100): ignoring the minimum"],
    });
    expect(negotiateLimits("100", "100", undefined)).toStrictEqual({ limits: { min: 100, max: 100 }, notices: [] });
    expect(negotiateLimits("99", "100", undefined)).toStrictEqual({ limits: { min: 99, max: 100 }, notices: [] });
  });

  test("a registry maximum below --chunk-size is said (the maximum wins in the plan); equal or above is not", () => {
    expect(negotiateLimits(null, "4000", 5000)).toStrictEqual({
      limits: { max: 4000, cap: 5000 },
      notices: ["the registry accepts at most 4000 bytes per request: sending chunks of 4000 bytes, not the 5000 of --chunk-size"],
    });
    expect(negotiateLimits(null, "5000", 5000).notices).toEqual([]);
    expect(negotiateLimits(null, "5001", 5000).notices).toEqual([]);
  });

  test("every notice at once, in the order the headers are read", () => {
    expect(negotiateLimits("x", "y", 10).notices).toEqual([unusable(MIN, "x"), unusable(MAX, "y")]);
    expect(negotiateLimits("300", "200", 1000).notices).toEqual([
      "the registry's OCI-Chunk-Min-Length (300) is above its OCI-Chunk-Max-Length (200): ignoring the minimum",
      "the registry accepts at most 200 bytes per request: sending chunks of 200 bytes, not the 1000 of --chunk-size",
    ]);
  });
});

describe("ceilingOf", () => {
  test("the smaller of the registry's maximum and --chunk-size; the minimum plays no part", () => {
    expect(ceilingOf({})).toBeUndefined();
    expect(ceilingOf({ min: 5 })).toBeUndefined();
    expect(ceilingOf({ max: 100 })).toBe(100);
    expect(ceilingOf({ cap: 50 })).toBe(50);
    expect(ceilingOf({ max: 100, cap: 50 })).toBe(50);
    expect(ceilingOf({ max: 40, cap: 50 })).toBe(40);
    expect(ceilingOf({ min: 1, max: 40, cap: 50 })).toBe(40);
  });

  test("a fractional --chunk-size is rounded down", () => {
    expect(ceilingOf({ cap: 1536.9 })).toBe(1536);
  });
});
