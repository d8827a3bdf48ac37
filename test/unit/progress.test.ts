import { describe, expect, test } from "bun:test";
import { chooseMode, createProgress, formatBytes, formatDuration, type Progress, type ProgressMode } from "../../src/cli/progress.ts";

const DIGEST_A = `sha256:0123456789ab${"c".repeat(52)}`;
const DIGEST_B = `sha256:fedcba987654${"d".repeat(52)}`;

/** Captures every write; `clock.t` is the injected time in ms. */
function harness(mode: ProgressMode, stream: { columns?: number; rows?: number } = {}, redrawIntervalMs = 100) {
  const writes: string[] = [];
  const clock = { t: 0 };
  const progress = createProgress({
    stream: { ...stream, write: (chunk: string) => writes.push(chunk) },
    mode,
    now: () => clock.t,
    redrawIntervalMs,
  });
  return { progress, writes, clock };
}

/**
 * Two blobs: "layer 1/2" is compressed now and uploaded in 3 chunks at 6.7 MB/s, "config" comes from the
 * cache and is already present. Byte updates come every 100 ms in between.
 */
function script(progress: Progress, clock: { t: number }): void {
  progress.update("layer 1/2", { phase: "waiting" });
  progress.update("config", { phase: "waiting" });
  progress.update("layer 1/2", { phase: "compressing", total: 50_000_000 });
  for (let i = 1; i <= 10; i++) {
    clock.t += 100;
    progress.update("layer 1/2", { done: i * 5_000_000 });
  }
  progress.update("layer 1/2", { phase: "checking", digest: DIGEST_A });
  progress.update("config", { phase: "checking", digest: DIGEST_B, note: "from .cache" });
  progress.update("config", { phase: "exists" });
  progress.update("layer 1/2", { phase: "uploading", total: 20_000_000, chunk: { index: 1, count: 3 } });
  for (const [index, end] of [
    [1, 6_700_000],
    [2, 13_400_000],
    [3, 20_000_000],
  ] as const) {
    const start = end - 6_700_000;
    for (let i = 1; i <= 10; i++) {
      clock.t += 100;
      progress.update("layer 1/2", { done: start + (i * (end - start)) / 10 });
    }
    if (index < 3) progress.update("layer 1/2", { chunk: { index: index + 1, count: 3 } });
    if (index === 1) progress.log("warning: the registry is slow today");
  }
  progress.update("layer 1/2", { phase: "pushed" });
  progress.finish();
}

/**
 * A tiny terminal: prints text, wraps at `width` (counted, since our output must never wrap), and knows the
 * few sequences the progress writes (cursor up, erase line, erase below). Anything else fails the test.
 */
class Screen {
  lines: string[] = [""];
  row = 0;
  col = 0;
  wraps = 0;

  constructor(readonly width: number) {}

  write(data: string): void {
    for (let i = 0; i < data.length; ) {
      if (data[i] === "\x1b") {
        const match = /^\x1b\[(\d*)([AKJ])/.exec(data.slice(i));
        if (!match) throw new Error(`unexpected escape ${JSON.stringify(data.slice(i, i + 8))}`);
        const n = match[1] === "" ? undefined : Number(match[1]);
        if (match[2] === "A") this.row = Math.max(0, this.row - (n ?? 1));
        else if (match[2] === "K" && n === 2) this.lines[this.row] = "";
        else if (match[2] === "J" && (n ?? 0) === 0) {
          this.lines[this.row] = this.line().slice(0, this.col);
          this.lines.length = this.row + 1;
        } else throw new Error(`unexpected escape ${match[0]}`);
        i += match[0].length;
        continue;
      }
      const ch = data[i]!;
      if (ch === "\n") this.newline();
      else if (ch === "\r") this.col = 0;
      else {
        if (this.col >= this.width) {
          this.wraps++;
          this.newline();
        }
        const line = this.line().padEnd(this.col);
        this.lines[this.row] = line.slice(0, this.col) + ch + line.slice(this.col + 1);
        this.col++;
      }
      i++;
    }
  }

  /** What a person sees, without the empty line the cursor waits on. */
  text(): string[] {
    const lines = [...this.lines];
    while (lines.length > 0 && lines.at(-1) === "") lines.pop();
    return lines;
  }

  private line(): string {
    return this.lines[this.row] ?? "";
  }

  private newline(): void {
    this.row++;
    this.col = 0;
    while (this.lines.length <= this.row) this.lines.push("");
  }
}

function replay(writes: string[], width: number): Screen {
  const screen = new Screen(width);
  for (const chunk of writes) screen.write(chunk);
  return screen;
}

describe("formatBytes", () => {
  test.each([
    [0, "0 B"],
    [512, "512 B"],
    [999, "999 B"],
    [1000, "1.0 kB"],
    [1500, "1.5 kB"],
    [999_960, "1.0 MB"],
    [12_600_000, "12.6 MB"],
    [20_000_000, "20.0 MB"],
    [1_290_000_000, "1.29 GB"],
    [5_368_709_120, "5.37 GB"],
    [2.5e12, "2.50 TB"],
    [-5, "0 B"],
    [Number.NaN, "0 B"],
  ])("%p → %p", (n, text) => {
    expect(formatBytes(n)).toBe(text);
  });
});

describe("formatDuration", () => {
  test.each([
    [0, "0:00"],
    [5, "0:05"],
    [59.9, "0:59"],
    [62, "1:02"],
    [3599, "59:59"],
    [3723, "1:02:03"],
    [36_000, "10:00:00"],
    [-3, "0:00"],
    [Number.POSITIVE_INFINITY, "--:--"],
  ])("%p → %p", (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe("chooseMode", () => {
  test.each([
    [true, false, "xterm-256color", "tty"],
    [true, false, undefined, "tty"],
    [false, false, "xterm-256color", "plain"],
    [undefined, false, "xterm", "plain"],
    [true, false, "dumb", "plain"],
    [true, true, "xterm", "quiet"],
    [false, true, "dumb", "quiet"],
  ] as const)("isTTY %p, quiet %p, TERM %p → %p", (isTTY, quiet, term, mode) => {
    expect(chooseMode({ isTTY }, quiet, { TERM: term })).toBe(mode);
  });
});

describe("plain mode", () => {
  test("one line per phase change and per completed chunk; byte updates print nothing", () => {
    const { progress, writes, clock } = harness("plain");
    script(progress, clock);
    expect(writes.join("")).toBe(
      [
        "layer 1/2: compressing 50.0 MB",
        "layer 1/2 sha256:0123456789ab: checking",
        "config sha256:fedcba987654: checking (from .cache)",
        "config sha256:fedcba987654: already present",
        "layer 1/2 sha256:0123456789ab: uploading 20.0 MB in 3 chunks",
        "layer 1/2 sha256:0123456789ab: chunk 1/3 done (6.7/20.0 MB)",
        "warning: the registry is slow today",
        "layer 1/2 sha256:0123456789ab: chunk 2/3 done (13.4/20.0 MB)",
        "layer 1/2 sha256:0123456789ab: chunk 3/3 done (20.0/20.0 MB)",
        "layer 1/2 sha256:0123456789ab: pushed 20.0 MB in 3 chunks (compressed now)",
        "",
      ].join("\n"),
    );
    expect(writes.join("")).not.toMatch(/[\r\x1b]/);
  });

  test("a chunk is reported done where the registry confirmed it, not where the next one's read-ahead is; its count once known", () => {
    const { progress, writes } = harness("plain");
    const CHUNK = 6_291_456;
    // Streamed while compressed: the size (so the count) is known only from the third chunk on.
    progress.update("layer 1/1", { phase: "uploading", note: "in chunks" });
    for (const [index, count] of [
      [1, undefined],
      [2, undefined],
      [3, 4],
      [4, 4],
    ] as const) {
      const start = (index - 1) * CHUNK;
      // The body is read ahead of the wire: the first update of a chunk already counts a MiB of it.
      progress.update("layer 1/1", { done: start + 1_048_576, chunk: { index, count } });
      const end = index === 4 ? 20_006_612 : start + CHUNK;
      if (index === 3) progress.update("layer 1/1", { total: 20_006_612 });
      progress.update("layer 1/1", { done: end, chunk: { index, count, confirmed: true } });
    }
    progress.update("layer 1/1", { phase: "pushed", total: 20_006_612, done: 20_006_612 });
    expect(
      writes
        .join("")
        .split("\n")
        .filter((l) => l.includes(": chunk ")),
    ).toEqual([
      "layer 1/1: chunk 1 done (6.3 MB)",
      "layer 1/1: chunk 2 done (12.6 MB)",
      "layer 1/1: chunk 3/4 done (18.9/20.0 MB)",
      "layer 1/1: chunk 4/4 done (20.0/20.0 MB)",
    ]);
  });

  test("notes: a given note replaces the derived origin; exists and failed carry theirs", () => {
    const { progress, writes } = harness("plain");
    progress.update("layer 1/3", { phase: "checking", digest: DIGEST_A, note: "from .cache" });
    progress.update("layer 1/3", { phase: "uploading", total: 512 });
    progress.update("layer 1/3", { phase: "pushed" });
    progress.update("layer 2/3", { phase: "exists", digest: DIGEST_A, note: "same layer as layer 1/3" });
    progress.update("config", { phase: "failed", note: "413 Payload Too Large" });
    progress.finish();
    progress.update("config", { phase: "uploading" });
    expect(writes).toEqual([
      "layer 1/3 sha256:0123456789ab: checking (from .cache)\n",
      "layer 1/3 sha256:0123456789ab: uploading 512 B\n",
      "layer 1/3 sha256:0123456789ab: pushed 512 B (from .cache)\n",
      "layer 2/3 sha256:0123456789ab: already present (same layer as layer 1/3)\n",
      "config: failed (413 Payload Too Large)\n",
    ]);
  });
});

describe("quiet mode", () => {
  test("prints nothing but error lines", () => {
    const { progress, writes, clock } = harness("quiet");
    script(progress, clock);
    expect(writes).toEqual([]);
    progress.log("error: blob upload failed");
    expect(writes).toEqual(["error: blob upload failed\n"]);
  });
});

describe("tty mode", () => {
  test("redraws in place: each frame moves up exactly over the previous live area", () => {
    const { progress, writes, clock } = harness("tty", { columns: 100 });
    script(progress, clock);
    expect(writes.length).toBeGreaterThan(5);
    let height = 0;
    for (const chunk of writes) {
      if (height === 0) expect(chunk).not.toMatch(/^\x1b\[\d+A/);
      else expect(chunk.startsWith(`\x1b[${height}A`)).toBe(true);
      const ups = chunk.match(/\x1b\[\d+A/g) ?? [];
      expect(ups.length).toBe(height === 0 ? 0 : chunk.includes("warning:") ? 2 : 1); // log() erases, then redraws
      for (const up of ups) expect(up).toBe(`\x1b[${height}A`);
      const erased = chunk.match(/\x1b\[2K/g)?.length ?? 0; // every live line erases its row first
      height = ups.length === 2 ? erased - height : erased;
    }
  });

  test("the final screen shows every blob, the total, and the log line above them", () => {
    const { progress, writes, clock } = harness("tty", { columns: 100 });
    script(progress, clock);
    const screen = replay(writes, 100);
    expect(screen.wraps).toBe(0);
    expect(screen.text()).toEqual([
      "warning: the registry is slow today",
      "layer 1/2 0123456789ab  pushed       20.0 MB in 3 chunks (compressed now)",
      "config    fedcba987654  exists",
      "total                   2/2 blobs  20.0/20.0 MB  6.7 MB/s  0:04",
    ]);
    expect(screen.row).toBe(4); // the cursor waits on a fresh line below
  });

  test("mid-push lines show phase, chunk, bytes, rate and ETA", () => {
    const { progress, writes, clock } = harness("tty", { columns: 120 });
    progress.update("layer 1/2", { phase: "compressing", total: 50_000_000 });
    progress.update("config", { phase: "checking" });
    for (let i = 1; i <= 10; i++) {
      clock.t += 100;
      progress.update("layer 1/2", { done: i * 2_000_000 }); // 20 MB/s
    }
    expect(replay(writes, 120).text()).toEqual([
      "layer 1/2               compressing  20.0/50.0 MB  20.0 MB/s  ETA 0:02",
      "config                  checking",
      "total                   0/2 blobs  0:01",
    ]);
    progress.update("layer 1/2", { phase: "uploading", digest: DIGEST_A, total: 30_000_000, chunk: { index: 1, count: 4 } });
    for (let i = 1; i <= 60; i++) {
      clock.t += 100;
      progress.update("layer 1/2", { done: i * 100_000, chunk: { index: 1 + Math.floor(i / 20), count: 4 } }); // 1 MB/s
    }
    progress.update("config", { phase: "exists", digest: DIGEST_B });
    expect(replay(writes, 120).text()).toEqual([
      "layer 1/2 0123456789ab  uploading    chunk 4/4  6.0/30.0 MB  1.0 MB/s  ETA 0:24",
      "config    fedcba987654  exists",
      "total                   1/2 blobs  6.0/30.0 MB  1.0 MB/s  0:07",
    ]);
    progress.finish();
  });

  test("throttles: byte updates within one interval mark dirty, the next one after it redraws", () => {
    const { progress, writes, clock } = harness("tty", { columns: 80 }, 100);
    progress.update("layer 1/1", { phase: "uploading", total: 1_000_000 });
    expect(writes).toHaveLength(1);
    for (let i = 1; i <= 50; i++) {
      clock.t = i;
      progress.update("layer 1/1", { done: i * 1000 });
    }
    expect(writes).toHaveLength(1);
    clock.t = 100;
    progress.update("layer 1/1", { done: 51_000 });
    expect(writes).toHaveLength(2);
    expect(writes[1]).toContain("51.0 kB/1.0 MB");
    clock.t = 101;
    progress.update("layer 1/1", { phase: "pushed" }); // a phase change does not wait
    expect(writes).toHaveLength(3);
    progress.finish();
  });

  test("a throttled update is flushed by the timer, and finish() leaves no timer running", async () => {
    const writes: string[] = [];
    let written: () => void = () => undefined;
    const stream = {
      write: (chunk: string) => {
        writes.push(chunk);
        written();
      },
    };
    const progress = createProgress({ stream, mode: "tty", redrawIntervalMs: 10 });
    progress.update("layer 1/1", { phase: "uploading", total: 1_000_000 });
    const flushed = new Promise<void>((resolve) => (written = resolve));
    progress.update("layer 1/1", { done: 123_000 });
    expect(writes).toHaveLength(1);
    // The redraw timer's write, whenever it comes.
    await flushed;
    expect(writes).toHaveLength(2);
    expect(writes.at(-1)).toContain("123.0 kB/1.0 MB");
    progress.finish();
    const count = writes.length;
    progress.finish();
    progress.update("layer 1/1", { done: 200_000 });
    // Nothing to wait for but time: five redraw intervals pass without a write.
    await Bun.sleep(50);
    expect(writes).toHaveLength(count);
  });

  test("lines are cut to the terminal width, wide characters counted as two cells", () => {
    const { progress, writes, clock } = harness("tty", { columns: 40 });
    progress.update("layer 1/2", { phase: "compressing", total: 9_000_000_000 });
    progress.update("layer 2/2", { phase: "checking", digest: DIGEST_B, note: "缓存的层缓存的层缓存的层" });
    clock.t += 1000;
    progress.update("layer 1/2", { done: 4_000_000_000 });
    const warning = "warning: a log line may be longer than the terminal and wraps above the live area";
    progress.log(warning);
    progress.finish();
    for (const chunk of writes) {
      const live = chunk.replace(`${warning}\n`, "");
      for (const line of live.replace(/\x1b\[\d*[AKJ]/g, "").split("\n")) expect(Bun.stringWidth(line)).toBeLessThan(40);
    }
    const screen = replay(writes, 40);
    expect(screen.wraps).toBe(2); // the log line's, never the live area's
    expect(screen.text().slice(-3)).toEqual([
      "layer 1/2               compressing  4.", // 39 cells: the last column stays free
      "layer 2/2 fedcba987654  checking     缓", // 37 + 2 cells; the next wide character would not fit
      "total                   0/2 blobs  0:01",
    ]);
  });

  test("with more blobs than rows, finished ones leave the live area; the final redraw shows all", () => {
    const { progress, writes } = harness("tty", { columns: 80, rows: 6 });
    for (let i = 1; i <= 10; i++) progress.update(`layer ${i}/10`, { phase: "waiting" });
    for (let i = 1; i <= 7; i++) progress.update(`layer ${i}/10`, { phase: "exists", digest: DIGEST_A });
    for (const chunk of writes) expect(chunk.match(/\x1b\[2K/g)?.length ?? 0).toBeLessThanOrEqual(5);
    const live = replay(writes, 80).text();
    expect(live).toHaveLength(5);
    expect(live[0]).toStartWith("layer 8/10");
    expect(live[3]).toContain("+ 7 more (7 finished, 0 to go)");
    progress.finish();
    const final = replay(writes, 80).text();
    expect(final).toHaveLength(11);
    expect(final[0]).toStartWith("layer 1/10");
    expect(final[10]).toStartWith("total");
    expect(final[10]).toContain("7/10 blobs");
  });

  test("a log before any blob is a plain line; nothing is drawn for no blobs", () => {
    const { progress, writes } = harness("tty");
    progress.log("note: resolving");
    progress.finish();
    expect(writes).toEqual(["note: resolving\n"]);
  });
});
