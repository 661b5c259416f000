import type { PluginContext } from '../plugins/types';
import { MemoryStore } from './memory';
import { MemoryCache } from './memory-cache';
import { SharedMemoryStore } from './shared-buckets';
import { ClusterRedisStore, RedisStore } from './redis';
import type { GateStore } from './types';

/**
 * The gateway's one store, shared by every step that uses the gate (rate limits, and the response
 * cache after it). A Redis store is a Resource (connects and loads its script at start-up, closes
 * with the gateway) and a readiness check; /healthz never depends on it.
 */
export function createStore(ctx: PluginContext): GateStore {
  const cfg = ctx.config.store;
  if (cfg.type === 'memory') {
    const evictions = ctx.metrics.counter('gateway_cache_evictions_total', 'Cached responses evicted from the memory store to stay within its byte bound.', []).child();
    const bytes = ctx.metrics.gauge('gateway_cache_bytes', 'Bytes of cached responses held by the memory store.', []).child();
    const cache = new MemoryCache(cfg.memory.cacheMaxBytes, { evicted: (n) => evictions.inc(n), bytes: (b) => bytes.set(b) });
    return ctx.sharedBuckets === null ? new MemoryStore(cfg.memory.maxKeys, undefined, cache) : new SharedMemoryStore(ctx.sharedBuckets, cache);
  }
  const opts = { config: cfg.redis, log: ctx.log, metrics: ctx.metrics };
  // On a Cluster a request's buckets and its cache lookup are in different slots: two calls at once.
  const store = cfg.redis.mode === 'cluster' ? new ClusterRedisStore(opts) : new RedisStore(opts);
  ctx.addResource(store);
  // Without Redis, rate limits that fail open admit and the cache is bypassed: the replica can
  // still serve unless a route fails closed (under the configuration of the moment: reloads change it).
  ctx.addReadinessCheck({
    name: store.readiness.name,
    ready: store.readiness.ready,
    required: (config) => config.routes.some((r) => r.rateLimit?.failMode === 'closed'),
  });
  return store;
}
