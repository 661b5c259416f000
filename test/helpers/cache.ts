import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { startUpstream, type TestUpstream } from './upstream';

/**
 * An upstream whose answer is steered by the query (which is part of the cache key, so each
 * variant is its own entry): cc → Cache-Control, sc → Set-Cookie, vary → Vary, status, delay (ms),
 * trunc → announce 100 bytes and cut the connection after a few. The body tells which request
 * made it (a per-upstream counter) and what it saw.
 */
export async function startCacheUpstream(): Promise<TestUpstream & { count(pathPrefix: string): number }> {
  let n = 0;
  const up = await startUpstream(async (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const q = u.searchParams;
    const delay = Number(q.get('delay') ?? '0');
    if (delay > 0) await sleep(delay);
    n++;
    if (q.has('trunc')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100', 'cache-control': 'max-age=60' });
      res.write('partial');
      setTimeout(() => res.destroy(), 20);
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': q.get('cc') ?? 'max-age=60' };
    if (q.has('sc')) headers['set-cookie'] = q.get('sc')!;
    if (q.has('vary')) headers.vary = q.get('vary')!;
    const status = Number(q.get('status') ?? '200');
    const body = JSON.stringify({ n, method: req.method, path: u.pathname, auth: req.headers.authorization ?? null, lang: req.headers['accept-language'] ?? null });
    res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  });
  return Object.assign(up, { count: (prefix: string) => up.seen.filter((s) => s.url.startsWith(prefix)).length });
}
