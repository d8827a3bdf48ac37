/**
 * The front door (issue 11): what a new user meets. The test preflight on a machine that lacks the
 * programs, the 413 hint behind nginx's client_max_body_size (and following it works), the notice when
 * the registry lowers --chunk-size, --json on failure, a lost final-PUT answer costing one HEAD, and the
 * summary's re-sent bytes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { REPO_ROOT, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startFaultProxy } from "../support/fault-proxy.ts";
import { digestOf, makeConfig, makeLayerTar, makeTempDir, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { startBodyLimitProxy } from "../support/nginx.ts";
import { run } from "../support/ports.ts";
import { startServerlessEmulator, type Emulator } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";

const MiB = 1024 * 1024;
const EMU = { username: "user", password: "secret" };

let registry: DockerRegistry;
let emulator: Emulator;
let work: string;
let image: WrittenArchive;

beforeAll(async () => {
  [registry, emulator, work] = await Promise.all([
    startDockerRegistry(),
    startServerlessEmulator({ ...EMU, minChunk: 5 * MiB, maxChunk: 6 * MiB }),
    makeTempDir("front-door-"),
  ]);
  // Random bytes do not compress: the first layer stays ~14 MiB, over nginx's 10m and the emulator's 6 MiB.
  const layers = [makeLayerTar({ "data/noise.bin": randomBytes(14 * MiB) }), makeLayerTar({ "etc/motd": "hello\n" })];
  image = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))) });
}, 60_000);

afterAll(async () => {
  await Promise.all([registry?.stop(), emulator?.stop()]);
  await rm(work, { recursive: true, force: true });
});

const toRegistry = () => ({ stdin: `${registry.password}\n`, env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" } });
const toEmulator = () => ({ stdin: `${EMU.password}\n`, env: { USERNAME_REGISTRY: EMU.username, INSECURE_HTTP_PUSH: "true" } });

describe("the test preflight", () => {
  test("a run of the integration tests on a machine without their programs stops at once with one message", async () => {
    // A PATH with Bun and nothing else: no docker-registry, podman, skopeo, ...
    const bin = join(work, "only-bun");
    await mkdir(bin, { recursive: true });
    await symlink(process.execPath, join(bin, "bun"));
    const result = await run([join(bin, "bun"), "test", "test/integration/push-zstd.test.ts"], {
      cwd: REPO_ROOT,
      env: { PATH: bin, HOME: work },
      timeoutMs: 60_000,
    });
    expect(result.code).toBe(1);
    // The preflight also looks in /usr/sbin and /sbin, where dockerd and nginx live on Debian.
    const programs = ["docker-registry", "htpasswd", "podman", "newuidmap", "skopeo", "umoci", "nginx", "dockerd", "zstd", "gzip", "tar", "openssl"];
    const missing = programs.filter((p) => Bun.which(p, { PATH: `${bin}:/usr/sbin:/sbin` }) === null);
    expect(missing.length).toBeGreaterThan(0);
    expect(result.stderr).toContain(`The integration tests need programs this machine lacks: ${missing.join(", ")} (Debian packages: `);
    expect(result.stderr).toContain("Install them with:  bun run setup   (Debian/Ubuntu, runs apt-get; as root or with sudo)");
    expect(result.stderr).toContain("Or run only the unit tests, which need nothing but Bun:  bun test test/unit");
    // Stopped before any test ran: no wall of failures.
    expect(`${result.stdout}${result.stderr}`).not.toMatch(/\(fail\)|\(pass\)/);
  });

  test("the unit tests alone need nothing but Bun", async () => {
    const bin = join(work, "only-bun");
    const result = await run([join(bin, "bun"), "test", "test/unit/chunks.test.ts"], { cwd: REPO_ROOT, env: { PATH: bin, HOME: work }, timeoutMs: 60_000 });
    expect(result.stderr).not.toContain("need programs this machine lacks");
    expect(result.code).toBe(0);
  });
});

describe("body limits", () => {
  test("behind nginx's client_max_body_size 10m: the 413 names a size that passes, and following it pushes the image", async () => {
    const proxy = await startBodyLimitProxy({ upstream: registry.url, maxBodySize: "10m" });
    try {
      const refused = await runCli(["--archive", image.path, `${proxy.host}/front/limited:1`], { ...toRegistry(), cwd: work });
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe("");
      // nginx answers once the streamed body passed 10m: the hint is below what it refused.
      const refusedAt = Number(/the request body \((\d+) bytes\)/.exec(refused.stderr)?.[1]);
      expect(refusedAt).toBeGreaterThan(10 * MiB);
      expect(refused.stderr).toMatch(
        /error: layer 1\/2: streaming the upload from byte 0: HTTP 413 Request Entity Too Large: .*: pass a smaller --chunk-size \(or CHUNK_SIZE\), e\.g\. --chunk-size (9MB|5MiB)\)\n$/,
      );
      const hint = /--chunk-size (\d+MB|5MiB)\)\n$/.exec(refused.stderr)?.[1];
      const followed = await runCli(["--archive", image.path, "--chunk-size", hint ?? "", `${proxy.host}/front/limited:1`], { ...toRegistry(), cwd: work });
      expect(followed.code).toBe(0);
      const pulled = await pullAndVerify({
        ref: `${registry.host}/front/limited:1`,
        username: registry.username,
        password: registry.password,
        tlsVerify: false,
      });
      expect(pulled.diffIds).toEqual(image.diffIds);
    } finally {
      await proxy.stop();
    }
  }, 60_000);

  test("a --chunk-size above what the registry advertises is lowered, and the user is told", async () => {
    const result = await runCli(["--archive", image.path, "--chunk-size", "200MB", `${emulator.host}/front/lowered:1`], { ...toEmulator(), cwd: work });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(
      /warning: layer 1\/2( sha256:[a-f0-9]{12})?: the registry accepts at most 6291456 bytes per request: sending chunks of 6291456 bytes, not the 200000000 of --chunk-size\n/,
    );
    expect(emulator.violations).toEqual([]);
  }, 60_000);
});

describe("failures a script can read", () => {
  test("--json on failure prints one JSON object with the error on stdout and exits 1", async () => {
    const result = await runCli(["--json", "--archive", join(work, "missing.tar"), `${registry.host}/front/json:1`], { ...toRegistry(), cwd: work });
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toEqual({ error: { message: `cannot open archive ${join(work, "missing.tar")}: no such file or folder`, exitCode: 1 } });
    expect(result.stdout.trimEnd().split("\n")).toHaveLength(1);
  });

  test("a lost answer to the final chunked PUT costs one HEAD, not retried PUTs", async () => {
    // The proxy lets serverless-registry complete the upload, then answers 500 instead of its 201. The
    // empty PUT is the one that commits chunks, whichever blob happens to be uploaded first.
    const proxy = await startFaultProxy(emulator.url, [
      { method: "PUT", pathIncludes: "digest=", emptyBody: true, nth: 1, fault: { kind: "lost-answer", status: 500 } },
    ]);
    try {
      const result = await runCli(["--archive", image.path, "--concurrency", "1", `${proxy.host}/front/lost:1`], { ...toEmulator(), cwd: work });
      expect(result.code).toBe(0);
      const lost = proxy.requests.findIndex((r) => r.fault === "lost-answer");
      expect(lost).toBeGreaterThanOrEqual(0);
      expect(proxy.requests[lost]!.upstreamStatus).toBe(201);
      const digest = new URLSearchParams(proxy.requests[lost]!.query).get("digest");
      const after = proxy.requests
        .slice(lost + 1)
        .filter((r) => r.path.endsWith(`/blobs/${digest}`) || (r.method === "PUT" && r.query.includes(`digest=${digest}`)));
      // Exactly one HEAD of that blob, and no PUT of it again.
      expect(after.map((r) => r.method)).toEqual(["HEAD"]);
      expect(emulator.violations).toEqual([]);
    } finally {
      await proxy.stop();
    }
  }, 60_000);

  test("a lost answer to a one-request PUT costs one HEAD, not the blob sent again", async () => {
    // A PUT with a body is a whole blob in one request: the small layer or the config.
    const proxy = await startFaultProxy(registry.url, [
      { method: "PUT", pathIncludes: "digest=", emptyBody: false, nth: 1, fault: { kind: "lost-answer", status: 500 } },
    ]);
    try {
      const result = await runCli(["--archive", image.path, "--concurrency", "1", "--chunk-size", "6MiB", `${proxy.host}/front/lost-one:1`], {
        ...toRegistry(),
        cwd: work,
      });
      expect(result.code).toBe(0);
      const lost = proxy.requests.findIndex((r) => r.fault === "lost-answer");
      expect(lost).toBeGreaterThanOrEqual(0);
      expect(proxy.requests[lost]!.upstreamStatus).toBe(201);
      expect(Number(proxy.requests[lost]!.headers["content-length"])).toBeGreaterThan(0);
      const digest = new URLSearchParams(proxy.requests[lost]!.query).get("digest");
      const after = proxy.requests.slice(lost + 1).filter((r) => r.path.endsWith(`/blobs/${digest}`) || r.query.includes(`digest=${digest}`));
      expect(after.map((r) => r.method)).toEqual(["HEAD"]);
    } finally {
      await proxy.stop();
    }
  }, 60_000);

  test("the summary counts the bytes re-sent after a fault", async () => {
    // Half of the second chunk is cut: those bytes, and the chunk sent again, are re-sent bytes.
    const proxy = await startFaultProxy(emulator.url, [{ method: "PATCH", nth: 2, fault: { kind: "cut-body", after: 3 * MiB } }]);
    try {
      const result = await runCli(["--json", "--archive", image.path, "--concurrency", "1", `${proxy.host}/front/resent:1`], { ...toEmulator(), cwd: work });
      expect(result.code).toBe(0);
      const report = JSON.parse(result.stdout) as { bytesSent: number; bytesResent: number; blobs: { size: number; status: string }[] };
      const blobBytes = report.blobs.filter((b) => b.status === "pushed").reduce((sum, b) => sum + b.size, 0);
      const reached = proxy.requests
        .filter((r) => r.method === "PATCH" || (r.method === "PUT" && r.query.includes("digest=")))
        .reduce((sum, r) => sum + r.bodyBytes, 0);
      // Re-sent = what went beyond the blobs: at least what reached the registry twice; what the kernel
      // still buffered of the cut chunk (never more than that chunk) counts as sent too.
      expect(report.bytesResent).toBe(report.bytesSent - blobBytes);
      expect(report.bytesResent).toBeGreaterThanOrEqual(reached - blobBytes);
      expect(report.bytesResent).toBeLessThanOrEqual(reached - blobBytes + 6 * MiB);
      expect(reached - blobBytes).toBeGreaterThan(0);
      const summary = result.stderr.split("\n").find((l) => / bytes sent/.test(l)) ?? "";
      expect(summary).toBe(
        `3 blobs: 3 pushed, 0 already present; ${report.bytesSent} bytes sent (${(report.bytesResent / 1e6).toFixed(1)} MB of it re-sent after faults)`,
      );
    } finally {
      await proxy.stop();
    }
  }, 60_000);
});
