/**
 * Errors that carry the message a user should read. index.ts maps them to exit codes:
 * UsageError -> 2 (the command line is wrong), PushError -> 1 (the push failed).
 */
export class UsageError extends Error {
  override readonly name: string = "UsageError";
  /** The usage text of the command the error is about, when it is not the push's (`prune`'s). */
  readonly usage?: string;
  constructor(message: string, usage?: string) {
    super(message);
    if (usage !== undefined) this.usage = usage;
  }
}

export class PushError extends Error {
  override readonly name: string = "PushError";
}

/** The registry answered with a status we cannot continue from. */
export class RegistryError extends PushError {
  constructor(
    message: string,
    readonly status: number,
    readonly code?: string,
  ) {
    super(message);
  }
}

/** Ctrl-C or SIGTERM: the run stops, cleans up, and exits 130 like any interrupted command. */
export class Interrupted extends PushError {
  override readonly name = "Interrupted";
  constructor(readonly signal: string) {
    super(`interrupted by ${signal}: open upload sessions were cancelled and temporary files removed`);
  }
}
