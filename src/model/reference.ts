import { UsageError } from "../errors.ts";

/** Where a push goes: `host[:port]/repository[:tag]`. */
export interface Reference {
  host: string;
  repository: string;
  tag: string;
}

const EXPECTED = "expected <host[:port]>/<repository>[:<tag>], e.g. registry.example.com/team/app:1.2";
// The distribution spec's grammar for repository path components and tags.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Parses a push target the way Docker does: the first path part is the registry host when it has a
 * `.` or `:` or is `localhost`. A reference without a host would mean Docker Hub, which this tool does
 * not guess; a digest cannot be pushed to.
 */
export function parseReference(input: string): Reference {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(input);
  const rest = scheme ? input.slice(scheme[0].length) : input;
  if (/^[^/]*@/.test(rest)) {
    // Never echo it: the part before @ may be user:password (also in https://user:password@host/...).
    throw new UsageError(`a reference cannot carry credentials: set USERNAME_REGISTRY and pipe the password on stdin; ${EXPECTED}`);
  }
  if (scheme) {
    throw new UsageError(`a reference has no scheme: drop "${scheme[0]}" (plain http is INSECURE_HTTP_PUSH=true or --insecure); ${EXPECTED}`);
  }
  const at = input.indexOf("@");
  if (at !== -1) {
    // Only what precedes the @: a digest needs no echo, and anything else after it is not ours to print.
    throw new UsageError(`cannot push to a digest reference "${input.slice(0, at)}@...": ${EXPECTED}`);
  }
  const slash = input.indexOf("/");
  const first = slash === -1 ? "" : input.slice(0, slash);
  if (!(first.includes(".") || first.includes(":") || first === "localhost")) {
    throw new UsageError(`"${input}" names no registry host: ${EXPECTED}`);
  }
  if (!validHost(first)) throw new UsageError(`invalid registry host "${first}" in "${input}": ${EXPECTED}`);
  let path = input.slice(slash + 1);
  let tag = "latest";
  const colon = path.lastIndexOf(":");
  if (colon !== -1) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) throw new UsageError(`invalid tag "${tag}" in "${input}": ${EXPECTED}`);
  }
  if (path === "" || !path.split("/").every((part) => COMPONENT.test(part))) {
    throw new UsageError(`invalid repository "${path}" in "${input}" (lowercase letters, digits and . _ - separators): ${EXPECTED}`);
  }
  return { host: first, repository: path, tag };
}

// Docker's host grammar (distribution/reference): dot-separated DNS labels or an IPv6 literal in
// brackets, then maybe a port. Anything else (`reg.io?x`, `reg.io\evil`, `reg.io#x`) would parse as a URL
// whose host is not the one named, and send the push somewhere else.
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::(\d+))?$/;

function validHost(host: string): boolean {
  const match = HOST.exec(host);
  if (!match) return false;
  const port = match[1];
  return port === undefined || (Number(port) >= 1 && Number(port) <= 65535);
}

export function formatReference(ref: Reference): string {
  return `${ref.host}/${ref.repository}:${ref.tag}`;
}

/** Where a copy comes from: `host[:port]/repository[:tag|@sha256:<hex>]`. */
export interface SourceReference {
  host: string;
  repository: string;
  /** A tag or a `sha256:` digest. */
  reference: string;
}

/** Parses `--from`: like a push target, but it may name a digest. Never echoes credentials. */
export function parseSourceReference(input: string): SourceReference {
  const at = input.indexOf("@");
  const slash = input.indexOf("/");
  if (at !== -1 && (slash === -1 || at < slash || /^[a-z]+:\/\//i.test(input))) {
    throw new UsageError(
      `--from: a reference cannot carry credentials or a scheme: log in with docker login (the Docker config is read for the source registry); ${EXPECTED}`,
    );
  }
  if (at !== -1) {
    const digest = input.slice(at + 1);
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new UsageError(`--from: "${digest.slice(0, 80)}" is not a sha256 digest`);
    const { host, repository } = parseReference(input.slice(0, at));
    return { host, repository, reference: digest };
  }
  const { host, repository, tag } = parseReference(input);
  return { host, repository, reference: tag };
}
