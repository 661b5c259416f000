/** A stored response: a JSON head (status, headers, freshness facts) then the body bytes. */
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
  /** Vary'd request header names and the values this entry was stored for. */
  v: [string, string][];
  /** May answer requests carrying credentials (the response said public or s-maxage). */
  p: boolean;
  /** Must not be served stale (must-revalidate, no-cache). */
  r: boolean;
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

/** null for bytes that are not an entry (another writer's key, a truncated value). */
export function decodeEntry(buf: Buffer): Entry | null {
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
