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

export type UploadPlan =
  | { kind: "monolithic" }
  | { kind: "chunked"; chunkSize: number; chunks: Chunk[] };

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
