/**
 * Builds the benchmark image: a reproducible docker-archive of about 1.2 GB made from this machine's
 * files with GNU tar (no podman, no Docker), cached under bench/.work/ so reruns reuse it.
 *
 * Layers, in order: /usr/share, /usr/include and Python/Node libraries (semi-compressible text, capped
 * at 700 MB), /usr/lib/x86_64-linux-gnu (binaries, capped at 400 MB), /usr/bin (capped at 50 MB), /etc,
 * and a tiny generated app layer.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { formatMB, run } from "./support.ts";

interface LayerSpec {
  name: string;
  /** Paths relative to / to pack (missing ones are skipped), or a function writing files into a folder. */
  source: string[] | ((dir: string) => Promise<void>);
  /** Regular files are added in name order while their total stays under this many bytes. */
  limit: number;
}

const LAYERS: LayerSpec[] = [
  { name: "share", source: ["usr/include", "usr/lib/node_modules", "usr/lib/python3", "usr/lib/python3.11", "usr/share"], limit: 700e6 },
  { name: "libs", source: ["usr/lib/x86_64-linux-gnu"], limit: 400e6 },
  { name: "bin", source: ["usr/bin"], limit: 50e6 },
  { name: "etc", source: ["etc"], limit: 20e6 },
  { name: "app", source: writeAppFiles, limit: Infinity },
];

/** Bump when LAYERS or the archive layout change, so a cached image is rebuilt. */
const IMAGE_VERSION = 3;

/** Same flags for every tar we write: byte-identical output for identical input files. */
const TAR_FLAGS = ["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu"];

export interface BenchImage {
  archive: string;
  archiveBytes: number;
  layers: { name: string; bytes: number; diffId: string }[];
}

/** The cached image if its description and archive are intact, else a freshly built one. */
export async function ensureImage(workDir: string): Promise<BenchImage> {
  const dir = join(workDir, "image");
  const infoPath = join(dir, "image.json");
  const cached = await readCachedImage(infoPath);
  if (cached) return cached;

  await rm(dir, { recursive: true, force: true });
  const stage = join(dir, "stage");
  await mkdir(stage, { recursive: true });
  const layers: BenchImage["layers"] = [];
  for (const spec of LAYERS) {
    process.stderr.write(`bench: packing layer ${spec.name}... `);
    const layer = await packLayer(spec, stage);
    process.stderr.write(`${formatMB(layer.bytes)} MB\n`);
    layers.push(layer);
  }
  const archive = join(dir, "bench-image.tar");
  await writeDockerArchive(stage, layers, archive);
  await rm(stage, { recursive: true, force: true });
  const image: BenchImage = { archive, archiveBytes: (await stat(archive)).size, layers };
  await writeFile(infoPath, JSON.stringify({ version: IMAGE_VERSION, ...image }, null, 2));
  return image;
}

async function readCachedImage(infoPath: string): Promise<BenchImage | undefined> {
  if (!existsSync(infoPath)) return undefined;
  try {
    const info = JSON.parse(await readFile(infoPath, "utf8")) as BenchImage & { version: number };
    if (info.version !== IMAGE_VERSION || (await stat(info.archive)).size !== info.archiveBytes) return undefined;
    return { archive: info.archive, archiveBytes: info.archiveBytes, layers: info.layers };
  } catch {
    return undefined;
  }
}

/** Writes `<stage>/<diff_id hex>/layer.tar` (the classic `docker save` layout) and describes it. */
async function packLayer(spec: LayerSpec, stage: string): Promise<BenchImage["layers"][number]> {
  const tarPath = join(stage, `${spec.name}.tar`);
  if (Array.isArray(spec.source)) {
    const listPath = join(stage, `${spec.name}.list`);
    await writeFile(listPath, await listEntries(spec.source, spec.limit));
    // The list is already sorted and complete (directories before their contents): no recursion.
    await tar(["-cf", tarPath, ...TAR_FLAGS, "-C", "/", "--no-recursion", "--null", "-T", listPath]);
    await rm(listPath);
  } else {
    const root = join(stage, `${spec.name}-root`);
    await mkdir(root, { recursive: true });
    await spec.source(root);
    await tar(["-cf", tarPath, ...TAR_FLAGS, "-C", root, "."]);
    await rm(root, { recursive: true });
  }
  const diffId = await sha256File(tarPath);
  const hex = diffId.slice("sha256:".length);
  await mkdir(join(stage, hex), { recursive: true });
  await run(["mv", tarPath, join(stage, hex, "layer.tar")]);
  return { name: spec.name, bytes: (await stat(join(stage, hex, "layer.tar"))).size, diffId };
}

/**
 * NUL-separated entries under `paths` (relative to /) in byte order; a regular file that would take the
 * total past `limit` is left out. Only files, directories and symlinks: sockets and devices do not belong
 * in a layer.
 */
async function listEntries(paths: string[], limit: number): Promise<string> {
  const present = paths.filter((path) => existsSync(join("/", path)));
  if (present.length === 0) throw new Error(`none of ${paths.join(", ")} exists on this machine`);
  const { stdout } = await run(["find", ...present, "(", "-type", "f", "-o", "-type", "d", "-o", "-type", "l", ")", "-printf", "%y %s %D:%i %p\\0"], {
    cwd: "/",
    env: { ...process.env, LC_ALL: "C" },
  });
  const entries = stdout
    .split("\0")
    .filter(Boolean)
    .map((line) => {
      const [type = "", size = "0", inode = "", ...rest] = line.split(" ");
      return { type, size: Number(size), inode, path: rest.join(" ") };
    })
    .sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  const kept: string[] = [];
  const stored = new Set<string>();
  let total = 0;
  for (const entry of entries) {
    // tar stores a hard-linked file's bytes once, so count them once.
    if (entry.type === "f" && !stored.has(entry.inode)) {
      if (total + entry.size > limit) continue; // skipped by name order: reproducible; parents still come first
      total += entry.size;
      stored.add(entry.inode);
    }
    kept.push(entry.path);
  }
  return kept.map((path) => `${path}\0`).join("");
}

/** A few generated files: the small top layer most images have. */
async function writeAppFiles(dir: string): Promise<void> {
  await mkdir(join(dir, "app"), { recursive: true });
  await writeFile(join(dir, "app", "VERSION"), "1.0.0\n");
  const lines = Array.from({ length: 20000 }, (_, i) => `line ${i}: ${(i * 2654435761) % 1000003}`);
  await writeFile(join(dir, "app", "data.txt"), `${lines.join("\n")}\n`);
}

/** manifest.json + config (rootfs.diff_ids) + the layer tars, packed with GNU tar. */
async function writeDockerArchive(stage: string, layers: BenchImage["layers"], archive: string): Promise<void> {
  const config = {
    architecture: "amd64",
    os: "linux",
    created: "1970-01-01T00:00:00Z",
    config: { Cmd: ["/bin/sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
    rootfs: { type: "layers", diff_ids: layers.map((layer) => layer.diffId) },
    history: layers.map((layer) => ({ created: "1970-01-01T00:00:00Z", created_by: `bench layer ${layer.name}` })),
  };
  const configBytes = JSON.stringify(config);
  const configName = `${new Bun.CryptoHasher("sha256").update(configBytes).digest("hex")}.json`;
  await writeFile(join(stage, configName), configBytes);
  const layerPaths = layers.map((layer) => `${layer.diffId.slice("sha256:".length)}/layer.tar`);
  const manifest = [{ Config: configName, RepoTags: ["bench/app:1"], Layers: layerPaths }];
  await writeFile(join(stage, "manifest.json"), JSON.stringify(manifest));
  const tmp = `${archive}.tmp`;
  await tar(["-cf", tmp, ...TAR_FLAGS, "-C", stage, "manifest.json", configName, ...layerPaths]);
  await run(["mv", tmp, archive]);
}

/** GNU tar; exit 1 ("a file changed as we read it") is only a warning for a benchmark. */
async function tar(args: string[]): Promise<void> {
  const result = await run(["tar", ...args], { allowFailure: true });
  if (result.exitCode > 1) throw new Error(`tar ${args.join(" ")} failed: ${result.stderr.trim().slice(-2000)}`);
}

async function sha256File(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream()) hasher.update(chunk);
  return `sha256:${hasher.digest("hex")}`;
}
