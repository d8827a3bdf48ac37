/** When and how long to wait before trying a request again. Pure, so it is tested on its own. */
export interface RetryPolicy {
  /** Further attempts after the first. */
  retries: number;
  /** First backoff; doubles every attempt. */
  baseMs: number;
  /** Longest wait between attempts, Retry-After included. */
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 5, baseMs: 500, maxMs: 30_000 };

// 408 timeout, 429 rate limit, 5xx from the registry, 520-524 from Cloudflare's edge when the origin
// misbehaves. Everything else in 4xx is an answer about the request itself: retrying cannot help.
const TRANSIENT = new Set([408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524]);

export function isTransientStatus(status: number): boolean {
  return TRANSIENT.has(status);
}

/** `Retry-After` in seconds or as an HTTP date, as milliseconds from `now`; undefined if absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (!value) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  // Every HTTP-date form names its weekday and month; without letters it is none, though Bun's
  // Date.parse reads "1.5" or "-1" as days of 2001 (a wait of 0: every retry at once).
  if (!/[a-z]/i.test(value)) return undefined;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): the server's Retry-After when given,
 * else exponential backoff with jitter in [half, full] so parallel layers do not retry in lockstep.
 */
export function backoffMs(attempt: number, policy: RetryPolicy, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxMs);
  const ceiling = Math.min(policy.baseMs * 2 ** (attempt - 1), policy.maxMs);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** `1 attempt`, `3 attempts`: for "gave up after ..." messages. */
export function attemptsText(attempts: number): string {
  return `${attempts} attempt${attempts === 1 ? "" : "s"}`;
}
