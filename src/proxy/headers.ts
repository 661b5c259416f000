/**
 * Header hygiene for both directions of the relay (RFC 9110 §7.6.1): hop-by-hop headers and every
 * header named in Connection stay on their hop. Names are compared in lower case.
 */

import type { HeaderStrings } from './header-strings';

/** Slot of a header name's shape (its length and first letter, in any case) in HeaderNames. */
function shape(name: string): number {
  const n = name.length;
  return (n < 63 ? n : 63) * 32 + (name.charCodeAt(0) & 31);
}

/**
 * A set of header names compared without regard to case, that rules most names out without
 * lowering or hashing them: a name is lowered and looked up only when some member has its length
 * and first letter, and on the relay's path nearly every header has none. (toLowerCase and a hash
 * of a fresh string per header were a visible share of the hot path.)
 */
export class HeaderNames implements Iterable<string> {
  private readonly shapes = new Uint8Array(64 * 32);
  private readonly names = new Set<string>();

  constructor(names: Iterable<string> = []) {
    for (const n of names) this.add(n);
  }

  add(name: string): this {
    const lower = name.toLowerCase();
    this.names.add(lower);
    this.shapes[shape(lower)] = 1;
    return this;
  }

  /** The member `name` is (in lower case), or null. */
  find(name: string): string | null {
    if (this.shapes[shape(name)] === 0) return null;
    const lower = name.toLowerCase();
    return this.names.has(lower) ? lower : null;
  }

  [Symbol.iterator](): Iterator<string> {
    return this.names[Symbol.iterator]();
  }
}

export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Headers the gateway never copies from the client: hop-by-hop ones, those it sets itself, and
 * `expect` (the gateway answers 100-continue itself; undici refuses to forward it).
 */
export const REQUEST_DROP: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'host',
  'expect',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
]);

/** Headers never copied back from the upstream: hop-by-hop ones and the request id the gateway owns. */
export const RESPONSE_DROP: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'x-request-id']);

/** What copyResponseHeaders looks at: the dropped names, and the two it reports. */
const RESPONSE_NOTED = new HeaderNames([...RESPONSE_DROP, 'date', 'content-length']);
const CONTENT_LENGTH = new HeaderNames(['content-length']);

/** How copyResponseHeaders treats a response header name: its lower-case form when it looks at it, else null. */
export function responseHeaderKind(name: string): string | null {
  return RESPONSE_NOTED.find(name);
}

/** Extra header names listed in a Connection value, beyond the usual keep-alive/close. */
export function connectionTokens(value: string): string[] | null {
  // The usual values name no header: no split for them.
  if (value.length <= 10) {
    const v = value.toLowerCase();
    if (v === 'keep-alive' || v === 'close') return null;
  }
  let out: string[] | null = null;
  for (const raw of value.split(',')) {
    const t = raw.trim().toLowerCase();
    if (t === '' || t === 'close' || t === 'keep-alive') continue;
    (out ??= []).push(t);
  }
  return out;
}

/** What the relay learns about the client's request while copying its headers. */
export interface ClientHeaderFacts {
  host: string | undefined;
  xForwardedFor: string | undefined;
  xForwardedProto: string | undefined;
  xForwardedHost: string | undefined;
  forwarded: string | undefined;
  /** The request announces a body (Content-Length above 0, or Transfer-Encoding). */
  hasBody: boolean;
}

/**
 * The value the nearest proxy added to a list header: the last item of the last line. A proxy that
 * appends (HAProxy add-header, Envoy append_x_forwarded_host) puts its own value last, behind
 * whatever the client sent, so an earlier copy may be forged; a single value is what goes upstream.
 */
function nearestListItem(value: string): string {
  const comma = value.lastIndexOf(',');
  return comma < 0 ? value : value.slice(comma + 1).trim();
}

/**
 * Copies a Node rawHeaders list ([name, value, name, value, ...]) into `out`, leaving out `drop` and
 * headers named in Connection; the values the relay sets itself are reported through `facts`.
 */
export function copyRequestHeaders(raw: string[], drop: HeaderNames, out: string[], facts: ClientHeaderFacts): void {
  let extra: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    const dropped = drop.find(name);
    if (dropped === null) {
      if (value !== '0' && CONTENT_LENGTH.find(name) !== null) facts.hasBody = true;
      out.push(name, value);
      continue;
    }
    switch (dropped) {
      case 'transfer-encoding':
        facts.hasBody = true;
        break;
      case 'connection': {
        const tokens = connectionTokens(value);
        if (tokens) extra = extra ? extra.concat(tokens) : tokens;
        break;
      }
      case 'host':
        facts.host ??= value;
        break;
      case 'x-forwarded-for':
        facts.xForwardedFor = facts.xForwardedFor === undefined ? value : `${facts.xForwardedFor}, ${value}`;
        break;
      case 'x-forwarded-proto':
        facts.xForwardedProto = nearestListItem(value);
        break;
      case 'x-forwarded-host':
        facts.xForwardedHost = nearestListItem(value);
        break;
      case 'forwarded':
        facts.forwarded = facts.forwarded === undefined ? value : `${facts.forwarded}, ${value}`;
        break;
    }
  }
  if (extra) removeNamed(out, new Set(extra));
}

/** Removes, in place, every header of a name/value list whose lowercase name is in `names`. */
export function removeNamed(list: string[], names: ReadonlySet<string>): void {
  let w = 0;
  for (let r = 0; r < list.length; r += 2) {
    if (names.has(list[r].toLowerCase())) continue;
    list[w++] = list[r];
    list[w++] = list[r + 1];
  }
  list.length = w;
}

/** What the relay learns about the upstream's response while copying its headers. */
export interface ResponseHeaderFacts {
  hasDate: boolean;
  /** The announced Content-Length, or -1. */
  contentLength: number;
}

/**
 * Turns undici's raw response headers (Buffers) into a flat list for res.writeHead, without
 * hop-by-hop headers; fills `facts` when given. The strings come from `strings`, the target's table
 * of the header bytes it sent before.
 */
export function copyResponseHeaders(raw: Buffer[], out: string[], strings: HeaderStrings, facts: ResponseHeaderFacts | null = null): void {
  let hasDate = false;
  let contentLength = -1;
  let extra: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const known = strings.name(raw[i]);
    const kind = known.kind;
    if (kind !== null && kind !== 'date' && kind !== 'content-length') {
      if (kind === 'connection') {
        const tokens = connectionTokens(known.valueFor(raw[i + 1]));
        if (tokens) extra = extra ? extra.concat(tokens) : tokens;
      }
      continue;
    }
    const value = known.valueFor(raw[i + 1]);
    if (kind === 'date') hasDate = true;
    else if (kind === 'content-length') {
      // undici has checked the value (digits only); a second Content-Length makes the length unknown here.
      const n = Number(value);
      contentLength = contentLength === -1 && Number.isSafeInteger(n) ? n : -2;
    }
    out.push(known.text, value);
  }
  if (extra) removeNamed(out, new Set(extra));
  if (facts !== null) {
    facts.hasDate = hasDate;
    facts.contentLength = contentLength < 0 ? -1 : contentLength;
  }
}
