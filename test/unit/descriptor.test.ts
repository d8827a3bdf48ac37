/**
 * Strict reading of descriptors, manifests, indexes and configs: what a hostile or broken source hands
 * over is refused with a message naming the document and the field, and what is kept is exactly what
 * the push needs (no stray keys, no non-string values).
 */
import { describe, expect, test } from "bun:test";
import {
  DocumentError,
  documentKind,
  isObject,
  parseConfig,
  parseDescriptor,
  parseIndex,
  parseJsonBytes,
  parseManifest,
  parsePlatform,
} from "../../src/model/descriptor.ts";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/** The DocumentError `run` throws, or a failure when it throws nothing or something else. */
function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(DocumentError);
    expect((error as Error).name).toBe("DocumentError");
    return (error as Error).message;
  }
  throw new Error("expected a DocumentError");
}

describe("parseJsonBytes", () => {
  test("UTF-8 JSON of any shape", () => {
    expect(parseJsonBytes(json({ a: [1, "é"] }), "x")).toEqual({ a: [1, "é"] });
    expect(parseJsonBytes(json([1]), "x")).toEqual([1]);
  });

  test("invalid JSON and invalid UTF-8 are refused naming the document", () => {
    expect(refusal(() => parseJsonBytes(new TextEncoder().encode("{"), "index.json"))).toBe("index.json is not valid JSON");
    // A lone continuation byte inside a string: lenient decoding would make it U+FFFD and accept it.
    expect(refusal(() => parseJsonBytes(new Uint8Array([0x22, 0x80, 0x22]), "manifest.json"))).toBe("manifest.json is not valid JSON");
  });
});

describe("parseDescriptor", () => {
  test("the three required fields; a missing media type is empty", () => {
    expect(parseDescriptor({ digest: d("a"), size: 0 }, "x")).toStrictEqual({ mediaType: "", digest: d("a"), size: 0 });
    expect(parseDescriptor({ mediaType: "m", digest: d("a"), size: 12, extra: true }, "x")).toStrictEqual({ mediaType: "m", digest: d("a"), size: 12 });
  });

  test("annotations, platform, urls (strings only) and artifactType are kept", () => {
    const value = {
      mediaType: "m",
      digest: d("b"),
      size: 3,
      annotations: { k: "v" },
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
      urls: ["https://a", 7, "https://b"],
      artifactType: "application/x",
    };
    expect(parseDescriptor(value, "x")).toStrictEqual({
      mediaType: "m",
      digest: d("b"),
      size: 3,
      annotations: { k: "v" },
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
      urls: ["https://a", "https://b"],
      artifactType: "application/x",
    });
  });

  test("null annotations, non-list urls and a non-string artifactType are left out", () => {
    expect(parseDescriptor({ digest: d("a"), size: 1, annotations: null, urls: "https://a", artifactType: 5 }, "x")).toStrictEqual({
      mediaType: "",
      digest: d("a"),
      size: 1,
    });
  });

  test.each([
    ["null", null, "entry 1 is not a descriptor"],
    ["a list", [], "entry 1 is not a descriptor"],
    ["a string", "sha256:x", "entry 1 is not a descriptor"],
    ["no digest", { size: 1 }, "entry 1 has no sha256 digest"],
    ["a numeric digest", { digest: 5, size: 1 }, "entry 1 has no sha256 digest"],
    ["a digest inside a list", { digest: [d("a")], size: 1 }, "entry 1 has no sha256 digest"],
    ["another algorithm", { digest: "sha512:abc", size: 1 }, 'entry 1 has no sha256 digest (got "sha512:abc")'],
    ["a digest and a newline", { digest: `${d("a")}\n`, size: 1 }, `entry 1 has no sha256 digest (got "${d("a")}\n")`],
    ["a digest after other text", { digest: `x${d("a")}`, size: 1 }, `entry 1 has no sha256 digest (got "x${d("a")}")`],
    ["uppercase hex", { digest: d("A"), size: 1 }, `entry 1 has no sha256 digest (got "${d("A")}")`],
    ["63 hex digits", { digest: `sha256:${"a".repeat(63)}`, size: 1 }, `entry 1 has no sha256 digest (got "sha256:${"a".repeat(63)}")`],
    ["no size", { digest: d("a") }, "entry 1 has no valid size"],
    ["a string size", { digest: d("a"), size: "1" }, "entry 1 has no valid size"],
    ["a negative size", { digest: d("a"), size: -1 }, "entry 1 has no valid size"],
    ["a fractional size", { digest: d("a"), size: 1.5 }, "entry 1 has no valid size"],
    ["an unsafe integer size", { digest: d("a"), size: 2 ** 53 }, "entry 1 has no valid size"],
    ["a numeric media type", { digest: d("a"), size: 1, mediaType: 3 }, "entry 1 has a media type that is not a string"],
    ["a null media type", { digest: d("a"), size: 1, mediaType: null }, "entry 1 has a media type that is not a string"],
    ["a numeric annotation", { digest: d("a"), size: 1, annotations: { k: 1 } }, "entry 1 annotations are not a map of strings"],
    [
      "one numeric annotation among strings",
      { digest: d("a"), size: 1, annotations: { a: "x", k: 1, z: "y" } },
      "entry 1 annotations are not a map of strings",
    ],
    ["annotations as a list", { digest: d("a"), size: 1, annotations: ["v"] }, "entry 1 annotations are not a map of strings"],
    ["annotations as a string", { digest: d("a"), size: 1, annotations: "k=v" }, "entry 1 annotations are not a map of strings"],
    ["a null platform", { digest: d("a"), size: 1, platform: null }, "entry 1 platform needs os and architecture"],
  ])("%s is refused", (_what, value, message) => {
    expect(refusal(() => parseDescriptor(value, "entry 1"))).toBe(message);
  });

  test("a long bad digest is echoed only in part", () => {
    const digest = `sha256:${"z".repeat(500)}`;
    expect(refusal(() => parseDescriptor({ digest, size: 1 }, "x"))).toBe(`x has no sha256 digest (got "${digest.slice(0, 80)}")`);
  });
});

describe("parsePlatform", () => {
  test("os and architecture, and the optional fields when they have the right type", () => {
    expect(parsePlatform({ os: "linux", architecture: "amd64" }, "p")).toStrictEqual({ architecture: "amd64", os: "linux" });
    expect(
      parsePlatform({ os: "windows", architecture: "amd64", variant: "v2", "os.version": "10.0.17763", "os.features": ["win32k", 3], other: 1 }, "p"),
    ).toStrictEqual({ architecture: "amd64", os: "windows", variant: "v2", "os.version": "10.0.17763", "os.features": ["win32k"] });
  });

  test("an empty variant, or fields of the wrong type, are left out", () => {
    expect(parsePlatform({ os: "linux", architecture: "arm", variant: "", "os.version": 10, "os.features": "x" }, "p")).toStrictEqual({
      architecture: "arm",
      os: "linux",
    });
    expect(parsePlatform({ os: "linux", architecture: "arm", variant: 7 }, "p")).toStrictEqual({ architecture: "arm", os: "linux" });
  });

  test.each([
    ["null", null],
    ["a list", []],
    ["no architecture", { os: "linux" }],
    ["no os", { architecture: "amd64" }],
    ["a numeric os", { os: 1, architecture: "amd64" }],
    ["a null architecture", { os: "linux", architecture: null }],
  ])("%s is refused", (_what, value) => {
    expect(refusal(() => parsePlatform(value, "index entry 2 platform"))).toBe("index entry 2 platform needs os and architecture");
  });
});

describe("documentKind", () => {
  test("by shape: a manifests list is an index, a config object with a layers list a manifest", () => {
    expect(documentKind({ manifests: [] })).toBe("index");
    expect(documentKind({ manifests: [], config: {}, layers: [] })).toBe("index");
    expect(documentKind({ config: {}, layers: [] })).toBe("manifest");
  });

  test.each([
    ["null", null],
    ["a list", []],
    ["a string", "x"],
    ["an empty object", {}],
    ["manifests not a list", { manifests: {} }],
    ["a config without layers", { config: {} }],
    ["layers without a config", { layers: [] }],
    ["a config that is a list", { config: [], layers: [] }],
    ["layers not a list", { config: {}, layers: {} }],
  ])("%s is unknown", (_what, value) => {
    expect(documentKind(value)).toBe("unknown");
  });
});

describe("parseManifest", () => {
  const config = { mediaType: "application/vnd.oci.image.config.v1+json", digest: d("c"), size: 2 };
  const layer = { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: d("1"), size: 10 };

  test("the fields the push needs, and no others", () => {
    expect(parseManifest(json({ schemaVersion: 2, config, layers: [layer], extra: 1 }), "m")).toStrictEqual({ schemaVersion: 2, config, layers: [layer] });
  });

  test("media type, annotations, subject and artifactType when present", () => {
    const subject = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d("e"), size: 9 };
    const value = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [],
      annotations: { a: "b" },
      subject,
      artifactType: "t",
    };
    expect(parseManifest(json(value), "m")).toStrictEqual({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [],
      annotations: { a: "b" },
      subject,
      artifactType: "t",
    });
  });

  test("a non-string media type or artifactType is left out", () => {
    expect(parseManifest(json({ schemaVersion: 2, mediaType: 1, config, layers: [], artifactType: {} }), "m")).toStrictEqual({
      schemaVersion: 2,
      config,
      layers: [],
    });
  });

  test.each([
    ["a list", [], "manifest sha256:x is not an image manifest"],
    ["no layers", { schemaVersion: 2, config }, "manifest sha256:x is not an image manifest"],
    ["no config", { schemaVersion: 2, layers: [] }, "manifest sha256:x is not an image manifest"],
    ["layers not a list", { schemaVersion: 2, config, layers: {} }, "manifest sha256:x is not an image manifest"],
    ["no schemaVersion", { config, layers: [] }, "manifest sha256:x is not schema version 2"],
    ["schemaVersion as a string", { schemaVersion: "2", config, layers: [] }, "manifest sha256:x is not schema version 2"],
    ["schemaVersion 1", { schemaVersion: 1, config, layers: [] }, "manifest sha256:x is not schema version 2"],
    ["a config without digest", { schemaVersion: 2, config: { size: 1 }, layers: [] }, "manifest sha256:x config has no sha256 digest"],
    ["a layer without size", { schemaVersion: 2, config, layers: [layer, { digest: d("2") }] }, "manifest sha256:x layer 2 has no valid size"],
    ["a numeric annotation", { schemaVersion: 2, config, layers: [], annotations: { a: 1 } }, "manifest sha256:x annotations are not a map of strings"],
    ["a null subject", { schemaVersion: 2, config, layers: [], subject: null }, "manifest sha256:x subject is not a descriptor"],
  ])("%s is refused", (_what, value, message) => {
    expect(refusal(() => parseManifest(json(value), "manifest sha256:x"))).toBe(message);
  });

  test("bytes that are not JSON", () => {
    expect(refusal(() => parseManifest(new TextEncoder().encode("<html>"), "manifest sha256:x"))).toBe("manifest sha256:x is not valid JSON");
  });
});

describe("parseIndex", () => {
  const entry = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d("a"), size: 5, platform: { os: "linux", architecture: "amd64" } };

  test("the entries as descriptors, and no other fields", () => {
    expect(parseIndex(json({ schemaVersion: 2, manifests: [entry], extra: 1 }), "i")).toStrictEqual({
      schemaVersion: 2,
      manifests: [{ mediaType: entry.mediaType, digest: d("a"), size: 5, platform: { architecture: "amd64", os: "linux" } }],
    });
  });

  test("media type, annotations, subject and artifactType when present", () => {
    const subject = { mediaType: "m", digest: d("e"), size: 9 };
    const value = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [],
      annotations: { a: "b" },
      subject,
      artifactType: "t",
    };
    expect(parseIndex(json(value), "i")).toStrictEqual({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [],
      annotations: { a: "b" },
      subject,
      artifactType: "t",
    });
    expect(parseIndex(json({ schemaVersion: 2, mediaType: 1, manifests: [], artifactType: 2 }), "i")).toStrictEqual({ schemaVersion: 2, manifests: [] });
  });

  test.each([
    ["a list", [], "index.json is not an image index"],
    ["no manifests", { schemaVersion: 2 }, "index.json is not an image index"],
    ["manifests not a list", { schemaVersion: 2, manifests: {} }, "index.json is not an image index"],
    ["no schemaVersion", { manifests: [] }, "index.json is not schema version 2"],
    ["schemaVersion 3", { schemaVersion: 3, manifests: [] }, "index.json is not schema version 2"],
    ["a bad entry", { schemaVersion: 2, manifests: [entry, { digest: "x", size: 1 }] }, 'index.json entry 2 has no sha256 digest (got "x")'],
    ["annotations as a list", { schemaVersion: 2, manifests: [], annotations: [] }, "index.json annotations are not a map of strings"],
    ["a numeric subject", { schemaVersion: 2, manifests: [], subject: 1 }, "index.json subject is not a descriptor"],
  ])("%s is refused", (_what, value, message) => {
    expect(refusal(() => parseIndex(json(value), "index.json"))).toBe(message);
  });
});

describe("parseConfig", () => {
  const diffIds = [d("1"), d("2")];

  test("the rootfs, and the platform fields when they are strings", () => {
    expect(
      parseConfig(json({ architecture: "arm", os: "linux", variant: "v7", rootfs: { type: "layers", diff_ids: diffIds }, config: {} }), "c"),
    ).toStrictEqual({
      rootfs: { type: "layers", diff_ids: diffIds },
      architecture: "arm",
      os: "linux",
      variant: "v7",
    });
  });

  test("a missing rootfs type is 'layers'; an empty variant or non-string fields are left out", () => {
    expect(parseConfig(json({ architecture: 1, os: null, variant: "", rootfs: { diff_ids: [] } }), "c")).toStrictEqual({
      rootfs: { type: "layers", diff_ids: [] },
    });
    expect(parseConfig(json({ variant: 8, rootfs: { type: "other", diff_ids: [] } }), "c")).toStrictEqual({ rootfs: { type: "other", diff_ids: [] } });
  });

  test.each([
    ["a list", [], "the image config is not a JSON object"],
    ["null", null, "the image config is not a JSON object"],
    ["no rootfs", {}, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
    ["rootfs as a list", { rootfs: [] }, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
    ["diff_ids not a list", { rootfs: { diff_ids: {} } }, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
    ["a numeric diff_id", { rootfs: { diff_ids: [d("1"), 5] } }, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
    ["a diff_id inside a list", { rootfs: { diff_ids: [[d("1")]] } }, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
    ["a diff_id that is no digest", { rootfs: { diff_ids: [d("1"), "sha256:xyz"] } }, "the image config's rootfs.diff_ids are not a list of sha256 digests"],
  ])("%s is refused", (_what, value, message) => {
    expect(refusal(() => parseConfig(json(value), "the image config"))).toBe(message);
  });
});

describe("isObject", () => {
  test("plain objects only", () => {
    expect(isObject({})).toBe(true);
    expect(isObject(null)).toBe(false);
    expect(isObject([])).toBe(false);
    expect(isObject("x")).toBe(false);
    expect(isObject(undefined)).toBe(false);
  });
});
