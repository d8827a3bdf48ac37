/**
 * Issue 9, a hostile registry, through the real CLI: hosts that are not the registry (an upload
 * Location, a redirect) answering 401 with challenges of their own, endless and huge bodies, an endless
 * or silent token service, a Range that never progresses, absurd chunk-length headers, escape sequences
 * in what the registry says, and credentials in a URL-style reference. Every case asserts the exit code,
 * the exact message, what reached the registry and each foreign host (Authorization, token requests),
 * and peak memory where the input could make it grow.
 *
 * The transport's own unit tests (test/unit/transport-*.test.ts) and registry-transport.test.ts cover
 * the mechanisms; these cover the whole push: sessions, chunk plans, retries, DELETEs and manifests.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import {
  compressLayer,
  deterministicBytes,
  digestOf,
  makeConfig,
  makeLayerTar,
  makeTempDir,
  MEDIA,
  type WrittenArchive,
  writeOciArchive,
} from "../support/fixtures.ts";
import { manifestPuts, PEAK_RSS_LIMIT_KB, requestsFor, runHostileCli, type MeasuredRun } from "../support/hostile-cli.ts";
import {
  endlessJsonError,
  endlessManifest,
  endlessTokenAnswer,
  escapeSequenceError,
  HOSTILE_ESCAPE_TEXT,
  type HostileRegistry,
  type HostileScript,
  hugeJsonError,
  startHostileRegistry,
  terminalControlsIn,
} from "../support/hostile-registry.ts";

const USER = "alice";
const PASSWORD = "s3cret-pw-never-shown";
const BASIC = { scheme: "basic", username: USER, password: PASSWORD } as const;
const REPO = "hostile/app";

let dir: string;
/** One stored gzip layer of 1.7 MB (two chunks under --chunk-size 1MiB) and its config. */
let big: WrittenArchive;
let small: WrittenArchive;
let registry: HostileRegistry | undefined;
let counter = 0;

beforeAll(async () => {
  dir = await makeTempDir("hostile-registry-cli-");
  const bigLayer = makeLayerTar({ "data/big.bin": deterministicBytes(3 * 1024 * 1024) });
  big = await writeOciArchive(join(dir, "big.tar"), { layers: [bigLayer], config: makeConfig([digestOf(bigLayer)]), repoTag: "hostile/app:1" });
  const smallLayer = makeLayerTar({ "etc/small.txt": "a small layer\n" });
  small = await writeOciArchive(join(dir, "small.tar"), { layers: [smallLayer], config: makeConfig([digestOf(smallLayer)]), repoTag: "hostile/app:1" });
});

afterEach(async () => {
  await registry?.stop();
  registry = undefined;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function start(script: HostileScript): Promise<HostileRegistry> {
  registry = await startHostileRegistry(script);
  return registry;
}

/** Pushes `archive` (default the 1.7 MB one) as alice (when `login`), with a cache of its own. */
async function push(reg: HostileRegistry, extra: string[] = [], opts: { archive?: WrittenArchive; login?: boolean } = {}): Promise<MeasuredRun> {
  const archive = opts.archive ?? big;
  const env: Record<string, string> = { INSECURE_HTTP_PUSH: "true" };
  if (opts.login !== false) env.USERNAME_REGISTRY = USER;
  return runHostileCli(["--cache-dir", join(dir, `cache-${++counter}`), "--archive", archive.path, ...extra, `${reg.host}/${REPO}:1`], {
    env,
    stdin: opts.login !== false ? `${PASSWORD}\n` : undefined,
  });
}

/** "layer 1/1 sha256:<12 hex>", as messages name the archive's one layer. */
function layerLabel(archive: WrittenArchive = big): string {
  return `layer 1/1 ${archive.layerDigests[0]!.slice(0, 19)}`;
}

/** The password never appears, and nothing a terminal would obey does either. */
function expectClean(result: MeasuredRun): void {
  expect(result.stdout + result.stderr).not.toContain(PASSWORD);
  expect(terminalControlsIn(result.stdout + result.stderr)).toEqual([]);
}

function expectNoManifest(reg: HostileRegistry): void {
  for (const origin of [reg.registry, reg.foreign, reg.third]) expect(manifestPuts(origin, REPO)).toEqual([]);
}

describe("credentials go to the registry and its own token realm only", () => {
  const NOT_THE_REGISTRY = (reg: HostileRegistry, host: string, what: string) =>
    `error: ${layerLabel()}: ${what}: HTTP 401 UNAUTHORIZED: authentication required from ${host}, which is not the registry: credentials go only to ${reg.url} and the token service it names`;

  test("an upload Location on another host that answers 401 with its own Bearer challenge gets nothing", async () => {
    const reg = await start({
      auth: { registry: BASIC, foreign: { scheme: "bearer", realm: "third", username: USER, password: PASSWORD } },
      rules: [{ origin: "registry", route: "upload-start", behaviour: { kind: "serve", location: "foreign" } }],
    });
    const result = await push(reg);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(NOT_THE_REGISTRY(reg, reg.foreign.url, "uploading in one request"));
    // The foreign host got the upload attempt (and the clean-up DELETE), never a credential.
    expect(reg.foreign.requests.map((r) => r.method)).toEqual(["PUT", "DELETE"]);
    expect(reg.foreign.credentialsSeen()).toEqual([]);
    // Its token realm was never asked, and no token was ever issued.
    expect(reg.third.requests).toEqual([]);
    expect(reg.tokens).toEqual([]);
    // The registry itself did get Basic credentials, as it should.
    expect(reg.registry.credentialsSeen()).toContain(`Basic ${btoa(`${USER}:${PASSWORD}`)}`);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("the same, from the registry's own address on another port", async () => {
    const reg = await start({
      foreignAddress: "127.0.0.1",
      auth: { registry: BASIC, foreign: { scheme: "basic", username: USER, password: PASSWORD } },
      rules: [{ origin: "registry", route: "upload-start", behaviour: { kind: "serve", location: "foreign" } }],
    });
    expect(reg.foreign.host.startsWith("127.0.0.1:")).toBe(true);
    const result = await push(reg);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(NOT_THE_REGISTRY(reg, reg.foreign.url, "uploading in one request"));
    expect(reg.foreign.credentialsSeen()).toEqual([]);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("a storage host challenging with the registry's own token realm gets neither a token nor the password", async () => {
    // The registry uses a token service on `foreign`; uploads are sent to `third`, which names that
    // same token service in its challenge. Only the registry may have the token.
    const bearer = { scheme: "bearer", realm: "foreign", username: USER, password: PASSWORD } as const;
    const reg = await start({
      auth: { registry: bearer, third: bearer },
      rules: [{ origin: "registry", route: "upload-start", behaviour: { kind: "serve", location: "third" } }],
    });
    const result = await push(reg);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(NOT_THE_REGISTRY(reg, reg.third.url, "uploading in one request"));
    expect(reg.third.credentialsSeen()).toEqual([]);
    // One token, asked once, for the registry.
    expect(reg.foreign.requests.map((r) => `${r.route} ${r.status}`)).toEqual(["token 200"]);
    expect(reg.tokens).toHaveLength(1);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("a redirect of the final PUT to a host that answers 401 Bearer: the PUT follows, the credentials do not", async () => {
    const reg = await start({
      auth: { registry: BASIC, foreign: { scheme: "bearer", realm: "foreign", username: USER, password: PASSWORD } },
      rules: [{ origin: "registry", route: "upload", method: "PUT", behaviour: { kind: "redirect", status: 307, to: "foreign" } }],
    });
    const result = await push(reg);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(NOT_THE_REGISTRY(reg, reg.foreign.url, "uploading in one request"));
    expect(reg.foreign.requests.map((r) => `${r.method} ${r.route}`)).toEqual(["PUT upload"]);
    expect(reg.foreign.credentialsSeen()).toEqual([]);
    expect(reg.tokens).toEqual([]);
    // The session is given up on the registry, with the registry's credentials.
    const deletes = requestsFor(reg.registry, REPO).filter((r) => r.method === "DELETE");
    expect(deletes.map((r) => r.status)).toEqual([204]);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("a redirected HEAD to a host with a Basic challenge gets nothing", async () => {
    const reg = await start({
      auth: { registry: BASIC, foreign: { scheme: "basic", username: USER, password: PASSWORD } },
      rules: [{ origin: "registry", route: "blob", method: "HEAD", behaviour: { kind: "redirect", status: 302, to: "foreign" } }],
    });
    const result = await push(reg);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(
      `error: ${layerLabel()}: checking whether the registry has it: HTTP 401 Unauthorized from ${reg.foreign.url}, which is not the registry: credentials go only to ${reg.url} and the token service it names`,
    );
    expect(reg.foreign.requests.map((r) => r.method)).toEqual(["HEAD"]);
    expect(reg.foreign.credentialsSeen()).toEqual([]);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("a URL-style reference with a password is refused without echoing it, before any request", async () => {
    const reg = await start({});
    for (const args of [
      [`https://${USER}:${PASSWORD}@${reg.host}/${REPO}:1`],
      [`http://${USER}:${PASSWORD}@${reg.host}/${REPO}:1`],
      ["--json", `${USER}:${PASSWORD}@${reg.host}/${REPO}:1`],
      ["--from", `https://${USER}:${PASSWORD}@${reg.host}/other:1`, `${reg.host}/${REPO}:1`],
    ]) {
      const result = await runHostileCli(args, { env: { INSECURE_HTTP_PUSH: "true" } });
      expect(result.code).toBe(2);
      expect(result.stderr.split("\n")[0]).toMatch(/^error: (--from: )?a reference cannot carry credentials/);
      expectClean(result);
    }
    expect(reg.requests).toEqual([]);
  }, 60_000);
});

describe("bodies without end: bounded memory and a short, clear error", () => {
  test("an endless JSON error answering the upload POST", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "upload-start", behaviour: endlessJsonError(500) }] });
    const result = await push(reg, ["--retries", "1"], { login: false });
    expect(result.code).toBe(1);
    expect(result.lastLine).toMatch(
      new RegExp(
        `^error: ${layerLabel()}: opening an upload session: HTTP 500 Internal Server Error: \\{"errors":\\[\\{"code":"UNKNOWN","message":"A+\\.\\.\\. \\(the registry or its origin failed; try again\\)$`,
      ),
    );
    expect(result.lastLine.length).toBeLessThan(400);
    expect(requestsFor(reg.registry, REPO).filter((r) => r.route === "upload-start")).toHaveLength(2);
    // The client stopped reading: what the server got onto the wire is bounded by socket buffers.
    expect(reg.registry.bytesSent()).toBeLessThan(2 * 48 * 1024 * 1024);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expectNoManifest(reg);
  }, 60_000);

  test("a complete 200 MB JSON error is not read whole, nor printed", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "upload-start", behaviour: hugeJsonError(400) }] });
    const result = await push(reg, [], { login: false });
    expect(result.code).toBe(1);
    expect(result.lastLine).toMatch(
      new RegExp(`^error: ${layerLabel()}: opening an upload session: HTTP 400 Bad Request: \\{"errors":\\[\\{"code":"UNKNOWN","message":"A+\\.\\.\\.$`),
    );
    expect(result.lastLine.length).toBeLessThan(400);
    expect(reg.registry.bytesSent()).toBeLessThan(48 * 1024 * 1024);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expectNoManifest(reg);
  }, 60_000);

  test("an endless token answer", async () => {
    const reg = await start({
      auth: { registry: { scheme: "bearer", realm: "foreign" } },
      rules: [{ origin: "foreign", route: "token", behaviour: endlessTokenAnswer() }],
    });
    const result = await push(reg, ["--retries", "1"]);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(`error: token service ${reg.foreign.url}: the answer from ${reg.foreign.url} is larger than 1 MiB; stopped reading it`);
    expect(reg.foreign.bytesSent()).toBeLessThan(48 * 1024 * 1024);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expectNoManifest(reg);
    expectClean(result);
  }, 60_000);

  test("a silent token service: --timeout 2 --retries 1 gives up after two idle attempts", async () => {
    const reg = await start({
      auth: { registry: { scheme: "bearer", realm: "foreign" } },
      rules: [{ origin: "foreign", route: "token", behaviour: { kind: "silent" } }],
    });
    const result = await push(reg, ["--timeout", "2", "--retries", "1"]);
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(
      `error: token service ${reg.foreign.url}: no progress for 2 s on the connection to ${reg.foreign.url} (gave up after 2 attempts)`,
    );
    const asked = reg.foreign.requests.filter((r) => r.route === "token");
    expect(asked).toHaveLength(2);
    // Each attempt is abandoned after the 2 s of silence, not a built-in 30 s or 120 s: generous bounds.
    const gap = asked[1]!.at - asked[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(2000);
    expect(gap).toBeLessThan(6000);
    expect(asked.every((r) => r.clientClosed)).toBe(true);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(4000);
    expect(result.elapsedMs).toBeLessThan(20_000);
    expectClean(result);
  }, 60_000);
});

describe("--from: documents read up to what they may be, never more", () => {
  test("an endless manifest from the source registry", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "manifest", method: "GET", pathIncludes: "/source/", behaviour: endlessManifest() }] });
    const result = await runHostileCli(["--cache-dir", join(dir, `cache-${++counter}`), "--from", `${reg.host}/source:1`, `${reg.host}/${REPO}:1`], {
      env: { INSECURE_HTTP_PUSH: "true" },
    });
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(`error: reading ${reg.host}/source:1: the answer from ${reg.url} is larger than 4 MiB; stopped reading it`);
    expect(reg.registry.bytesSent()).toBeLessThan(48 * 1024 * 1024);
    expect(result.peakKb).toBeLessThan(PEAK_RSS_LIMIT_KB);
    expectNoManifest(reg);
  }, 60_000);

  test("a real manifest of 70 kB and config of 100 kB are copied (not cut at a small default)", async () => {
    const reg = await start({});
    const layer = makeLayerTar({ "etc/remote.txt": "a layer in the source registry\n" });
    const gz = compressLayer(layer, "gzip");
    const config = makeConfig([digestOf(layer)], { "org.example.long": "c".repeat(100_000) });
    reg.putBlob(gz);
    reg.putBlob(config);
    const manifest = new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociConfig, digest: digestOf(config), size: config.length },
        layers: [{ mediaType: MEDIA.ociLayerGzip, digest: digestOf(gz), size: gz.length }],
        annotations: { "org.example.long": "m".repeat(70_000) },
      }),
    );
    const digest = reg.putManifest("source", "1", manifest, MEDIA.ociManifest);
    const result = await runHostileCli(["--cache-dir", join(dir, `cache-${++counter}`), "--from", `${reg.host}/source:1`, `${reg.host}/${REPO}:1`], {
      env: { INSECURE_HTTP_PUSH: "true" },
    });
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`${reg.host}/${REPO}:1@${digest}\n`);
    expect(reg.manifests.get(`${REPO}:1`)?.bytes).toEqual(manifest);
  }, 60_000);
});

describe("a Range that never progresses: the upload gives up after --retries", () => {
  test("every answer says 0-0", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "upload", behaviour: { kind: "serve", range: "rewind" } }] });
    const result = await push(reg, ["--chunk-size", "1MiB", "--retries", "2"], { login: false });
    expect(result.code).toBe(1);
    expect(result.lastLine).toBe(
      `error: ${layerLabel()}: chunk 1/2 (bytes 0-1048575): the registry reports it holds bytes 0-0, expected 0-1048575 (gave up after 3 attempts)`,
    );
    const session = requestsFor(reg.registry, REPO).filter((r) => r.route === "upload");
    expect(session.filter((r) => r.method === "PATCH")).toHaveLength(3);
    expect(session[session.length - 1]!.method).toBe("DELETE");
    expectNoManifest(reg);
    expect(result.elapsedMs).toBeLessThan(20_000);
  }, 60_000);

  test("every answer 100 kB below the one before", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "upload", behaviour: { kind: "serve", range: "backwards", backStep: 100_000 } }] });
    const result = await push(reg, ["--chunk-size", "1MiB", "--retries", "2"], { login: false });
    expect(result.code).toBe(1);
    expect(result.lastLine).toMatch(
      new RegExp(
        `^error: ${layerLabel()}: chunk 1/2 \\(bytes \\d+-\\d+\\): the registry reports it holds bytes 0-\\d+, expected 0-\\d+ \\(gave up after 3 attempts\\)$`,
      ),
    );
    // The first answer moved the high-water mark once; after that no answer did, so retries ran out.
    const patches = requestsFor(reg.registry, REPO).filter((r) => r.method === "PATCH");
    expect(patches.length).toBeLessThanOrEqual(4);
    expectNoManifest(reg);
    expect(result.elapsedMs).toBeLessThan(20_000);
  }, 60_000);
});

describe("absurd chunk-length headers count as no limit, with a warning, and the push works", () => {
  /** The push succeeded and the registry holds the image: its manifest under the tag, its layer intact. */
  function expectPushed(reg: HostileRegistry, result: MeasuredRun, archive: WrittenArchive): void {
    if (result.code !== 0) console.error(result.stderr);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`${reg.host}/${REPO}:1@${archive.manifestDigest}\n`);
    expect(reg.manifests.get(`${REPO}:1`)?.bytes).toEqual(archive.manifestBytes!);
    const layer = reg.blobs.get(archive.layerDigests[0]!);
    expect(layer && digestOf(layer)).toBe(archive.layerDigests[0]!);
    // The config was committed last, after the layer it describes.
    const commits = requestsFor(reg.registry, REPO).filter((r) => r.method === "PUT" && r.route === "upload" && r.status === 201);
    expect(commits.map((r) => new URLSearchParams(r.query).get("digest"))).toEqual([archive.layerDigests[0]!, archive.configDigest]);
  }

  const warning = (label: string, name: string, value: string) =>
    `warning: ${label}: the registry sent ${name}: ${JSON.stringify(value)}, which is not a usable size: ignoring it`;

  test("OCI-Chunk-Max-Length: 1e30 (once read as 1)", async () => {
    const reg = await start({ chunkHeaders: { max: "1e30" } });
    const result = await push(reg, [], { login: false });
    expectPushed(reg, result, big);
    expect(result.stderr.split("\n")).toContain(warning(layerLabel(), "OCI-Chunk-Max-Length", "1e30"));
    // No limit: the whole layer in one PUT, no PATCH of 1 byte.
    expect(requestsFor(reg.registry, REPO).filter((r) => r.method === "PATCH")).toEqual([]);
  }, 60_000);

  test("30 digits and garbage: no limit", async () => {
    for (const headers of [{ max: "1".padEnd(31, "0") }, { max: "unlimited", min: "-5" }]) {
      const reg = await start({ chunkHeaders: headers });
      const result = await push(reg, [], { login: false });
      expectPushed(reg, result, big);
      for (const [name, value] of Object.entries(headers)) {
        expect(result.stderr.split("\n")).toContain(warning(layerLabel(), name === "max" ? "OCI-Chunk-Max-Length" : "OCI-Chunk-Min-Length", value));
      }
      expect(requestsFor(reg.registry, REPO).filter((r) => r.method === "PATCH")).toEqual([]);
      await reg.stop();
    }
  }, 60_000);

  test("a minimum above the maximum: the minimum is ignored, chunks follow the maximum", async () => {
    const reg = await start({ chunkHeaders: { min: "2000000", max: "1000000" } });
    const result = await push(reg, [], { login: false });
    expectPushed(reg, result, big);
    expect(result.stderr.split("\n")).toContain(
      `warning: ${layerLabel()}: the registry's OCI-Chunk-Min-Length (2000000) is above its OCI-Chunk-Max-Length (1000000): ignoring the minimum`,
    );
    const patches = requestsFor(reg.registry, REPO).filter((r) => r.method === "PATCH");
    const size = reg.blobs.get(big.layerDigests[0]!)!.length;
    expect(patches.map((r) => r.bodyBytes)).toEqual([1_000_000, size - 1_000_000]);
  }, 60_000);

  test("a real minimum above --chunk-size: the advice given works when followed", async () => {
    const reg = await start({ chunkHeaders: { min: "2000000" } });
    const refused = await push(reg, ["--chunk-size", "1MiB"], { login: false });
    expect(refused.code).toBe(1);
    expect(refused.lastLine).toBe(
      `error: ${layerLabel()}: the largest request body allowed (1048576 bytes, from --chunk-size) is below the registry's minimum chunk of 2000000 bytes: use --chunk-size 2000000 or more`,
    );
    expectNoManifest(reg);
    const followed = await push(reg, ["--chunk-size", "2000000"], { login: false });
    expectPushed(reg, followed, big);
  }, 60_000);
});

describe("registry text reaches the terminal without control characters", () => {
  test("an error message and detail full of escape sequences", async () => {
    const reg = await start({ rules: [{ origin: "registry", route: "upload-start", behaviour: escapeSequenceError(400) }] });
    const result = await push(reg, [], { login: false });
    expect(result.code).toBe(1);
    expect(result.lastLine).toStartWith(`error: ${layerLabel()}: opening an upload session: HTTP 400 DENIED: HOSTILE-BEGIN red`);
    expect(result.lastLine).toContain("HOSTILE-END");
    expect(terminalControlsIn(result.stderr)).toEqual([]);
  }, 60_000);

  test("in a retried answer, a manifest error code, and the --json failure on stdout", async () => {
    const reg = await start({
      rules: [
        { origin: "registry", route: "upload-start", times: 1, behaviour: escapeSequenceError(503, "UNAVAILABLE\u001b[5m") },
        { origin: "registry", route: "manifest", method: "PUT", behaviour: escapeSequenceError(400, "MANIFEST_INVALID\u009b2J") },
      ],
    });
    const result = await push(reg, ["--json"], { archive: small, login: false });
    expect(result.code).toBe(1);
    // The retry warning says what happened in our words only; the error quotes the registry, cleaned.
    expect(result.stderr).toMatch(
      new RegExp(`\nwarning: ${layerLabel(small)}: opening an upload session: HTTP 503; retrying in [0-9.]+ s \\(attempt 2 of 6\\)\n`),
    );
    expect(result.lastLine).toStartWith(`error: manifest ${REPO}:1: upload failed: HTTP 400 MANIFEST_INVALID: HOSTILE-BEGIN red`);
    expect(result.stderr.match(/HOSTILE-BEGIN/g)).toHaveLength(2);
    const failure = JSON.parse(result.stdout) as { error: { message: string; exitCode: number } };
    expect(failure.error.exitCode).toBe(1);
    expect(failure.error.message).toContain("HOSTILE-END");
    expect(terminalControlsIn(failure.error.message)).toEqual([]);
    expect(terminalControlsIn(result.stdout + result.stderr)).toEqual([]);
    expect(HOSTILE_ESCAPE_TEXT).toContain("\u001b"); // the fixture did carry them
  }, 60_000);

  test("C1 controls in a chunk-length header", async () => {
    const reg = await start({ chunkHeaders: { max: "\u009b2J\u009d0;pwned\u009c big" } });
    const result = await push(reg, [], { archive: small, login: false });
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("the registry sent OCI-Chunk-Max-Length:");
    expect(terminalControlsIn(result.stderr)).toEqual([]);
  }, 60_000);
});
