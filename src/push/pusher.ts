/**
 * Walks the image model and pushes it, after go-containerregistry's remote.Write / WriteIndex:
 *   1. every blob of every chosen platform is prepared and uploaded, several at once, and proven to be
 *      what the manifests will say (digest and diff_id);
 *   2. only then the configs, then each platform's manifest (by digest), then the index (or the single
 *      manifest) under every tag.
 * Nothing names a blob before that blob is proven. A manifest is pushed as the source's own bytes when
 * every blob it names goes as stored; otherwise it is rebuilt with consistent media types.
 * Streaming sources hand their bytes to `sink` while they are read, and uploads start at once.
 */
import { open, writeFile } from "node:fs/promises";
import pLimit from "p-limit";
import { PushError } from "../errors.ts";
import { BlobFile, type BlobIdentity } from "../layers/blob-file.ts";
import type { BlobCache } from "../layers/cache.ts";
import type { Records } from "../layers/records.ts";
import { checkFacts, inspectLayer, VerificationError, type LayerFacts } from "../layers/verify.ts";
import type { Logger } from "../log.ts";
import type { Descriptor, Platform } from "../model/descriptor.ts";
import { sha256Digest, shortDigest } from "../model/digest.ts";
import type { ArtifactNode, BlobBytes, ImageNode, IndexNode, Layer, ManifestNode, StreamEntryInfo, StreamSink, Taken } from "../model/image.ts";
import { rawManifest, type BuiltManifest } from "../model/manifest.ts";
import { layerMediaType, sniffCompression, type ManifestFormat } from "../model/media-types.ts";
import { formatPlatform } from "../model/platform.ts";
import { uploadBlob, type SessionStore, type UploadOutcome } from "../registry/blob-upload.ts";
import type { RegistryClient } from "../registry/client.ts";
import { putManifest } from "../registry/manifest-put.ts";
import { peek, startsLikeJson } from "../streams.ts";
import { artifactNames, choosePlatforms, collect, flatten } from "./choose.ts";
import type { PushEvents } from "./events.ts";
import { imageManifest, indexManifest, type PushedLayer } from "./manifests.ts";
import { compressLayer, download, prepareLayer, RepairableError, storedPrepared, variantOf, type LayerCompression, type Prepared } from "./prepare.ts";

export interface PushOptions {
  client: RegistryClient;
  /** `host[:port]` of the destination, for records of where blobs went. */
  registry: string;
  repository: string;
  /** The first tag and every --tag. */
  tags: string[];
  cache: BlobCache;
  records?: Records;
  compression: LayerCompression;
  /** --format: the manifest format to write; when absent, rebuilt manifests keep the source's format (OCI if none). */
  format?: ManifestFormat;
  /** --platform: the platforms to push (all when empty). */
  platforms: Platform[];
  chunkCap?: number;
  concurrency: number;
  /** --mount-from: repositories of the registry to mount blobs from. */
  mountFrom: string[];
  dryRun: boolean;
  /** Blobs of a remote source the destination already holds are trusted by digest. */
  trustRemoteDigests?: boolean;
  events: PushEvents;
  log: Logger;
  /** Where the image comes from, for messages about a source that lies: "archive /tmp/app.tar". */
  source?: string;
  /** Aborted on the first failure so other work stops; the client uses its signal. */
  abort: AbortController;
  /**
   * Streamed entries start uploading as they pass, before the stream tells which images it holds: only
   * for a stream all of which is pushed (an engine's save of the one image, every platform). Otherwise
   * they are compressed into the cache and uploaded once an image names them, so nothing else of the
   * archive reaches the registry.
   */
  uploadAsStreamed?: boolean;
}

/** What happened to one blob, for the summary and --json. */
export interface BlobResult {
  label: string;
  digest: string;
  size: number;
  mediaType: string;
  status: "pushed" | "skipped" | "mounted" | "would push";
  chunks: number;
  origin: Prepared["origin"] | "config" | "manifest";
  bytesSent: number;
}

export interface PlatformResult {
  platform: string;
  digest: string;
  mediaType: string;
  size: number;
  config: string;
  layers: number;
  /** The source's manifest bytes went unchanged. */
  unchanged: boolean;
}

export interface PushResult {
  kind: "image" | "index" | "artifact";
  digest: string;
  mediaType: string;
  size: number;
  /** The source's manifest (or index) bytes went unchanged: same digest as the source. */
  unchanged: boolean;
  platforms: PlatformResult[];
  blobs: BlobResult[];
  bytesSent: number;
  /** Bytes sent beyond each pushed blob's size (retries, resumes). */
  bytesResent: number;
  /** Platforms left out: not chosen, or absent from the source. */
  leftOut: string[];
}

/** A stream entry the sink took: what it became and its upload, started as it passed or once an image names it. */
interface SinkTaken extends Taken {
  prepared?: Prepared & { content?: Promise<string> };
  facts?: Promise<LayerFacts>;
  upload: LazyUpload;
  label: string;
  /** Stops this entry's upload alone: the entry turned out not to be part of the pushed image. */
  cancel: AbortController;
}

/** An upload begun at most once, by whichever asks first; `started` until then undefined. */
interface LazyUpload {
  start(): Promise<UploadOutcome>;
  readonly started?: Promise<UploadOutcome>;
}

function lazyUpload(begin: () => Promise<UploadOutcome>): LazyUpload {
  const lazy: { started?: Promise<UploadOutcome>; start(): Promise<UploadOutcome> } = { start: () => (lazy.started ??= begin()) };
  return lazy;
}

/** A layer uploaded and proven, and its line in the summary. */
interface LayerDone extends PushedLayer {
  result: BlobResult;
}

interface LayerJob {
  label: string;
  /** Resolves when the blob is uploaded and proven. */
  done: Promise<LayerDone>;
}

export class Pusher {
  private readonly uploads: ReturnType<typeof pLimit>;
  private readonly rebuilt = new WeakSet<IndexNode>();
  private readonly uploaded = new Map<string, Promise<UploadOutcome>>();
  private readonly results = new Map<string, BlobResult>();
  private readonly layerJobs = new Map<string, LayerJob>();
  private readonly files: BlobFile[] = [];
  /** Every entry a streaming source handed over, in stream order. */
  private readonly taken: SinkTaken[] = [];
  private streamed = 0;
  private bytesSent = 0;

  constructor(private readonly options: PushOptions) {
    this.uploads = pLimit(options.concurrency);
  }

  private get signal(): AbortSignal {
    return this.options.abort.signal;
  }

  /** Stops all other work after the first failure, which is the one the push reports. */
  private stop(error: unknown): void {
    if (!this.signal.aborted) this.options.abort.abort(error);
  }

  /** Names the source in messages about blobs that are not what it claims. */
  describeSource(description: string): void {
    this.options.source = description;
  }

  /** Where streaming sources hand each entry as it passes. */
  readonly sink: StreamSink = { take: (entry, stream) => this.take(entry, stream) };

  async push(root: ManifestNode): Promise<PushResult> {
    try {
      return await this.pushRoot(root);
    } catch (error) {
      this.options.abort.abort(error);
      throw error;
    } finally {
      await Promise.allSettled(this.files.map((f) => f.close()));
    }
  }

  // --- choosing what goes ------------------------------------------------------------------------

  private async pushRoot(source: ManifestNode): Promise<PushResult> {
    const leftOut: string[] = [];
    const root = this.chooseRoot(source, leftOut);
    for (const line of leftOut) this.options.log.warn(line);
    const images = collect(root);
    const multi = images.filter((n) => n.kind === "image").length > 1;
    const unused = this.cancelUnused(images);
    const artifacts = artifactNames(root);
    const label = (node: ImageNode | ArtifactNode, what: string) =>
      node.kind === "artifact" ? `${artifacts.get(node) ?? "attestation"} ${what}` : multi ? `${formatPlatform(node.platform)} ${what}` : what;
    // Stored zstd layers go as they are, and Docker's schema has no zstd type: say so before uploading anything.
    if (this.options.format === "docker") {
      for (const node of images) {
        const at = node.kind === "image" ? node.layers.findIndex((l) => l.compression === "zstd") : -1;
        if (node.kind === "image" && at >= 0) {
          throw new PushError(
            `--format docker: ${label(node, `layer ${at + 1}/${node.layers.length}`)} is stored as zstd, which a Docker v2 manifest cannot describe: use --format oci (the default)`,
          );
        }
      }
    }

    // 1. Layers of every image, and every blob of the artifacts, uploaded and proven.
    const layerDescriptors = new Map<ImageNode, Promise<LayerDone[]>>();
    for (const node of images) {
      if (node.kind === "image")
        layerDescriptors.set(
          node,
          this.pushLayers(node, (what) => label(node, what)),
        );
    }
    const artifactBlobs = images
      .filter((n): n is ArtifactNode => n.kind === "artifact")
      .map((node) => this.pushArtifactBlobs(node, (what) => label(node, what)));
    // The first failure stops the other uploads at once (their sessions are cancelled), and is the one reported.
    await Promise.allSettled([...layerDescriptors.values(), ...artifactBlobs].map((work) => work.catch((error: unknown) => this.stop(error))));
    this.signal.throwIfAborted();

    // 2. Configs, once every layer is known to be good.
    const configs = new Map<ImageNode, Descriptor>();
    await Promise.all(
      images
        .filter((n): n is ImageNode => n.kind === "image")
        .map(async (node) => {
          configs.set(node, await this.pushConfig(node, label(node, "config")));
        }),
    );
    this.signal.throwIfAborted();

    // 3. Manifests, children first, then the root under every tag.
    const built = new Map<ManifestNode, { manifest: BuiltManifest; unchanged: boolean }>();
    const platforms: PlatformResult[] = [];
    const manifestOf = async (node: ManifestNode): Promise<{ manifest: BuiltManifest; unchanged: boolean }> => {
      const known = built.get(node);
      if (known) return known;
      let result: { manifest: BuiltManifest; unchanged: boolean };
      if (node.kind === "image") {
        result = imageManifest(node, configs.get(node)!, await layerDescriptors.get(node)!, this.options.format);
      } else if (node.kind === "artifact") {
        result = { manifest: rawManifest(node.manifest.mediaType ?? "application/vnd.oci.image.manifest.v1+json", node.raw), unchanged: true };
      } else {
        const children: { descriptor: Descriptor; manifest: BuiltManifest; unchanged: boolean }[] = [];
        for (const child of node.children) {
          if (!child.node) continue;
          const pushed = await manifestOf(child.node);
          children.push({ descriptor: child.descriptor, ...pushed });
        }
        result = indexManifest(node, children, this.options.format, this.rebuilt.has(node));
      }
      built.set(node, result);
      return result;
    };
    const top = await manifestOf(root);
    // One line per platform the pushed index lists: one manifest may serve several (arm/v6 and arm/v7).
    const entries =
      root.kind === "index"
        ? flatten(root).flatMap((c) => (c.node?.kind === "image" ? [{ node: c.node, platform: c.descriptor.platform ?? c.node.platform }] : []))
        : root.kind === "image"
          ? [{ node: root, platform: root.platform }]
          : [];
    for (const { node, platform } of entries) {
      const { manifest, unchanged } = built.get(node)!;
      platforms.push({
        platform: formatPlatform(platform),
        digest: manifest.digest,
        mediaType: manifest.mediaType,
        size: manifest.bytes.length,
        config: node.config.digest,
        layers: node.layers.length,
        unchanged,
      });
    }
    if (!this.options.dryRun) {
      // Children by digest first: a registry refuses an index naming manifests it lacks.
      const pushedDigests = new Set<string>();
      for (const [node, { manifest }] of built) {
        if (node === root || pushedDigests.has(manifest.digest)) continue;
        pushedDigests.add(manifest.digest);
        await putManifest(this.options.client, this.options.repository, manifest.digest, manifest);
      }
      for (const tag of this.options.tags) await putManifest(this.options.client, this.options.repository, tag, top.manifest);
      // Only blobs this repository received in full: on serverless-registry a mounted (or found) blob may
      // be a link object, and a mount from a link answers the link's checksum, not the blob's digest.
      const uploaded = [...this.results.values()].filter((r) => r.status === "pushed").map((r) => r.digest);
      await this.options.records?.rememberPushed(this.options.registry, this.options.repository, uploaded);
    }
    const blobs = [...this.results.values()];
    // Entries of other images or platforms that finished uploading before the stream ended were sent,
    // but not re-sent: they are no fault's doing.
    const unusedBytes = (await Promise.allSettled(unused)).reduce((sum, u) => sum + (u.status === "fulfilled" ? u.value.bytesSent : 0), 0);
    const pushedBytes = blobs.filter((b) => b.status === "pushed").reduce((sum, b) => sum + b.size, 0) + unusedBytes;
    return {
      kind: root.kind,
      digest: top.manifest.digest,
      mediaType: top.manifest.mediaType,
      size: top.manifest.bytes.length,
      unchanged: top.unchanged,
      platforms,
      blobs,
      bytesSent: this.bytesSent,
      bytesResent: Math.max(0, this.bytesSent - pushedBytes),
      leftOut,
    };
  }

  /**
   * An engine's save uploads every entry as it passes (`uploadAsStreamed`), before the stream tells which
   * image will be pushed: the started uploads of entries no chosen image names are stopped (their
   * sessions deleted). Returns them, to wait for before the push ends.
   */
  private cancelUnused(images: (ImageNode | ArtifactNode)[]): Promise<UploadOutcome>[] {
    const used = new Set<Taken>();
    for (const node of images) {
      for (const { bytes } of node.kind === "image" ? node.layers : node.blobs) if (bytes.kind === "taken") used.add(bytes.taken);
    }
    const stopped: Promise<UploadOutcome>[] = [];
    for (const entry of this.taken) {
      const started = entry.upload.started;
      if (used.has(entry) || !started) continue;
      this.options.log.info(`${entry.label} is not part of the pushed image: its upload stops`);
      entry.cancel.abort(new PushError(`${entry.label} is not part of the pushed image`));
      if (entry.prepared?.expected && this.uploaded.get(entry.prepared.expected) === started) this.uploaded.delete(entry.prepared.expected);
      stopped.push(started);
    }
    return stopped;
  }

  /** --platform and missing platforms applied; a new index is remembered as one to build anew. */
  private chooseRoot(root: ManifestNode, leftOut: string[]): ManifestNode {
    const chosen = choosePlatforms(root, this.options.platforms, leftOut);
    if (chosen.kind === "index" && chosen !== root) this.rebuilt.add(chosen);
    return chosen;
  }

  // --- layers ------------------------------------------------------------------------------------

  private async pushLayers(node: ImageNode, label: (what: string) => string): Promise<LayerDone[]> {
    const jobs = node.layers.map((layer, i) => this.layerJob(layer, label(`layer ${i + 1}/${node.layers.length}`)));
    return Promise.all(jobs.map((j) => j.done));
  }

  /** One job per distinct layer: a layer that appears twice is prepared and uploaded once. */
  private layerJob(layer: Layer, label: string): LayerJob {
    const key = `${layer.diffId}|${layer.compression}|${layer.descriptor?.digest ?? ""}`;
    const existing = this.layerJobs.get(key);
    if (existing) {
      this.options.events.update(label, { phase: "waiting", note: `same layer as ${existing.label}` });
      existing.done.then(
        (d) =>
          this.options.events.update(label, {
            phase: d.result.status === "pushed" ? "pushed" : "exists",
            digest: d.digest,
            note: `same layer as ${existing.label}`,
          }),
        () => undefined,
      );
      return existing;
    }
    const job: LayerJob = { label, done: this.runLayer(layer, label) };
    job.done.catch(() => undefined);
    this.layerJobs.set(key, job);
    return job;
  }

  private async runLayer(layer: Layer, position: string): Promise<LayerDone> {
    let label = position;
    for (let attempt = 0; ; attempt++) {
      this.signal.throwIfAborted();
      let prepared: Prepared;
      let upload: Promise<UploadOutcome>;
      let verify: () => Promise<BlobIdentity>;
      const taken = layer.bytes.kind === "taken" ? (layer.bytes.taken as SinkTaken) : undefined;
      try {
        if (attempt === 0 && taken?.prepared) {
          // Compressed (or copied) as the stream went by, and uploading under the entry's name.
          label = taken.label;
          prepared = taken.prepared;
          upload = taken.upload.start();
          verify = this.takenProof(layer, taken);
        } else {
          prepared = await prepareLayer(layer, this.prepareContext(label, attempt > 0));
          this.files.push(prepared.file);
          verify = prepared.verify;
          upload = this.upload(prepared, label, this.commitCheck(prepared, label));
        }
      } catch (error) {
        throw this.explain(error, label, layer);
      }
      // A failed proof fails the file too: an upload of bytes with no digest to go by (gzip under a
      // docker-archive's layer.tar) waits for the identity only the proof gives, and would wait forever.
      const proving = this.proofFor(layer, prepared, upload, verify).catch((error: unknown) => {
        prepared.file.fail(error as Error);
        throw error;
      });
      const [uploadResult, proof] = await Promise.allSettled([upload, proving]);
      const failure =
        proof.status === "rejected"
          ? proof.reason
          : uploadResult.status === "rejected" && uploadResult.reason instanceof RepairableError
            ? uploadResult.reason
            : undefined;
      if (failure !== undefined) {
        if (failure instanceof RepairableError && attempt === 0 && layer.bytes.kind !== "unavailable") {
          this.options.log.warn(`${failure.message}; preparing the layer again from the source`);
          this.uploaded.delete(prepared.expected ?? "");
          continue;
        }
        throw this.explain(failure, label, layer);
      }
      if (proof.status === "rejected") {
        if (proof.reason instanceof RepairableError && attempt === 0 && layer.bytes.kind !== "unavailable") {
          this.options.log.warn(`${proof.reason.message}; preparing the layer again from the source`);
          continue;
        }
        throw this.explain(proof.reason, label, layer);
      }
      if (uploadResult.status === "rejected") throw this.explain(uploadResult.reason, label);
      const identity = proof.value;
      const outcome = uploadResult.value;
      const mediaType =
        prepared.asStored && layer.descriptor?.mediaType ? layer.descriptor.mediaType : layerMediaType(prepared.compression, this.options.format ?? "oci");
      const result = this.record(label, { mediaType, digest: identity.digest, size: identity.size }, outcome, prepared.origin);
      this.finished(label, identity, outcome, NOTES[outcome.status === "mounted" ? "mounted" : prepared.origin]);
      return { ...identity, compression: prepared.compression, asStored: prepared.asStored, ...(layer.descriptor ? { source: layer.descriptor } : {}), result };
    }
  }

  /**
   * What must hold before the final PUT commits a blob: compressed now, that its input was the layer;
   * from the cache, that the file still hashes to its name (hashed only once an upload really starts,
   * never for a blob the registry already has).
   */
  private commitCheck(prepared: Prepared, label: string): ((started: boolean) => Promise<unknown>) | undefined {
    if (prepared.origin === "compressed") return () => prepared.verify();
    if (prepared.origin !== "cache" || !prepared.expected) return undefined;
    const expected = prepared.expected;
    let hashing: Promise<void> | undefined;
    return (started) => {
      if (!started) return Promise.resolve();
      hashing ??= (async () => {
        const hash = new Bun.CryptoHasher("sha256");
        for await (const chunk of prepared.file.stream(0, undefined, { signal: this.signal })) hash.update(chunk);
        const digest = `sha256:${hash.digest("hex")}`;
        if (digest !== expected) {
          await this.options.cache.discardBlob(expected);
          throw new RepairableError(
            `${label}: the cached blob ${expected} holds other bytes (they hash to ${digest}); it was removed from ${this.options.cache.dir}`,
          );
        }
      })();
      return hashing;
    };
  }

  /**
   * The proof a layer needs before a manifest names it. A blob of another registry that the
   * destination already holds is trusted by its digest; everything else is proven from its bytes.
   */
  private async proofFor(layer: Layer, prepared: Prepared, upload: Promise<UploadOutcome>, verify: () => Promise<BlobIdentity>): Promise<BlobIdentity> {
    if (layer.bytes.kind === "remote" && prepared.asStored && prepared.expected && this.options.trustRemoteDigests) {
      const outcome = await upload.catch(() => undefined);
      if (outcome && outcome.status !== "pushed" && outcome.status !== "absent") return { digest: prepared.expected, size: layer.descriptor?.size ?? 0 };
    }
    return verify();
  }

  private takenProof(layer: Layer, taken: SinkTaken): () => Promise<BlobIdentity> {
    return async () => {
      const prepared = taken.prepared!;
      if (prepared.content) {
        const identity = await prepared.verify();
        const content = await prepared.content;
        if (content !== layer.diffId) throw new VerificationError(`its content hashes to ${content}, but the image config's diff_id is ${layer.diffId}`);
        return identity;
      }
      const facts = await taken.facts!;
      checkFacts(facts, { digest: layer.descriptor?.digest, size: layer.descriptor?.size, diffId: layer.diffId });
      await this.options.cache.prove(facts.digest, facts.size, facts.diffId);
      return { digest: facts.digest, size: facts.size };
    };
  }

  private prepareContext(label: string, fresh: boolean) {
    const { events } = this.options;
    return {
      cache: this.options.cache,
      compression: this.options.compression,
      signal: this.signal,
      label,
      fresh,
      onCompressing: (total: number) => events.update(label, { phase: "compressing", done: 0, total }),
      onCompressProgress: (done: number) => events.update(label, { done }),
    };
  }

  /** Uploads a prepared blob (once per digest), under the concurrency limit. */
  private upload(prepared: Prepared, label: string, commitCheck?: (started: boolean) => Promise<unknown>, cancel?: AbortController): Promise<UploadOutcome> {
    const key = prepared.expected;
    const existing = key ? this.uploaded.get(key) : undefined;
    if (existing) return existing;
    const { events, repository } = this.options;
    const signal = cancel?.signal ?? this.signal;
    const client = cancel ? this.options.client.fork(cancel.signal) : this.options.client;
    const work = (async () => {
      // Wait for the first bytes before taking an upload slot: a layer still queued for compression holds none.
      await prepared.file.waitFor(1, signal);
      // A blob still being compressed has no digest to HEAD or mount by. With --mount-from the user says
      // the registry probably holds it already: learn the digest first rather than stream every byte.
      // One already complete (compressed while an archive was read) is asked about by its digest.
      const digest =
        prepared.expected ??
        prepared.file.identity?.digest ??
        (this.options.mountFrom.length > 0 && !this.options.dryRun ? (await prepared.file.done).digest : undefined);
      return this.uploads(async () => {
        signal.throwIfAborted();
        events.update(label, { phase: "checking", digest });
        const mountFrom = await this.mountSources(digest);
        const outcome = await uploadBlob(client, repository, prepared.file, {
          label: `${label}${prepared.expected ? ` ${shortDigest(prepared.expected)}` : ""}`,
          log: this.options.log,
          chunkCap: this.options.chunkCap,
          digest,
          key: prepared.key,
          sessions: this.sessions(),
          mountFrom,
          dryRun: this.options.dryRun,
          growingAs: prepared.origin === "downloaded" ? "downloaded" : prepared.origin === "stored" ? "read" : "compressed",
          beforeCommit: commitCheck && (() => commitCheck(true)),
          onStart: (how, total) => {
            commitCheck?.(true).catch(() => undefined);
            events.update(label, { phase: "uploading", done: 0, total, note: how });
          },
          onProgress: (done, chunk) => events.update(label, { done, chunk }),
        });
        this.bytesSent += outcome.bytesSent;
        return outcome;
      }).catch((error: unknown) => {
        // A refused upload stops the rest before the next one takes this slot; a bad cache entry is
        // prepared again and a lying source is named by its layer (runLayer), so those go up as they are.
        if (!(error instanceof RepairableError) && !(error instanceof VerificationError) && !cancel?.signal.aborted) this.stop(error);
        throw error;
      });
    })();
    if (key) this.uploaded.set(key, work);
    work.catch(() => undefined);
    return work;
  }

  private async mountSources(digest: string | undefined): Promise<string[]> {
    const { mountFrom, records, registry, repository } = this.options;
    if (!digest) return [];
    const known = records ? ((await records.mountSources(registry)).get(digest) ?? []) : [];
    return [...new Set([...mountFrom, ...known])].filter((r) => r !== repository).slice(0, 3);
  }

  private sessions(): SessionStore | undefined {
    const { records, registry, repository } = this.options;
    if (!records) return undefined;
    // A streamed layer's session is also kept under its diff_id's name once compression told it, so a
    // next run that builds the image from the cache record (no save) finds it too.
    const names = (key: string) => [key, ...(this.sessionAliases.has(key) ? [this.sessionAliases.get(key)!] : [])];
    return {
      load: (key) => records.upload(registry, repository, key),
      save: (key, state) =>
        this.serial(key, async () => {
          // Names an earlier run gave the session are kept, so whichever finishes it drops them all.
          const before = (await records.upload(registry, repository, key))?.also ?? [];
          const all = [...new Set([...names(key), ...before])];
          for (const name of names(key)) await records.saveUpload({ registry, repository, key: name, ...state, also: all.filter((n) => n !== name) });
        }),
      drop: (key) =>
        this.serial(key, async () => {
          for (const name of names(key)) await records.dropUpload(registry, repository, name);
        }),
    };
  }

  /** Stream entry key -> the `<diff_id>/<variant>` key the same layer has when read from the cache. */
  private readonly sessionAliases = new Map<string, string>();
  /** Record writes of one session in call order (an alias copy must never follow the final drop). */
  private readonly sessionQueue = new Map<string, Promise<unknown>>();

  private serial(key: string, work: () => Promise<void>): Promise<void> {
    const next = (this.sessionQueue.get(key) ?? Promise.resolve()).then(work, work);
    this.sessionQueue.set(
      key,
      next.catch(() => undefined),
    );
    return next;
  }

  /**
   * A streamed layer's diff_id became known: its session is kept under that name too, including what
   * was recorded before (chunks confirmed while it was still being compressed).
   */
  private aliasSession(key: string, alias: string): void {
    this.sessionAliases.set(key, alias);
    const { records, registry, repository } = this.options;
    if (!records) return;
    void this.serial(key, async () => {
      const recorded = await records.upload(registry, repository, key);
      if (!recorded) return;
      await records.saveUpload({ ...recorded, key: alias, also: [key] });
      await records.saveUpload({ ...recorded, key, also: [alias] });
    }).catch(() => undefined);
  }

  // --- the stream sink ---------------------------------------------------------------------------

  /** A stream entry arrives: compress (or copy) it into the cache and start its upload at once. */
  private async take(entry: StreamEntryInfo, stream: ReadableStream<Uint8Array>): Promise<Taken> {
    const { head, whole } = await peek(stream);
    const compression = sniffCompression(head);
    // A JSON document too big to keep in memory (a large SBOM attestation) is a blob to push as stored.
    const json = startsLikeJson(head);
    // Which layer of the image it is becomes known only when the stream ends: name it by its entry.
    const hex = /[a-f0-9]{12,64}/.exec(entry.name)?.[0]?.slice(0, 12);
    const label = `layer ${hex ?? ++this.streamed}`;
    const ctx = this.prepareContext(label, true);
    const cancel = new AbortController();
    this.signal.addEventListener("abort", () => cancel.abort(this.signal.reason), { once: true });
    // Names the upload for a killed run's next run: the entry, since its digest is known only at its end.
    // (One name for every entry would hand each layer's session to the others.)
    const variant = variantOf(this.options.compression);
    const key = `stream:${entry.expectedDigest ?? entry.name}:${entry.size}/${compression === "none" && !json ? variant : "stored"}`;
    if (compression === "none" && !json) {
      const prepared = await compressLayer(undefined, { kind: "file", path: "", offset: 0, size: entry.size }, ctx, whole);
      prepared.key = key;
      prepared.content.then(
        (diffId) => this.aliasSession(key, `${diffId}/${variant}`),
        () => undefined,
      );
      this.files.push(prepared.file);
      const upload = lazyUpload(() => this.upload(prepared, label, () => prepared.verify(), cancel));
      if (this.options.uploadAsStreamed) upload.start();
      const taken: SinkTaken = {
        cancel,
        label,
        compression,
        prepared,
        upload,
        stored: prepared.content.then((digest) => ({ digest, size: entry.size })),
      };
      taken.stored.catch(() => undefined); // the failure surfaces through the layer's proof
      this.taken.push(taken);
      // The entry is read once compression took its last block; a failure (a full disk) stops the stream.
      await prepared.verify();
      return taken;
    }
    // Stored compressed bytes: copied into the cache as they come, uploaded and inspected meanwhile.
    const { cache } = this.options;
    const temp = cache.tempPath();
    await writeFile(temp, new Uint8Array(0));
    const file = await BlobFile.growing(temp);
    this.files.push(file);
    const facts = inspectLayer(file.stream(0, undefined, { signal: this.signal }), compression, this.signal);
    facts.catch(() => undefined);
    const pseudo: Layer = {
      diffId: "",
      compression,
      bytes: { kind: "file", path: temp, offset: 0, size: entry.size },
      ...(entry.expectedDigest ? { descriptor: { mediaType: "", digest: entry.expectedDigest, size: entry.size } } : {}),
    };
    const prepared = { ...storedPrepared(pseudo, file, "stored", cache, ctx), key };
    const upload = lazyUpload(() => this.upload(prepared, label, undefined, cancel));
    if (this.options.uploadAsStreamed) upload.start();
    const out = await open(temp, "w");
    const hash = new Bun.CryptoHasher("sha256");
    let size = 0;
    try {
      for await (const chunk of whole) {
        let written = 0;
        while (written < chunk.length) written += (await out.write(chunk, written)).bytesWritten;
        hash.update(chunk);
        size += chunk.length;
        file.grew(size);
      }
    } catch (error) {
      file.fail(error as Error);
      throw error;
    } finally {
      await out.close();
    }
    const digest = `sha256:${hash.digest("hex")}`;
    file.moved(await cache.adopt(temp, { digest, size }));
    file.finish({ digest, size });
    const taken: SinkTaken = { cancel, label, compression, prepared, upload, facts, stored: Promise.resolve({ digest, size }) };
    this.taken.push(taken);
    return taken;
  }

  // --- configs and artifacts ---------------------------------------------------------------------

  private async pushConfig(node: ImageNode, label: string): Promise<Descriptor> {
    const { bytes, digest } = node.config;
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new PushError(`${label}: the config hashes to ${actual}, not ${digest}`);
    const file = await this.memoryFile(bytes, digest);
    const prepared: Prepared = {
      file,
      compression: "none",
      asStored: true,
      expected: digest,
      origin: "stored",
      key: digest,
      verify: async () => ({ digest, size: bytes.length }),
    };
    const outcome = await this.upload(prepared, label).catch((error: unknown) => {
      throw this.explain(error, label);
    });
    const descriptor = { mediaType: node.config.mediaType, digest, size: bytes.length };
    this.record(label, descriptor, outcome, "config");
    this.finished(label, descriptor, outcome, outcome.status === "mounted" ? NOTES.mounted : undefined);
    return descriptor;
  }

  private async pushArtifactBlobs(node: ArtifactNode, label: (what: string) => string): Promise<void> {
    await Promise.all(
      node.blobs.map(async ({ descriptor, bytes }, i) => {
        const what = label(`blob ${i + 1}/${node.blobs.length}`);
        const file = await this.fileFor(bytes, descriptor);
        const prepared: Prepared = {
          file,
          compression: "none",
          asStored: true,
          expected: descriptor.digest,
          origin: "stored",
          key: descriptor.digest,
          verify: async () => {
            if (bytes.kind === "remote") return { digest: descriptor.digest, size: descriptor.size };
            const hash = new Bun.CryptoHasher("sha256");
            for await (const chunk of file.stream(0, descriptor.size, { signal: this.signal })) hash.update(chunk);
            const digest = `sha256:${hash.digest("hex")}`;
            if (digest !== descriptor.digest) throw new VerificationError(`its bytes hash to ${digest}, but the manifest names ${descriptor.digest}`);
            return { digest, size: descriptor.size };
          },
        };
        const [outcome, proof] = await Promise.allSettled([this.upload(prepared, what), prepared.verify()]);
        if (proof.status === "rejected") throw this.explain(proof.reason, what);
        if (outcome.status === "rejected") throw this.explain(outcome.reason, what);
        this.record(what, descriptor, outcome.value, "stored");
        this.finished(what, descriptor, outcome.value, outcome.value.status === "mounted" ? NOTES.mounted : undefined);
      }),
    );
  }

  private async fileFor(bytes: BlobBytes, descriptor: Descriptor): Promise<BlobFile> {
    if (bytes.kind === "file") {
      const file = await BlobFile.complete(bytes.path, bytes.offset, bytes.size, descriptor.digest);
      this.files.push(file);
      return file;
    }
    if (bytes.kind === "taken") {
      const taken = bytes.taken as SinkTaken;
      if (taken.prepared?.asStored) return taken.prepared.file;
      if (taken.small) return this.memoryFile(taken.small, descriptor.digest);
      if (taken.prepared) throw new PushError(`blob ${descriptor.digest} was compressed as the stream went by, so it cannot go as stored`);
    }
    if (bytes.kind === "remote") {
      // Streamed into the cache and checked against its size and digest, never held in memory.
      const file = await download(bytes, descriptor.digest, this.options.cache, this.signal);
      this.files.push(file);
      return file;
    }
    throw new PushError(`blob ${descriptor.digest} cannot be read`);
  }

  /** Small bytes (a config, an attestation) as a cache file, so they upload like any blob. */
  private async memoryFile(bytes: Uint8Array, digest: string): Promise<BlobFile> {
    const { cache } = this.options;
    let path = await cache.has(digest, bytes.length);
    if (!path || sha256Digest(await Bun.file(path).bytes()) !== digest) {
      const temp = cache.tempPath();
      await Bun.write(temp, bytes);
      path = await cache.adopt(temp, { digest, size: bytes.length });
    }
    await cache.touch(path);
    const file = await BlobFile.complete(path, 0, bytes.length, digest);
    this.files.push(file);
    return file;
  }

  // --- manifests ---------------------------------------------------------------------------------

  // --- bookkeeping -------------------------------------------------------------------------------

  /** The blob's last line; a dry run says how the blob would travel, with the registry's real limits. */
  private finished(label: string, identity: { digest: string; size: number }, outcome: UploadOutcome, note: string | undefined): void {
    const { events } = this.options;
    if (outcome.status === "absent") {
      const how = outcome.chunks > 1 ? `in ${outcome.chunks} chunks of at most ${outcome.chunkSize} bytes` : "in one request";
      this.options.log.info(`${label} ${shortDigest(identity.digest)}: would push ${identity.size} bytes ${how}`);
      events.update(label, { phase: "waiting", digest: identity.digest, note: "would push" });
      return;
    }
    const phase = outcome.status === "pushed" ? "pushed" : "exists";
    events.update(label, { phase, digest: identity.digest, total: identity.size, done: identity.size, note });
  }

  private record(label: string, descriptor: Descriptor, outcome: UploadOutcome, origin: BlobResult["origin"]): BlobResult {
    const status = outcome.status === "exists" ? "skipped" : outcome.status === "absent" ? "would push" : outcome.status;
    const existing = this.results.get(descriptor.digest);
    if (existing) return existing;
    const result: BlobResult = {
      label,
      digest: descriptor.digest,
      size: descriptor.size,
      mediaType: descriptor.mediaType,
      status,
      chunks: outcome.chunks,
      origin,
      bytesSent: outcome.bytesSent,
    };
    this.results.set(descriptor.digest, result);
    return result;
  }

  /**
   * Puts the layer's name in front of what went wrong; a lying source is named as such. A bad cache entry
   * for a layer the source cannot give again (an image built from the cache's record) stays repairable:
   * the command saves the image once more.
   */
  private explain(error: unknown, label: string, layer?: Layer): unknown {
    if (error instanceof RepairableError && layer?.bytes.kind === "unavailable") return error;
    if (error instanceof VerificationError) {
      return new PushError(`${label}${this.options.source ? ` of ${this.options.source}` : ""} is not what the image says: ${error.message}`);
    }
    // A RepairableError goes up as it is: index.ts repairs an image that came from the cache's record
    // by saving it again, which it can only do if it still knows the error for what it is.
    return error;
  }
}

const NOTES: Record<string, string | undefined> = {
  compressed: undefined,
  cache: "from .cache",
  stored: "as stored",
  downloaded: "copied",
  mounted: "mounted",
};
