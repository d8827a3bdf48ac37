/**
 * End to end against real parts: Debian's docker-registry with htpasswd Basic auth, an image built by
 * podman, and skopeo pulling back what we pushed and checking every digest.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { isSaveCall } from "../support/dockerd.ts";
import { startFaultProxy } from "../support/fault-proxy.ts";
import {
  buildTestImage,
  makeSampleImage,
  writeClassicDockerArchive,
  writeContainerdArchive,
  writeDocker25Archive,
  writeOciArchive,
  type TestImage,
} from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { runOk } from "../support/ports.ts";
import { inspectRaw, pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";
import { sessionsFor } from "../support/upload-log.ts";

let registry: DockerRegistry;
let store: PodmanStore;
const MiB = 1024 * 1024;
let work: string;
let image: TestImage;
let archive: string;
const tempDir = tempDirs();

beforeAll(async () => {
  registry = await startDockerRegistry();
  store = await PodmanStore.create();
  work = await tempDir("push-registry-");
  image = await buildTestImage(store, `${registry.host}/e2e/app:1`);
  archive = join(work, "app.tar");
  await store.save(image.tag, archive);
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  await store?.destroy();
}, 60_000);

/** The user's command: password piped on stdin, user and http from the environment; a push folder of the test's own. */
async function push(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  return runCli(args, { cwd: opts.cwd ?? (await tempDir("push-")), ...loginAs(registry, opts.env) });
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
    const cwd = await tempDir("push-");
    const result = await push(["--archive", archive, ref], { cwd });
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

    // One line per blob on stderr; the duplicated layer is compressed and uploaded once, and says so.
    for (const label of ["config", "layer 1/5", "layer 2/5", "layer 3/5", "layer 4/5"]) {
      expect(result.stderr).toMatch(new RegExp(`^${label} sha256:[a-f0-9]{12}: pushed `, "m"));
    }
    const short = pulled.layerDigests[2]!.slice(7, 19);
    expect(result.stderr).toContain(`layer 5/5 sha256:${short}: pushed (same layer as layer 3/5)\n`);
    expect(result.stderr.match(/compressed now/g)?.length).toBe(4);
    expect(result.stderr.match(/^layer \d\/5: compressing /gm)?.length).toBe(4);
    expect(result.stderr).toContain("5 blobs: 5 pushed, 0 already present;");
    // The cache holds the four distinct compressed layers (each behind its diff_id pointer) and the config.
    const cache = await readdir(join(cwd, ".cache"));
    expect(cache.filter((f) => f.endsWith("-gzip-2-ptr"))).toHaveLength(4);
    expect(cache.filter((f) => /^[a-f0-9]{64}$/.test(f)).sort()).toEqual([...new Set(pulled.layerDigests), pulled.configDigest].map((d) => d.slice(7)).sort());
    expect(cache.filter((f) => f.startsWith(".tmp"))).toHaveLength(0);
  }, 120_000);

  test("pushing again finds every blob present; another repository mounts every blob, compressing nothing", async () => {
    // This test's own first push, in its own folder: the cache and the mount record it leaves are what is tested.
    const cwd = await tempDir("again-");
    const first = await push(["--archive", archive, `${registry.host}/e2e/again:1`], { cwd });
    expect(first.code).toBe(0);
    const again = await push(["--archive", archive, `${registry.host}/e2e/again:1`], { cwd });
    expect(again.code).toBe(0);
    expect(again.stderr.match(/: already present/g)?.length).toBe(6);
    expect(again.stderr).toContain("5 blobs: 0 pushed, 5 already present; 0 bytes sent");

    // Another repository of the same registry: the cache knows every blob's digest without compressing,
    // and its record of where they went lets the registry mount them from e2e/app instead of uploading.
    const ref = `${registry.host}/e2e/other:2`;
    const logBefore = (await Bun.file(registry.logPath).text()).length;
    const other = await push(["--archive", archive, ref], { cwd });
    expect(other.code).toBe(0);
    expect(other.stderr).not.toContain("compressing");
    expect(other.stderr).not.toContain("compressed now");
    const pulled = await pull(ref);
    expect(pulled.manifestDigest).toBe(resultDigest(other.stdout, ref));
    const blobs = [...new Set(pulled.layerDigests), pulled.configDigest];
    for (const digest of blobs) expect(other.stderr).toMatch(new RegExp(`sha256:${digest.slice(7, 19)}: already present \\(mounted\\)\\n`));
    expect(other.stderr).toContain("5 blobs: 0 pushed, 5 mounted, 0 already present; 0 bytes sent");
    // What the registry saw (its access log): one cross-repository mount per blob, answered 201, and no upload.
    const access = (await Bun.file(registry.logPath).text())
      .slice(logBefore)
      .split("\n")
      .filter((l) => l.startsWith("127.0.0.1 - - "));
    const mounts = access.filter((l) => l.includes('"POST /v2/e2e/other/blobs/uploads/?mount='));
    expect(mounts.map((l) => /mount=sha256%3A([a-f0-9]{64})&from=e2e%2Fagain HTTP\/1\.1" 201 /.exec(l)?.[1]).sort()).toEqual(
      blobs.map((d) => d.slice(7)).sort(),
    );
    expect(access.filter((l) => /"(PATCH|PUT) \/v2\/e2e\/other\/blobs\//.test(l))).toEqual([]);
  }, 120_000);

  test("--chunk-size sends equal PATCH chunks that the real registry assembles correctly", async () => {
    // A proxy with no faults in front of the registry records each request's body size.
    const proxy = await startFaultProxy(registry.url);
    try {
      const ref = `${proxy.host}/e2e/chunked:1`;
      const result = await push(["--archive", archive, "--chunk-size", "5MiB", ref]);
      expect(result.code).toBe(0);
      expect(result.stderr).toMatch(/layer 1\/5 sha256:[a-f0-9]{12}: pushed [\d.]+ MB in [3-9] chunks \(compressed now\)/);
      const pulled = await pull(`${registry.host}/e2e/chunked:1`);
      expect(pulled.manifestDigest).toBe(resultDigest(result.stdout, ref));
      expect(pulled.diffIds).toEqual(image.diffIds);
      // The big layer went in one session: every chunk 5 MiB but the last, which holds the rest.
      const size = pulled.layerSizes[0]!;
      const count = Math.ceil(size / (5 * MiB));
      const sessions = sessionsFor(proxy.requests, pulled.layerDigests[0]!);
      expect(sessions).toHaveLength(1);
      expect(sessions[0]!.patches.map((p) => p.bodyBytes)).toEqual([...Array<number>(count - 1).fill(5 * MiB), size - (count - 1) * 5 * MiB]);
      expect(sessions[0]!.patches.map((p) => p.headers["content-range"])).toEqual(
        Array.from({ length: count }, (_, i) => `${i * 5 * MiB}-${Math.min((i + 1) * 5 * MiB, size) - 1}`),
      );
    } finally {
      await proxy.stop();
    }
  }, 120_000);

  test("CHUNK_SIZE in the environment works like --chunk-size", async () => {
    const ref = `${registry.host}/e2e/chunked-env:1`;
    const result = await push(["--archive", archive, ref], { env: { CHUNK_SIZE: "6MiB" } });
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
      const pushed = resultDigest(result.stdout, ref);
      const pulled = await pull(ref);
      expect(pulled.configDigest).toBe(written.configDigest);
      expect(pulled.diffIds).toEqual(written.diffIds);
      if (format === "classic" || format === "docker25") {
        // Uncompressed layers were compressed here: a manifest of our own, OCI by default.
        expect(pulled.manifestDigest).toBe(pushed);
        expect(pulled.manifest.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
      } else {
        // Already-compressed blobs go as they are, so the source's own manifest goes unchanged: the
        // registry holds exactly the saved bytes, under the digest the archive names.
        expect(pulled.layerDigests).toEqual(written.layerDigests);
        expect(result.stderr).not.toContain("compressed now");
        expect(pulled.manifestDigest).toBe(written.manifestDigest!);
        expect(new TextDecoder().decode(pulled.manifestBytes)).toBe(new TextDecoder().decode(written.manifestBytes!));
      }
      if (format === "oci") {
        expect(pushed).toBe(written.manifestDigest!);
        expect(result.stderr).toContain(`1: digest: ${pushed} size: ${written.manifestBytes!.length} (manifest, the source's own)`);
      }
      if (format === "containerd") {
        // index.json names the image's own index (as the containerd store keeps it): that index goes
        // unchanged under the tag, and the archive's manifest under it.
        const indexJson = JSON.parse((await runOk(["tar", "-xOf", written.path, "index.json"])).stdout) as { manifests: { digest: string }[] };
        const nested = indexJson.manifests[0]!.digest;
        expect(pushed).toBe(nested);
        const raw = await inspectRaw(ref, registry);
        expect(raw.digest).toBe(nested);
        expect((raw.json.manifests as { digest: string }[]).map((m) => m.digest)).toEqual([written.manifestDigest!]);
        expect(result.stderr).toContain(`1: digest: ${pushed} size: ${raw.bytes.length} (index of 1 platform, the source's own)`);
        expect(pulled.layerMediaTypes).toContain("application/vnd.oci.image.layer.v1.tar+zstd");
      }
    }, 120_000);
  }
});

describe("the docker save path (docker CLI in front of podman's Docker API)", () => {
  test("saves <image id>.tar into the push folder; the next push of that image runs no save at all; --rm-archive removes the file", async () => {
    const dockerHost = await store.startService();
    const cwd = await tempDir("docker-save-");
    const fresh = await tempDir("docker-save-rm-");
    const ref = image.tag;
    const id = image.imageId.replace(/^sha256:/, "");
    const saved = join(cwd, `${id}.tar`);
    const env = { DOCKER_HOST: dockerHost };
    /**
     * The saves one run asked the engine for. podman logs a call once it is answered, maybe after the
     * CLI exited: the run's last call (the save, or without one the inspect) is waited for first.
     */
    const run = async (args: string[], dir: string, last: "save" | "inspect") => {
      const from = store.apiCalls().length;
      const result = await push(args, { cwd: dir, env });
      await store.waitForApiCall(last === "save" ? isSaveCall : (c) => /^GET \/v[0-9.]+\/images\/.*\/json$/.test(c), from);
      return { result, saves: store.apiCalls().slice(from).filter(isSaveCall) };
    };
    const listing = async (dir: string) => (await readdir(dir)).sort();

    const first = await run([ref], cwd, "save");
    expect(first.result.code).toBe(0);
    expect(first.saves).toHaveLength(1);
    expect(first.result.stderr).toContain(`Saving ${ref} (image ${id.slice(0, 12)}) with docker save, reading it as it comes`);
    expect(await listing(cwd)).toEqual([".cache", `${id}.tar`]);
    const digest = resultDigest(first.result.stdout, ref);
    const pulled = await pull(ref);
    expect(pulled.manifestDigest).toBe(digest);
    expect(pulled.diffIds).toEqual(image.diffIds);

    // The cache's record of the image and its sealed layers: the engine is only asked to inspect.
    const again = await run([ref], cwd, "inspect");
    expect(again.result.code).toBe(0);
    expect(again.saves).toEqual([]);
    expect(again.result.stderr).toContain(`${ref} (image ${id.slice(0, 12)}): every layer is in ${join(cwd, ".cache")}, no save needed\n`);
    expect(again.result.stderr).toContain(`Pushing ${ref} from cached record of ${ref}\n`);
    expect(resultDigest(again.result.stdout, ref)).toBe(digest);
    expect(await readdir(cwd)).toContain(`${id}.tar`);

    // --rm-archive removes the saved file, whether this run used it or the record...
    const removing = await run(["--rm-archive", ref], cwd, "inspect");
    expect(removing.result.code).toBe(0);
    expect(removing.saves).toEqual([]);
    expect(removing.result.stderr).toContain(`Removed ${saved}\n`);
    expect(await listing(cwd)).toEqual([".cache"]);

    // ...and after a save of its own, leaving no temporary copy behind.
    const saving = await run(["--rm-archive", ref], fresh, "save");
    expect(saving.result.code).toBe(0);
    expect(saving.saves).toHaveLength(1);
    expect(saving.result.stderr).toContain(`Removed ${join(fresh, `${id}.tar`)}\n`);
    expect(await listing(fresh)).toEqual([".cache"]);
    expect(resultDigest(saving.result.stdout, ref)).toBe(digest);
  }, 120_000);

  test("a cached layer found corrupt while pushing from the cache's record: the image is saved again and the push completes", async () => {
    const dockerHost = await store.startService();
    const other = await startDockerRegistry({ auth: false });
    const cwd = await tempDir("docker-repair-");
    try {
      const ref = image.tag;
      const env = { DOCKER_HOST: dockerHost };
      const first = await push([ref], { cwd, env });
      expect(first.code).toBe(0);
      const id = image.imageId.replace(/^sha256:/, "");
      await rm(join(cwd, `${id}.tar`));
      // The big layer's cached blob keeps its size and name, but not its bytes.
      const layer = (await pull(ref)).layerDigests[0]!;
      const cached = join(cwd, ".cache", layer.slice(7));
      const bytes = await Bun.file(cached).bytes();
      bytes[4096] = (bytes[4096] ?? 0) ^ 0xff;
      await Bun.write(cached, bytes);

      // Another registry lacks the blob, so it must be uploaded from the cache (and is hashed as it goes).
      const target = `${other.host}/e2e/repaired:1`;
      await store.podmanOk(["tag", ref, target]);
      const result = await runCli([target], { cwd, env: { INSECURE_HTTP_PUSH: "true", DOCKER_HOST: dockerHost } });
      expect(result.code).toBe(0);
      expect(result.stderr).toContain(`${target} (image ${id.slice(0, 12)}): every layer is in ${join(cwd, ".cache")}, no save needed\n`);
      expect(result.stderr).toMatch(
        new RegExp(
          `\\nwarning: layer 1/5: the cached blob ${layer} holds other bytes \\(they hash to sha256:[a-f0-9]{64}\\); it was removed from ${join(cwd, ".cache")}; saving the image again to repair the cache\\n`,
        ),
      );
      expect(result.stderr).toContain(`Saving ${target} (image ${id.slice(0, 12)}) with docker save, reading it as it comes\n`);
      const pulled = await pullAndVerify({ ref: target, tlsVerify: false });
      expect(pulled.manifestDigest).toBe(resultDigest(result.stdout, target));
      expect(pulled.layerDigests[0]).toBe(layer);
      expect(pulled.diffIds).toEqual(image.diffIds);
    } finally {
      await other.stop();
    }
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
