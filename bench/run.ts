/**
 * `bun run bench`: pushes a ~1.2 GB docker-archive to a local Debian `docker-registry` with skopeo (the
 * peer) and with this CLI in several situations, and prints a markdown table of wall time, CPU time,
 * peak RSS and compressed bytes pushed, with each wall time as a ratio of skopeo's from the same run.
 *
 *   bun run bench [--runs N]
 *
 * With N runs of every scenario the table shows, for each, the run with the median wall time and the
 * median of its per-run ratios to skopeo. Other work on the machine skews single runs a lot.
 *
 * Needs GNU tar, /usr/bin/time (Debian package `time`), skopeo and docker-registry. The image and the
 * push folders live in bench/.work/ (gitignored); the first run builds the image, later runs reuse it.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { ensureImage, type BenchImage } from "./image.ts";
import { measure, TIME_BINARY, type Measurement } from "./measure.ts";
import { pushedLayerBytes, startRegistry, type BenchRegistry } from "./registry.ts";
import { formatMB, run, WORK_DIR } from "./support.ts";

const INDEX = join(import.meta.dir, "..", "index.ts");

interface Row {
  scenario: string;
  measurement?: Measurement;
  pushedBytes?: number;
  /** Why there are no figures, or what to keep in mind reading them. */
  note?: string;
}

interface Scenario {
  name: string;
  run(image: BenchImage): Promise<Row>;
}

// ---------------------------------------------------------------------------------------------------
// Scenarios. Each starts its own registry unless it needs the previous one's content (re-push).

const skopeo: Scenario = {
  name: "skopeo copy (peer)",
  run: (image) =>
    withRegistry(async (registry) => {
      const cmd = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"];
      const measurement = await measure([...cmd, `docker-archive:${image.archive}`, `docker://${registry.host}/bench/skopeo:1`]);
      return finish("skopeo copy (peer)", measurement, registry, "bench/skopeo");
    }),
};

/** Our push of the image from `folder` into `registry`, with extra CLI flags. */
async function ourPush(name: string, image: BenchImage, registry: BenchRegistry, folder: string, flags: string[] = []): Promise<Row> {
  await mkdir(folder, { recursive: true });
  const cmd = [process.execPath, "run", INDEX, ...flags, "--archive", image.archive, `${registry.host}/bench/app:1`];
  const measurement = await measure(cmd, { cwd: folder, env: { ...process.env, INSECURE_HTTP_PUSH: "true" } });
  if (measurement.exitCode === 2 && flags.length > 0) {
    // A usage error: this CLI does not have the flag (yet). Say so instead of failing the benchmark.
    return { scenario: name, note: `skipped: the CLI rejected ${flags.join(" ")} (${lastLine(measurement.stderr)})` };
  }
  return finish(name, measurement, registry, "bench/app");
}

const pushFolder = (name: string) => join(WORK_DIR, `push-${name}`);

async function emptyFolder(path: string): Promise<string> {
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
  return path;
}

const cold: Scenario = {
  name: "ours: cold push (empty cache, gzip default level 2)",
  run: async (image) => {
    const folder = await emptyFolder(pushFolder("gzip"));
    return withRegistry((registry) => ourPush(cold.name, image, registry, folder));
  },
};

// Warm and re-push share a registry: warm fills it, re-push finds every blob there. Both reuse the
// push folder (and so the .cache) the cold push just filled.
const warmAndRepush = {
  names: ["ours: warm push (cache kept)", "ours: re-push (all in registry)"] as const,
  run: (image: BenchImage): Promise<Row[]> =>
    withRegistry(async (registry) => {
      const [warmName, repushName] = warmAndRepush.names;
      const warm = await ourPush(warmName, image, registry, pushFolder("gzip"));
      const repush = await ourPush(repushName, image, registry, pushFolder("gzip"));
      return [warm, { ...repush, note: repush.note ?? "nothing uploaded: every blob already present" }];
    }),
};

/** A cold push with other compression flags. */
function coldWith(name: string, folderName: string, flags: string[]): Scenario {
  return {
    name,
    run: async (image) => {
      const folder = await emptyFolder(pushFolder(folderName));
      return withRegistry((registry) => ourPush(name, image, registry, folder, flags));
    },
  };
}

const zstd = coldWith("ours: zstd push (cold, level 3)", "zstd", ["--compression", "zstd"]);
// Other gzip levels, to weigh the default level (2) against size (6, zlib's default; 3) and speed (1).
const gzipLevels = [6, 3, 1].map((level) =>
  coldWith(`ours: cold push, gzip level ${level}`, `gzip${level}`, ["--compression", "gzip", "--compression-level", String(level)]),
);

// ---------------------------------------------------------------------------------------------------
// Helpers

async function withRegistry<T>(body: (registry: BenchRegistry) => Promise<T>): Promise<T> {
  const registry = await startRegistry();
  try {
    return await body(registry);
  } finally {
    await registry.stop();
  }
}

async function finish(scenario: string, measurement: Measurement, registry: BenchRegistry, repository: string): Promise<Row> {
  if (measurement.exitCode !== 0) {
    return { scenario, measurement, note: `FAILED (exit ${measurement.exitCode}): ${lastLine(measurement.stderr)}` };
  }
  return { scenario, measurement, pushedBytes: await pushedLayerBytes(registry.host, repository, "1") };
}

/** The CLI's `error:` line if it printed one, else its last line. */
function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return (lines.find((line) => line.startsWith("error:")) ?? lines.at(-1) ?? "").slice(0, 200);
}

const wallOf = (row: Row | undefined): number | undefined =>
  row?.measurement && !row.note?.startsWith("FAILED") ? row.measurement.wallSeconds : undefined;

/** The middle value (the lower middle one for an even count). */
function middle<T>(values: T[], key: (value: T) => number): T | undefined {
  const sorted = [...values].sort((a, b) => key(a) - key(b));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/**
 * One table line per scenario: the run with the median wall time, and the median over runs of the
 * ratio to skopeo's wall time in the same run (run i of a scenario is paired with skopeo's run i, a
 * minute apart at most, so a busy spell on the machine weighs on both).
 */
function summarize(runs: Row[], peerRuns: Row[]): Row & { ratio?: number } {
  const measured = runs.filter((row) => wallOf(row) !== undefined);
  const row = middle(measured, (r) => wallOf(r) ?? 0) ?? runs[0]!;
  const ratios = runs.flatMap((r, i) => {
    const [ours, peer] = [wallOf(r), wallOf(peerRuns[i])];
    return ours !== undefined && peer !== undefined ? [ours / peer] : [];
  });
  const note = runs.length > 1 && measured.length > 0 ? [row.note, `median of ${runs.length}`].filter(Boolean).join("; ") : row.note;
  return { ...row, note, ratio: middle(ratios, (x) => x) };
}

function table(rows: (Row & { ratio?: number })[]): string {
  const lines = [
    "| scenario | wall s | CPU s | peak RSS MB | pushed MB | wall vs skopeo | note |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const row of rows) {
    const m = row.measurement;
    const ratio = row.ratio === undefined ? "-" : `${row.ratio.toFixed(2)}x`;
    const cells = m ? [m.wallSeconds.toFixed(2), m.cpuSeconds.toFixed(2), m.peakRssMB.toFixed(0)] : ["-", "-", "-"];
    const pushed = row.pushedBytes === undefined ? "-" : formatMB(row.pushedBytes);
    lines.push(`| ${row.scenario} | ${cells.join(" | ")} | ${pushed} | ${ratio} | ${row.note ?? ""} |`);
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
    `- bun ${Bun.version}; ${await version(["skopeo", "--version"])}; docker-registry ${await version(["docker-registry", "--version"])}`,
    `- image: ${image.archive} (${formatMB(image.archiveBytes)} MB; layers MB: ${layers})`,
    `- load average before: ${loadavg().map((n) => n.toFixed(2)).join(" ")} (other work on the machine skews the figures)`,
  ].join("\n");
}

/** Names every missing tool with the Debian package that provides it. */
function missingTools(): string[] {
  const needs: [string, string][] = [
    [TIME_BINARY, "time"],
    ["/usr/bin/skopeo", "skopeo"],
    ["/usr/bin/docker-registry", "docker-registry"],
    ["/usr/bin/tar", "tar"],
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
  await mkdir(WORK_DIR, { recursive: true });
  const image = await ensureImage(WORK_DIR);
  const facts = await machineFacts(image);

  const results = new Map<string, Row[]>();
  const record = (row: Row) => {
    process.stderr.write(`bench: ${row.scenario}: ${row.measurement ? `${row.measurement.wallSeconds.toFixed(2)} s` : ""} ${row.note ?? ""}\n`);
    results.set(row.scenario, [...(results.get(row.scenario) ?? []), row]);
  };
  for (let i = 0; i < runs; i++) {
    for (const scenario of [skopeo, cold]) record(await scenario.run(image));
    for (const row of await warmAndRepush.run(image)) record(row);
    for (const scenario of [zstd, ...gzipLevels]) record(await scenario.run(image));
  }

  const output = [
    `## Push benchmark (${new Date().toISOString()})`,
    "",
    facts,
    `- load average after: ${loadavg().map((n) => n.toFixed(2)).join(" ")}`,
    "- command: `bun run bench`; registry: Debian docker-registry on 127.0.0.1, no auth, fresh per scenario (re-push reuses warm's)",
    "",
    table([...results.values()].map((runs) => summarize(runs, results.get(skopeo.name) ?? []))),
    "",
  ].join("\n");
  process.stdout.write(output);
  await writeFile(join(WORK_DIR, "last-run.md"), output);
  return 0;
}

process.exit(await main(process.argv.slice(2)));
