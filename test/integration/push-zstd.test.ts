/**
 * --compression zstd end to end: pushed to the real docker-registry, copied back by skopeo into an OCI
 * layout, and every layer decompressed with the zstd CLI to the config's diff_ids.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { makeSampleImage, makeTempDir, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { runOk } from "../support/ports.ts";
import { skopeo } from "../support/skopeo.ts";

let registry: DockerRegistry;
let work: string;
let image: WrittenArchive;

beforeAll(async () => {
  [registry, work] = await Promise.all([startDockerRegistry(), makeTempDir("push-zstd-")]);
  // 20 MiB of mixed text and noise: several 8 MiB zstd frames in the big layer.
  image = await writeClassicDockerArchive(join(work, "image.tar"), makeSampleImage({ bigBytes: 20 * 1024 * 1024 }));
}, 60_000);

afterAll(async () => {
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const blobPath = (layout: string, digest: string) => join(layout, "blobs", "sha256", digest.slice("sha256:".length));

test("a zstd push pulls back into an OCI layout whose layers zstd -d to the diff_ids", async () => {
  const ref = `${registry.host}/zstd/app:1`;
  const result = await runCli(["--compression", "zstd", "--archive", image.path, ref], {
    cwd: work,
    stdin: `${registry.password}\n`,
    env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" },
  });
  expect(result.code).toBe(0);
  expect((await readdir(join(work, ".cache"))).filter((f) => f.endsWith("-zstd-3-ptr"))).toHaveLength(3);

  const layout = join(work, "layout");
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
