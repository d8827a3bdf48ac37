/**
 * Issue 9, local state that lies, through the real CLI: a poisoned `.cache` (two -ptr files swapped, a
 * blob replaced by another valid blob of the same size, a folder or a symlink named like a temp file),
 * both for the user whose seal is on the pointers (same HOME) and for another (a fresh HOME: no key, so
 * nothing is trusted); an image rebuilt from the cache's record whose blob was swapped; a `<image id>.tar`
 * in the push folder that holds another image; `docker save` temp files of killed runs; junk in .cache.
 * Every case must end in a correct push: the image is pulled back with skopeo and verified (every blob
 * re-hashed, every layer decompressed to its diff_id), and it is the same image the clean cache gave.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { cp, lstat, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  deterministicBytes,
  digestOf,
  makeConfig,
  makeLayerTar,
  makeTempDir,
  sha256Hex,
  type WrittenArchive,
  writeClassicDockerArchive,
  writeOciArchive,
} from "../support/fixtures.ts";
import {
  type CachePointer,
  deadPid,
  dropTempInCache,
  readCachePointers,
  replaceCachedBlobSameSize,
  swapCachePointers,
  writeFakeEngine,
  writeWrongIdArchive,
} from "../support/hostile-archives.ts";
import { manifestPuts, type MeasuredRun, runHostileCli } from "../support/hostile-cli.ts";
import { type HostileRegistry, startHostileRegistry } from "../support/hostile-registry.ts";
import { pullAndVerify } from "../support/skopeo.ts";

const REPO = "hostile/cached";

let dir: string;
/** The HOME whose key sealed the pristine cache. */
let home: string;
let archive: WrittenArchive;
/** The cache one clean push left, copied for each case; and what that push pushed. */
let pristine: string;
let cleanDigest: string;
let pointers: CachePointer[];
let counter = 0;

beforeAll(async () => {
  dir = await makeTempDir("hostile-cache-cli-");
  home = join(dir, "home");
  await mkdir(home);
  // Two layers big enough for a same-size gzip substitute, one small; distinct, so pointers differ.
  const layers = [
    makeLayerTar({ "a/data.bin": deterministicBytes(256 * 1024, 7) }),
    makeLayerTar({ "b/data.bin": deterministicBytes(200 * 1024, 9) }),
    makeLayerTar({ "c/small.txt": "a small layer\n" }),
  ];
  archive = await writeClassicDockerArchive(join(dir, "image.tar"), {
    layers,
    config: makeConfig(layers.map((l) => digestOf(l))),
    repoTag: "hostile/cached:1",
  });
  pristine = join(dir, "pristine-cache");
  const registry = await startHostileRegistry();
  try {
    const first = await runHostileCli(["--cache-dir", pristine, "--archive", archive.path, `${registry.host}/${REPO}:1`], {
      env: { INSECURE_HTTP_PUSH: "true" },
      home,
    });
    expect(first.code).toBe(0);
    cleanDigest = /@(sha256:[a-f0-9]{64})\n$/.exec(first.stdout)?.[1] ?? "";
  } finally {
    await registry.stop();
  }
  pointers = await readCachePointers(pristine);
  expect(pointers).toHaveLength(3);
  expect(pointers.every((p) => typeof p.fields.seal === "string" && /^[a-f0-9]{64}$/.test(p.fields.seal))).toBe(true);
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A copy of the pristine cache for one case. */
async function cacheCopy(): Promise<string> {
  const cache = join(dir, `cache-${++counter}`);
  await cp(pristine, cache, { recursive: true });
  return cache;
}

/** 1-based position of a pointer's layer in the image. */
function position(pointer: CachePointer): number {
  return archive.diffIds.indexOf(`sha256:${pointer.layerHex}`) + 1;
}

/**
 * Pushes the archive with `cache` to a registry of its own and checks what every case must end with:
 * exit 0, the same image the clean cache pushed, one manifest, and skopeo pulling it back verified.
 */
async function pushAndVerify(cache: string, who: "same HOME" | "fresh HOME", extra: string[] = []): Promise<MeasuredRun> {
  const registry: HostileRegistry = await startHostileRegistry();
  try {
    const result = await runHostileCli(["--cache-dir", cache, "--archive", archive.path, ...extra, `${registry.host}/${REPO}:1`], {
      env: { INSECURE_HTTP_PUSH: "true" },
      ...(who === "same HOME" ? { home } : {}),
    });
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`${registry.host}/${REPO}:1@${cleanDigest}\n`);
    expect(manifestPuts(registry.registry, REPO)).toHaveLength(1);
    const pulled = await pullAndVerify({ ref: `${registry.host}/${REPO}:1`, tlsVerify: false });
    expect(pulled.manifestDigest).toBe(cleanDigest);
    expect(pulled.diffIds).toEqual(archive.diffIds);
    return result;
  } finally {
    await registry.stop();
  }
}

/** Every pointer left in the cache names a blob that is what it says (or names none that exists). */
async function expectCacheConsistent(cache: string): Promise<void> {
  for (const pointer of await readCachePointers(cache)) {
    const bytes = await readFile(join(cache, pointer.digest.slice(7))).catch(() => undefined);
    if (bytes === undefined) continue;
    expect(digestOf(bytes)).toBe(pointer.digest);
    expect(sha256Hex(gunzipSync(bytes))).toBe(pointer.layerHex);
  }
}

const WHO = ["same HOME", "fresh HOME"] as const;

describe("a poisoned cache is detected and repaired", () => {
  for (const who of WHO) {
    test(`two -ptr files swapped (${who})`, async () => {
      const cache = await cacheCopy();
      // The two big layers: each pointer now names the other's (valid, correctly sized) blob.
      const [a, b] = pointers.filter((p) => position(p) <= 2).sort((x, y) => position(x) - position(y));
      await swapCachePointers(cache, a!, b!);
      const result = await pushAndVerify(cache, who);
      const lines = result.stderr.split("\n");
      for (const [layer, claimed] of [
        [a!, b!],
        [b!, a!],
      ] as const) {
        expect(lines).toContain(
          `warning: layer ${position(layer)}/3: the cached blob ${claimed.digest} is not this layer (its content hashes to sha256:${claimed.layerHex}, but the image config's diff_id is sha256:${layer.layerHex}); it was removed from ${cache}; preparing the layer again from the source`,
        );
      }
      await expectCacheConsistent(cache);
    }, 60_000);

    test(`a blob replaced by another valid gzip blob of the same size (${who})`, async () => {
      const cache = await cacheCopy();
      const target = pointers.find((p) => position(p) === 1)!;
      const poison = await replaceCachedBlobSameSize(cache, target.digest);
      expect(poison.size).toBe(target.size);
      const result = await pushAndVerify(cache, who);
      // Same HOME: the pointer's seal is valid, so the blob is trusted until its bytes are hashed on the
      // way out; fresh HOME: nothing is sealed for this user, so it is decompressed and checked first.
      const why =
        who === "same HOME"
          ? `holds other bytes (they hash to ${poison.actualDigest})`
          : `is not this layer (its bytes hash to ${poison.actualDigest}, but the manifest names ${target.digest})`;
      expect(result.stderr.split("\n")).toContain(
        `warning: layer 1/3: the cached blob ${target.digest} ${why}; it was removed from ${cache}; preparing the layer again from the source`,
      );
      // The bytes under the blob's name are right again.
      expect(digestOf(await readFile(join(cache, target.digest.slice(7))))).toBe(target.digest);
      await expectCacheConsistent(cache);
    }, 60_000);

    test(`a folder named like a dead run's temp file (${who})`, async () => {
      const cache = await cacheCopy();
      const dropped = await dropTempInCache(cache, { kind: "directory" });
      const result = await pushAndVerify(cache, who);
      expect(result.stderr).not.toContain("warning");
      expect(await lstat(dropped.path).catch(() => undefined)).toBeUndefined();
    }, 60_000);

    test(`a symlink named like a dead run's temp file, pointing out of the cache (${who})`, async () => {
      const cache = await cacheCopy();
      const outside = join(dir, `outside-${++counter}`);
      await mkdir(outside);
      const dropped = await dropTempInCache(cache, { kind: "symlink", outsideDir: outside });
      const result = await pushAndVerify(cache, who);
      expect(result.stderr).not.toContain("warning");
      // The link went; what it pointed at did not.
      expect(await lstat(dropped.path).catch(() => undefined)).toBeUndefined();
      expect(await readFile(dropped.mustSurvive!, "utf8")).toBe("must survive the cache clean-up\n");
    }, 60_000);
  }
});

describe("unexpected entries in .cache do not break a run", () => {
  test("folders, FIFOs and links under blob and pointer names, broken and huge pointers, files where folders belong", async () => {
    const cache = await cacheCopy();
    const [p1, p2] = pointers;
    await mkdir(join(cache, "a".repeat(64)));
    await mkdir(join(cache, `${"b".repeat(64)}-gzip-2-ptr`));
    await writeFile(p1!.path.replace(pristine, cache), "{not json");
    await writeFile(p2!.path.replace(pristine, cache), "x".repeat(10_000_000));
    expect(spawnSync("mkfifo", [join(cache, "d".repeat(64))]).status).toBe(0);
    await symlink("/etc/passwd", join(cache, "e".repeat(64)));
    await rm(join(cache, "mounts"), { recursive: true, force: true });
    await writeFile(join(cache, "mounts"), "a file where a folder belongs");
    await writeFile(join(cache, "uploads"), "another one");
    await mkdir(join(cache, "images"), { recursive: true });
    await writeFile(join(cache, "images", `${"c".repeat(64)}.json`), "[]");
    // A temp file of a run still alive (this test runner) must stay; a dead run's must go.
    const live = join(cache, `.tmp-${process.pid}-livefile`);
    await writeFile(live, "still being written");
    const dead = join(cache, `.tmp-${deadPid()}-deadfile`);
    await writeFile(dead, "left by a killed run");
    const result = await pushAndVerify(cache, "same HOME");
    expect(result.stderr).not.toContain("warning");
    expect(await readFile(live, "utf8")).toBe("still being written");
    expect(await lstat(dead).catch(() => undefined)).toBeUndefined();
    await expectCacheConsistent(cache);
  }, 60_000);
});

describe("the daemon source: a push folder that lies", () => {
  /** The layer and config the fake engine's image is made of (hostile-archives.ts's honest layer). */
  const GOOD_LAYER = makeLayerTar({ "etc/good.txt": "an honest layer that matches its diff_id\n" });

  async function daemonFixture(): Promise<{
    folder: string;
    engineHome: string;
    claimedId: string;
    engine: Awaited<ReturnType<typeof writeFakeEngine>>;
    wrongBytes: Uint8Array<ArrayBuffer>;
    wrongPath: string;
  }> {
    const base = join(dir, `daemon-${++counter}`);
    const folder = join(base, "push");
    await mkdir(folder, { recursive: true });
    const wrong = await writeWrongIdArchive(folder);
    const saved = await writeClassicDockerArchive(join(base, "saved.tar"), { layers: [GOOD_LAYER], config: wrong.claimedConfig, repoTag: "hostile/cached:1" });
    expect(saved.configDigest).toBe(`sha256:${wrong.claimedId}`);
    const engine = await writeFakeEngine(base, { id: wrong.claimedId, saveFrom: saved.path });
    const engineHome = join(base, "home");
    await mkdir(engineHome);
    return { folder, engineHome, claimedId: wrong.claimedId, engine, wrongBytes: new Uint8Array(await readFile(wrong.path)), wrongPath: wrong.path };
  }

  test("a <image id>.tar holding another image is set aside and the image saved again", async () => {
    const { folder, engineHome, claimedId, engine, wrongBytes, wrongPath } = await daemonFixture();
    // A `docker save` temp file of a killed run, and one of a run still going (this test runner's pid).
    const stale = join(folder, `.${"f".repeat(64)}.tar.tmp-${deadPid()}`);
    await writeFile(stale, "left by a killed docker save");
    const running = join(folder, `.${"e".repeat(64)}.tar.tmp-${process.pid}`);
    await writeFile(running, "a save still running");
    const registry = await startHostileRegistry();
    try {
      const result = await runHostileCli(["--engine", engine.path, `${registry.host}/${REPO}:1`], {
        env: { INSECURE_HTTP_PUSH: "true" },
        home: engineHome,
        cwd: folder,
      });
      if (result.code !== 0) console.error(result.stderr);
      expect(result.code).toBe(0);
      expect(result.stderr.split("\n")).toContain(
        `warning: ${wrongPath} does not hold image ${claimedId.slice(0, 12)}: moved it to ${claimedId}.tar.not-this-image, saving the image again`,
      );
      expect((await engine.calls()).filter((c) => c.startsWith("save "))).toEqual([`save ${registry.host}/${REPO}:1`]);
      // Set aside byte for byte; the new <id>.tar is the engine's save.
      expect(new Uint8Array(await readFile(`${wrongPath}.not-this-image`))).toEqual(wrongBytes);
      const pulled = await pullAndVerify({ ref: `${registry.host}/${REPO}:1`, tlsVerify: false });
      expect(pulled.configDigest).toBe(`sha256:${claimedId}`);
      expect(pulled.diffIds).toEqual([digestOf(GOOD_LAYER)]);
      expect(result.stdout).toBe(`${registry.host}/${REPO}:1@${pulled.manifestDigest}\n`);
      // A second run reuses the new archive: it holds the image.
      const again = await runHostileCli(["--engine", engine.path, `${registry.host}/${REPO}:1`], {
        env: { INSECURE_HTTP_PUSH: "true" },
        home: join(engineHome, "other"),
        cwd: folder,
      });
      expect(again.code).toBe(0);
      expect(again.stderr).toContain(`Reusing ${join(folder, `${claimedId}.tar`)} (image ${claimedId.slice(0, 12)})`);
      // The killed run's temp file is gone; the running one's is not.
      expect(await lstat(stale).catch(() => undefined)).toBeUndefined();
      expect(await readFile(running, "utf8")).toBe("a save still running");
    } finally {
      await registry.stop();
    }
  }, 60_000);

  test("an image rebuilt from the cache's record, whose cached blob was swapped, is saved again to repair it", async () => {
    const { folder, engineHome, claimedId, engine } = await daemonFixture();
    await rm(join(folder, `${claimedId}.tar`)); // no archive to reuse: the repair must save
    const env = { INSECURE_HTTP_PUSH: "true" };
    const first = await startHostileRegistry();
    try {
      // --rm-archive: the next runs find no <id>.tar, only the cache and its record.
      const result = await runHostileCli(["--engine", engine.path, "--rm-archive", `${first.host}/${REPO}:1`], { env, home: engineHome, cwd: folder });
      expect(result.code).toBe(0);
    } finally {
      await first.stop();
    }
    const cache = join(folder, ".cache");
    const [pointer] = await readCachePointers(cache);
    const poison = await replaceCachedBlobSameSize(cache, pointer!.digest);
    const registry = await startHostileRegistry();
    try {
      const result = await runHostileCli(["--engine", engine.path, `${registry.host}/${REPO}:1`], { env, home: engineHome, cwd: folder });
      if (result.code !== 0) console.error(result.stderr);
      expect(result.code).toBe(0);
      const lines = result.stderr.split("\n");
      expect(lines).toContain(`${registry.host}/${REPO}:1 (image ${claimedId.slice(0, 12)}): every layer is in ${cache}, no save needed`);
      expect(lines).toContain(
        `warning: layer 1/1: the cached blob ${pointer!.digest} holds other bytes (they hash to ${poison.actualDigest}); it was removed from ${cache}; saving the image again to repair the cache`,
      );
      expect((await engine.calls()).filter((c) => c.startsWith("save "))).toHaveLength(2);
      const pulled = await pullAndVerify({ ref: `${registry.host}/${REPO}:1`, tlsVerify: false });
      expect(pulled.configDigest).toBe(`sha256:${claimedId}`);
      expect(pulled.diffIds).toEqual([digestOf(GOOD_LAYER)]);
      expect(result.stdout).toBe(`${registry.host}/${REPO}:1@${pulled.manifestDigest}\n`);
      expect(manifestPuts(registry.registry, REPO)).toHaveLength(1);
      expect(digestOf(await readFile(join(cache, pointer!.digest.slice(7))))).toBe(pointer!.digest);
    } finally {
      await registry.stop();
    }
  }, 60_000);
});

describe("the daemon source: the cache's record of an image", () => {
  test("an image whose id is its manifest's digest (containerd store) is pushed again from the record with that same manifest", async () => {
    const base = join(dir, `record-${++counter}`);
    const folder = join(base, "push");
    const engineHome = join(base, "home");
    await mkdir(folder, { recursive: true });
    await mkdir(engineHome);
    const layers = [makeLayerTar({ "etc/one.txt": "one\n" }), makeLayerTar({ "etc/two.txt": deterministicBytes(64 * 1024, 3) })];
    const saved = await writeOciArchive(join(base, "saved.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))), repoTag: "hostile/cached:1" });
    const manifestDigest = saved.manifestDigest ?? "";
    const engine = await writeFakeEngine(base, { id: manifestDigest.slice(7), saveFrom: saved.path });
    const env = { INSECURE_HTTP_PUSH: "true" };
    for (const run of [1, 2]) {
      const registry = await startHostileRegistry();
      try {
        const result = await runHostileCli(["--engine", engine.path, `${registry.host}/${REPO}:1`], { env, home: engineHome, cwd: folder });
        if (result.code !== 0) console.error(result.stderr);
        expect(result.code).toBe(0);
        // The second run has every layer in the cache: no save, and still the source's own manifest.
        expect(result.stderr.includes("no save needed")).toBe(run === 2);
        expect(result.stdout).toBe(`${registry.host}/${REPO}:1@${manifestDigest}\n`);
        const pulled = await pullAndVerify({ ref: `${registry.host}/${REPO}:1`, tlsVerify: false });
        expect(pulled.manifestDigest).toBe(manifestDigest);
        expect(pulled.diffIds).toEqual(saved.diffIds);
      } finally {
        await registry.stop();
      }
    }
    expect((await engine.calls()).filter((c) => c.startsWith("save "))).toHaveLength(1);
  }, 60_000);
});
