/** Where progress messages and warnings go; the CLI routes them through its progress display on stderr. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

export const silentLogger: Logger = { info: () => {}, warn: () => {} };
