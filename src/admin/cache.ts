import type { FastifyInstance } from 'fastify';
import type { GatewayConfig } from '../config/schema';
import { CacheKeySpace } from '../plugins/cache/keys';
import type { CacheWrites } from '../store/types';
import { problem } from './server';

export interface CacheRouteDeps {
  config(): Readonly<GatewayConfig>;
  /** The gateway's store, or null while no route uses it. */
  store(): Pick<CacheWrites, 'cacheBump'> | null;
}

/**
 * Cache purge on the admin listener (behind the admin token, like all of /admin/). Purging bumps
 * generations in the store, so every replica stops serving the entries at once:
 *   POST /admin/cache/purge?route=NAME    every entry of a route
 *   POST /admin/cache/purge?path=/a/b     entries of exactly that path (any query)
 *   POST /admin/cache/purge?prefix=/a     entries of /a and every path under it (segment boundaries)
 */
export function registerCacheRoutes(admin: FastifyInstance, deps: CacheRouteDeps): void {
  admin.post('/admin/cache/purge', async (request, reply) => {
    const q = request.query as Record<string, string | string[] | undefined>;
    const given = (['route', 'path', 'prefix'] as const).filter((k) => q[k] !== undefined);
    if (given.length !== 1 || typeof q[given[0]] !== 'string' || q[given[0]] === '') {
      return problem(reply, request, 'BAD_REQUEST', 'give exactly one of route=NAME, path=/exact/path, prefix=/path/prefix');
    }
    const kind = given[0];
    const value = q[kind] as string;
    const cfg = deps.config();
    if (kind === 'route' && !cfg.routes.some((r) => r.name === value && r.cache !== undefined)) {
      return problem(reply, request, 'BAD_REQUEST', `no route "${value}" with a cache`);
    }
    if (kind !== 'route' && !value.startsWith('/')) return problem(reply, request, 'BAD_REQUEST', `${kind} must start with "/"`);
    const store = deps.store();
    if (store === null) return problem(reply, request, 'BAD_REQUEST', 'no route has a cache');
    // One bump on standalone and Sentinel; on a Cluster one per route that may hold the entries (each route's keys are in its own slot).
    const space = new CacheKeySpace(cfg);
    const bumps = kind === 'route' ? space.route(value) : kind === 'path' ? space.path(value) : space.prefix(value);
    const applied = await Promise.all(bumps.map((b) => store.cacheBump(b.clock, b.keys)));
    if (applied.includes(false)) return problem(reply, request, 'STORE_UNAVAILABLE', 'the store did not apply the purge; retry');
    reply.header('cache-control', 'no-store');
    return { purged: { [kind]: value } };
  });
}
