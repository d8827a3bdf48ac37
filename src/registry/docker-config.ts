/**
 * Credentials for any registry host from the Docker config, the way the docker CLI finds them
 * (docker/cli `cli/config/configfile/file.go`, `GetCredentialsStore`): the `credHelpers` entry for the
 * host if there is one, else the `credsStore` if one is set — and when a helper is configured, its
 * answer is final ("not found" means no credentials; the plain `auths` entry is not consulted) — else
 * the `auths` entry. Hosts are looked up by themselves, so a copy from another registry gets that
 * registry's credentials, never the destination's.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { PushError } from "../errors.ts";
import type { Credentials } from "./auth.ts";
import { excerpt } from "./sanitize.ts";
import { readBounded } from "./transport/bounded.ts";

/** Runs `docker-credential-<name> get` for `server`; injectable for tests. */
export type CredentialHelper = (name: string, server: string) => Promise<Credentials | undefined>;

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

// Docker Hub's credentials are stored under its v1 index URL, whatever name the image used.
const DOCKER_HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);
const DOCKER_HUB_KEY = "https://index.docker.io/v1/";

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: Record<string, string | undefined>): string {
  return join(env.DOCKER_CONFIG || join(env.HOME || homedir(), ".docker"), "config.json");
}

/** The Docker config's credentials for `host` (`name[:port]`), or undefined when it has none. */
export async function dockerConfigCredentials(
  host: string,
  env: Record<string, string | undefined>,
  helper: CredentialHelper = runCredentialHelper,
): Promise<Credentials | undefined> {
  const path = dockerConfigPath(env);
  const text = await readFile(path, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  let config: DockerConfig;
  try {
    config = JSON.parse(text) as DockerConfig;
  } catch {
    throw new PushError(`${path} is not valid JSON`);
  }
  const server = DOCKER_HUB_HOSTS.has(host) ? DOCKER_HUB_KEY : host;
  const helperName = config.credHelpers?.[server] ?? config.credsStore;
  if (helperName) return helper(helperName, server);
  return fromAuths(config.auths ?? {}, server);
}

function fromAuths(auths: NonNullable<DockerConfig["auths"]>, server: string): Credentials | undefined {
  // Docker tries the key as written, then keys written as URLs (`https://host`, `https://host/v1/`).
  const entry = auths[server] ?? Object.entries(auths).find(([key]) => hostOf(key) === server)?.[1];
  if (entry?.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1).replace(/\0+$/, "") };
  }
  if (entry?.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/** docker/cli's ConvertToHostname: `https://host:5000/v1/` -> `host:5000`, `host/path` -> `host`. */
function hostOf(key: string): string {
  if (key.includes("://")) {
    try {
      const url = new URL(key);
      if (url.host) return url.host;
    } catch {
      // Not a URL after all: cut at the first slash like the rest.
    }
  }
  return key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
}

// A helper is a local program, but its output is still read with a bound.
const HELPER_OUTPUT_LIMIT = 1024 * 1024;

// A helper that waits on a locked keychain or a prompt nobody sees must not hold the push forever;
// a minute leaves room for a person to unlock it.
const HELPER_TIMEOUT_MS = 60_000;

/** `docker-credential-<name> get` reads the server on stdin and answers `{"Username","Secret"}`. */
export async function runCredentialHelper(name: string, server: string, timeoutMs = HELPER_TIMEOUT_MS): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  const path = Bun.which(program, { PATH: process.env.PATH ?? "" });
  if (!path) throw new PushError(`the Docker config names the credential helper "${excerpt(name, 80)}", but ${excerpt(program, 100)} is not on PATH`);
  const child = Bun.spawn([path, "get"], { stdin: new TextEncoder().encode(server), stdout: "pipe", stderr: "pipe" });
  let flooded = false;
  const read = async (stream: ReadableStream<Uint8Array>) => {
    const { bytes, truncated } = await readBounded(stream, HELPER_OUTPUT_LIMIT);
    if (truncated) {
      flooded = true;
      child.kill();
    }
    return new TextDecoder().decode(bytes);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new PushError(`${program} get did not answer for ${server} within ${timeoutMs / 1000} s; stopped it`));
    }, timeoutMs);
  });
  const [stdout, stderr, code] = await Promise.race([Promise.all([read(child.stdout), read(child.stderr), child.exited]), timedOut]).finally(() =>
    clearTimeout(timer),
  );
  if (flooded) throw new PushError(`${program} get wrote more than 1 MiB for ${server}; stopped reading it`);
  if (code !== 0) {
    if (/not found/i.test(stdout + stderr)) return undefined;
    throw new PushError(`${program} get failed for ${server}: ${excerpt(stderr || stdout, 300) || `exit code ${code}`}`);
  }
  let answer: unknown;
  try {
    answer = JSON.parse(stdout);
  } catch {
    throw new PushError(`${program} get answered something that is not JSON`);
  }
  const { Username, Secret } = (answer ?? {}) as { Username?: unknown; Secret?: unknown };
  return typeof Username === "string" && typeof Secret === "string" && Username && Secret ? { username: Username, password: Secret } : undefined;
}
