/**
 * The media types are what registries and clients read on the wire: each is asserted as its literal
 * string from the OCI image spec / Docker's schema 2, not through the constant that names it.
 */
import { describe, expect, test } from "bun:test";
import {
  configMediaType,
  DOCKER_FOREIGN_LAYER,
  DOCKER_LAYER,
  DOCKER_LAYER_GZIP,
  formatOf,
  indexMediaType,
  isIndexType,
  isManifestType,
  layerMediaType,
  manifestMediaType,
  OCI_LAYER,
  OCI_LAYER_NONDISTRIBUTABLE_GZIP,
  sniffCompression,
} from "../../src/model/media-types.ts";

const OCI = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
};
const DOCKER = {
  list: "application/vnd.docker.distribution.manifest.list.v2+json",
  manifest: "application/vnd.docker.distribution.manifest.v2+json",
  config: "application/vnd.docker.container.image.v1+json",
};

describe("document media types", () => {
  test("each format's manifest, index and config types", () => {
    expect(manifestMediaType("oci")).toBe(OCI.manifest);
    expect(indexMediaType("oci")).toBe(OCI.index);
    expect(configMediaType("oci")).toBe(OCI.config);
    expect(manifestMediaType("docker")).toBe(DOCKER.manifest);
    expect(indexMediaType("docker")).toBe(DOCKER.list);
    expect(configMediaType("docker")).toBe(DOCKER.config);
  });

  test("isIndexType: the OCI index and Docker's manifest list only", () => {
    expect(isIndexType(OCI.index)).toBe(true);
    expect(isIndexType(DOCKER.list)).toBe(true);
    for (const other of [OCI.manifest, DOCKER.manifest, OCI.config, "", undefined]) expect(isIndexType(other)).toBe(false);
  });

  test("isManifestType: the OCI manifest and Docker's schema 2 only", () => {
    expect(isManifestType(OCI.manifest)).toBe(true);
    expect(isManifestType(DOCKER.manifest)).toBe(true);
    for (const other of [OCI.index, DOCKER.list, DOCKER.config, "", undefined]) expect(isManifestType(other)).toBe(false);
  });

  test("formatOf: Docker's manifest and list are docker, anything else oci", () => {
    expect(formatOf(DOCKER.manifest)).toBe("docker");
    expect(formatOf(DOCKER.list)).toBe("docker");
    expect(formatOf(OCI.manifest)).toBe("oci");
    expect(formatOf(OCI.index)).toBe("oci");
    expect(formatOf("")).toBe("oci");
  });
});

describe("layer media types", () => {
  test("OCI has a type for each compression", () => {
    expect(layerMediaType("gzip", "oci")).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    expect(layerMediaType("zstd", "oci")).toBe("application/vnd.oci.image.layer.v1.tar+zstd");
    expect(layerMediaType("none", "oci")).toBe("application/vnd.oci.image.layer.v1.tar");
  });

  test("Docker's schema 2 has gzip and plain tar, and refuses zstd", () => {
    expect(layerMediaType("gzip", "docker")).toBe("application/vnd.docker.image.rootfs.diff.tar.gzip");
    expect(layerMediaType("none", "docker")).toBe("application/vnd.docker.image.rootfs.diff.tar");
    expect(() => layerMediaType("zstd", "docker")).toThrow(new RangeError("Docker v2 manifests cannot describe zstd layers"));
  });

  test("the exported layer types no builder picks are still the spec's strings", () => {
    expect(OCI_LAYER).toBe("application/vnd.oci.image.layer.v1.tar");
    expect(OCI_LAYER_NONDISTRIBUTABLE_GZIP).toBe("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
    expect(DOCKER_LAYER).toBe("application/vnd.docker.image.rootfs.diff.tar");
    expect(DOCKER_LAYER_GZIP).toBe("application/vnd.docker.image.rootfs.diff.tar.gzip");
    expect(DOCKER_FOREIGN_LAYER).toBe("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
  });
});

describe("sniffCompression", () => {
  const bytes = (...b: number[]) => new Uint8Array(b);

  test("gzip's and zstd's magic numbers", () => {
    expect(sniffCompression(bytes(0x1f, 0x8b, 0x08, 0x00))).toBe("gzip");
    expect(sniffCompression(bytes(0x1f, 0x8b))).toBe("gzip");
    expect(sniffCompression(bytes(0x28, 0xb5, 0x2f, 0xfd, 0x04))).toBe("zstd");
  });

  test("any byte of a magic number wrong is no compression", () => {
    expect(sniffCompression(bytes(0x1f, 0x00))).toBe("none");
    expect(sniffCompression(bytes(0x00, 0x8b))).toBe("none");
    expect(sniffCompression(bytes(0x00, 0xb5, 0x2f, 0xfd))).toBe("none");
    expect(sniffCompression(bytes(0x28, 0x00, 0x2f, 0xfd))).toBe("none");
    expect(sniffCompression(bytes(0x28, 0xb5, 0x00, 0xfd))).toBe("none");
    expect(sniffCompression(bytes(0x28, 0xb5, 0x2f, 0x00))).toBe("none");
    // A tar starts with its first entry's name.
    expect(sniffCompression(new TextEncoder().encode("blobs/sha256/"))).toBe("none");
  });

  test("too few bytes to tell is no compression", () => {
    expect(sniffCompression(bytes())).toBe("none");
    expect(sniffCompression(bytes(0x1f))).toBe("none");
    expect(sniffCompression(bytes(0x28, 0xb5, 0x2f))).toBe("none");
  });
});
