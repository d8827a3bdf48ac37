/**
 * Reads Stryker's JSON report (reports/mutation/mutation.json) and prints the score of each mutated
 * module, the overall score as one plain line (`mutation score: 91.20% killed (...)`, which .ci/run
 * shows), and with --survivors every surviving mutant as `file:line:column mutator: replacement`, the
 * list the README's "Mutation score" section names.
 *
 *   bun scripts/mutation-report.ts [--survivors] [report.json]
 */
import { readFileSync } from "node:fs";

interface Mutant {
  id: string;
  mutatorName: string;
  replacement?: string;
  status: string;
  location: { start: { line: number; column: number } };
}

interface Report {
  files: Record<string, { mutants: Mutant[] }>;
}

// Stryker's score: detected (killed or timed out) over valid mutants; compile and runtime errors and
// ignored mutants do not count.
const DETECTED = new Set(["Killed", "Timeout"]);
const UNDETECTED = new Set(["Survived", "NoCoverage"]);

const args = process.argv.slice(2);
const survivors = args.includes("--survivors");
const path = args.find((a) => !a.startsWith("--")) ?? "reports/mutation/mutation.json";
const report = JSON.parse(readFileSync(path, "utf8")) as Report;

const percent = (detected: number, valid: number) => (valid === 0 ? "n/a" : `${((100 * detected) / valid).toFixed(2)}%`);

let detected = 0;
let valid = 0;
const rows: string[] = [];
const left: string[] = [];
for (const [file, { mutants }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
  const d = mutants.filter((m) => DETECTED.has(m.status)).length;
  const u = mutants.filter((m) => UNDETECTED.has(m.status));
  detected += d;
  valid += d + u.length;
  rows.push(`${percent(d, d + u.length).padStart(8)}  ${String(d).padStart(4)} of ${String(d + u.length).padEnd(4)}  ${file}`);
  for (const m of u.sort((a, b) => a.location.start.line - b.location.start.line || a.location.start.column - b.location.start.column)) {
    const replacement = (m.replacement ?? "").replace(/\s+/g, " ");
    left.push(
      `${file}:${m.location.start.line}:${m.location.start.column} ${m.mutatorName}: ${replacement.length > 100 ? `${replacement.slice(0, 100)}...` : replacement}`,
    );
  }
}
console.log(rows.join("\n"));
if (survivors && left.length > 0) console.log(`\nsurviving mutants:\n${left.join("\n")}`);
console.log(`mutation score: ${percent(detected, valid)} killed (${detected} of ${valid} mutants, ${valid - detected} surviving)`);
