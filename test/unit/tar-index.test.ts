import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { link, mkdir, mkdtemp, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PushError } from "../../src/errors.ts";
import { TarIndex } from "../../src/sources/tar-index.ts";

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
