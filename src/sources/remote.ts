/**
 * An image in another registry (`--from host/repository:tag`), read as stored: manifests and configs
 * are fetched and checked against their digests; layers stay in that registry until the pusher needs
 * their bytes, which it copies as they are (never recompressed). The source is read with its own
 * client and credentials (the Docker config's, or anonymous), never the destination's password.
 */
import { PushError } from "../errors.ts";
import type { Descriptor } from "../model/descriptor.ts";
import { DocumentError, documentKind, parseJsonBytes } from "../model/descriptor.ts";
import { sha256Digest } from "../model/digest.ts";
import { DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, isIndexType, type Compression } from "../model/media-types.ts";
import type { SourceReference } from "../model/reference.ts";
import type { RegistryClient } from "../registry/client.ts";
import type { ArchiveImage } from "./archive-reader.ts";
import { MANIFEST_LIMIT, ManifestWalker, type BlobStore } from "./manifest-walker.ts";
import { ArchiveError } from "./store.ts";

const ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");

export async function readRemote(client: RegistryClient, source: SourceReference): Promise<ArchiveImage> {
  const label = `${source.host}/${source.repository}`;
  const what = `${label}:${source.reference}`;
  // Read up to what a manifest may be, not the small default meant for answers we only glance at.
  const response = await client.send("GET", `/v2/${source.repository}/manifests/${source.reference}`, {
    headers: { Accept: ACCEPT },
    what: `reading ${what}`,
    maxBodyBytes: MANIFEST_LIMIT,
  });
  if (response.status === 404) throw new PushError(`${what} does not exist in the source registry`);
  if (!response.ok) throw await client.failure(response, `reading ${what}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.length > MANIFEST_LIMIT) throw new PushError(`${what}: the manifest is ${bytes.length} bytes, more than the ${MANIFEST_LIMIT} a manifest may have`);
  const digest = sha256Digest(bytes);
  const named = source.reference.startsWith("sha256:") ? source.reference : response.headers.get("docker-content-digest");
  if (named && named !== digest) throw new PushError(`${what}: the source registry sent a manifest hashing to ${digest}, not ${named}`);
  let kind: string;
  try {
    kind = documentKind(parseJsonBytes(bytes, `the manifest of ${what}`));
  } catch (error) {
    if (error instanceof DocumentError) throw new PushError(`${what}: ${error.message}`);
    throw error;
  }
  const contentType = response.headers.get("content-type")?.split(";")[0]?.trim() ?? "";
  const mediaType = kind === "index" ? (isIndexType(contentType) ? contentType : OCI_INDEX) : contentType || OCI_MANIFEST;
  const descriptor: Descriptor = { mediaType, digest, size: bytes.length };
  const walker = new ManifestWalker(remoteBlobs(client, source.repository, label, digest, bytes));
  try {
    const root = await walker.node(descriptor, 0, []);
    if ("missing" in root) throw new PushError(`${what}: ${root.missing}`);
    return { root, names: [what], missing: walker.missing };
  } catch (error) {
    if (error instanceof DocumentError) throw new ArchiveError(`${what}: ${error.message}`);
    throw error;
  }
}

/** The source registry's blobs and manifests, by digest, as the walker reads them. */
function remoteBlobs(client: RegistryClient, repository: string, label: string, rootDigest: string, rootBytes: Uint8Array): BlobStore {
  return {
    label,
    has: async () => true,
    read: async (digest, limit, wanted) => {
      if (digest === rootDigest) return rootBytes;
      // Child manifests live under /manifests/, configs under /blobs/. Ask the right one first:
      // distribution answers 500, not 404, for a config asked for as a manifest.
      for (const kind of wanted === "config" ? (["blobs", "manifests"] as const) : (["manifests", "blobs"] as const)) {
        const response = await client.send("GET", `/v2/${repository}/${kind}/${digest}`, {
          headers: { Accept: ACCEPT },
          what: `reading ${label}@${digest}`,
          // The walker's own limit for this document (a manifest's, or a config's larger one).
          maxBodyBytes: limit,
        });
        if (response.status === 404) continue;
        if (!response.ok) throw await client.failure(response, `reading ${label}@${digest}`);
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (bytes.length > limit) throw new PushError(`${label}@${digest} is ${bytes.length} bytes, more than the ${limit} it may have`);
        return bytes;
      }
      throw new PushError(`${label}@${digest} is not in the source registry`);
    },
    blob: async (descriptor) => ({
      size: descriptor.size,
      compression: compressionOf(descriptor.mediaType),
      bytes: {
        kind: "remote",
        size: descriptor.size,
        open: async (signal) => {
          signal?.throwIfAborted();
          const response = await client.send("GET", `/v2/${repository}/blobs/${descriptor.digest}`, {
            what: `downloading ${label}@${descriptor.digest}`,
            stream: true,
          });
          if (!response.ok || !response.body) throw await client.failure(response, `downloading ${label}@${descriptor.digest}`);
          return response.body;
        },
      },
    }),
  };
}

/** Media types say how a remote layer is compressed; the bytes are checked when they arrive. */
function compressionOf(mediaType: string): Compression {
  if (/zstd/.test(mediaType)) return "zstd";
  if (/gzip/.test(mediaType)) return "gzip";
  return "none";
}
