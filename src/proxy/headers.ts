/**
 * Header hygiene for both directions of the relay (RFC 9110 §7.6.1): hop-by-hop headers and every
 * header named in Connection stay on their hop. Names are compared in lower case.
 */

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
 * Copies a Node rawHeaders list ([name, value, name, value, ...]) into `out`, leaving out `drop` and
 * headers named in Connection; the values the relay sets itself are reported through `facts`.
 */
export function copyRequestHeaders(raw: string[], drop: ReadonlySet<string>, out: string[], facts: ClientHeaderFacts): void {
  let extra: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    if (!drop.has(lower)) {
      if (lower === 'content-length' && raw[i + 1] !== '0') facts.hasBody = true;
      out.push(name, raw[i + 1]);
      continue;
    }
    switch (lower) {
      case 'transfer-encoding':
        facts.hasBody = true;
        break;
      case 'connection': {
        const tokens = connectionTokens(raw[i + 1]);
        if (tokens) extra = extra ? extra.concat(tokens) : tokens;
        break;
      }
      case 'host':
        facts.host ??= raw[i + 1];
        break;
      case 'x-forwarded-for':
        facts.xForwardedFor = facts.xForwardedFor === undefined ? raw[i + 1] : `${facts.xForwardedFor}, ${raw[i + 1]}`;
        break;
      case 'x-forwarded-proto':
        facts.xForwardedProto ??= raw[i + 1];
        break;
      case 'x-forwarded-host':
        facts.xForwardedHost ??= raw[i + 1];
        break;
      case 'forwarded':
        facts.forwarded = facts.forwarded === undefined ? raw[i + 1] : `${facts.forwarded}, ${raw[i + 1]}`;
        break;
    }
  }
  if (extra) removeNamed(out, new Set(extra));
}

function removeNamed(list: string[], names: ReadonlySet<string>): void {
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
 * hop-by-hop headers; fills `facts` when given.
 */
export function copyResponseHeaders(raw: Buffer[], out: string[], facts: ResponseHeaderFacts | null = null): void {
  let hasDate = false;
  let contentLength = -1;
  let extra: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1');
    const lower = name.toLowerCase();
    if (RESPONSE_DROP.has(lower)) {
      if (lower === 'connection') {
        const tokens = connectionTokens(raw[i + 1].toString('latin1'));
        if (tokens) extra = extra ? extra.concat(tokens) : tokens;
      }
      continue;
    }
    const value = raw[i + 1].toString('latin1');
    if (lower === 'date') hasDate = true;
    else if (lower === 'content-length') {
      // undici has checked the value (digits only); a second Content-Length makes the length unknown here.
      const n = Number(value);
      contentLength = contentLength === -1 && Number.isSafeInteger(n) ? n : -2;
    }
    out.push(name, value);
  }
  if (extra) removeNamed(out, new Set(extra));
  if (facts !== null) {
    facts.hasDate = hasDate;
    facts.contentLength = contentLength < 0 ? -1 : contentLength;
  }
}
