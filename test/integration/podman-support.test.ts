/**
 * Proves the podman additions in test/support/podman.ts: the API service's access log (apiCalls()) shows
 * inspect and save calls, and makeZstdImage() leaves an image that podman pulled with zstd layers, whose
 * `podman save` as docker-archive fails, as oci-archive recompresses the layers with gzip, and with
 * `--format oci-archive --uncompressed` holds plain tar layers whose media type still says `+zstd`.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { isSaveCall } from "../support/dockerd.ts";
import { digestOf, makeTempDir, need } from "../support/fixtures.ts";
import { PodmanStore, type ZstdImage } from "../support/podman.ts";
import { runOk } from "../support/ports.ts";
import { pullAndVerify } from "../support/skopeo.ts";

const SLOW = 120_000;

let registry: DockerRegistry | undefined;
let store: PodmanStore | undefined;
let work: string | undefined;
let zstd: ZstdImage | undefined;

/** Extracts an OCI archive and returns its index and the single manifest it names. */
async function readOciArchive(path: string, into: string): Promise<{ manifest: { layers: { mediaType: string; digest: string }[] }; dir: string }> {
  await mkdir(into);
  await runOk(["tar", "-xf", path, "-C", into]);
  const index = JSON.parse(await readFile(join(into, "index.json"), "utf8")) as { manifests: { digest: string }[] };
  const digest = index.manifests[0]?.digest ?? "";
  const manifest = JSON.parse(await readFile(join(into, "blobs", "sha256", digest.slice(7)), "utf8")) as { layers: { mediaType: string; digest: string }[] };
  return { manifest, dir: into };
}

beforeAll(async () => {
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
  const s = need(store, "store");
  await s.startService();
  zstd = await s.makeZstdImage("zstd/app:1", need(registry, "registry"));
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled([registry?.stop(), store?.destroy(), work === undefined ? undefined : rm(work, { recursive: true, force: true })]);
  for (const r of results) if (r.status === "rejected") console.error("podman test cleanup failed:", r.reason);
}, SLOW);

test(
  "makeZstdImage: pushed and pulled back as zstd; the registry copy verifies",
  async () => {
    const z = need(zstd, "zstd image");
    const reg = need(registry, "registry");
    expect(z.ref).toBe(`${reg.host}/zstd/app:1`);
    expect(z.layerMediaTypes).toEqual(["application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"]);
    expect(z.diffIds).toHaveLength(2);
    expect(digestOf(z.manifestBytes)).toBe(z.manifestDigest);
    const pulled = await pullAndVerify({ ref: z.ref, username: reg.username, password: reg.password, tlsVerify: false });
    expect(pulled.configDigest).toBe(z.imageId);
    expect(pulled.diffIds).toEqual(z.diffIds);
    expect(pulled.manifestDigest).toBe(z.manifestDigest);
  },
  SLOW,
);

test(
  "podman save of the zstd image: docker-archive fails, oci-archive recompresses as gzip, --uncompressed gives plain tar layers still labelled zstd",
  async () => {
    const s = need(store, "store");
    const z = need(zstd, "zstd image");
    const dir = need(work, "work dir");

    const docker = await s.podman(["save", "--output", join(dir, "d.tar"), z.ref]);
    expect(docker.code).not.toBe(0);
    expect(docker.stderr).toContain("zstd compression is not supported for docker images");

    await s.save(z.ref, join(dir, "o.tar"), "oci-archive");
    const oci = await readOciArchive(join(dir, "o.tar"), join(dir, "o"));
    // podman 4.3 does not keep the zstd blobs: its oci-archive holds them recompressed with gzip.
    expect(oci.manifest.layers.map((l) => l.mediaType)).toEqual(["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"]);

    await s.podmanOk(["save", "--format", "oci-archive", "--uncompressed", "--output", join(dir, "u.tar"), z.ref]);
    const plain = await readOciArchive(join(dir, "u.tar"), join(dir, "u"));
    // The blobs are the plain tars (digest = diff_id, no zstd magic), but podman 4.3 keeps the media type it
    // pulled with: the manifest says `tar+zstd` for uncompressed bytes. A reader must sniff, not trust it.
    expect(plain.manifest.layers.map((l) => l.digest)).toEqual(z.diffIds);
    expect(plain.manifest.layers.map((l) => l.mediaType)).toEqual(z.layerMediaTypes);
    for (const l of plain.manifest.layers) {
      const bytes = new Uint8Array(await readFile(join(plain.dir, "blobs", "sha256", l.digest.slice(7))));
      expect(digestOf(bytes)).toBe(l.digest);
      expect(Array.from(bytes.subarray(0, 4))).not.toEqual([0x28, 0xb5, 0x2f, 0xfd]);
      expect(new TextDecoder().decode(bytes.subarray(257, 262))).toBe("ustar");
    }
  },
  SLOW,
);

test(
  "apiCalls(): inspect shows, no save call until docker save runs through the API",
  async () => {
    const s = need(store, "store");
    const z = need(zstd, "zstd image");
    const dir = need(work, "work dir");
    const before = s.apiCalls().length;
    await s.docker(["image", "inspect", "--format", "{{.Id}}", z.ref]);
    await s.waitForApiCall((c) => /^GET \/v[0-9.]+\/images\/.*zstd\/app:1\/json$/.test(c), before);
    expect(s.apiCalls().slice(before).some(isSaveCall)).toBe(false);

    const mark = s.apiCalls().length;
    // The docker CLI (28.x on PATH) asks podman's API for the archive; podman cannot write zstd layers
    // into a docker-archive, so the call is made and fails.
    const saved = await runOk(["bash", "-c", `docker save --output ${join(dir, "api.tar")} ${z.ref}; echo "exit=$?"`], { env: s.dockerEnv() });
    expect(isSaveCall(await s.waitForApiCall(isSaveCall, mark))).toBe(true);
    expect(s.apiCalls().slice(mark).filter(isSaveCall)).toHaveLength(1);
    expect(saved.stdout).toMatch(/exit=[1-9]/);
  },
  SLOW,
);
