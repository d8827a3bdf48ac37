/**
 * Issue 8, every source a user has: a real Docker 20.10 engine (its own `docker save`), another registry
 * (`--from`, to docker-registry and to the serverless-registry emulation), an OCI layout directory,
 * .tar.gz and .tar.zst archives, a multi-image archive (`--image`), and podman with an image it pulled
 * as zstd. Each push is pulled back by another client and compared by digest.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { repositoryBlobs, startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { isSaveCall, startDockerd, DOCKER_CLI } from "../support/dockerd.ts";
import { startFaultProxy } from "../support/fault-proxy.ts";
import { digestOf, makeConfig, makeLayerTar, makeSampleImage, makeTempDir, writeClassicDockerArchive, writeOciArchive } from "../support/fixtures.ts";
import {
  buildPlatformImages,
  compressArchive,
  tarDirectory,
  twoImageDockerArchive,
  twoImageLayout,
  writeMultiPlatformLayout,
  type LayoutPlatform,
  type MultiPlatformLayout,
  type PlatformImage,
} from "../support/multiplatform.ts";
import { PodmanStore } from "../support/podman.ts";
import { runOk } from "../support/ports.ts";
import { startServerlessEmulator } from "../support/serverless-emulator.ts";
import { inspectRaw, pullAndVerify, pullPlatform, skopeoPush, type PlatformSpec } from "../support/skopeo.ts";

const SLOW = 240_000;
const MiB = 1024 * 1024;

let registry: DockerRegistry;
let work: string;
/** linux/amd64 and linux/arm64, two layers each. */
let images: PlatformImage[];

beforeAll(async () => {
  [registry, work] = await Promise.all([startDockerRegistry(), makeTempDir("sources-")]);
  images = await buildPlatformImages(join(work, "umoci"), ["linux/amd64", "linux/arm64"]);
}, SLOW);

afterAll(async () => {
  await Promise.allSettled([registry?.stop(), work ? rm(work, { recursive: true, force: true }) : undefined]);
}, SLOW);

const access = () => ({ username: registry.username, password: registry.password });
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const spec = (p: LayoutPlatform): PlatformSpec => ({ os: p.platform.os, arch: p.platform.architecture });
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

/** A push folder of its own (a fresh .cache), removed by the caller. */
async function folder(prefix: string): Promise<string> {
  return makeTempDir(`sources-${prefix}-`);
}

/** The CLI pushing to the docker-registry, with its user and password, from `cwd`. */
function push(args: string[], cwd: string, env: Record<string, string> = {}) {
  return runCli(args, { cwd, stdin: `${registry.password}\n`, env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true", ...env } });
}

/** The stdout line's digest, after checking the line names `ref`. */
function pushedDigest(stdout: string, ref: string): string {
  expect(stdout).toMatch(/^\S+@sha256:[a-f0-9]{64}\n$/);
  expect(stdout.startsWith(`${ref}@`)).toBe(true);
  return stdout.trim().slice(ref.length + 1);
}

describe("a real Docker engine", () => {
  test(
    "an image in a private dockerd 20.10, pushed through its own docker save, comes back to docker with the same image ID; the next push saves nothing",
    async () => {
      const dockerd = await startDockerd();
      const cwd = await folder("dockerd");
      try {
        const written = await writeClassicDockerArchive(join(work, "for-docker.tar"), makeSampleImage({ bigBytes: 3 * MiB }));
        expect(await dockerd.load(written.path)).toEqual([written.repoTag]);
        const ref = `${registry.host}/sources/docker:1`;
        await dockerd.dockerOk(["tag", written.repoTag, ref]);
        const imageId = await dockerd.imageId(ref);
        expect(imageId).toBe(written.configDigest);
        const env = { DOCKER_HOST: dockerd.dockerHost };

        const before = dockerd.apiCalls().length;
        const result = await push(["--engine", DOCKER_CLI, ref], cwd, env);
        expect(result.code).toBe(0);
        expect(dockerd.apiCalls().slice(before).filter(isSaveCall)).toHaveLength(1);
        expect(result.stderr).toContain(`Saving ${ref} (image ${imageId.slice(7, 19)}) with docker save, reading it as it comes\n`);
        expect((await readdir(cwd)).sort()).toEqual([".cache", `${imageId.slice(7)}.tar`]);
        const digest = pushedDigest(result.stdout, ref);

        // Back into docker: the image is removed first, so the pull really fetches every layer.
        await dockerd.dockerOk(["image", "rm", "--force", imageId]);
        expect((await dockerd.docker(["image", "inspect", imageId])).code).not.toBe(0);
        await dockerd.login(registry.host, registry.username, registry.password);
        expect(await dockerd.pull(ref)).toBe(imageId);
        const layers = JSON.parse((await dockerd.dockerOk(["image", "inspect", "--format", "{{json .RootFS.Layers}}", ref])).stdout);
        expect(layers).toEqual(written.diffIds);
        const repoDigests = (await dockerd.dockerOk(["image", "inspect", "--format", "{{json .RepoDigests}}", ref])).stdout;
        expect(JSON.parse(repoDigests)).toEqual([`${registry.host}/sources/docker@${digest}`]);

        // The cache's record of the image: docker is asked to inspect it, never to save it again.
        const mark = dockerd.apiCalls().length;
        const again = await push(["--engine", DOCKER_CLI, ref], cwd, env);
        expect(again.code).toBe(0);
        expect(pushedDigest(again.stdout, ref)).toBe(digest);
        expect(again.stderr).toContain("no save needed\n");
        const calls = dockerd.apiCalls().slice(mark);
        expect(calls.some((c) => /^GET \/v[\d.]+\/images\/.+\/json$/.test(c))).toBe(true);
        expect(calls.filter(isSaveCall)).toEqual([]);
      } finally {
        await rm(cwd, { recursive: true, force: true });
        await dockerd.stop();
      }
    },
    SLOW,
  );
});

describe("--from another registry", () => {
  test(
    "between two docker-registry instances: the index as it is, blobs copied as stored; the source's credentials from DOCKER_CONFIG, never the destination's password",
    async () => {
      const source = await startDockerRegistry({ username: "mirror", password: "m1rror-only" });
      const proxy = await startFaultProxy(source.url);
      const cwd = await folder("from");
      try {
        const layout = await writeMultiPlatformLayout(join(work, "from-layout"), { images, attestations: true, refName: "v1" });
        await skopeoPush({
          source: `oci:${layout.dir}:v1`,
          ref: `${source.host}/mirror/app:v1`,
          username: source.username,
          password: source.password,
          extraArgs: ["--all", "--preserve-digests"],
        });
        const sourceBlobs = await repositoryBlobs(source, "mirror/app");
        expect(sourceBlobs).toHaveLength(10);

        const from = `${proxy.host}/mirror/app:v1`;
        const ref = `${registry.host}/copied/app:1`;
        // The source's credentials come from the Docker config alone: without them, or with wrong ones, the
        // source refuses to be read and the message says where they come from.
        const hint = `log in to it with docker login ${proxy.host}: a source registry's credentials come from the Docker config (DOCKER_CONFIG), never from USERNAME_REGISTRY\n`;
        const dockerConfig = join(cwd, "docker-config");
        await mkdir(dockerConfig);
        const login = (password: string) =>
          writeFile(
            join(dockerConfig, "config.json"),
            JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from(`${source.username}:${password}`).toString("base64") } } }),
          );
        await writeFile(join(dockerConfig, "config.json"), "{}");
        const anonymous = await push(["--from", from, ref], cwd, { DOCKER_CONFIG: dockerConfig });
        expect(anonymous.code).toBe(1);
        expect(anonymous.stderr).toStartWith(`error: reading ${from}: the registry requires authentication (HTTP 401 UNAUTHORIZED: authentication required `);
        expect(anonymous.stderr).toEndWith(`): ${hint}`);
        await login("not-the-password");
        const wrong = await push(["--from", from, ref], cwd, { DOCKER_CONFIG: dockerConfig });
        expect(wrong.code).toBe(1);
        expect(wrong.stderr).toStartWith(
          `error: reading ${from}: the registry did not accept the credentials (HTTP 401 UNAUTHORIZED: authentication required `,
        );
        expect(wrong.stderr).toEndWith(`): ${hint}`);

        await login(source.password);
        const seen = proxy.requests.length;
        const result = await push(["--from", from, ref], cwd, { DOCKER_CONFIG: dockerConfig });
        expect(result.code).toBe(0);
        expect(pushedDigest(result.stdout, ref)).toBe(layout.indexDigest);
        expect(result.stderr).toContain(`Pushing ${ref} from ${proxy.host}/mirror/app:v1\n`);
        expect(result.stderr).not.toContain("compress");
        expect(result.stderr.match(/: pushed \d+ B \(copied\)\n/g)).toHaveLength(4);
        expect(result.stderr).toContain(`1: digest: ${layout.indexDigest} size: ${layout.indexBytes.length} (index of 2 platforms, the source's own)\n`);

        // The destination holds exactly the source's blobs, and the source's index.
        expect(await repositoryBlobs(registry, "copied/app")).toEqual(sourceBlobs);
        expect(text((await inspectRaw(ref, access())).bytes)).toBe(text(layout.indexBytes));
        for (const p of layout.platforms) {
          const pulled = await pullPlatform(ref, spec(p), access());
          expect(pulled.manifestDigest).toBe(p.manifestDigest);
          expect(pulled.diffIds).toEqual(p.diffIds);
        }

        // What reached the source: reads only, with the source's credentials and nothing of the destination's.
        const toSource = proxy.requests.slice(seen);
        expect(toSource.length).toBeGreaterThan(0);
        expect(new Set(toSource.map((r) => r.method)).size).toBeLessThanOrEqual(2);
        expect(toSource.every((r) => r.method === "GET" || r.method === "HEAD")).toBe(true);
        const authorizations = new Set(toSource.map((r) => r.headers.authorization).filter((a) => a !== undefined));
        expect([...authorizations]).toEqual([basic(source.username, source.password)]);
        const everything = JSON.stringify(proxy.requests);
        expect(everything).not.toContain(registry.password);
        expect(everything).not.toContain(Buffer.from(`${registry.username}:${registry.password}`).toString("base64"));
      } finally {
        await rm(cwd, { recursive: true, force: true });
        await proxy.stop();
        await source.stop();
      }
    },
    SLOW,
  );

  test(
    "from docker-registry into the serverless-registry emulation with a small chunk maximum: same digest, the big layer in chunks of its limits, no blob recompressed",
    async () => {
      const source = await startDockerRegistry({ auth: false });
      const emulator = await startServerlessEmulator({ username: "user", password: "secret", minChunk: 5 * MiB, maxChunk: 6 * MiB });
      const cwd = await folder("from-serverless");
      try {
        // Random bytes do not compress: a gzip layer of about 13 MiB.
        const layers = [makeLayerTar({ "noise.bin": randomBytes(13 * MiB) }), makeLayerTar({ "etc/motd": "copied, not recompressed\n" })];
        const written = await writeOciArchive(join(cwd, "big.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))), repoTag: "big/app:1" });
        await skopeoPush({ source: `oci-archive:${written.path}`, ref: `${source.host}/big/app:1`, extraArgs: ["--preserve-digests"] });
        const empty = join(cwd, "no-config");
        await mkdir(empty);

        const ref = `${emulator.host}/team/app:1`;
        const result = await runCli(["--from", `${source.host}/big/app:1`, ref], {
          cwd,
          stdin: "secret\n",
          env: { USERNAME_REGISTRY: "user", INSECURE_HTTP_PUSH: "true", DOCKER_CONFIG: empty },
        });
        expect(result.code).toBe(0);
        expect(pushedDigest(result.stdout, ref)).toBe(written.manifestDigest!);
        expect(result.stderr).not.toContain("compress");
        // Each chunk goes as soon as it is downloaded from the source, at the emulator's maximum.
        expect(result.stderr).toMatch(/\nlayer 1\/2 sha256:[a-f0-9]{12}: uploading \(in chunks of 6291456 bytes, each sent as soon as it is downloaded\)\n/);
        expect(result.stderr).toMatch(/\nlayer 1\/2 sha256:[a-f0-9]{12}: pushed 13\.\d MB in 3 chunks \(copied\)\n/);
        expect(emulator.violations).toEqual([]);
        const patches = emulator.requests.filter((r) => r.method === "PATCH");
        expect(patches.map((p) => p.bodyBytes).slice(0, 2)).toEqual([6 * MiB, 6 * MiB]);
        expect(Math.max(...emulator.requests.map((r) => r.bodyBytes))).toBeLessThanOrEqual(6 * MiB);
        // The emulator holds the source's blobs byte for byte.
        for (const digest of [written.configDigest, ...written.layerDigests]) expect(digestOf(emulator.blobs.get(digest) ?? new Uint8Array())).toBe(digest);
        expect(text(emulator.manifests.get("team/app:1")!.bytes)).toBe(text(written.manifestBytes!));
        const pulled = await pullAndVerify({ ref, username: "user", password: "secret", tlsVerify: false });
        expect(pulled.layerDigests).toEqual(written.layerDigests);
        expect(pulled.diffIds).toEqual(written.diffIds);
      } finally {
        await rm(cwd, { recursive: true, force: true });
        await emulator.stop();
        await source.stop();
      }
    },
    SLOW,
  );
});

describe("archives and layouts", () => {
  let layout: MultiPlatformLayout;

  test(
    "an OCI layout directory, and the same layout as .tar.gz and .tar.zst: the same index each time, every platform pulls back",
    async () => {
      layout = await writeMultiPlatformLayout(join(work, "layout"), { images });
      const tar = await tarDirectory(layout.dir, join(work, "layout.tar"));
      const sources: [string, string][] = [
        [layout.dir, `OCI layout ${layout.dir}`],
        [await compressArchive(tar, "gzip"), `archive ${tar}.gz (gzip, read as a stream)`],
        [await compressArchive(tar, "zstd"), `archive ${tar}.zst (zstd, read as a stream)`],
      ];
      for (const [i, [path, description]] of sources.entries()) {
        const cwd = await folder("layout");
        try {
          const ref = `${registry.host}/sources/layout-${i}:1`;
          const result = await push(["--archive", path, ref], cwd);
          expect(result.code).toBe(0);
          expect(result.stderr).toContain(`Pushing ${ref} from ${description}\n`);
          expect(pushedDigest(result.stdout, ref)).toBe(layout.indexDigest);
          for (const p of layout.platforms) {
            const pulled = await pullPlatform(ref, spec(p), access());
            expect(pulled.manifestDigest).toBe(p.manifestDigest);
            expect(pulled.configDigest).toBe(p.configDigest);
            expect(pulled.diffIds).toEqual(p.diffIds);
          }
        } finally {
          await rm(cwd, { recursive: true, force: true });
        }
      }
    },
    SLOW,
  );

  test(
    "--image picks one image of a two-image docker-archive (names as Docker reads them); without it, a usage error listing the names",
    async () => {
      const cwd = await folder("image");
      try {
        const archive = await twoImageDockerArchive(join(cwd, "two.tar"));
        const [one, two] = archive.images as [(typeof archive.images)[0], (typeof archive.images)[0]];
        const ref = `${registry.host}/sources/two:1`;
        const usage = `Usage: echo "$PASSWORD" | USERNAME_REGISTRY=<user> bun run index.ts [options] <host[:port]/repository[:tag]>\nRun with --help for the options.\n`;

        const none = await push(["--archive", archive.path, ref], cwd);
        expect(none.code).toBe(2);
        expect(none.stdout).toBe("");
        expect(none.stderr).toEndWith(`error: archive ${archive.path} holds 2 images: choose one with --image <name> (fixture/one:1; fixture/two:2)\n${usage}`);
        const wrong = await push(["--image", "fixture/three:3", "--archive", archive.path, ref], cwd);
        expect(wrong.code).toBe(2);
        expect(wrong.stderr).toEndWith(
          `error: --image fixture/three:3: archive ${archive.path} has no image of that name (fixture/one:1; fixture/two:2)\n${usage}`,
        );

        for (const [name, image] of [
          ["fixture/two:2", two],
          ["docker.io/fixture/one:1", one],
        ] as const) {
          const result = await push(["--image", name, "--archive", archive.path, ref], cwd);
          expect(result.code).toBe(0);
          const pulled = await pullAndVerify({ ref, ...access(), tlsVerify: false });
          expect(pulled.manifestDigest).toBe(pushedDigest(result.stdout, ref));
          expect(pulled.configDigest).toBe(image.configDigest);
          expect(pulled.diffIds).toEqual(image.diffIds);
        }
      } finally {
        await rm(cwd, { recursive: true, force: true });
      }
    },
    SLOW,
  );

  test(
    "a two-image .tar.gz read as a stream: only the chosen image's blobs reach the registry, and none when no image is chosen",
    async () => {
      const cwd = await folder("image-stream");
      try {
        const archive = await twoImageDockerArchive(join(cwd, "two.tar"));
        const gz = await compressArchive(archive.path, "gzip");
        const [one] = archive.images as [(typeof archive.images)[0]];
        // Without --image the push stops at the choice, and the layers that went by were not sent.
        const none = await push(["--archive", gz, `${registry.host}/sources/stream-none:1`], cwd);
        expect(none.code).toBe(2);
        expect(await repositoryBlobs(registry, "sources/stream-none")).toEqual([]);
        const ref = `${registry.host}/sources/stream-one:1`;
        const result = await push(["--image", "fixture/one:1", "--archive", gz, ref], cwd);
        expect(result.code).toBe(0);
        const pulled = await pullAndVerify({ ref, ...access(), tlsVerify: false });
        expect(pulled.configDigest).toBe(one.configDigest);
        expect(pulled.diffIds).toEqual(one.diffIds);
        // The other image's own layer was compressed as it passed, but never sent.
        expect(await repositoryBlobs(registry, "sources/stream-one")).toEqual([...new Set([pulled.configDigest, ...pulled.layerDigests])].sort());
      } finally {
        await rm(cwd, { recursive: true, force: true });
      }
    },
    SLOW,
  );

  test(
    "--image on a two-image layout pushes that image's own manifest",
    async () => {
      const cwd = await folder("image-layout");
      try {
        const two = await twoImageLayout(join(cwd, "layout"));
        const ref = `${registry.host}/sources/two-layout:1`;
        const none = await push(["--archive", two.dir, ref], cwd);
        expect(none.code).toBe(2);
        expect(none.stderr).toContain(`error: OCI layout ${two.dir} holds 2 images: choose one with --image <name> (one; two)\n`);
        const result = await push(["--image", "two", "--archive", two.dir, ref], cwd);
        expect(result.code).toBe(0);
        expect(pushedDigest(result.stdout, ref)).toBe(two.images[1]!.manifestDigest!);
        expect((await pullAndVerify({ ref, ...access(), tlsVerify: false })).configDigest).toBe(two.images[1]!.configDigest);
      } finally {
        await rm(cwd, { recursive: true, force: true });
      }
    },
    SLOW,
  );

  test(
    "--image on a two-image .tar.gz, read as a stream: the other image's layer is not pushed as part of it, nor counted as re-sent",
    async () => {
      const cwd = await folder("image-gz");
      try {
        const archive = await twoImageDockerArchive(join(cwd, "two.tar"));
        const gz = await compressArchive(archive.path, "gzip");
        const two = archive.images[1]!;
        // The layer only image one has: its v1 layer directory is the one image two's manifest.json entry lacks.
        const manifest = JSON.parse((await runOk(["tar", "-xOf", archive.path, "manifest.json"])).stdout) as { RepoTags: string[]; Layers: string[] }[];
        const ofTwo = manifest.find((m) => m.RepoTags.includes(two.name))!.Layers;
        const other = manifest.flatMap((m) => m.Layers).find((l) => !ofTwo.includes(l))!;

        const ref = `${registry.host}/sources/two-gz:1`;
        const result = await push(["--json", "--image", two.name, "--archive", gz, ref], cwd);
        expect(result.code).toBe(0);
        // Compressed as it went by (the archive had not yet said whose it is), never uploaded.
        expect(result.stderr).toContain(`\nlayer ${other.slice(0, 12)}: compressing `);
        expect(result.stderr).not.toMatch(new RegExp(`\nlayer ${other.slice(0, 12)}: (checking|uploading)`));
        const report = JSON.parse(result.stdout);
        expect(report.bytesResent).toBe(0);
        expect(report.blobs).toHaveLength(3);
        const pulled = await pullAndVerify({ ref, ...access(), tlsVerify: false });
        expect(report.digest).toBe(pulled.manifestDigest);
        expect(pulled.configDigest).toBe(two.configDigest);
        expect(pulled.diffIds).toEqual(two.diffIds);
      } finally {
        await rm(cwd, { recursive: true, force: true });
      }
    },
    SLOW,
  );
});

describe("podman", () => {
  test(
    "--engine podman pushes an image podman pulled as zstd: its oci-archive save's plain layers (labelled zstd) are recognised by their bytes",
    async () => {
      const store = await PodmanStore.create();
      const cwd = await folder("podman");
      try {
        const zstd = await store.makeZstdImage("zstd/app:1", registry);
        expect(zstd.layerMediaTypes).toEqual(["application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"]);
        // Plain `podman` (as the CLI runs it) reads these, so it sees the test's private store.
        const storageConf = join(store.dir, "storage.conf");
        const containersConf = join(store.dir, "containers.conf");
        await writeFile(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = "${store.dir}/root"\nrunroot = "${store.dir}/runroot"\n`);
        await writeFile(
          containersConf,
          `[engine]\ntmp_dir = "${store.dir}/tmp"\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nvolume_path = "${store.dir}/volumes"\n[network]\nnetwork_config_dir = "${store.dir}/net"\n`,
        );
        const env = { CONTAINERS_STORAGE_CONF: storageConf, CONTAINERS_CONF: containersConf, TMPDIR: join(store.dir, "tmp") };

        const ref = `${registry.host}/sources/podman-zstd:1`;
        await store.podmanOk(["tag", zstd.ref, ref]);
        const result = await push(["--engine", "podman", ref], cwd, env);
        expect(result.code).toBe(0);
        expect(result.stderr).toContain(
          `Saving ${ref} (image ${zstd.imageId.slice(7, 19)}) with podman save --format oci-archive --uncompressed, reading it as it comes\n`,
        );
        // The layers arrived as plain tar whatever their label said: compressed here, gzip by default.
        expect(result.stderr.match(/ \(compressed now\)\n/g)).toHaveLength(2);
        const digest = pushedDigest(result.stdout, ref);
        expect(digest).not.toBe(zstd.manifestDigest);
        const pulled = await pullAndVerify({ ref, ...access(), tlsVerify: false });
        expect(pulled.manifestDigest).toBe(digest);
        expect(pulled.configDigest).toBe(zstd.imageId);
        expect(pulled.diffIds).toEqual(zstd.diffIds);
        expect(pulled.layerMediaTypes).toEqual(["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"]);
      } finally {
        await rm(cwd, { recursive: true, force: true });
        await store.destroy();
      }
    },
    SLOW,
  );
});
