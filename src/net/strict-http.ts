import type { IncomingMessage } from 'node:http';
import { GatewayError } from '../errors';
import { headerVariants } from '../plugins/auth/identity-headers';

/**
 * The request line is HTTP/1.0 or HTTP/1.1 (RFC 9112 §2.3). Node 20's parser (llhttp) refuses other
 * versions itself except 0.9 and 2.0 (server-limits.ts answers those 505), and lets through a line
 * without a version as HTTP/0.9, which is also what a raw LF inside the target turns a request into
 * (the rest of the line then reads as a header line). The minor version is checked too, in case a
 * later parser lets more through. Two integer compares: all the bare route pays.
 */
export function speaksHttp1(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 1 && req.httpVersionMinor <= 1;
}

/** The refusal of a request line that is not HTTP/1.0 or HTTP/1.1: 400 without a version, 505 for another one. */
export function versionError(req: IncomingMessage): GatewayError {
  if (req.httpVersionMajor === 0) {
    return new GatewayError('BAD_REQUEST_LINE', { detail: 'The request line has no HTTP version, or a bare LF inside its target' });
  }
  return new GatewayError('HTTP_VERSION_NOT_SUPPORTED', { detail: `HTTP/${req.httpVersion} is not spoken on this connection; use HTTP/1.1` });
}

/** An absolute-form target (RFC 9112 §3.2.2): scheme, authority without userinfo, then the path and query if any. */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#@]+)([/?][^#]*)?$/i;

/**
 * Turns an absolute-form request target into origin-form, in place, or returns null when it is not
 * one. A server must accept the absolute-form, and must then ignore the Host header and use the
 * target's authority (RFC 9112 §3.2.2): so the authority replaces every Host (the raw copies too,
 * which the relay and the duplicate count read) and the path and query become the URL, and routing,
 * the cache key and X-Forwarded-Host all see the same host.
 */
export function takeAbsoluteForm(req: IncomingMessage): string | null {
  const m = ABSOLUTE_FORM.exec(req.url ?? '');
  if (m === null) return null;
  const authority = m[1];
  const rest = m[2] ?? '/';
  const target = rest.charCodeAt(0) === 63 /* ? */ ? '/' + rest : rest;
  const raw = req.rawHeaders;
  let found = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') {
      raw[i + 1] = authority;
      found = true;
    }
  }
  if (!found) raw.push('Host', authority);
  req.headers.host = authority;
  req.url = target;
  return target;
}

const HOST = 1;
const AUTHORIZATION = 2;
const API_KEY = 3;

/**
 * Bytes a Host value may hold (RFC 9112 §3.2: uri-host [ ":" port ], RFC 3986 reg-name, IP literal):
 * unreserved, pct-encoded, sub-delims, ":" and the brackets of an IPv6 literal. A "/", "?", "#", "@",
 * a space or a backslash make it another URI part: Node passes such a Host on, and the cache key, the
 * invalidation of Location / Content-Location and X-Forwarded-Host would carry it.
 */
const HOST_BYTE = new Uint8Array(128);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]") HOST_BYTE[c.charCodeAt(0)] = 1;

function validHost(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c > 127 || HOST_BYTE[c] === 0) return false;
  }
  return true;
}

/** Slot of a header name's shape (its length and first letter, in any case), as in proxy/headers.ts. */
function shape(name: string): number {
  const n = name.length;
  return (n < 63 ? n : 63) * 32 + (name.charCodeAt(0) & 31);
}

/**
 * Headers a request may carry once: Host (RFC 9112 §3.2, whose value must also be a valid host) and the credentials, Authorization and the
 * API-key header in any of its spellings. Node keeps the first Host and Authorization and drops the
 * others without a word, and keeps X-API-Key and X_API_Key as two headers; a route that forwards
 * credentials would forward every copy, and an upstream reading another copy than the one verified
 * would see a forged identity. So the copies are counted in rawHeaders, on every route.
 *
 * Every request has a Host, so the scan cannot be skipped; it rules most names out by their length
 * and first letter (one table load per header) and looks the rest up by the spelling they came in.
 */
export class SingleHeaders {
  private readonly shapes = new Uint8Array(64 * 32);
  private readonly kinds = new Map<string, number>();
  private readonly apiKeyHeader: string;

  constructor(apiKeyHeader: string) {
    this.apiKeyHeader = apiKeyHeader;
    this.add('host', HOST);
    this.add('authorization', AUTHORIZATION);
    for (const v of headerVariants(apiKeyHeader)) this.add(v, API_KEY);
    // The spellings clients send, so that the usual request needs no toLowerCase.
    this.add('Host', HOST);
    this.add('Authorization', AUTHORIZATION);
    this.add(apiKeyHeader, API_KEY);
  }

  private add(name: string, kind: number): void {
    if (!this.kinds.has(name)) this.kinds.set(name, kind);
    this.shapes[shape(name)] = 1;
  }

  /**
   * The refusal of a request whose raw headers repeat one of them, or whose Host is invalid, or
   * missing when `needsHost` (an HTTP/1.1 request, RFC 9112 §3.2), or null.
   */
  check(raw: readonly string[], needsHost: boolean): GatewayError | null {
    let hosts = 0;
    let authorizations = 0;
    let apiKeys = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i];
      if (this.shapes[shape(name)] === 0) continue;
      const kind = this.kinds.get(name) ?? this.kinds.get(name.toLowerCase());
      if (kind === HOST) {
        hosts++;
        if (!validHost(raw[i + 1])) return new GatewayError('BAD_HOST', { detail: 'The Host header must be a host name or address with an optional port (RFC 9112 §3.2)' });
      }
      else if (kind === AUTHORIZATION) authorizations++;
      else if (kind === API_KEY) apiKeys++;
    }
    if (hosts > 1) return new GatewayError('DUPLICATE_HEADER', { detail: 'The request has several Host headers' });
    if (hosts === 0 && needsHost) return new GatewayError('BAD_HOST', { detail: 'An HTTP/1.1 request must carry a Host header (RFC 9112 §3.2)' });
    if (authorizations > 1) return new GatewayError('DUPLICATE_HEADER', { detail: 'The request has several Authorization headers' });
    if (apiKeys > 1) {
      return new GatewayError('DUPLICATE_HEADER', { detail: `The request has several ${this.apiKeyHeader} headers (any case, "_" for "-")` });
    }
    return null;
  }
}
