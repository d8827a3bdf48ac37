/**
 * What the pusher tells whoever watches it (the terminal renderer in src/cli/, a test): one line of
 * state per blob, and messages. Kept here, below the renderer, so the push runs without a terminal.
 */

export type Phase = "waiting" | "compressing" | "checking" | "uploading" | "pushed" | "exists" | "failed";

export interface BlobUpdate {
  phase?: Phase;
  /** "sha256:<hex>" once known; shown short (first 12 hex). */
  digest?: string;
  /** Bytes done in the current phase (compressing: input bytes read; uploading: bytes handed to the registry, over all chunks). */
  done?: number;
  /** Bytes of the current phase. */
  total?: number;
  /** 1-based chunk being uploaded, when chunked; `count` only once the blob's size is final. */
  chunk?: { index: number; count?: number; confirmed?: boolean };
  /** Short free text, e.g. "from .cache", "in 4 chunks", "same layer as layer 3/5". */
  note?: string;
}

export interface PushEvents {
  /** Creates the blob's line on first use (in call order), then updates it. `id` is a label like "linux/arm64 layer 2/5". */
  update(id: string, update: BlobUpdate): void;
  /** A message (warnings, events) printed above the live lines on a terminal, as its own line otherwise. */
  log(message: string): void;
}

export const silentEvents: PushEvents = { update: () => {}, log: () => {} };
