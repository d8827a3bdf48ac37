import { link, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { PushError } from "../errors.ts";
import type { Logger } from "../log.ts";

/**
 * Saves an image with `engine` (`docker` from PATH by default, which may be podman's Docker API, or
 * `podman` itself) as `<image id>.tar` in `folder`, reusing that file when it is already there: the id
 * is the config's digest, so the same name always means the same image.
 */
export async function saveImage(engine: string, reference: string, folder: string, log: Logger, signal?: AbortSignal): Promise<string> {
  const name = basename(engine);
  const inspect = await run(engine, ["image", "inspect", "--format", "{{.Id}}", reference]);
  if (inspect.code !== 0) {
    throw new PushError(
      `${name} cannot find image ${reference}: ${inspect.stderr.trim() || `exit code ${inspect.code}`}\n` +
        `Tag the image first (${name} tag <image> ${reference}) or push an archive with --archive <file.tar>`,
    );
  }
  const id = inspect.stdout.trim().replace(/^sha256:/, "");
  if (!/^[a-f0-9]{64}$/.test(id)) throw new PushError(`${name} image inspect returned an unexpected id "${id}"`);
  const archive = join(folder, `${id}.tar`);
  if (await stat(archive).then((s) => s.isFile(), () => false)) {
    log.info(`Reusing ${archive} (image ${id.slice(0, 12)})`);
    return archive;
  }
  const temp = join(folder, `.${id}.tar.tmp-${process.pid}`);
  log.info(`Saving ${reference} (image ${id.slice(0, 12)}) with ${name} save...`);
  const save = await run(engine, ["save", "-o", temp, reference], signal);
  if (save.code !== 0 || signal?.aborted) {
    await rm(temp, { force: true });
    signal?.throwIfAborted();
    throw new PushError(`${name} save ${reference} failed: ${save.stderr.trim() || `exit code ${save.code}`}`);
  }
  // link, not rename: a concurrent run may already have saved the same image and be reading it.
  await link(temp, archive).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "EEXIST") throw error;
  });
  await rm(temp, { force: true });
  return archive;
}

async function run(engine: string, args: string[], signal?: AbortSignal): Promise<{ code: number; stdout: string; stderr: string }> {
  let child;
  try {
    child = Bun.spawn([engine, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", signal });
  } catch {
    throw new PushError(
      `the ${engine} command was not found: install it, choose another with --engine docker|podman (or DOCKER_BIN), or push an archive with --archive <file.tar>`,
    );
  }
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, stdout, stderr };
}
