import { PushError } from "../errors.ts";
import type { BuiltManifest } from "../model/manifest.ts";
import type { RegistryClient } from "./client.ts";

/**
 * PUTs a manifest or index under a tag or its digest, with `Content-Type` equal to its media type,
 * and checks the registry named the same bytes we sent.
 */
export async function putManifest(client: RegistryClient, repository: string, reference: string, manifest: BuiltManifest): Promise<void> {
  const what = `manifest ${repository}${reference.startsWith("sha256:") ? "@" : ":"}${reference}`;
  const response = await client.send("PUT", `/v2/${repository}/manifests/${reference}`, {
    headers: { "Content-Type": manifest.mediaType },
    body: manifest.bytes,
    what,
  });
  if (response.status !== 201) throw await client.failure(response, `${what}: upload failed`);
  const stored = response.headers.get("docker-content-digest");
  if (stored && stored !== manifest.digest) {
    throw new PushError(`${what}: the registry reports digest ${stored}, but the bytes sent hash to ${manifest.digest}`);
  }
}

/** Whether the registry already has a manifest with this digest (a re-push sends nothing more). */
export async function hasManifest(client: RegistryClient, repository: string, digest: string): Promise<boolean> {
  const response = await client.send("HEAD", `/v2/${repository}/manifests/${digest}`, {
    headers: {
      Accept:
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json",
    },
    what: `manifest ${repository}@${digest}`,
  });
  return response.ok;
}
