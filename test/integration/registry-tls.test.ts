/**
 * Proves `startDockerRegistry({ tls: true })`: https with a certificate from a fresh CA for 127.0.0.1;
 * Bun trusts it through `caPath`, skopeo and podman through `certDir` (with verification on); without
 * the CA verification fails; plain http to the TLS port gets Go's 400 answer.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { makeSampleImage, makeTempDir, writeOciArchive, need } from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { runOk } from "../support/ports.ts";
import { inspectRaw, podmanPullPlatform, pullPlatform, skopeo, skopeoRun } from "../support/skopeo.ts";

const SLOW = 120_000;

let registry: DockerRegistry | undefined;
let store: PodmanStore | undefined;
let work: string | undefined;

beforeAll(async () => {
  await Promise.all([
    startDockerRegistry({ tls: true }).then((r) => {
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
  for (const r of results) if (r.status === "rejected") console.error("tls test cleanup failed:", r.reason);
}, SLOW);

test(
  "https with the CA; refused without it; plain http to the TLS port gets 400",
  async () => {
    const reg = need(registry, "registry");
    expect(reg.url).toBe(`https://${reg.host}`);
    const caPath = reg.caPath ?? "";
    const ca = await readFile(caPath, "utf8");
    const ok = await fetch(`${reg.url}/v2/`, { tls: { ca } });
    expect(ok.status).toBe(401);
    expect(ok.headers.get("docker-distribution-api-version")).toBe("registry/2.0");

    await expect(fetch(`${reg.url}/v2/`)).rejects.toThrow();

    const plain = await fetch(`http://${reg.host}/v2/`);
    expect(plain.status).toBe(400);
    expect(await plain.text()).toContain("Client sent an HTTP request to an HTTPS server.");

    // The server certificate names 127.0.0.1 and is signed by the CA, not self-signed.
    const text = (await runOk(["openssl", "x509", "-in", join(reg.dir, "cert.pem"), "-noout", "-text"])).stdout;
    expect(text).toContain("IP Address:127.0.0.1");
    expect(text).toContain("Issuer: CN = chunked-push test CA");
    expect((await runOk(["openssl", "verify", "-CAfile", caPath, join(reg.dir, "cert.pem")])).stdout).toContain(": OK");
  },
  SLOW,
);

test(
  "skopeo (verifying with certDir) pushes and pulls; podman pulls with --cert-dir",
  async () => {
    const reg = need(registry, "registry");
    const certDir = reg.certDir ?? "";
    const archive = await writeOciArchive(join(need(work, "work"), "img.tar"), makeSampleImage({ bigBytes: 4096 }));
    const ref = `${reg.host}/tls/app:1`;
    await skopeo([
      "copy",
      "--quiet",
      "--dest-cert-dir",
      certDir,
      "--dest-tls-verify=true",
      "--dest-creds",
      `${reg.username}:${reg.password}`,
      `oci-archive:${archive.path}`,
      `docker://${ref}`,
    ]);
    const access = { username: reg.username, password: reg.password, certDir };
    const raw = await inspectRaw(ref, access);
    expect(raw.digest).toBe(archive.manifestDigest ?? "");
    const pulled = await pullPlatform(ref, { os: "linux", arch: "amd64" }, access);
    expect(pulled.configDigest).toBe(archive.configDigest);

    const unverified = await skopeoRun(["inspect", "--raw", "--tls-verify=true", "--creds", `${reg.username}:${reg.password}`, `docker://${ref}`]);
    expect(unverified.code).not.toBe(0);
    expect(unverified.stderr).toContain("certificate");

    const fromPodman = await podmanPullPlatform(need(store, "store"), ref, { os: "linux", arch: "amd64" }, access);
    expect(fromPodman.imageId).toBe(archive.configDigest);
  },
  SLOW,
);
