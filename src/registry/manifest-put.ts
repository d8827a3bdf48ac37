import { PushError } from "../errors.ts";
import type { BuiltManifest } from "../model/manifest.ts";
import type { RegistryClient } from "./client.ts";

/** PUTs the manifest under a tag and checks the registry named the same bytes we sent. */
export async function putManifest(
  client: RegistryClient,
  repository: string,
  tag: string,
  manifest: BuiltManifest,
): Promise<void> {
  const response = await client.send("PUT", `/v2/${repository}/manifests/${tag}`, {
    headers: { "Content-Type": manifest.mediaType },
    body: manifest.bytes,
  });
  const what = `manifest ${repository}:${tag}`;
  if (response.status !== 201) throw await client.failure(response, `${what}: upload failed`);
  const stored = response.headers.get("docker-content-digest");
  if (stored && stored !== manifest.digest) {
    throw new PushError(`${what}: the registry reports digest ${stored}, but the bytes sent hash to ${manifest.digest}`);
  }
}
