/**
 * Issue 8, digest fidelity: when every blob goes as stored, the registry gets the source's own index and
 * manifest bytes (same digests, annotations and media types); when the tool compresses layers it writes
 * consistent manifests, OCI by default or Docker v2 with --format docker (pulled by a real dockerd 20.10
 * and by podman); and the same input always gives the same digest.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { repositoryBlobs, startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startDockerd, type Dockerd } from "../support/dockerd.ts";
import { deterministicBytes, digestOf, makeConfig, makeLayerTar, makeTempDir, writeClassicDockerArchive } from "../support/fixtures.ts";
import {
  MT,
  buildPlatformImages,
  compressArchive,
  containerdStyleSave,
  tarDirectory,
  writeMultiPlatformLayout,
  type LayoutPlatform,
  type PlatformImage,
} from "../support/multiplatform.ts";
import { PodmanStore } from "../support/podman.ts";
import { dockerdPullPlatform, inspectRaw, podmanPullPlatform, pullAndVerify, pullPlatform, type PlatformSpec } from "../support/skopeo.ts";

const SLOW = 180_000;

let registry: DockerRegistry;
let store: PodmanStore;
let dockerd: Dockerd;
let work: string;
/** linux/amd64 and linux/arm64, two layers each. */
let images: PlatformImage[];

beforeAll(async () => {
  [registry, store, dockerd, work] = await Promise.all([startDockerRegistry(), PodmanStore.create(), startDockerd(), makeTempDir("fidelity-")]);
  images = await buildPlatformImages(join(work, "umoci"), ["linux/amd64", "linux/arm64"]);
}, SLOW);

afterAll(async () => {
  await Promise.allSettled([registry?.stop(), store?.destroy(), dockerd?.stop(), work ? rm(work, { recursive: true, force: true }) : undefined]);
}, SLOW);

const access = () => ({ username: registry.username, password: registry.password });
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const spec = (p: LayoutPlatform): PlatformSpec => ({ os: p.platform.os, arch: p.platform.architecture });

/** The CLI from a push folder of its own (a fresh .cache each time). */
async function push(args: string[]) {
  const cwd = await makeTempDir("fidelity-push-");
  try {
    return await runCli(args, { cwd, stdin: `${registry.password}\n`, env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" } });
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}

/** The stdout line's digest, after checking the line names `ref`. */
function pushedDigest(stdout: string, ref: string): string {
  expect(stdout).toMatch(/^\S+@sha256:[a-f0-9]{64}\n$/);
  expect(stdout.startsWith(`${ref}@`)).toBe(true);
  return stdout.trim().slice(ref.length + 1);
}

describe("blobs that go as stored keep the source's manifests byte for byte", () => {
  test(
    "an OCI archive with annotations on the index, the manifests and the layers: the same index and manifest digests, annotations intact",
    async () => {
      const annotations = {
        manifestAnnotations: { "org.opencontainers.image.source": "https://example.com/app", "org.example.note": "kept ✓" },
        layerAnnotations: { "org.example.layer": "kept too" },
        indexAnnotations: { "org.example.index": "top" },
      };
      const layout = await writeMultiPlatformLayout(join(work, "annotated"), { images, ...annotations, refName: "v1" });
      const archive = await tarDirectory(layout.dir, join(work, "annotated.tar"));
      const ref = `${registry.host}/fidelity/oci:1`;
      const result = await push(["--archive", archive, ref]);
      expect(result.code).toBe(0);
      expect(pushedDigest(result.stdout, ref)).toBe(layout.indexDigest);
      expect(result.stderr).not.toContain("compress");

      const index = await inspectRaw(ref, access());
      expect(text(index.bytes)).toBe(text(layout.indexBytes));
      expect(index.json.annotations).toEqual(annotations.indexAnnotations);
      for (const p of layout.platforms) {
        const manifest = await inspectRaw(`${registry.host}/fidelity/oci@${p.manifestDigest}`, access());
        expect(text(manifest.bytes)).toBe(text(p.manifestBytes));
        expect(manifest.json.annotations).toEqual(annotations.manifestAnnotations);
        expect((manifest.json.layers as { annotations: unknown }[]).map((l) => l.annotations)).toEqual([
          annotations.layerAnnotations,
          annotations.layerAnnotations,
        ]);
        const pulled = await pullPlatform(ref, spec(p), access());
        expect(pulled.configDigest).toBe(p.configDigest);
        expect(pulled.diffIds).toEqual(p.diffIds);
      }
    },
    SLOW,
  );

  test(
    "a containerd-store save whose layers are stored as zstd: the source's index and manifests, layers untouched; podman pulls it",
    async () => {
      const saved = await containerdStyleSave(join(work, "containerd-zstd.tar"), {
        images,
        compression: "zstd",
        manifestAnnotations: { "org.example.built-by": "containerd" },
      });
      const ref = `${registry.host}/fidelity/containerd:1`;
      const result = await push(["--archive", saved.path, ref]);
      expect(result.code).toBe(0);
      expect(pushedDigest(result.stdout, ref)).toBe(saved.layout.indexDigest);
      expect(result.stderr).not.toContain("compress");
      expect(result.stderr).toContain(
        `1: digest: ${saved.layout.indexDigest} size: ${saved.layout.indexBytes.length} (index of 2 platforms, the source's own)\n`,
      );
      expect(text((await inspectRaw(ref, access())).bytes)).toBe(text(saved.layout.indexBytes));
      for (const p of saved.layout.platforms) {
        const pulled = await pullPlatform(ref, spec(p), access());
        expect(pulled.manifestDigest).toBe(p.manifestDigest);
        expect(pulled.layerDigests).toEqual(p.layerDigests);
        expect(pulled.layerMediaTypes).toEqual([MT.ociLayerZstd, MT.ociLayerZstd]);
        expect(pulled.diffIds).toEqual(p.diffIds);
        expect((await podmanPullPlatform(store, ref, spec(p), access())).imageId).toBe(p.configDigest);
      }
      expect(await repositoryBlobs(registry, "fidelity/containerd")).toEqual(saved.layout.platforms.flatMap((p) => [p.configDigest, ...p.layerDigests]).sort());

      // Docker's schema has no zstd layer type: --format docker says so before sending any blob.
      const docker = await push(["--format", "docker", "--archive", saved.path, `${registry.host}/fidelity/containerd-docker:1`]);
      expect(docker.code).toBe(1);
      expect(docker.stderr).toEndWith(
        "error: --format docker: linux/amd64 layer 1/2 is stored as zstd, which a Docker v2 manifest cannot describe: use --format oci (the default)\n",
      );
      expect(await repositoryBlobs(registry, "fidelity/containerd-docker")).toEqual([]);
    },
    SLOW,
  );
});

describe("manifests the tool writes are consistent", () => {
  test(
    "--format docker: uncompressed layers are compressed and described by a Docker v2 manifest list that dockerd 20.10 and podman pull",
    async () => {
      const layout = await writeMultiPlatformLayout(join(work, "plain"), { images, compression: "none" });
      const ref = `${registry.host}/fidelity/docker-format:1`;
      const result = await push(["--format", "docker", "--archive", layout.dir, ref]);
      expect(result.code).toBe(0);
      expect(result.stderr.match(/ \(compressed now\)\n/g)).toHaveLength(4);
      const digest = pushedDigest(result.stdout, ref);

      const list = await inspectRaw(ref, access());
      expect(list.digest).toBe(digest);
      expect(list.mediaType).toBe(MT.dockerList);
      const children = list.json.manifests as { mediaType: string; digest: string; platform: { architecture: string } }[];
      expect(children.map((c) => [c.mediaType, c.platform.architecture])).toEqual([
        [MT.dockerManifest, "amd64"],
        [MT.dockerManifest, "arm64"],
      ]);
      for (const [i, p] of layout.platforms.entries()) {
        const manifest = await inspectRaw(`${registry.host}/fidelity/docker-format@${children[i]!.digest}`, access());
        expect(manifest.json.mediaType).toBe(MT.dockerManifest);
        expect(manifest.json.config).toEqual({ mediaType: MT.dockerConfig, digest: p.configDigest, size: p.configBytes.length });
        expect((manifest.json.layers as { mediaType: string }[]).map((l) => l.mediaType)).toEqual([MT.dockerLayerGzip, MT.dockerLayerGzip]);
        expect(manifest.json).not.toHaveProperty("annotations");

        const fromDocker = await dockerdPullPlatform(dockerd, ref, spec(p), access());
        expect(fromDocker).toEqual({ imageId: p.configDigest, layers: p.diffIds, os: "linux", architecture: p.platform.architecture });
        const fromPodman = await podmanPullPlatform(store, ref, spec(p), access());
        expect(fromPodman.imageId).toBe(p.configDigest);
        expect(fromPodman.layers).toEqual(p.diffIds);
      }

      // One platform of it: a plain Docker v2 manifest, which `docker pull` takes by its tag.
      const arm64 = layout.platforms[1]!;
      const single = `${registry.host}/fidelity/docker-format:arm64`;
      const one = await push(["--format", "docker", "--platform", "linux/arm64", "--archive", layout.dir, single]);
      expect(one.code).toBe(0);
      expect(pushedDigest(one.stdout, single)).toBe(children[1]!.digest);
      expect((await inspectRaw(single, access())).mediaType).toBe(MT.dockerManifest);
      await dockerd.docker(["image", "rm", "--force", arm64.configDigest]);
      expect(await dockerd.pull(single)).toBe(arm64.configDigest);
    },
    SLOW,
  );

  test(
    "an OCI layout whose manifests use Docker media types: pushed as stored when its layers are compressed, rebuilt in Docker's own format when they are not",
    async () => {
      const stored = await writeMultiPlatformLayout(join(work, "docker-types"), { images, dockerMediaTypes: true });
      const ref = `${registry.host}/fidelity/docker-types:1`;
      const asStored = await push(["--archive", stored.dir, ref]);
      expect(asStored.code).toBe(0);
      expect(pushedDigest(asStored.stdout, ref)).toBe(stored.indexDigest);
      expect(text((await inspectRaw(ref, access())).bytes)).toBe(text(stored.indexBytes));
      for (const p of stored.platforms) expect((await pullPlatform(ref, spec(p), access())).manifestDigest).toBe(p.manifestDigest);

      const plain = await writeMultiPlatformLayout(join(work, "docker-types-plain"), { images, dockerMediaTypes: true, compression: "none" });
      const rebuiltRef = `${registry.host}/fidelity/docker-types-plain:1`;
      const rebuilt = await push(["--archive", plain.dir, rebuiltRef]);
      expect(rebuilt.code).toBe(0);
      const list = await inspectRaw(rebuiltRef, access());
      expect(list.mediaType).toBe(MT.dockerList);
      for (const [i, p] of plain.platforms.entries()) {
        const child = (list.json.manifests as { digest: string }[])[i]!;
        const manifest = await inspectRaw(`${registry.host}/fidelity/docker-types-plain@${child.digest}`, access());
        // Never an OCI manifest naming a Docker config: every type is Docker's.
        expect(manifest.json.mediaType).toBe(MT.dockerManifest);
        expect((manifest.json.config as { mediaType: string }).mediaType).toBe(MT.dockerConfig);
        expect((manifest.json.layers as { mediaType: string }[]).map((l) => l.mediaType)).toEqual([MT.dockerLayerGzip, MT.dockerLayerGzip]);
        const pulled = await pullPlatform(rebuiltRef, spec(p), access());
        expect(pulled.configDigest).toBe(p.configDigest);
        expect(pulled.diffIds).toEqual(p.diffIds);
        expect((await podmanPullPlatform(store, rebuiltRef, spec(p), access())).imageId).toBe(p.configDigest);
      }
    },
    SLOW,
  );
});

describe("the same input always gives the same digest", () => {
  test(
    "one docker-archive as .tar, .tar.gz and .tar.zst, each pushed from a fresh cache: one manifest digest, one layer digest",
    async () => {
      // 9 MiB of partly compressible bytes: nine compression blocks, compressed in parallel.
      const layers = [makeLayerTar({ "data/big.bin": deterministicBytes(9 * 1024 * 1024) }), makeLayerTar({ "etc/motd": "same bytes, same digest\n" })];
      const written = await writeClassicDockerArchive(join(work, "same.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))) });
      const archives = [written.path, await compressArchive(written.path, "gzip"), await compressArchive(written.path, "zstd"), written.path];
      const digests: string[] = [];
      for (const [i, archive] of archives.entries()) {
        const ref = `${registry.host}/fidelity/same-${i}:1`;
        const result = await push(["--archive", archive, ref]);
        expect(result.code).toBe(0);
        digests.push(pushedDigest(result.stdout, ref));
      }
      expect(new Set(digests).size).toBe(1);
      const pulled = await pullAndVerify({ ref: `${registry.host}/fidelity/same-0:1`, ...access(), tlsVerify: false });
      expect(pulled.manifestDigest).toBe(digests[0]!);
      expect(pulled.configDigest).toBe(written.configDigest);
      expect(pulled.diffIds).toEqual(written.diffIds);
      for (const i of [1, 2, 3]) expect(await repositoryBlobs(registry, `fidelity/same-${i}`)).toEqual(await repositoryBlobs(registry, "fidelity/same-0"));
    },
    SLOW,
  );
});
