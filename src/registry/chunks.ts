/** What the registry (or the user) allows for one request body. */
export interface ChunkLimits {
  /** OCI-Chunk-Min-Length: every chunk but the last must be at least this. */
  min?: number;
  /** OCI-Chunk-Max-Length: no request body may exceed this. */
  max?: number;
  /** --chunk-size / CHUNK_SIZE: a proxy's limit the registry does not advertise. */
  cap?: number;
}

export interface Chunk {
  /** First byte offset, inclusive. */
  start: number;
  /** Last byte offset, inclusive, as Content-Range wants it. */
  end: number;
}

export type UploadPlan = { kind: "monolithic" } | { kind: "chunked"; chunkSize: number; chunks: Chunk[] };

/**
 * Decides how a blob of `size` bytes travels. One PUT when it fits under every limit; otherwise
 * equal chunks of one size, because serverless-registry turns chunks into R2 multipart parts that must
 * all be the same size (only the last may be smaller) and at least the advertised minimum. It also
 * refuses a chunk whose Content-Range has start == end, so the size is lowered until no one-byte last
 * chunk remains.
 */
export function planUpload(size: number, limits: ChunkLimits): UploadPlan {
  const ceiling = Math.floor(Math.min(limits.max ?? Infinity, limits.cap ?? Infinity));
  if (size <= ceiling) return { kind: "monolithic" };
  const min = Math.max(limits.min ?? 1, 2);
  let chunkSize = ceiling;
  while (size % chunkSize === 1 && chunkSize > min) chunkSize--;
  if (ceiling < min || size % chunkSize === 1) {
    throw new RangeError(
      ceiling < min
        ? `chunk size ${ceiling} is below the registry's minimum chunk length ${min}: raise --chunk-size`
        : `no chunk size from ${min} to ${ceiling} splits ${size} bytes without a one-byte last chunk, which the registry refuses`,
    );
  }
  const chunks: Chunk[] = [];
  for (let start = 0; start < size; start += chunkSize) {
    chunks.push({ start, end: Math.min(start + chunkSize, size) - 1 });
  }
  return { kind: "chunked", chunkSize, chunks };
}

/** What the upload session's headers allow, and anything the user should hear about them. */
export interface NegotiatedLimits {
  limits: ChunkLimits;
  notices: string[];
}

// Registries advertise sizes in bytes; anything past a petabyte is not a limit anyone means.
const ABSURD = 2 ** 50;

/**
 * Reads `OCI-Chunk-Min-Length` / `OCI-Chunk-Max-Length` strictly (digits only: "1e30" is not 1) and
 * combines them with `--chunk-size`. An unreadable or absurd header counts as absent, a minimum above
 * the maximum is ignored, and when the registry's maximum is below `--chunk-size` the user is told.
 */
export function negotiateLimits(minHeader: string | null, maxHeader: string | null, cap: number | undefined): NegotiatedLimits {
  const notices: string[] = [];
  const read = (value: string | null, name: string): number | undefined => {
    if (value === null || value.trim() === "") return undefined;
    const text = value.trim();
    const number = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(number) || number < 1 || number > ABSURD) {
      notices.push(`the registry sent ${name}: ${JSON.stringify(text.slice(0, 40))}, which is not a usable size: ignoring it`);
      return undefined;
    }
    return number;
  };
  let min = read(minHeader, "OCI-Chunk-Min-Length");
  const max = read(maxHeader, "OCI-Chunk-Max-Length");
  if (min !== undefined && max !== undefined && min > max) {
    notices.push(`the registry's OCI-Chunk-Min-Length (${min}) is above its OCI-Chunk-Max-Length (${max}): ignoring the minimum`);
    min = undefined;
  }
  if (cap !== undefined && max !== undefined && max < cap) {
    notices.push(`the registry accepts at most ${max} bytes per request: sending chunks of ${max} bytes, not the ${cap} of --chunk-size`);
  }
  const limits: ChunkLimits = {};
  if (min !== undefined) limits.min = min;
  if (max !== undefined) limits.max = max;
  if (cap !== undefined) limits.cap = cap;
  return { limits, notices };
}

/** The largest body a request may carry under these limits, if any is set. */
export function ceilingOf(limits: ChunkLimits): number | undefined {
  const ceiling = Math.min(limits.max ?? Infinity, limits.cap ?? Infinity);
  return Number.isFinite(ceiling) ? Math.floor(ceiling) : undefined;
}
