import nodeFetch from "node-fetch";
import { PushError, RegistryError } from "./errors.ts";
import { describeFailure } from "./registry-errors.ts";

export interface Credentials {
  username: string;
  password: string;
}

export interface ClientOptions {
  /** `host[:port]` of the registry. */
  host: string;
  /** Plain http instead of https (INSECURE_HTTP_PUSH). */
  insecure: boolean;
  credentials?: Credentials;
  /** Aborts every request in flight, e.g. when another blob already failed. */
  signal?: AbortSignal;
}

export type Body = Blob | Uint8Array | string;

export interface SendOptions {
  headers?: Record<string, string>;
  body?: Body;
}

// Bun serves node-fetch from its native fetch; this only bridges node-fetch's own type declarations.
const fetch = nodeFetch as unknown as typeof globalThis.fetch;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * Reads a response we only need the headers of to its end, so its connection can be reused. (Bun's
 * node-fetch gives `body` as a Node stream, which has no `cancel`.)
 */
export async function drain(response: Response): Promise<void> {
  await response.arrayBuffer().catch(() => undefined);
}

/**
 * One registry, one scheme, one set of credentials. Every request goes through `send`, which resolves
 * relative `Location`s, follows redirects itself so `Authorization` never travels to another host
 * (storage back ends hand out pre-signed URLs), and turns network failures into messages.
 */
export class RegistryClient {
  readonly base: string;
  private readonly authorization?: string;

  constructor(private readonly options: ClientOptions) {
    this.base = `${options.insecure ? "http" : "https"}://${options.host}`;
    const { credentials } = options;
    if (credentials) {
      this.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
    }
  }

  /** An absolute URL for a path or a `Location` the registry gave (which may be relative). */
  url(target: string): string {
    return new URL(target, this.base).toString();
  }

  async send(method: string, target: string, options: SendOptions = {}): Promise<Response> {
    let url = this.url(target);
    let body = options.body;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...options.headers };
      if (this.authorization && new URL(url).origin === new URL(this.base).origin) {
        headers.Authorization = this.authorization;
      }
      const response = await this.fetch(url, { method, headers, body, redirect: "manual", signal: this.options.signal });
      const location = response.headers.get("location");
      if (!REDIRECTS.has(response.status) || !location || method === "POST" || hop >= 5) return response;
      await drain(response);
      url = new URL(location, url).toString();
      if (response.status === 303) {
        method = "GET";
        body = undefined;
      }
    }
  }

  /**
   * `GET /v2/`: proves the scheme, the host and the credentials before any heavy work, and explains
   * each way that can fail.
   */
  async ping(): Promise<void> {
    const { host, credentials, insecure } = this.options;
    let response: Response;
    try {
      response = await this.send("GET", "/v2/");
    } catch (error) {
      if (!insecure && (await this.answersPlainHttp())) {
        throw new PushError(
          `registry ${host} answers over plain http, not https: set INSECURE_HTTP_PUSH=true to push to it`,
        );
      }
      throw error;
    }
    if (response.ok) {
      await drain(response);
      return;
    }
    const challenge = response.headers.get("www-authenticate") ?? "";
    if (response.status === 401 && /^bearer/i.test(challenge)) {
      await drain(response);
      throw new PushError(`registry ${host} uses token (Bearer) authentication, which this version does not support yet`);
    }
    if (response.status === 401 && !credentials) {
      await drain(response);
      throw new PushError(
        `registry ${host} requires authentication: set USERNAME_REGISTRY=<user> and pipe the password on stdin`,
      );
    }
    if (response.status === 401) {
      await drain(response);
      throw new PushError(`registry ${host} rejected the username "${credentials?.username}" or its password (HTTP 401)`);
    }
    throw await this.failure(response, `registry ${host} did not answer GET /v2/ as a registry`);
  }

  /** A RegistryError describing a response we cannot continue from, with `context` in front. */
  async failure(response: Response, context: string): Promise<RegistryError> {
    const body = await response.text().catch(() => "");
    const failure = describeFailure(response.status, response.statusText, response.headers.get("content-type") ?? "", body);
    return new RegistryError(`${context}: ${failure.text}`, failure.status, failure.code);
  }

  private async fetch(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (error) {
      if (this.options.signal?.aborted) throw this.options.signal.reason ?? error;
      const { code, message } = error as { code?: string; message?: string };
      throw new PushError(`cannot reach ${this.base} (${[code, message].filter(Boolean).join(": ")})`);
    }
  }

  private async answersPlainHttp(): Promise<boolean> {
    try {
      const response = await fetch(`http://${this.options.host}/v2/`, { redirect: "manual", signal: AbortSignal.timeout(5000) });
      await drain(response);
      return true;
    } catch {
      return false;
    }
  }
}
