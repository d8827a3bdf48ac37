/**
 * The registry client's transport as a user meets it through the CLI: each connection failure in
 * plain words, the https/http mismatch named, a silent token service bounded by --timeout and
 * --retries, registry text made terminal-safe, bounded memory against an endless answer, and no
 * secret echoed. The CLI runs with a clean environment (runCli with a fresh HOME); every server is in-process
 * except a real TLS docker-registry.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "../support/cli.ts";
import { startDockerRegistry } from "../support/docker-registry.ts";
import { makeSampleImage, makeTempDir, writeClassicDockerArchive } from "../support/fixtures.ts";
import { pullAndVerify } from "../support/skopeo.ts";
import {
  closeAll,
  closedPort,
  endlessBodyServer,
  recordingServer,
  resettingServer,
  selfSignedHttpsServer,
  silentServer,
  tlsDockerRegistry,
} from "../support/transport-servers.ts";

afterEach(closeAll);

// ping fails before the archive is opened, so none is needed.
const ARCHIVE = ["--archive", "/nonexistent/image.tar"];
const USER = { USERNAME_REGISTRY: "me", INSECURE_HTTP_PUSH: "true" };
const PASSWORD = "hunter2-secret\n";

describe("connection failures through the CLI, by exact text", () => {
  test("refused", async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    const result = await runCli(["--retries", "1", ...ARCHIVE, `${host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(`^warning: cannot reach the registry: connection refused by http://${host}; retrying in [0-9.]+ s \\(attempt 2 of 2\\)\\n`),
    );
    expect(result.stderr).toEndWith(`\nerror: cannot reach the registry: connection refused by http://${host} (gave up after 2 attempts)\n`);
  });

  test("reset", async () => {
    const host = await resettingServer();
    const result = await runCli(["--retries", "0", ...ARCHIVE, `${host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`error: cannot reach the registry: http://${host} closed the connection unexpectedly (gave up after 1 attempt)\n`);
  });

  test("timeout", async () => {
    const silent = await silentServer();
    const result = await runCli(["--retries", "0", "--timeout", "1", ...ARCHIVE, `${silent.host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`error: cannot reach the registry: no progress for 1 s on the connection to http://${silent.host} (gave up after 1 attempt)\n`);
  });

  test("DNS", async () => {
    const result = await runCli([...ARCHIVE, "registry.invalid/app:1"], { home: "fresh", env: USER, stdin: PASSWORD });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("error: cannot reach the registry: cannot find the host registry.invalid (DNS lookup failed)\n");
  });

  test("TLS: a self-signed certificate", async () => {
    const host = await selfSignedHttpsServer();
    const result = await runCli([...ARCHIVE, `${host}/app:1`], { home: "fresh", env: { USERNAME_REGISTRY: "me" }, stdin: PASSWORD });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `error: cannot reach the registry: the TLS certificate of https://${host} is self-signed and not trusted: if the registry is yours, trust its CA with NODE_EXTRA_CA_CERTS=<ca.pem>\n`,
    );
  });
});

test("INSECURE_HTTP_PUSH against a real registry's TLS port says it speaks https", async () => {
  const registry = await tlsDockerRegistry();
  const result = await runCli([...ARCHIVE, `${registry.host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
  expect(result.code).toBe(1);
  expect(result.stderr).toBe(
    `error: registry ${registry.host} answers over https, not plain http: unset INSECURE_HTTP_PUSH (and drop --insecure) to push to it\n`,
  );
}, 30_000);

test("a silent token service gives up within --timeout 2 and --retries 1", async () => {
  const arrivals: number[] = [];
  const tokens = await silentServer((at) => arrivals.push(at));
  const registry = recordingServer(
    () => new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="reg"` } }),
  );
  const result = await runCli(["--timeout", "2", "--retries", "1", ...ARCHIVE, `${registry.host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
  const exited = performance.now();
  expect(result.code).toBe(1);
  expect(result.stderr).toEndWith(
    `\nerror: token service http://${tokens.host}: no progress for 2 s on the connection to http://${tokens.host} (gave up after 2 attempts)\n`,
  );
  // Two attempts, each abandoned after the 2 s idle time (not a fixed 30 s), then the end: ~5 s, not ~120 s.
  expect(tokens.connections()).toBe(2);
  const [first = 0, second = 0] = arrivals;
  expect(second - first).toBeGreaterThanOrEqual(2000);
  expect(second - first).toBeLessThan(5000);
  expect(exited - second).toBeGreaterThanOrEqual(1900);
  expect(exited - second).toBeLessThan(5000);
  expect(result.stderr).not.toContain("hunter2");
}, 30_000);

test("registry text reaches the terminal without control characters", async () => {
  const registry = recordingServer(() =>
    Response.json(
      { errors: [{ code: "DENIED\u001b[2J", message: "go \u001b]0;pwned\u0007away\r\u001b[1A\u009b31m now", detail: "\u0007bell" }] },
      { status: 418 },
    ),
  );
  const result = await runCli([...ARCHIVE, `${registry.host}/app:1`], { home: "fresh", env: USER, stdin: PASSWORD });
  expect(result.code).toBe(1);
  expect(result.stderr).toBe(`error: registry ${registry.host} did not answer GET /v2/ as a registry: HTTP 418 DENIED: go away  now (bell)\n`);
});

test("an endless error answer leaves the CLI's memory as small as a short one", async () => {
  const peakKb = async (host: string) => {
    const result = await runCli(["--timeout", "5", ...ARCHIVE, `${host}/app:1`], {
      under: ["/usr/bin/time", "-f", "peak-kb=%M"],
      home: "fresh",
      env: { INSECURE_HTTP_PUSH: "true" },
      timeoutMs: 30_000,
    });
    expect(result.code).toBe(1);
    return { kb: Number(/peak-kb=(\d+)/.exec(result.stderr)?.[1]), stderr: result.stderr };
  };
  const short = recordingServer(() => new Response("x".repeat(300), { status: 404 }));
  const endless = await endlessBodyServer("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain", "x");
  const baseline = await peakKb(short.host);
  const flooded = await peakKb(endless.host);
  expect(flooded.stderr).toContain(`error: registry ${endless.host} did not answer GET /v2/ as a registry: HTTP 404 Not Found: ${"x".repeat(197)}...\n`);
  expect(flooded.kb - baseline.kb).toBeLessThan(32 * 1024);
  expect(endless.written()).toBeLessThan(64 * 1024 * 1024);
}, 60_000);

test("credentials in a URL-style reference are never echoed", async () => {
  for (const reference of ["https://me:hunter2@reg.example.com/app:1", "me:hunter2@reg.example.com/app:1"]) {
    const result = await runCli([reference], { home: "fresh" });
    expect(result.code).toBe(2);
    expect(result.stderr.split("\n")[0]).toBe(
      "error: a reference cannot carry credentials: set USERNAME_REGISTRY and pipe the password on stdin; expected <host[:port]>/<repository>[:<tag>], e.g. registry.example.com/team/app:1.2",
    );
    expect(result.stderr + result.stdout).not.toContain("hunter2");
  }
});

test("a real registry: chunked and whole uploads, then a re-push that finds every blob by HEAD", async () => {
  const registry = await startDockerRegistry();
  const work = await makeTempDir("transport-e2e-");
  try {
    const archive = await writeClassicDockerArchive(join(work, "image.tar"), makeSampleImage({ bigBytes: 12 * 1024 * 1024 }));
    const ref = `${registry.host}/transport/app:1`;
    const args = ["--chunk-size", "5MiB", "--cache-dir", join(work, "cache"), "--archive", archive.path, ref];
    const env = { USERNAME_REGISTRY: registry.username, INSECURE_HTTP_PUSH: "true" };
    const first = await runCli(args, { home: "fresh", env, stdin: `${registry.password}\n` });
    expect(first.stderr).not.toContain("warning");
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(/: pushed [0-9.]+ MB in 2 chunks/);
    const pulled = await pullAndVerify({ ref, username: registry.username, password: registry.password, tlsVerify: false });
    expect(first.stdout).toBe(`${ref}@${pulled.manifestDigest}\n`);
    const again = await runCli(args, { home: "fresh", env, stdin: `${registry.password}\n` });
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/\n4 blobs: 0 pushed, 4 already present; /);
    expect(again.stdout).toBe(first.stdout);
  } finally {
    await registry.stop();
    await rm(work, { recursive: true, force: true });
  }
}, 120_000);
