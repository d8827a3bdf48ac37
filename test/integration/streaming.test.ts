/**
 * Streaming through compression into the upload, seen from the registry's side (the serverless-registry
 * emulation, which logs when each request's headers arrived): the first PATCH of a layer leaves while the
 * compressor is still writing that layer (its cache file's last write comes later), every chunk keeps
 * serverless-registry's rules, and the image pulls back intact. For an archive read in place and (in
 * daemon-push.test.ts) a running `docker save`; a `.tar.gz` read once as a stream is compressed as it is
 * read but sent only once the archive has said what the image is.
 */
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { deterministicBytes, digestOf, makeConfig, makeLayerTar, writeClassicDockerArchive, type WrittenArchive } from "../support/fixtures.ts";
import { compressArchive } from "../support/multiplatform.ts";
import { startServerlessEmulator, type Emulator } from "../support/serverless-emulator.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import { tempDirs } from "../support/temp.ts";
import { compressedAt, expectStreamed, uploadSessions } from "../support/upload-log.ts";

const MiB = 1024 * 1024;
const CHUNK = 6 * MiB;
const EMU = { username: "user", password: "secret" };
const SLOW = 180_000;

let work: string;
let image: WrittenArchive;
let emulator: Emulator | undefined;

/** Folders of single tests, removed after each test even when it failed half-way. */
const tempDir = tempDirs();

beforeAll(async () => {
  work = await tempDir("streaming-");
  // Half noise, half text: about 40 MiB of gzip from 80 MiB, so compression takes a while and the
  // layer goes in about seven 6 MiB chunks.
  const layers = [makeLayerTar({ "data/big.bin": deterministicBytes(80 * MiB) }), makeLayerTar({ "etc/motd": "streamed\n" })];
  image = await writeClassicDockerArchive(join(work, "image.tar"), { layers, config: makeConfig(layers.map((l) => digestOf(l))), repoTag: "stream/app:1" });
}, SLOW);

afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
});

/** Pushes `archive` from a fresh folder (empty cache) into a fresh emulation. */
async function pushArchive(archive: string) {
  emulator = await startServerlessEmulator({ ...EMU, minChunk: 5 * MiB, maxChunk: CHUNK });
  const cwd = await tempDir("streaming-push-");
  const ref = `${emulator.host}/stream/app:1`;
  const result = await runCli(["--archive", archive, ref], {
    cwd,
    stdin: `${EMU.password}\n`,
    env: { USERNAME_REGISTRY: EMU.username, INSECURE_HTTP_PUSH: "true", XDG_STATE_HOME: join(cwd, "state") },
  });
  return { result, cwd, ref, emulator };
}

describe("streaming into the serverless-registry emulation", () => {
  test(
    "an archive read in place: the big layer's first chunk leaves while it is still being compressed",
    async () => {
      const { result, cwd, ref, emulator: registry } = await pushArchive(image.path);
      expect(result.code).toBe(0);
      await expectStreamed(registry, join(cwd, ".cache"), CHUNK);
      const pulled = await pullAndVerify({ ref, ...EMU, tlsVerify: false });
      expect(pulled.configDigest).toBe(image.configDigest);
      expect(pulled.diffIds).toEqual(image.diffIds);
      expect(await readdir(join(cwd, ".cache", "uploads")).catch(() => [])).toEqual([]);
      await rm(cwd, { recursive: true, force: true });
    },
    SLOW,
  );

  test(
    "a .tar.gz read once as a stream: layers compressed as it is read, sent once the archive says they are the image's",
    async () => {
      // An archive may hold more than the image pushed (other images, other files): nothing of it goes
      // to the registry before its manifest names it, unlike an engine's save of the one image.
      const gz = await compressArchive(image.path, "gzip", join(work, "image.tar.gz"));
      const { result, cwd, ref, emulator: registry } = await pushArchive(gz);
      expect(result.code).toBe(0);
      // Said before the first layer is at work, not once the archive has been read whole.
      expect(result.stderr).toStartWith(`Pushing ${ref} from archive ${gz} (gzip, read as a stream)\n`);
      expect(registry.violations).toEqual([]);
      const chunked = uploadSessions(registry.requests).filter((s) => s.patches.length > 1 && s.put?.status === 201);
      expect(chunked).toHaveLength(1);
      const session = chunked[0]!;
      expect(session.patches[0]!.startedAt!).toBeGreaterThan(await compressedAt(join(cwd, ".cache"), session.digest!));
      expect(session.patches.slice(0, -1).map((p) => p.bodyBytes)).toEqual(session.patches.slice(0, -1).map(() => CHUNK));
      const pulled = await pullAndVerify({ ref, ...EMU, tlsVerify: false });
      expect(pulled.configDigest).toBe(image.configDigest);
      expect(pulled.diffIds).toEqual(image.diffIds);
      await rm(cwd, { recursive: true, force: true });
    },
    SLOW,
  );
});
