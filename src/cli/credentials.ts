import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Credentials } from "../registry/auth.ts";
import { PushError, UsageError } from "../errors.ts";

export interface CredentialInput {
  /** --username or USERNAME_REGISTRY. */
  username?: string;
  /** --password-stdin: read stdin even on a terminal. */
  passwordStdin: boolean;
  /** The registry host, to look up in the Docker config. */
  host: string;
  stdin: { isTTY?: boolean; text(): Promise<string> };
  /** Asks on the terminal without echo. */
  prompt(question: string): Promise<string>;
  env: Record<string, string | undefined>;
  /** Runs `docker-credential-<name> get`; injectable for tests. */
  helper?: (name: string, server: string) => Promise<Credentials | undefined>;
}

/**
 * Where the password comes from, as `docker login` users expect: a given user's password from stdin
 * (one trailing newline dropped, so `echo` works) or a prompt on a terminal; with no user, the
 * Docker config's entry for the registry (`auths`, `credHelpers`, `credsStore`); else anonymous.
 */
export async function resolveCredentials(input: CredentialInput): Promise<Credentials | undefined> {
  const { username } = input;
  if (username) {
    const password = input.passwordStdin || !input.stdin.isTTY
      ? (await input.stdin.text()).replace(/\r?\n$/, "")
      : await input.prompt(`Password for ${username}@${input.host}: `);
    if (password === "") {
      throw new UsageError(`no password for ${username}: pipe it on stdin, e.g. echo "$PASSWORD" | ... (or type it at the prompt)`);
    }
    return { username, password };
  }
  return fromDockerConfig(input);
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

async function fromDockerConfig(input: CredentialInput): Promise<Credentials | undefined> {
  const dir = input.env.DOCKER_CONFIG || join(input.env.HOME || homedir(), ".docker");
  const path = join(dir, "config.json");
  const text = await readFile(path, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  let config: DockerConfig;
  try {
    config = JSON.parse(text) as DockerConfig;
  } catch {
    throw new PushError(`${path} is not valid JSON`);
  }
  // Docker's order: a helper for this registry, then the default store, then the file itself.
  const helper = input.helper ?? runCredentialHelper;
  const helperName = config.credHelpers?.[input.host];
  if (helperName) return helper(helperName, input.host);
  const stored = config.credsStore ? await helper(config.credsStore, input.host) : undefined;
  if (stored) return stored;
  const entry = Object.entries(config.auths ?? {}).find(([key]) => hostOf(key) === input.host)?.[1];
  if (entry?.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry?.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

// `auths` keys are written as `host`, `https://host` or `https://host/v1/`.
function hostOf(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
}

/** `docker-credential-<name> get` reads the server on stdin and answers `{"Username","Secret"}`. */
async function runCredentialHelper(name: string, server: string): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  const path = Bun.which(program, { PATH: process.env.PATH ?? "" });
  if (!path) throw new PushError(`the Docker config names the credential helper "${name}", but ${program} is not on PATH`);
  const child = Bun.spawn([path, "get"], { stdin: new TextEncoder().encode(server), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) {
    if (/not found/i.test(stdout + stderr)) return undefined;
    throw new PushError(`${program} get failed for ${server}: ${(stderr || stdout).trim() || `exit code ${code}`}`);
  }
  try {
    const { Username, Secret } = JSON.parse(stdout) as { Username?: string; Secret?: string };
    return Username && Secret ? { username: Username, password: Secret } : undefined;
  } catch {
    throw new PushError(`${program} get answered something that is not JSON`);
  }
}
