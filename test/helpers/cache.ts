import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { startUpstream, type SeenRequest, type TestUpstream } from './upstream';

export interface CacheUpstream extends TestUpstream {
  count(pathPrefix: string): number;
  /** The current ETag of a path, in place of its `etag` query value (the resource changed). */
  etags: Map<string, string>;
  /** Paths whose requests get their connection cut (the upstream fails). */
  broken: Set<string>;
  /** The headers of the latest request to a path prefix. */
  last(pathPrefix: string): SeenRequest['headers'] | undefined;
}

/**
 * An upstream whose answer is steered by the query (which is part of the cache key, so each
 * variant is its own entry): cc → Cache-Control (empty: none), hdr → one more header "Name:value"
 * (repeatable), sc → Set-Cookie, vary → Vary, status, delay (ms),
 * trunc → announce 100 bytes and cut the connection after a few, etag → ETag "<value>", lm →
 * Last-Modified; a request whose If-None-Match (or, without one, If-Modified-Since) matches gets a
 * 304 with Cache-Control cc304 (else cc). The body tells which request made it (a per-upstream
 * counter) and what it saw.
 */
export async function startCacheUpstream(): Promise<CacheUpstream> {
  let n = 0;
  const etags = new Map<string, string>();
  const broken = new Set<string>();
  const up = await startUpstream(async (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const q = u.searchParams;
    const delay = Number(q.get('delay') ?? '0');
    if (delay > 0) await sleep(delay);
    n++;
    if (broken.has(u.pathname)) {
      res.destroy();
      return;
    }
    if (q.has('trunc')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100', 'cache-control': 'max-age=60' });
      res.write('partial');
      setTimeout(() => res.destroy(), 20);
      return;
    }
    const etag = etags.get(u.pathname) ?? q.get('etag');
    const lm = q.get('lm');
    const inm = req.headers['if-none-match'];
    const ims = req.headers['if-modified-since'];
    const unchanged = inm !== undefined ? etag !== null && inm === `"${etag}"` : ims !== undefined && lm !== null && Date.parse(lm) <= Date.parse(ims);
    if (unchanged) {
      const h: Record<string, string> = { 'cache-control': q.get('cc304') ?? q.get('cc') ?? 'max-age=60', 'x-validated': String(n) };
      if (etag !== null) h.etag = `"${etag}"`;
      res.writeHead(304, h);
      res.end();
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': q.get('cc') ?? 'max-age=60' };
    if (headers['cache-control'] === '') delete headers['cache-control'];
    for (const h of q.getAll('hdr')) headers[h.slice(0, h.indexOf(':')).toLowerCase()] = h.slice(h.indexOf(':') + 1);
    if (etag !== null) headers.etag = `"${etag}"`;
    if (lm !== null) headers['last-modified'] = lm;
    if (q.has('sc')) headers['set-cookie'] = q.get('sc')!;
    if (q.has('vary')) headers.vary = q.get('vary')!;
    const status = Number(q.get('status') ?? '200');
    const body = JSON.stringify({ n, method: req.method, path: u.pathname, auth: req.headers.authorization ?? null, lang: req.headers['accept-language'] ?? null });
    res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  });
  const matching = (prefix: string) => up.seen.filter((s) => s.url.startsWith(prefix));
  return Object.assign(up, { count: (prefix: string) => matching(prefix).length, etags, broken, last: (prefix: string) => matching(prefix).at(-1)?.headers });
}
