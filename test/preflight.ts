/**
 * Loaded before any test (bunfig.toml): when the run includes integration tests, checks that the
 * programs they start are installed, and stops at once with one message saying what is missing and the
 * command that installs it, instead of a wall of failures. `bun test test/unit` needs none of them.
 * Also removes what the test helpers keep for the whole run.
 */
import { afterAll } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { removeTestHome } from "./support/cli.ts";

// After the last test of the run (a preload's afterAll is global): the CLI's HOME of this test process.
afterAll(removeTestHome);

/** The paths given to `bun test` (Linux shows the real command line in /proc; elsewhere: unknown). */
function requestedPaths(): string[] | undefined {
  if (!existsSync("/proc/self/cmdline")) return undefined;
  const args = readFileSync("/proc/self/cmdline", "utf8").split("\0").filter(Boolean);
  const at = args.indexOf("test");
  if (at === -1) return undefined;
  const paths: string[] = [];
  for (let i = at + 1; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg.startsWith("-")) {
      // Flags that take a value (-t <name>, --timeout <ms>, ...) hide no path.
      if (!arg.includes("=") && /^(-t|--test-name-pattern|--timeout|--preload|--rerun-each|--bail|--coverage-dir|--reporter)$/.test(arg)) i++;
      continue;
    }
    paths.push(arg);
  }
  return paths;
}

const UNIT_ONLY = /(^|\/)test\/unit(\/|$)/;

/** Programs the integration tests run, and the Debian package each comes in. */
const PROGRAMS: [string, string][] = [
  ["docker-registry", "docker-registry"],
  ["htpasswd", "apache2-utils"],
  ["podman", "podman"],
  ["newuidmap", "uidmap"],
  ["skopeo", "skopeo"],
  ["umoci", "umoci"],
  ["nginx", "nginx"],
  ["dockerd", "docker.io"],
  ["zstd", "zstd"],
  ["gzip", "gzip"],
  ["tar", "tar"],
  ["openssl", "openssl"],
];

function found(program: string): boolean {
  const path = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;
  return Bun.which(program, { PATH: path }) !== null;
}

const paths = requestedPaths();
const unitOnly = paths !== undefined && paths.length > 0 && paths.every((p) => UNIT_ONLY.test(p));
if (!unitOnly) {
  const missing = PROGRAMS.filter(([program]) => !found(program));
  if (!existsSync("/usr/bin/time")) missing.push(["/usr/bin/time", "time"]);
  if (missing.length > 0) {
    const programs = missing.map(([program]) => program).join(", ");
    const packages = [...new Set(missing.map(([, pkg]) => pkg))].join(" ");
    process.stderr.write(
      `\nThe integration tests need programs this machine lacks: ${programs} (Debian packages: ${packages}).\n` +
        "Install them with:  bun run setup   (Debian/Ubuntu, runs apt-get; as root or with sudo)\n" +
        "Or run only the unit tests, which need nothing but Bun:  bun test test/unit\n\n",
    );
    process.exit(1);
  }
}
