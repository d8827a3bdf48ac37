/**
 * Push progress on stderr: a live area redrawn in place on a terminal (one line per blob plus a total),
 * one plain line per event in CI logs, nothing with --quiet. Written by hand rather than with a progress
 * library: see "Libraries, and what is written by hand" in README.md.
 */

import type { BlobUpdate, Phase, PushEvents } from "../push/events.ts";

export type { BlobUpdate, Phase } from "../push/events.ts";

export interface Progress extends PushEvents {
  /** Final redraw; stops timers. The live area stays on screen as the final state. Idempotent. */
  finish(): void;
}

export type ProgressMode = "tty" | "plain" | "quiet";

export interface ProgressOptions {
  /** process.stderr in the CLI. `rows`, when known, keeps the live area within the screen. */
  stream: { write(chunk: string): unknown; columns?: number; rows?: number };
  mode: ProgressMode;
  /** Injectable clock for tests (ms). */
  now?: () => number;
  /** tty throttle, default 100 ms. */
  redrawIntervalMs?: number;
}

const RATE_WINDOW_MS = 5_000; // rates are measured over the last few seconds
const RATE_MIN_SPAN_MS = 500; // below this a rate is noise, so none is shown
const SAMPLE_SPACING_MS = 250; // keeps a window to ~20 samples however often bytes are reported
const REFRESH_MS = 1_000; // a stalled upload's rate and ETA still move
const TERMINAL: ReadonlySet<Phase> = new Set(["pushed", "exists", "failed"]);
const CSI = "\x1b[";

/** "tty" when the stream is a terminal (and TERM is not "dumb"), else "plain"; quiet wins. */
export function chooseMode(stream: { isTTY?: boolean }, quiet: boolean, env: Record<string, string | undefined>): ProgressMode {
  if (quiet) return "quiet";
  return stream.isTTY === true && env.TERM !== "dumb" ? "tty" : "plain";
}

const UNITS: ReadonlyArray<readonly [string, number]> = [
  ["kB", 1],
  ["MB", 1],
  ["GB", 2],
  ["TB", 2],
  ["PB", 2],
];

/** Decimal units like docker: "0 B", "512 B", "1.5 kB", "20.0 MB", "1.29 GB". */
export function formatBytes(n: number): string {
  let value = Number.isFinite(n) && n > 0 ? Math.round(n) : 0;
  if (value < 1000) return `${value} B`;
  let text = "";
  for (const [unit, digits] of UNITS) {
    value /= 1000;
    text = `${value.toFixed(digits)} ${unit}`;
    if (Number(value.toFixed(digits)) < 1000) break; // 999.96 kB rounds to 1000.0: say 1.0 MB
  }
  return text;
}

/** "0:05", "1:02", "1:02:03" (whole seconds, rounded down). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.max(0, Math.floor(seconds));
  const two = (n: number) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/** "12.6/20.0 MB" when both share a unit, else "512 kB/20.0 MB". */
function formatPair(done: number, total: number): string {
  const [a, b] = [formatBytes(done), formatBytes(total)];
  const unit = b.slice(b.indexOf(" "));
  return a.endsWith(unit) ? `${a.slice(0, -unit.length)}/${b}` : `${a}/${b}`;
}

/** Bytes per second over a sliding window. */
class Meter {
  private samples: { t: number; bytes: number }[] = [];

  add(t: number, bytes: number): void {
    const last = this.samples.at(-1);
    if (last && bytes < last.bytes) this.samples = []; // a retry went back: start over
    const before = this.samples.at(-2);
    if (before && t - before.t < SAMPLE_SPACING_MS) this.samples[this.samples.length - 1] = { t, bytes };
    else this.samples.push({ t, bytes });
    this.prune(t);
  }

  rate(now: number): number | undefined {
    this.prune(now);
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || now - first.t < RATE_MIN_SPAN_MS) return undefined;
    return ((last.bytes - first.bytes) * 1000) / (now - first.t);
  }

  /** Keeps one sample at or before the window's start, so the window is always covered. */
  private prune(now: number): void {
    while (this.samples.length > 1 && this.samples[1]!.t <= now - RATE_WINDOW_MS) this.samples.shift();
  }
}

interface Blob {
  id: string;
  phase: Phase;
  digest?: string;
  done: number;
  total?: number;
  chunk?: { index: number; count?: number; confirmed?: boolean };
  note?: string;
  meter: Meter;
  compressedNow: boolean;
  /** A note given before the upload, e.g. "from .cache": where the blob came from. */
  origin?: string;
  uploadDone: number;
  uploadTotal?: number;
  /** The chunk count once the blob's size is final; until then the most chunks seen. */
  chunkCount: number;
  chunkCountKnown: boolean;
  chunksReported: number;
  /** Where the last completed chunk ended: the bytes done before the next chunk's first update. */
  chunkEnd: number;
}

/** What happened, for the plain front-end: a phase change and the chunks completed by one update. */
interface Change {
  phaseChanged: boolean;
  chunksDone: number[];
}

function shortDigest(digest: string | undefined): string {
  return digest ? digest.slice(digest.indexOf(":") + 1, digest.indexOf(":") + 13) : "";
}

/** Control characters in ids or notes would break line-based output. */
function clean(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, " ");
}

function chunksText(blob: Blob): string | undefined {
  return blob.chunkCount > 1 ? `in ${blob.chunkCount} chunks` : undefined;
}

/** "20.0 MB in 4 chunks (compressed now)", "(same layer as layer 3/5)": the end state of a finished blob. */
function outcome(blob: Blob): string {
  const paren = (text: string | undefined) => (text ? `(${text})` : undefined);
  const parts =
    blob.phase === "pushed"
      ? [
          blob.uploadTotal === undefined ? undefined : formatBytes(blob.uploadTotal),
          chunksText(blob),
          paren(blob.note ?? (blob.compressedNow ? "compressed now" : blob.origin)),
        ]
      : [paren(blob.note)];
  return parts.filter(Boolean).join(" ");
}

class Board {
  readonly blobs = new Map<string, Blob>();
  private readonly totalMeter = new Meter();
  readonly started: number;

  constructor(readonly now: () => number) {
    this.started = now();
  }

  apply(id: string, update: BlobUpdate): { blob: Blob; change: Change; created: boolean } {
    const t = this.now();
    let blob = this.blobs.get(id);
    const created = !blob;
    if (!blob) {
      blob = {
        id,
        phase: "waiting",
        done: 0,
        meter: new Meter(),
        compressedNow: false,
        uploadDone: 0,
        chunkCount: 0,
        chunkCountKnown: false,
        chunksReported: 0,
        chunkEnd: 0,
      };
      this.blobs.set(id, blob);
    }
    const phaseChanged = update.phase !== undefined && (created || update.phase !== blob.phase);
    if (update.phase !== undefined && update.phase !== blob.phase) {
      Object.assign(blob, { phase: update.phase, done: 0, total: undefined, chunk: undefined, note: undefined, meter: new Meter() });
      if (update.phase === "compressing") blob.compressedNow = true;
    }
    if (update.digest !== undefined) blob.digest = update.digest;
    if (update.total !== undefined) blob.total = update.total;
    const doneBefore = blob.done;
    if (update.done !== undefined) blob.done = update.done;
    if (update.note !== undefined) {
      blob.note = update.note;
      if (blob.phase === "waiting" || blob.phase === "compressing" || blob.phase === "checking") blob.origin = update.note;
    }
    const previousChunk = blob.chunk?.index ?? 1;
    if (update.chunk !== undefined) blob.chunk = { ...update.chunk };

    const chunksDone: number[] = [];
    if (blob.phase === "uploading") {
      blob.uploadDone = blob.done;
      if (blob.total !== undefined) blob.uploadTotal = blob.total;
      if (blob.chunk) {
        blob.chunkCountKnown = blob.chunk.count !== undefined;
        blob.chunkCount = blob.chunk.count ?? Math.max(blob.chunkCount, blob.chunk.index);
        // A chunk is done when the registry confirmed it, or at the latest when the next one starts
        // (whose first update may already count some of its bytes).
        const last = blob.chunk.confirmed ? blob.chunk.index : blob.chunk.index - 1;
        for (let i = Math.max(previousChunk, blob.chunksReported + 1); i <= last; i++) chunksDone.push(i);
        if (chunksDone.length > 0) blob.chunkEnd = blob.chunk.confirmed || update.chunk === undefined ? blob.done : doneBefore;
      }
    } else if (blob.phase === "pushed") {
      if (update.total !== undefined) blob.uploadTotal = update.total;
      blob.uploadDone = blob.uploadTotal ?? blob.uploadDone;
      blob.chunkCountKnown = true;
      blob.chunkEnd = blob.uploadDone;
      for (let i = blob.chunksReported + 1; blob.chunkCount > 1 && i <= blob.chunkCount; i++) chunksDone.push(i);
    }
    if (chunksDone.length > 0) blob.chunksReported = chunksDone.at(-1)!;
    if (blob.phase === "compressing" || blob.phase === "uploading") blob.meter.add(t, blob.done);
    const uploaded = this.uploaded();
    if (uploaded.total > 0) this.totalMeter.add(t, uploaded.done); // the total rate starts with the first upload
    return { blob, change: { phaseChanged, chunksDone }, created };
  }

  uploaded(): { done: number; total: number } {
    let done = 0;
    let total = 0;
    for (const blob of this.blobs.values()) {
      if (blob.phase !== "uploading" && blob.phase !== "pushed") continue;
      done += blob.uploadDone;
      total += blob.uploadTotal ?? 0;
    }
    return { done, total };
  }

  /** Live lines: every blob (or, with `maxLines`, the ones that are moving first) and the total. */
  lines(maxLines: number): string[] {
    const now = this.now();
    const all = [...this.blobs.values()];
    const idWidth = Math.max(5, ...all.map((b) => Bun.stringWidth(clean(b.id))));
    const pad = (text: string, width: number) => text + " ".repeat(Math.max(0, width - Bun.stringWidth(text)));
    const rate = (bytesPerSecond: number | undefined) => (bytesPerSecond === undefined ? undefined : `${formatBytes(bytesPerSecond)}/s`);

    let shown = all;
    let hidden: string | undefined;
    if (all.length + 1 > maxLines) {
      // Finished blobs leave the screen first, then waiting ones; the order on screen stays the call order.
      const rank = (b: Blob) => (b.phase === "pushed" || b.phase === "exists" ? 2 : b.phase === "waiting" ? 1 : 0);
      const keep = new Set([...all].sort((a, b) => rank(a) - rank(b)).slice(0, Math.max(0, maxLines - 2)));
      shown = all.filter((b) => keep.has(b));
      const gone = all.filter((b) => !keep.has(b));
      const finished = gone.filter((b) => TERMINAL.has(b.phase)).length;
      hidden = `${pad("", idWidth + 13)}  + ${gone.length} more (${finished} finished, ${gone.length - finished} to go)`;
    }

    const lines = shown.map((blob) => {
      const parts: (string | undefined)[] = [`${pad(clean(blob.id), idWidth)} ${pad(shortDigest(blob.digest), 12)}`, pad(blob.phase, 11)];
      if (TERMINAL.has(blob.phase)) {
        parts.push(outcome(blob));
      } else {
        if (blob.phase === "uploading" && blob.chunk && (blob.chunk.count ?? 2) > 1)
          parts.push(`chunk ${blob.chunk.index}${blob.chunk.count === undefined ? "" : `/${blob.chunk.count}`}`);
        if (blob.total !== undefined) parts.push(formatPair(blob.done, blob.total));
        else if (blob.done > 0) parts.push(formatBytes(blob.done));
        const bytesPerSecond = blob.phase === "compressing" || blob.phase === "uploading" ? blob.meter.rate(now) : undefined;
        parts.push(rate(bytesPerSecond));
        if (bytesPerSecond && blob.total !== undefined && blob.done < blob.total) {
          parts.push(`ETA ${formatDuration(Math.ceil((blob.total - blob.done) / bytesPerSecond))}`);
        }
        if (blob.note) parts.push(blob.note);
      }
      return parts.filter(Boolean).join("  ");
    });
    if (hidden) lines.push(hidden);

    const finished = all.filter((b) => TERMINAL.has(b.phase)).length;
    const failed = all.filter((b) => b.phase === "failed").length;
    const { done, total } = this.uploaded();
    lines.push(
      [
        `${pad("total", idWidth + 13)}`,
        `${finished}/${all.length} blobs${failed > 0 ? ` (${failed} failed)` : ""}`,
        total > 0 ? formatPair(done, total) : undefined,
        total > 0 ? rate(this.totalMeter.rate(now)) : undefined,
        formatDuration((now - this.started) / 1000),
      ]
        .filter(Boolean)
        .join("  "),
    );
    return lines.map((line) => clean(line).trimEnd());
  }
}

/** Cuts to `width` terminal cells, so no line wraps and the cursor arithmetic holds. */
function truncate(line: string, width: number): string {
  if (Bun.stringWidth(line) <= width) return line;
  let out = "";
  let used = 0;
  for (const ch of line) {
    const w = Bun.stringWidth(ch);
    if (used + w > width) break;
    out += ch;
    used += w;
  }
  return out;
}

function withNewline(message: string): string {
  return message.endsWith("\n") ? message : `${message}\n`;
}

function plainLine(blob: Blob): string | undefined {
  const size = blob.total === undefined ? undefined : formatBytes(blob.total);
  const note = blob.note ? `(${blob.note})` : undefined;
  switch (blob.phase) {
    case "waiting":
      return undefined; // nothing has happened yet
    case "compressing":
      return ["compressing", size, note].filter(Boolean).join(" ");
    case "checking":
      return ["checking", note].filter(Boolean).join(" ");
    case "uploading": {
      const chunks = chunksText(blob);
      return ["uploading", size, chunks, blob.note === chunks ? undefined : note].filter(Boolean).join(" ");
    }
    case "pushed":
      return ["pushed", outcome(blob)].filter(Boolean).join(" ");
    case "exists":
      return ["already present", outcome(blob)].filter(Boolean).join(" ");
    case "failed":
      return ["failed", outcome(blob)].filter(Boolean).join(" ");
  }
}

function createPlain(stream: ProgressOptions["stream"], board: Board): Progress {
  let finished = false;
  const prefix = (blob: Blob) => clean(blob.digest ? `${blob.id} sha256:${shortDigest(blob.digest)}` : blob.id);
  return {
    update(id, update) {
      if (finished) return;
      const { blob, change } = board.apply(id, update);
      for (const i of change.chunksDone) {
        const done = blob.chunkEnd;
        const of = blob.uploadTotal === undefined ? formatBytes(done) : formatPair(done, blob.uploadTotal);
        stream.write(`${prefix(blob)}: chunk ${i}${blob.chunkCountKnown ? `/${blob.chunkCount}` : ""} done (${of})\n`);
      }
      const line = change.phaseChanged ? plainLine(blob) : undefined;
      if (line) stream.write(`${prefix(blob)}: ${clean(line)}\n`);
    },
    log(message) {
      stream.write(withNewline(message));
    },
    finish() {
      finished = true;
    },
  };
}

function createTty(stream: ProgressOptions["stream"], board: Board, intervalMs: number): Progress {
  let height = 0; // lines of the live area now on screen; the cursor sits on the line below it
  let lastDraw = Number.NEGATIVE_INFINITY;
  let dirty = false;
  let finished = false;
  let timer: ReturnType<typeof setInterval> | undefined;

  /** Moves up over the live area, rewrites it line by line, clears whatever is left below. */
  const frame = (all: boolean): string => {
    const columns = Math.max(20, stream.columns || 80);
    const rows = all || !stream.rows ? Number.POSITIVE_INFINITY : Math.max(3, stream.rows - 1);
    const lines = board.blobs.size > 0 ? board.lines(rows) : [];
    let out = height > 0 ? `${CSI}${height}A` : "";
    // One cell short of the width: some terminals wrap as soon as the last column is written.
    for (const line of lines) out += `${CSI}2K${truncate(line, columns - 1).trimEnd()}\n`;
    if (lines.length < height) out += `${CSI}J`;
    height = lines.length;
    lastDraw = board.now();
    dirty = false;
    return out;
  };
  const draw = () => {
    const out = frame(false);
    if (out) stream.write(out);
  };

  return {
    update(id, update) {
      if (finished) return;
      const { change, created } = board.apply(id, update);
      dirty = true;
      if (created || change.phaseChanged || board.now() - lastDraw >= intervalMs) draw();
      // Flushes the last throttled update and keeps rates and elapsed time moving; never holds the process.
      if (!timer) {
        timer = setInterval(() => {
          if (dirty || board.now() - lastDraw >= REFRESH_MS) draw();
        }, intervalMs);
        timer.unref();
      }
    },
    log(message) {
      if (finished || height === 0) {
        stream.write(withNewline(message));
        return;
      }
      // Erases the live area row by row: tmux copies the screen into its history on an erase-below from the
      // top-left corner, which is where the area sits once it fills the screen.
      const up = `${CSI}${height}A`;
      const clear = up + `${CSI}2K\n`.repeat(height) + up;
      height = 0;
      stream.write(clear + withNewline(message) + frame(false));
    },
    finish() {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      timer = undefined;
      const out = frame(true);
      if (out) stream.write(out);
    },
  };
}

const quietProgress = (stream: ProgressOptions["stream"]): Progress => ({
  update() {},
  log(message) {
    if (message.startsWith("error:")) stream.write(withNewline(message));
  },
  finish() {},
});

export function createProgress(options: ProgressOptions): Progress {
  if (options.mode === "quiet") return quietProgress(options.stream);
  const board = new Board(options.now ?? Date.now);
  return options.mode === "tty" ? createTty(options.stream, board, options.redrawIntervalMs ?? 100) : createPlain(options.stream, board);
}
