import type { Platform } from "./descriptor.ts";

/** `linux/arm64`, `linux/arm/v7`: how platforms are named on the command line and in messages. */
export function formatPlatform(platform: Platform | undefined): string {
  if (!platform) return "unknown platform";
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join("/");
}

/** Parses `os/arch[/variant]` (the form `docker --platform` takes); undefined when it is not one. */
export function parsePlatformText(text: string): Platform | undefined {
  const parts = text.trim().toLowerCase().split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/.test(p))) return undefined;
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant ? { os, architecture, variant } : { os, architecture };
}

// The names engines use for the same thing, and the variant an architecture has when none is written
// (containerd's platforms.Normalize).
const ARCH_ALIASES: Record<string, string> = { x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64", armhf: "arm", armel: "arm", i386: "386" };
const DEFAULT_VARIANT: Record<string, string> = { arm64: "v8", arm: "v7" };

function normalize(platform: Platform): { os: string; architecture: string; variant: string } {
  const architecture = ARCH_ALIASES[platform.architecture.toLowerCase()] ?? platform.architecture.toLowerCase();
  const variant = (platform.variant ?? "").toLowerCase() || DEFAULT_VARIANT[architecture] || "";
  return { os: platform.os.toLowerCase(), architecture, variant };
}

/**
 * Whether `candidate` is the platform the user asked for. A request without a variant matches every
 * variant of that architecture (`linux/arm` takes `linux/arm/v7` and `linux/arm/v6`); with one, it
 * must be the same once defaults are filled in (`linux/arm64` is `linux/arm64/v8`).
 */
export function platformMatches(wanted: Platform, candidate: Platform | undefined): boolean {
  if (!candidate) return false;
  const a = normalize(wanted);
  const b = normalize(candidate);
  if (a.os !== b.os || a.architecture !== b.architecture) return false;
  return wanted.variant === undefined || a.variant === b.variant;
}

/** Two descriptors name the same platform (after normalisation). */
export function samePlatform(a: Platform | undefined, b: Platform | undefined): boolean {
  if (!a || !b) return a === b;
  const x = normalize(a);
  const y = normalize(b);
  return x.os === y.os && x.architecture === y.architecture && x.variant === y.variant;
}
