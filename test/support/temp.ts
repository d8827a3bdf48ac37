/**
 * Temporary folders a test owns. `tempDirs()` hands out folders and removes them itself: one made while
 * a test runs goes when that test ends (passed or failed), one made in a beforeAll when the file (or
 * the describe block it was called in) is done. No folder outlives its test file.
 */
import { afterAll, afterEach, beforeEach } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A fresh folder in the system temp folder; the caller removes it (or use tempDirs()). */
export async function makeTempDir(prefix = "chunked-push-fixture-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * Returns `make(prefix)`, which creates a temp folder removed after the test that made it, or after the
 * file for one made outside a test. Call it at the top level of a test file (or of a describe block).
 */
export function tempDirs(): (prefix: string) => Promise<string> {
  const ofTest: string[] = [];
  const ofFile: string[] = [];
  let inTest = false;
  beforeEach(() => {
    inTest = true;
  });
  afterEach(async () => {
    inTest = false;
    await Promise.all(ofTest.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });
  afterAll(async () => {
    await Promise.all(ofFile.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });
  return async (prefix) => {
    const dir = await makeTempDir(prefix);
    (inTest ? ofTest : ofFile).push(dir);
    return dir;
  };
}
