/**
 * A private podman store per test run: `--root`, `--runroot`, `--tmpdir` and friends all point into one
 * temp dir with the vfs driver, so tests never see or change the machine's own images, and cleanup is
 * a plain `rm -rf` (vfs makes no mounts). Also runs podman's Docker-compatible API so the real `docker`
 * CLI (client only here) can `docker save` through it.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { run, runOk, sleep, spawnService, stopService, waitFor, type RunResult } from "./ports.ts";

export type SaveFormat = "docker-archive" | "oci-archive";

export class PodmanStore {
  /** Temp dir holding everything this store owns. */
  readonly dir: string;
  #service: Subprocess | null = null;
  #dockerHost: string | null = null;
  #destroyed = false;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Makes a fresh, empty store in a new temp dir. */
  static async create(): Promise<PodmanStore> {
    const dir = await mkdtemp(join(tmpdir(), "chunked-push-podman-"));
    await Promise.all(["root", "runroot", "tmp", "net", "volumes"].map((d) => mkdir(join(dir, d))));
    return new PodmanStore(dir);
  }

  /**
   * Global flags isolating this store. `--tmpdir` matters too: without it podman writes its events log
   * and alive-lock into the machine's /run/libpod.
   */
  get globalArgs(): string[] {
    return [
      "--root", join(this.dir, "root"),
      "--runroot", join(this.dir, "runroot"),
      "--storage-driver", "vfs",
      "--tmpdir", join(this.dir, "tmp"),
      "--network-config-dir", join(this.dir, "net"),
      "--volumepath", join(this.dir, "volumes"),
      "--events-backend", "file",
      "--cgroup-manager", "cgroupfs",
    ];
  }

  /** DOCKER_HOST value of the running API service, or null before startService(). */
  get dockerHost(): string | null {
    return this.#dockerHost;
  }

  /** Runs `podman <isolating flags> ...args`; never throws on a non-zero exit. */
  podman(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    this.#assertAlive();
    return run(["podman", ...this.globalArgs, ...args], { cwd: opts.cwd, timeoutMs: opts.timeoutMs });
  }

  /** Like podman(), but throws with stderr on failure. */
  podmanOk(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    this.#assertAlive();
    return runOk(["podman", ...this.globalArgs, ...args], { cwd: opts.cwd, timeoutMs: opts.timeoutMs });
  }

  /**
   * `podman build` of `contextDir` (Containerfile or Dockerfile inside it). Only FROM scratch + COPY/LABEL
   * work in this sandbox (RUN needs a runtime we do not have). Returns the image ID.
   */
  async build(contextDir: string, tag: string, extraArgs: string[] = []): Promise<string> {
    const { stdout } = await this.podmanOk(["build", "--quiet", "--tag", tag, ...extraArgs, contextDir], {
      cwd: contextDir,
    });
    const id = stdout.trim().split("\n").pop()?.trim() ?? "";
    if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`podman build: unexpected output: ${stdout}`);
    return id;
  }

  /**
   * `podman save` of `ref` to `outPath`. Removes an existing `outPath` first: podman refuses to write
   * docker-archive over an existing file ("docker-archive doesn't support modifying existing images").
   * docker-archive (default) is the classic layout with uncompressed `<diffid-hex>.tar` layers at the top
   * level, `<v1id>/layer.tar` as symlinks to them, and each distinct layer stored once. oci-archive
   * holds gzip-compressed layers.
   */
  async save(ref: string, outPath: string, format: SaveFormat = "docker-archive"): Promise<void> {
    await rm(outPath, { force: true });
    await this.podmanOk(["save", "--format", format, "--output", outPath, ref]);
  }

  /**
   * Starts `podman system service --time=0` on a unix socket in the store and waits until the socket
   * exists and `docker version` answers through it. Returns the DOCKER_HOST value (`unix://...`).
   * Idempotent: a second call returns the same DOCKER_HOST.
   */
  async startService(timeoutMs = 20_000): Promise<string> {
    this.#assertAlive();
    if (this.#dockerHost !== null) return this.#dockerHost;
    const socket = join(this.dir, "podman.sock");
    const dockerHost = `unix://${socket}`;
    const logPath = join(this.dir, "service.log");
    // spawnService() also SIGKILLs it if the test process exits without destroy().
    const proc = spawnService(["podman", ...this.globalArgs, "system", "service", "--time=0", dockerHost], logPath);
    this.#service = proc;
    try {
      await waitFor(() => existsSync(socket), timeoutMs, `podman socket ${socket}`);
      const deadline = Date.now() + timeoutMs;
      await waitFor(
        async () => {
          if (proc.exitCode !== null) throw new Error(`podman system service exited with ${proc.exitCode}`);
          const res = await run(["docker", "version", "--format", "{{.Server.Version}}"], {
            env: this.dockerEnv(dockerHost),
            timeoutMs: Math.max(1000, deadline - Date.now()),
          });
          if (res.code !== 0) throw new Error(res.stderr.trim());
          return res.stdout.trim() !== "";
        },
        timeoutMs,
        "docker version through podman's API",
        100,
      );
    } catch (err) {
      await this.#stopService();
      const log = await Bun.file(logPath).text().catch(() => "(no log)");
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- service.log ---\n${log.slice(-2000)}`);
    }
    this.#dockerHost = dockerHost;
    return dockerHost;
  }

  /**
   * Environment for running the `docker` CLI against this store's service: process.env plus DOCKER_HOST,
   * and DOCKER_CONFIG pointed into the store so the CLI never reads or writes the user's ~/.docker.
   */
  dockerEnv(dockerHost: string | null = this.#dockerHost): Record<string, string | undefined> {
    if (dockerHost === null) throw new Error("PodmanStore.dockerEnv: service not started");
    return { ...process.env, DOCKER_HOST: dockerHost, DOCKER_CONFIG: join(this.dir, "docker-config") };
  }

  /** Runs the `docker` CLI against this store's service (startService() first); throws on failure. */
  docker(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    return runOk(["docker", ...args], { cwd: opts.cwd, env: this.dockerEnv(), timeoutMs: opts.timeoutMs });
  }

  /** Stops the service (if any) and removes the whole temp dir. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await this.#stopService();
    // vfs layers are plain directories owned by root; we run as root, so rm -rf is enough.
    // Retry briefly in case a just-killed podman still holds files open while exiting.
    for (let attempt = 0; ; attempt++) {
      try {
        await rm(this.dir, { recursive: true, force: true });
        return;
      } catch (err) {
        if (attempt >= 5) throw err;
        await sleep(200);
      }
    }
  }

  async #stopService(): Promise<void> {
    const proc = this.#service;
    this.#service = null;
    this.#dockerHost = null;
    if (proc === null) return;
    await stopService(proc, 5000);
  }

  #assertAlive(): void {
    if (this.#destroyed) throw new Error("PodmanStore used after destroy()");
  }
}
