import { describe, expect, test } from "bun:test";
import { Authenticator, mergeScopes, parseChallenge } from "../../src/registry/auth.ts";

describe("parseChallenge", () => {
  test("Bearer with quoted values holding commas", () => {
    expect(parseChallenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull,push",error="invalid_token"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.io/token", service: "reg.io", scope: "repository:a/b:pull,push", error: "invalid_token" },
    });
  });
  test("Basic, bare values, nothing", () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: "basic", params: { realm: "Registry Realm" } });
    expect(parseChallenge("Bearer realm=https://a/t, service=x")?.params).toEqual({ realm: "https://a/t", service: "x" });
    expect(parseChallenge(null)).toBeUndefined();
  });
});

test("mergeScopes joins the actions of one resource, in any order", () => {
  expect(mergeScopes(["repository:a/b:pull,push", "repository:a/b:push,pull", "repository:c:pull"])).toEqual(["repository:a/b:pull,push", "repository:c:pull"]);
});

/** A token service that counts its calls and answers with numbered tokens. */
function tokenService(expiresIn = 300, status = 200) {
  const calls: { url: string; authorization?: string }[] = [];
  const fetchToken = async (url: string, headers: Record<string, string>) => {
    calls.push({ url, authorization: headers.Authorization });
    return Response.json({ token: `t${calls.length}`, expires_in: expiresIn }, { status });
  };
  return { calls, fetchToken };
}

const CHALLENGE = 'Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull"';
const credentials = { username: "me", password: "pw" };

describe("Authenticator", () => {
  test("starts with no header; a Basic challenge brings the user's credentials once", async () => {
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", tokenService().fetchToken, true);
    expect(await auth.header()).toBeUndefined();
    expect(await auth.unauthorized('Basic realm="x"', undefined)).toBe(true);
    const basic = `Basic ${btoa("me:pw")}`;
    expect(await auth.header()).toBe(basic);
    // Refused with the credentials themselves: nothing else to try.
    expect(await auth.unauthorized('Basic realm="x"', basic)).toBe(false);
  });

  test("a Basic challenge without credentials cannot be answered", async () => {
    const auth = new Authenticator(undefined, "repository:a/b:pull,push", tokenService().fetchToken, true);
    expect(await auth.unauthorized('Basic realm="x"', undefined)).toBe(false);
  });

  test("a Bearer challenge fetches a token for the push scope with the credentials", async () => {
    const service = tokenService();
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", service.fetchToken, true);
    expect(await auth.unauthorized(CHALLENGE, undefined)).toBe(true);
    expect(await auth.header()).toBe("Bearer t1");
    const url = new URL(service.calls[0]!.url);
    expect(url.origin + url.pathname).toBe("https://auth.io/token");
    expect(url.searchParams.get("service")).toBe("reg.io");
    expect(url.searchParams.getAll("scope")).toEqual(["repository:a/b:pull,push"]);
    expect(service.calls[0]!.authorization).toBe(`Basic ${btoa("me:pw")}`);
  });

  test("a token refused mid-push (invalid_token) is renewed; a request that raced a renewal just retries", async () => {
    const service = tokenService();
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", service.fetchToken, true);
    await auth.unauthorized(CHALLENGE, undefined);
    expect(await auth.unauthorized(`${CHALLENGE},error="invalid_token"`, "Bearer t1")).toBe(true);
    expect(await auth.header()).toBe("Bearer t2");
    expect(await auth.unauthorized(`${CHALLENGE},error="invalid_token"`, "Bearer t1")).toBe(true);
    expect(service.calls).toHaveLength(2);
  });

  test("a token is renewed before it expires", async () => {
    let now = 0;
    const service = tokenService(60);
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", service.fetchToken, true, () => now);
    await auth.unauthorized(CHALLENGE, undefined);
    now = 45_000;
    expect(await auth.header()).toBe("Bearer t1");
    now = 51_000;
    expect(await auth.header()).toBe("Bearer t2");
  });

  test("credentials never go in clear to an http realm from an https registry", async () => {
    const service = tokenService();
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", service.fetchToken, true);
    await auth.unauthorized('Bearer realm="http://auth.io/token",service="s"', undefined);
    expect(service.calls[0]!.authorization).toBeUndefined();
  });

  test("a token service that refuses the password says so", async () => {
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", tokenService(300, 401).fetchToken, true);
    await expect(auth.unauthorized(CHALLENGE, undefined)).rejects.toThrow(
      'the token service https://auth.io rejected the username "me" or its password (HTTP 401)',
    );
    const anonymous = new Authenticator(undefined, "repository:a/b:pull,push", tokenService(300, 401).fetchToken, true);
    await expect(anonymous.unauthorized(CHALLENGE, undefined)).rejects.toThrow("requires authentication: set USERNAME_REGISTRY");
  });
  test("a realm's own user:password part is dropped, and a realm that is not http(s) is refused", async () => {
    const service = tokenService();
    const auth = new Authenticator(credentials, ["repository:a/b:pull"], service.fetchToken, true);
    await auth.unauthorized('Bearer realm="https://evil:x@auth.io/token",service="s"', undefined);
    expect(service.calls[0]!.url).toBe("https://auth.io/token?service=s&scope=repository%3Aa%2Fb%3Apull");
    await expect(auth.unauthorized('Bearer realm="file:///etc/passwd"', undefined)).rejects.toThrow(
      "the registry named a token service that is not http(s): file:",
    );
  });

  test("a token that could not go in a header is no token", async () => {
    const auth = new Authenticator(credentials, "repository:a/b:pull,push", async () => Response.json({ token: "t\r\nX-Injected: 1" }), true);
    await expect(auth.unauthorized(CHALLENGE, undefined)).rejects.toThrow("the token service https://auth.io answered HTTP 200 without a token");
  });
});
