/** A throwaway Debian `docker-registry` (no auth) on a free 127.0.0.1 port with temp storage. */
import type { Subprocess } from "bun";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface BenchRegistry {
  /** `127.0.0.1:<port>`, as the CLI and skopeo take it. */
  host: string;
  stop(): Promise<void>;
}

const live = new Set<Subprocess>();
// A benchmark interrupted half-way must not leave registries behind.
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export async function startRegistry(): Promise<BenchRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "chunked-push-bench-registry-"));
  const port = await freePort();
  const configPath = join(dir, "config.yml");
  const logPath = join(dir, "registry.log");
  await writeFile(configPath, configYaml(join(dir, "storage"), port));
  const log = openSync(logPath, "a");
  const child = Bun.spawn(["docker-registry", "serve", configPath], { stdin: "ignore", stdout: log, stderr: log });
  closeSync(log);
  live.add(child);
  const stop = async () => {
    live.delete(child);
    child.kill();
    await child.exited;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForRegistry(`http://127.0.0.1:${port}/v2/`, child);
  } catch (error) {
    const tail = await readFile(logPath, "utf8").catch(() => "");
    await stop();
    throw new Error(`${(error as Error).message}\n${tail.slice(-1500)}`);
  }
  return { host: `127.0.0.1:${port}`, stop };
}

function configYaml(storage: string, port: number): string {
  return [
    "version: 0.1",
    "log:",
    "  level: warn",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${JSON.stringify(storage)}`,
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${JSON.stringify(`127.0.0.1:${port}`)}`,
    "  secret: bench-not-a-secret",
    "",
  ].join("\n");
}

async function waitForRegistry(url: string, child: Subprocess): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode} before answering`);
    const ok = await fetch(url).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) return;
    await Bun.sleep(100);
  }
  throw new Error(`docker-registry did not answer ${url} within 15 s`);
}

/** A port the kernel just handed out; the registry binds it a moment later. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Sum of the layer sizes in the manifest the registry holds for `repository:tag`. */
export async function pushedLayerBytes(host: string, repository: string, tag: string): Promise<number> {
  const accept = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"].join(", ");
  const response = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, { headers: { Accept: accept } });
  if (!response.ok) throw new Error(`GET manifest ${repository}:${tag} from ${host}: HTTP ${response.status}`);
  const manifest = (await response.json()) as { layers?: { size: number }[] };
  return (manifest.layers ?? []).reduce((sum, layer) => sum + layer.size, 0);
}
