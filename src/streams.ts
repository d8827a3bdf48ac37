/** Small stream helpers the sources and the pusher share. */

/**
 * Reads the start of `stream` (at least `min` bytes, or all of it when shorter: enough to sniff what the
 * bytes are, however the source happened to cut its chunks) and gives back a stream of all of it, that
 * start first, so nothing is read twice or held beyond what the start needed.
 */
export async function peek(stream: ReadableStream<Uint8Array>, min = 512): Promise<{ head: Uint8Array; whole: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let length = 0;
  let done = false;
  while (length < min) {
    const next = await reader.read();
    if (next.done) {
      done = true;
      break;
    }
    parts.push(next.value);
    length += next.value.length;
  }
  const head = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  const whole = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (head.length) controller.enqueue(head);
        if (done) controller.close();
      },
      async pull(controller) {
        const next = await reader.read();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
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
