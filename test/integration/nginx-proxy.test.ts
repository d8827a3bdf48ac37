/**
 * Proves test/support/nginx.ts: nginx with `client_max_body_size 10m` in front of docker-registry
 * answers 413 itself (never reaching the registry) for a body one byte over the limit, passes a body of
 * exactly the limit through, keeps absolute and relative Location headers usable, and lets skopeo push
 * and pull small images through it (while skopeo's single streaming PATCH of a bigger layer gets 413).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { deterministicBytes, digestOf, makeLayerTar, makeSampleImage, makeTempDir, writeDocker25Archive, need } from "../support/fixtures.ts";
import { nginxSizeBytes, startBodyLimitProxy, type BodyLimitProxy } from "../support/nginx.ts";
import { pullAndVerify, skopeoPush, skopeoRun } from "../support/skopeo.ts";
import { basicHeader } from "../support/scripted-registry.ts";

const SLOW = 120_000;

let absRegistry: DockerRegistry | undefined;
let relRegistry: DockerRegistry | undefined;
let absProxy: BodyLimitProxy | undefined;
let relProxy: BodyLimitProxy | undefined;
let work: string | undefined;

const basic = (reg: DockerRegistry): string => basicHeader(reg);

/** Resolves a Location (absolute or relative) against the proxy. */
function resolveLocation(proxy: BodyLimitProxy, location: string): string {
  return new URL(location, proxy.url).toString();
}

async function openSession(proxy: BodyLimitProxy, reg: DockerRegistry, repo: string): Promise<string> {
  const res = await fetch(`${proxy.url}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: { Authorization: basic(reg), "Content-Length": "0" } });
  await res.arrayBuffer();
  expect(res.status).toBe(202);
  const location = res.headers.get("location");
  if (location === null) throw new Error("no Location");
  return location;
}

beforeAll(async () => {
  await Promise.all([
    startDockerRegistry().then((r) => {
      absRegistry = r;
    }),
    startDockerRegistry({ relativeUrls: true }).then((r) => {
      relRegistry = r;
    }),
    makeTempDir().then((d) => {
      work = d;
    }),
  ]);
  [absProxy, relProxy] = await Promise.all([
    startBodyLimitProxy({ upstream: need(absRegistry, "registry").url, maxBodySize: "10m" }),
    startBodyLimitProxy({ upstream: need(relRegistry, "registry").url, maxBodySize: "10m" }),
  ]);
}, SLOW);

afterAll(async () => {
  const results = await Promise.allSettled([
    absProxy?.stop(),
    relProxy?.stop(),
    absRegistry?.stop(),
    relRegistry?.stop(),
    work === undefined ? undefined : rm(work, { recursive: true, force: true }),
  ]);
  for (const r of results) if (r.status === "rejected") console.error("nginx test cleanup failed:", r.reason);
}, SLOW);

test("nginxSizeBytes", () => {
  expect(nginxSizeBytes("10m")).toBe(10 * 1024 * 1024);
  expect(nginxSizeBytes("512k")).toBe(512 * 1024);
  expect(nginxSizeBytes("1234")).toBe(1234);
  expect(need(absProxy, "proxy").maxBodyBytes).toBe(10_485_760);
});

for (const kind of ["absolute", "relative"] as const) {
  describe(`${kind} Locations`, () => {
    const proxy = (): BodyLimitProxy => need(kind === "absolute" ? absProxy : relProxy, "proxy");
    const registry = (): DockerRegistry => need(kind === "absolute" ? absRegistry : relRegistry, "registry");

    test(
      "a body of exactly the limit streams through in a PATCH; one byte more gets nginx's 413",
      async () => {
        const p = proxy();
        const reg = registry();
        const body = deterministicBytes(p.maxBodyBytes, 7);
        const location = await openSession(p, reg, "limit/ok");
        if (kind === "absolute") expect(location.startsWith(`${p.url}/v2/limit/ok/blobs/uploads/`)).toBe(true);
        else expect(location.startsWith("/v2/limit/ok/blobs/uploads/")).toBe(true);

        const patch = await fetch(resolveLocation(p, location), {
          method: "PATCH",
          headers: { Authorization: basic(reg), "Content-Type": "application/octet-stream", "Content-Range": `0-${body.length - 1}` },
          body,
        });
        await patch.arrayBuffer();
        expect(patch.status).toBe(202);
        expect(patch.headers.get("range")).toBe(`0-${body.length - 1}`);
        const next = patch.headers.get("location") ?? "";
        const digest = digestOf(body);
        const put = await fetch(`${resolveLocation(p, next)}${next.includes("?") ? "&" : "?"}digest=${digest}`, {
          method: "PUT",
          headers: { Authorization: basic(reg), "Content-Length": "0" },
        });
        await put.arrayBuffer();
        expect(put.status).toBe(201);
        const head = await fetch(`${p.url}/v2/limit/ok/blobs/${digest}`, { method: "HEAD", headers: { Authorization: basic(reg) } });
        expect(head.status).toBe(200);
        expect(head.headers.get("content-length")).toBe(String(body.length));
        // Streamed, not spooled: nginx wrote no request-body temp file.
        expect(await readdir(join(p.dir, "tmp", "client_body")).catch(() => [])).toEqual([]);

        const over = deterministicBytes(p.maxBodyBytes + 1, 8);
        const overLocation = await openSession(p, reg, "limit/over");
        const refused = await fetch(resolveLocation(p, overLocation), {
          method: "PATCH",
          headers: { Authorization: basic(reg), "Content-Type": "application/octet-stream", "Content-Range": `0-${over.length - 1}` },
          body: over,
        });
        const html = await refused.text();
        expect(refused.status).toBe(413);
        expect(refused.headers.get("content-type")).toContain("text/html");
        expect(html).toContain("413 Request Entity Too Large");
        expect(html).toContain("nginx");
        expect(await readFile(p.errorLogPath, "utf8")).toContain("client intended to send too large body");

        await p.waitForRequest((e) => e.method === "PATCH" && e.status === 413);
        const patches = (await p.requests()).filter((e) => e.method === "PATCH");
        expect(patches.map((e) => [e.status, e.upstreamStatus])).toEqual([
          [202, 202],
          [413, null],
        ]);
        expect(patches[0]?.requestLength).toBeGreaterThan(p.maxBodyBytes);
        // The registry never saw the refused PATCH: its session is still empty.
        const status = await fetch(resolveLocation(p, overLocation), { headers: { Authorization: basic(reg) } });
        await status.arrayBuffer();
        expect(status.status).toBe(204);
        expect(status.headers.get("range")).toBe("0-0");
      },
      SLOW,
    );

    test(
      "skopeo pushes and pulls a small image through the proxy",
      async () => {
        const p = proxy();
        const reg = registry();
        const archive = await writeDocker25Archive(join(need(work, "work"), `small-${kind}.tar`), makeSampleImage({ bigBytes: 256 * 1024 }));
        const ref = `${p.host}/through/proxy:1`;
        await skopeoPush({ source: `docker-archive:${archive.path}`, ref, username: reg.username, password: reg.password });
        const pulled = await pullAndVerify({ ref, username: reg.username, password: reg.password, tlsVerify: false });
        expect(pulled.configDigest).toBe(archive.configDigest);
      },
      SLOW,
    );
  });
}

test(
  "skopeo's one streaming PATCH of a layer over the limit is refused with 413",
  async () => {
    const p = need(absProxy, "proxy");
    const reg = need(absRegistry, "registry");
    const layer = makeLayerTar({ "big.bin": deterministicBytes(p.maxBodyBytes * 2, 9) });
    const archive = await writeDocker25Archive(join(need(work, "work"), "big.tar"), { layers: [layer], repoTag: "big/one:1" });
    const res = await skopeoRun(
      [
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        `${reg.username}:${reg.password}`,
        "--dest-compress-format",
        "zstd",
        "--dest-compress-level",
        "1",
        `docker-archive:${archive.path}`,
        `docker://${p.host}/too/big:1`,
      ],
      { timeoutMs: SLOW },
    );
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/413|Request Entity Too Large/);
    await p.waitForRequest((e) => e.method === "PATCH" && e.status === 413 && e.uri.startsWith("/v2/too/big/"));
  },
  SLOW,
);
