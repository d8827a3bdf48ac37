/**
 * Proves test/support/dockerd.ts: three private dockerd 20.10 run side by side (two supervising their
 * own containerd, one on a containerd we start), each entirely under its temp dir; load, inspect, save and
 * a plain-http pull from a local docker-registry work; the debug log shows each API call; stop() leaves
 * no process, mount or file behind.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { isSaveCall, startDockerd, SYSTEM_CONTAINERD_SOCKET, type Dockerd } from "../support/dockerd.ts";
import { makeSampleImage, makeTempDir, writeClassicDockerArchive, writeDocker25Archive, need } from "../support/fixtures.ts";
import { skopeoPush } from "../support/skopeo.ts";

const SLOW = 120_000;

let supervised: Dockerd | undefined;
let supervised2: Dockerd | undefined;
let privateCd: Dockerd | undefined;
let registry: DockerRegistry | undefined;
let work: string | undefined;

beforeAll(async () => {
  await Promise.all([
    startDockerd({ containerd: existsSync(SYSTEM_CONTAINERD_SOCKET) ? "private" : "supervised" }).then((d) => {
      supervised = d;
    }),
    startDockerd().then((d) => {
      supervised2 = d;
    }),
    startDockerd({ containerd: "private" }).then((d) => {
      privateCd = d;
    }),
    startDockerRegistry().then((r) => {
      registry = r;
    }),
    makeTempDir().then((d) => {
      work = d;
    }),
  ]);
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled([
    supervised?.stop(),
    supervised2?.stop(),
    privateCd?.stop(),
    registry?.stop(),
    work === undefined ? undefined : rm(work, { recursive: true, force: true }),
  ]);
  for (const r of results) if (r.status === "rejected") console.error("dockerd test cleanup failed:", r.reason);
}, SLOW);

test(
  "three daemons run side by side, each with its containerd under its own temp dir",
  async () => {
    const a = need(supervised, "dockerd A");
    const a2 = need(supervised2, "dockerd A2");
    const b = need(privateCd, "dockerd B");
    expect(new Set([a.dir, a2.dir, b.dir]).size).toBe(3);
    expect(b.containerdMode).toBe("private");
    expect(a2.containerdMode).toBe(a.containerdMode);
    for (const d of [a, a2, b]) {
      expect(d.dockerHost).toBe(`unix://${join(d.dir, "docker.sock")}`);
      expect(d.containerdSocket.startsWith(`${d.dir}/`)).toBe(true);
      expect(existsSync(d.containerdSocket)).toBe(true);
      const { stdout } = await d.dockerOk(["info", "--format", "{{.DockerRootDir}} {{.Driver}}"]);
      expect(stdout.trim()).toBe(`${d.dataRoot} vfs`);
    }
    for (const d of [a, a2]) {
      if (d.containerdMode !== "supervised") continue;
      // dockerd's own containerd config: every path in it is inside the temp dir.
      const toml = await readFile(join(d.dir, "x", "containerd", "containerd.toml"), "utf8");
      const paths = [...toml.matchAll(/"(\/[^"]+)"/g)].map((m) => m[1] ?? "");
      expect(paths.length).toBeGreaterThan(3);
      for (const p of paths) expect(p.startsWith(`${d.dir}/`)).toBe(true);
      expect(readFileSync(d.logPath, "utf8")).toContain("starting daemon managed containerd");
    }
    expect(existsSync(SYSTEM_CONTAINERD_SOCKET)).toBe(false);
  },
  SLOW,
);

test(
  "load + inspect log no save call; docker save does",
  async () => {
    const d = need(supervised, "dockerd A");
    const dir = need(work, "work dir");
    const written = await writeClassicDockerArchive(join(dir, "classic.tar"), { ...makeSampleImage({ bigBytes: 4096 }), repoTag: "fixture/loaded:1" });
    const before = d.apiCalls().length;
    expect(await d.load(written.path)).toEqual(["fixture/loaded:1"]);
    expect(await d.imageId("fixture/loaded:1")).toBe(written.configDigest);
    const calls = d.apiCalls().slice(before);
    expect(calls).toContain("GET /v1.41/images/fixture/loaded:1/json");
    expect(calls.some((c) => c.startsWith("POST /v1.41/images/load"))).toBe(true);
    expect(calls.some(isSaveCall)).toBe(false);

    const mark = d.apiCalls().length;
    await d.dockerOk(["save", "--output", join(dir, "saved.tar"), "fixture/loaded:1"]);
    const saveCalls = d.apiCalls().slice(mark).filter(isSaveCall);
    expect(saveCalls).toEqual(["GET /v1.41/images/get?names=fixture%2Floaded%3A1"]);
  },
  SLOW,
);

test(
  "pulls over plain http from a 127.0.0.1 docker-registry (login into a private DOCKER_CONFIG)",
  async () => {
    const d = need(privateCd, "dockerd B");
    const reg = need(registry, "registry");
    const dir = need(work, "work dir");
    const written = await writeDocker25Archive(join(dir, "d25.tar"), makeSampleImage({ bigBytes: 8192 }));
    const ref = `${reg.host}/team/pulled:1`;
    await skopeoPush({ source: `docker-archive:${written.path}`, ref, username: reg.username, password: reg.password });
    await d.login(reg.host, reg.username, reg.password);
    expect(existsSync(join(d.dir, "docker-config", "config.json"))).toBe(true);
    expect(await d.pull(ref)).toBe(written.configDigest);
    expect(await d.pull(ref, { os: "linux", arch: "amd64" })).toBe(written.configDigest);
  },
  SLOW,
);

test(
  "stop() leaves no process, mount or file",
  async () => {
    const d = need(privateCd, "dockerd B");
    const pidFile = join(d.dir, "pid");
    const dockerdPid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
    await d.stop();
    await d.stop();
    expect(existsSync(d.dir)).toBe(false);
    expect(() => process.kill(dockerdPid, 0)).toThrow();
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(d.dir);
    const ps = Bun.spawnSync(["ps", "-eo", "args"]).stdout.toString();
    expect(ps).not.toContain(d.dir);
  },
  SLOW,
);
