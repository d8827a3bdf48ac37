import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

/**
 * Marks what this user's runs verified (which blob a layer became, what a stored blob decompresses
 * to) with an HMAC under a key kept outside the cache folder. A cache restored from elsewhere, shared,
 * or edited by hand carries no valid mark, so its claims are checked again before anything relies on
 * them; a mark this user made lets a re-push skip decompressing what it already proved.
 */
export class Sealer {
  private constructor(private readonly key: Buffer | undefined) {}

  /** With no key (no writable state folder), nothing is ever trusted without checking. */
  static none(): Sealer {
    return new Sealer(undefined);
  }

  static withKey(key: Buffer): Sealer {
    return new Sealer(key);
  }

  /**
   * The key in `$XDG_STATE_HOME/chunked-push/cache-key` (default `~/.local/state/...`), made on first
   * use (32 random bytes, mode 0600). Any failure gives a sealer that trusts nothing.
   */
  static async load(env: Record<string, string | undefined>): Promise<Sealer> {
    const home = env.HOME || homedir();
    const path = join(env.XDG_STATE_HOME || join(home, ".local", "state"), "chunked-push", "cache-key");
    try {
      return new Sealer(await readKey(path));
    } catch {
      return Sealer.none();
    }
  }

  get enabled(): boolean {
    return this.key !== undefined;
  }

  /** The mark for `fields`, or "" without a key. */
  mark(...fields: (string | number)[]): string {
    if (!this.key) return "";
    return createHmac("sha256", this.key).update(fields.join("\n")).digest("hex");
  }

  /** Whether `mark` was made by this key for exactly these fields. */
  check(mark: unknown, ...fields: (string | number)[]): boolean {
    if (!this.key || typeof mark !== "string" || !/^[a-f0-9]{64}$/.test(mark)) return false;
    return timingSafeEqual(Buffer.from(mark, "hex"), Buffer.from(this.mark(...fields), "hex"));
  }
}

async function readKey(path: string): Promise<Buffer> {
  const existing = await readFile(path).catch(() => undefined);
  if (existing?.length === 32) return existing;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  const temp = `${path}.tmp-${process.pid}`;
  await writeFile(temp, key, { mode: 0o600 });
  try {
    // A complete key appears at once under its name; of two runs starting together, one key wins.
    if (existing === undefined) await link(temp, path);
    else await rename(temp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const winner = await readFile(path);
    if (winner.length !== 32) throw new Error("the cache key file is not a key");
    return winner;
  } finally {
    await rm(temp, { force: true });
  }
  return key;
}
