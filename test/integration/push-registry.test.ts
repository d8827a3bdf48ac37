/**
 * End to end against real parts: Debian's docker-registry with htpasswd Basic auth, an image built by
 * podman, and skopeo pulling back what we pushed and checking every digest.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import {
  buildTestImage,
  makeSampleImage,
  makeTempDir,
  writeClassicDockerArchive,
  writeContainerdArchive,
  writeDocker25Archive,
  writeOciArchive,
  type TestImage,
} from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { pullAndVerify } from "../support/skopeo.ts";

let registry: DockerRegistry;
let store: PodmanStore;
let work: string;
let image: TestImage;
let archive: string;

beforeAll(async () => {
  registry = await startDockerRegistry();
  store = await PodmanStore.create();
  work = await makeTempDir("push-registry-");
  image = await buildTestImage(store, `${registry.host}/e2e/app:1`);
  archive = join(work, "app.tar");
  await store.save(image.tag, archive);
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  await store?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
}, 60_000);

/** The user's command: password piped on stdin, user and http from the environment. */
function push(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  return runCli(args, {
    cwd: opts.cwd ?? work,
    stdin: `${registry.password}\n`,
    env: { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true", ...opts.env },
  });
}

function pull(ref: string) {
  return pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });
}

/** The one stdout line: `<host>/<repo>:<tag>@sha256:<hex>`; returns the digest. */
function resultDigest(stdout: string, ref: string): string {
  expect(stdout).toMatch(new RegExp(`^${ref.replace(/[.]/g, "\\.")}@sha256:[a-f0-9]{64}\\n$`));
  return stdout.trim().split("@")[1] as string;
}

describe("push to docker-registry with Basic auth", () => {
  test("a multi-layer image (24 MiB layer, duplicated layer, non-ASCII label) pulls back intact", async () => {
    const ref = `${registry.host}/e2e/app:1`;
    const result = await push(["--archive", archive, ref]);
    expect(result.stderr).not.toContain(registry.password);
    expect(result.code).toBe(0);
    const digest = resultDigest(result.stdout, ref);

    const pulled = await pull(ref);
    expect(pulled.manifestDigest).toBe(digest);
    expect(pulled.configDigest).toBe(`sha256:${image.imageId.replace(/^sha256:/, "")}`);
    expect(pulled.diffIds).toEqual(image.diffIds);
    expect(pulled.config.config?.Labels?.maintainer).toBe("José");
    expect(pulled.layerMediaTypes.every((t) => t === "application/vnd.oci.image.layer.v1.tar+gzip")).toBe(true);
    expect(pulled.layerDigests[2]).toBe(pulled.layerDigests[4]!);

    // One line per blob on stderr; the duplicated layer is compressed and uploaded once.
    for (const label of ["config", "layer 1/5", "layer 2/5", "layer 3/5", "layer 4/5", "layer 5/5"]) {
      expect(result.stderr).toContain(label);
    }
    expect(result.stderr.match(/compressed now/g)?.length).toBe(4);
    const cache = await readdir(join(work, ".cache"));
    expect(cache.filter((f) => f.endsWith("-gzip-2-ptr"))).toHaveLength(4);
    expect(cache.filter((f) => /^[a-f0-9]{64}$/.test(f))).toHaveLength(4);
    expect(cache.filter((f) => f.startsWith(".tmp"))).toHaveLength(0);
  }, 120_000);

  test("pushing again finds every blob present; another repository reuses .cache without compressing", async () => {
    const again = await push(["--archive", archive, `${registry.host}/e2e/app:1`]);
    expect(again.code).toBe(0);
    expect(again.stderr.match(/: already present/g)?.length).toBe(6);
    expect(again.stderr).toContain("5 blobs: 0 pushed, 5 already present; 0 bytes sent");

    const ref = `${registry.host}/e2e/other:2`;
    const other = await push(["--archive", archive, ref]);
    expect(other.code).toBe(0);
    expect(other.stderr).not.toContain("compressed now");
    expect(other.stderr.match(/from \.cache/g)?.length).toBe(4);
    expect((await pull(ref)).manifestDigest).toBe(resultDigest(other.stdout, ref));
  }, 120_000);

  test("--chunk-size sends equal PATCH chunks that the real registry assembles correctly", async () => {
    const ref = `${registry.host}/e2e/chunked:1`;
    const result = await push(["--archive", archive, "--chunk-size", "5MiB", ref], { cwd: await makeTempDir("chunked-") });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/layer 1\/5 sha256:[a-f0-9]{12}: pushed [\d.]+ MB in [3-9] chunks \(compressed now\)/);
    const pulled = await pull(ref);
    expect(pulled.manifestDigest).toBe(resultDigest(result.stdout, ref));
    expect(pulled.diffIds).toEqual(image.diffIds);
  }, 120_000);

  test("CHUNK_SIZE in the environment works like --chunk-size", async () => {
    const ref = `${registry.host}/e2e/chunked-env:1`;
    const result = await push(["--archive", archive, ref], { cwd: await makeTempDir("chunked-env-"), env: { CHUNK_SIZE: "6MiB" } });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/layer 1\/5 sha256:[a-f0-9]{12}: pushed [\d.]+ MB in [2-9] chunks/);
    await pull(ref);
  }, 120_000);

  const sample = makeSampleImage({ bigBytes: 512 * 1024 });
  const writers = {
    classic: writeClassicDockerArchive,
    docker25: writeDocker25Archive,
    containerd: writeContainerdArchive,
    oci: writeOciArchive,
  } as const;
  for (const [format, write] of Object.entries(writers)) {
    test(`a ${format} archive pushes and pulls back intact`, async () => {
      const written = await write(join(work, `${format}.tar`), sample);
      const ref = `${registry.host}/e2e/format-${format}:1`;
      const result = await push(["--archive", written.path, ref]);
      expect(result.code).toBe(0);
      const pulled = await pull(ref);
      expect(pulled.manifestDigest).toBe(resultDigest(result.stdout, ref));
      expect(pulled.configDigest).toBe(written.configDigest);
      expect(pulled.diffIds).toEqual(written.diffIds);
      if (format === "containerd" || format === "oci") {
        // Already-compressed blobs go as they are: the registry holds exactly the saved bytes.
        expect(pulled.layerDigests).toEqual(written.layerDigests);
        expect(result.stderr).not.toContain("compressed now");
      }
      if (format === "containerd") {
        expect(pulled.layerMediaTypes).toContain("application/vnd.oci.image.layer.v1.tar+zstd");
      }
    }, 120_000);
  }
});

describe("the docker save path (docker CLI in front of podman's Docker API)", () => {
  test("saves <image id>.tar into the push folder, pushes it, and reuses the file next time", async () => {
    const dockerHost = await store.startService();
    const cwd = await makeTempDir("docker-save-");
    const ref = image.tag;
    const result = await push([ref], { cwd, env: { DOCKER_HOST: dockerHost } });
    expect(result.code).toBe(0);
    const id = image.imageId.replace(/^sha256:/, "");
    expect(await readdir(cwd)).toContain(`${id}.tar`);
    const pulled = await pull(ref);
    expect(pulled.manifestDigest).toBe(resultDigest(result.stdout, ref));
    expect(pulled.diffIds).toEqual(image.diffIds);

    const again = await push([ref], { cwd, env: { DOCKER_HOST: dockerHost } });
    expect(again.code).toBe(0);
    expect(again.stderr).toContain(`Reusing ${join(cwd, `${id}.tar`)}`);
  }, 120_000);

  test("an image docker does not know is a clear error", async () => {
    const dockerHost = await store.startService();
    const result = await push([`${registry.host}/e2e/no-such-image:1`], { env: { DOCKER_HOST: dockerHost } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`docker cannot find image ${registry.host}/e2e/no-such-image:1`);
    expect(result.stderr).toContain("docker tag");
    expect(result.stdout).toBe("");
  }, 120_000);
});
