/**
 * A request that got no answer, in the tool's own words. Bun's messages ("ECONNRESET: The socket
 * connection was closed unexpectedly. For more information, pass `verbose: true` ...", "Is the
 * computer able to access the url?") speak to developers of Bun programs; a user needs to know which
 * host failed and how.
 */
import { IdleTimeout } from "./idle-watch.ts";

export type FailureKind = "refused" | "reset" | "idle" | "timeout" | "unreachable" | "dns" | "tls" | "certificate" | "malformed" | "other";

/** Why one attempt got no answer, and whether another attempt could get one. */
export class ConnectionFailure extends Error {
  constructor(
    readonly reason: string,
    readonly kind: FailureKind,
    readonly retryable: boolean,
    readonly origin: string,
    options?: { cause?: unknown },
  ) {
    super(reason, options);
  }
}

const CA_HINT = "if the registry is yours, trust its CA with NODE_EXTRA_CA_CERTS=<ca.pem>";

/** Explains a fetch rejection (or our idle timeout) for a request to `url`. */
export function connectionFailure(error: unknown, url: string): ConnectionFailure {
  const { origin, hostname } = new URL(url);
  const make = (reason: string, kind: FailureKind, retryable = true) => new ConnectionFailure(reason, kind, retryable, origin, { cause: error });
  if (error instanceof IdleTimeout) return make(error.message, "idle");
  const code = String((error as { code?: unknown } | undefined)?.code ?? "");
  switch (code) {
    case "ECONNREFUSED":
    case "ConnectionRefused":
      return make(`connection refused by ${origin}`, "refused");
    case "ECONNRESET":
    case "EPIPE":
    case "ECONNABORTED":
    case "ConnectionClosed":
    case "ERR_SOCKET_CLOSED":
      return make(`${origin} closed the connection unexpectedly`, "reset");
    case "ENOTFOUND":
    case "EAI_NONAME":
    case "EAI_NODATA":
      // The name does not exist: asking again gets the same answer.
      return make(`cannot find the host ${hostname} (DNS lookup failed)`, "dns", false);
    case "EAI_AGAIN":
      return make(`cannot find the host ${hostname} (DNS lookup failed for now)`, "dns");
    case "ETIMEDOUT":
    case "UND_ERR_CONNECT_TIMEOUT":
      return make(`connecting to ${origin} timed out`, "timeout");
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return make(`${origin} is unreachable (no route to it)`, "unreachable");
    case "Malformed_HTTP_Response":
      return make(`${origin} sent a malformed HTTP answer`, "malformed");
  }
  // Retrying cannot make a certificate trusted, nor teach a server TLS.
  const certificate = certificateProblem(code, origin, hostname);
  if (certificate) return make(certificate, "certificate", false);
  if (code === "EPROTO" || /^ERR_SSL|^ERR_TLS|TLS/.test(code)) {
    return make(`the TLS handshake with ${origin} failed (does it speak https on that port?)`, "tls", false);
  }
  // Bun's messages may quote the URL, pre-signed query and all: show only the code or the error's name.
  const name = code || (error instanceof Error ? error.name : "") || "unknown error";
  return make(`the connection to ${origin} failed (${name.replace(/[^\w.-]/g, "")})`, "other");
}

function certificateProblem(code: string, origin: string, hostname: string): string | undefined {
  const of = `the TLS certificate of ${origin}`;
  switch (code) {
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
      return `${of} is self-signed and not trusted: ${CA_HINT}`;
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "CERT_UNTRUSTED":
      return `${of} is signed by an authority this machine does not trust: ${CA_HINT}`;
    case "CERT_HAS_EXPIRED":
      return `${of} has expired (or this machine's clock is wrong)`;
    case "CERT_NOT_YET_VALID":
      return `${of} is not valid yet (or this machine's clock is wrong)`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
    case "HOSTNAME_MISMATCH":
      return `${of} was not issued for the name ${hostname}`;
  }
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) return `${of} is not trusted (${code}): ${CA_HINT}`;
  return undefined;
}
