/**
 * Text a registry, a proxy or a token service sent us is shown to a person, often on a terminal. A
 * terminal obeys control characters: ESC sequences can recolour, move the cursor, retitle the window or
 * rewrite lines already printed (hiding a warning), CR overwrites the line it is on, BEL rings. So every
 * such text passes through `terminalSafe` before it can reach stderr.
 */

// ESC followed by: CSI (`[` params final), OSC (`]` ... BEL or ST), DCS/SOS/PM/APC (`P X ^ _` ... ST),
// or any single character (two-character sequences such as `ESC c`, a full reset). Their 8-bit C1 forms
// (0x9b CSI, 0x9d OSC, 0x90/0x98/0x9e/0x9f strings) likewise, when a decoder let them through.
const SEQUENCES =
  /\x1b\[[0-?]*[ -/]*[@-~]?|\x9b[0-?]*[ -/]*[@-~]?|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?|\x1b[\s\S]?/g;
// Line breaks and tabs become a space so words stay apart; every other C0 control, DEL and C1 goes.
const BREAKS = /[\t\n\v\f\r]+/g;
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;
// Bidirectional overrides and isolates reorder what is displayed (the "Trojan Source" trick).
const BIDI = /[\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every terminal control sequence and control character removed. */
export function terminalSafe(text: string): string {
  return text.replace(SEQUENCES, "").replace(BREAKS, " ").replace(CONTROLS, "").replace(BIDI, "");
}

/** At most `max` characters of terminal-safe text, with `...` when cut. */
export function excerpt(text: string, max: number): string {
  // By code points, so a cut never splits a surrogate pair into a broken character.
  const chars = [...terminalSafe(text).trim()];
  return chars.length > max ? `${chars.slice(0, max - 3).join("")}...` : chars.join("");
}
