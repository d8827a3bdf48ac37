import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { buildManifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST } from "../../src/model/manifest.ts";

const d = (c: string) => `sha256:${c.repeat(64)}`;

test("buildManifest: an OCI image manifest with config and layers in order, digest of the exact bytes", () => {
  const config = { mediaType: OCI_CONFIG, digest: d("c"), size: 1234 };
  const layers = [
    { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10 },
    { mediaType: OCI_LAYER_ZSTD, digest: d("2"), size: 20 },
    { mediaType: OCI_LAYER_GZIP, digest: d("1"), size: 10 },
  ];
  const built = buildManifest({ ...config, extra: "dropped" } as typeof config, layers);
  expect(built.mediaType).toBe(OCI_MANIFEST);
  const parsed = JSON.parse(new TextDecoder().decode(built.bytes));
  expect(parsed).toEqual({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers });
  expect(built.digest).toBe(`sha256:${createHash("sha256").update(built.bytes).digest("hex")}`);
});
