/**
 * A private podman store per test run: `--root`, `--runroot`, `--tmpdir` and friends all point into one
 * temp dir with the vfs driver, so tests never see or change the machine's own images, and cleanup is
 * a plain `rm -rf` (vfs makes no mounts). Also runs podman's Docker-compatible API so the real `docker`
 * CLI (client only here) can `docker save` through it.
 *
 *   const store = await PodmanStore.create();
 *   await store.startService();                 // DOCKER_HOST for `docker`; logs at debug level
 *   store.apiCalls();                           // ["GET /v1.41/images/app:1/json", ...] (access log)
 *   await store.makeZstdImage("zstd/app:1", registry); // an image podman pulled as zstd
 *   await store.destroy();
 *
 * The service runs with `--log-level=debug`, the level at which podman 4.3 writes an access-log line per
 * API call (`@ - - [date] "GET /v1.41/images/get?names=x HTTP/1.1" 200 ...`), and with TMPDIR in the
 * store: its Docker-API save writes the archive to `$TMPDIR/api.tar*` (default /var/tmp) before sending it.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { run, runOk, sleep, spawnService, stopService, waitFor, type RunResult } from "./ports.ts";
import { inspectRaw } from "./skopeo.ts";

export type SaveFormat = "docker-archive" | "oci-archive";

/** `METHOD /path?query` of each access-log line (`@ - - [date] "GET /path HTTP/1.1" 200 ...`) in podman's service log. */
export function parsePodmanAccessLog(log: string): string[] {
  const calls: string[] = [];
  for (const m of log.matchAll(/^\S+ - - \[[^\]]*\] "([A-Z]+) (\S+) HTTP\/[0-9.]+"/gm)) calls.push(`${m[1] ?? ""} ${m[2] ?? ""}`);
  return calls;
}

/** What makeZstdImage() made. */
export interface ZstdImage {
  /** `<registry.host>/<name>`: the name in the store and in the registry. */
  ref: string;
  /** `sha256:<config digest>` */
  imageId: string;
  /** RootFS.Layers (uncompressed digests). */
  diffIds: string[];
  /** The manifest podman pushed (and pulled back). */
  manifestDigest: string;
  manifestBytes: Uint8Array;
  /** Both `application/vnd.oci.image.layer.v1.tar+zstd`. */
  layerMediaTypes: string[];
}

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
      "--root",
      join(this.dir, "root"),
      "--runroot",
      join(this.dir, "runroot"),
      "--storage-driver",
      "vfs",
      "--tmpdir",
      join(this.dir, "tmp"),
      "--network-config-dir",
      join(this.dir, "net"),
      "--volumepath",
      join(this.dir, "volumes"),
      "--events-backend",
      "file",
      "--cgroup-manager",
      "cgroupfs",
    ];
  }

  /** The API service's log (`<dir>/service.log`, debug level); exists once startService() ran. */
  get serviceLogPath(): string {
    return join(this.dir, "service.log");
  }

  /**
   * Every API call the service has answered so far, oldest first, as `METHOD /path?query` (from its access
   * log). Take `.length` before an action and slice after it. A `docker save` is
   * `GET /v1.xx/images/get?names=...` (see isSaveCall() in dockerd.ts). The line is written once the
   * answer is complete, so it can land just after the client has exited: to assert that something did NOT
   * happen, first waitForApiCall() for the action's last call.
   */
  apiCalls(): string[] {
    if (!existsSync(this.serviceLogPath)) return [];
    return parsePodmanAccessLog(readFileSync(this.serviceLogPath, "utf8"));
  }

  /** Waits (default 10 s) until a call matching `pred` at index `from` or later is logged; returns it. */
  waitForApiCall(pred: (call: string) => boolean, from = 0, timeoutMs = 10_000): Promise<string> {
    return waitFor(() => this.apiCalls().slice(from).find(pred), timeoutMs, "a matching call in podman's access log");
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
   * An image in this store that podman pulled with zstd layers: builds `name` FROM scratch with two COPY
   * layers (contents derived from `name`, fixed mtimes), pushes it to `<registry.host>/<name>` with
   * `--compression-format zstd` (podman 4.3 has no `--force-compression`; not needed, since the local
   * layers are uncompressed and get compressed on push), removes it locally and pulls it back, so the
   * store records zstd as the layers' compression. Its local name is then `<registry.host>/<name>`.
   * `podman save` (docker-archive) of it fails ("zstd compression is not supported for docker images"), as
   * does `docker save` through the API; `--format oci-archive` recompresses the layers with gzip;
   * `--format oci-archive --uncompressed` writes plain tar layers but keeps the `tar+zstd` media type (a
   * podman 4.3 quirk: readers must sniff the bytes).
   */
  async makeZstdImage(name: string, registry: { host: string; username?: string; password?: string }): Promise<ZstdImage> {
    this.#assertAlive();
    const ctx = await mkdtemp(join(this.dir, "zstd-context-"));
    const local = `localhost/${name.replace(/^localhost\//, "")}`;
    const ref = `${registry.host}/${name}`;
    const creds = registry.username === undefined ? [] : ["--creds", `${registry.username}:${registry.password ?? ""}`];
    try {
      const files: Record<string, string> = {
        "one.txt": `zstd layer one of ${name}\n`,
        "two.txt": `zstd layer two of ${name}, a little longer\n`,
        Containerfile: "FROM scratch\nCOPY one.txt /one.txt\nCOPY two.txt /two.txt\n",
      };
      const mtime = new Date("2024-01-02T03:04:05Z");
      for (const [file, data] of Object.entries(files)) {
        await writeFile(join(ctx, file), data);
        await utimes(join(ctx, file), mtime, mtime);
      }
      await this.build(ctx, local);
      await this.podmanOk(["push", "--quiet", "--tls-verify=false", ...creds, "--compression-format", "zstd", local, `docker://${ref}`]);
      const pushed = await inspectRaw(ref, { username: registry.username, password: registry.password });
      const layers = Array.isArray(pushed.json.layers) ? pushed.json.layers : [];
      const layerMediaTypes = layers.map((l: unknown) => (typeof l === "object" && l !== null && "mediaType" in l ? String(l.mediaType) : ""));
      if (layerMediaTypes.length !== 2 || !layerMediaTypes.every((m) => m.endsWith("+zstd"))) {
        throw new Error(`makeZstdImage: pushed layers are not zstd: ${new TextDecoder().decode(pushed.bytes)}`);
      }
      await this.podmanOk(["rmi", local]);
      const { stdout } = await this.podmanOk(["pull", "--quiet", "--tls-verify=false", ...creds, ref]);
      const id = stdout.trim().split("\n").pop()?.trim() ?? "";
      const inspected = await this.podmanOk(["image", "inspect", "--format", "{{json .RootFS.Layers}}", ref]);
      const diffIds: unknown = JSON.parse(inspected.stdout);
      if (!Array.isArray(diffIds) || !diffIds.every((d): d is string => typeof d === "string")) {
        throw new Error(`makeZstdImage: unexpected RootFS.Layers ${inspected.stdout}`);
      }
      return { ref, imageId: `sha256:${id}`, diffIds, manifestDigest: pushed.digest, manifestBytes: pushed.bytes, layerMediaTypes };
    } finally {
      await rm(ctx, { recursive: true, force: true });
    }
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
    const proc = spawnService(["podman", "--log-level=debug", ...this.globalArgs, "system", "service", "--time=0", dockerHost], logPath, {
      env: { ...process.env, TMPDIR: join(this.dir, "tmp") },
    });
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
      const log = await Bun.file(logPath)
        .text()
        .catch(() => "(no log)");
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
