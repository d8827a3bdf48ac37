/**
 * End to end through the strict emulation of serverless-registry's upload rules and Cloudflare's 413
 * edge limit (test/support/serverless-emulator.ts), with a small advertised max so chunks stay small.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { makeConfig, makeLayerTar, makeTempDir, digestOf, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { startServerlessEmulator, type Emulator, type EmulatorOptions } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";

const MiB = 1024 * 1024;
const USER = "user";
const PASSWORD = "secret";
let work: string;
let written: WrittenArchive;
let emulator: Emulator | undefined;

beforeAll(async () => {
  work = await makeTempDir("push-serverless-");
  // Random bytes do not compress: the layer stays ~22 MiB, four chunks of 6 MiB.
  const layers = [makeLayerTar({ "data/noise.bin": randomBytes(22 * MiB) }), makeLayerTar({ "etc/motd": "hi\n" })];
  const diffIds = layers.map((l) => digestOf(l));
  written = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(diffIds, { maintainer: "José" }) });
}, 60_000);

afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function start(options: EmulatorOptions = {}): Promise<Emulator> {
  emulator = await startServerlessEmulator({ username: USER, password: PASSWORD, ...options });
  return emulator;
}

function push(registry: Emulator, extra: string[] = [], cwd = work) {
  return runCli(["--archive", written.path, ...extra, `${registry.host}/team/app:1.0`], {
    cwd,
    stdin: `${PASSWORD}\n`,
    env: { USERNAME_REGISTRY: USER, INSECURE_HTTP_PUSH: "true" },
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
    expect(patches.length).toBeGreaterThanOrEqual(4);
    expect(patches.slice(0, -1).every((p) => p.bodyBytes === 6 * MiB)).toBe(true);
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
  }, 120_000);

  test("a registry behind a body limit that advertises nothing: 413 explained, no manifest; --chunk-size fixes it", async () => {
    const registry = await start({ advertiseChunkHeaders: false, edgeLimit: 6 * MiB });
    const failed = await push(registry, [], await makeTempDir("edge-"));
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe("");
    expect(failed.stderr).toMatch(/error: layer 1\/2 sha256:[a-f0-9]{12}: uploading in one request: HTTP 413/);
    expect(failed.stderr).toContain("--chunk-size");
    expect(failed.stderr).not.toContain("<html");
    expect(registry.requests.some((r) => r.path.includes("/manifests/"))).toBe(false);
    expect(registry.manifests.size).toBe(0);

    registry.violations.length = 0;
    const fixed = await push(registry, ["--chunk-size", "6MiB"], await makeTempDir("edge-fixed-"));
    expect(fixed.code).toBe(0);
    expect(registry.violations).toEqual([]);
    await pullAndVerify({ ref: `${registry.host}/team/app:1.0`, username: USER, password: PASSWORD, tlsVerify: false });
  }, 120_000);

  test("a --chunk-size below the registry's advertised minimum is refused before any chunk is sent", async () => {
    const registry = await start({ minChunk: 5 * MiB, maxChunk: 6 * MiB });
    const result = await push(registry, ["--chunk-size", "4MiB"], await makeTempDir("min-"));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("below the registry's minimum chunk length 5242880");
    expect(registry.requests.filter((r) => r.method === "PATCH")).toHaveLength(0);
    expect(registry.manifests.size).toBe(0);
  }, 120_000);

  test("a read-only user: reading passes, the first write is refused with a clear message and no retry", async () => {
    const registry = await start({ readonlyUsername: "reader", readonlyPassword: "r3ad" });
    const result = await runCli(["--concurrency", "1", "--archive", written.path, `${registry.host}/team/app:ro`], {
      cwd: await makeTempDir("readonly-"),
      stdin: "r3ad\n",
      env: { USERNAME_REGISTRY: "reader", INSECURE_HTTP_PUSH: "true" },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error: layer 1\/2 sha256:[a-f0-9]{12}: opening an upload session: the registry accepted user "reader" for reading but refused this \(HTTP 401 UNAUTHORIZED: .*\): is it a read-only user\?/);
    expect(result.stderr).not.toContain("retrying");
    expect(registry.requests.filter((r) => r.method === "POST")).toHaveLength(1);
    expect(registry.manifests.size).toBe(0);
  }, 60_000);
});
