import { describe, expect, test } from "bun:test";
import { planUpload, type UploadPlan } from "../../src/registry/chunks.ts";

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
