import { Pool } from 'undici';
import type { Plugin } from '../../src/plugins';

export interface Shot {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  ms: number;
}

/**
 * Sends `count` requests at once, spread round-robin over `bases` (one undici pool per base, up to
 * `connections` sockets each), and returns every answer.
 */
export async function fire(
  bases: readonly string[],
  count: number,
  path: string,
  opts: { headers?: (i: number) => Record<string, string>; connections?: number; timeoutMs?: number } = {},
): Promise<Shot[]> {
  const pools = bases.map((b) => new Pool(b, { connections: opts.connections ?? 128 }));
  try {
    return await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const started = performance.now();
        const res = await pools[i % pools.length].request({
          path,
          method: 'GET',
          headers: opts.headers?.(i),
          headersTimeout: opts.timeoutMs ?? 30000,
          bodyTimeout: opts.timeoutMs ?? 30000,
        });
        await res.body.dump();
        return { status: res.statusCode, headers: res.headers, ms: performance.now() - started };
      }),
    );
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
}

export function countBy<T>(items: readonly T[], key: (t: T) => string | number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const it of items) {
    const k = String(key(it));
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** A test-only plugin: the identity the auth step would set, taken from an X-Test-Consumer header. */
export const identityFromHeader = (): Plugin[] => [
  {
    name: 'test-identity',
    stepFor: () => ({
      name: 'test-identity',
      run(ctx) {
        const id = ctx.req.headers['x-test-consumer'];
        if (typeof id === 'string') ctx.identity = { consumerId: id, roles: [], scopes: [], method: 'apiKey' };
        return true;
      },
    }),
  },
];

/** Reads one sample of a Prometheus text exposition, 0 when absent. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) total += Number(m[3]);
  }
  return total;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
