/**
 * Each way a connection can fail gets a plain message naming the host, in the tool's words (never
 * Bun's "ECONNRESET: The socket connection was closed unexpectedly. For more information, pass
 * `verbose: true` ..."), with the attempts counted in correct English.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Logger } from "../../src/log.ts";
import { messageOf, testClient, type TestClientOptions } from "../support/scripted-registry.ts";
import { closeAll, closedPort, resettingServer, selfSignedHttpsServer, silentServer } from "../support/transport-servers.ts";

afterEach(closeAll);

/** One retry unless a test says otherwise. */
const client = (host: string, options: TestClientOptions = {}) => testClient(host, { retries: 1, ...options });

describe("connection failures, in plain words naming the host", () => {
  test("refused: nothing listens on the port", async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    expect(await messageOf(client(host).send("GET", "/v2/"))).toBe(`GET /v2/: connection refused by http://${host} (gave up after 2 attempts)`);
  });

  test("one attempt is one attempt (--retries 0)", async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    expect(await messageOf(client(host, { retries: 0 }).send("GET", "/v2/"))).toBe(`GET /v2/: connection refused by http://${host} (gave up after 1 attempt)`);
  });

  test("reset: the server destroys the socket as the request arrives; each retry is reported", async () => {
    const host = await resettingServer();
    const warnings: string[] = [];
    const log: Logger = { info: () => undefined, warn: (message) => warnings.push(message) };
    expect(await messageOf(client(host, { log }).send("HEAD", "/v2/r/blobs/sha256:x", { what: "layer 1/1" }))).toBe(
      `layer 1/1: http://${host} closed the connection unexpectedly (gave up after 2 attempts)`,
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      new RegExp(`^layer 1/1: http://${host.replace(/\./g, "\\.")} closed the connection unexpectedly; retrying in 0\\.0 s \\(attempt 2 of 2\\)$`),
    );
  });

  test("timeout: the server accepts and never answers", async () => {
    const silent = await silentServer();
    expect(await messageOf(client(silent.host, { retries: 0, idleTimeoutMs: 500 }).send("GET", "/v2/"))).toBe(
      `GET /v2/: no progress for 1 s on the connection to http://${silent.host} (gave up after 1 attempt)`,
    );
    expect(silent.connections()).toBe(1);
  });

  test("DNS: a host that cannot exist, not retried", async () => {
    const warnings: string[] = [];
    const log: Logger = { info: () => undefined, warn: (message) => warnings.push(message) };
    expect(await messageOf(client("registry.invalid:5000", { log }).send("GET", "/v2/"))).toBe(
      "GET /v2/: cannot find the host registry.invalid (DNS lookup failed)",
    );
    expect(warnings).toEqual([]);
  });

  test("TLS: a self-signed certificate is named, with the way to trust it, and not retried", async () => {
    const host = await selfSignedHttpsServer();
    expect(await messageOf(client(host, { insecure: false }).send("GET", "/v2/"))).toBe(
      `GET /v2/: the TLS certificate of https://${host} is self-signed and not trusted: if the registry is yours, trust its CA with NODE_EXTRA_CA_CERTS=<ca.pem>`,
    );
  });

  test("ping says which host it cannot reach", async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    expect(await messageOf(client(host).ping())).toBe(`cannot reach the registry: connection refused by http://${host} (gave up after 2 attempts)`);
  });

  test("INSECURE_HTTP_PUSH against a TLS port that drops plain http: the registry speaks https", async () => {
    const host = await selfSignedHttpsServer();
    expect(await messageOf(client(host).ping())).toBe(
      `registry ${host} answers over https, not plain http: unset INSECURE_HTTP_PUSH (and drop --insecure) to push to it`,
    );
  });
});
