/**
 * Compression throughput on this machine: single-stream zlib (what src/compress.ts does today) against
 * the parallel compressor (src/parallel-compress.ts), on ~300 MB of real files (/usr/share text and
 * /usr/lib binaries as tar). Not part of `bun run bench`; run it on its own:
 *
 *   bun run bench/throughput.ts [--sweep] [--repeat N] [file]
 *
 * --sweep also tries other block sizes; --repeat N (default 3) runs each variant N times and keeps the
 * fastest, since other work on the machine only ever slows a run down. Every output is checked with
 * `gzip -t` / `zstd -t`.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { constants, createGzip, createZstdCompress } from "node:zlib";
import { type Algorithm, closeCompressWorkers, compressRange } from "../src/layers/parallel-compress.ts";
import { WORK_DIR, formatMB, run } from "./support.ts";

interface Variant {
  name: string;
  algorithm: Algorithm;
  /** Compresses the whole file into dest; returns the output size. */
  compress(source: string, size: number, dest: string): Promise<number>;
}

const MiB = 1 << 20;

/** One zlib stream on the main thread, hashing input and output, as the CLI did before the parallel compressor. */
function singleStream(algorithm: Algorithm, level: number): Variant {
  const name = algorithm === "gzip" ? "createGzip" : "createZstdCompress";
  return {
    name: `single-stream ${algorithm} ${level} (${name})`,
    algorithm,
    compress: async (source, _size, dest) => {
      const compressor = algorithm === "gzip" ? createGzip({ level }) : createZstdCompress({ params: { [constants.ZSTD_c_compressionLevel]: level } });
      const [input, output] = [createHash("sha256"), createHash("sha256")];
      await pipeline(createReadStream(source, { highWaterMark: MiB }), tap(input), compressor, tap(output), createWriteStream(dest));
      return (await stat(dest)).size;
    },
  };
}

function tap(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
}

function parallel(algorithm: Algorithm, level: number, blockSize?: number): Variant {
  const block = blockSize === undefined ? "default block" : `${blockSize / 1024} KiB blocks`;
  return {
    name: `parallel ${algorithm} ${level} (${block})`,
    algorithm,
    compress: async (source, size, dest) => (await compressRange(source, { offset: 0, size }, dest, { algorithm, level, blockSize })).size,
  };
}

/** First 150 MiB of a tar of /usr/share and 150 MiB of one of /usr/lib/x86_64-linux-gnu. */
async function ensureCorpus(): Promise<string> {
  const path = join(WORK_DIR, "corpus.bin");
  if (existsSync(path)) return path;
  await mkdir(WORK_DIR, { recursive: true });
  const part = (dir: string, name: string) =>
    `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C ${dir} ${name} 2>/dev/null | head -c ${150 * MiB}`;
  await run(["bash", "-c", `set -o pipefail; { ${part("/usr", "share")}; ${part("/usr/lib", "x86_64-linux-gnu")}; } > ${path}.tmp || true`]);
  await run(["mv", `${path}.tmp`, path]);
  return path;
}

async function measure(variant: Variant, source: string, size: number, dest: string) {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const outSize = await variant.compress(source, size, dest);
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  // Every output must be a stream the standard tools accept.
  await run([variant.algorithm === "gzip" ? "gzip" : "zstd", "-t", dest]);
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, outSize };
}

async function main(argv: string[]): Promise<void> {
  const sweep = argv.includes("--sweep");
  const repeatAt = argv.indexOf("--repeat");
  const repeat = repeatAt === -1 ? 3 : Number(argv[repeatAt + 1]);
  const source = argv.find((arg, i) => !arg.startsWith("--") && i !== repeatAt + 1) ?? (await ensureCorpus());
  const size = (await stat(source)).size;
  const dest = join(WORK_DIR, "throughput.out");
  await Bun.file(source).arrayBuffer(); // warm the page cache so the first variant is not charged for the disk

  const variants: Variant[] = [
    singleStream("gzip", 6),
    parallel("gzip", 6),
    parallel("gzip", 3),
    singleStream("gzip", 1),
    parallel("gzip", 1),
    singleStream("zstd", 3),
    parallel("zstd", 3),
  ];
  if (sweep) {
    for (const block of [128 * 1024, 256 * 1024, 4 * MiB]) variants.push(parallel("gzip", 6, block));
    for (const block of [1 * MiB, 4 * MiB, 16 * MiB]) variants.push(parallel("zstd", 3, block));
  }
  console.log(`input: ${source}, ${formatMB(size)} MB; ${navigator.hardwareConcurrency} cores; bun ${Bun.version}; best of ${repeat}\n`);
  console.log("| variant | MB/s | CPU s | output MB | ratio |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const variant of variants) {
    const runs = [];
    for (let i = 0; i < repeat; i++) runs.push(await measure(variant, source, size, dest));
    const { seconds, cpuSeconds, outSize } = runs.reduce((best, run) => (run.seconds < best.seconds ? run : best));
    console.log(
      `| ${variant.name} | ${(size / 1e6 / seconds).toFixed(1)} | ${cpuSeconds.toFixed(1)} | ${formatMB(outSize)} | ${(outSize / size).toFixed(4)} |`,
    );
  }
  await rm(dest, { force: true });
  closeCompressWorkers();
  console.log(
    `\nload average after: ${loadavg()
      .map((n) => n.toFixed(2))
      .join(" ")}`,
  );
}

await main(process.argv.slice(2));
