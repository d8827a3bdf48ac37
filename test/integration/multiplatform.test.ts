/**
 * Proves test/support/multiplatform.ts and the pull-back verifiers in test/support/skopeo.ts: the umoci
 * images are deterministic; every layout variant is what it claims (checkLayout), skopeo reads it and
 * copies it to a docker-registry with every digest unchanged, and skopeo, podman and a private dockerd
 * 20.10 each pull every platform back with the expected config digest and diff_ids. Also the archive
 * wrappers, the containerd-store `docker save` look-alike, and the two-image inputs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startDockerd, type Dockerd } from "../support/dockerd.ts";
import { makeTempDir, need } from "../support/fixtures.ts";
import {
  ANNOTATION,
  MT,
  buildPlatformImages,
  checkLayout,
  compressArchive,
  containerdStyleSave,
  fileDigest,
  gunzipFile,
  ociArchiveWithSkopeo,
  tarDirectory,
  twoImageDockerArchive,
  twoImageLayout,
  writeMultiPlatformLayout,
  type MultiPlatformLayout,
  type PlatformImage,
} from "../support/multiplatform.ts";
import { PodmanStore } from "../support/podman.ts";
import { runOk } from "../support/ports.ts";
import {
  dockerdPullPlatform,
  inspectRaw,
  podmanPullPlatform,
  pullAndVerify,
  pullPlatform,
  skopeo,
  skopeoPush,
  skopeoRun,
  type PlatformSpec,
  type RegistryAccess,
} from "../support/skopeo.ts";

const SLOW = 180_000;
const PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"];

let registry: DockerRegistry | undefined;
/**
 * The archive tests push to a registry of their own, so what they find there does not depend on the
 * layout tests (e.g. the uncompressed layers the "none" test pushed).
 */
let archiveRegistry: DockerRegistry | undefined;
let store: PodmanStore | undefined;
let dockerd: Dockerd | undefined;
let work: string | undefined;
let images: PlatformImage[] | undefined;

function access(): RegistryAccess {
  const reg = need(registry, "registry");
  return { username: reg.username, password: reg.password };
}

function spec(p: { platform: { os: string; architecture: string; variant?: string } }): PlatformSpec {
  return { os: p.platform.os, arch: p.platform.architecture, ...(p.platform.variant === undefined ? {} : { variant: p.platform.variant }) };
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** `skopeo copy --all --preserve-digests oci:<dir>[:ref]` to the registry, then checks the index arrived byte for byte. */
async function pushLayout(layout: MultiPlatformLayout, repo: string, ref?: string): Promise<string> {
  const reg = need(registry, "registry");
  const target = `${reg.host}/${repo}:1`;
  await skopeoPush({
    source: `oci:${layout.dir}${ref === undefined ? "" : `:${ref}`}`,
    ref: target,
    username: reg.username,
    password: reg.password,
    extraArgs: ["--all", "--preserve-digests"],
  });
  const raw = await inspectRaw(target, access());
  expect(raw.digest).toBe(layout.indexDigest);
  expect(raw.mediaType).toBe(layout.indexMediaType);
  expect(text(raw.bytes)).toBe(text(layout.indexBytes));
  return target;
}

beforeAll(async () => {
  await Promise.all([
    startDockerRegistry().then((r) => {
      registry = r;
    }),
    startDockerRegistry().then((r) => {
      archiveRegistry = r;
    }),
    PodmanStore.create().then((s) => {
      store = s;
    }),
    startDockerd().then((d) => {
      dockerd = d;
    }),
    makeTempDir("chunked-push-multi-").then((d) => {
      work = d;
    }),
  ]);
  images = await buildPlatformImages(join(need(work, "work"), "umoci-a"), PLATFORMS);
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled([
    registry?.stop(),
    archiveRegistry?.stop(),
    store?.destroy(),
    dockerd?.stop(),
    work === undefined ? undefined : rm(work, { recursive: true, force: true }),
  ]);
  for (const r of results) if (r.status === "rejected") console.error("multiplatform test cleanup failed:", r.reason);
}, SLOW);

test(
  "buildPlatformImages: 2 layers per platform, distinct contents, variant in the config, deterministic",
  async () => {
    const imgs = need(images, "images");
    expect(imgs.map((i) => i.key)).toEqual(PLATFORMS);
    for (const img of imgs) {
      expect(img.layers).toHaveLength(2);
      expect(img.gzipLayers).toHaveLength(2);
      const config = JSON.parse(text(img.configBytes)) as { os: string; architecture: string; variant?: string; rootfs: { diff_ids: string[] } };
      expect({ os: config.os, architecture: config.architecture, variant: config.variant }).toEqual({ ...img.platform, variant: img.platform.variant });
      expect(config.rootfs.diff_ids).toEqual(img.diffIds);
      // umoci repack writes complete tars: GNU tar lists them without complaint.
      const tarPath = join(need(work, "work"), "layer.tar");
      await Bun.write(tarPath, img.layers[0] ?? new Uint8Array());
      expect((await runOk(["tar", "-tf", tarPath])).stdout).toContain(`etc/platform-${img.key.replaceAll("/", "-")}.txt`);
    }
    expect(new Set(imgs.flatMap((i) => i.diffIds)).size).toBe(imgs.length * 2);
    const again = await buildPlatformImages(join(need(work, "work"), "umoci-b"), PLATFORMS);
    expect(again.map((i) => [i.configDigest, ...i.gzipLayers.map((g) => Bun.hash(g))])).toEqual(
      imgs.map((i) => [i.configDigest, ...i.gzipLayers.map((g) => Bun.hash(g))]),
    );
  },
  SLOW,
);

describe("layouts through skopeo, podman and dockerd", () => {
  test(
    "gzip + attestations + annotations + names: skopeo copies it intact; every platform pulls back in three clients",
    async () => {
      const dir = join(need(work, "work"), "gzip");
      const layout = await writeMultiPlatformLayout(dir, {
        images: need(images, "images"),
        attestations: true,
        manifestAnnotations: { "org.example.manifest": "kept ✓" },
        layerAnnotations: { "org.example.layer": "kept too" },
        indexAnnotations: { "org.example.index": "top" },
        refName: "v1",
        imageName: "docker.io/fixture/multi:v1",
      });
      expect(await checkLayout(dir)).toEqual({ reachable: expect.any(Array), missing: [] });
      const indexJson = JSON.parse(text(layout.indexJsonBytes)) as { manifests: { digest: string; annotations: Record<string, string> }[] };
      expect(indexJson.manifests).toHaveLength(1);
      expect(indexJson.manifests[0]?.annotations).toEqual({ [ANNOTATION.containerdName]: "docker.io/fixture/multi:v1", [ANNOTATION.refName]: "v1" });
      const index = JSON.parse(text(layout.indexBytes)) as { manifests: { platform: { os: string }; annotations?: Record<string, string> }[] };
      expect(index.manifests.map((m) => m.platform.os)).toEqual(["linux", "linux", "linux", "unknown", "unknown", "unknown"]);
      expect(index.manifests[3]?.annotations).toEqual({
        [ANNOTATION.referenceDigest]: layout.platforms[0]?.manifestDigest ?? "",
        [ANNOTATION.referenceType]: "attestation-manifest",
      });
      expect((await skopeo(["inspect", "--raw", `oci:${dir}:v1`])).stdout).toBe(text(layout.indexBytes));

      const ref = await pushLayout(layout, "multi/gzip", "v1");
      const reg = need(registry, "registry");
      const s = need(store, "store");
      const d = need(dockerd, "dockerd");
      for (const p of layout.platforms) {
        const pulled = await pullPlatform(ref, spec(p), access());
        expect(pulled.manifestDigest).toBe(p.manifestDigest);
        expect(text(pulled.manifestBytes)).toBe(text(p.manifestBytes));
        expect(text(pulled.manifestBytes)).toContain('"annotations":{"org.example.layer":"kept too"}');
        expect(pulled.configDigest).toBe(p.configDigest);
        expect(pulled.diffIds).toEqual(p.diffIds);
        expect(pulled.layerMediaTypes).toEqual([MT.ociLayerGzip, MT.ociLayerGzip]);
        expect(pulled.variant).toBe(p.platform.variant);

        const fromPodman = await podmanPullPlatform(s, ref, spec(p), access());
        // podman 4.3's image inspect has no Variant field.
        expect(fromPodman).toEqual({ imageId: p.configDigest, layers: p.diffIds, os: p.platform.os, architecture: p.platform.architecture });

        const fromDocker = await dockerdPullPlatform(d, ref, spec(p), { username: reg.username, password: reg.password });
        expect(fromDocker.imageId).toBe(p.configDigest);
        expect(fromDocker.layers).toEqual(p.diffIds);
        expect(fromDocker.architecture).toBe(p.platform.architecture);
        expect(fromDocker.variant).toBe(p.platform.variant);
      }
    },
    SLOW,
  );

  test(
    "zstd layers: skopeo and podman pull them; dockerd 20.10 cannot",
    async () => {
      const dir = join(need(work, "work"), "zstd");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), compression: "zstd" });
      const ref = await pushLayout(layout, "multi/zstd");
      for (const p of layout.platforms) {
        const pulled = await pullPlatform(ref, spec(p), access());
        expect(pulled.layerMediaTypes).toEqual([MT.ociLayerZstd, MT.ociLayerZstd]);
        expect(pulled.diffIds).toEqual(p.diffIds);
      }
      const arm = layout.platforms[1];
      if (arm === undefined) throw new Error("no arm64");
      expect((await podmanPullPlatform(need(store, "store"), ref, spec(arm), access())).imageId).toBe(arm.configDigest);
      // Debian's dockerd 20.10 downloads the zstd layers but cannot apply them. The image goes first, or
      // the pull would skip layers it already has by diff_id ("Already exists") and succeed.
      const reg = need(registry, "registry");
      const d = need(dockerd, "dockerd");
      await d.docker(["image", "rm", "--force", arm.configDigest]);
      await d.login(reg.host, reg.username, reg.password);
      const pull = await d.docker(["pull", "--platform", "linux/arm64", ref]);
      expect(pull.code).not.toBe(0);
      expect(pull.stdout).not.toContain("Already exists");
      expect(pull.stderr).toContain("failed to register layer");
    },
    SLOW,
  );

  test(
    "uncompressed layers, through skopeo's oci-archive and back",
    async () => {
      const dir = join(need(work, "work"), "none");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), compression: "none", refName: "plain" });
      const archive = await ociArchiveWithSkopeo(dir, join(need(work, "work"), "none-skopeo.tar"), "plain");
      expect((await skopeo(["inspect", "--raw", `oci-archive:${archive}`])).stdout).toBe(text(layout.indexBytes));
      const ref = await pushLayout(layout, "multi/none", "plain");
      const pulled = await pullPlatform(ref, { os: "linux", arch: "arm", variant: "v7" }, access());
      expect(pulled.layerMediaTypes).toEqual([MT.ociLayer, MT.ociLayer]);
      expect(pulled.layerDigests).toEqual(pulled.diffIds);
    },
    SLOW,
  );

  test(
    "Docker media types inside an OCI layout: a manifest list; dockerd pulls it",
    async () => {
      const dir = join(need(work, "work"), "docker");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), dockerMediaTypes: true });
      expect(layout.indexMediaType).toBe(MT.dockerList);
      const ref = await pushLayout(layout, "multi/docker");
      const arm = layout.platforms[1];
      if (arm === undefined) throw new Error("no arm64");
      const pulled = await pullPlatform(ref, spec(arm), access());
      expect(pulled.manifest.mediaType).toBe(MT.dockerManifest);
      expect(pulled.manifest.config.mediaType).toBe(MT.dockerConfig);
      expect(pulled.layerMediaTypes).toEqual([MT.dockerLayerGzip, MT.dockerLayerGzip]);
      const reg = need(registry, "registry");
      const d = need(dockerd, "dockerd");
      await d.docker(["image", "rm", "--force", arm.configDigest]);
      expect((await dockerdPullPlatform(d, ref, spec(arm), { username: reg.username, password: reg.password })).imageId).toBe(arm.configDigest);
    },
    SLOW,
  );

  test(
    "a missing platform: listed, no blobs; skopeo reads the index but cannot copy everything",
    async () => {
      const dir = join(need(work, "work"), "missing");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), missingPlatforms: ["linux/arm64"], attestations: true });
      const arm = layout.platforms.find((p) => p.key === "linux/arm64");
      if (arm === undefined || arm.attestation === undefined) throw new Error("no arm64");
      expect(arm.present).toBe(false);
      expect((await checkLayout(dir)).missing.sort()).toEqual([arm.manifestDigest, arm.attestation.manifestDigest].sort());
      for (const digest of [arm.manifestDigest, arm.configDigest, ...arm.layerDigests, arm.attestation.manifestDigest]) {
        expect(existsSync(join(dir, "blobs", "sha256", digest.slice(7)))).toBe(false);
        expect(layout.missingDigests).toContain(digest);
      }
      expect(layout.platforms.filter((p) => p.present).map((p) => p.key)).toEqual(["linux/amd64", "linux/arm/v7"]);
      expect((await skopeo(["inspect", "--raw", `oci:${dir}`])).stdout).toBe(text(layout.indexBytes));
      const copy = await skopeoRun(["copy", "--all", `oci:${dir}`, `dir:${join(need(work, "work"), "missing-copy")}`]);
      expect(copy.code).not.toBe(0);
      expect(copy.stderr).toContain(arm.manifestDigest.slice(7));
    },
    SLOW,
  );

  test(
    "flat: index.json lists the platform manifests itself",
    async () => {
      const dir = join(need(work, "work"), "flat");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), flat: true, attestations: true, refName: "flat" });
      expect(text(layout.indexJsonBytes)).toBe(text(layout.indexBytes));
      const index = JSON.parse(text(layout.indexJsonBytes)) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
      expect(index.manifests.slice(0, 3).map((m) => m.digest)).toEqual(layout.platforms.map((p) => p.manifestDigest));
      expect(index.manifests[0]?.annotations).toEqual({ [ANNOTATION.refName]: "flat" });
      expect(await checkLayout(dir)).toEqual({ reachable: expect.any(Array), missing: [] });
      expect(layout.blobDigests).not.toContain(layout.indexDigest);
      // containers/image wants one image per name in index.json; a flat multi-platform layout is ambiguous to it.
      const inspect = await skopeoRun(["inspect", "--raw", `oci:${dir}`]);
      expect(inspect.code).not.toBe(0);
      expect(inspect.stderr).toContain("more than one image");
    },
    SLOW,
  );
});

describe("archives", () => {
  test(
    "tarDirectory is deterministic and skopeo reads it as oci-archive; .tar.gz / .tar.zst decompress to it",
    async () => {
      const w = need(work, "work");
      const dir = join(w, "for-tar");
      const layout = await writeMultiPlatformLayout(dir, { images: need(images, "images"), attestations: true });
      const a = await tarDirectory(dir, join(w, "a.tar"));
      const b = await tarDirectory(dir, join(w, "b.tar"));
      expect(await fileDigest(a)).toBe(await fileDigest(b));
      const listing = (await runOk(["tar", "-tf", a])).stdout.split("\n");
      expect(listing.slice(0, 3)).toEqual(["blobs/", "blobs/sha256/", expect.stringMatching(/^blobs\/sha256\/[0-9a-f]{64}$/)]);
      expect(listing).toContain("index.json");
      expect(listing).toContain("oci-layout");
      expect((await skopeo(["inspect", "--raw", `oci-archive:${a}`])).stdout).toBe(text(layout.indexBytes));

      const gz = await compressArchive(a, "gzip");
      const zst = await compressArchive(a, "zstd");
      expect(gz).toBe(`${a}.gz`);
      expect(zst).toBe(`${a}.zst`);
      expect(await fileDigest(await gunzipFile(gz, join(w, "a-gunzipped.tar")))).toBe(await fileDigest(a));
      await runOk(["zstd", "-q", "-d", zst, "-o", join(w, "a-unzstd.tar")]);
      expect(await fileDigest(join(w, "a-unzstd.tar"))).toBe(await fileDigest(a));
    },
    SLOW,
  );

  test(
    "containerdStyleSave: dockerd 20.10 loads it (manifest.json), skopeo reads it as docker-archive",
    async () => {
      const w = need(work, "work");
      const saved = await containerdStyleSave(join(w, "cd-save.tar"), {
        images: need(images, "images"),
        missingPlatforms: ["linux/arm64"],
        attestations: true,
        repoTag: "fixture/multi:1",
      });
      const listing = (await runOk(["tar", "-tf", saved.path])).stdout.split("\n");
      for (const name of ["index.json", "manifest.json", "oci-layout"]) expect(listing).toContain(name);
      const indexJson = JSON.parse((await runOk(["tar", "-xOf", saved.path, "index.json"])).stdout) as {
        manifests: { mediaType: string; digest: string; annotations: Record<string, string> }[];
      };
      expect(indexJson.manifests[0]).toMatchObject({
        mediaType: MT.ociIndex,
        digest: saved.layout.indexDigest,
        annotations: { [ANNOTATION.containerdName]: "docker.io/fixture/multi:1", [ANNOTATION.refName]: "1" },
      });
      const amd = saved.manifestJsonPlatform;
      expect(amd.key).toBe("linux/amd64");
      expect(saved.manifestJson[0]?.Layers).toEqual(amd.layerDigests.map((d) => `blobs/sha256/${d.slice(7)}`));

      const d = need(dockerd, "dockerd");
      expect(await d.load(saved.path)).toEqual(["fixture/multi:1"]);
      expect(await d.imageId("fixture/multi:1")).toBe(amd.configDigest);

      const reg = need(archiveRegistry, "archive registry");
      await skopeoPush({ source: `docker-archive:${saved.path}`, ref: `${reg.host}/multi/cdsave:1`, username: reg.username, password: reg.password });
      const pulled = await pullAndVerify({ ref: `${reg.host}/multi/cdsave:1`, username: reg.username, password: reg.password, tlsVerify: false });
      expect(pulled.configDigest).toBe(amd.configDigest);
      expect(pulled.diffIds).toEqual(amd.diffIds);
    },
    SLOW,
  );

  test(
    "twoImageDockerArchive: two RepoTags; dockerd loads both, skopeo reads each",
    async () => {
      const w = need(work, "work");
      const archive = await twoImageDockerArchive(join(w, "two.tar"));
      const d = need(dockerd, "dockerd");
      expect((await d.load(archive.path)).sort()).toEqual(["fixture/one:1", "fixture/two:2"]);
      const reg = need(archiveRegistry, "archive registry");
      for (const img of archive.images) {
        expect(await d.imageId(img.name)).toBe(img.configDigest);
        const ref = `${reg.host}/two/${img.name.split("/")[1]?.split(":")[0] ?? ""}:1`;
        await skopeoPush({ source: `docker-archive:${archive.path}:${img.name}`, ref, username: reg.username, password: reg.password });
        expect((await pullAndVerify({ ref, username: reg.username, password: reg.password, tlsVerify: false })).configDigest).toBe(img.configDigest);
      }
      expect(archive.images[0]?.diffIds[0]).toBe(archive.images[1]?.diffIds[0]);
      const listing = (await runOk(["tar", "-tf", archive.path])).stdout.split("\n").filter((l) => l.endsWith("/layer.tar"));
      expect(listing).toHaveLength(3);
    },
    SLOW,
  );

  test(
    "twoImageLayout: two ref.names, each readable by skopeo",
    async () => {
      const dir = join(need(work, "work"), "two-layout");
      const layout = await twoImageLayout(dir);
      expect(await checkLayout(dir)).toEqual({ reachable: expect.any(Array), missing: [] });
      for (const img of layout.images) {
        expect((await skopeo(["inspect", "--raw", `oci:${dir}:${img.name}`])).stdout).toBe(text(img.manifestBytes ?? new Uint8Array()));
        const cfg = JSON.parse((await skopeo(["inspect", "--config", "--raw", `oci:${dir}:${img.name}`])).stdout) as {
          config: { Labels: Record<string, string> };
        };
        expect(cfg.config.Labels["org.example.image"]).toBe(img.name);
      }
      const plain = await skopeoRun(["inspect", "--raw", `oci:${dir}`]);
      expect(plain.code).not.toBe(0);
    },
    SLOW,
  );
});
