/**
 * Credentials go to the registry and the token realm its own 401 names, nowhere else (issue 9), and
 * no server can keep a request going round 401 -> new token -> 401, or redirect it forever.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { basicHeader, messageOf, testClient } from "../support/scripted-registry.ts";
import { closeAll, recordingServer } from "../support/transport-servers.ts";

afterEach(closeAll);

const credentials = { username: "me", password: "pw-secret" };
const BASIC = basicHeader(credentials);

const client = (host: string) => testClient(host, { credentials, retries: 1 });

/** Storage on another origin that asks for credentials its own way. */
function foreignStorage(challenge: (host: string) => string) {
  let host = "";
  const server = recordingServer((request) =>
    new URL(request.url).pathname === "/token"
      ? Response.json({ token: "stolen", expires_in: 300 })
      : new Response("denied", { status: 401, headers: { "WWW-Authenticate": challenge(host) } }),
  );
  host = server.host;
  return server;
}

/** A registry with Basic auth whose blob GET redirects to `storage`. */
function basicRegistry(storage: string) {
  return recordingServer((request) => {
    if (request.headers.get("authorization") !== BASIC) return new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } });
    const path = new URL(request.url).pathname;
    if (path.startsWith("/v2/r/blobs/")) return new Response(null, { status: 307, headers: { Location: `http://${storage}/bucket/blob?sig=abc` } });
    return new Response(null, { status: 200 });
  });
}

/** A registry with token auth at its own token service. */
function tokenRegistry() {
  let issued = 0;
  const tokens = recordingServer(() => Response.json({ token: `t${++issued}`, expires_in: 300 }));
  const registry = recordingServer((request) =>
    request.headers.get("authorization")?.startsWith("Bearer t")
      ? new Response(null, { status: 200 })
      : new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="reg"` } }),
  );
  return { tokens, registry };
}

describe("credentials only for the registry", () => {
  for (const [scheme, challenge] of [
    ["Basic", () => 'Basic realm="storage"'],
    ["Bearer", (host: string) => `Bearer realm="http://${host}/token",service="storage"`],
  ] as const) {
    test(`a redirect to storage answering 401 with its own ${scheme} challenge gets nothing`, async () => {
      const storage = foreignStorage(challenge);
      const registry = basicRegistry(storage.host);
      const c = client(registry.host);
      await c.ping();
      const response = await c.send("GET", "/v2/r/blobs/sha256:abc", { what: "layer 1/1" });
      expect(response.status).toBe(401);
      // The storage saw exactly one request, bare: no password, no second try, no token request.
      expect(storage.seen.map((r) => [r.method, r.path, r.authorization])).toEqual([["GET", "/bucket/blob?sig=abc", undefined]]);
      expect(registry.seen.filter((r) => r.path === "/v2/r/blobs/sha256:abc").map((r) => r.authorization)).toEqual([BASIC]);
      expect((await c.failure(response, "layer 1/1")).message).toBe(
        `layer 1/1: HTTP 401 Unauthorized: denied from http://${storage.host}, which is not the registry: credentials go only to http://${registry.host} and the token service it names`,
      );
    });

    test(`an absolute Location on another host answering 401 with a ${scheme} challenge gets nothing`, async () => {
      const storage = foreignStorage(challenge);
      const registry = basicRegistry(storage.host);
      const c = client(registry.host);
      await c.ping();
      const response = await c.send("PATCH", `http://${storage.host}/upload/1`, { body: "abc", what: "layer 1/1: chunk 1/1" });
      expect(response.status).toBe(401);
      expect(storage.seen.map((r) => [r.method, r.path, r.authorization])).toEqual([["PATCH", "/upload/1", undefined]]);
    });
  }

  test("the registry's own Bearer challenge sends the user to its realm, once, and uses the token", async () => {
    const { tokens, registry } = tokenRegistry();
    await client(registry.host).ping();
    expect(tokens.seen.map((r) => r.authorization)).toEqual([BASIC]);
    expect(registry.seen.map((r) => r.authorization)).toEqual([undefined, "Bearer t1"]);
  });

  test("a same-origin redirect keeps Authorization", async () => {
    const registry = recordingServer((request) => {
      if (request.headers.get("authorization") !== BASIC) return new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } });
      return new URL(request.url).pathname === "/v2/a"
        ? new Response(null, { status: 302, headers: { Location: "/v2/b" } })
        : new Response(null, { status: 200 });
    });
    const response = await client(registry.host).send("GET", "/v2/a");
    expect(response.status).toBe(200);
    expect(registry.seen.map((r) => [r.path, r.authorization])).toEqual([
      ["/v2/a", undefined],
      ["/v2/a", BASIC],
      ["/v2/b", BASIC],
    ]);
  });
});

describe("loops a server cannot keep going", () => {
  test("401 -> new token -> 401: two new tokens at most, then the 401 is the answer", async () => {
    let issued = 0;
    const tokens = recordingServer(() => Response.json({ token: `t${++issued}`, expires_in: 300 }));
    const registry = recordingServer(
      () =>
        new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="reg",error="invalid_token"` } }),
    );
    const response = await client(registry.host).send("HEAD", "/v2/r/blobs/sha256:x");
    expect(response.status).toBe(401);
    expect(tokens.seen).toHaveLength(2);
    expect(registry.seen.map((r) => r.authorization)).toEqual([undefined, "Bearer t1", "Bearer t2"]);
  });

  test("a Basic 401 to the password itself is final", async () => {
    const registry = recordingServer(() => new Response(null, { status: 401, headers: { "WWW-Authenticate": 'Basic realm="r"' } }));
    expect(await messageOf(client(registry.host).ping())).toBe(`registry ${registry.host} rejected the username "me" or its password (HTTP 401)`);
    expect(registry.seen.map((r) => r.authorization)).toEqual([undefined, BASIC]);
  });

  test("redirects stop after 5 hops, naming only the origin of the last", async () => {
    let hops = 0;
    const registry = recordingServer(() => new Response(null, { status: 302, headers: { Location: `/v2/next/${++hops}?X-Amz-Signature=secret` } }));
    expect(await messageOf(client(registry.host).send("GET", "/v2/r/blobs/sha256:x", { what: "layer 1/1" }))).toBe(
      `layer 1/1: more than 5 redirects (the last to http://${registry.host})`,
    );
    expect(registry.seen).toHaveLength(6);
  });

  test("303 turns the request into a GET without the body or its headers", async () => {
    const registry = recordingServer((request) =>
      request.method === "PUT" ? new Response(null, { status: 303, headers: { Location: "/v2/r/done" } }) : new Response("ok", { status: 200 }),
    );
    const response = await client(registry.host).send("PUT", "/v2/r/manifests/1", {
      body: "manifest bytes",
      headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("ok");
    const [put, get] = registry.seen;
    expect([put?.method, put?.path, new TextDecoder().decode(put?.body)]).toEqual(["PUT", "/v2/r/manifests/1", "manifest bytes"]);
    expect([put?.contentType, put?.contentLength]).toEqual(["application/vnd.oci.image.manifest.v1+json", "14"]);
    expect([get?.method, get?.path, get?.body.byteLength, get?.contentType, get?.contentLength]).toEqual(["GET", "/v2/r/done", 0, undefined, undefined]);
  });
});

describe("token service answers", () => {
  function registryWithTokens(tokenAnswer: () => Response) {
    const tokens = recordingServer(tokenAnswer);
    const registry = recordingServer(
      () => new Response(null, { status: 401, headers: { "WWW-Authenticate": `Bearer realm="http://${tokens.host}/token",service="reg"` } }),
    );
    return { tokens, registry };
  }

  test("403: the user may not have that repository", async () => {
    const { tokens, registry } = registryWithTokens(() => new Response("forbidden", { status: 403 }));
    expect(await messageOf(client(registry.host).ping())).toBe(
      `the token service http://${tokens.host} refused user "me" a token for repository:r:pull,push (HTTP 403): may this user access that repository?`,
    );
  });

  test("200 without a token", async () => {
    const { tokens, registry } = registryWithTokens(() => Response.json({ expires_in: 300 }));
    expect(await messageOf(client(registry.host).ping())).toBe(`the token service http://${tokens.host} answered HTTP 200 without a token`);
  });

  test("another refusal quotes the service's words, stripped of control characters", async () => {
    const { tokens, registry } = registryWithTokens(() =>
      Response.json({ errors: [{ code: "UNSUPPORTED", message: "bad \u001b[31mscope\u001b[0m\r\u0007 asked" }] }, { status: 400 }),
    );
    expect(await messageOf(client(registry.host).ping())).toBe(
      `the token service http://${tokens.host} did not issue a token (HTTP 400: UNSUPPORTED: bad scope  asked)`,
    );
  });

  test("a pull-only client asks for the scope it was given", async () => {
    const { tokens, registry } = tokenRegistry();
    await testClient(registry.host, { repository: "src/app", scope: ["repository:src/app:pull"], credentials }).ping();
    expect(new URL(`http://x${tokens.seen[0]?.path}`).searchParams.getAll("scope")).toEqual(["repository:src/app:pull"]);
  });
});
