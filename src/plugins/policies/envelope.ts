import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { removeNamed } from '../../proxy/headers';
import type { BodyWrap } from '../../proxy/relay';
import type { CompiledRoute } from '../../routes';
import type { Plugin } from '../types';

const TAIL = Buffer.from('}');
const NULL = Buffer.from('null');
/** Headers that describe the upstream's bytes, which the envelope changes. */
const STALE_VALIDATORS: ReadonlySet<string> = new Set(['etag', 'content-md5', 'accept-ranges']);

/** application/json and any +json type, except problem details, which keep their RFC 9457 shape. */
function isEnvelopedType(contentType: string): boolean {
  const semi = contentType.indexOf(';');
  const type = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  if (type === 'application/json') return true;
  return type.endsWith('+json') && type.startsWith('application/') && type !== 'application/problem+json';
}

/** ISO 8601 timestamps with the formatting of the current second done once (toISOString per response is costly). */
class IsoClock {
  private second = -1;
  private prefix = '';

  now(): string {
    const ms = Date.now();
    const second = Math.floor(ms / 1000);
    if (second !== this.second) {
      this.second = second;
      this.prefix = new Date(second * 1000).toISOString().slice(0, 20);
    }
    const frac = ms - second * 1000;
    return `${this.prefix}${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}Z`;
  }
}

/**
 * Wraps a JSON body as {"requestId", "timestamp", "data": <body>} while it streams: the head goes
 * out with the headers and the tail after the last upstream byte, so nothing is buffered. Bodies
 * that are not plain JSON (other types, compressed, partial, bodiless) pass untouched.
 */
function envelope(clock: IsoClock, ctx: RequestContext, status: number, headers: string[]): BodyWrap | null {
  if (status < 200 || status === 204 || status === 206 || status === 304 || ctx.req.method === 'HEAD') return null;
  let json = false;
  let lengthAt = -1;
  for (let i = 0; i < headers.length; i += 2) {
    switch (headers[i].toLowerCase()) {
      case 'content-type':
        json = isEnvelopedType(headers[i + 1]);
        break;
      case 'content-encoding':
        if (headers[i + 1].trim().toLowerCase() !== 'identity') return null;
        break;
      case 'content-length':
        lengthAt = i + 1;
        break;
    }
  }
  if (!json) return null;
  // Request ids are tokens of [A-Za-z0-9._-] (or UUIDs) by construction: nothing to escape.
  const head = Buffer.from(`{"requestId":"${ctx.id}","timestamp":"${clock.now()}","data":`, 'latin1');
  if (lengthAt >= 0) {
    const length = Number(headers[lengthAt]);
    headers[lengthAt] = String(head.length + (length === 0 ? NULL.length : length) + TAIL.length);
  }
  // The enveloped bytes differ on every response: the upstream's validators no longer describe them.
  removeNamed(headers, STALE_VALIDATORS);
  return { head, tail: TAIL, whenEmpty: NULL };
}

/**
 * The opt-in response envelope. The upstream is asked for an unencoded, whole representation
 * (Accept-Encoding and Range are not forwarded), since a compressed or partial body cannot be wrapped.
 */
export function envelopePlugin(): Plugin {
  const clock = new IsoClock();
  const transform = (ctx: RequestContext, status: number, headers: string[]) => envelope(clock, ctx, status, headers);
  return {
    name: 'envelope',
    stepFor(route: CompiledRoute): Step | null {
      if (!route.config.policies.envelope) return null;
      for (const h of ['accept-encoding', 'range', 'if-range']) route.dropRequestHeaders.add(h);
      route.addResponseTransform(transform);
      return null;
    },
  };
}
