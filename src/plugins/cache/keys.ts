import { hash } from 'node:crypto';
import type { GatewayConfig } from '../types';

// One-shot hashing: a Hash object per call (createHash) cost a measurable share of a cache hit.
const digest = (s: string): string => hash('sha256', s, 'base64url').slice(0, 22);

/** Paths (and URLs) whose generation keys (and entry keys) are remembered per route; then the memo starts over. */
const MEMO_SIZE = 4096;

/** Stores `value` in a bounded memo; a full memo starts over (the hot keys come straight back). */
function remember<V>(memo: Map<string, V>, key: string, value: V): V {
  if (memo.size >= MEMO_SIZE) memo.clear();
  memo.set(key, value);
  return value;
}

/** Length-prefixed, so no value can end one part and start the next: no delimiter collisions. */
const part = (s: string): string => `${s.length}:${s}`;

/** Query parameters in a canonical order (raw bytes kept: decoding could merge distinct queries). */
export function sortedQuery(query: string): string {
  if (query.length <= 1) return '';
  const params = query.slice(1).split('&');
  if (params.length > 1) params.sort();
  return params.join('&');
}

/**
 * One generation bump: the clock it takes its value from and the generation keys it writes. On
 * Redis it is one script call, so on a Cluster the clock and the keys share one slot.
 */
export interface Bump {
  readonly clock: string;
  readonly keys: readonly string[];
}

/**
 * The keys of one route's cache within a key space: `space` is the text every key starts with.
 *
 * Standalone and Sentinel: one space for the gateway, `<keyPrefix>c:` (one clock, path generations
 * shared by every route). Cluster: one space per route, `<keyPrefix>{c:<route>}`, a hash tag, so the
 * entries, variants, clock and generation keys a lookup reads are in one slot and one script call
 * serves them. The trade-off: one route's cache traffic lands on one shard (routes spread over the
 * shards), and an invalidation that spans routes writes each route's space (see CacheKeySpace).
 * Stamps and generations of a route come from its space's clock, so they stay comparable.
 */
export class CacheKeys {
  readonly clock: string;
  readonly routeGen: string;
  private readonly genPrefix: string;
  /** gens() of recent paths: a hit on a hot path hashes nothing for its generation keys. */
  private readonly gensMemo = new Map<string, readonly string[]>();
  /** entry() of recent requests: a hit on a hot URL hashes nothing. */
  private readonly entryMemo = new Map<string, string>();

  constructor(
    private readonly space: string,
    readonly route: string,
  ) {
    this.clock = `${space}clock`;
    this.genPrefix = `${space}g:`;
    this.routeGen = `${this.genPrefix}r:${route}`;
  }

  entry(host: string, path: string, query: string, consumer: string): string {
    // Unambiguous without hashing: the consumer is length-prefixed, and a Host value cannot hold a
    // line feed, which ends it. Raw query order: two orders are two memo slots for one key.
    const memoKey = `${consumer.length}:${consumer}${host}\n${path}${query}`;
    const known = this.entryMemo.get(memoKey);
    if (known !== undefined) return known;
    const key = `${this.space}e:` + hash('sha256', part(this.route) + part('G') + part(host) + part(path) + part(sortedQuery(query)) + part(consumer), 'base64url');
    return remember(this.entryMemo, memoKey, key);
  }

  /** The key of one variant of the entry at `primary`: the Vary'd header names and values, in name order. */
  variant(primary: string, vary: readonly (readonly [string, string])[]): string {
    let s = '';
    for (const [name, value] of vary) s += part(name) + part(value);
    return `${primary}:v:${hash('sha256', s, 'base64url')}`;
  }

  /** Every generation key an entry for `path` depends on: its route, the exact path, and each path prefix at a segment boundary. */
  gens(path: string): readonly string[] {
    const known = this.gensMemo.get(path);
    if (known !== undefined) return known;
    const keys = [this.routeGen, this.exactGen(path), this.prefixGen('/')];
    for (let i = path.indexOf('/', 1); i > 0; i = path.indexOf('/', i + 1)) keys.push(this.prefixGen(path.slice(0, i)));
    if (path.length > 1) keys.push(this.prefixGen(path));
    return remember(this.gensMemo, path, keys);
  }

  exactGen(path: string): string {
    return `${this.genPrefix}e:${digest(path)}`;
  }

  /** A purge prefix is taken at segment boundaries: "/a/" and "/a" both mean /a and everything under it. */
  prefixGen(path: string): string {
    return `${this.genPrefix}p:${digest(withoutSlash(path))}`;
  }
}

const withoutSlash = (path: string): string => (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path);

/** A route with prefix `prefix` can be asked for `path` (routing is at segment boundaries and ignores a trailing "/"). */
function covers(prefix: string, path: string): boolean {
  const p = withoutSlash(path);
  return prefix === '/' || p === prefix || p.startsWith(prefix + '/');
}

interface CachedRoute {
  readonly prefix: string;
  readonly keys: CacheKeys;
}

/**
 * The cache keys of a gateway config, and the bumps that invalidate entries. With one space
 * (standalone, Sentinel) an invalidation is one bump of shared keys, as it always was. With a
 * space per route (Cluster) the generation keys are per route, so an invalidation bumps every
 * route that could hold affected entries: every cached route whose prefix can match the path (for
 * an unsafe request or a path purge) or overlaps the purged prefix. Routing hosts and methods are
 * ignored, which only ever hides more entries, never fewer. A route removed by a reload is not
 * bumped; its entries are no longer served, and expire within their TTL.
 */
export class CacheKeySpace {
  /** The generation keys of the one space of standalone and Sentinel (shared by every route); null on a Cluster. */
  private readonly shared: CacheKeys | null;
  private readonly routes = new Map<string, CachedRoute>();

  constructor(config: Readonly<Pick<GatewayConfig, 'store' | 'routes'>>) {
    const prefix = config.store.redis.keyPrefix;
    const cluster = config.store.type === 'redis' && config.store.redis.mode === 'cluster';
    this.shared = cluster ? null : new CacheKeys(`${prefix}c:`, '');
    for (const r of config.routes) {
      if (r.cache === undefined) continue;
      this.routes.set(r.name, { prefix: r.match.prefix, keys: new CacheKeys(cluster ? `${prefix}{c:${r.name}}` : `${prefix}c:`, r.name) });
    }
  }

  /** The keys of a route with a cache. */
  keys(route: string): CacheKeys {
    const r = this.routes.get(route);
    if (r === undefined) throw new Error(`route ${route} has no cache`);
    return r.keys;
  }

  /** After a successful unsafe request to `path`, or a purge of exactly that path (any query). */
  path(path: string): Bump[] {
    if (this.shared !== null) return [{ clock: this.shared.clock, keys: [this.shared.exactGen(path)] }];
    const out: Bump[] = [];
    for (const r of this.routes.values()) if (covers(r.prefix, path)) out.push({ clock: r.keys.clock, keys: [r.keys.exactGen(path)] });
    return out;
  }

  /** A purge of `prefix` and every path under it. */
  prefix(prefix: string): Bump[] {
    if (this.shared !== null) return [{ clock: this.shared.clock, keys: [this.shared.prefixGen(prefix)] }];
    const out: Bump[] = [];
    for (const r of this.routes.values()) {
      if (covers(r.prefix, prefix) || covers(withoutSlash(prefix), r.prefix)) out.push({ clock: r.keys.clock, keys: [r.keys.prefixGen(prefix)] });
    }
    return out;
  }

  /** A purge of every entry of a route with a cache. */
  route(route: string): Bump[] {
    const keys = this.keys(route);
    return [{ clock: keys.clock, keys: [keys.routeGen] }];
  }
}
