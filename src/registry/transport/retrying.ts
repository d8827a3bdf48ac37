/**
 * Transient failures are retried with backoff: no answer at all, or 408, 429, 5xx and Cloudflare's
 * 52x. The number of attempts is fixed before the first one, so nothing a server answers can extend it.
 */
import { PushError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { backoffMs, isTransientStatus, parseRetryAfter, type RetryPolicy } from "../retry.ts";
import { ConnectionFailure } from "./connection-errors.ts";
import { NetworkError } from "./network-error.ts";
import type { RoundTrip } from "./types.ts";

export interface RetryingOptions {
  policy: RetryPolicy;
  log: Logger;
  /** Waits, or rejects when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export function retrying(next: RoundTrip, options: RetryingOptions): RoundTrip {
  return async (request) => {
    const retries = request.retry ? options.policy.retries : 0;
    for (let attempt = 1; ; attempt++) {
      let reason: string;
      let retryAfter: number | undefined;
      try {
        const response = await next(request);
        if (!isTransientStatus(response.status) || attempt > retries) return response;
        reason = `HTTP ${response.status}`;
        retryAfter = parseRetryAfter(response.headers.get("retry-after"), Date.now());
      } catch (error) {
        if (!(error instanceof ConnectionFailure)) throw error;
        if (attempt === 1) await request.afterFirstFailure?.(error);
        if (!error.retryable) throw new PushError(`${request.what}: ${error.reason}`);
        reason = error.reason;
        if (attempt > retries) throw new NetworkError(request.what, reason, attempt, error.origin, request.retry);
      }
      const wait = backoffMs(attempt, options.policy, retryAfter);
      options.log.warn(`${request.what}: ${reason}; retrying in ${(wait / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${retries + 1})`);
      await options.sleep(wait, request.signal);
    }
  };
}
