import type { Credentials } from "../registry/auth.ts";
import { dockerConfigCredentials, type CredentialHelper } from "../registry/docker-config.ts";
import { UsageError } from "../errors.ts";
import { readBounded } from "../registry/transport/bounded.ts";

export interface CredentialInput {
  /** --username or USERNAME_REGISTRY. */
  username?: string;
  /** --password-stdin: read stdin even on a terminal. */
  passwordStdin: boolean;
  /** The registry host, to look up in the Docker config. */
  host: string;
  stdin: {
    isTTY?: boolean;
    /** Reads all of stdin: only used when `stream` is not given. */
    text(): Promise<string>;
    /** stdin as a stream, read here with a bound (`yes | chunked-push ...` must not read forever). */
    stream?(): ReadableStream<Uint8Array>;
  };
  /** Asks on the terminal without echo. */
  prompt(question: string): Promise<string>;
  env: Record<string, string | undefined>;
  /** Runs `docker-credential-<name> get`; injectable for tests. */
  helper?: CredentialHelper;
}

/**
 * The longest password read from stdin. Registry passwords and tokens are far shorter (JWTs used as
 * passwords run to a few kB, Entra ID tokens with group claims past 4 KiB), so more than this means
 * something other than a password is being piped.
 */
export const PASSWORD_LIMIT = 16 * 1024;

/**
 * Where the password comes from, as `docker login` users expect: a given user's password from stdin
 * (one trailing newline dropped, so `echo` works) or a prompt on a terminal; with no user, the
 * Docker config's entry for the registry (see registry/docker-config.ts); else anonymous.
 */
export async function resolveCredentials(input: CredentialInput): Promise<Credentials | undefined> {
  const { username } = input;
  if (username) {
    const password =
      input.passwordStdin || !input.stdin.isTTY
        ? (await readPassword(input.stdin)).replace(/\r?\n$/, "")
        : await input.prompt(`Password for ${username}@${input.host}: `);
    if (password === "") {
      throw new UsageError(`no password for ${username}: pipe it on stdin, e.g. echo "$PASSWORD" | ... (or type it at the prompt)`);
    }
    return { username, password };
  }
  return dockerConfigCredentials(input.host, input.env, input.helper);
}

async function readPassword(stdin: CredentialInput["stdin"]): Promise<string> {
  // A trailing CR LF may follow a password of the full length.
  const limit = PASSWORD_LIMIT + 2;
  const text = stdin.stream
    ? await readBounded(stdin.stream(), limit).then(({ bytes, truncated }) => (truncated ? undefined : new TextDecoder().decode(bytes)))
    : await stdin.text();
  if (text === undefined || Buffer.byteLength(text) > limit) {
    throw new UsageError(`the password on stdin is longer than ${PASSWORD_LIMIT / 1024} KiB: pipe only the password, e.g. echo "$PASSWORD" | ...`);
  }
  return text;
}
