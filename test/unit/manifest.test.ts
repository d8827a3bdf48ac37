import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { buildImageManifest, buildIndex, rawManifest } from "../../src/model/manifest.ts";
import {
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER_GZIP,
  OCI_LAYER_ZSTD,
  OCI_MANIFEST,
} from "../../src/model/media-types.ts";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const sha = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const parse = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;

describe("buildImageManifest", () => {
  const config = { mediaType: DOCKER_CONFIG, digest: d("c"), size: 1234 };
  const layers = [
    { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10, annotations: { b: "2", a: "1" } },
    { mediaType: OCI_LAYER_ZSTD, digest: d("2"), size: 20 },
    { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10 },
  ];

  test("OCI: config type follows the format, layers in order with annotations sorted, digest of the exact bytes", () => {
    const built = buildImageManifest({ format: "oci", config, layers, annotations: { z: "last", a: "first" } });
    expect(built.mediaType).toBe(OCI_MANIFEST);
    expect(new TextDecoder().decode(built.bytes)).toBe(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: d("c"), size: 1234 },
          layers: [
            { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10, annotations: { a: "1", b: "2" } },
            { mediaType: OCI_LAYER_ZSTD, digest: d("2"), size: 20 },
            { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10 },
          ],
          annotations: { a: "first", z: "last" },
        },
        null,
        2,
      ),
    );
    expect(built.digest).toBe(sha(built.bytes));
  });

  test("Docker v2: Docker config type, no annotations anywhere", () => {
    const built = buildImageManifest({
      format: "docker",
      config: { ...config, mediaType: OCI_CONFIG },
      layers: [{ mediaType: DOCKER_LAYER_GZIP, digest: d("1"), size: 10, annotations: { a: "1" } }],
      annotations: { a: "b" },
    });
    expect(built.mediaType).toBe(DOCKER_MANIFEST);
    expect(parse(built.bytes)).toEqual({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: DOCKER_CONFIG, digest: d("c"), size: 1234 },
      layers: [{ mediaType: DOCKER_LAYER_GZIP, digest: d("1"), size: 10 }],
    });
  });

  test("the same input gives the same bytes", () => {
    expect(buildImageManifest({ format: "oci", config, layers }).digest).toBe(buildImageManifest({ format: "oci", config, layers }).digest);
  });
});

describe("buildIndex and rawManifest", () => {
  test("an index keeps each child's platform and annotations", () => {
    const built = buildIndex({
      format: "oci",
      manifests: [{ mediaType: OCI_MANIFEST, digest: d("a"), size: 5, platform: { os: "linux", architecture: "arm", variant: "v7" }, annotations: { k: "v" } }],
    });
    expect(built.mediaType).toBe(OCI_INDEX);
    expect(parse(built.bytes)).toEqual({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: d("a"), size: 5, annotations: { k: "v" }, platform: { architecture: "arm", os: "linux", variant: "v7" } }],
    });
    expect(buildIndex({ format: "docker", manifests: [] }).mediaType).toBe(DOCKER_LIST);
  });

  test("rawManifest keeps the bytes and names them by their sha256", () => {
    const bytes = new TextEncoder().encode('{"schemaVersion":2}');
    expect(rawManifest(OCI_MANIFEST, bytes)).toEqual({ mediaType: OCI_MANIFEST, bytes, digest: sha(bytes) });
  });
});
