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
 * all be the same size (only the last may be smaller) and at least the advertised minimum.
 */
export function planUpload(size: number, limits: ChunkLimits): UploadPlan {
  const ceiling = Math.min(limits.max ?? Infinity, limits.cap ?? Infinity);
  if (size <= ceiling) return { kind: "monolithic" };
  const min = limits.min ?? 0;
  if (ceiling < min) {
    throw new RangeError(
      `chunk size ${ceiling} is below the registry's minimum chunk length ${min}: raise --chunk-size`,
    );
  }
  if (ceiling < 1) throw new RangeError(`chunk size must be at least 1 byte, got ${ceiling}`);
  const chunkSize = Math.floor(ceiling);
  const chunks: Chunk[] = [];
  for (let start = 0; start < size; start += chunkSize) {
    chunks.push({ start, end: Math.min(start + chunkSize, size) - 1 });
  }
  return { kind: "chunked", chunkSize, chunks };
}
