/**
 * Errors that carry the message a user should read. index.ts maps them to exit codes:
 * UsageError -> 2 (the command line is wrong), PushError -> 1 (the push failed).
 */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export class PushError extends Error {
  override readonly name = "PushError";
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
