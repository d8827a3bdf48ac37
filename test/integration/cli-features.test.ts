/**
 * What makes the tool feel like docker push: progress on a terminal and in logs, --quiet and --json,
 * extra tags, dry runs, token auth, Docker config credentials, a password prompt, and podman as engine.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cliEnv, loginAs, runCli, runCliInTerminal } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { startFaultProxy } from "../support/fault-proxy.ts";
import { digestOf, makeConfig, makeLayerTar, makeSampleImage, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { PodmanStore } from "../support/podman.ts";
import { run } from "../support/ports.ts";
import { pullAndVerify, skopeoRun } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";
import { startTokenRegistry, type TokenRegistry } from "../support/token-registry.ts";

const MiB = 1024 * 1024;
let registry: DockerRegistry;
let work: string;
let small: WrittenArchive;
let chunky: WrittenArchive;
const tempDir = tempDirs();

beforeAll(async () => {
  [registry, work] = await Promise.all([startDockerRegistry(), tempDir("cli-features-")]);
  small = await writeClassicDockerArchive(join(work, "small.tar"), makeSampleImage({ bigBytes: 256 * 1024 }));
  const layers = [makeLayerTar({ "noise.bin": randomBytes(13 * MiB) }), makeLayerTar({ "a.txt": "a\n" })];
  chunky = await writeClassicDockerArchive(join(work, "chunky.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))) });
}, 60_000);

afterAll(async () => {
  await registry?.stop();
});

const auth = () => ({ USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" });
const pull = (ref: string) => pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });

describe("output", () => {
  test("on a terminal: the password prompt hides what is typed, progress redraws in place, the summary ends it", async () => {
    const ref = `${registry.host}/features/tty:1`;
    const prompt = `Password for ${registry.username}@${registry.host}: `;
    // Typed once the prompt is on the terminal, as a person would.
    const { code, output } = await runCliInTerminal(["--chunk-size", "5MiB", "--archive", chunky.path, ref], {
      cwd: await tempDir("tty-"),
      env: auth(),
      answer: { prompt, input: `${registry.password}\r` },
      timeoutMs: 50_000,
    });
    expect(code).toBe(0);
    expect(output).toContain(prompt);
    expect(output).not.toContain(registry.password);
    expect(output).toMatch(/\x1b\[\d+A/); // cursor up: the live lines are redrawn in place
    expect(output).toContain("\x1b[2K");
    expect(output).toMatch(/layer 1\/2 [a-f0-9]{12} +pushed +13\.\d MB in 3 chunks/);
    expect(output).toMatch(/total +3\/3 blobs/);
    const tail = output.trimEnd().split(/\r?\n/).slice(-3);
    expect(tail[0]).toMatch(/^1: digest: sha256:[a-f0-9]{64} size: \d+/);
    expect(tail[1]).toMatch(/^3 blobs: 3 pushed, 0 already present; \d+ bytes sent/);
    expect(tail[2]).toBe(`${ref}@${(await pull(ref)).manifestDigest}`);
  }, 60_000);

  test("piped (CI logs): plain lines, one per event, no carriage returns or escape codes", async () => {
    const ref = `${registry.host}/features/plain:1`;
    const result = await runCli(["--chunk-size", "5MiB", "--archive", chunky.path, ref], { cwd: await tempDir("plain-"), ...loginAs(registry) });
    expect(result.code).toBe(0);
    expect(result.stderr).not.toMatch(/[\r\x1b]/);
    const lines = result.stderr.trimEnd().split("\n");
    // The big layer uploads while it is compressed: its size (and digest) are known only at the end.
    const layer1 = lines.filter((l) => l.startsWith("layer 1/2"));
    expect(layer1.slice(0, 3)).toEqual([
      "layer 1/2: compressing 13.6 MB",
      "layer 1/2: checking",
      "layer 1/2: uploading (in chunks of 5242880 bytes, each sent as soon as it is compressed)",
    ]);
    const chunks = layer1.slice(3, -1);
    expect(chunks).toHaveLength(3);
    // Each where the registry confirmed it (5242880, 10485760, 13.6 MB); the count once the size is known.
    ["5.2", "10.5", "13.6"].forEach((end, i) => {
      expect(chunks[i]).toMatch(new RegExp(`^layer 1/2: chunk ${i + 1}(/3)? done \\(${end.replace(".", "\\.")}(/13\\.6)? MB\\)$`));
    });
    expect(chunks[2]).toMatch(/^layer 1\/2: chunk 3\/3 done /);
    expect(layer1.at(-1)).toMatch(/^layer 1\/2 sha256:[a-f0-9]{12}: pushed 13\.6 MB in 3 chunks \(compressed now\)$/);
    expect(lines).toContainEqual(expect.stringMatching(/^layer 2\/2 sha256:[a-f0-9]{12}: pushed 98 B \(compressed now\)$/));
    expect(lines.at(-1)).toMatch(/^3 blobs: 3 pushed, 0 already present; \d+ bytes sent$/);
    expect(result.stdout).toBe(`${ref}@${(await pull(ref)).manifestDigest}\n`);
  }, 60_000);

  test("--quiet: nothing on stderr, the result line alone on stdout", async () => {
    const ref = `${registry.host}/features/quiet:1`;
    const result = await runCli(["--quiet", "--archive", small.path, ref], { cwd: await tempDir("quiet-"), ...loginAs(registry) });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe("");
    expect(result.stdout).toMatch(new RegExp(`^${ref.replaceAll(".", "\\.")}@sha256:[a-f0-9]{64}\\n$`));
  }, 60_000);

  test("--json: one object on stdout with the reference, digest, tags, kind, source, platforms and every blob", async () => {
    const ref = `${registry.host}/features/json:1`;
    const result = await runCli(["--json", "-t", "extra", "--archive", small.path, ref], { cwd: await tempDir("json-"), ...loginAs(registry) });
    expect(result.code).toBe(0);
    expect(result.stdout.trimEnd().split("\n")).toHaveLength(1);
    const report = JSON.parse(result.stdout);
    const pulled = await pull(ref);
    expect(Object.keys(report)).toEqual([
      "reference",
      "repository",
      "tags",
      "digest",
      "mediaType",
      "size",
      "kind",
      "unchanged",
      "dryRun",
      "source",
      "platforms",
      "leftOut",
      "bytesSent",
      "bytesResent",
      "blobs",
    ]);
    const blobs = report.blobs as { name: string; digest: string; size: number; mediaType: string; status: string; chunks: number }[];
    expect(report).toEqual({
      reference: `${ref}@${pulled.manifestDigest}`,
      repository: `${registry.host}/features/json`,
      tags: ["1", "extra"],
      digest: pulled.manifestDigest,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      size: pulled.manifestBytes.length,
      kind: "image",
      // The archive's layers were compressed here: the manifest is the tool's own.
      unchanged: false,
      dryRun: false,
      source: `archive ${small.path}`,
      platforms: [
        {
          platform: "linux/amd64",
          digest: pulled.manifestDigest,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          size: pulled.manifestBytes.length,
          config: pulled.configDigest,
          layers: 4,
          unchanged: false,
        },
      ],
      leftOut: [],
      bytesSent: blobs.reduce((sum, b) => sum + b.size, 0),
      bytesResent: 0,
      blobs: expect.any(Array),
    });
    expect(blobs).toHaveLength(4); // config + 3 distinct layers (one appears twice)
    for (const blob of blobs) {
      expect(Object.keys(blob)).toEqual(["name", "digest", "size", "mediaType", "status", "chunks"]);
      expect(blob).toMatchObject({ status: "pushed", chunks: 1 });
    }
    const byName = Object.fromEntries(blobs.map((b) => [b.name, b]));
    expect(Object.keys(byName).sort()).toEqual(["config", "layer 1/4", "layer 2/4", "layer 3/4"]);
    expect(byName.config).toMatchObject({
      digest: pulled.configDigest,
      size: pulled.configBytes.length,
      mediaType: "application/vnd.oci.image.config.v1+json",
    });
    for (const i of [0, 1, 2]) {
      expect(byName[`layer ${i + 1}/4`]).toMatchObject({ digest: pulled.layerDigests[i], size: pulled.layerSizes[i], mediaType: pulled.layerMediaTypes[i] });
    }
  }, 60_000);
});

describe("tags and dry runs", () => {
  test("--tag: every extra tag resolves to the same digest", async () => {
    const ref = `${registry.host}/features/tags:1.2.3`;
    const result = await runCli(["-t", "1.2", "--tag", "latest", "--archive", small.path, ref], { cwd: await tempDir("tags-"), ...loginAs(registry) });
    expect(result.code).toBe(0);
    const digest = result.stdout.trim().split("@")[1];
    for (const tag of ["1.2.3", "1.2", "latest"]) {
      expect((await pull(`${registry.host}/features/tags:${tag}`)).manifestDigest).toBe(digest!);
    }
    expect(result.stderr).toContain(`latest: digest: ${digest}`);
  }, 60_000);

  test("--dry-run: compresses and reports how each blob would go, learning the limits from one cancelled session per missing blob; no manifest, no result line", async () => {
    const proxy = await startFaultProxy(registry.url);
    const cwd = await tempDir("dry-");
    try {
      const ref = `${proxy.host}/features/dry:1`;
      const result = await runCli(["--dry-run", "--chunk-size", "5MiB", "--archive", chunky.path, ref], { cwd, ...loginAs(registry) });
      expect(result.code).toBe(0);
      expect(result.stdout).toBe("");
      const would = [...result.stderr.matchAll(/^(layer 1\/2|layer 2\/2|config) sha256:[a-f0-9]{12}: would push (\d+) bytes in (.*)$/gm)].map(
        (m) => [m[1], Number(m[2]), m[3]] as const,
      );
      expect(would.map(([label, , how]) => `${label}: ${how}`).sort()).toEqual([
        "config: one request",
        "layer 1/2: 3 chunks of at most 5242880 bytes",
        "layer 2/2: one request",
      ]);
      const toSend = would.reduce((sum, [, bytes]) => sum + bytes, 0);
      expect(result.stderr).toMatch(
        /\n1: would get manifest sha256:[a-f0-9]{64} size: \d+ \(dry run: no manifest sent\)\n3 blobs: 3 to push, 0 already present; (\d+) bytes to send\n$/,
      );
      expect(result.stderr).toEndWith(`; ${toSend} bytes to send\n`);
      // On the wire: the ping, HEADs where a digest is known, and per missing blob one session opened
      // (to read the registry's chunk limits) and deleted. No byte of a blob, no manifest.
      const requests = proxy.requests.map((r) => ({ method: r.method, path: r.path, status: r.status }));
      expect(new Set(requests.map((r) => r.method))).toEqual(new Set(["GET", "HEAD", "POST", "DELETE"]));
      expect(requests.filter((r) => r.method === "GET").every((r) => r.path === "/v2/")).toBe(true);
      const posts = requests.filter((r) => r.method === "POST");
      const deletes = requests.filter((r) => r.method === "DELETE");
      expect(posts).toHaveLength(3);
      expect(posts.every((r) => r.path === "/v2/features/dry/blobs/uploads/" && r.status === 202)).toBe(true);
      expect(deletes).toHaveLength(3);
      expect(new Set(deletes.map((r) => r.path)).size).toBe(3);
      expect(deletes.every((r) => r.path.startsWith("/v2/features/dry/blobs/uploads/") && r.status === 204)).toBe(true);
      expect(proxy.requests.every((r) => r.bodyBytes === 0)).toBe(true);
      // The registry has no such manifest: skopeo, logged in, is told exactly that (not refused, not unreachable).
      const inspect = await skopeoRun([
        "inspect",
        "--tls-verify=false",
        `--creds=${registry.username}:${registry.password}`,
        `docker://${registry.host}/features/dry:1`,
      ]);
      expect(inspect.code).toBe(1);
      expect(inspect.stderr).toContain(`reading manifest 1 in ${registry.host}/features/dry: manifest unknown`);

      // With --json: the one object, with no reference (nothing was pushed) and the plan for each blob.
      const json = await runCli(["--json", "--dry-run", "--chunk-size", "5MiB", "--archive", chunky.path, ref], { cwd, ...loginAs(registry) });
      expect(json.code).toBe(0);
      const report = JSON.parse(json.stdout);
      expect(report).toMatchObject({ reference: null, repository: `${proxy.host}/features/dry`, dryRun: true, kind: "image", bytesSent: 0, leftOut: [] });
      expect(report.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(json.stderr).toContain(`1: would get manifest ${report.digest} size: ${report.size} (dry run: no manifest sent)\n`);
      expect((report.blobs as { status: string; chunks: number }[]).map((b) => [b.status, b.chunks]).sort()).toEqual([
        ["would push", 1],
        ["would push", 1],
        ["would push", 3],
      ]);
    } finally {
      await proxy.stop();
    }
  }, 60_000);
});

describe("credentials", () => {
  test("token auth: a Bearer registry and its token service; a token refused mid-push is renewed", async () => {
    let tokens: TokenRegistry | undefined;
    try {
      // The token dies after 2 s but claims 300: only the registry's 401 can tell the client.
      tokens = await startTokenRegistry({ tokenLifetimeSeconds: 2, advertisedLifetimeSeconds: 300 });
      // The stalled PATCH answer outlives the first token.
      const proxy = await startFaultProxy(tokens.url, [{ method: "PATCH", nth: 2, fault: { kind: "stall", ms: 3500 } }]);
      const ref = `${proxy.host}/features/token:1`;
      const result = await runCli(["--chunk-size", "5MiB", "--archive", chunky.path, ref], { cwd: await tempDir("token-"), ...loginAs(tokens) });
      await proxy.stop();
      expect(result.stderr).not.toContain(tokens.password);
      expect(result.code).toBe(0);
      // Two tokens: the first, and one more after the registry refused the first mid-push.
      const granted = tokens.tokenRequests.filter((r) => r.authorized && r.scope?.includes("repository:features/token:pull,push"));
      expect(granted).toHaveLength(2);
      const bearer = (r: { headers: Record<string, string> }) => r.headers.authorization?.startsWith("Bearer ") === true;
      const refused = proxy.requests.filter((r) => bearer(r) && r.status === 401);
      expect(refused.length).toBeGreaterThan(0);
      const first = refused[0]!.headers.authorization;
      expect(refused.every((r) => r.headers.authorization === first)).toBe(true);
      // After the refusal, the renewed token carried the push through.
      const after = proxy.requests.slice(proxy.requests.indexOf(refused[0]!) + 1).filter(bearer);
      expect(after.some((r) => r.headers.authorization !== first && r.method === "PUT" && r.path.endsWith("/manifests/1") && r.status === 201)).toBe(true);
      const pulled = await pullAndVerify({ ref: `${tokens.host}/features/token:1`, username: tokens.username, password: tokens.password, tlsVerify: false });
      expect(result.stdout).toBe(`${ref}@${pulled.manifestDigest}\n`);
    } finally {
      await tokens?.stop();
    }
  }, 60_000);

  test("token auth with a wrong password names the token service", async () => {
    const tokens = await startTokenRegistry();
    try {
      const result = await runCli(["--archive", small.path, `${tokens.host}/features/token:bad`], {
        cwd: await tempDir("token-bad-"),
        stdin: "wrong-password\n",
        env: { USERNAME_REGISTRY: tokens.username, INSECURE_HTTP_PUSH: "true" },
      });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/the token service http:\/\/127\.0\.0\.1:\d+ rejected the username "[^"]+" or its password \(HTTP 401\)/);
      expect(result.stderr).not.toContain("wrong-password");
    } finally {
      await tokens.stop();
    }
  }, 60_000);

  test("~/.docker/config.json auths (DOCKER_CONFIG) are used when no user is given", async () => {
    const dockerConfig = await tempDir("docker-config-");
    const auth64 = Buffer.from(`${registry.username}:${registry.password}`).toString("base64");
    await writeFile(join(dockerConfig, "config.json"), JSON.stringify({ auths: { [`http://${registry.host}`]: { auth: auth64 } } }));
    const ref = `${registry.host}/features/config:1`;
    const result = await runCli(["--archive", small.path, ref], {
      cwd: await tempDir("config-"),
      env: { DOCKER_CONFIG: dockerConfig, INSECURE_HTTP_PUSH: "true" },
    });
    expect(result.code).toBe(0);
    await pull(ref);
  }, 60_000);

  test("a credential helper named in credHelpers is run for the registry", async () => {
    const dockerConfig = await tempDir("docker-config-");
    const bin = join(dockerConfig, "bin");
    await mkdir(bin);
    const log = join(dockerConfig, "helper.log");
    await writeFile(
      join(bin, "docker-credential-fake"),
      `#!/bin/sh\nread server\necho "$1 $server" >> ${log}\nprintf '{"ServerURL":"%s","Username":"${registry.username}","Secret":"${registry.password}"}' "$server"\n`,
      { mode: 0o755 },
    );
    await writeFile(join(dockerConfig, "config.json"), JSON.stringify({ credsStore: "missing-store", credHelpers: { [registry.host]: "fake" } }));
    const ref = `${registry.host}/features/helper:1`;
    const result = await runCli(["--archive", small.path, ref], {
      cwd: await tempDir("helper-"),
      env: { DOCKER_CONFIG: dockerConfig, INSECURE_HTTP_PUSH: "true", PATH: `${bin}:${process.env.PATH}` },
    });
    expect(result.code).toBe(0);
    expect(await Bun.file(log).text()).toBe(`get ${registry.host}\n`);
    await pull(ref);
  }, 60_000);
});

describe("the cache folder", () => {
  test("--cache-dir: compressed layers go there and nowhere else; a push from another folder reuses them; prune --cache-dir bounds it", async () => {
    const cache = join(await tempDir("cache-dir-"), "shared cache");
    const first = await tempDir("cache-dir-first-");
    const pushed = await runCli(["--cache-dir", cache, "--archive", small.path, `${registry.host}/features/cache-dir:1`], { cwd: first, ...loginAs(registry) });
    expect(pushed.code).toBe(0);
    expect(pushed.stderr.match(/\(compressed now\)$/gm)).toHaveLength(3);
    expect(await readdir(first)).toEqual([]);
    const entries = await readdir(cache);
    expect(entries.filter((f) => f.endsWith("-gzip-2-ptr"))).toHaveLength(3);
    const blobs = entries.filter((f) => /^[a-f0-9]{64}$/.test(f));
    expect(blobs).toHaveLength(4); // three layers and the config

    // Another folder, another repository: every layer known from the named cache, none compressed.
    const second = await tempDir("cache-dir-second-");
    const again = await runCli(["--cache-dir", cache, "--archive", small.path, `${registry.host}/features/cache-dir-2:1`], {
      cwd: second,
      ...loginAs(registry),
    });
    expect(again.code).toBe(0);
    expect(again.stderr).not.toContain("compress");
    expect(await readdir(second)).toEqual([]);

    const pruned = await runCli(["prune", "--cache-dir", cache, "--max-size", "1"], { cwd: second });
    expect(pruned.code).toBe(0);
    expect(pruned.stdout).toStartWith(`${cache}: removed 4 blobs (`);
    expect(pruned.stdout).toEndWith("); keeps 0 (0.0 MB)\n");
    expect((await readdir(cache)).filter((f) => /^[a-f0-9]{64}$/.test(f))).toEqual([]);
  }, 60_000);

  test("prune: a mistyped flag shows prune's usage; a cache folder that is not there is named, not created", async () => {
    const cwd = await tempDir("prune-errors-");
    const bad = await runCli(["prune", "--max-age", "7x"], { cwd });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(
      'error: --max-age: "7x" is not an age (e.g. 30d, 12h, 90m)\nUsage: bun run index.ts prune [--cache-dir <dir>] [--max-age <age>] [--max-size <size>] [--dry-run]\nRun with --help for the options.\n',
    );
    const missing = join(cwd, "no-such-cache");
    const typo = await runCli(["prune", "--cache-dir", missing], { cwd });
    expect(typo.code).toBe(1);
    expect(typo.stdout).toBe("");
    expect(typo.stderr).toBe(`error: prune: there is no cache folder at ${missing}\n`);
    expect(await readdir(cwd)).toEqual([]);
  });
});

describe("engines", () => {
  test("--engine podman pushes an image that exists only in podman's storage", async () => {
    const store = await PodmanStore.create();
    try {
      const ctx = join(store.dir, "ctx");
      await mkdir(ctx);
      await writeFile(join(ctx, "hello.txt"), "only in podman\n");
      await writeFile(join(ctx, "Containerfile"), "FROM scratch\nCOPY hello.txt /hello.txt\n");
      const ref = `${registry.host}/features/podman:1`;
      await store.build(ctx, ref);
      // Plain `podman` reads these, so it sees the test's private store and never the machine's.
      const storageConf = join(store.dir, "storage.conf");
      const containersConf = join(store.dir, "containers.conf");
      await writeFile(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = "${store.dir}/root"\nrunroot = "${store.dir}/runroot"\n`);
      await writeFile(
        containersConf,
        `[engine]\ntmp_dir = "${store.dir}/tmp"\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nvolume_path = "${store.dir}/volumes"\n[network]\nnetwork_config_dir = "${store.dir}/net"\n`,
      );
      const env = { ...auth(), CONTAINERS_STORAGE_CONF: storageConf, CONTAINERS_CONF: containersConf, PATH: `/nonexistent-docker:${process.env.PATH}` };
      const exists = await run(["podman", "image", "exists", ref], { env: cliEnv(env) });
      expect(exists.code).toBe(0);

      const result = await runCli(["--engine", "podman", ref], { cwd: await tempDir("engine-"), ...loginAs(registry, env) });
      expect(result.code).toBe(0);
      expect(result.stderr).toContain("with podman save");
      expect((await pull(ref)).manifestDigest).toBe(result.stdout.trim().split("@")[1]!);
    } finally {
      await store.destroy();
    }
  }, 90_000);
});
