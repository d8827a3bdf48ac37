/**
 * `bun run bench`: this CLI side by side with skopeo and `docker push` (Debian's dockerd 20.10), in one
 * run, each case against a fresh Debian `docker-registry` on 127.0.0.1 (no auth) unless it says
 * otherwise, measured with `/usr/bin/time -v`, with every byte sent counted by a proxy in front of
 * the registry (bench/link-proxy.ts):
 *
 *   a. throttled uplink: the proxy passes 25 MB/s of request bodies and holds each answer 20 ms;
 *      wall time and link utilisation (bytes through the proxy per second / 25 MB/s, from the first
 *      second of the command) for skopeo, `docker push`, ours at gzip default and ours with zstd;
 *   b. from the daemon, cold: ours (docker save read as a stream, empty cache) against `docker push`;
 *   c. warm: ours with the layers cached, to a fresh registry (no docker save may run) against
 *      `docker push` to a fresh registry;
 *   d. re-push with everything present, each tool to the registry it just filled;
 *   e. the same image to a second repository of that registry: bytes sent;
 *   f. a push of a 1 GB layer killed (SIGKILL) at 90% of its bytes, then run again: bytes re-sent,
 *      ours against the serverless-registry emulation (test/support/serverless-emulator.ts, chunks of at
 *      most 100 MB as the real server advertises) and against docker-registry, and skopeo;
 *   g. peak RSS for a 4 GB single layer read as a stream (a .tar.zst archive).
 *
 *   bun run bench [--runs N]        BENCH_SMALL=1 bun run bench   (sizes / 10, for a quick check)
 *
 * With N runs, each line shows the run with the median wall time and the median of the per-run ratios.
 * Needs GNU tar, /usr/bin/time, skopeo, docker-registry and dockerd (Debian packages docker.io,
 * containerd). Images live in bench/.work/ (gitignored) and are reused by later runs.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { DOCKER_CLI, isSaveCall, startDockerd, type Dockerd } from "../test/support/dockerd.ts";
import { startServerlessEmulator } from "../test/support/serverless-emulator.ts";
import { ensureImage, ensureSingleLayerImage, type BenchImage, type SingleLayerImage } from "./image.ts";
import { startLinkProxy, type LinkProxy } from "./link-proxy.ts";
import { measure, TIME_BINARY, type Measurement } from "./measure.ts";
import { startRegistry, type BenchRegistry } from "./registry.ts";
import { formatMB, run, WORK_DIR } from "./support.ts";

const INDEX = join(import.meta.dir, "..", "index.ts");
const SMALL = process.env.BENCH_SMALL === "1";
const SCALE = SMALL ? 0.1 : 1;
const LINK_RATE = 25e6;
const ANSWER_DELAY_MS = 20;
const KILL_LAYER = SMALL ? 100e6 : 1e9;
const BIG_LAYER = SMALL ? 400e6 : 4e9;
const SERVERLESS_CHUNK = SMALL ? 10_000_000 : 100_000_000;
// A private cache-seal key, so pushes never read or write the user's own.
const STATE = join(WORK_DIR, "state");

interface Row {
  /** Unique per line; the same across runs. */
  id: string;
  group: string;
  tool: string;
  m?: Measurement;
  /** Body bytes through the proxy. */
  sent?: number;
  /** Link utilisation: mean over the command's wall time, and per second from its first second. */
  link?: { mean: number; perSecond: number[] };
  /** The line whose wall time this one is compared with. */
  peer?: string;
  note?: string;
  /** Bytes sent beyond the blob sizes (kill and resume). */
  resent?: number;
}

// ---------------------------------------------------------------------------------------------------
// Running the tools

async function ours(args: string[], cwd: string, env: Record<string, string | undefined> = {}): Promise<Measurement> {
  await mkdir(cwd, { recursive: true });
  return measure([process.execPath, "run", INDEX, ...args], { cwd, env: { ...process.env, INSECURE_HTTP_PUSH: "true", XDG_STATE_HOME: STATE, ...env } });
}

function skopeo(source: string, ref: string): Promise<Measurement> {
  return measure(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", source, `docker://${ref}`]);
}

async function dockerPush(dockerd: Dockerd, image: string, ref: string): Promise<Measurement> {
  await dockerd.dockerOk(["tag", image, ref]);
  return measure([DOCKER_CLI, "push", ref], { env: dockerd.env() });
}

/** A fresh registry behind a fresh proxy; both stopped after `body`. */
async function withLink<T>(options: { rate?: number; answerDelayMs?: number }, body: (proxy: LinkProxy, registry: BenchRegistry) => Promise<T>): Promise<T> {
  const registry = await startRegistry();
  const proxy = await startLinkProxy({ upstream: `http://${registry.host}`, ...options });
  try {
    return await body(proxy, registry);
  } finally {
    await proxy.stop();
    await registry.stop();
  }
}

/** Runs `measureIt` with the proxy's counters reset just before; fills `sent` and the link figures. */
async function counted(proxy: LinkProxy, row: Omit<Row, "m" | "sent">, measureIt: () => Promise<Measurement>, rate?: number): Promise<Row> {
  proxy.mark();
  const m = await measureIt();
  const failed = m.exitCode !== 0 ? `FAILED (exit ${m.exitCode}): ${lastLine(m.stderr)}` : undefined;
  const result: Row = { ...row, m, sent: proxy.bytes, ...(failed ? { note: failed } : {}) };
  if (rate !== undefined) result.link = { mean: proxy.bytes / (rate * m.wallSeconds), perSecond: proxy.perSecond().map((b) => b / rate) };
  return result;
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return (lines.find((line) => line.startsWith("error:")) ?? lines.at(-1) ?? "").slice(0, 200);
}

async function emptyFolder(name: string): Promise<string> {
  const path = join(WORK_DIR, "push", name);
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
  return path;
}

// ---------------------------------------------------------------------------------------------------
// The cases

/** a. The throttled uplink, for each tool. */
async function throttled(image: BenchImage, dockerd: Dockerd): Promise<Row[]> {
  const link = { rate: LINK_RATE, answerDelayMs: ANSWER_DELAY_MS };
  const group = "a. 25 MB/s uplink, 20 ms per answer";
  const rows: Row[] = [];
  rows.push(
    await withLink(link, (proxy) =>
      counted(
        proxy,
        { id: "a-skopeo", group, tool: "skopeo copy (docker-archive)" },
        () => skopeo(`docker-archive:${image.archive}`, `${proxy.host}/bench/app:1`),
        LINK_RATE,
      ),
    ),
  );
  rows.push(
    await withLink(link, (proxy) =>
      counted(
        proxy,
        { id: "a-docker", group, tool: "docker push", peer: "a-skopeo" },
        () => dockerPush(dockerd, "bench/app:1", `${proxy.host}/bench/docker:1`),
        LINK_RATE,
      ),
    ),
  );
  for (const [id, tool, flags] of [
    ["a-gzip", "ours --archive, gzip default (level 2)", []],
    ["a-zstd", "ours --archive, --compression zstd", ["--compression", "zstd"]],
  ] as const) {
    const folder = await emptyFolder(id);
    rows.push(
      await withLink(link, (proxy) =>
        counted(
          proxy,
          { id, group, tool, peer: "a-skopeo" },
          () => ours([...flags, "--archive", image.archive, `${proxy.host}/bench/app:1`], folder),
          LINK_RATE,
        ),
      ),
    );
  }
  return rows;
}

/** b-e. From the daemon: cold, warm to a fresh registry, re-push, second repository. */
async function fromDaemon(image: BenchImage, dockerd: Dockerd): Promise<Row[]> {
  const rows: Row[] = [];
  const env = { DOCKER_HOST: dockerd.dockerHost, DOCKER_CONFIG: join(dockerd.dir, "docker-config") };
  const folder = await emptyFolder("daemon");
  const saves = (from: number) => dockerd.apiCalls().slice(from).filter(isSaveCall).length;
  const oursFromDaemon = (proxy: LinkProxy, repository: string, extra: string[] = []) => {
    const ref = `${proxy.host}/${repository}:1`;
    return async () => {
      await dockerd.dockerOk(["tag", "bench/app:1", ref]);
      return ours(["--engine", DOCKER_CLI, ...extra, ref], folder, env);
    };
  };
  const noted = async (row: Promise<Row>, mark: number) => {
    const r = await row;
    const calls = saves(mark);
    return { ...r, note: [r.note, `docker save calls: ${calls}`].filter(Boolean).join("; ") };
  };

  // docker push: cold to a fresh registry, re-push, second repository (it mounts).
  await withLink({}, async (proxy) => {
    rows.push(
      await counted(proxy, { id: "b-docker", group: "b. from the daemon, cold", tool: "docker push" }, () =>
        dockerPush(dockerd, "bench/app:1", `${proxy.host}/bench/docker:1`),
      ),
    );
    rows.push(
      await counted(proxy, { id: "d-docker", group: "d. re-push, everything present", tool: "docker push" }, () =>
        dockerPush(dockerd, "bench/app:1", `${proxy.host}/bench/docker:1`),
      ),
    );
    rows.push(
      await counted(proxy, { id: "e-docker", group: "e. second repository, same registry", tool: "docker push" }, () =>
        dockerPush(dockerd, "bench/app:1", `${proxy.host}/bench/second:1`),
      ),
    );
  });
  // docker push of the same image to another fresh registry: what "warm" costs it.
  await withLink({}, async (proxy) => {
    rows.push(
      await counted(proxy, { id: "c-docker", group: "c. warm (layers known), fresh registry", tool: "docker push" }, () =>
        dockerPush(dockerd, "bench/app:1", `${proxy.host}/bench/docker:1`),
      ),
    );
  });
  // ours: cold (empty cache; --rm-archive so no <id>.tar stays behind), then warm to a fresh registry.
  await withLink({}, async (proxy) => {
    const mark = dockerd.apiCalls().length;
    rows.push(
      await noted(
        counted(
          proxy,
          { id: "b-ours", group: "b. from the daemon, cold", tool: "ours (docker save streamed, empty cache)", peer: "b-docker" },
          oursFromDaemon(proxy, "bench/app", ["--rm-archive"]),
        ),
        mark,
      ),
    );
  });
  await withLink({}, async (proxy) => {
    let mark = dockerd.apiCalls().length;
    rows.push(
      await noted(
        counted(
          proxy,
          { id: "c-ours", group: "c. warm (layers known), fresh registry", tool: "ours (layers in .cache)", peer: "c-docker" },
          oursFromDaemon(proxy, "bench/app"),
        ),
        mark,
      ),
    );
    mark = dockerd.apiCalls().length;
    rows.push(
      await noted(
        counted(proxy, { id: "d-ours", group: "d. re-push, everything present", tool: "ours", peer: "d-docker" }, oursFromDaemon(proxy, "bench/app")),
        mark,
      ),
    );
    mark = dockerd.apiCalls().length;
    rows.push(
      await noted(
        counted(proxy, { id: "e-ours", group: "e. second repository, same registry", tool: "ours", peer: "e-docker" }, oursFromDaemon(proxy, "bench/second")),
        mark,
      ),
    );
  });
  // skopeo from the archive: first push, re-push, second repository.
  await withLink({}, async (proxy) => {
    rows.push(
      await counted(proxy, { id: "b-skopeo", group: "b. from the daemon, cold", tool: "skopeo copy (from the docker-archive, for scale)" }, () =>
        skopeo(`docker-archive:${image.archive}`, `${proxy.host}/bench/skopeo:1`),
      ),
    );
    rows.push(
      await counted(proxy, { id: "d-skopeo", group: "d. re-push, everything present", tool: "skopeo copy" }, () =>
        skopeo(`docker-archive:${image.archive}`, `${proxy.host}/bench/skopeo:1`),
      ),
    );
    rows.push(
      await counted(proxy, { id: "e-skopeo", group: "e. second repository, same registry", tool: "skopeo copy" }, () =>
        skopeo(`docker-archive:${image.archive}`, `${proxy.host}/bench/skopeo-second:1`),
      ),
    );
  });
  return rows;
}

/**
 * f. A push killed at 90% of its bytes, then run again. The clean push of each tool first gives the
 * bytes a whole push sends; the kill comes when the proxy has passed 90% of that.
 */
async function killAndResume(single: SingleLayerImage): Promise<Row[]> {
  const group = `f. SIGKILL at 90% of a ${formatMB(KILL_LAYER)} MB layer, run again`;
  const rows: Row[] = [];
  const oursArgs = (ref: string, extra: string[] = []) => [process.execPath, "run", INDEX, ...extra, "--archive", single.archive, ref];
  const env = { ...process.env, INSECURE_HTTP_PUSH: "true", XDG_STATE_HOME: STATE };
  const skopeoArgs = (ref: string) => [
    "skopeo",
    "--insecure-policy",
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    `docker-archive:${single.archive}`,
    `docker://${ref}`,
  ];

  // What a whole push sends, per tool.
  const clean = async (cmd: (ref: string) => string[], cwd: string) =>
    withLink({}, async (proxy) => {
      proxy.mark();
      await run(cmd(`${proxy.host}/bench/clean:1`), { cwd, env });
      return proxy.bytes;
    });
  const oursWhole = await clean((ref) => oursArgs(ref), await emptyFolder("f-clean"));
  const skopeoWhole = await clean(skopeoArgs, WORK_DIR);

  /** Spawns `cmd`, SIGKILLs it once 90% of `whole` went through, then measures `again`. */
  const killThenRun = async (
    proxy: LinkProxy,
    cmd: string[],
    cwd: string,
    whole: number,
    again: () => Promise<Measurement>,
    row: Omit<Row, "m">,
  ): Promise<Row> => {
    proxy.mark();
    const child = Bun.spawn(cmd, { cwd, env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    const done = child.exited;
    await Promise.race([proxy.whenBytes(0.9 * whole), done]);
    child.kill("SIGKILL");
    await done;
    const firstRun = proxy.bytes;
    proxy.mark();
    const m = await again();
    const total = firstRun + proxy.bytes;
    const note =
      m.exitCode !== 0
        ? `FAILED (exit ${m.exitCode}): ${lastLine(m.stderr)}`
        : (/resuming the interrupted upload at byte (\d+)/.exec(m.stderr)?.[0] ??
          (/no longer has the interrupted upload/.test(m.stderr)
            ? "registry lost the session: started again"
            : /cannot be continued/.test(m.stderr)
              ? "the registry's offset was not a chunk boundary: started again"
              : "started again"));
    return { ...row, m, sent: proxy.bytes, resent: total - whole, note: `${note}; killed after ${formatMB(firstRun)} MB of ${formatMB(whole)} MB` };
  };

  // ours against the serverless emulation (no auth, chunks of at most 100 MB, the real server's limit)
  const emulator = await startServerlessEmulator({ username: "", minChunk: 5 * 1024 * 1024, maxChunk: SERVERLESS_CHUNK });
  const proxy = await startLinkProxy({ upstream: emulator.url });
  try {
    const folder = await emptyFolder("f-serverless");
    const ref = `${proxy.host}/bench/kill:1`;
    rows.push(
      await killThenRun(proxy, oursArgs(ref), folder, oursWhole, () => ours(["--archive", single.archive, ref], folder), {
        id: "f-ours-serverless",
        group,
        tool: `ours -> serverless emulation (${SERVERLESS_CHUNK / 1e6} MB chunks)`,
      }),
    );
  } finally {
    await proxy.stop();
    await emulator.stop();
  }
  // ours against docker-registry: streamed (no chunk limit), and with --chunk-size 100MB
  for (const [id, tool, flags] of [
    ["f-ours-registry", "ours -> docker-registry (one streamed PATCH)", []],
    ["f-ours-registry-chunked", `ours -> docker-registry, --chunk-size ${SERVERLESS_CHUNK / 1e6}MB`, ["--chunk-size", `${SERVERLESS_CHUNK / 1e6}MB`]],
  ] as const) {
    const folder = await emptyFolder(id);
    rows.push(
      await withLink({}, (p) => {
        const ref = `${p.host}/bench/kill:1`;
        return killThenRun(p, oursArgs(ref, [...flags]), folder, oursWhole, () => ours([...flags, "--archive", single.archive, ref], folder), {
          id,
          group,
          tool,
        });
      }),
    );
  }
  rows.push(
    await withLink({}, (p) => {
      const ref = `${p.host}/bench/kill:1`;
      return killThenRun(p, skopeoArgs(ref), WORK_DIR, skopeoWhole, () => measure(skopeoArgs(ref)), {
        id: "f-skopeo",
        group,
        tool: "skopeo copy -> docker-registry",
      });
    }),
  );
  return rows;
}

/** g. Peak memory for one big layer read as a stream. */
async function bigLayer(single: SingleLayerImage): Promise<Row[]> {
  const group = `g. one ${formatMB(BIG_LAYER)} MB layer, streamed (.tar.zst)`;
  const folder = await emptyFolder("g");
  return [
    await withLink({}, (proxy) =>
      counted(proxy, { id: "g-ours", group, tool: "ours --archive <.tar.zst>" }, () =>
        ours(["--archive", single.zstdArchive!, `${proxy.host}/bench/big:1`], folder),
      ),
    ),
  ];
}

// ---------------------------------------------------------------------------------------------------
// Report

const median = (values: number[]): number | undefined => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : undefined;
};

function summarize(runs: Row[][]): (Row & { ratio?: number; runs: number })[] {
  const ids = runs[0]?.map((r) => r.id) ?? [];
  return ids.map((id) => {
    const all = runs.map((rows) => rows.find((r) => r.id === id)).filter((r): r is Row => r !== undefined);
    const ok = all.filter((r) => r.m && !r.note?.startsWith("FAILED"));
    const pick = [...ok].sort((a, b) => a.m!.wallSeconds - b.m!.wallSeconds)[Math.floor((ok.length - 1) / 2)] ?? all[0]!;
    const ratios = runs.flatMap((rows) => {
      const mine = rows.find((r) => r.id === id);
      const peer = rows.find((r) => r.id === mine?.peer);
      return mine?.m && peer?.m && !mine.note?.startsWith("FAILED") && !peer.note?.startsWith("FAILED") ? [mine.m.wallSeconds / peer.m.wallSeconds] : [];
    });
    return { ...pick, ratio: median(ratios), runs: all.length };
  });
}

function linkText(link: Row["link"]): string {
  if (!link) return "-";
  const full = link.perSecond.slice(0, -1); // the last second is partial
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const first = link.perSecond[0] ?? 0;
  const low = full.length ? Math.min(...full) : first;
  return `${pct(link.mean)} (1st s ${pct(first)}, lowest s ${pct(low)})`;
}

function table(rows: ReturnType<typeof summarize>, peerName: (id: string | undefined) => string): string {
  const lines = [
    "| case | tool | wall s | CPU s | peak RSS MB | sent MB | link busy | wall vs | note |",
    "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
  ];
  for (const row of rows) {
    const m = row.m;
    const cells = m ? [m.wallSeconds.toFixed(2), m.cpuSeconds.toFixed(2), m.peakRssMB.toFixed(0)] : ["-", "-", "-"];
    const sent = row.sent === undefined ? "-" : formatMB(row.sent);
    const ratio = row.ratio === undefined ? "-" : `${row.ratio.toFixed(2)}x ${peerName(row.peer)}`;
    const resent = row.resent === undefined ? "" : `re-sent ${formatMB(row.resent)} MB; `;
    lines.push(`| ${row.group} | ${row.tool} | ${cells.join(" | ")} | ${sent} | ${linkText(row.link)} | ${ratio} | ${resent}${row.note ?? ""} |`);
  }
  return lines.join("\n");
}

async function machineFacts(image: BenchImage): Promise<string> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const version = async (cmd: string[]) => lastLine((await run(cmd, { allowFailure: true })).stdout) || "?";
  const layers = image.layers.map((layer) => `${layer.name} ${formatMB(layer.bytes)}`).join(", ");
  return [
    `- machine: ${availableParallelism()} cores (nproc), ${model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM`,
    `- bun ${Bun.version}; ${await version(["skopeo", "--version"])}; docker-registry ${await version(["docker-registry", "--version"])}; ${await version([DOCKER_CLI, "--version"])}`,
    `- image: ${formatMB(image.archiveBytes)} MB docker-archive (layers MB: ${layers})${SMALL ? " — BENCH_SMALL=1: sizes / 10" : ""}`,
    `- load average before: ${loadavg()
      .map((n) => n.toFixed(2))
      .join(" ")} (other work on the machine skews the figures)`,
  ].join("\n");
}

function missingTools(): string[] {
  const needs: [string, string][] = [
    [TIME_BINARY, "time"],
    ["/usr/bin/skopeo", "skopeo"],
    ["/usr/bin/docker-registry", "docker-registry"],
    ["/usr/bin/tar", "tar"],
    ["/usr/sbin/dockerd", "docker.io"],
    [DOCKER_CLI, "docker.io"],
  ];
  return needs.filter(([path]) => !existsSync(path)).map(([path, pkg]) => `${path} (apt-get install -y ${pkg})`);
}

function parseRuns(argv: string[]): number {
  const index = argv.indexOf("--runs");
  const runs = index === -1 ? 1 : Number(argv[index + 1]);
  if (!Number.isInteger(runs) || runs < 1) throw new Error("--runs needs a positive integer");
  return runs;
}

async function main(argv: string[]): Promise<number> {
  const missing = missingTools();
  if (missing.length > 0) {
    process.stderr.write(`bench: missing tools:\n  ${missing.join("\n  ")}\n`);
    return 1;
  }
  const runs = parseRuns(argv);
  await mkdir(STATE, { recursive: true });
  const image = await ensureImage(WORK_DIR, SCALE);
  const killImage = await ensureSingleLayerImage(WORK_DIR, SMALL ? "kill-small" : "kill", KILL_LAYER);
  const bigImage = await ensureSingleLayerImage(WORK_DIR, SMALL ? "big-small" : "big", BIG_LAYER, true);
  const facts = await machineFacts(image);

  process.stderr.write("bench: starting a private dockerd and loading the image into it...\n");
  const dockerd = await startDockerd();
  const results: Row[][] = [];
  try {
    await dockerd.load(image.archive);
    for (let i = 0; i < runs; i++) {
      const rows: Row[] = [];
      const record = (more: Row[]) => {
        for (const row of more)
          process.stderr.write(
            `bench: ${row.group} / ${row.tool}: ${row.m ? `${row.m.wallSeconds.toFixed(2)} s` : ""} ${row.sent !== undefined ? `${formatMB(row.sent)} MB` : ""} ${row.note ?? ""}\n`,
          );
        rows.push(...more);
      };
      record(await throttled(image, dockerd));
      record(await fromDaemon(image, dockerd));
      record(await killAndResume(killImage));
      record(await bigLayer(bigImage));
      results.push(rows);
    }
  } finally {
    await dockerd.stop();
    await rm(join(WORK_DIR, "push"), { recursive: true, force: true });
  }

  const summary = summarize(results);
  const names = new Map(summary.map((r) => [r.id, r.tool.split(" (")[0]!]));
  const output = [
    `## Push benchmark (${new Date().toISOString()})`,
    "",
    facts,
    `- load average after: ${loadavg()
      .map((n) => n.toFixed(2))
      .join(" ")}`,
    `- command: \`${SMALL ? "BENCH_SMALL=1 " : ""}bun run bench${runs > 1 ? ` --runs ${runs}` : ""}\`; registries: Debian docker-registry on 127.0.0.1, fresh per case, behind bench/link-proxy.ts (which counts bytes; in case a it also limits them)`,
    "",
    table(summary, (id) => names.get(id ?? "") ?? ""),
    "",
    "Link utilisation per second (case a):",
    ...summary.filter((r) => r.link).map((r) => `- ${r.tool}: ${r.link!.perSecond.map((x) => Math.round(x * 100)).join(" ")}`),
    "",
  ].join("\n");
  process.stdout.write(output);
  await writeFile(join(WORK_DIR, "last-run.md"), output);
  return 0;
}

process.exit(await main(process.argv.slice(2)));
