/**
 * Builds standalone executables (no Bun needed to run them) with `bun build --compile`:
 *   bun run build            every target into dist/
 *   bun run build <target>   one target, e.g. linux-x64, linux-arm64, darwin-x64, darwin-arm64, or "host"
 * OUT_DIR=<dir> writes them there instead of dist/.
 * The compression worker is a second entry point: the executable finds it at the path it has here.
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const TARGETS: Record<string, string | undefined> = {
  "linux-x64": "bun-linux-x64",
  "linux-arm64": "bun-linux-arm64",
  "darwin-x64": "bun-darwin-x64",
  "darwin-arm64": "bun-darwin-arm64",
  host: undefined,
};

const asked = process.argv.slice(2);
const names = asked.length > 0 ? asked : Object.keys(TARGETS).filter((t) => t !== "host");
const outDir = resolve(ROOT, process.env.OUT_DIR ?? "dist");
mkdirSync(outDir, { recursive: true });
for (const name of names) {
  if (!(name in TARGETS)) {
    process.stderr.write(`unknown target "${name}": choose from ${Object.keys(TARGETS).join(", ")}\n`);
    process.exit(2);
  }
  const target = TARGETS[name];
  const outfile = join(outDir, name === "host" ? "chunked-push" : `chunked-push-${name}`);
  const args = ["build", "--compile", ...(target ? [`--target=${target}`] : []), "index.ts", "src/layers/compress-worker.ts", "--outfile", outfile];
  const child = Bun.spawn([process.execPath, ...args], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  if ((await child.exited) !== 0) process.exit(1);
}
