import { describe, expect, test } from "bun:test";
import { PushError } from "../../src/errors.ts";
import { type StreamEntry, walkTarStream } from "../../src/sources/tar-stream.ts";
import { rawTarHeader } from "../support/hostile-archives.ts";

/** `data` padded to whole 512-byte blocks. */
function blocks(data: string): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.length / 512) * 512);
  out.set(new TextEncoder().encode(data));
  return out;
}

async function walk(...parts: Uint8Array[]): Promise<StreamEntry[]> {
  const entries: StreamEntry[] = [];
  await walkTarStream(new Blob([Buffer.concat([...parts, new Uint8Array(1024)])]).stream(), "stream x", async (entry, body) => {
    entries.push(entry);
    await body.cancel();
  });
  return entries;
}

describe("walkTarStream: long link names", () => {
  const long = `${"d".repeat(150)}/file`;

  test("a GNU K record gives the link its whole target, not the header's first 100 characters", async () => {
    const entries = await walk(
      rawTarHeader({ name: "././@LongLink", typeflag: "K", size: long.length + 1 }),
      blocks(`${long}\0`),
      rawTarHeader({ name: "link", typeflag: "2", size: 0, linkname: long.slice(0, 99) }),
    );
    expect(entries).toEqual([{ name: "link", type: "SymbolicLink", size: 0, linkpath: long }]);
  });

  test("a pax linkpath pointing outside is refused though the header's own field is harmless", async () => {
    const record = " linkpath=/etc/passwd\n";
    const pax = `${record.length + 2}${record}`;
    await expect(
      walk(
        rawTarHeader({ name: "PaxHeaders/l", typeflag: "x", size: pax.length }),
        blocks(pax),
        rawTarHeader({ name: "link", typeflag: "2", size: 0, linkname: "ok" }),
      ),
    ).rejects.toThrow(new PushError('archive stream x has a link "link" -> "/etc/passwd" pointing outside the archive: refusing it'));
  });
});
