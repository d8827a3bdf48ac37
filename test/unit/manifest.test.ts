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

describe("what each format keeps, in the spec's field order", () => {
  const config = { mediaType: OCI_CONFIG, digest: d("c"), size: 7 };
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

  test("OCI: subject after the layers, then the annotations; the bytes are exactly these", () => {
    const subject = { mediaType: OCI_MANIFEST, digest: d("5"), size: 99, annotations: { k: "v" }, artifactType: "application/x" };
    const built = buildImageManifest({ format: "oci", config, layers: [], subject, annotations: { b: "2", c: "3", a: "1" } });
    expect(text(built.bytes)).toBe(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: d("c"), size: 7 },
          layers: [],
          subject: { mediaType: OCI_MANIFEST, digest: d("5"), size: 99, annotations: { k: "v" }, artifactType: "application/x" },
          annotations: { a: "1", b: "2", c: "3" },
        },
        null,
        2,
      ),
    );
    expect(built.digest).toBe(sha(built.bytes));
  });

  test("Docker: no subject, no annotations, no artifactType; urls and platform are kept", () => {
    const layer = { mediaType: DOCKER_LAYER_GZIP, digest: d("1"), size: 10, urls: ["https://example.com/l"], artifactType: "x", annotations: { a: "b" } };
    const built = buildImageManifest({ format: "docker", config, layers: [layer], subject: { mediaType: OCI_MANIFEST, digest: d("5"), size: 9 } });
    expect(text(built.bytes)).toBe(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: DOCKER_MANIFEST,
          config: { mediaType: DOCKER_CONFIG, digest: d("c"), size: 7 },
          layers: [{ mediaType: DOCKER_LAYER_GZIP, digest: d("1"), size: 10, urls: ["https://example.com/l"] }],
        },
        null,
        2,
      ),
    );
  });

  test("empty annotations, urls and os.features are left out, not written empty", () => {
    const layer = { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10, annotations: {}, urls: [] };
    expect(parse(buildImageManifest({ format: "oci", config, layers: [layer], annotations: {} }).bytes)).toStrictEqual({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: d("c"), size: 7 },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10 }],
    });
    const child = {
      mediaType: OCI_MANIFEST,
      digest: d("a"),
      size: 5,
      annotations: {},
      platform: { os: "linux", architecture: "amd64", "os.features": [], "os.version": "", variant: "" },
    };
    expect(parse(buildIndex({ format: "oci", manifests: [child], annotations: {} }).bytes)).toStrictEqual({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: d("a"), size: 5, platform: { architecture: "amd64", os: "linux" } }],
    });
  });

  test("a platform's fields in order: architecture, os, os.version, os.features, variant", () => {
    const platform = { variant: "v7", "os.features": ["win32k"], "os.version": "10.0.17763", os: "windows", architecture: "arm" };
    const built = buildIndex({ format: "docker", manifests: [{ mediaType: DOCKER_MANIFEST, digest: d("a"), size: 5, platform }] });
    expect(text(built.bytes)).toBe(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: DOCKER_LIST,
          manifests: [
            {
              mediaType: DOCKER_MANIFEST,
              digest: d("a"),
              size: 5,
              platform: { architecture: "arm", os: "windows", "os.version": "10.0.17763", "os.features": ["win32k"], variant: "v7" },
            },
          ],
        },
        null,
        2,
      ),
    );
  });

  test("an OCI index keeps its annotations (sorted) and each child's artifactType; a Docker list drops both", () => {
    const child = { mediaType: OCI_MANIFEST, digest: d("a"), size: 5, annotations: { z: "1", m: "2", a: "3" }, artifactType: "application/x" };
    expect(text(buildIndex({ format: "oci", manifests: [child], annotations: { y: "1", b: "2", x: "3" } }).bytes)).toBe(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          manifests: [{ mediaType: OCI_MANIFEST, digest: d("a"), size: 5, annotations: { a: "3", m: "2", z: "1" }, artifactType: "application/x" }],
          annotations: { b: "2", x: "3", y: "1" },
        },
        null,
        2,
      ),
    );
    expect(parse(buildIndex({ format: "docker", manifests: [child], annotations: { y: "1" } }).bytes)).toStrictEqual({
      schemaVersion: 2,
      mediaType: DOCKER_LIST,
      manifests: [{ mediaType: OCI_MANIFEST, digest: d("a"), size: 5 }],
    });
  });
});
