import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { link, mkdir, mkdtemp, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PushError } from "../../src/errors.ts";
import {
  applyExtended,
  clean,
  EXTENDED_HEADER_LIMIT,
  ENTRY_LIMIT,
  extendedName,
  linkTarget,
  NAME_LIMIT,
  parseHeader,
  safeLink,
  safeName,
  TarIndex,
} from "../../src/sources/tar-index.ts";
import { makeTar } from "../support/fixtures.ts";
import { rawTarHeader } from "../support/hostile-archives.ts";

let dir: string;

async function gnuTar(archive: string, cwd: string, args: string[]): Promise<void> {
  const child = Bun.spawn(["tar", "-cf", archive, ...args], { cwd, stderr: "pipe" });
  if ((await child.exited) !== 0) throw new Error(await new Response(child.stderr).text());
}

async function bytesOf(index: TarIndex, name: string): Promise<string> {
  const entry = index.get(name);
  return Bun.file(index.path)
    .slice(entry.offset, entry.offset + entry.size)
    .text();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tar-index-"));
  const src = join(dir, "src");
  await mkdir(join(src, "blobs/sha256"), { recursive: true });
  await writeFile(join(src, "blobs/sha256/aaaa"), "layer bytes");
  await writeFile(join(src, "empty"), "");
  await writeFile(join(src, "odd"), "x".repeat(513));
  const long = `${"d".repeat(120)}/${"f".repeat(120)}.json`;
  await mkdir(join(src, "d".repeat(120)));
  await writeFile(join(src, long), "long name");
  await mkdir(join(src, "abc"));
  await symlink("../blobs/sha256/aaaa", join(src, "abc/layer.tar"));
  await link(join(src, "odd"), join(src, "hard"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("TarIndex", () => {
  for (const format of ["gnu", "posix"]) {
    test(`${format} tar: offsets, long names, symlinks and hard links resolve to the bytes`, async () => {
      const archive = join(dir, `${format}.tar`);
      await gnuTar(archive, join(dir, "src"), [`--format=${format}`, "."]);
      const index = await TarIndex.read(archive);
      expect(await bytesOf(index, "blobs/sha256/aaaa")).toBe("layer bytes");
      expect(await bytesOf(index, "./blobs/sha256/aaaa")).toBe("layer bytes");
      expect(await bytesOf(index, "abc/layer.tar")).toBe("layer bytes");
      expect(await bytesOf(index, `${"d".repeat(120)}/${"f".repeat(120)}.json`)).toBe("long name");
      expect(await bytesOf(index, "odd")).toBe("x".repeat(513));
      expect(await bytesOf(index, "hard")).toBe("x".repeat(513));
      expect(index.get("empty").size).toBe(0);
      expect(index.has("missing")).toBe(false);
      expect(() => index.get("missing")).toThrow(/has no file "missing"/);
    });
  }

  test("an entry with .. is refused", async () => {
    const archive = join(dir, "dotdot.tar");
    await gnuTar(archive, join(dir, "src"), ["--transform=s,^odd$,../escape.txt,", "odd"]);
    await expect(TarIndex.read(archive)).rejects.toThrow(/unsafe entry "\.\.\/escape\.txt"/);
  });

  test("an absolute entry is refused", async () => {
    const archive = join(dir, "abs.tar");
    await gnuTar(archive, join(dir, "src"), ["-P", "--transform=s,^odd$,/etc/evil,", "odd"]);
    await expect(TarIndex.read(archive)).rejects.toThrow(/unsafe entry "\/etc\/evil"/);
  });

  test("symlinks pointing outside are refused", async () => {
    for (const target of ["/etc/passwd", "../../outside", "../x"]) {
      const src = join(dir, `link-${target.length}`);
      await mkdir(src, { recursive: true });
      await symlink(target, join(src, "l"));
      const archive = join(dir, `link-${target.length}.tar`);
      await gnuTar(archive, src, ["l"]);
      await expect(TarIndex.read(archive)).rejects.toThrow(PushError);
      await expect(TarIndex.read(archive)).rejects.toThrow(/pointing outside the archive/);
    }
  });

  test("a tar cut inside an entry is reported as corrupt", async () => {
    const archive = join(dir, "cut.tar");
    await gnuTar(archive, join(dir, "src"), ["odd", "blobs"]);
    await truncate(archive, 700);
    await expect(TarIndex.read(archive)).rejects.toThrow(/corrupt or truncated/);
  });

  test("garbage is reported as corrupt, a missing file as missing", async () => {
    const archive = join(dir, "garbage.tar");
    await writeFile(archive, Buffer.alloc(2048, 0x41));
    await expect(TarIndex.read(archive)).rejects.toThrow(/bad header checksum/);
    await expect(TarIndex.read(join(dir, "nope.tar"))).rejects.toThrow(/cannot open archive .*nope\.tar: no such file/);
  });
});

describe("names and links, pure", () => {
  test.each([
    ["./", ""],
    [".", "."],
    ["./a/b/", "a/b"],
    ["././a", "a"],
    ["a//b", "a/b"],
    ["a/./b/../c", "a/c"],
    ["a/b/", "a/b"],
    ["a///", "a"],
    ["a./b", "a./b"],
    ["dir0/b", "dir0/b"],
  ])("clean(%p) is %p", (name, cleaned) => {
    expect(clean(name)).toBe(cleaned);
  });

  test("safeName refuses absolute names and .. parts, and cleans the rest", () => {
    expect(safeName("./x/", "a.tar")).toBe("x");
    expect(safeName("..a/b..", "a.tar")).toBe("..a/b..");
    for (const name of ["/etc/passwd", "../x", "a/../../x", "a/.."]) {
      expect(() => safeName(name, "a.tar")).toThrow(new PushError(`archive a.tar has an unsafe entry "${name}" (absolute or with ".."): refusing it`));
    }
  });

  test("a symlink's target is relative to its folder; a hard link's is an archive name", () => {
    expect(linkTarget({ name: "a/l", type: "SymbolicLink", linkpath: "../x" })).toBe("x");
    expect(linkTarget({ name: "a/l", type: "SymbolicLink", linkpath: "b/c" })).toBe("a/b/c");
    expect(linkTarget({ name: "l", type: "SymbolicLink", linkpath: "x" })).toBe("x");
    expect(linkTarget({ name: "a/l", type: "SymbolicLink" })).toBe("a");
    expect(linkTarget({ name: "a/h", type: "Link", linkpath: "x" })).toBe("x");
    expect(linkTarget({ name: "a/h", type: "Link", linkpath: "./b/c/" })).toBe("b/c");
  });

  test("links that leave the archive are refused; the rest pass", () => {
    const refused = (name: string, type: string, linkpath: string) =>
      expect(() => safeLink({ name, type, linkpath }, "a.tar")).toThrow(
        new PushError(`archive a.tar has a link "${name}" -> "${linkpath}" pointing outside the archive: refusing it`),
      );
    refused("l", "SymbolicLink", "/etc/passwd");
    refused("a/l", "SymbolicLink", "../..");
    refused("l", "SymbolicLink", "..");
    refused("a/l", "SymbolicLink", "../../x");
    refused("h", "Link", "../x");
    refused("h", "Link", "/abs");
    for (const [name, linkpath] of [
      ["a/l", "../x"],
      ["a/l", "..x"],
      ["l", "x/.."],
    ]) {
      expect(() => safeLink({ name: name as string, type: "SymbolicLink", linkpath }, "a.tar")).not.toThrow();
    }
    expect(() => safeLink({ name: "a/l", type: "SymbolicLink" }, "a.tar")).not.toThrow();
  });

  test("extended records are named in words", () => {
    expect(extendedName("ExtendedHeader")).toBe("a pax extended header");
    expect(extendedName("GlobalExtendedHeader")).toBe("a pax global header");
    expect(extendedName("NextFileHasLongLinkpath")).toBe("a GNU long link-name record");
    expect(extendedName("NextFileHasLongPath")).toBe("a GNU long-name record");
    expect(extendedName("OldGnuLongPath")).toBe("a GNU long-name record");
  });

  test("GNU long-name records set the next entry's path (or link path) up to the first NUL", () => {
    const data = Buffer.from("dir0/name0\0garbage\0more");
    expect(applyExtended("NextFileHasLongPath", data, undefined, undefined)).toEqual({ extended: { path: "dir0/name0" }, global: undefined });
    expect(applyExtended("OldGnuLongPath", data, undefined, undefined)).toEqual({ extended: { path: "dir0/name0" }, global: undefined });
    const global = { path: "g" };
    const both = applyExtended("NextFileHasLongLinkpath", data, { path: "kept" }, global);
    expect(both).toEqual({ extended: { path: "kept", linkpath: "dir0/name0" }, global: { path: "g" } });
    expect(both.global).toBe(global);
  });

  test("pax records: an extended header for the next entry, a global one for all", () => {
    const record = Buffer.from("25 path=a/long/name.json\n");
    const extended = applyExtended("ExtendedHeader", record, undefined, undefined);
    // node-tar's Pax records whether it is global; HeaderData does not declare it.
    expect(extended.extended).toMatchObject({ path: "a/long/name.json", global: false });
    expect(extended.global).toBeUndefined();
    const global = applyExtended("GlobalExtendedHeader", record, { path: "next" }, undefined);
    expect(global.global).toMatchObject({ path: "a/long/name.json", global: true });
    expect(global.extended).toEqual({ path: "next" });
  });

  test("a header node-tar cannot represent becomes the caller's corrupt-archive error", () => {
    const block = Buffer.from(rawTarHeader({ name: "big", typeflag: "0", size: 2n ** 60n }));
    expect(() => parseHeader(block, 1536, undefined, undefined, (why) => new PushError(`bad: ${why}`))).toThrow(
      new PushError("bad: the header at byte 1536 cannot be read (parsed number outside of javascript safe integer range)"),
    );
    expect(parseHeader(Buffer.from(rawTarHeader({ name: "ok", typeflag: "0", size: 5 })), 0, undefined, undefined, () => new Error("no")).size).toBe(5);
  });
});

/** A pax record: "<length> key=value\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = body.length + 1;
  while (`${length}${body}`.length !== length) length++;
  return `${length}${body}`;
}

/** A header (raw, any type flag) and its data padded to whole blocks. */
function entry(name: string, typeflag: string, data: Uint8Array | string = "", linkname?: string): Uint8Array {
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  const header = rawTarHeader({
    name,
    typeflag,
    size: typeflag === "0" || typeflag === "L" || typeflag === "K" || typeflag === "N" || typeflag === "x" || typeflag === "g" ? bytes.length : 0,
    linkname,
  });
  const padded = new Uint8Array(Math.ceil(bytes.length / 512) * 512);
  padded.set(bytes);
  return Buffer.concat([header, padded]);
}

const END = new Uint8Array(1024);

describe("TarIndex.read: the walk", () => {
  let tars: string;
  let count = 0;
  beforeAll(async () => {
    tars = await mkdtemp(join(tmpdir(), "tar-index-walk-"));
  });
  afterAll(async () => {
    await rm(tars, { recursive: true, force: true });
  });
  const write = async (...parts: Uint8Array[]): Promise<string> => {
    const path = join(tars, `t${count++}.tar`);
    await writeFile(path, Buffer.concat(parts));
    return path;
  };

  test("every entry's name, data offset and size; directories cleaned of their slash", async () => {
    const path = await write(
      makeTar([
        { path: "a", data: "x".repeat(513) },
        { path: "dir/", type: "Directory" },
        { path: "dir/b", data: "y" },
      ]),
    );
    const index = await TarIndex.read(path);
    expect(index.names()).toEqual(["a", "dir", "dir/b"]);
    expect(index.get("a")).toMatchObject({ name: "a", offset: 512, size: 513 });
    expect(index.get("dir/b")).toMatchObject({ name: "dir/b", offset: 2560, size: 1 });
    expect(index.has("dir")).toBe(true);
  });

  test("a tar without end-of-archive blocks has every entry, the last one ending at the end of the file", async () => {
    const path = await write(entry("first", "0", "1"), entry("last", "0", "z".repeat(512)));
    const index = await TarIndex.read(path);
    expect(index.names()).toEqual(["first", "last"]);
    expect(index.get("last")).toMatchObject({ offset: 1536, size: 512 });
    const empty = await write(entry("only", "0"));
    expect((await TarIndex.read(empty)).names()).toEqual(["only"]);
  });

  test("whatever follows the end-of-archive block is not read", async () => {
    const path = await write(entry("a", "0", "1"), END, Buffer.alloc(512, 0x41));
    expect((await TarIndex.read(path)).names()).toEqual(["a"]);
  });

  test("an entry one byte past the end of the file is cut", async () => {
    const bytes = Buffer.from(entry("cut", "0", "z".repeat(512)));
    const path = await write(bytes.subarray(0, 1023));
    await expect(TarIndex.read(path)).rejects.toThrow(new PushError(`archive ${path} is corrupt or truncated: entry "cut" ends past the end of the file`));
  });

  test("a folder or a path through a file cannot be opened as an archive", async () => {
    await expect(TarIndex.read(tars)).rejects.toThrow(new PushError(`archive ${tars} is not a file`));
    const file = await write(END);
    await expect(TarIndex.read(join(file, "x"))).rejects.toThrow(new RegExp(`^cannot open archive ${file}/x: ENOTDIR`));
  });

  test("a pax header applies to the next entry only; a global one is no entry", async () => {
    const path = await write(
      entry("pax_global_header", "g", paxRecord("comment", "made by a test")),
      entry("PaxHeaders/x", "x", paxRecord("path", "long/dir0/name.json")),
      entry("short1", "0", "1"),
      entry("short2", "0", "2"),
      END,
    );
    expect((await TarIndex.read(path)).names()).toEqual(["long/dir0/name.json", "short2"]);
  });

  test("GNU long names and long link names, old and new style", async () => {
    const long = `${"d".repeat(150)}0/file`;
    const path = await write(
      entry("././@LongLink", "L", `${long}\0`),
      entry(long.slice(0, 99), "0", "bytes"),
      entry("././@LongLink", "K", `${long}\0`),
      entry("link", "2", "", long.slice(0, 99)),
      entry("././@LongLink", "N", "old0/name\0"),
      entry("old-truncated", "0", "o"),
      END,
    );
    const index = await TarIndex.read(path);
    expect(index.names()).toEqual([long, "link", "old0/name"]);
    expect(index.get("link")).toMatchObject({ name: long, size: 5 });
  });

  test("a link name longer than a header holds (pax linkpath) is the one followed and checked", async () => {
    const long = `${"d".repeat(150)}/file`;
    const path = await write(
      entry("PaxHeaders/p", "x", paxRecord("path", long)),
      entry("short", "0", "bytes"),
      entry("PaxHeaders/l", "x", paxRecord("linkpath", long)),
      entry("link", "2", "", "cut-short"),
      END,
    );
    expect((await TarIndex.read(path)).get("link")).toMatchObject({ name: long, size: 5 });
    const hostile = await write(entry("PaxHeaders/l", "x", paxRecord("linkpath", "/etc/passwd")), entry("link", "2", "", "harmless"), END);
    await expect(TarIndex.read(hostile)).rejects.toThrow(
      new PushError(`archive ${hostile} has a link "link" -> "/etc/passwd" pointing outside the archive: refusing it`),
    );
  });

  test("GNU tar's own archives: a symlink to a name past 100 characters resolves, in both formats", async () => {
    const src = join(tars, "long-link");
    const folder = "d".repeat(120);
    await mkdir(join(src, folder), { recursive: true });
    await writeFile(join(src, folder, "f".repeat(40)), "hi");
    await symlink(`${folder}/${"f".repeat(40)}`, join(src, "link"));
    for (const format of ["gnu", "posix"]) {
      const archive = join(tars, `long-link-${format}.tar`);
      await gnuTar(archive, src, [`--format=${format}`, "."]);
      const index = await TarIndex.read(archive);
      expect(await bytesOf(index, "link")).toBe("hi");
    }
  });

  test(`an extended record may hold ${EXTENDED_HEADER_LIMIT} bytes, not one more`, async () => {
    expect(EXTENDED_HEADER_LIMIT).toBe(1024 * 1024);
    const record = Buffer.alloc(EXTENDED_HEADER_LIMIT);
    record.write("name0\0");
    const fits = await write(entry("././@LongLink", "L", record), entry("x", "0", "1"));
    expect((await TarIndex.read(fits)).names()).toEqual(["name0"]);
    const over = await write(entry("././@LongLink", "L", Buffer.alloc(EXTENDED_HEADER_LIMIT + 1)), entry("x", "0", "1"));
    await expect(TarIndex.read(over)).rejects.toThrow(
      new PushError(`archive ${over} is corrupt or truncated: a GNU long-name record at byte 0 claims 1048577 bytes`),
    );
  });

  test(`an entry name may have ${NAME_LIMIT} characters, not one more`, async () => {
    expect(NAME_LIMIT).toBe(4096);
    const fits = await write(entry("././@LongLink", "L", "n".repeat(NAME_LIMIT)), entry("x", "0", "1"));
    expect((await TarIndex.read(fits)).names()).toEqual(["n".repeat(NAME_LIMIT)]);
    const over = await write(entry("././@LongLink", "L", "n".repeat(NAME_LIMIT + 1)), entry("x", "0", "1"));
    await expect(TarIndex.read(over)).rejects.toThrow(new PushError(`archive ${over} is corrupt or truncated: an entry name of 4097 characters at byte 5120`));
  });

  test("a size no file can have (from a pax record) is refused", async () => {
    for (const size of ["1.5", "1e30"]) {
      const path = await write(entry("PaxHeaders/x", "x", paxRecord("size", size)), entry("x", "0", "1"), END);
      await expect(TarIndex.read(path)).rejects.toThrow(
        new PushError(`archive ${path} is corrupt or truncated: the entry at byte 1024 has an impossible size`),
      );
    }
  });

  test("a regular file's link name is ignored, wherever it points", async () => {
    const path = await write(entry("f", "0", "data", "/etc/passwd"), END);
    expect((await TarIndex.read(path)).get("f")).toMatchObject({ name: "f", offset: 512, size: 4 });
  });

  test("links are followed up to 15 hops; a 16th, or a loop, finds nothing", async () => {
    const chain = (links: number) => [
      entry("target", "0", "t"),
      ...Array.from({ length: links }, (_, i) => entry(`l${i + 1}`, "2", "", i === 0 ? "target" : `l${i}`)),
      END,
    ];
    const fifteen = await TarIndex.read(await write(...chain(15)));
    expect(fifteen.get("l15")).toMatchObject({ name: "target", size: 1 });
    const sixteen = await TarIndex.read(await write(...chain(16)));
    expect(sixteen.has("l15")).toBe(true);
    expect(sixteen.has("l16")).toBe(false);
    const loop = await TarIndex.read(await write(entry("a", "2", "", "b"), entry("b", "2", "", "a"), END));
    expect(loop.has("a")).toBe(false);
    expect(() => loop.get("a")).toThrow(new PushError(`archive ${loop.path} has no file "a"`));
  });

  test("a hard link in a folder names its target from the archive's root", async () => {
    const index = await TarIndex.read(await write(entry("odd", "0", "o"), entry("dir/odd", "0", "d"), entry("dir/h", "1", "", "odd"), END));
    expect(index.get("dir/h")).toMatchObject({ name: "odd", size: 1 });
  });

  // Last: it reads 100,001 headers (seconds), and `bun test --bail` in the mutation run stops before it
  // once an earlier test has failed.
  test(
    `an archive may not have more than ${ENTRY_LIMIT} entries`,
    async () => {
      expect(ENTRY_LIMIT).toBe(100_000);
      const n = ENTRY_LIMIT + 1;
      const template = Buffer.from(rawTarHeader({ name: "", typeflag: "0", size: 0 }));
      // The checksum of a header with an empty name, less the checksum field; each name adds its bytes.
      let base = 8 * 0x20;
      for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) base += template[i] as number;
      const all = Buffer.alloc(n * 512 + 1024);
      for (let i = 0; i < n; i++) {
        const at = i * 512;
        template.copy(all, at);
        const name = `e${i}`;
        all.write(name, at, "latin1");
        let sum = base;
        for (let k = 0; k < name.length; k++) sum += name.charCodeAt(k);
        all.write(`${sum.toString(8).padStart(6, "0")}\0 `, at + 148, "latin1");
      }
      const path = await write(all);
      await expect(TarIndex.read(path)).rejects.toThrow(new PushError(`archive ${path} has more than 100000 entries: it is not an image archive`));
    },
    { timeout: 60_000 },
  );
});
