import { describe, expect, test } from "bun:test";
import { answerExcerpt, describeFailure, suggestChunkSize, tooLargeHint } from "../../src/registry/failure.ts";
import { terminalSafe } from "../../src/registry/sanitize.ts";

describe("describeFailure", () => {
  test("distribution JSON errors show the registry's own code, message and detail", () => {
    const body = JSON.stringify({
      errors: [{ code: "BLOB_UPLOAD_INVALID", message: "blob upload invalid", detail: { reason: "range" } }],
    });
    const failure = describeFailure(400, "Bad Request", "application/json; charset=utf-8", body);
    expect(failure).toEqual({
      status: 400,
      code: "BLOB_UPLOAD_INVALID",
      text: 'HTTP 400 BLOB_UPLOAD_INVALID: blob upload invalid ({"reason":"range"})',
    });
  });

  test("several JSON errors are all shown", () => {
    const body = '{"errors":[{"code":"A","message":"one"},{"code":"B","message":"two"}]}';
    expect(describeFailure(400, "", "application/json", body).text).toBe("HTTP 400 A: one; B: two");
  });

  test("Cloudflare's HTML 413 says the body was too large and suggests --chunk-size", () => {
    const html = "<html><head><title>413 Request Entity Too Large</title></head><body><center>cloudflare</center></body></html>";
    const { text } = describeFailure(413, "Payload Too Large", "text/html", html);
    expect(text).toStartWith("HTTP 413 Payload Too Large: 413 Request Entity Too Large");
    expect(text).toContain("--chunk-size");
    expect(text).not.toContain("<");
  });

  test("HTML 5xx pages give the status and a retry hint, not the page", () => {
    const { text } = describeFailure(522, "", "text/html", "<!DOCTYPE html><html><body>Connection timed out</body></html>");
    expect(text).toBe("HTTP 522 (the registry or its origin failed; try again)");
  });

  test("a plain-text body is shown, shortened", () => {
    const { text } = describeFailure(400, "Bad Request", "text/plain", "Client sent an HTTP request to an HTTPS server.\n");
    expect(text).toBe("HTTP 400 Bad Request: Client sent an HTTP request to an HTTPS server.");
    expect(describeFailure(500, "", "text/plain", "x".repeat(5000)).text.length).toBeLessThan(300);
  });

  test("403 in JSON keeps the registry's words and adds the read-only hint", () => {
    const { text } = describeFailure(
      403,
      "Forbidden",
      "application/json",
      '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}',
    );
    expect(text).toBe("HTTP 403 DENIED: requested access to the resource is denied (the user may not push to this repository (a read-only user?))");
  });

  test("JSON that is not the errors shape falls back to status text", () => {
    expect(describeFailure(404, "Not Found", "application/json", '{"other":1}').text).toBe('HTTP 404 Not Found: {"other":1}');
  });
});

describe("registry text is terminal-safe", () => {
  test("escape sequences, C0 and C1 controls, CR and BEL are gone from messages, codes, details, titles and plain bodies", () => {
    const evil = "a\u001b[31mb\u001b]0;title\u0007c\u001bPdcs\u001b\\d\u009b2Je\rf\u0007g\u0000h\u007fi\u0085j\u202ek";
    const json = JSON.stringify({ errors: [{ code: `X${evil}`, message: evil, detail: evil }] });
    expect(describeFailure(400, "Bad", "application/json", json).text).toBe("HTTP 400 Xabcde fghijk: abcde fghijk (abcde fghijk)");
    expect(describeFailure(502, "", "text/html", `<title>${evil}</title>`).text).toBe("HTTP 502: abcde fghijk (the registry or its origin failed; try again)");
    expect(describeFailure(400, `Bad${evil}`, "text/plain", evil).text).toBe("HTTP 400 Badabcde fghijk: abcde fghijk");
  });

  test("terminalSafe keeps ordinary text, turns line breaks and tabs into spaces", () => {
    expect(terminalSafe("déjà vu — 日本\tok\nnext")).toBe("déjà vu — 日本 ok next");
  });

  test("a long registry message is cut to a short excerpt", () => {
    const json = JSON.stringify({ errors: [{ code: "C", message: "m".repeat(10_000) }, { code: "D" }, { code: "E" }, { code: "F" }, { code: "G" }] });
    expect(describeFailure(400, "", "application/json", json).text).toBe(`HTTP 400 C: ${"m".repeat(197)}...; D; E; and 2 more`);
  });
});

describe("413: a --chunk-size below the refused body", () => {
  test.each([
    [100_000_000, "45MB"], // a 50m nginx limit must not refuse the suggestion
    [104_857_600, "45MB"],
    [200_000_000, "95MB"], // just under Cloudflare's 100 MB
    [23_076_164, "9MB"], // half would be 11 MB, still over a 10m limit
    [12_000_000, "5MiB"], // half is 6 MB: no usual size fits, the 5 MiB part minimum does
    [10_485_760, "5MiB"], // half is 5 MB, below serverless-registry's 5 MiB part minimum
    [5_242_881, "5MiB"],
    [5_242_880, "2MB"], // the body itself was no larger than 5 MiB
    [3_000_000, "1MB"],
    [1_000_000, "488KiB"],
  ])("a refused body of %d bytes suggests --chunk-size %s", (bytes, size) => {
    expect(suggestChunkSize(bytes)).toBe(size);
    expect(tooLargeHint(bytes)).toBe(
      `the request body (${bytes} bytes) was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size ${size}`,
    );
  });

  test("the hint names the refused body's size when the failure knows it", () => {
    const html = "<html><head><title>413 Request Entity Too Large</title></head></html>";
    expect(describeFailure(413, "Payload Too Large", "text/html", html, { bodyBytes: 100_000_000 }).text).toBe(
      "HTTP 413 Payload Too Large: 413 Request Entity Too Large (the request body (100000000 bytes) was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size 45MB)",
    );
    expect(describeFailure(413, "", "text/html", html).text).toEndWith("e.g. --chunk-size 50MB)");
  });
});

describe("describeFailure: hints and edge cases", () => {
  const errors = (...list: unknown[]) => JSON.stringify({ errors: list });

  test.each([
    [401, "HTTP 401 Unauthorized (the registry did not accept the credentials: check USERNAME_REGISTRY and the password piped on stdin)"],
    [403, "HTTP 403 Unauthorized (the user may not push to this repository (a read-only user?))"],
    [416, "HTTP 416 Unauthorized (the registry refused the chunk's byte range)"],
    [429, "HTTP 429 Unauthorized (the registry is rate limiting: wait and try again)"],
    [500, "HTTP 500 Unauthorized (the registry or its origin failed; try again)"],
    [499, "HTTP 499 Unauthorized"],
    [404, "HTTP 404 Unauthorized"],
  ])("a bodiless %d gets its hint", (status, text) => {
    expect(describeFailure(status, "Unauthorized", "text/plain", "")).toEqual({ status, text });
  });

  test("a JSON 413 says the refused size and suggests a --chunk-size; other JSON statuses but 403 get no hint", () => {
    const body = errors({ code: "SIZE_INVALID", message: "too big" });
    expect(describeFailure(413, "", "application/json", body, { bodyBytes: 200_000_000 })).toEqual({
      status: 413,
      code: "SIZE_INVALID",
      text: `HTTP 413 SIZE_INVALID: too big (${tooLargeHint(200_000_000)})`,
    });
    expect(describeFailure(429, "", "application/json", errors({ code: "TOOMANYREQUESTS", message: "slow down" })).text).toBe(
      "HTTP 429 TOOMANYREQUESTS: slow down",
    );
  });

  test("exactly three errors are all shown, with no 'more'", () => {
    expect(describeFailure(400, "", "application/json", errors({ code: "A" }, { code: "B" }, { code: "C" })).text).toBe("HTTP 400 A; B; C");
    expect(describeFailure(400, "", "application/json", errors({ code: "A" }, { code: "B" }, { code: "C" }, { code: "D" })).text).toBe(
      "HTTP 400 A; B; C; and 1 more",
    );
  });

  test("the code is the first error's; an error may have only a message; null fields are absent", () => {
    expect(describeFailure(400, "", "application/json", errors({ message: "no code here" }, { code: "SECOND" }))).toEqual({
      status: 400,
      code: undefined,
      text: "HTTP 400 no code here; SECOND",
    });
    expect(describeFailure(400, "", "application/json", errors({ code: "C", message: null, detail: null })).text).toBe("HTTP 400 C");
    expect(describeFailure(400, "", "application/json", errors({ code: 42, message: { a: 1 } }))).toEqual({
      status: 400,
      code: "42",
      text: 'HTTP 400 42: {"a":1}',
    });
  });

  test("an empty detail, or one that is an empty quoted string, adds nothing", () => {
    expect(describeFailure(400, "", "application/json", errors({ code: "C", detail: "" })).text).toBe("HTTP 400 C");
    expect(describeFailure(400, "", "application/json", errors({ code: "C", detail: '""' })).text).toBe("HTTP 400 C");
    expect(describeFailure(400, "", "application/json", errors({ code: "C", detail: "why" })).text).toBe("HTTP 400 C (why)");
    expect(describeFailure(400, "", "application/json", errors({ code: "C", detail: ["x"] })).text).toBe('HTTP 400 C (["x"])');
  });

  test("an error list that says nothing (nulls, numbers, empty objects) falls back to the status and the body", () => {
    expect(describeFailure(400, "Bad Request", "application/json", errors(null))).toEqual({ status: 400, text: 'HTTP 400 Bad Request: {"errors":[null]}' });
    expect(describeFailure(400, "Bad Request", "application/json", errors(1, "x", {}))).toEqual({
      status: 400,
      text: 'HTTP 400 Bad Request: {"errors":[1,"x",{}]}',
    });
    expect(describeFailure(400, "", "application/json", errors(null, { code: "REAL" }))).toEqual({ status: 400, code: "REAL", text: "HTTP 400 REAL" });
    expect(describeFailure(400, "", "application/json", '{"errors":"none"}').text).toBe('HTTP 400: {"errors":"none"}');
    expect(describeFailure(400, "", "application/json", "null").text).toBe("HTTP 400: null");
  });

  test("the distribution JSON is read whatever the content type says, when the body is a JSON object", () => {
    expect(describeFailure(400, "", "text/plain", errors({ code: "PLAIN" })).text).toBe("HTTP 400 PLAIN");
    expect(describeFailure(400, "", "", ` \n${errors({ code: "SPACED" })}`).text).toBe("HTTP 400 SPACED");
    expect(describeFailure(400, "", "application/vnd.docker+json", errors({ code: "VENDOR" })).text).toBe("HTTP 400 VENDOR");
  });
});

describe("answerExcerpt", () => {
  test("the distribution errors, at most three, without details or a count of the rest", () => {
    const body = JSON.stringify({ errors: [{ code: "A", message: "one", detail: "d" }, { code: "B" }, { message: "three" }, { code: "D" }] });
    expect(answerExcerpt("application/json", body)).toBe("A: one; B; three");
  });

  test("an HTML page's title, or nothing for other HTML (leading spaces too)", () => {
    expect(answerExcerpt("text/html", "<html><head><TITLE>502 Bad Gateway</TITLE></head></html>")).toBe("502 Bad Gateway");
    expect(answerExcerpt("text/html", "<html><title>   </title></html>")).toBeUndefined();
    expect(answerExcerpt("text/html", "<html><body>oops</body></html>")).toBeUndefined();
    expect(answerExcerpt("text/html", "  \n <p>oops</p>")).toBeUndefined();
  });

  test("plain text is shown, even with a < inside; an empty body is nothing", () => {
    expect(answerExcerpt("text/plain", "x < y failed")).toBe("x < y failed");
    expect(answerExcerpt("text/plain", "5")).toBe("5");
    expect(answerExcerpt("text/plain", "  \n ")).toBeUndefined();
  });

  test("Docker Hub's token service {details}: the details; JSON without them as text", () => {
    expect(answerExcerpt("application/json", '{"details":"incorrect username or password"}')).toBe("incorrect username or password");
    expect(answerExcerpt("application/json", '{"details":{"reason":"x"}}')).toBe('{"reason":"x"}');
    expect(answerExcerpt("application/json", '{"details":""}')).toBeUndefined();
    expect(answerExcerpt("application/json", '{"detail":"singular"}')).toBe('{"detail":"singular"}');
    expect(answerExcerpt("application/json", "[1,2]")).toBe("[1,2]");
    expect(answerExcerpt("application/json", "not json")).toBe("not json");
  });
});

describe("suggestChunkSize at the edges", () => {
  test.each([
    [90_000_000, "45MB"], // half is exactly the 45 MB step: it is taken
    [190_000_000, "95MB"],
    [2_000_000, "1MB"], // half is exactly 1 MB
    [1_999_999, "976KiB"],
    [2048, "1KiB"],
    [1, "1KiB"],
  ])("%d bytes refused: --chunk-size %s", (bytes, size) => {
    expect(suggestChunkSize(bytes)).toBe(size);
  });

  test("without the refused size, the hint suggests 50MB", () => {
    expect(tooLargeHint()).toBe(
      "the request body was larger than the registry or a proxy in front of it accepts: pass a smaller --chunk-size (or CHUNK_SIZE), e.g. --chunk-size 50MB",
    );
  });
});
