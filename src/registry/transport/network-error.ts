import { PushError } from "../../errors.ts";
import { attemptsText } from "../retry.ts";

/**
 * A request that got no answer (refused, reset, cut, idle), or a streamed answer that broke off: the
 * caller may resume or retry. `reason` is the plain explanation without the request's name.
 */
export class NetworkError extends PushError {
  constructor(
    what: string,
    readonly reason: string,
    readonly attempts: number,
    /** `scheme://host[:port]` that did not answer. */
    readonly origin?: string,
    /** Whether the request was one that retries: then the message says how many attempts were made. */
    retried = attempts > 1,
  ) {
    super(`${what}: ${reason}${retried ? ` (gave up after ${attemptsText(attempts)})` : ""}`);
  }
}
