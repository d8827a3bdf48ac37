/**
 * Faults injected by a proxy (test/support/fault-proxy.ts) in front of the real docker-registry and of
 * the serverless-registry emulation. Every push must end verified or fail clearly, re-sending at most
 * one chunk per fault. Each case prints a row `FAULT | ...` for the record.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { cp, readdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, runCli, spawnCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startFaultProxy, type FaultRule } from "../support/fault-proxy.ts";
import { digestOf, makeConfig, makeLayerTar, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { run } from "../support/ports.ts";
import { startServerlessEmulator, type Emulator } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";

const MiB = 1024 * 1024;
const CHUNK = 6 * MiB;
const EMU = { username: "user", password: "secret" };

let registry: DockerRegistry;
let emulator: Emulator;
let work: string;
let image: WrittenArchive;
/** A push folder whose .cache holds the image's compressed layers: each push gets a copy of its own. */
let seeded: string;
let repoCount = 0;
const tempDir = tempDirs();

beforeAll(async () => {
  [registry, emulator, work] = await Promise.all([
    startDockerRegistry(),
    startServerlessEmulator({ ...EMU, minChunk: 5 * MiB, maxChunk: CHUNK }),
    tempDir("faults-"),
  ]);
  // Random bytes do not compress: the first layer stays ~20 MiB, four chunks of 6 MiB.
  const layers = [makeLayerTar({ "data/noise.bin": randomBytes(20 * MiB) }), makeLayerTar({ "etc/motd": "hello\n" })];
  image = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))) });
  // Compressed once here, so every fault below meets a blob of known size going in 4 chunks, whatever ran before.
  seeded = await tempDir("faults-seed-");
  const seed = await runCli(["--archive", image.path, `${emulator.host}/faults/seed:1`], { cwd: seeded, ...loginAs(EMU) });
  if (seed.code !== 0) throw new Error(`seeding the cache failed:\n${seed.stderr}`);
  const blobs = (await readdir(join(seeded, ".cache"))).filter((f) => /^[a-f0-9]{64}$/.test(f));
  const sizes = await Promise.all(blobs.map(async (f) => ({ f, size: (await stat(join(seeded, ".cache", f))).size })));
  bigLayerPut.pathIncludes = `digest=sha256:${sizes.sort((a, b) => b.size - a.size)[0]!.f}`;
}, 60_000);

/** A fresh push folder with its own copy of the seeded cache. */
async function seededFolder(prefix: string): Promise<string> {
  const cwd = await tempDir(prefix);
  await cp(join(seeded, ".cache"), join(cwd, ".cache"), { recursive: true, preserveTimestamps: true });
  return cwd;
}

afterAll(async () => {
  await Promise.all([registry?.stop(), emulator?.stop()]);
});

type Upstream = "registry" | "serverless";

function upstreamOf(kind: Upstream) {
  return kind === "registry"
    ? { url: registry.url, host: registry.host, username: registry.username, password: registry.password, args: ["--chunk-size", "6MiB"] }
    : { url: emulator.url, host: emulator.host, ...EMU, args: [] };
}

/**
 * Pushes through a fresh proxy into a fresh repository and push folder, so nothing is already present. `violations`:
 * the serverless emulation's rule log for this push (the tests run one at a time).
 */
async function pushThrough(kind: Upstream, rules: FaultRule[], extra: string[] = [], folder?: string) {
  const upstream = upstreamOf(kind);
  // A push folder of its own unless the test shares one on purpose: no push finds another's .cache.
  const cwd = folder ?? (await seededFolder("push-"));
  const proxy = await startFaultProxy(upstream.url, rules);
  const repository = `faults/case${++repoCount}`;
  const started = Date.now();
  const ruleLog = emulator.violations.length;
  try {
    const result = await runCli(["--archive", image.path, ...upstream.args, ...extra, `${proxy.host}/${repository}:1`], { cwd, ...loginAs(upstream) });
    return { ...result, proxy, repository, upstream, seconds: (Date.now() - started) / 1000, violations: emulator.violations.slice(ruleLog) };
  } finally {
    await proxy.stop();
  }
}

/** Bytes the proxy received beyond what the pushed image needed: what faults made us send again. */
async function verifyAndCountResent(push: Awaited<ReturnType<typeof pushThrough>>): Promise<number> {
  const { upstream, repository, proxy } = push;
  const pulled = await pullAndVerify({ ref: `${upstream.host}/${repository}:1`, username: upstream.username, password: upstream.password, tlsVerify: false });
  expect(pulled.diffIds).toEqual(image.diffIds);
  expect(pulled.configDigest).toBe(image.configDigest);
  const needed = pulled.layerSizes.reduce((a, b) => a + b, 0) + pulled.configBytes.length + pulled.manifestBytes.length;
  return proxy.requests.reduce((sum, r) => sum + r.bodyBytes, 0) - needed;
}

const bigLayerPut: FaultRule = { method: "PUT", pathIncludes: "digest=<the big layer's>", nth: 1, fault: { kind: "status", status: 503 } };

const cases: { name: string; upstream: Upstream; rules: FaultRule[]; extra?: string[]; maxResent: number; log?: RegExp }[] = [
  {
    name: "connection cut halfway through the 2nd PATCH",
    upstream: "serverless",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "cut-body", after: 3 * MiB } }],
    maxResent: CHUNK,
  },
  {
    name: "connection cut halfway through the 2nd PATCH, before the registry",
    upstream: "registry",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "cut-body", after: 3 * MiB } }],
    maxResent: CHUNK,
  },
  // When the half body reaches distribution, it may drop the session (GET status answers 404, timing
  // decides): then the blob starts again in a new session, re-sending the chunk before it as well.
  {
    name: "connection cut halfway through the 2nd PATCH, half of it reaching the registry",
    upstream: "registry",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "cut-body", after: 3 * MiB, forward: true } }],
    maxResent: 2 * CHUNK,
    log: /chunk 2\/4 .*retrying from where the registry stands/,
  },
  {
    name: "503 to the 3rd PATCH",
    upstream: "serverless",
    rules: [{ method: "PATCH", nth: 3, fault: { kind: "status", status: 503 } }],
    maxResent: CHUNK,
    log: /chunk 3\/4 .*HTTP 503; retrying from where the registry stands/,
  },
  { name: "503 to the 3rd PATCH", upstream: "registry", rules: [{ method: "PATCH", nth: 3, fault: { kind: "status", status: 503 } }], maxResent: CHUNK },
  {
    name: "522 (Cloudflare HTML) to the 2nd PATCH",
    upstream: "serverless",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "status", status: 522 } }],
    maxResent: CHUNK,
  },
  {
    name: "429 Retry-After: 1 to the first POST",
    upstream: "serverless",
    rules: [{ method: "POST", nth: 1, fault: { kind: "status", status: 429, headers: { "Retry-After": "1" } } }],
    maxResent: 0,
    log: /HTTP 429; retrying in 1\.0 s/,
  },
  {
    name: "429 Retry-After: 1 to the first PATCH",
    upstream: "registry",
    rules: [{ method: "PATCH", nth: 1, fault: { kind: "status", status: 429, headers: { "Retry-After": "1" } } }],
    maxResent: CHUNK,
    log: /HTTP 429; retrying from where the registry stands in 1\.0 s/,
  },
  {
    name: "answer to the 2nd PATCH stalled past --timeout 2",
    upstream: "serverless",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "stall", ms: 5000 } }],
    extra: ["--timeout", "2"],
    maxResent: CHUNK,
    log: /no progress for 2 s/,
  },
  // distribution forgets a session whose PATCH landed but whose answer was lost (GET status answers
  // 404), so the blob starts again in a new session: the one case the issue allows more than a chunk.
  {
    name: "answer to the 2nd PATCH stalled past --timeout 2",
    upstream: "registry",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "stall", ms: 5000 } }],
    extra: ["--timeout", "2"],
    maxResent: 21 * MiB + CHUNK,
    log: /lost the upload session; uploading the blob again/,
  },
  {
    name: "stale-state 416 with a fresh Location to the 2nd PATCH",
    upstream: "serverless",
    rules: [{ method: "PATCH", nth: 2, fault: { kind: "stale-416" } }],
    maxResent: CHUNK,
    log: /HTTP 416; retrying from where the registry stands/,
  },
  // The big layer's empty final PUT, named by its digest (set once the seeded cache tells it).
  {
    name: "503 to the final PUT of the chunked layer",
    upstream: "serverless",
    rules: [bigLayerPut],
    extra: ["--concurrency", "1"],
    maxResent: 0,
    log: /completing the chunked upload: HTTP 503; retrying/,
  },
  {
    name: "503 to a monolithic PUT (the config)",
    upstream: "registry",
    rules: [{ method: "PUT", pathIncludes: "digest=", nth: 3, fault: { kind: "status", status: 503 } }],
    extra: ["--concurrency", "1"],
    maxResent: 1000,
    log: /config sha256:[a-f0-9]{12}: uploading in one request: HTTP 503; retrying in a new session/,
  },
  {
    name: "connection reset on the manifest PUT",
    upstream: "registry",
    rules: [{ method: "PUT", pathIncludes: "/manifests/", nth: 1, times: 2, fault: { kind: "reset" } }],
    maxResent: 0,
  },
];

describe("faults: the push completes, the image verifies, at most one chunk is re-sent per fault", () => {
  for (const c of cases) {
    test(`${c.name} (${c.upstream})`, async () => {
      const push = await pushThrough(c.upstream, c.rules, c.extra);
      expect(push.stderr).not.toContain(push.upstream.password);
      expect(push.code).toBe(0);
      expect(push.proxy.requests.some((r) => r.faulted)).toBe(true);
      if (c.log) expect(push.stderr).toMatch(c.log);
      // Recovering must not break a serverless-registry rule (a stale Location, a part of another
      // size, a body on the final PUT), even where the real server would let the image verify.
      expect(push.violations).toEqual([]);
      const resent = await verifyAndCountResent(push);
      console.log(`FAULT | ${c.name} | ${c.upstream} | pushed OK | re-sent ${resent} bytes | ${push.seconds.toFixed(1)} s`);
      expect(resent).toBeLessThanOrEqual(c.maxResent);
    }, 60_000);
  }
});

describe("a stall on the first PATCH, before the link's pace is known", () => {
  // Until one upload has shown the link's pace, the client allows a body's tail time to leave the
  // socket buffers at a slow 128 kB/s before calling the answer late: for a 1 MiB chunk about 8 s on top
  // of --timeout. Small chunks keep that short; the stall outlasts it by far.
  const SMALL = 1024 * 1024;
  for (const kind of ["serverless", "registry"] as const) {
    test(`the answer to the 1st PATCH held for 40 s: given up on after the allowance, then resumed (${kind})`, async () => {
      const small = kind === "serverless" ? await startServerlessEmulator({ ...EMU, minChunk: SMALL, maxChunk: SMALL }) : undefined;
      const upstream = small ? { url: small.url, host: small.host, ...EMU } : upstreamOf("registry");
      const proxy = await startFaultProxy(upstream.url, [{ method: "PATCH", nth: 1, fault: { kind: "stall", ms: 40_000 } }]);
      try {
        const started = Date.now();
        const result = await runCli(["--chunk-size", "1MiB", "--timeout", "2", "--archive", image.path, `${proxy.host}/faults/first-stall:1`], {
          cwd: await seededFolder("first-stall-"),
          ...loginAs(upstream),
        });
        const seconds = (Date.now() - started) / 1000;
        expect(result.code).toBe(0);
        expect(result.stderr).toMatch(
          /\nwarning: layer 1\/2 sha256:[a-f0-9]{12}: chunk 1\/21 \(bytes 0-1048575\): no progress for 2 s on the connection to http:\/\/[0-9.:]+; retrying from where the registry stands/,
        );
        // Not stuck until the stall ends: the allowance (2 s + 1 MiB at 128 kB/s) and the rest of the push.
        expect(seconds).toBeLessThan(35);
        const stalled = proxy.requests.find((r) => r.method === "PATCH");
        expect(stalled).toMatchObject({ status: 202, bodyBytes: SMALL, clientClosed: true });
        expect(small?.violations ?? []).toEqual([]);
        const pulled = await pullAndVerify({
          ref: `${upstream.host}/faults/first-stall:1`,
          username: upstream.username,
          password: upstream.password,
          tlsVerify: false,
        });
        expect(pulled.diffIds).toEqual(image.diffIds);
        console.log(`FAULT | answer to the 1st PATCH held 40 s, --timeout 2, 1 MiB chunks | ${kind} | pushed OK | ${seconds.toFixed(1)} s`);
      } finally {
        await proxy.stop();
        await small?.stop();
      }
    }, 60_000);
  }
});

describe("faults that must fail the push", () => {
  test("too many failures: exit 1 naming the blob and the last error, and no manifest sent", async () => {
    const push = await pushThrough("serverless", [{ method: "PATCH", nth: 1, times: Infinity, fault: { kind: "status", status: 503 } }], ["--retries", "2"]);
    expect(push.code).toBe(1);
    expect(push.stderr).toMatch(/error: layer 1\/2 sha256:[a-f0-9]{12}: chunk 1\/4 \(bytes 0-6291455\): HTTP 503 \(gave up after 3 attempts\)/);
    expect(push.proxy.requests.filter((r) => r.method === "PATCH")).toHaveLength(3);
    expect(push.proxy.requests.some((r) => r.path.includes("/manifests/"))).toBe(false);
    expect(push.violations).toEqual([]);
    console.log(`FAULT | 503 to every PATCH, --retries 2 | serverless | failed, exit 1, no manifest | - | ${push.seconds.toFixed(1)} s`);
  }, 60_000);

  test.each([
    [403, "DENIED", "requested access to the resource is denied", "(the user may not push to this repository (a read-only user?))"],
    [404, "NAME_UNKNOWN", "repository name not known to registry", ""],
  ])(
    "%d %s on POST: a clear message and no retry",
    async (status, code, message, hint) => {
      const body = JSON.stringify({ errors: [{ code, message }] });
      // One layer at a time, so the first refusal is the only POST: nothing is retried.
      const push = await pushThrough(
        "registry",
        [{ method: "POST", nth: 1, times: Infinity, fault: { kind: "status", status, body, contentType: "application/json" } }],
        ["--concurrency", "1"],
      );
      expect(push.code).toBe(1);
      expect(push.stderr).toContain(`opening an upload session: HTTP ${status} ${code}: ${message}${hint ? ` ${hint}` : ""}`);
      expect(push.stderr).not.toContain("retrying");
      expect(push.proxy.requests.filter((r) => r.method === "POST")).toHaveLength(1);
    },
    60_000,
  );
});

describe("interruption and the cache", () => {
  /**
   * Starts a push through a proxy in front of the emulation whose 2nd PATCH is processed upstream but
   * its answer held; resolves once that chunk is stored, with the CLI still waiting for the answer.
   */
  async function midChunk(repository: string, rules: FaultRule[] = []) {
    const cwd = await tempDir("interrupted-");
    const proxy = await startFaultProxy(emulator.url, [{ method: "PATCH", nth: 2, fault: { kind: "stall", ms: 60_000 } }, ...rules]);
    const ref = `${proxy.host}/${repository}:1`;
    const cli = await spawnCli(["--archive", image.path, ref], { cwd, ...loginAs(EMU), timeoutMs: 50_000 });
    await proxy.waitFor(() => proxy.requests.filter((r) => r.method === "PATCH")[1]?.status === 202, 40_000);
    return { cwd, proxy, ref, cli };
  }

  for (const [signal, exitCode] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    test(`${signal} in the middle of a chunked upload: exit ${exitCode}, session deleted, no temp files; a second run completes`, async () => {
      const ruleLog = emulator.violations.length;
      const { cwd, proxy, ref, cli } = await midChunk(`faults/${signal.toLowerCase()}`);
      try {
        cli.kill(signal);
        const { code, stderr } = await cli.finished;
        expect(code).toBe(exitCode);
        expect(stderr).toContain(`warning: ${signal}: stopping and cancelling open uploads (again to quit at once)\n`);
        expect(stderr).toEndWith(`\nerror: interrupted by ${signal}: open upload sessions were cancelled and temporary files removed\n`);
        expect(proxy.requests.filter((r) => r.method === "DELETE").map((r) => r.status)).toEqual([204]);
        expect((await readdir(join(cwd, ".cache"))).filter((f) => f.startsWith(".tmp"))).toEqual([]);
        proxy.clearRules();

        const again = await runCli(["--archive", image.path, ref], { cwd, ...loginAs(EMU) });
        expect(again.code).toBe(0);
        expect(again.stderr).toContain("from .cache");
        expect(emulator.violations.slice(ruleLog)).toEqual([]);
        await pullAndVerify({ ref: `${emulator.host}/faults/${signal.toLowerCase()}:1`, ...EMU, tlsVerify: false });
      } finally {
        cli.kill("SIGKILL");
        await proxy.stop();
      }
    }, 60_000);
  }

  test("a second signal while the cleanup hangs quits at once, with that signal's exit code (130)", async () => {
    // The session's DELETE is answered upstream but the answer held: the cleanup cannot finish.
    const { proxy, cli } = await midChunk("faults/twice", [{ method: "DELETE", nth: 1, times: Infinity, fault: { kind: "stall", ms: 60_000 } }]);
    try {
      cli.kill("SIGTERM");
      await proxy.waitFor((r) => r.method === "DELETE");
      const second = Date.now();
      cli.kill("SIGINT");
      const { code, stderr } = await cli.finished;
      const quitIn = Date.now() - second;
      expect(code).toBe(130);
      expect(stderr.match(/stopping and cancelling open uploads/g)).toHaveLength(1);
      // At once: before the held DELETE is given up on (its 5 s idle time), so the cleanup never ended
      // and the run never got to print how it ended.
      expect(quitIn).toBeLessThan(4000);
      expect(stderr).not.toContain("error: interrupted");
      const deleted = await proxy.waitFor((r) => r.method === "DELETE" && r.doneAt !== undefined);
      expect(deleted).toMatchObject({ status: 204, clientClosed: true });
    } finally {
      cli.kill("SIGKILL");
      await proxy.stop();
    }
  }, 60_000);

  test("a truncated, a corrupted and a missing cache blob are rebuilt, and the image verifies", async () => {
    const cwd = await tempDir("cache-lies-");
    const first = await pushThrough("registry", [], [], cwd);
    expect(first.code).toBe(0);
    const cache = join(cwd, ".cache");
    const big = async () => {
      const blobs = (await readdir(cache)).filter((f) => /^[a-f0-9]{64}$/.test(f));
      const sizes = await Promise.all(blobs.map(async (f) => ({ f, size: (await stat(join(cache, f))).size })));
      return join(cache, sizes.sort((a, b) => b.size - a.size)[0]!.f);
    };
    const damage: [string, (path: string) => Promise<void>][] = [
      ["truncated", (path) => truncate(path, 1000)],
      [
        "same size, one byte changed",
        async (path) => {
          const bytes = new Uint8Array(await Bun.file(path).arrayBuffer());
          bytes[5000] = (bytes[5000] ?? 0) ^ 1;
          await writeFile(path, bytes);
        },
      ],
      ["missing (the -ptr names a file that is gone)", (path) => rm(path)],
    ];
    for (const [how, hurt] of damage) {
      await hurt(await big());
      const push = await pushThrough("registry", [], [], cwd);
      expect(push.code).toBe(0);
      expect(push.stderr).toMatch(/layer 1\/2 sha256:[a-f0-9]{12}: pushed [\d.]+ MB in \d+ chunks \(compressed now\)/);
      await verifyAndCountResent(push);
      console.log(`CACHE | ${how} | rebuilt and verified`);
    }
  }, 90_000);

  test("two runs of the same image in one folder at once both succeed", async () => {
    const cwd = await tempDir("concurrent-");
    const [a, b] = await Promise.all([pushThrough("serverless", [], [], cwd), pushThrough("serverless", [], [], cwd)]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect([...a.violations, ...b.violations]).toEqual([]);
    await verifyAndCountResent(a);
    await verifyAndCountResent(b);
    expect((await readdir(join(cwd, ".cache"))).filter((f) => f.startsWith(".tmp"))).toEqual([]);
  }, 60_000);

  test("an unwritable cache folder is named in a clear message", async () => {
    const cwd = await tempDir("unwritable-");
    await writeFile(join(cwd, ".cache"), "a file where the folder should be");
    const push = await pushThrough("serverless", [], [], cwd);
    expect(push.code).toBe(1);
    expect(push.stderr).toContain(`error: cannot create the cache folder ${join(cwd, ".cache")}`);
  }, 60_000);

  test.skipIf(process.getuid?.() !== 0)(
    "a full disk is named in a clear message and leaves no partial cache file",
    async () => {
      const cwd = await tempDir("full-disk-");
      const mounted = await run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", cwd]);
      expect(mounted.code).toBe(0);
      try {
        const push = await pushThrough("serverless", [], [], cwd);
        expect(push.code).toBe(1);
        expect(push.stderr).toContain(`cannot compress layer 1/2 into ${join(cwd, ".cache")}`);
        expect(push.stderr).toMatch(/ENOSPC|no space left/i);
        expect((await readdir(join(cwd, ".cache"))).filter((f) => f.startsWith(".tmp"))).toEqual([]);
      } finally {
        await run(["umount", cwd]);
      }
    },
    60_000,
  );
});
