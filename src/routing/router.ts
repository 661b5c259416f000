import type { RouteConfig } from '../config/schema';

/** What the router needs to know about a compiled route. */
export interface Routable {
  readonly config: RouteConfig;
}

export type RouteMatch<R> =
  | { kind: 'route'; route: R }
  | { kind: 'not-found' }
  /** `route` is the route the path and host matched (the first of several): it names the refusal. */
  | { kind: 'method-not-allowed'; allow: string; route: R };

interface Candidate<R> {
  route: R;
  /** The answer when this candidate matches, made once. */
  matched: RouteMatch<R>;
  exactHosts: Set<string> | null;
  wildcardHosts: string[];
  methods: Set<string> | null;
}

function hostMatches<R>(c: Candidate<R>, host: string): boolean {
  if (!c.exactHosts) return true;
  if (c.exactHosts.has(host)) return true;
  for (const suffix of c.wildcardHosts) if (host.endsWith(suffix)) return true;
  return false;
}

const NOT_FOUND: RouteMatch<never> = Object.freeze({ kind: 'not-found' });

/** Lower-cased host name of a Host header, without the port. */
export function hostName(header: string | undefined): string {
  if (!header) return '';
  let end = header.length;
  if (header.charCodeAt(0) === 91 /* [ */) {
    end = header.indexOf(']') + 1 || end;
  } else {
    const colon = header.indexOf(':');
    if (colon >= 0) end = colon;
  }
  return header.slice(0, end).toLowerCase();
}

/**
 * Longest-prefix routing at segment boundaries. Routes are indexed by prefix, so a lookup costs
 * one map probe per path segment whatever the number of routes.
 */
export class Router<R extends Routable> {
  private readonly byPrefix = new Map<string, Candidate<R>[]>();
  /** Some route matches on Host: without one, the Host header plays no part in routing. */
  readonly usesHosts: boolean;

  constructor(routes: readonly R[]) {
    for (const route of routes) {
      const { prefix, hosts, methods } = route.config.match;
      const exact = hosts?.filter((h) => !h.startsWith('*.')).map((h) => h.toLowerCase());
      const cand: Candidate<R> = {
        route,
        matched: Object.freeze({ kind: 'route', route }),
        exactHosts: hosts ? new Set(exact) : null,
        wildcardHosts: hosts?.filter((h) => h.startsWith('*.')).map((h) => h.slice(1).toLowerCase()) ?? [],
        methods: methods ? new Set(methods) : null,
      };
      const list = this.byPrefix.get(prefix) ?? [];
      list.push(cand);
      // Host-specific routes win over host-less ones at the same prefix.
      list.sort((a, b) => Number(b.exactHosts !== null) - Number(a.exactHosts !== null));
      this.byPrefix.set(prefix, list);
    }
    this.usesHosts = routes.some((r) => r.config.match.hosts !== undefined);
  }

  /** `path` must be normalised and without its query string. */
  match(path: string, host: string, method: string): RouteMatch<R> {
    // Character loops rather than endsWith/lastIndexOf, which V8 runs as calls into its runtime.
    let end = path.length > 1 && path.charCodeAt(path.length - 1) === 47 /* / */ ? path.length - 1 : path.length;
    let candidate = end === path.length ? path : path.slice(0, end);
    for (;;) {
      const list = this.byPrefix.get(candidate);
      if (list !== undefined) {
        const found = this.pick(list, host, method);
        if (found) return found;
      }
      if (candidate === '/') return NOT_FOUND;
      do end--;
      while (end > 0 && path.charCodeAt(end) !== 47);
      candidate = end <= 0 ? '/' : path.slice(0, end);
    }
  }

  private pick(list: Candidate<R>[], host: string, method: string): RouteMatch<R> | null {
    let allowed: Set<string> | null = null;
    let first: R | null = null;
    for (const c of list) {
      if (!hostMatches(c, host)) continue;
      first ??= c.route;
      if (c.methods === null || c.methods.has(method)) return c.matched;
      allowed ??= new Set();
      for (const m of c.methods) allowed.add(m);
    }
    if (first === null) return null;
    return { kind: 'method-not-allowed', allow: [...(allowed ?? [])].sort().join(', '), route: first };
  }
}
