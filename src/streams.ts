/** Small stream helpers the sources and the pusher share. */

/**
 * Reads the first chunk of `stream` (enough to sniff what the bytes are) and gives back a stream of
 * all of it, that chunk first, so nothing is read twice or held beyond one chunk.
 */
export async function peek(stream: ReadableStream<Uint8Array>): Promise<{ head: Uint8Array; whole: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const first = await reader.read();
  const head = first.done ? new Uint8Array(0) : first.value;
  const whole = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (head.length) controller.enqueue(head);
        if (first.done) controller.close();
      },
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return { head, whole };
}

/** Whether bytes start like a JSON document (`{` or `[` after whitespace): a tar layer never does. */
export function startsLikeJson(bytes: Uint8Array): boolean {
  for (const byte of bytes) {
    if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) continue;
    return byte === 0x7b || byte === 0x5b;
  }
  return false;
}
