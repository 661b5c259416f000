/**
 * A stored value: either a response, a JSON head (status, headers, freshness facts) after its
 * 4-byte length, then the body bytes; or a vary marker (at the primary key of a URL whose response
 * varies), VARY_TAG then the Vary'd header names, lower case, sorted, comma-separated.
 */
export interface EntryHead {
  /** Status. */
  s: number;
  /** Response headers as a flat name/value list (end-to-end headers of the upstream response only). */
  h: string[];
  /** Stored at (ms, wall clock). */
  t: number;
  /** Freshness lifetime (ms). */
  l: number;
  /** Age the response already had when it was stored (seconds, from its Age header). */
  a: number;
  /** Generation stamp (see CacheLookup). */
  k: number;
  /** Vary'd request header names (lower case, sorted) and the values this entry was stored for. */
  v: [string, string][];
  /** May answer requests carrying credentials (the response said public or s-maxage). */
  p: boolean;
  /** Must not be served stale (must-revalidate, proxy-revalidate, s-maxage, no-cache). */
  r: boolean;
  /** Seconds it may be served stale while revalidating, and when the upstream fails (RFC 5861); absent in entries of earlier versions (the route's settings then). */
  w?: number;
  e?: number;
}

export interface Entry {
  head: EntryHead;
  body: Buffer;
}

export function encodeEntry(head: EntryHead, body: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(head));
  const out = Buffer.allocUnsafe(4 + json.length + body.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  body.copy(out, 4 + json.length);
  return out;
}

/** The first byte of a vary marker: a response's head length would need to be 4 GB to start with it. */
const VARY_TAG = 0xff;

export interface VaryMarker {
  /** The Vary'd header names, comma-separated (see EntryHead.v). */
  readonly vary: string;
}

export function encodeMarker(vary: string): Buffer {
  const out = Buffer.allocUnsafe(1 + Buffer.byteLength(vary, 'latin1'));
  out[0] = VARY_TAG;
  out.write(vary, 1, 'latin1');
  return out;
}

/** null for bytes that are neither an entry nor a marker (another writer's key, a truncated value). */
export function decodeEntry(buf: Buffer): Entry | VaryMarker | null {
  if (buf.length > 0 && buf[0] === VARY_TAG) return { vary: buf.toString('latin1', 1) };
  if (buf.length < 4) return null;
  const n = buf.readUInt32BE(0);
  if (4 + n > buf.length) return null;
  try {
    const head = JSON.parse(buf.toString('utf8', 4, 4 + n)) as EntryHead;
    if (typeof head.s !== 'number' || !Array.isArray(head.h)) return null;
    return { head, body: buf.subarray(4 + n) };
  } catch {
    return null;
  }
}
