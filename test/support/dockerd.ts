/**
 * A private Docker daemon (Debian's dockerd 20.10, classic image store) per test, on a unix socket in a
 * temp dir, so tests can `docker save`/`load`/`pull` against a real engine without the machine's
 * /var/run/docker.sock.
 *
 *   const d = await startDockerd();
 *   await d.load("/tmp/x.tar");               // or d.pull("127.0.0.1:5000/app:1")
 *   await d.imageId("app:1");                 // "sha256:<config digest>"
 *   d.apiCalls();                             // ["GET /v1.41/images/app:1/json", ...]
 *   await d.stop();                           // kills dockerd and containerd, removes the temp dir
 *
 * Isolation (checked by test/integration/dockerd.test.ts):
 * - everything lives in `<tmp>`: `data/` (data root, vfs layers: plain directories, often big),
 *   `x/` (exec root, kept short because unix socket paths are limited to 108 bytes), `docker.sock`,
 *   `pid`, `daemon.json` (an empty `--config-file`, so /etc/docker/daemon.json is never read),
 *   `docker-config/` (DOCKER_CONFIG of the CLI, so ~/.docker is never read or written) and `dockerd.log`.
 * - no networking: `--iptables=false --ip-forward=false --bridge=none`. Images can be pulled, loaded and
 *   saved; containers cannot run (no bridge, and nothing here needs them).
 * - containerd: with no `--containerd`, dockerd 20.10 uses the machine's containerd if
 *   /run/containerd/containerd.sock merely exists, else starts its own with root `data/containerd` and
 *   state and sockets under `x/containerd/`. So by default ("auto") we let dockerd supervise its own only
 *   when that system socket is absent; when it is present (or with `containerd: "private"`) we start a
 *   containerd of our own with the same layout and pass `--containerd`. Either way nothing is shared,
 *   so several daemons run side by side.
 * - dockerd itself still reads /etc/docker/key.json (its libtrust key; created there once if missing,
 *   20.10 has no flag to move it) and /etc/docker/certs.d (registry CAs).
 * - dockerd makes its data root a private bind mount of itself; stop() unmounts whatever is still
 *   mounted under the temp dir (after a SIGKILL) before removing it.
 *
 * dockerd 20.10 trusts 127.0.0.0/8 registries over plain http without `--insecure-registry`, and cannot
 * pull zstd layers (Docker >= 23 can). `--debug` makes it log every API call as
 * `level=debug msg="Calling GET /v1.41/images/get?names=..."`, which apiCalls() returns, so a test can
 * assert that the CLI did (or did not) `docker save`.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { run, runOk, sleep, spawnService, stopService, waitFor, type RunResult } from "./ports.ts";

/** The Debian 20.10 client; /usr/local/bin/docker (newer) comes first on PATH, so name it explicitly. */
export const DOCKER_CLI = "/usr/bin/docker";
/** Where dockerd 20.10 looks for a "system" containerd before starting its own. */
export const SYSTEM_CONTAINERD_SOCKET = "/run/containerd/containerd.sock";

export interface DockerdOptions {
  /**
   * "supervised": dockerd starts its own containerd (only private while SYSTEM_CONTAINERD_SOCKET does not
   * exist: start() throws if it does). "private": we start containerd ourselves and pass `--containerd`.
   * "auto" (default): supervised unless the system socket exists.
   */
  containerd?: "auto" | "supervised" | "private";
  /** How long to wait for `docker version` to answer; default 60 s. */
  startTimeoutMs?: number;
}

export interface DockerPlatform {
  os: string;
  arch: string;
  variant?: string;
}

export interface Dockerd {
  /** Temp dir holding everything (see the file comment). */
  dir: string;
  /** `unix://<dir>/docker.sock` */
  dockerHost: string;
  /** dockerd's combined stdout/stderr (debug level), which also holds its supervised containerd's log. */
  logPath: string;
  /** `<dir>/data` */
  dataRoot: string;
  /** containerd's gRPC socket, under `<dir>/x`. */
  containerdSocket: string;
  /** Who started containerd: dockerd ("supervised") or this helper ("private"). */
  containerdMode: "supervised" | "private";
  /** Environment for the docker CLI: process.env plus DOCKER_HOST and a private DOCKER_CONFIG. */
  env(): Record<string, string | undefined>;
  /** Runs `/usr/bin/docker ...args` against this daemon; never throws on a non-zero exit. */
  docker(args: string[], opts?: { cwd?: string; timeoutMs?: number; stdin?: string }): Promise<RunResult>;
  /** Like docker(), but throws with stderr on failure. */
  dockerOk(args: string[], opts?: { cwd?: string; timeoutMs?: number; stdin?: string }): Promise<RunResult>;
  /** `docker login` (password on stdin) into the private DOCKER_CONFIG, for pulls from an auth registry. */
  login(host: string, username: string, password: string): Promise<void>;
  /** `docker load -i tarPath`; returns what it loaded (`repo:tag` names, or `sha256:` IDs for untagged images). */
  load(tarPath: string): Promise<string[]>;
  /** `sha256:<hex>` image ID (the config digest) of a local image. */
  imageId(ref: string): Promise<string>;
  /** `docker pull [--platform os/arch[/variant]] ref`; returns the pulled image's ID. */
  pull(ref: string, platform?: DockerPlatform): Promise<string>;
  /**
   * Every API call dockerd logged so far, oldest first, as `METHOD /path?query` (e.g.
   * `GET /v1.41/images/get?names=app%3A1` for a save). Take `.length` before an action and slice after it
   * to see only that action's calls.
   */
  apiCalls(): string[];
  /** Stops dockerd (SIGTERM, SIGKILL after 15 s) and containerd, unmounts leftovers, removes `dir`. Safe twice. */
  stop(): Promise<void>;
}

/** Extracts `METHOD /path` from dockerd's debug lines `... msg="Calling GET /v1.41/..."`. */
export function parseApiCalls(log: string): string[] {
  const calls: string[] = [];
  for (const m of log.matchAll(/msg="Calling ([A-Z]+ [^"]*)"/g)) calls.push(m[1] ?? "");
  return calls;
}

/** True for the API call `docker save` (and `docker image save`) makes: `GET /v1.xx/images/get?...` or `/images/<name>/get`. */
export function isSaveCall(call: string): boolean {
  return /^GET (\/v[0-9.]+)?\/images\/([^?]+\/)?get(\?|$)/.test(call);
}

/** Mount points at or under `dir`, deepest first, from /proc/self/mountinfo (octal escapes decoded). */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const points: string[] = [];
  for (const line of info.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === dir || point.startsWith(`${dir}/`)) points.push(point);
  }
  return points.sort((a, b) => b.length - a.length);
}

/** Process IDs still alive among those named in pid files (containerd's), for a last-resort kill. */
function pidFromFile(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, "utf8").trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** containerd pids to SIGKILL if the test process exits without stop() (dockerd itself is in ports.ts's list). */
const liveContainerdPids = new Set<number>();
process.once("exit", () => {
  for (const pid of liveContainerdPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** The config dockerd 20.10 writes for its supervised containerd, with every path under our dirs. */
function containerdConfig(rootDir: string, stateDir: string, socketDir: string): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    "version = 2",
    `root = ${q(rootDir)}`,
    `state = ${q(stateDir)}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    "[grpc]",
    `  address = ${q(join(socketDir, "containerd.sock"))}`,
    "[ttrpc]",
    `  address = ${q(join(socketDir, "containerd.sock.ttrpc"))}`,
    "[debug]",
    `  address = ${q(join(socketDir, "containerd-debug.sock"))}`,
    '  level = "info"',
    "",
  ].join("\n");
}

/** Starts our own containerd (mode "private") and waits for its gRPC socket. */
async function startPrivateContainerd(dir: string, dataRoot: string, execRoot: string): Promise<{ proc: Subprocess; socket: string }> {
  const stateDir = join(execRoot, "containerd");
  const rootDir = join(dataRoot, "containerd", "daemon");
  await mkdir(stateDir, { recursive: true });
  await mkdir(rootDir, { recursive: true });
  const configPath = join(stateDir, "containerd.toml");
  await writeFile(configPath, containerdConfig(rootDir, join(stateDir, "daemon"), stateDir));
  const socket = join(stateDir, "containerd.sock");
  const logPath = join(dir, "containerd.log");
  const proc = spawnService(["containerd", "--config", configPath], logPath);
  liveContainerdPids.add(proc.pid);
  try {
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`containerd exited with ${proc.exitCode}`);
        return existsSync(socket);
      },
      20_000,
      `containerd socket ${socket}`,
    );
  } catch (err) {
    await stopService(proc, 5000);
    liveContainerdPids.delete(proc.pid);
    throw err;
  }
  return { proc, socket };
}

/** Starts a private dockerd (see the file comment) and resolves once `docker version` answers through its socket. */
export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const systemSocket = existsSync(SYSTEM_CONTAINERD_SOCKET);
  const wanted = opts.containerd ?? "auto";
  if (wanted === "supervised" && systemSocket) {
    throw new Error(`startDockerd: ${SYSTEM_CONTAINERD_SOCKET} exists, so dockerd would use the machine's containerd; use containerd: "private"`);
  }
  const mode: "supervised" | "private" = wanted === "private" || (wanted === "auto" && systemSocket) ? "private" : "supervised";

  // Short base: `<base>/x/containerd/containerd.sock.ttrpc` must fit in a unix socket path.
  const base = tmpdir().length <= 40 ? tmpdir() : "/tmp";
  const dir = await mkdtemp(join(base, "cpdk-"));
  const dataRoot = join(dir, "data");
  const execRoot = join(dir, "x");
  const socket = join(dir, "docker.sock");
  const dockerHost = `unix://${socket}`;
  const logPath = join(dir, "dockerd.log");
  const dockerConfig = join(dir, "docker-config");
  const configFile = join(dir, "daemon.json");
  let dockerdProc: Subprocess | null = null;
  let containerdProc: Subprocess | null = null;
  let stopped = false;

  const env = (): Record<string, string | undefined> => ({ ...process.env, DOCKER_HOST: dockerHost, DOCKER_CONFIG: dockerConfig });

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (dockerdProc !== null) await stopService(dockerdProc, 15_000);
    // dockerd stops a supervised containerd on a clean exit; after a SIGKILL it is left behind.
    const supervisedPid = pidFromFile(join(execRoot, "containerd", "containerd.pid"));
    if (containerdProc !== null) {
      await stopService(containerdProc, 10_000);
      liveContainerdPids.delete(containerdProc.pid);
    } else if (supervisedPid !== null && alive(supervisedPid)) {
      process.kill(supervisedPid, "SIGKILL");
      await waitFor(() => !alive(supervisedPid), 10_000, `containerd ${supervisedPid} to exit`).catch(() => undefined);
    }
    for (const point of await mountsUnder(dir)) await run(["umount", "-l", point]);
    for (let attempt = 0; ; attempt++) {
      try {
        await rm(dir, { recursive: true, force: true });
        return;
      } catch (err) {
        if (attempt >= 5) throw err;
        await sleep(200);
      }
    }
  };

  try {
    await mkdir(dockerConfig);
    await writeFile(configFile, "{}\n");
    let containerdSocket = join(execRoot, "containerd", "containerd.sock");
    const extra: string[] = [];
    if (mode === "private") {
      const started = await startPrivateContainerd(dir, dataRoot, execRoot);
      containerdProc = started.proc;
      containerdSocket = started.socket;
      extra.push("--containerd", containerdSocket);
    }
    dockerdProc = spawnService(
      [
        "dockerd",
        "--config-file",
        configFile,
        "--iptables=false",
        "--ip-forward=false",
        "--bridge=none",
        "--storage-driver=vfs",
        "--data-root",
        dataRoot,
        "--exec-root",
        execRoot,
        "--pidfile",
        join(dir, "pid"),
        "--host",
        dockerHost,
        "--debug",
        ...extra,
      ],
      logPath,
    );
    const proc = dockerdProc;
    const deadline = Date.now() + timeoutMs;
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`dockerd exited with ${proc.exitCode}`);
        if (!existsSync(socket)) return false;
        const res = await run([DOCKER_CLI, "version", "--format", "{{.Server.Version}}"], { env: env(), timeoutMs: Math.max(1000, deadline - Date.now()) });
        if (res.code !== 0) throw new Error(res.stderr.trim());
        return res.stdout.trim() !== "";
      },
      timeoutMs,
      `dockerd on ${dockerHost}`,
      100,
    );
    const docker = (args: string[], o: { cwd?: string; timeoutMs?: number; stdin?: string } = {}): Promise<RunResult> =>
      run([DOCKER_CLI, ...args], { cwd: o.cwd, env: env(), stdin: o.stdin, timeoutMs: o.timeoutMs ?? 300_000 });
    const dockerOk = (args: string[], o: { cwd?: string; timeoutMs?: number; stdin?: string } = {}): Promise<RunResult> =>
      runOk([DOCKER_CLI, ...args], { cwd: o.cwd, env: env(), stdin: o.stdin, timeoutMs: o.timeoutMs ?? 300_000 });
    const imageId = async (ref: string): Promise<string> => {
      const { stdout } = await dockerOk(["image", "inspect", "--format", "{{.Id}}", ref]);
      const id = stdout.trim();
      if (!/^sha256:[0-9a-f]{64}$/.test(id)) throw new Error(`docker image inspect ${ref}: unexpected id ${JSON.stringify(id)}`);
      return id;
    };
    return {
      dir,
      dockerHost,
      logPath,
      dataRoot,
      containerdSocket,
      containerdMode: mode,
      env,
      docker,
      dockerOk,
      async login(host, username, password) {
        await dockerOk(["login", "--username", username, "--password-stdin", host], { stdin: password });
      },
      async load(tarPath) {
        const { stdout } = await dockerOk(["load", "--input", tarPath]);
        const loaded: string[] = [];
        for (const m of stdout.matchAll(/^Loaded image(?: ID)?: (\S+)$/gm)) loaded.push(m[1] ?? "");
        if (loaded.length === 0) throw new Error(`docker load ${tarPath}: nothing reported loaded: ${stdout}`);
        return loaded;
      },
      imageId,
      async pull(ref, platform) {
        const args = ["pull", "--quiet"];
        if (platform !== undefined) args.push("--platform", [platform.os, platform.arch, platform.variant].filter((p) => p).join("/"));
        await dockerOk([...args, ref]);
        return imageId(ref);
      },
      apiCalls() {
        return parseApiCalls(readFileSync(logPath, "utf8"));
      },
      stop,
    };
  } catch (err) {
    const log = await readFile(logPath, "utf8").catch(() => "(no log)");
    const cdLog = mode === "private" ? await readFile(join(dir, "containerd.log"), "utf8").catch(() => "(no log)") : "";
    await stop().catch(() => undefined);
    const cdPart = mode === "private" ? `\n--- containerd.log ---\n${cdLog.slice(-1500)}` : "";
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- dockerd.log ---\n${log.slice(-3000)}${cdPart}`);
  }
}
