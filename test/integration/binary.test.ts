/**
 * The standalone executable (`bun run build`): built for this machine, run with an environment that
 * has no Bun on PATH, it pushes an image (compressing on its worker threads) and prints the digest.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { loginAs, REPO_ROOT, runCli } from "../support/cli.ts";
import { startDockerRegistry, type DockerRegistry } from "../support/docker-registry.ts";
import { makeSampleImage, makeTempDir, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { run } from "../support/ports.ts";
import { pullAndVerify } from "../support/skopeo.ts";

let registry: DockerRegistry;
let work: string;
let image: WrittenArchive;
let binary: string;

beforeAll(async () => {
  [registry, work] = await Promise.all([startDockerRegistry(), makeTempDir("binary-")]);
  image = await writeClassicDockerArchive(join(work, "image.tar"), makeSampleImage({ bigBytes: 3 * 1024 * 1024 }));
  const built = await run([process.execPath, "run", "scripts/build.ts", "host"], {
    cwd: REPO_ROOT,
    env: { ...process.env, OUT_DIR: join(work, "dist") },
    timeoutMs: 120_000,
  });
  expect(built.code).toBe(0);
  binary = join(work, "dist", "chunked-push");
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

test("the compiled executable pushes an image without Bun and prints its digest", async () => {
  const ref = `${registry.host}/binary/app:1`;
  const result = await runCli(["--archive", image.path, ref], {
    program: binary,
    home: "fresh",
    // No Bun anywhere on PATH: the executable carries its runtime.
    ...loginAs(registry, { PATH: "/usr/bin:/bin" }),
    timeoutMs: 60_000,
  });
  expect(result.stderr).not.toContain("error:");
  expect(result.code).toBe(0);
  const pulled = await pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });
  expect(result.stdout).toBe(`${ref}@${pulled.manifestDigest}\n`);
  expect(pulled.configDigest).toBe(image.configDigest);
  expect(pulled.diffIds).toEqual(image.diffIds);
}, 60_000);

test("--version and --help work from the executable", async () => {
  const version = await runCli(["--version"], { program: binary, home: "fresh", env: { PATH: "/usr/bin:/bin" } });
  const pkg = (await Bun.file(join(REPO_ROOT, "package.json")).json()) as { version: string };
  expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  const help = await runCli(["--help"], { program: binary, home: "fresh", env: { PATH: "/usr/bin:/bin" } });
  expect(help.code).toBe(0);
  expect(help.stdout).toStartWith("Usage: ");
});
