import { createStore } from '../../store';
import type { GateStore } from '../../store/types';
import { hasConsumerQuotas } from '../rate-limit/limits';
import type { PluginContext, PluginDescriptor } from '../types';
import { cacheWarnings } from './check';
import { cacheFields } from './fields';
import { CachePlugin } from './plugin';

/** The gateway's one store (rate limits and the cache): it outlives reloads, as do its buckets and connections. */
export function sharedStore(ctx: PluginContext): GateStore {
  return ctx.shared('store', () => createStore(ctx));
}

/** Routes that rate-limit or cache use the store; without them the gateway opens none. */
export function usesStore(ctx: PluginContext): boolean {
  const quotas = hasConsumerQuotas(ctx.config.consumers);
  return ctx.config.routes.some((r) => r.rateLimit !== undefined || r.cache !== undefined || (quotas && r.auth !== undefined));
}

/** This runtime's response cache (the rate-limit step may carry its lookups), or null when no route uses the store. */
export function runtimeCache(ctx: PluginContext): CachePlugin | null {
  if (!usesStore(ctx)) return null;
  return ctx.local('cache', () => new CachePlugin(ctx, sharedStore(ctx)));
}

/** The response cache. A cache whose hits do not consume tokens looks up in a step of its own, before the rate limit. */
export const cachePlugin: PluginDescriptor<typeof cacheFields.top, typeof cacheFields.route> = {
  name: 'cache',
  schema: cacheFields,
  warnings: cacheWarnings,
  create: (ctx) => {
    const cache = runtimeCache(ctx);
    return cache === null ? {} : { admit: [cache] };
  },
};
