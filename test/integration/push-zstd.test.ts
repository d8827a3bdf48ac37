/**
 * --compression zstd end to end: pushed to the real docker-registry, copied back by skopeo into an OCI
 * layout, and every layer decompressed with the zstd CLI to the config's diff_ids. And switching the
 * compression (or its level) in a push folder never reuses a blob the cache holds for another setting.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { digestOf as sha256, makeSampleImage, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { runOk } from "../support/ports.ts";
import { pullAndVerify, skopeo } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";

let registry: DockerRegistry;
let work: string;
let image: WrittenArchive;
const tempDir = tempDirs();

beforeAll(async () => {
  [registry, work] = await Promise.all([startDockerRegistry(), tempDir("push-zstd-")]);
  // 20 MiB of mixed text and noise: several 8 MiB zstd frames in the big layer.
  image = await writeClassicDockerArchive(join(work, "image.tar"), makeSampleImage({ bigBytes: 20 * 1024 * 1024 }));
}, 60_000);

afterAll(async () => {
  await registry?.stop();
});

const blobPath = (layout: string, digest: string) => join(layout, "blobs", "sha256", digest.slice("sha256:".length));

test("a zstd push pulls back into an OCI layout whose layers zstd -d to the diff_ids", async () => {
  const ref = `${registry.host}/zstd/app:1`;
  const cwd = await tempDir("zstd-");
  const result = await runCli(["--compression", "zstd", "--archive", image.path, ref], { cwd, ...loginAs(registry) });
  expect(result.code).toBe(0);
  expect((await readdir(join(cwd, ".cache"))).filter((f) => f.endsWith("-zstd-3-ptr"))).toHaveLength(3);

  const layout = join(cwd, "layout");
  await skopeo(["copy", "--src-tls-verify=false", `--src-creds=${registry.username}:${registry.password}`, `docker://${ref}`, `oci:${layout}:pulled`]);
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8"));
  const manifestBytes = await readFile(blobPath(layout, index.manifests[0].digest));
  expect(`${ref}@${sha256(manifestBytes)}\n`).toBe(result.stdout);
  const manifest = JSON.parse(manifestBytes.toString("utf8"));
  expect(manifest.config.digest).toBe(image.configDigest);
  const config = JSON.parse(await readFile(blobPath(layout, manifest.config.digest), "utf8"));
  expect(config.rootfs.diff_ids).toEqual(image.diffIds);

  expect(manifest.layers).toHaveLength(image.diffIds.length);
  for (const [i, layer] of manifest.layers.entries()) {
    expect(layer.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+zstd");
    const path = blobPath(layout, layer.digest);
    expect(sha256(await readFile(path))).toBe(layer.digest);
    const { stdout } = await runOk(["sh", "-c", `zstd -d -c '${path}' | sha256sum`]);
    expect(`sha256:${stdout.split(" ")[0]}`).toBe(image.diffIds[i]!);
  }
}, 60_000);

test("switching the compression or its level in one push folder compresses again; the same setting reuses its own blobs", async () => {
  const cwd = await tempDir("switch-");
  /** Pushes with `flags` to a tag of its own; returns how each layer went and what the registry holds. */
  const push = async (tag: string, flags: string[]) => {
    const ref = `${registry.host}/zstd/switch:${tag}`;
    const result = await runCli([...flags, "--archive", image.path, ref], { cwd, ...loginAs(registry) });
    expect(result.code).toBe(0);
    const pulled = await pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });
    expect(pulled.diffIds).toEqual(image.diffIds);
    const how = [...result.stderr.matchAll(/^layer \d\/4 sha256:[a-f0-9]{12}: pushed .*\((compressed now|from \.cache)\)$/gm)].map((m) => m[1]);
    return { how, stderr: result.stderr, layers: pulled.layerDigests, mediaTypes: [...new Set(pulled.layerMediaTypes)] };
  };
  const gzip = await push("gzip", []);
  expect(gzip.how).toEqual(Array(3).fill("compressed now"));
  const zstd = await push("zstd", ["--compression", "zstd"]);
  expect(zstd.how).toEqual(Array(3).fill("compressed now"));
  expect(zstd.mediaTypes).toEqual(["application/vnd.oci.image.layer.v1.tar+zstd"]);
  const gzip3 = await push("gzip3", ["--compression-level", "3"]);
  expect(gzip3.how).toEqual(Array(3).fill("compressed now"));
  expect(gzip3.mediaTypes).toEqual(["application/vnd.oci.image.layer.v1.tar+gzip"]);
  // gzip at zstd's level 3: only the algorithm tells the two apart, as only the level tells the gzips apart.
  // No blob of one setting was served for another (the big layer compresses differently at each).
  expect(new Set([gzip.layers[0], zstd.layers[0], gzip3.layers[0]]).size).toBe(3);
  // Each setting again: its own blobs, known from the cache without compressing (the registry has them).
  for (const [tag, flags, earlier] of [
    ["gzip-again", [], gzip],
    ["zstd-again", ["--compression", "zstd"], zstd],
    ["gzip3-again", ["--compression-level", "3"], gzip3],
  ] as const) {
    const again = await push(tag, [...flags]);
    expect(again.stderr).not.toContain("compress");
    expect(again.stderr).toContain("4 blobs: 0 pushed, 4 already present; 0 bytes sent");
    expect(again.layers).toEqual(earlier.layers);
  }
}, 120_000);
