/**
 * Issue 8, multi-platform: images built offline by umoci for three platforms, laid out by the test (an OCI
 * layout directory with a nested index, buildx-style attestations, a containerd-store `docker save` with a
 * platform's blobs missing) or archived by `skopeo copy --all`. Each push is checked from outside: the
 * manifest or index the tag resolves to (skopeo inspect --raw), every platform pulled back by skopeo
 * (--override-arch) and podman (--platform) with its config digest and diff_ids, and the blobs the
 * registry holds for the repository.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { repositoryBlobs, startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { makeTempDir } from "../support/fixtures.ts";
import {
  MT,
  buildPlatformImages,
  containerdStyleSave,
  ociArchiveWithSkopeo,
  writeMultiPlatformLayout,
  type LayoutPlatform,
  type MultiPlatformLayout,
  type PlatformImage,
} from "../support/multiplatform.ts";
import { PodmanStore } from "../support/podman.ts";
import { inspectRaw, podmanPullPlatform, pullPlatform, skopeoRun, type PlatformSpec } from "../support/skopeo.ts";

const SLOW = 180_000;

let registry: DockerRegistry;
let store: PodmanStore;
let work: string;
/** linux/amd64, linux/arm64, linux/arm/v7: two layers each, contents naming the platform. */
let images: PlatformImage[];

beforeAll(async () => {
  [registry, store, work] = await Promise.all([startDockerRegistry(), PodmanStore.create(), makeTempDir("platforms-")]);
  images = await buildPlatformImages(join(work, "umoci"), ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
}, SLOW);

afterAll(async () => {
  await Promise.allSettled([registry?.stop(), store?.destroy(), work ? rm(work, { recursive: true, force: true }) : undefined]);
}, SLOW);

const access = () => ({ username: registry.username, password: registry.password });
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const spec = (p: LayoutPlatform): PlatformSpec => ({
  os: p.platform.os,
  arch: p.platform.architecture,
  ...(p.platform.variant ? { variant: p.platform.variant } : {}),
});

/** The CLI as a user runs it, from a push folder of its own (its own .cache) inside `work`. */
async function push(args: string[]) {
  const cwd = await makeTempDir("platforms-push-");
  try {
    return await runCli(args, { cwd, stdin: `${registry.password}\n`, env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" } });
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}

/** Every blob of these platforms (config and layers) and of their attestations. */
function blobsOf(platforms: LayoutPlatform[], withAttestations: boolean): string[] {
  return platforms
    .flatMap((p) => [
      p.configDigest,
      ...p.layerDigests,
      ...(withAttestations && p.attestation ? [p.attestation.configDigest, p.attestation.statementDigest] : []),
    ])
    .sort();
}

/** skopeo (--override-arch) and podman (--platform) each pull `p` from `ref`: the platform's own manifest, config and diff_ids. */
async function expectPlatformPulls(ref: string, p: LayoutPlatform, clients: ("skopeo" | "podman")[] = ["skopeo", "podman"]): Promise<void> {
  if (clients.includes("skopeo")) {
    const pulled = await pullPlatform(ref, spec(p), access());
    expect(pulled.manifestDigest).toBe(p.manifestDigest);
    expect(pulled.configDigest).toBe(p.configDigest);
    expect(pulled.diffIds).toEqual(p.diffIds);
  }
  if (clients.includes("podman")) {
    const pulled = await podmanPullPlatform(store, ref, spec(p), access());
    expect(pulled).toEqual({ imageId: p.configDigest, layers: p.diffIds, os: p.platform.os, architecture: p.platform.architecture });
  }
}

function platformLine(p: LayoutPlatform): string {
  return `${p.key}: 2 layers, manifest ${p.manifestDigest} (as in the source)\n`;
}

describe("a source holding an index pushes every platform it holds", () => {
  let layout: MultiPlatformLayout;

  test(
    "an OCI layout of two platforms: the tag resolves to the source's own index listing both, whatever the tag is called; skopeo and podman pull each platform",
    async () => {
      layout = await writeMultiPlatformLayout(join(work, "two"), { images: images.slice(0, 2) });
      // A tag that names an architecture must not pick that platform.
      const ref = `${registry.host}/multi/layout:arm64`;
      const result = await push(["--archive", layout.dir, ref]);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`${ref}@${layout.indexDigest}\n`);
      const [amd64, arm64] = layout.platforms as [LayoutPlatform, LayoutPlatform];
      expect(result.stderr).toContain(
        `${platformLine(amd64)}${platformLine(arm64)}arm64: digest: ${layout.indexDigest} size: ${layout.indexBytes.length} (index of 2 platforms, the source's own)\n`,
      );
      expect(result.stderr).not.toContain("warning");

      const raw = await inspectRaw(ref, access());
      expect(raw.digest).toBe(layout.indexDigest);
      expect(raw.mediaType).toBe(MT.ociIndex);
      expect(text(raw.bytes)).toBe(text(layout.indexBytes));
      expect((raw.json.manifests as { platform: { architecture: string } }[]).map((m) => m.platform.architecture)).toEqual(["amd64", "arm64"]);
      for (const p of layout.platforms) await expectPlatformPulls(ref, p);
      expect(await repositoryBlobs(registry, "multi/layout")).toEqual(blobsOf(layout.platforms, false));
    },
    SLOW,
  );

  test(
    "skopeo copy --all's oci-archive of it: the same index digest; --json has the index and one entry per platform",
    async () => {
      const archive = await ociArchiveWithSkopeo(layout.dir, join(work, "two-skopeo.tar"));
      const ref = `${registry.host}/multi/skopeo-archive:1`;
      const result = await push(["--json", "--archive", archive, ref]);
      expect(result.code).toBe(0);
      const report = JSON.parse(result.stdout);
      expect(report).toMatchObject({
        reference: `${ref}@${layout.indexDigest}`,
        digest: layout.indexDigest,
        mediaType: MT.ociIndex,
        size: layout.indexBytes.length,
        kind: "index",
        unchanged: true,
        source: `archive ${archive}`,
        leftOut: [],
      });
      expect(report.platforms).toEqual(
        layout.platforms.map((p) => ({
          platform: p.key,
          digest: p.manifestDigest,
          mediaType: MT.ociManifest,
          size: p.manifestBytes.length,
          config: p.configDigest,
          layers: 2,
          unchanged: true,
        })),
      );
      expect((await inspectRaw(ref, access())).digest).toBe(layout.indexDigest);
      for (const p of layout.platforms) await expectPlatformPulls(ref, p, ["skopeo"]);
    },
    SLOW,
  );
});

describe("--platform pushes exactly what it names", () => {
  let layout: MultiPlatformLayout;

  beforeAll(async () => {
    layout = await writeMultiPlatformLayout(join(work, "three"), {
      images,
      attestations: true,
      indexAnnotations: { "org.example.index": "kept" },
      refName: "v1",
    });
  });

  test(
    "--platform linux/arm64: that platform's own manifest as a plain manifest, and nothing of the others",
    async () => {
      const arm64 = layout.platforms.find((p) => p.key === "linux/arm64")!;
      const ref = `${registry.host}/multi/only-arm64:1`;
      const result = await push(["--platform", "linux/arm64", "--archive", layout.dir, ref]);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`${ref}@${arm64.manifestDigest}\n`);
      expect(result.stderr).toContain(
        "warning: linux/amd64 is left out: not a chosen --platform\n" +
          "warning: linux/arm/v7 is left out: not a chosen --platform\n" +
          `warning: the attestation ${arm64.attestation!.manifestDigest.slice(0, 19)} is left out: a single-platform push has no index to carry it\n`,
      );
      expect(result.stderr).toContain(`1: digest: ${arm64.manifestDigest} size: ${arm64.manifestBytes.length} (manifest, the source's own)\n`);
      const raw = await inspectRaw(ref, access());
      expect(raw.mediaType).toBe(MT.ociManifest);
      expect(text(raw.bytes)).toBe(text(arm64.manifestBytes));
      await expectPlatformPulls(ref, arm64);
      expect(await repositoryBlobs(registry, "multi/only-arm64")).toEqual(blobsOf([arm64], false));
    },
    SLOW,
  );

  test(
    "two --platform flags: a new index of those two with their attestations (a dry run names the same digest first); the same choice gives the same digest again",
    async () => {
      const chosen = layout.platforms.filter((p) => p.key !== "linux/arm64");
      const [amd64, armv7] = chosen as [LayoutPlatform, LayoutPlatform];
      // `linux/arm` without a variant takes linux/arm/v7.
      const flags = ["--platform", "linux/amd64", "--platform", "linux/arm"];
      const ref = `${registry.host}/multi/two-of-three:1`;

      const dry = await push(["--dry-run", ...flags, "--archive", layout.dir, ref]);
      expect(dry.code).toBe(0);
      expect(dry.stdout).toBe("");
      const predicted = /\n1: would get index of 2 platforms (sha256:[a-f0-9]{64}) size: \d+ \(dry run: no manifest sent\)\n/.exec(dry.stderr)?.[1];
      expect(predicted).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(dry.stderr).toContain(`${platformLine(amd64)}${platformLine(armv7)}1: would get index of 2 platforms ${predicted}`);

      const result = await push([...flags, "--archive", layout.dir, ref]);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`${ref}@${predicted}\n`);
      expect(result.stderr).toContain("warning: linux/arm64 is left out: not a chosen --platform\n");
      expect(result.stderr).toContain(`${platformLine(amd64)}${platformLine(armv7)}1: digest: ${predicted} size: `);
      expect(result.stderr).toMatch(/ \(index of 2 platforms\)\n/);

      // The tool's own index: the two platforms' manifests unchanged, each attestation still naming its
      // image, in the source's order, with the source index's annotations.
      const raw = await inspectRaw(ref, access());
      expect(raw.digest).toBe(predicted!);
      expect(raw.json).toEqual({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        manifests: [
          ...chosen.map((p) => ({
            mediaType: MT.ociManifest,
            digest: p.manifestDigest,
            size: p.manifestBytes.length,
            platform: p.key === "linux/amd64" ? { architecture: "amd64", os: "linux" } : { architecture: "arm", os: "linux", variant: "v7" },
          })),
          ...chosen.map((p) => ({
            mediaType: MT.ociManifest,
            digest: p.attestation!.manifestDigest,
            size: p.attestation!.manifestBytes.length,
            annotations: { "vnd.docker.reference.digest": p.manifestDigest, "vnd.docker.reference.type": "attestation-manifest" },
            platform: { architecture: "unknown", os: "unknown" },
          })),
        ],
        annotations: { "org.example.index": "kept" },
      });
      for (const p of chosen) {
        const attestation = await inspectRaw(`${registry.host}/multi/two-of-three@${p.attestation!.manifestDigest}`, access());
        expect(text(attestation.bytes)).toBe(text(p.attestation!.manifestBytes));
      }
      for (const p of chosen) await expectPlatformPulls(ref, p);
      const arm64 = await skopeoRun([
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        `--creds=${registry.username}:${registry.password}`,
        `docker://${ref}`,
      ]);
      expect(arm64.code).not.toBe(0);
      expect(await repositoryBlobs(registry, "multi/two-of-three")).toEqual(blobsOf(chosen, true));

      // The same input and the same choice, from a fresh cache, to another tag: the same index.
      const again = await push([...flags, "--archive", layout.dir, `${registry.host}/multi/two-of-three:again`]);
      expect(again.code).toBe(0);
      expect(again.stdout).toBe(`${registry.host}/multi/two-of-three:again@${predicted}\n`);
    },
    SLOW,
  );

  test(
    "a platform the image does not have is a usage error naming the flag and the platforms it has",
    async () => {
      const result = await push(["--platform", "linux/s390x", "--archive", layout.dir, `${registry.host}/multi/none:1`]);
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toContain(
        "\nerror: --platform linux/s390x: no platform of the image matches (it has linux/amd64, linux/arm64, linux/arm/v7)\nUsage: ",
      );
      expect(await repositoryBlobs(registry, "multi/none")).toEqual([]);
    },
    SLOW,
  );
});

describe("a partial save", () => {
  test(
    "a containerd-store save lacking one platform's blobs pushes the others, with a warning naming the missing platform",
    async () => {
      const saved = await containerdStyleSave(join(work, "partial.tar"), { images, missingPlatforms: ["linux/arm64"], attestations: true });
      const present = saved.layout.platforms.filter((p) => p.present);
      const missing = saved.layout.platforms.find((p) => !p.present)!;
      const ref = `${registry.host}/multi/partial:1`;
      const result = await push(["--json", "--archive", saved.path, ref]);
      expect(result.code).toBe(0);
      const leftOut = [
        `linux/arm64 is left out: its manifest ${missing.manifestDigest} is not in archive ${saved.path}`,
        `the attestation ${missing.attestation!.manifestDigest.slice(0, 19)} is left out: its manifest ${missing.attestation!.manifestDigest} is not in archive ${saved.path}`,
      ];
      expect(result.stderr).toStartWith(`Pushing ${ref} from archive ${saved.path}\n${leftOut.map((l) => `warning: ${l}\n`).join("")}`);
      const report = JSON.parse(result.stdout);
      expect(report.kind).toBe("index");
      expect(report.unchanged).toBe(false);
      expect(report.leftOut).toEqual(leftOut);
      expect(report.platforms.map((p: { platform: string; digest: string; unchanged: boolean }) => [p.platform, p.digest, p.unchanged])).toEqual(
        present.map((p) => [p.key, p.manifestDigest, true]),
      );
      // One name per blob, attestations named by the platform they describe.
      const names = (report.blobs as { name: string }[]).map((b) => b.name).sort();
      expect(names).toEqual(
        ["linux/amd64", "linux/arm/v7"]
          .flatMap((k) => [`${k} attestation blob 1/2`, `${k} attestation blob 2/2`, `${k} config`, `${k} layer 1/2`, `${k} layer 2/2`])
          .sort(),
      );

      const raw = await inspectRaw(ref, access());
      expect(raw.digest).toBe(report.digest);
      expect((raw.json.manifests as { digest: string }[]).map((m) => m.digest)).toEqual([
        ...present.map((p) => p.manifestDigest),
        ...present.map((p) => p.attestation!.manifestDigest),
      ]);
      for (const p of present) await expectPlatformPulls(ref, p);
      expect(await repositoryBlobs(registry, "multi/partial")).toEqual(blobsOf(present, true));
    },
    SLOW,
  );
});
