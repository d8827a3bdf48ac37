/**
 * Issue 9, archives that lie, through the real CLI against the hostile registry: layers whose content
 * is not the config's diff_id (stored gzip/zstd, gzip bytes under a classic layer.tar), compressed
 * layers that are not valid gzip/zstd, OCI blobs, configs and manifests whose bytes are not their
 * digest, index loops, repeats, fan-out and bombs, and tar headers that claim absurd sizes. Each is read
 * in place (a plain tar) and as a stream (the same tar gzipped). Every case asserts the exit code, the
 * exact error line, that no manifest (and no config) reached the registry, and the CLI's peak memory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir } from "../support/fixtures.ts";
import {
  type AbsurdHeaderVariant,
  writeAbsurdTarArchive,
  writeBrokenCompressionArchive,
  writeDiffIdMismatchArchive,
  writeDigestLieArchive,
  writeIndexArchive,
} from "../support/hostile-archives.ts";
import { manifestPuts, naming, PEAK_RSS_LIMIT_KB, requestsFor, runHostileCli, type MeasuredRun } from "../support/hostile-cli.ts";
import { type HostileRegistry, startHostileRegistry } from "../support/hostile-registry.ts";

let registry: HostileRegistry;
let dir: string;
let counter = 0;

beforeAll(async () => {
  registry = await startHostileRegistry();
  dir = await makeTempDir("hostile-archives-cli-");
});

afterAll(async () => {
  await registry.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A repository of its own per run, so the registry's log can be read per case. */
function repo(name: string): string {
  return `hostile/${++counter}-${name}`;
}

/** Pushes `archive` to `repository` with its own cache folder. */
async function push(archive: string, repository: string, extra: string[] = []): Promise<MeasuredRun> {
  return runHostileCli(["--cache-dir", join(dir, `cache-${counter}`), "--archive", archive, ...extra, `${registry.host}/${repository}:1`], {
    env: { INSECURE_HTTP_PUSH: "true" },
  });
}

/** The same archive gzipped, which the CLI reads once as a stream. */
async function gzipped(path: string): Promise<string> {
  await Bun.write(`${path}.gz`, Bun.gzipSync(await Bun.file(path).bytes()));
  return `${path}.gz`;
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** What every refused archive must leave behind: exit 1, no manifest sent, bounded memory. */
function expectRefused(result: MeasuredRun, repository: string): void {
  if (result.code !== 1) console.error(result.stderr);
  expect(result.code).toBe(1);
  expect(result.stdout).toBe("");
  expect(manifestPuts(registry.registry, repository)).toEqual([]);
  expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
}

describe("a layer whose content is not the config's diff_id fails naming the layer and both digests", () => {
  const cases = [
    { format: "classic", compression: "gzip" },
    { format: "classic", compression: "zstd" },
    { format: "classic", compression: "none" },
    { format: "containerd", compression: "gzip" },
    { format: "containerd", compression: "zstd" },
    { format: "oci", compression: "gzip" },
    { format: "oci", compression: "zstd" },
    // The diff_id names the stored compressed bytes: only a tool that decompresses sees the lie.
    { format: "containerd", compression: "gzip", claim: "stored-bytes" },
  ] as const;
  for (const c of cases) {
    for (const streamed of [false, true]) {
      const name = `${c.format} ${c.compression}${"claim" in c ? " (diff_id = digest of the stored bytes)" : ""}${streamed ? ", as .tar.gz" : ""}`;
      test(name, async () => {
        const lie = await writeDiffIdMismatchArchive(join(dir, `${++counter}-diffid.tar`), c);
        const path = streamed ? await gzipped(lie.path) : lie.path;
        const repository = repo("diffid");
        const result = await push(path, repository);
        expectRefused(result, repository);
        // A streamed uncompressed layer is named by its entry, as its progress line was.
        const label = streamed && c.compression === "none" ? "layer [0-9a-f]{12}" : "layer 2/2";
        const source = escapeRegExp(`archive ${path}${streamed ? " (gzip, read as a stream)" : ""}`);
        expect(result.lastLine).toMatch(
          new RegExp(
            `^error: ${label} of ${source} is not what the image says: its content hashes to ${lie.actualDiffId}, but the image config's diff_id is ${lie.claimedDiffId}$`,
          ),
        );
        // The config goes last, after every layer is proven: it never reached the registry.
        expect(naming(requestsFor(registry.registry, repository), lie.configDigest)).toEqual([]);
      });
    }
  }
});

describe("a compressed layer that is not valid gzip or zstd is refused", () => {
  const cases = [
    { format: "classic", compression: "gzip", reason: "invalid block type" },
    { format: "classic", compression: "zstd", reason: "Unsupported frame parameter" },
    { format: "containerd", compression: "gzip", reason: "invalid block type" },
    { format: "oci", compression: "zstd", reason: "Unsupported frame parameter" },
  ] as const;
  for (const c of cases) {
    for (const streamed of [false, true]) {
      test(`${c.format} ${c.compression}${streamed ? ", as .tar.gz" : ""}`, async () => {
        const broken = await writeBrokenCompressionArchive(join(dir, `${++counter}-broken.tar`), c);
        const path = streamed ? await gzipped(broken.path) : broken.path;
        const repository = repo("broken");
        const result = await push(path, repository);
        expectRefused(result, repository);
        // 4 KiB of noise: a stream hands it on as it passes, named by its entry; in place it is layer 2/2.
        const label = streamed ? `layer ${/[a-f0-9]{12}/.exec(broken.entryName)?.[0]}` : "layer 2/2";
        const source = escapeRegExp(`archive ${path}${streamed ? " (gzip, read as a stream)" : ""}`);
        expect(result.lastLine).toMatch(
          new RegExp(`^error: ${label} of ${source} is not what the image says: its bytes are not valid ${c.compression} \\(${c.reason}\\)$`),
        );
      });
    }
  }
});

describe("a blob whose bytes are not its digest is refused", () => {
  for (const target of ["layer", "config", "manifest"] as const) {
    for (const format of ["oci", "containerd"] as const) {
      for (const streamed of [false, true]) {
        test(`the ${target} of an ${format} layout${streamed ? ", as .tar.gz" : ""}`, async () => {
          const lie = await writeDigestLieArchive(join(dir, `${++counter}-digest.tar`), target, { format });
          const path = streamed ? await gzipped(lie.path) : lie.path;
          const repository = repo("digest");
          const result = await push(path, repository);
          expectRefused(result, repository);
          if (target === "layer") {
            const source = `archive ${path}${streamed ? " (gzip, read as a stream)" : ""}`;
            expect(result.lastLine).toBe(
              `error: layer 1/1 of ${source} is not what the image says: its bytes hash to ${lie.actualDigest}, but the manifest names ${lie.claimedDigest}`,
            );
          } else {
            // Manifests and configs are read (and checked) before anything is pushed.
            expect(result.lastLine).toBe(`error: archive ${path} is corrupt: blob ${lie.claimedDigest} hashes to ${lie.actualDigest}`);
            expect(requestsFor(registry.registry, repository)).toEqual([]);
          }
          // Whatever went up, nothing was committed under the name the lying bytes claim.
          const commits = naming(requestsFor(registry.registry, repository), lie.claimedDigest).filter((r) => r.method === "PUT" && r.status === 201);
          expect(commits).toEqual([]);
        });
      }
    }
  }
});

describe("indexes that loop, nest, repeat or fan out: refused or pushed once, fast, in bounded memory", () => {
  test("a cycle (A -> B -> A, A under a name that is not its hash) is refused by its digest", async () => {
    const archive = await writeIndexArchive(join(dir, `${++counter}-cycle.tar`), { kind: "cycle" });
    const repository = repo("cycle");
    const result = await push(archive.path, repository);
    expectRefused(result, repository);
    expect(result.lastLine).toBe(`error: archive ${archive.path} is corrupt: blob ${archive.indexDigests[0]} hashes to ${archive.cycleActualDigest}`);
    expect(requestsFor(registry.registry, repository)).toEqual([]);
  });

  test("12 nested indexes are refused past the depth limit", async () => {
    const archive = await writeIndexArchive(join(dir, `${++counter}-deep.tar`), { kind: "deep", depth: 12 });
    const repository = repo("deep");
    const result = await push(archive.path, repository);
    expectRefused(result, repository);
    expect(result.lastLine).toBe(`error: archive ${archive.path}: indexes nest deeper than 8 levels`);
    expect(requestsFor(registry.registry, repository)).toEqual([]);
  });

  test("more distinct manifests than the walker's limit are refused", async () => {
    const archive = await writeIndexArchive(join(dir, `${++counter}-fanout-distinct.tar`), { kind: "fanout", count: 1001, distinct: true });
    const repository = repo("fanout-distinct");
    const result = await push(archive.path, repository);
    expectRefused(result, repository);
    expect(result.lastLine).toBe(`error: archive ${archive.path} lists more than 1000 manifests`);
    expect(requestsFor(registry.registry, repository)).toEqual([]);
  });

  /** A push of the one image at the leaves, through a small index; returns the pushed index's bytes. */
  async function expectOneImage(result: MeasuredRun, repository: string, imageManifestDigest: string): Promise<Record<string, unknown>> {
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    const digest = /@(sha256:[a-f0-9]{64})\n$/.exec(result.stdout)?.[1];
    expect(result.stdout).toBe(`${registry.host}/${repository}:1@${digest}\n`);
    // Two manifests: the image by digest, then the index under the tag.
    const puts = manifestPuts(registry.registry, repository).map((r) => r.path);
    expect(puts).toEqual([`/v2/${repository}/manifests/${imageManifestDigest}`, `/v2/${repository}/manifests/1`]);
    const index = registry.manifests.get(`${repository}:1`);
    expect(index).toBeDefined();
    expect(index!.bytes.length).toBeLessThan(4096);
    const document = JSON.parse(new TextDecoder().decode(index!.bytes)) as { manifests: { digest: string }[] };
    expect(document.manifests.map((m) => m.digest)).toEqual([imageManifestDigest]);
    return document as unknown as Record<string, unknown>;
  }

  test("index.json listing one nested index 4096 times pushes the one image (the source's own index)", async () => {
    const archive = await writeIndexArchive(join(dir, `${++counter}-repeat.tar`), { kind: "repeat", count: 4096 });
    const repository = repo("repeat");
    const result = await push(archive.path, repository);
    await expectOneImage(result, repository, archive.imageManifestDigest);
    expect(result.stdout).toBe(`${registry.host}/${repository}:1@${archive.indexDigests[0]}\n`);
    expect(result.elapsedMs).toBeLessThan(15_000);
  });

  test("one index listing the same manifest 4096 times (other platforms) pushes it once, under the source's own index", async () => {
    // One manifest may serve several platforms (arm/v6 and arm/v7): each entry is the index's to keep.
    const archive = await writeIndexArchive(join(dir, `${++counter}-fanout.tar`), { kind: "fanout", count: 4096 });
    const repository = repo("fanout");
    const result = await push(archive.path, repository);
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expect(result.stdout).toBe(`${registry.host}/${repository}:1@${archive.indexDigests[0]}\n`);
    const puts = manifestPuts(registry.registry, repository).map((r) => r.path);
    expect(puts).toEqual([`/v2/${repository}/manifests/${archive.imageManifestDigest}`, `/v2/${repository}/manifests/1`]);
    const index = registry.manifests.get(`${repository}:1`);
    const document = JSON.parse(new TextDecoder().decode(index!.bytes)) as { manifests: { digest: string }[] };
    expect(new Set(document.manifests.map((m) => m.digest))).toEqual(new Set([archive.imageManifestDigest]));
    expect(document.manifests).toHaveLength(4096);
    // The summary counts the platforms the index lists, not the one manifest behind them.
    expect(result.stderr).toContain(`1: digest: ${archive.indexDigests[0]} size: ${index!.bytes.length} (index of 4096 platforms, the source's own)\n`);
    expect(result.elapsedMs).toBeLessThan(15_000);
  });

  test("a bomb of 4 levels x 100 (10^8 paths from a few kB) visits each digest once", async () => {
    const archive = await writeIndexArchive(join(dir, `${++counter}-bomb.tar`), { kind: "bomb", levels: 4, width: 100 });
    expect(archive.naivePaths).toBe(100 ** 4);
    const repository = repo("bomb");
    const result = await push(archive.path, repository);
    await expectOneImage(result, repository, archive.imageManifestDigest);
    expect(result.elapsedMs).toBeLessThan(15_000);
  });
});

describe("tar headers claiming absurd sizes: a clean 'corrupt' message, never an allocation of the claim", () => {
  const EIGHT_GIB = 8n * 1024n ** 3n;
  const HUGE = 1n << 60n; // base-256, beyond 2^53: node-tar's Header throws a plain Error on it
  const UNREPRESENTABLE = "cannot be read (parsed number outside of javascript safe integer range)";
  type Case = { variant: AbsurdHeaderVariant; size: bigint; covered?: boolean; plain: string; streamed?: string };
  const cases: Case[] = [
    {
      variant: "pax-header-size",
      size: EIGHT_GIB,
      plain: 'entry "PaxHeaders.0/manifest.json" ends past the end of the file',
      streamed: "a pax extended header at byte 0 claims 8589934592 bytes",
    },
    { variant: "pax-header-size", size: EIGHT_GIB, covered: true, plain: "a pax extended header at byte 0 claims 8589934592 bytes" },
    { variant: "pax-header-size", size: HUGE, plain: `the header at byte 0 ${UNREPRESENTABLE}`, streamed: `the header at byte 0 ${UNREPRESENTABLE}` },
    {
      variant: "pax-record-size",
      size: EIGHT_GIB,
      plain: 'entry "huge.bin" ends past the end of the file',
      streamed: 'the stream ends inside "huge.bin", which claims 8589934592 bytes',
    },
    {
      variant: "pax-record-size",
      size: HUGE,
      plain: "the entry at byte 1024 has an impossible size",
      streamed: "the entry at byte 1024 has an impossible size",
    },
    {
      variant: "gnu-longname-size",
      size: EIGHT_GIB,
      plain: 'entry "././@LongLink" ends past the end of the file',
      streamed: "a GNU long-name record at byte 0 claims 8589934592 bytes",
    },
    { variant: "gnu-longname-size", size: EIGHT_GIB, covered: true, plain: "a GNU long-name record at byte 0 claims 8589934592 bytes" },
    { variant: "gnu-longname-size", size: HUGE, plain: `the header at byte 0 ${UNREPRESENTABLE}`, streamed: `the header at byte 0 ${UNREPRESENTABLE}` },
    {
      variant: "past-eof",
      size: EIGHT_GIB,
      plain: 'entry "zz-past-eof.bin" ends past the end of the file',
      streamed: 'the stream ends inside "zz-past-eof.bin", which claims 8589934592 bytes',
    },
    { variant: "past-eof", size: HUGE, plain: `the header at byte 8704 ${UNREPRESENTABLE}`, streamed: `the header at byte 8704 ${UNREPRESENTABLE}` },
  ];
  for (const c of cases) {
    const what = `${c.variant}, ${c.size === HUGE ? "2^60 (base-256)" : "8 GiB"}${c.covered ? ", the claim covered by a sparse hole" : ""}`;
    test(`${what}: plain tar`, async () => {
      const archive = await writeAbsurdTarArchive(join(dir, `${++counter}-absurd.tar`), c.variant, { claimedSize: c.size, coverClaim: c.covered ?? false });
      if (c.variant === "past-eof" && c.size === HUGE) expect(archive.headerOffset).toBe(8704);
      const repository = repo("absurd");
      const result = await push(archive.path, repository);
      expectRefused(result, repository);
      expect(result.lastLine).toBe(`error: archive ${archive.path} is corrupt or truncated: ${c.plain}`);
      expect(requestsFor(registry.registry, repository)).toEqual([]);
    });
    if (c.streamed !== undefined) {
      const streamed = c.streamed;
      test(`${what}: .tar.gz read as a stream`, async () => {
        const archive = await writeAbsurdTarArchive(join(dir, `${++counter}-absurd.tar`), c.variant, { claimedSize: c.size });
        const path = await gzipped(archive.path);
        const repository = repo("absurd-gz");
        const result = await push(path, repository);
        expectRefused(result, repository);
        expect(result.lastLine).toBe(`error: archive ${path} is corrupt or truncated: ${streamed}`);
        expect(manifestPuts(registry.registry, repository)).toEqual([]);
      });
    }
  }

  test("a pax size record of 8 GiB over a sparse hole is skipped in place, and the image behind it pushed", async () => {
    const archive = await writeAbsurdTarArchive(join(dir, `${++counter}-absurd.tar`), "pax-record-size", { coverClaim: true });
    expect(archive.fileSize).toBeGreaterThan(8 * 1024 ** 3);
    const repository = repo("absurd-covered");
    const result = await push(archive.path, repository);
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^${escapeRegExp(`${registry.host}/${repository}:1@`)}sha256:[a-f0-9]{64}\n$`));
    expect(manifestPuts(registry.registry, repository)).toHaveLength(1);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expect(result.elapsedMs).toBeLessThan(15_000);
  });
});
