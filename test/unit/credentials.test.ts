import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Credentials } from "../../src/registry/auth.ts";
import { PASSWORD_LIMIT, resolveCredentials, type CredentialInput } from "../../src/cli/credentials.ts";
import { PushError, UsageError } from "../../src/errors.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "credentials-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const HOST = "reg.example.com";
const fromHelper: Credentials = { username: "helper-user", password: "helper-secret" };

/** The input with a Docker config holding `config`, and helpers that answer from a table. */
async function input(config: object | undefined, helpers: Record<string, Credentials | undefined> = {}, extra: Partial<CredentialInput> = {}) {
  const configDir = await mkdtemp(join(dir, "docker-"));
  if (config) await writeFile(join(configDir, "config.json"), JSON.stringify(config));
  const asked: string[] = [];
  const value: CredentialInput = {
    passwordStdin: false,
    host: HOST,
    stdin: { isTTY: false, text: async () => "" },
    prompt: async () => "",
    env: { DOCKER_CONFIG: configDir },
    helper: async (name, server) => {
      asked.push(`${name} ${server}`);
      return helpers[name];
    },
    ...extra,
  };
  return { value, asked };
}

const auth = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");

describe("resolveCredentials", () => {
  test("a user's password comes from stdin, one trailing newline dropped", async () => {
    const { value } = await input(undefined, {}, { username: "me", stdin: { isTTY: false, text: async () => "p@ss word\n" } });
    expect(await resolveCredentials(value)).toEqual({ username: "me", password: "p@ss word" });
  });

  test("on a terminal the password is asked for, naming user and host", async () => {
    const questions: string[] = [];
    const { value } = await input(
      undefined,
      {},
      {
        username: "me",
        stdin: { isTTY: true, text: async () => "never read" },
        prompt: async (q) => {
          questions.push(q);
          return "typed";
        },
      },
    );
    expect(await resolveCredentials(value)).toEqual({ username: "me", password: "typed" });
    expect(questions).toEqual([`Password for me@${HOST}: `]);
  });

  test("--password-stdin reads stdin even on a terminal; an empty password is a usage error", async () => {
    const { value } = await input(undefined, {}, { username: "me", passwordStdin: true, stdin: { isTTY: true, text: async () => "s\n" } });
    expect(await resolveCredentials(value)).toEqual({ username: "me", password: "s" });
    const empty = await input(undefined, {}, { username: "me" });
    await expect(resolveCredentials(empty.value)).rejects.toThrow(UsageError);
  });

  test("no user and no Docker config: anonymous", async () => {
    expect(await resolveCredentials((await input(undefined)).value)).toBeUndefined();
  });

  test("Docker's order: the host's credHelpers entry, else credsStore; a configured helper's answer is final, else auths", async () => {
    const config = {
      credHelpers: { [HOST]: "per-host", "other.io": "unused" },
      credsStore: "store",
      auths: { [HOST]: { auth: auth("file-user", "file-secret") } },
    };
    const perHost = await input(config, { "per-host": fromHelper, store: { username: "s", password: "s" } });
    expect(await resolveCredentials(perHost.value)).toEqual(fromHelper);
    expect(perHost.asked).toEqual([`per-host ${HOST}`]);

    const { credHelpers: _, ...withoutHelpers } = config;
    const store = await input(withoutHelpers, { store: fromHelper });
    expect(await resolveCredentials(store.value)).toEqual(fromHelper);
    expect(store.asked).toEqual([`store ${HOST}`]);

    // docker/cli's native store answers "not found" with empty credentials, never the auths entry.
    const storeMisses = await input(withoutHelpers, { store: undefined });
    expect(await resolveCredentials(storeMisses.value)).toBeUndefined();
    expect(storeMisses.asked).toEqual([`store ${HOST}`]);

    const helperMisses = await input(config, { "per-host": undefined, store: fromHelper });
    expect(await resolveCredentials(helperMisses.value)).toBeUndefined();
    expect(helperMisses.asked).toEqual([`per-host ${HOST}`]);

    const { credsStore: __, ...fileOnly } = withoutHelpers;
    const file = await input(fileOnly);
    expect(await resolveCredentials(file.value)).toEqual({ username: "file-user", password: "file-secret" });
    expect(file.asked).toEqual([]);
  });

  test("auths keys may carry a scheme and a path; username/password fields work too", async () => {
    const scheme = await input({ auths: { [`https://${HOST}/v1/`]: { auth: auth("a", "b:c") } } });
    expect(await resolveCredentials(scheme.value)).toEqual({ username: "a", password: "b:c" });
    const fields = await input({ auths: { [HOST]: { username: "u", password: "p" } } });
    expect(await resolveCredentials(fields.value)).toEqual({ username: "u", password: "p" });
    const otherHost = await input({ auths: { "other.io": { auth: auth("x", "y") } } });
    expect(await resolveCredentials(otherHost.value)).toBeUndefined();
  });

  test("a config that is not JSON is named", async () => {
    const { value } = await input(undefined);
    await writeFile(join(value.env.DOCKER_CONFIG as string, "config.json"), "{not json");
    await expect(resolveCredentials(value)).rejects.toThrow(PushError);
    await expect(resolveCredentials(value)).rejects.toThrow(/config\.json is not valid JSON/);
  });

  test("real helpers: one that fails is named with its message; one missing from PATH says so; 'not found' means none", async () => {
    const bin = await mkdtemp(join(dir, "bin-"));
    await writeFile(join(bin, "docker-credential-broken"), "#!/bin/sh\necho 'keychain locked' >&2\nexit 1\n", { mode: 0o755 });
    await writeFile(join(bin, "docker-credential-empty"), "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n", { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const broken = await input({ credHelpers: { [HOST]: "broken" } }, {}, { helper: undefined });
      await expect(resolveCredentials(broken.value)).rejects.toThrow(`docker-credential-broken get failed for ${HOST}: keychain locked`);
      const missing = await input({ credHelpers: { [HOST]: "nowhere" } }, {}, { helper: undefined });
      await expect(resolveCredentials(missing.value)).rejects.toThrow("docker-credential-nowhere is not on PATH");
      const empty = await input({ credsStore: "empty" }, {}, { helper: undefined });
      expect(await resolveCredentials(empty.value)).toBeUndefined();
    } finally {
      process.env.PATH = path;
    }
  });
  test("a password stream that never ends (yes | ...) fails fast with a clear message", async () => {
    const yes = Bun.spawn(["yes"], { stdout: "pipe", stderr: "ignore" });
    try {
      const { value } = await input(undefined, {}, { username: "me", stdin: { isTTY: false, text: async () => "never called", stream: () => yes.stdout } });
      const before = process.memoryUsage().rss;
      await expect(resolveCredentials(value)).rejects.toThrow(
        new UsageError('the password on stdin is longer than 16 KiB: pipe only the password, e.g. echo "$PASSWORD" | ...'),
      );
      expect(process.memoryUsage().rss - before).toBeLessThan(32 * 1024 * 1024);
    } finally {
      yes.kill();
      await yes.exited;
    }
  });

  test("a password of exactly the limit, with its newline, is read whole from the stream", async () => {
    const password = "p".repeat(PASSWORD_LIMIT);
    const stream = new Blob([`${password}\r\n`]).stream();
    const { value } = await input(undefined, {}, { username: "me", stdin: { isTTY: false, text: async () => "never called", stream: () => stream } });
    expect(await resolveCredentials(value)).toEqual({ username: "me", password });
    const tooLong = new Blob([`${password}xyz`]).stream();
    const over = await input(undefined, {}, { username: "me", stdin: { isTTY: false, text: async () => "", stream: () => tooLong } });
    await expect(resolveCredentials(over.value)).rejects.toThrow("the password on stdin is longer than 16 KiB");
  });
});
