/** Docker config lookups for any host: what a copy from another registry needs for its source. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Credentials } from "../../src/registry/auth.ts";
import { dockerConfigCredentials, dockerConfigPath, runCredentialHelper } from "../../src/registry/docker-config.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "docker-config-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const auth = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");

async function configDir(config: object): Promise<Record<string, string>> {
  const configDir = await mkdtemp(join(dir, "docker-"));
  await writeFile(join(configDir, "config.json"), JSON.stringify(config));
  return { DOCKER_CONFIG: configDir };
}

/** Helpers answering from a table, recording what they were asked. */
function helpers(table: Record<string, Credentials | undefined>) {
  const asked: string[] = [];
  return {
    asked,
    helper: async (name: string, server: string) => {
      asked.push(`${name} ${server}`);
      return table[`${name} ${server}`];
    },
  };
}

describe("dockerConfigCredentials", () => {
  test("each host gets its own entry: the source registry's, never the destination's", async () => {
    const env = await configDir({
      auths: {
        "dest.example.com": { auth: auth("dest-user", "dest-secret") },
        "https://source.example.com:5000/v1/": { auth: auth("source-user", "source-secret") },
      },
    });
    expect(await dockerConfigCredentials("source.example.com:5000", env)).toEqual({ username: "source-user", password: "source-secret" });
    expect(await dockerConfigCredentials("dest.example.com", env)).toEqual({ username: "dest-user", password: "dest-secret" });
    expect(await dockerConfigCredentials("source.example.com", env)).toBeUndefined();
    expect(await dockerConfigCredentials("elsewhere.io", env)).toBeUndefined();
  });

  test("credHelpers are per host; the default store serves hosts without one", async () => {
    const env = await configDir({ credHelpers: { "source.io": "gcr" }, credsStore: "desktop" });
    const { asked, helper } = helpers({ "gcr source.io": { username: "s", password: "1" }, "desktop dest.io": { username: "d", password: "2" } });
    expect(await dockerConfigCredentials("source.io", env, helper)).toEqual({ username: "s", password: "1" });
    expect(await dockerConfigCredentials("dest.io", env, helper)).toEqual({ username: "d", password: "2" });
    expect(asked).toEqual(["gcr source.io", "desktop dest.io"]);
  });

  test("Docker Hub's names all use its v1 index key, in auths and for helpers", async () => {
    const env = await configDir({ auths: { "https://index.docker.io/v1/": { auth: auth("hub", "h") } } });
    for (const host of ["docker.io", "index.docker.io", "registry-1.docker.io"]) {
      expect(await dockerConfigCredentials(host, env)).toEqual({ username: "hub", password: "h" });
    }
    const store = await configDir({ credsStore: "pass" });
    const { asked, helper } = helpers({});
    await dockerConfigCredentials("docker.io", store, helper);
    expect(asked).toEqual(["pass https://index.docker.io/v1/"]);
  });

  test("DOCKER_CONFIG names the folder; HOME/.docker otherwise", () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: "/x/y" })).toBe("/x/y/config.json");
    expect(dockerConfigPath({ HOME: "/home/u" })).toBe("/home/u/.docker/config.json");
  });

  test("a helper's failure text reaches the message without its control characters", async () => {
    const bin = await mkdtemp(join(dir, "bin-"));
    await writeFile(join(bin, "docker-credential-rude"), "#!/bin/sh\nprintf 'locked\\033[2J\\033]0;pwned\\007 \\r\\033[1Aout' >&2\nexit 1\n", { mode: 0o755 });
    const env = await configDir({ credsStore: "rude" });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(dockerConfigCredentials("reg.io", env)).rejects.toThrow(new Error("docker-credential-rude get failed for reg.io: locked  out"));
    } finally {
      process.env.PATH = path;
    }
  });

  test("a helper that never answers is stopped after its time and named, not waited on forever", async () => {
    const bin = await mkdtemp(join(dir, "bin-"));
    await writeFile(join(bin, "docker-credential-stuck"), "#!/bin/sh\nexec sleep 1000\n", { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(runCredentialHelper("stuck", "reg.io", 300)).rejects.toThrow(
        new Error("docker-credential-stuck get did not answer for reg.io within 0.3 s; stopped it"),
      );
    } finally {
      process.env.PATH = path;
    }
  });

  test("a helper that floods its output is cut off at 1 MiB and reported, not read forever", async () => {
    const bin = await mkdtemp(join(dir, "bin-"));
    await writeFile(join(bin, "docker-credential-flood"), "#!/bin/sh\nexec yes\n", { mode: 0o755 });
    const env = await configDir({ credsStore: "flood" });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(dockerConfigCredentials("reg.io", env)).rejects.toThrow(
        new Error("docker-credential-flood get wrote more than 1 MiB for reg.io; stopped reading it"),
      );
    } finally {
      process.env.PATH = path;
    }
  });
});
