/** Bad input: each gets a clear message, the right exit code, nothing on stdout, and no secret shown. */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { makeSampleImage, writeClassicDockerArchive, writeCorruptArchive, writeEvilArchive, type WrittenArchive } from "../support/fixtures.ts";
import { freePort } from "../support/ports.ts";
import { scriptedRegistry } from "../support/scripted-registry.ts";
import { tempDirs } from "../support/temp.ts";
import { closeAll, tlsDockerRegistry } from "../support/transport-servers.ts";

let registry: DockerRegistry;
let work: string;
let good: WrittenArchive;
const tempDir = tempDirs();

beforeAll(async () => {
  registry = await startDockerRegistry();
  work = await tempDir("cli-errors-");
  good = await writeClassicDockerArchive(join(work, "good.tar"), makeSampleImage({ bigBytes: 64 * 1024 }));
}, 60_000);

afterAll(async () => {
  await registry?.stop();
});
afterEach(closeAll);

/** A push as the user runs it, from a push folder of the test's own. */
async function push(args: string[], env: Record<string, string> = {}, stdin = `${registry.password}\n`) {
  return runCli(args, { cwd: await tempDir("push-"), ...loginAs(registry, env), stdin });
}

describe("usage errors exit 2", () => {
  test("no arguments", async () => {
    const result = await runCli([], { cwd: work });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("error: no image reference given");
    expect(result.stderr).toContain("Usage:");
    expect(result.stdout).toBe("");
  });

  test("no registry host", async () => {
    const result = await runCli(["ubuntu:22.04"], { cwd: work });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('"ubuntu:22.04" names no registry host: expected <host[:port]>/<repository>[:<tag>]');
  });

  test("a digest reference", async () => {
    const result = await runCli([`reg.io/app@sha256:${"a".repeat(64)}`], { cwd: work });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("cannot push to a digest reference");
  });

  test("an unknown flag is named", async () => {
    const result = await runCli(["--frobnicate", "reg.io/app"], { cwd: work });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--frobnicate");
  });

  test("a user without a password on stdin", async () => {
    const result = await push([`${registry.host}/x/y:1`], {}, "");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`error: no password for ${registry.username}: pipe it on stdin`);
  });

  test("--help prints usage on stdout and exits 0", async () => {
    const result = await runCli(["--help"], { cwd: work });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("--chunk-size");
    expect(result.stdout).toContain("INSECURE_HTTP_PUSH");
  });
});

describe("push failures exit 1 with a clear message", () => {
  test("wrong password: named user, the password never printed", async () => {
    const secret = "wrong-Pa55word-xyz";
    const result = await push(["--archive", good.path, `${registry.host}/x/y:1`], {}, `${secret}\n`);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`registry ${registry.host} rejected the username "${registry.username}" or its password`);
    expect(result.stderr + result.stdout).not.toContain(secret);
    expect(result.stderr).not.toContain("retrying");
  });

  test("no credentials for a registry that needs them says to set USERNAME_REGISTRY", async () => {
    const result = await runCli(["--archive", good.path, `${registry.host}/x/y:1`], { cwd: await tempDir("push-"), env: { INSECURE_HTTP_PUSH: "true" } });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("requires authentication: set USERNAME_REGISTRY=<user> and pipe the password on stdin");
  });

  test("a plain-http registry without INSECURE_HTTP_PUSH names the variable", async () => {
    const result = await push(["--archive", good.path, `${registry.host}/x/y:1`], { INSECURE_HTTP_PUSH: "" });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `registry ${registry.host} answers over plain http, not https: set INSECURE_HTTP_PUSH=true (or pass --insecure) to push to it\n`,
    );
  });

  test("nothing listening on the port", async () => {
    const port = await freePort();
    const result = await push(["--retries", "1", "--archive", good.path, `127.0.0.1:${port}/x/y:1`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/retrying in [\d.]+ s \(attempt 2 of 2\)/);
    expect(result.stderr).toContain(`error: cannot reach the registry: connection refused by http://127.0.0.1:${port} (gave up after 2 attempts)\n`);
  });

  test("a missing archive", async () => {
    const result = await push(["--archive", join(work, "nope.tar"), `${registry.host}/x/y:1`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot open archive ${join(work, "nope.tar")}: no such file`);
  });

  test("an archive path that is a folder without index.json (not an OCI layout)", async () => {
    const result = await push(["--archive", work, `${registry.host}/x/y:1`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`error: ${work} is a folder but not an OCI image layout: it has no index.json\n`);
    expect(result.stdout).toBe("");
  });

  test("a truncated archive", async () => {
    const corrupt = await writeCorruptArchive(join(work, "corrupt.tar"), makeSampleImage({ bigBytes: 64 * 1024 }));
    const result = await push(["--archive", corrupt.path, `${registry.host}/x/y:1`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`archive ${corrupt.path} is corrupt or truncated`);
  });

  test("a layer whose bytes do not match the config's diff_id is caught before its upload completes: never committed, no manifest", async () => {
    const cwd = await tempDir("flipped-");
    const path = join(cwd, "flipped.tar");
    const bytes = new Uint8Array(await Bun.file(good.path).arrayBuffer());
    // Flip one byte inside the big layer's payload (same size, so only the hash can tell).
    const at = Buffer.from(bytes).indexOf(Buffer.from("data/big.bin")) + 4096;
    bytes[at] = (bytes[at] ?? 0) ^ 0xff;
    await Bun.write(path, bytes);
    // What the flipped layer hashes to: the same flip in the layer tar the archive was written from.
    const sample = makeSampleImage({ bigBytes: 64 * 1024 });
    const layer = new Uint8Array(sample.layers[0]!);
    const inLayer = Buffer.from(layer).indexOf(Buffer.from("data/big.bin")) + 4096;
    layer[inLayer] = (layer[inLayer] ?? 0) ^ 0xff;
    const content = `sha256:${new Bun.CryptoHasher("sha256").update(layer).digest("hex")}`;

    const result = await runCli(["--archive", path, `${registry.host}/x/flipped:1`], { cwd, ...loginAs(registry) });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toEndWith(
      `\nerror: layer 1/4 of archive ${path} is not what the image says: its content hashes to ${content}, but the image config's diff_id is ${sample.diffIds[0]}\n`,
    );
    expect((await readdir(join(cwd, ".cache"))).filter((f) => f.startsWith(".tmp"))).toEqual([]);
    // The registry holds no manifest, and of the blobs it linked into x/flipped none is the bad layer:
    // each one decompresses to a diff_id of the other layers.
    const repo = join(registry.storageDir, "docker/registry/v2/repositories/x/flipped");
    expect(existsSync(join(repo, "_manifests"))).toBe(false);
    const linked = existsSync(join(repo, "_layers/sha256")) ? await readdir(join(repo, "_layers/sha256")) : [];
    for (const hex of linked) {
      const blob = await Bun.file(join(registry.storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data")).bytes();
      const diffId = `sha256:${new Bun.CryptoHasher("sha256").update(Bun.gunzipSync(blob)).digest("hex")}`;
      expect(sample.diffIds.slice(1)).toContain(diffId);
    }
  });

  // The CLI never extracts an archive (it reads entries in place), so there is nothing to check outside
  // the folder: what matters is that the archive is refused by its entry before anything is sent.
  test("an archive with a ../ entry is refused by that entry, before any blob or manifest is sent", async () => {
    const cwd = await tempDir("evil-cwd-");
    const evil = await writeEvilArchive(join(cwd, "evil.tar"), "dotdot");
    const result = await runCli(["--archive", evil.path, `${registry.host}/x/evil:1`], { cwd, ...loginAs(registry) });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(`error: archive ${evil.path} has an unsafe entry "../${evil.escapeName}" (absolute or with ".."): refusing it\n`);
    expect(existsSync(join(registry.storageDir, "docker/registry/v2/repositories/x/evil"))).toBe(false);
  });

  test("a failing docker save shows docker's stderr and leaves no partial archive", async () => {
    const cwd = await tempDir("fake-docker-");
    const bin = join(cwd, "bin");
    await mkdir(bin);
    const id = "c".repeat(64);
    await writeFile(
      join(bin, "docker"),
      `#!/bin/sh\nif [ "$1" = image ]; then echo sha256:${id}; exit 0; fi\necho "Error response from daemon: disk on fire" >&2\nexit 1\n`,
      { mode: 0o755 },
    );
    const ref = `${registry.host}/x/saved:1`;
    const result = await runCli([ref], { cwd, ...loginAs(registry, { PATH: `${bin}:${process.env.PATH}` }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`error: docker save ${ref} failed: Error response from daemon: disk on fire`);
    expect((await readdir(cwd)).filter((f) => f.includes(".tar"))).toEqual([]);
  });

  test.each([
    ["--engine names a program that is not there", ["--engine", "/nonexistent/docker"], {}, "/nonexistent/docker"],
    ["DOCKER_BIN names a program that is not there", [], { DOCKER_BIN: "no-such-docker-cli" }, "no-such-docker-cli"],
    ["no docker on PATH", [], { PATH: "/nonexistent-bin" }, "docker"],
  ] as const)("%s: named, with the ways out, exit 1", async (_what, flags, env, engine) => {
    // A registry that answers the ping: the engine is the first thing asked after it.
    const target = scriptedRegistry();
    const result = await runCli([...flags, `${target.host}/x/app:1`], { cwd: await tempDir("no-engine-"), env: { INSECURE_HTTP_PUSH: "true", ...env } });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    // The whole of stderr: nothing was attempted before the engine was needed.
    expect(result.stderr).toBe(
      `error: the ${engine} command was not found: install it, choose another with --engine docker|podman (or DOCKER_BIN), or push an archive with --archive <file.tar>\n`,
    );
    expect(target.seen.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /v2/"]);
  });

  test("an https registry with an untrusted certificate: no plain-http advice, a CA hint, no retry storm", async () => {
    const tls = await tlsDockerRegistry();
    const result = await runCli(["--archive", good.path, `${tls.host}/x/y:1`], { cwd: await tempDir("tls-") });
    expect(result.code).toBe(1);
    expect(result.stderr).not.toContain("INSECURE_HTTP_PUSH");
    expect(result.stderr).not.toContain("retrying");
    expect(result.stderr).toContain(
      `cannot reach the registry: the TLS certificate of https://${tls.host} is self-signed and not trusted: if the registry is yours, trust its CA with NODE_EXTRA_CA_CERTS=<ca.pem>`,
    );

    const trusted = await runCli(["--archive", good.path, `${tls.host}/x/y:1`], {
      cwd: await tempDir("tls-"),
      env: { NODE_EXTRA_CA_CERTS: tls.certificate },
    });
    expect(trusted.code).toBe(0);
  }, 60_000);
});
