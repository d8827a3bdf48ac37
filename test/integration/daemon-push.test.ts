/**
 * Pushes from real engines: a private dockerd 20.10 and podman's Docker-compatible API service, both
 * driven by the `docker` CLI the way a user's machine is.
 * - cold: `docker save` is read as a stream, and the big layer's first chunk reaches the serverless
 *   emulation while the layer is still being compressed;
 * - warm: the same image to a FRESH registry needs only `docker image inspect` (the engine's log shows
 *   no save call), and pulls back intact;
 * - re-push with everything present: no blob body bytes go over the wire.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { DOCKER_CLI, isSaveCall, startDockerd, type Dockerd } from "../support/dockerd.ts";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.ts";
import { deterministicBytes, digestOf, makeConfig, makeLayerTar, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { startServerlessEmulator, type Emulator } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";
import { blobBodyBytes, expectStreamed } from "../support/upload-log.ts";

const MiB = 1024 * 1024;
const CHUNK = 6 * MiB;
const EMU = { username: "user", password: "secret" };
const SLOW = 240_000;

let work: string;
let image: WrittenArchive;
const cleanups: (() => Promise<unknown>)[] = [];
const tempDir = tempDirs();

beforeAll(async () => {
  work = await tempDir("daemon-push-");
  const layers = [
    makeLayerTar({ "data/big.bin": deterministicBytes(64 * MiB) }),
    makeLayerTar({ "etc/motd": "from the daemon\n" }),
    makeLayerTar({ "etc/other": "a third layer\n" }),
  ];
  image = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))), repoTag: "daemon/app:1" });
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled(cleanups.reverse().map((c) => c()));
  for (const r of results) if (r.status === "rejected") console.error("cleanup failed:", r.reason);
}, SLOW);

async function registry(): Promise<DockerRegistry> {
  const r = await startDockerRegistry();
  cleanups.push(() => r.stop());
  return r;
}

/** A fault proxy with no rules: it only counts the body bytes that go through it. */
async function counter(upstream: DockerRegistry): Promise<FaultProxy> {
  const proxy = await startFaultProxy(upstream.url, []);
  cleanups.push(() => proxy.stop());
  return proxy;
}

interface Engine {
  env: Record<string, string>;
  engine: string;
  /** Tags the loaded image as `name`. */
  tag(name: string): Promise<void>;
  apiCalls(): string[];
  /** Waits until the engine logged a call matching `pred` at index `from` or later. */
  settle(pred: (call: string) => boolean, from: number): Promise<void>;
}

function push(engine: Engine, cwd: string, ref: string, user: { username: string; password: string }) {
  return runCli(["--engine", engine.engine, ref], { cwd, ...loginAs(user, { ...engine.env, XDG_STATE_HOME: join(cwd, "state") }), timeoutMs: SLOW });
}

/** Warm push to a fresh registry (no save), then a re-push that sends no blob bytes. */
async function warmAndRepush(engine: Engine, cwd: string): Promise<void> {
  // The cold push left <id>.tar in the push folder: without it, only the cache can serve the layers.
  for (const name of await readdir(cwd)) if (name.endsWith(".tar")) await rm(join(cwd, name));
  const fresh = await registry();
  const proxy = await counter(fresh);
  const ref = `${proxy.host}/daemon/app:1`;
  await engine.tag(ref);
  const mark = engine.apiCalls().length;
  const warm = await push(engine, cwd, ref, fresh);
  expect(warm.stderr).toContain("no save needed");
  expect(warm.code).toBe(0);
  await engine.settle((call) => call.includes("/json"), mark);
  expect(engine.apiCalls().slice(mark).filter(isSaveCall)).toEqual([]);
  const pulled = await pullAndVerify({ ref: `${fresh.host}/daemon/app:1`, username: fresh.username, password: fresh.password, tlsVerify: false });
  expect(pulled.configDigest).toBe(image.configDigest);
  expect(pulled.diffIds).toEqual(image.diffIds);
  // Every layer and the config went over the wire once (compressed sizes), nothing more.
  const pushedBlobBytes = pulled.manifest.layers.reduce((sum, l) => sum + l.size, 0) + pulled.manifest.config.size;
  expect(blobBodyBytes(proxy.requests)).toBe(pushedBlobBytes);

  const before = proxy.requests.length;
  const again = await push(engine, cwd, ref, fresh);
  expect(again.code).toBe(0);
  const repush = proxy.requests.slice(before);
  expect(blobBodyBytes(repush)).toBe(0);
  expect(repush.filter((r) => r.method === "PATCH" || (r.method === "POST" && r.path.includes("/blobs/uploads")))).toEqual([]);
  // One HEAD per blob (three layers and the config) finds each one there.
  const heads = repush.filter((r) => r.method === "HEAD" && r.path.includes("/blobs/"));
  expect(heads.map((r) => r.status)).toEqual(Array(image.diffIds.length + 1).fill(200));
}

describe("from a private dockerd 20.10", () => {
  let dockerd: Dockerd;
  let engine: Engine;

  beforeAll(async () => {
    dockerd = await startDockerd();
    cleanups.push(() => dockerd.stop());
    await dockerd.load(image.path);
    engine = {
      env: { DOCKER_HOST: dockerd.dockerHost, DOCKER_CONFIG: join(dockerd.dir, "docker-config") },
      engine: DOCKER_CLI,
      tag: async (name) => void (await dockerd.dockerOk(["tag", "daemon/app:1", name])),
      apiCalls: () => dockerd.apiCalls(),
      // dockerd logs a call when it starts handling it: whatever the CLI asked is logged when it exits.
      settle: async () => undefined,
    };
  }, SLOW);

  test(
    "cold: docker save is read as a stream, the first chunk leaving while the layer is compressed; then warm: a fresh registry gets the image with no save, and a re-push sends no blob bytes",
    async () => {
      // The warm push needs what the cold one left in the push folder: one test, one folder.
      const cwd = await tempDir("daemon-push-dockerd-");
      const emulator: Emulator = await startServerlessEmulator({ ...EMU, minChunk: 5 * MiB, maxChunk: CHUNK });
      cleanups.push(() => emulator.stop());
      const ref = `${emulator.host}/daemon/app:1`;
      await engine.tag(ref);
      const mark = engine.apiCalls().length;
      const result = await push(engine, cwd, ref, EMU);
      expect(result.code).toBe(0);
      expect(engine.apiCalls().slice(mark).filter(isSaveCall)).toHaveLength(1);
      await expectStreamed(emulator, join(cwd, ".cache"), CHUNK);
      const pulled = await pullAndVerify({ ref, ...EMU, tlsVerify: false });
      expect(pulled.configDigest).toBe(image.configDigest);
      expect(pulled.diffIds).toEqual(image.diffIds);

      await warmAndRepush(engine, cwd);
    },
    SLOW,
  );
});

describe("from podman's Docker-compatible service", () => {
  let store: PodmanStore;
  let engine: Engine;

  beforeAll(async () => {
    store = await PodmanStore.create();
    cleanups.push(() => store.destroy());
    await store.startService();
    await store.podmanOk(["load", "-i", image.path]);
    const env = store.dockerEnv();
    engine = {
      env: { DOCKER_HOST: env.DOCKER_HOST ?? "", DOCKER_CONFIG: env.DOCKER_CONFIG ?? "" },
      engine: DOCKER_CLI,
      tag: async (name) => void (await store.podmanOk(["tag", "daemon/app:1", name])),
      apiCalls: () => store.apiCalls(),
      // podman logs a call once its answer is complete, possibly after the CLI exited: wait for it.
      settle: async (pred, from) => void (await store.waitForApiCall(pred, from)),
    };
  }, SLOW);

  test(
    "cold push through the service saves once and pulls back intact; then warm: a fresh registry gets the image with no save, and a re-push sends no blob bytes",
    async () => {
      const cwd = await tempDir("daemon-push-podman-");
      const first = await registry();
      const ref = `${first.host}/daemon/app:1`;
      await engine.tag(ref);
      const mark = engine.apiCalls().length;
      const result = await push(engine, cwd, ref, first);
      expect(result.code).toBe(0);
      await store.waitForApiCall(isSaveCall, mark);
      const pulled = await pullAndVerify({ ref, username: first.username, password: first.password, tlsVerify: false });
      expect(pulled.diffIds).toEqual(image.diffIds);

      await warmAndRepush(engine, cwd);
    },
    SLOW,
  );
});
