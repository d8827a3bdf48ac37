import { UsageError } from "./errors.ts";
import type { Credentials } from "./registry.ts";

/**
 * Credentials from USERNAME_REGISTRY and the password piped on stdin (one trailing newline dropped,
 * so `echo` works). Without a username nothing is read: the push goes anonymously.
 */
export async function readCredentials(
  username: string | undefined,
  stdin: { isTTY?: boolean; text(): Promise<string> },
): Promise<Credentials | undefined> {
  if (!username) return undefined;
  if (stdin.isTTY) {
    throw new UsageError(`USERNAME_REGISTRY is set: pipe the password on stdin, e.g. echo "$PASSWORD" | ...`);
  }
  const password = (await stdin.text()).replace(/\r?\n$/, "");
  if (password === "") {
    throw new UsageError(`USERNAME_REGISTRY is set but no password arrived on stdin: pipe it, e.g. echo "$PASSWORD" | ...`);
  }
  return { username, password };
}
