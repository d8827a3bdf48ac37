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
export async function ensureImage(workDir: string, scale = 1): Promise<BenchImage> {
  const dir = join(workDir, scale === 1 ? "image" : `image-x${scale}`);
  const infoPath = join(dir, "image.json");
  const cached = await readCachedImage(infoPath);
  if (cached) return cached;

  await rm(dir, { recursive: true, force: true });
  const stage = join(dir, "stage");
  await mkdir(stage, { recursive: true });
  const layers: BenchImage["layers"] = [];
  for (const spec of LAYERS) {
    process.stderr.write(`bench: packing layer ${spec.name}... `);
    const layer = await packLayer({ ...spec, limit: spec.limit * scale }, stage);
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

// ---------------------------------------------------------------------------------------------------
// Single-layer images of a given size (the kill-and-resume and the memory cases), written in one pass

export interface SingleLayerImage {
  /** The docker-archive (layers uncompressed, read in place). */
  archive: string;
  /** The same archive compressed with zstd, which the CLI can only read as a stream. */
  zstdArchive?: string;
  layerBytes: number;
  diffId: string;
}

/**
 * A docker-archive holding one layer with one file of `size` bytes: 64 KiB blocks of xorshift noise
 * alternating with blocks of text, so gzip makes it about half as big and compression takes real time.
 * Written straight into the archive (no staging copy); `zstd` also writes `<archive>.zst` (level 1).
 */
export async function ensureSingleLayerImage(workDir: string, name: string, size: number, zstd = false): Promise<SingleLayerImage> {
  const dir = join(workDir, `single-${name}`);
  const infoPath = join(dir, "image.json");
  try {
    const info = JSON.parse(await readFile(infoPath, "utf8")) as SingleLayerImage & { version: number; size: number };
    const zstdOk = !zstd || (info.zstdArchive !== undefined && existsSync(info.zstdArchive));
    if (info.version === IMAGE_VERSION && info.size === size && existsSync(info.archive) && zstdOk) return info;
  } catch {
    // not built yet
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const archive = join(dir, `${name}.tar`);
  process.stderr.write(`bench: writing a ${formatMB(size)} MB single-layer image ${archive}... `);
  const out = Bun.file(archive).writer({ highWaterMark: 4 << 20 });
  const layerBytes = 512 + roundUp(size) + 1024;
  const layerHash = new Bun.CryptoHasher("sha256");
  out.write(tarHeader("big/layer.tar", layerBytes));
  const inner = (bytes: Uint8Array) => {
    layerHash.update(bytes);
    out.write(bytes);
  };
  inner(tarHeader("data/blob.bin", size));
  for (const block of patternBlocks(size)) {
    inner(block);
    await out.flush();
  }
  inner(new Uint8Array(roundUp(size) - size + 1024));
  const diffId = `sha256:${layerHash.digest("hex")}`;
  const config = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    created: "1970-01-01T00:00:00Z",
    config: { Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: [diffId] },
    history: [{ created: "1970-01-01T00:00:00Z", created_by: `bench single layer ${name}` }],
  });
  const configName = `${new Bun.CryptoHasher("sha256").update(config).digest("hex")}.json`;
  const manifest = JSON.stringify([{ Config: configName, RepoTags: [`bench/${name}:1`], Layers: ["big/layer.tar"] }]);
  for (const [file, text] of [
    [configName, config],
    ["manifest.json", manifest],
  ] as const) {
    const bytes = new TextEncoder().encode(text);
    out.write(tarHeader(file, bytes.length));
    out.write(bytes);
    out.write(new Uint8Array(roundUp(bytes.length) - bytes.length));
  }
  out.write(new Uint8Array(1024));
  await out.end();
  let zstdArchive: string | undefined;
  if (zstd) {
    zstdArchive = `${archive}.zst`;
    const { createReadStream, createWriteStream } = await import("node:fs");
    const { pipeline } = await import("node:stream/promises");
    const { constants, createZstdCompress } = await import("node:zlib");
    await pipeline(createReadStream(archive), createZstdCompress({ params: { [constants.ZSTD_c_compressionLevel]: 1 } }), createWriteStream(zstdArchive));
  }
  process.stderr.write("done\n");
  const image: SingleLayerImage = { archive, layerBytes, diffId, ...(zstdArchive ? { zstdArchive } : {}) };
  await writeFile(infoPath, JSON.stringify({ version: IMAGE_VERSION, size, ...image }, null, 2));
  return image;
}

function roundUp(n: number): number {
  return Math.ceil(n / 512) * 512;
}

/** A ustar header for a regular file (size in octal: up to 8 GiB). */
function tarHeader(name: string, size: number): Uint8Array {
  const header = new Uint8Array(512);
  const put = (text: string, offset: number) => header.set(new TextEncoder().encode(text), offset);
  put(name, 0);
  put("0000644\0", 100);
  put("0000000\0", 108);
  put("0000000\0", 116);
  put(`${size.toString(8).padStart(11, "0")}\0`, 124);
  put("00000000000\0", 136);
  put("        ", 148);
  put("0", 156);
  put("ustar\0", 257);
  put("00", 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  put(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return header;
}

/** `size` bytes in 4 MiB pieces: 64 KiB of noise, 64 KiB of text, and so on. */
function* patternBlocks(size: number): Generator<Uint8Array> {
  const block = 64 * 1024;
  const text = new Uint8Array(block);
  const line = new TextEncoder().encode("chunked-push bench: the quick brown fox jumps over the lazy dog 0123456789\n");
  for (let i = 0; i < block; i++) text[i] = line[i % line.length]!;
  let state = 0x9e3779b9;
  const piece = 4 << 20;
  for (let done = 0; done < size; done += piece) {
    const out = new Uint8Array(Math.min(piece, size - done));
    const words = new Uint32Array(out.buffer, 0, Math.floor(out.length / 4));
    for (let at = 0; at < out.length; at += block) {
      if (((done + at) / block) % 2 === 1) {
        out.set(text.subarray(0, Math.min(block, out.length - at)), at);
        continue;
      }
      const end = Math.min(at + block, out.length) / 4;
      for (let w = at / 4; w < end; w++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        words[w] = state;
      }
    }
    yield out;
  }
}
