/**
 * The transport is a stack of round trips, each layer one concern wrapping the next (as
 * go-containerregistry's `remote/transport` stacks `http.RoundTripper`s):
 *
 *   authorize -> retrying -> followRedirects -> wire
 *
 * `wire` does one HTTP exchange under the idle watch and reads the answer with a bound; the layers
 * above it never touch sockets.
 */
import type { RequestBody } from "./body.ts";
import type { ConnectionFailure } from "./connection-errors.ts";

export interface TransportRequest {
  method: string;
  /** Absolute. */
  url: string;
  headers: Record<string, string>;
  body?: RequestBody;
  /** Names the request in messages, e.g. `layer 2/5 sha256:...: chunk 3/7`. */
  what: string;
  /** A request that moves no byte for this long is abandoned. */
  idleTimeoutMs: number;
  /** The run's abort signal; absent for cleanup requests that must go out after an abort. */
  signal?: AbortSignal;
  onProgress?: (sent: number) => void;
  /** Whether transient failures are retried here (false: the caller resumes by itself). */
  retry: boolean;
  /** Leave a successful answer's body unread, for the caller to stream. */
  stream: boolean;
  /** The most of a successful answer's body read here; past it the request fails. */
  maxBodyBytes: number;
  /** Called once, after the first attempt got no answer; may throw a better explanation (ping's scheme hints). */
  afterFirstFailure?: (failure: ConnectionFailure) => Promise<void>;
}

/** Resolves with an answer (any status) or rejects: ConnectionFailure, PushError, or an abort reason. */
export type RoundTrip = (request: TransportRequest) => Promise<Response>;
