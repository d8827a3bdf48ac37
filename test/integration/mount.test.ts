/**
 * Cross-repository mounts (`POST ?mount=<digest>&from=<repo>`): pushing an image to a second repository
 * of the same registry sends no blob bytes, against Debian's docker-registry (counted by a proxy in front
 * of it) and the serverless-registry emulation; the record of where blobs went names the source, and
 * `--mount-from <repo>` does the same from a folder with an empty cache.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.ts";
import { compressArchive } from "../support/multiplatform.ts";
import { deterministicBytes, digestOf, makeConfig, makeLayerTar, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { startServerlessEmulator, type Emulator } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";
import { blobBodyBytes, mounts, type LoggedRequest } from "../support/upload-log.ts";

const MiB = 1024 * 1024;
const EMU = { username: "user", password: "secret" };
const SLOW = 120_000;

let work: string;
let image: WrittenArchive;
let registry: DockerRegistry;
let proxy: FaultProxy;
let emulator: Emulator;

/** Folders of single tests, removed after each test even when it failed half-way. */
const tempDir = tempDirs();

beforeAll(async () => {
  work = await tempDir("mount-");
  const layers = [
    makeLayerTar({ "data/big.bin": deterministicBytes(16 * MiB) }),
    makeLayerTar({ "etc/a": "mount me\n" }),
    makeLayerTar({ "etc/b": "me too\n" }),
  ];
  [image, registry, emulator] = await Promise.all([
    writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))) }),
    startDockerRegistry(),
    startServerlessEmulator({ ...EMU, minChunk: 5 * MiB, maxChunk: 6 * MiB }),
  ]);
  proxy = await startFaultProxy(registry.url, []);
}, SLOW);

afterAll(async () => {
  await Promise.allSettled([proxy?.stop(), registry?.stop(), emulator?.stop()]);
});

interface Target {
  name: string;
  /** Where the CLI pushes (the counting proxy for docker-registry). */
  host: string;
  /** Where skopeo pulls back from. */
  pullHost: string;
  username: string;
  password: string;
  requests(): LoggedRequest[];
}

const targets = (): Target[] => [
  {
    name: "docker-registry",
    host: proxy.host,
    pullHost: registry.host,
    username: registry.username,
    password: registry.password,
    requests: () => proxy.requests,
  },
  { name: "serverless emulation", host: emulator.host, pullHost: emulator.host, ...EMU, requests: () => emulator.requests },
];

function push(target: Target, cwd: string, repository: string, extra: string[] = [], archive = image.path) {
  return runCli(["--archive", archive, ...extra, `${target.host}/${repository}:1`], {
    cwd,
    stdin: `${target.password}\n`,
    env: { USERNAME_REGISTRY: target.username, INSECURE_HTTP_PUSH: "true", XDG_STATE_HOME: join(cwd, "state") },
  });
}

/** Pushes to `repository` and checks every blob was mounted from `from`, with no body bytes sent. */
async function expectAllMounted(target: Target, cwd: string, repository: string, from: string, extra: string[] = [], archive = image.path): Promise<void> {
  const before = target.requests().length;
  const result = await push(target, cwd, repository, extra, archive);
  expect(result.code).toBe(0);
  const log = target.requests().slice(before);
  const pulled = await pullAndVerify({ ref: `${target.pullHost}/${repository}:1`, username: target.username, password: target.password, tlsVerify: false });
  expect(pulled.configDigest).toBe(image.configDigest);
  expect(pulled.diffIds).toEqual(image.diffIds);
  const blobs = [pulled.manifest.config.digest, ...pulled.manifest.layers.map((l) => l.digest)].sort();
  expect(
    mounts(log)
      .filter((m) => m.status === 201)
      .map((m) => `${m.digest} from ${m.from}`)
      .sort(),
  ).toEqual(blobs.map((d) => `${d} from ${from}`));
  expect(log.filter((r) => r.method === "PATCH")).toEqual([]);
  expect(blobBodyBytes(log)).toBe(0);
  expect(result.stderr).toMatch(/(\d+) mounted/);
}

describe.each(["docker-registry", "serverless emulation"])("mounts against %s", (name) => {
  const target = () => targets().find((t) => t.name === name)!;

  test(
    "the same image to a second repository of the registry: every blob mounted, no bytes sent",
    async () => {
      const cwd = await tempDir("mount-second-");
      const first = await push(target(), cwd, "mount/first");
      expect(first.code).toBe(0);
      await expectAllMounted(target(), cwd, "mount/second", "mount/first");
      await rm(cwd, { recursive: true, force: true });
    },
    SLOW,
  );

  test(
    "a .tar.gz read as a stream, to a second repository: its layers, compressed again as they pass, are mounted by their digests",
    async () => {
      const cwd = await tempDir("mount-gz-");
      const gz = await compressArchive(image.path, "gzip", join(cwd, "image.tar.gz"));
      expect((await push(target(), cwd, "mount/gz-first", [], gz)).code).toBe(0);
      await expectAllMounted(target(), cwd, "mount/gz-second", "mount/gz-first", [], gz);
      await rm(cwd, { recursive: true, force: true });
    },
    SLOW,
  );

  test(
    "a third repository mounts from the one that received the bytes, not from one that only holds mounts",
    async () => {
      const cwd = await tempDir("mount-third-");
      expect((await push(target(), cwd, "mount/third-a")).code).toBe(0);
      await expectAllMounted(target(), cwd, "mount/third-b", "mount/third-a");
      await expectAllMounted(target(), cwd, "mount/third-c", "mount/third-a");
      await rm(cwd, { recursive: true, force: true });
    },
    SLOW,
  );

  test(
    "--mount-from <repo> from a folder with an empty cache: every blob mounted, no bytes sent",
    async () => {
      const seed = await tempDir("mount-seed-");
      expect((await push(target(), seed, "mount/source")).code).toBe(0);
      const empty = await tempDir("mount-empty-");
      await expectAllMounted(target(), empty, "mount/elsewhere", "mount/source", ["--mount-from", "mount/source"]);
      await Promise.all([rm(seed, { recursive: true, force: true }), rm(empty, { recursive: true, force: true })]);
    },
    SLOW,
  );
});

describe("a mount the registry answers with another digest", () => {
  test(
    "serverless-registry, --mount-from a repository holding only mount links: each blob is uploaded instead, and the image pulls back intact",
    async () => {
      // Mounting from a link answers the link object's checksum (the real server's mountExistingLayer):
      // nothing proves what was mounted, so the bytes go as usual.
      const target = targets().find((t) => t.name === "serverless emulation")!;
      const cwd = await tempDir("mount-link-");
      expect((await push(target, cwd, "link/origin")).code).toBe(0);
      await expectAllMounted(target, cwd, "link/mounted", "link/origin");
      const empty = await tempDir("mount-link-empty-");
      const before = target.requests().length;
      const result = await push(target, empty, "link/third", ["--mount-from", "link/mounted"]);
      expect(result.code).toBe(0);
      const log = target.requests().slice(before);
      const pulled = await pullAndVerify({ ref: `${target.pullHost}/link/third:1`, username: target.username, password: target.password, tlsVerify: false });
      expect(pulled.diffIds).toEqual(image.diffIds);
      const blobs = [pulled.manifest.config.digest, ...pulled.manifest.layers.map((l) => l.digest)];
      // Every blob: one mount answered 201 with the link's checksum, then its bytes uploaded in full.
      expect(
        mounts(log)
          .filter((m) => m.status === 201)
          .map((m) => m.digest)
          .sort(),
      ).toEqual([...blobs].sort());
      expect(blobBodyBytes(log)).toBe(pulled.manifest.config.size + pulled.manifest.layers.reduce((n, l) => n + l.size, 0));
      for (const digest of blobs) {
        expect(result.stderr).toContain(`mounting it from link/mounted: the registry answered with digest sha256:`);
        expect(result.stderr).toContain(`, not ${digest}; uploading the blob instead\n`);
      }
      expect(target.requests().filter((r) => r.status === 500)).toEqual([]);
      await Promise.all([rm(cwd, { recursive: true, force: true }), rm(empty, { recursive: true, force: true })]);
    },
    SLOW,
  );
});
