import { describe, expect, test } from "bun:test";
import { describeFailure } from "../../src/registry/failure.ts";

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
    const { text } = describeFailure(403, "Forbidden", "application/json", '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}');
    expect(text).toBe("HTTP 403 DENIED: requested access to the resource is denied (the user may not push to this repository (a read-only user?))");
  });

  test("JSON that is not the errors shape falls back to status text", () => {
    expect(describeFailure(404, "Not Found", "application/json", '{"other":1}').text).toBe('HTTP 404 Not Found: {"other":1}');
  });
});
