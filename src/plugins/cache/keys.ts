import { createHash } from 'node:crypto';

const digest = (s: string): string => createHash('sha256').update(s).digest('base64url').slice(0, 22);

/** Length-prefixed, so no value can end one part and start the next: no delimiter collisions. */
const part = (s: string): string => `${s.length}:${s}`;

/** Query parameters in a canonical order (raw bytes kept: decoding could merge distinct queries). */
export function sortedQuery(query: string): string {
  if (query.length <= 1) return '';
  const params = query.slice(1).split('&');
  if (params.length > 1) params.sort();
  return params.join('&');
}

export class CacheKeys {
  readonly routeGen: string;
  private readonly genPrefix: string;

  constructor(
    private readonly prefix: string,
    readonly route: string,
  ) {
    this.genPrefix = `${prefix}c:g:`;
    this.routeGen = `${this.genPrefix}r:${route}`;
  }

  entry(host: string, path: string, query: string, consumer: string): string {
    return `${this.prefix}c:e:` + createHash('sha256').update(part(this.route) + part('G') + part(host) + part(path) + part(sortedQuery(query)) + part(consumer)).digest('base64url');
  }

  /** The key of one variant of the entry at `primary`: the Vary'd header names and values, in name order. */
  variant(primary: string, vary: readonly (readonly [string, string])[]): string {
    const h = createHash('sha256');
    for (const [name, value] of vary) h.update(part(name) + part(value));
    return `${primary}:v:${h.digest('base64url')}`;
  }

  /** Every generation key an entry for `path` depends on: its route, the exact path, and each path prefix at a segment boundary. */
  gens(path: string): string[] {
    const out = [this.routeGen, exactGen(this.prefix, path), prefixGen(this.prefix, '/')];
    for (let i = path.indexOf('/', 1); i > 0; i = path.indexOf('/', i + 1)) out.push(prefixGen(this.prefix, path.slice(0, i)));
    if (path.length > 1) out.push(prefixGen(this.prefix, path));
    return out;
  }
}

export function exactGen(prefix: string, path: string): string {
  return `${prefix}c:g:e:${digest(path)}`;
}

/** A purge prefix is taken at segment boundaries: "/a/" and "/a" both mean /a and everything under it. */
export function prefixGen(prefix: string, path: string): string {
  const p = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return `${prefix}c:g:p:${digest(p)}`;
}

export function routeGen(prefix: string, route: string): string {
  return `${prefix}c:g:r:${route}`;
}
