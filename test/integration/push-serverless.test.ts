/**
 * End to end through the strict emulation of serverless-registry's upload rules and Cloudflare's 413
 * edge limit (test/support/serverless-emulator.ts), with a small advertised max so chunks stay small.
 */
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { loginAs, runCli } from "../support/cli.ts";
import { digestOf, makeConfig, makeLayerTar, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { startServerlessEmulator, type Emulator, type EmulatorOptions } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";

const MiB = 1024 * 1024;
const USER = "user";
const PASSWORD = "secret";
let work: string;
let written: WrittenArchive;
let emulator: Emulator | undefined;
const tempDir = tempDirs();

beforeAll(async () => {
  work = await tempDir("push-serverless-");
  // Random bytes do not compress: the layer stays ~22 MiB, four chunks of 6 MiB.
  const layers = [makeLayerTar({ "data/noise.bin": randomBytes(22 * MiB) }), makeLayerTar({ "etc/motd": "hi\n" })];
  const diffIds = layers.map((l) => digestOf(l));
  written = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(diffIds, { maintainer: "José" }) });
}, 60_000);

afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
});

/** A fresh push folder (its own .cache), removed after the test. */
const scratch = tempDir;

async function start(options: EmulatorOptions = {}): Promise<Emulator> {
  emulator = await startServerlessEmulator({ username: USER, password: PASSWORD, ...options });
  return emulator;
}

async function push(registry: Emulator, extra: string[] = [], cwd?: string) {
  return runCli(["--archive", written.path, ...extra, `${registry.host}/team/app:1.0`], {
    cwd: cwd ?? (await scratch("push-")),
    ...loginAs({ username: USER, password: PASSWORD }),
  });
}

describe("serverless-registry emulation", () => {
  test("a 22 MiB layer goes in four equal chunks, breaks no rule, and pulls back intact", async () => {
    const registry = await start({ minChunk: 5 * MiB, maxChunk: 6 * MiB });
    const result = await push(registry);
    expect(result.stderr).not.toContain(PASSWORD);
    expect(result.code).toBe(0);
    expect(registry.violations).toEqual([]);
    expect(Math.max(...registry.requests.map((r) => r.bodyBytes))).toBeLessThanOrEqual(6 * MiB);

    const patches = registry.requests.filter((r) => r.method === "PATCH");
    expect(patches.every((p) => p.status === 202)).toBe(true);
    // Each PATCH used the Location the previous answer gave (a fresh _stateHash every time).
    expect(new Set(patches.map((p) => p.query)).size).toBe(patches.length);
    const finalPut = registry.requests.find((r) => r.method === "PUT" && r.path.includes("/uploads/") && r.query.includes("_stateHash") && r.bodyBytes === 0);
    expect(finalPut?.status).toBe(201);

    const ref = `${registry.host}/team/app:1.0`;
    const pulled = await pullAndVerify({ ref, username: USER, password: PASSWORD, tlsVerify: false });
    expect(result.stdout).toBe(`${ref}@${pulled.manifestDigest}\n`);
    expect(pulled.configDigest).toBe(written.configDigest);
    expect(pulled.diffIds).toEqual(written.diffIds);
    // Exactly four PATCHes, all of the big layer: three of 6 MiB and the rest; nothing sent twice.
    const size = pulled.layerSizes[0]!;
    expect(size).toBeGreaterThan(18 * MiB);
    expect(size).toBeLessThanOrEqual(24 * MiB);
    expect(patches.map((p) => p.bodyBytes)).toEqual([6 * MiB, 6 * MiB, 6 * MiB, size - 18 * MiB]);
  }, 120_000);

  test("a registry behind a body limit that advertises nothing: the layer streamed in one PATCH gets a 413, explained with a --chunk-size to try; no manifest; --chunk-size fixes it", async () => {
    const registry = await start({ advertiseChunkHeaders: false, edgeLimit: 6 * MiB });
    const failed = await push(registry, [], await scratch("edge-"));
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe("");
    // No ceiling known and the layer still being compressed: one PATCH streams it as it grows.
    expect(failed.stderr).toContain("layer 1/2: uploading (streamed as it is compressed)\n");
    const patches = registry.requests.filter((r) => r.method === "PATCH");
    expect(patches.map((p) => [p.headers["transfer-encoding"], p.status])).toEqual([["chunked", 413]]);
    const refused = patches[0]!.bodyBytes;
    expect(refused).toBeGreaterThan(22 * MiB);
    expect(failed.stderr).toEndWith(
      `error: layer 1/2: streaming the upload from byte 0: HTTP 413 Payload Too Large: 413 Request Entity Too Large ` +
        `(the request body (${refused} bytes) was larger than the registry or a proxy in front of it accepts: ` +
        `pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size 9MB)\n`,
    );
    expect(failed.stderr).not.toContain("<html");
    expect(registry.requests.some((r) => r.path.includes("/manifests/"))).toBe(false);
    expect(registry.manifests.size).toBe(0);

    registry.violations.length = 0;
    const fixed = await push(registry, ["--chunk-size", "6MiB"], await scratch("edge-fixed-"));
    expect(fixed.code).toBe(0);
    expect(registry.violations).toEqual([]);
    await pullAndVerify({ ref: `${registry.host}/team/app:1.0`, username: USER, password: PASSWORD, tlsVerify: false });
  }, 120_000);

  test("a --chunk-size below the registry's advertised minimum is refused before any chunk is sent", async () => {
    const registry = await start({ minChunk: 5 * MiB, maxChunk: 6 * MiB });
    const result = await push(registry, ["--chunk-size", "4MiB"], await scratch("min-"));
    expect(result.code).toBe(1);
    // Whichever layer gets its session first says it (both exceed no ceiling yet: the check comes first).
    expect(result.stderr).toMatch(
      /\nerror: layer [12]\/2: the largest request body allowed \(4194304 bytes, from --chunk-size\) is below the registry's minimum chunk of 5242880 bytes: use --chunk-size 5242880 or more\n$/,
    );
    expect(registry.requests.filter((r) => r.method === "PATCH")).toHaveLength(0);
    expect(registry.manifests.size).toBe(0);
  }, 120_000);

  test("a read-only user: reading passes, the first write is refused with a clear message and no retry", async () => {
    const registry = await start({ readonlyUsername: "reader", readonlyPassword: "r3ad" });
    const result = await runCli(["--concurrency", "1", "--archive", written.path, `${registry.host}/team/app:ro`], {
      cwd: await scratch("readonly-"),
      ...loginAs({ username: "reader", password: "r3ad" }),
    });
    expect(result.code).toBe(1);
    // The first write may be any blob (layers are prepared concurrently): the message is what matters.
    expect(result.stderr).toMatch(
      /\nerror: layer [12]\/2: opening an upload session: the registry accepted user "reader" for reading but refused this \(HTTP 401 UNAUTHORIZED: authentication required \(a read-only user may not push\)\): is it a read-only user\?\n$/,
    );
    expect(result.stderr).not.toContain("retrying");
    expect(registry.requests.filter((r) => r.method === "POST")).toHaveLength(1);
    expect(registry.manifests.size).toBe(0);
  }, 60_000);
});
