import { rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { PushError } from "./errors.ts";
import type { Logger } from "./log.ts";

/**
 * Saves an image with the `docker` on PATH (podman's Docker API works behind it) as `<image id>.tar`
 * in `folder`, reusing that file when it is already there: the id is the config's digest, so the same
 * name always means the same image.
 */
export async function dockerSave(reference: string, folder: string, log: Logger, signal?: AbortSignal): Promise<string> {
  const inspect = await docker(["image", "inspect", "--format", "{{.Id}}", reference]);
  if (inspect.code !== 0) {
    throw new PushError(
      `docker cannot find image ${reference}: ${inspect.stderr.trim() || `exit code ${inspect.code}`}\n` +
        `Tag the image first (docker tag <image> ${reference}) or push an archive with --archive <file.tar>`,
    );
  }
  const id = inspect.stdout.trim().replace(/^sha256:/, "");
  if (!/^[a-f0-9]{64}$/.test(id)) throw new PushError(`docker image inspect returned an unexpected id "${id}"`);
  const archive = join(folder, `${id}.tar`);
  if (await stat(archive).then((s) => s.isFile(), () => false)) {
    log.info(`Reusing ${archive} (image ${id.slice(0, 12)})`);
    return archive;
  }
  const temp = join(folder, `.${id}.tar.tmp-${process.pid}`);
  log.info(`Saving ${reference} (image ${id.slice(0, 12)}) with docker save...`);
  const save = await docker(["save", "-o", temp, reference], signal);
  if (save.code !== 0 || signal?.aborted) {
    await rm(temp, { force: true });
    signal?.throwIfAborted();
    throw new PushError(`docker save ${reference} failed: ${save.stderr.trim() || `exit code ${save.code}`}`);
  }
  await rename(temp, archive);
  return archive;
}

async function docker(args: string[], signal?: AbortSignal): Promise<{ code: number; stdout: string; stderr: string }> {
  let child;
  try {
    child = Bun.spawn(["docker", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", signal });
  } catch {
    throw new PushError("the docker command was not found on PATH: install Docker, or push an archive with --archive <file.tar>");
  }
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, stdout, stderr };
}
