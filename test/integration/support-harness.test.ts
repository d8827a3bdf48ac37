/**
 * Self-test of the end-to-end test harness (test/support/*): real docker-registry, private podman store,
 * podman's Docker API behind the docker CLI, skopeo verification and the hand-built archive writers.
 * If this file fails, the end-to-end tests' failures say nothing about the CLI.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { CLI_ENTRY, CLI_ENV_VARS, REPO_ROOT, cliEnv, runCli, testHome } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import {
  EVIL_VARIANTS,
  buildTestImage,
  digestOf,
  makeConfig,
  makeLayerTar,
  makeSampleImage,
  makeTempDir,
  writeClassicDockerArchive,
  writeContainerdArchive,
  writeCorruptArchive,
  writeDocker25Archive,
  writeEvilArchive,
  writeOciArchive,
  type TestImage,
  type WrittenArchive,
  need,
} from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { freePort, run, runOk } from "../support/ports.ts";
import { pullAndVerify, skopeoPush } from "../support/skopeo.ts";

/** Per-test budget, explicit so the file does not depend on bunfig's [test] timeout (Bun's default is 5 s). */
const SLOW = 60_000;

let registry: DockerRegistry | undefined;
let store: PodmanStore | undefined;
let work: string | undefined;
let image: TestImage | undefined;

async function tarList(path: string): Promise<string[]> {
  const { stdout } = await runOk(["tar", "-tf", path]);
  return stdout.split("\n").filter((l) => l !== "");
}

beforeAll(async () => {
  // Assign each as soon as it exists, so afterAll cleans up whatever started even if another part failed.
  await Promise.all([
    startDockerRegistry().then((r) => {
      registry = r;
    }),
    PodmanStore.create().then((s) => {
      store = s;
    }),
    makeTempDir().then((d) => {
      work = d;
    }),
  ]);
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled([registry?.stop(), store?.destroy(), work === undefined ? undefined : rm(work, { recursive: true, force: true })]);
  for (const r of results) if (r.status === "rejected") console.error("harness cleanup failed:", r.reason);
}, SLOW);

describe("ports", () => {
  test(
    "freePort gives usable ports",
    async () => {
      const [a, b] = await Promise.all([freePort(), freePort()]);
      expect(a).toBeGreaterThan(0);
      expect(b).toBeGreaterThan(0);
    },
    SLOW,
  );
});

describe("docker-registry", () => {
  test(
    "401 without credentials, 200 with, 401 with a wrong password",
    async () => {
      const reg = need(registry, "registry");
      expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
      const anon = await fetch(`${reg.url}/v2/`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get("www-authenticate") ?? "").toMatch(/^Basic realm=/);
      const ok = await fetch(`${reg.url}/v2/`, { headers: { authorization: `Basic ${btoa(`${reg.username}:${reg.password}`)}` } });
      expect(ok.status).toBe(200);
      const bad = await fetch(`${reg.url}/v2/`, { headers: { authorization: `Basic ${btoa(`${reg.username}:nope`)}` } });
      expect(bad.status).toBe(401);
    },
    SLOW,
  );

  test(
    "auth: false answers 200 anonymously, and stop() removes its dir",
    async () => {
      const open = await startDockerRegistry({ auth: false });
      try {
        expect((await fetch(`${open.url}/v2/`)).status).toBe(200);
      } finally {
        await open.stop();
      }
      expect(existsSync(open.dir)).toBe(false);
    },
    SLOW,
  );
});

describe("podman + skopeo", () => {
  test(
    "build the test image: 5 layers, layer 2 == layer 4, José label",
    async () => {
      const s = need(store, "store");
      image = await buildTestImage(s, "localhost/harness/img:1");
      expect(image.diffIds).toHaveLength(5);
      expect(image.diffIds[2]).toBe(image.diffIds[4] ?? "");
      expect(new Set(image.diffIds).size).toBe(4);
      const { stdout } = await s.podmanOk(["image", "inspect", "--format", "{{json .Labels}}", image.tag]);
      expect(JSON.parse(stdout)).toMatchObject({ maintainer: "José" });
      // The private store is isolated: the machine's own store is not listed here and vice versa.
      const { stdout: images } = await s.podmanOk(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
      expect(images).toContain("localhost/harness/img:1");
    },
    SLOW,
  );

  test(
    "podman save (docker-archive) -> skopeo push -> pullAndVerify",
    async () => {
      const s = need(store, "store");
      const reg = need(registry, "registry");
      const img = need(image, "image");
      const tarPath = join(need(work, "work"), "podman-save.tar");
      await s.save(img.tag, tarPath);
      const listing = await tarList(tarPath);
      expect(listing).toContain("manifest.json");
      // podman's docker-archive: top-level <diffid>.tar files, each distinct layer stored once.
      expect(listing.filter((n) => /^[0-9a-f]{64}\.tar$/.test(n))).toHaveLength(4);

      const ref = `${reg.host}/harness/img:1`;
      await skopeoPush({ source: `docker-archive:${tarPath}`, ref, username: reg.username, password: reg.password });
      const pulled = await pullAndVerify({ ref, username: reg.username, password: reg.password, tlsVerify: false });
      expect(pulled.diffIds).toEqual(img.diffIds);
      expect(pulled.layerDigests).toHaveLength(5);
      expect(pulled.layerDigests[2]).toBe(pulled.layerDigests[4] ?? "");
      expect(pulled.config.config?.Labels?.maintainer).toBe("José");
      // The big layer went up compressed (skopeo gzips docker-archive layers).
      expect(pulled.layerSizes[0] ?? 0).toBeLessThan(img.bigBytes);

      // Without credentials the pull must fail (the registry really enforces auth).
      await expect(pullAndVerify({ ref, tlsVerify: false })).rejects.toThrow();
    },
    SLOW,
  );

  test(
    "podman save --format oci-archive gives an OCI layout",
    async () => {
      const s = need(store, "store");
      const img = need(image, "image");
      const tarPath = join(need(work, "work"), "podman-oci.tar");
      await s.save(img.tag, tarPath, "oci-archive");
      const listing = await tarList(tarPath);
      expect(listing).toContain("index.json");
      expect(listing).toContain("oci-layout");
      expect(listing).not.toContain("manifest.json");
    },
    SLOW,
  );

  test(
    "docker save through podman's Docker API",
    async () => {
      const s = need(store, "store");
      const img = need(image, "image");
      const dockerHost = await s.startService();
      expect(dockerHost).toStartWith("unix://");
      const tarPath = join(need(work, "work"), "docker-save.tar");
      await s.docker(["save", "-o", tarPath, img.tag]);
      const { stdout } = await runOk(["tar", "-tvf", tarPath]);
      expect(stdout).toContain("manifest.json");
      // podman's docker-archive: <v1id>/layer.tar entries are symlinks to ../<diffid>.tar.
      expect(stdout).toMatch(/^l.* [0-9a-f]{64}\/layer\.tar -> \.\.\/[0-9a-f]{64}\.tar$/m);
      const manifest: unknown = JSON.parse((await runOk(["tar", "-xOf", tarPath, "manifest.json"])).stdout);
      expect(manifest).toEqual([expect.objectContaining({ Layers: img.diffIds.map((d) => `${d.slice("sha256:".length)}.tar`) })]);
    },
    SLOW,
  );
});

describe("hand-built archives", () => {
  const sample = makeSampleImage({ bigBytes: 256 * 1024 });

  test(
    "makeLayerTar and makeConfig are deterministic; config has non-ASCII bytes",
    async () => {
      const a = makeLayerTar({ "etc/x.txt": "x", "bin/y": new Uint8Array([1, 2, 3]) });
      const b = makeLayerTar({ "etc/x.txt": "x", "bin/y": new Uint8Array([1, 2, 3]) });
      expect(digestOf(a)).toBe(digestOf(b));
      const dir = need(work, "work");
      await Bun.write(join(dir, "layer.tar"), a);
      expect(await tarList(join(dir, "layer.tar"))).toEqual(["bin/", "bin/y", "etc/", "etc/x.txt"]);
      const config = makeConfig(sample.diffIds);
      const text = new TextDecoder().decode(config);
      expect(config.length).toBeGreaterThan(text.length);
      expect(JSON.parse(text).rootfs.diff_ids).toEqual(sample.diffIds);
    },
    SLOW,
  );

  const writers: [string, (p: string) => Promise<WrittenArchive>, string, RegExp[]][] = [
    [
      "classic",
      (p) => writeClassicDockerArchive(p, sample),
      "docker-archive:",
      [/^manifest\.json$/, /^repositories$/, /^[0-9a-f]{64}\/layer\.tar$/, /^[0-9a-f]{64}\.json$/],
    ],
    [
      "docker25",
      (p) => writeDocker25Archive(p, sample),
      "docker-archive:",
      [/^manifest\.json$/, /^index\.json$/, /^oci-layout$/, /^blobs\/sha256\/[0-9a-f]{64}$/],
    ],
    [
      "containerd",
      (p) => writeContainerdArchive(p, sample, { attestation: true }),
      "oci-archive:",
      [/^manifest\.json$/, /^index\.json$/, /^oci-layout$/, /^blobs\/sha256\/[0-9a-f]{64}$/],
    ],
    ["oci", (p) => writeOciArchive(p, sample), "oci-archive:", [/^index\.json$/, /^oci-layout$/, /^blobs\/sha256\/[0-9a-f]{64}$/]],
  ];

  for (const [name, write, transport, expected] of writers) {
    test(
      `${name}: listing, and skopeo reads it into the registry intact`,
      async () => {
        const reg = need(registry, "registry");
        const path = join(need(work, "work"), `${name}.tar`);
        const written = await write(path);
        const listing = await tarList(path);
        expect(listing).toEqual(written.entries);
        for (const re of expected) expect(listing.some((n) => re.test(n))).toBe(true);
        if (name === "oci") expect(listing).not.toContain("manifest.json");
        if (name === "containerd") {
          expect(written.layerMediaTypes).toContain("application/vnd.oci.image.layer.v1.tar+zstd");
          expect(written.layerMediaTypes).toContain("application/vnd.oci.image.layer.v1.tar+gzip");
        }

        const ref = `${reg.host}/harness/${name}:1`;
        await skopeoPush({ source: `${transport}${path}`, ref, username: reg.username, password: reg.password });
        const pulled = await pullAndVerify({ ref, username: reg.username, password: reg.password, tlsVerify: false });
        expect(pulled.diffIds).toEqual(written.diffIds);
        expect(pulled.configDigest).toBe(written.configDigest);
        expect(Buffer.from(pulled.configBytes).equals(Buffer.from(written.configBytes))).toBe(true);
        if (transport === "oci-archive:") {
          // OCI sources go up as they are: same compressed blobs, media types and manifest bytes.
          expect(pulled.layerDigests).toEqual(written.layerDigests);
          expect(pulled.layerMediaTypes).toEqual(written.layerMediaTypes);
          expect(pulled.manifestDigest).toBe(written.manifestDigest ?? "");
        }
      },
      SLOW,
    );
  }

  test(
    "evil archives contain their hostile entry",
    async () => {
      const dir = need(work, "work");
      for (const variant of EVIL_VARIANTS) {
        const evil = await writeEvilArchive(join(dir, `evil-${variant}.tar`), variant);
        const { stdout } = await run(["tar", "-tvf", evil.path]);
        switch (variant) {
          case "dotdot":
            expect(stdout).toContain(`../${evil.escapeName}`);
            break;
          case "absolute":
            expect(stdout).toContain(evil.mustNotExist[0] ?? "<missing>");
            break;
          case "symlink-absolute":
            expect(stdout).toMatch(/layer\.tar -> \/etc\/passwd$/m);
            break;
          case "symlink-relative":
            expect(stdout).toMatch(/layer\.tar -> \.\.\/\.\.\/x$/m);
            break;
          case "symlink-write-through":
            expect(stdout).toContain(`evil-link/${evil.escapeName}`);
            break;
          case "manifest-escape":
            expect((await runOk(["tar", "-xOf", evil.path, "manifest.json"])).stdout).toContain("../../../../etc/passwd");
            break;
        }
        for (const p of evil.mustNotExist) expect(existsSync(p)).toBe(false);
      }
    },
    SLOW,
  );

  test(
    "corrupt archive ends in the middle of a layer",
    async () => {
      const corrupt = await writeCorruptArchive(join(need(work, "work"), "corrupt.tar"), sample);
      expect(corrupt.truncatedAt).toBeLessThan(corrupt.fullSize);
      expect(Bun.file(corrupt.path).size).toBe(corrupt.truncatedAt);
      const listed = await run(["tar", "-tf", corrupt.path]);
      expect(listed.code).not.toBe(0);
      expect(listed.stdout.split("\n").slice(0, 3)).toContain("manifest.json");
    },
    SLOW,
  );
});

/** Minimal monolithic push (POST + PUT ?digest=, then the manifest), to plant deliberately bad images. */
async function rawPush(reg: DockerRegistry, repo: string, tag: string, blobs: Uint8Array[], manifest: Uint8Array): Promise<void> {
  const auth = { authorization: `Basic ${btoa(`${reg.username}:${reg.password}`)}` };
  for (const blob of blobs) {
    const post = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: { ...auth, "content-length": "0" } });
    expect(post.status).toBe(202);
    const location = new URL(post.headers.get("location") ?? "", reg.url);
    location.searchParams.set("digest", digestOf(blob));
    const put = await fetch(location, { method: "PUT", headers: { ...auth, "content-type": "application/octet-stream" }, body: blob });
    expect(put.status).toBe(201);
  }
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  expect(res.status).toBe(201);
}

describe("pullAndVerify catches bad pushes", () => {
  const layer = makeLayerTar({ "bad.txt": "bad image\n" });
  const gz = Bun.gzipSync(layer);

  function manifestFor(config: Uint8Array, blob: Uint8Array, mediaType: string): Uint8Array {
    return new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
        layers: [{ mediaType, digest: digestOf(blob), size: blob.length }],
      }),
    );
  }

  test(
    "gzip bytes labelled as an uncompressed tar",
    async () => {
      const reg = need(registry, "registry");
      const config = makeConfig([digestOf(layer)]);
      await rawPush(reg, "harness/bad", "mislabelled", [gz, config], manifestFor(config, gz, "application/vnd.oci.image.layer.v1.tar"));
      await expect(
        pullAndVerify({ ref: `${reg.host}/harness/bad:mislabelled`, username: reg.username, password: reg.password, tlsVerify: false }),
      ).rejects.toThrow(/media type .* says none but the bytes are gzip/);
    },
    SLOW,
  );

  test(
    "config diff_id that does not match the layer",
    async () => {
      const reg = need(registry, "registry");
      const config = makeConfig([digestOf(gz)]); // the compressed digest where the uncompressed one belongs
      await rawPush(reg, "harness/bad", "diffid", [gz, config], manifestFor(config, gz, "application/vnd.oci.image.layer.v1.tar+gzip"));
      await expect(pullAndVerify({ ref: `${reg.host}/harness/bad:diffid`, username: reg.username, password: reg.password, tlsVerify: false })).rejects.toThrow(
        /rootfs\.diff_ids\[0\]/,
      );
    },
    SLOW,
  );
});

describe("cli runner", () => {
  test("points at the repo's index.ts and strips the CLI's variables", () => {
    expect(CLI_ENTRY).toBe(join(REPO_ROOT, "index.ts"));
    const saved = Object.fromEntries(CLI_ENV_VARS.map((n) => [n, process.env[n]]));
    try {
      for (const n of CLI_ENV_VARS) process.env[n] = "leaked";
      // Whole families too: settings the CLI does not read today but Docker, podman or fetch do.
      const families = ["DOCKER_NEW_SETTING", "CONTAINERS_REGISTRIES_CONF", "XDG_DATA_HOME", "REGISTRY_FOO", "Https_Proxy"];
      for (const n of families) process.env[n] = "leaked";
      const env = cliEnv({ CHUNK_SIZE: "5242880" });
      for (const n of [...CLI_ENV_VARS, ...families].filter((n) => n !== "CHUNK_SIZE")) expect([n, env[n]]).toEqual([n, undefined]);
      for (const n of families) delete process.env[n];
      expect(env.CHUNK_SIZE).toBe("5242880");
      expect(env.PATH).toBe(process.env.PATH);
      expect(env.HOME).toBe(testHome());
      expect(env.HOME).not.toBe(process.env.HOME);
    } finally {
      for (const [n, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[n];
        else process.env[n] = v;
      }
    }
  });

  test.skipIf(!existsSync(CLI_ENTRY))(
    "runCli spawns the CLI from another cwd",
    async () => {
      const res = await runCli(["--help"], { cwd: need(work, "work"), stdin: "" });
      expect(res.code).toBe(0);
      expect(res.stdout.length + res.stderr.length).toBeGreaterThan(0);
    },
    SLOW,
  );
});
