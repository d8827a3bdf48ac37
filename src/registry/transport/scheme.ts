/**
 * http or https. The scheme is the user's choice (INSECURE_HTTP_PUSH / --insecure), never guessed:
 * a wrong guess would send the password in clear. When the chosen scheme fails, the other one is
 * probed, with no credentials, only to say which setting to change.
 */
import { readBounded } from "./bounded.ts";

/** `https://host[:port]`, or `http://` when insecure. */
export function baseUrl(host: string, insecure: boolean): string {
  return `${insecure ? "http" : "https"}://${host}`;
}

/**
 * Whether the host speaks registry over plain http. Only an answer that looks like a registry's
 * counts: a TLS server answering http with 400, or a port-80 redirector, must not make us suggest
 * sending the password in clear.
 */
export async function answersPlainHttp(host: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const response = await probe(`http://${host}/v2/`, {}, timeoutMs, signal);
  return response !== undefined && (response.headers.has("docker-distribution-api-version") || response.status === 200 || response.status === 401);
}

/** Whether the host answers https at all (any status, any certificate): then http was the wrong choice. */
export async function answersHttps(host: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  return (await probe(`https://${host}/v2/`, { tls: { rejectUnauthorized: false } }, timeoutMs, signal)) !== undefined;
}

/** What Go's net/http and nginx answer to plain http on a TLS port. */
export function isHttpToHttpsAnswer(status: number, body: string): boolean {
  return status === 400 && /HTTP request to an HTTPS server|plain HTTP request was sent to HTTPS port/i.test(body);
}

async function probe(url: string, extra: Record<string, unknown>, timeoutMs: number, signal?: AbortSignal): Promise<Response | undefined> {
  const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
  try {
    const init = { redirect: "manual", signal: AbortSignal.any(signals), ...extra };
    const response = await fetch(url, init as RequestInit);
    // Only the status and headers matter; a few bytes keep the connection reusable, the rest are dropped.
    await readBounded(response.body, 4096).catch(() => undefined);
    return response;
  } catch {
    return undefined;
  }
}
