/** Size of the name table (a power of two; slots go in pairs). */
const SLOTS = 1024;
/** Longest value kept for reuse; longer ones (cookies, long policies) are made into strings each time. */
const VALUE_ROOM = 128;
/** A name whose value differed this many times in a row stops keeping its value (ids, ETags), ... */
const MISSES_TO_STOP = 4;
/** ... and tries again after this many more. */
const RETRY_AFTER = 64;

function sameBytes(a: Uint8Array | null, aLength: number, b: Buffer): boolean {
  if (a === null || aLength !== b.length) return false;
  for (let i = 0; i < aLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A header name an upstream sent, with its last value. */
export class KnownName {
  readonly text: string;
  readonly bytes: Uint8Array;
  /** What the caller derived from the name once (HeaderStrings' `classify`). */
  readonly kind: string | null;
  private valueBytes: Uint8Array | null = null;
  private valueLength = -1;
  private lastValue = '';
  private misses = 0;

  constructor(raw: Buffer, kind: (name: string) => string | null) {
    this.text = raw.toString('latin1');
    this.bytes = Uint8Array.from(raw);
    this.kind = kind(this.text);
  }

  /** The value's string: the last one when the bytes are the same. */
  valueFor(raw: Buffer): string {
    if (sameBytes(this.valueBytes, this.valueLength, raw)) {
      this.misses = 0;
      return this.lastValue;
    }
    const text = raw.toString('latin1');
    const misses = ++this.misses;
    if (raw.length <= VALUE_ROOM && (misses < MISSES_TO_STOP || misses % RETRY_AFTER === 0)) {
      (this.valueBytes ??= new Uint8Array(VALUE_ROOM)).set(raw);
      this.valueLength = raw.length;
      this.lastValue = text;
    }
    return text;
  }
}

/**
 * The strings of the header bytes one upstream target sends. An upstream repeats its header names on
 * every response and most of its values (content types, cache policies, the date within a second):
 * comparing bytes with the last ones seen costs a fraction of making a string of them, which is a
 * call into Node per name and per value (measured: about 60-90 ns each, a dozen per response).
 * Names are kept in a two-way table by a hash of their length and three of their bytes; values per name.
 */
export class HeaderStrings {
  private readonly names: (KnownName | undefined)[] = new Array<KnownName | undefined>(SLOTS).fill(undefined);

  constructor(private readonly classify: (name: string) => string | null) {}

  name(raw: Buffer): KnownName {
    const n = raw.length;
    const slot = n === 0 ? 0 : (n * 31 + raw[0] * 7 + raw[n >> 1] * 3 + raw[n - 1]) & (SLOTS - 2);
    const first = this.names[slot];
    if (first !== undefined && sameBytes(first.bytes, first.bytes.length, raw)) return first;
    const second = this.names[slot + 1];
    if (second !== undefined && sameBytes(second.bytes, second.bytes.length, raw)) return second;
    // The newer of the two stays first; the older one makes room.
    const made = new KnownName(raw, this.classify);
    this.names[slot + 1] = first;
    this.names[slot] = made;
    return made;
  }
}
