import type { FastifyBaseLogger } from 'fastify';
import type { ReadinessCheck } from '../admin/server';
import type { Step } from '../chain';
import type { GatewayConfig } from '../config/schema';
import type { GatewayMetrics } from '../observability/metrics';
import type { CompiledRoute } from '../routes';
import { bodyLimitPlugin, corsPlugin, deprecationPlugin, envelopePlugin, headerRulesPlugin, ipRulesPlugin } from './policies';
import { createAuthPlugin } from './auth';
import { createStore } from '../store';
import { RateLimitPlugin } from './rate-limit/plugin';
import { CachePlugin } from './cache/plugin';

/** Something a plugin opens at start-up and must close with the gateway (Redis clients, timers). */
export interface Resource {
  readonly name: string;
  /** Runs once before the listeners open; a failure stops start-up. */
  init?(): Promise<void>;
  close(): Promise<void>;
}

/**
 * What plugins may use while a runtime (one version of the config) is assembled. Plugins are rebuilt
 * on every reload; anything that must outlive a reload (stores, Redis clients, key caches) is made
 * through `shared`, which builds it once per gateway and hands the same instance to later runtimes.
 */
export interface PluginContext {
  readonly config: Readonly<GatewayConfig>;
  readonly metrics: GatewayMetrics;
  readonly log: FastifyBaseLogger;
  /** The gateway-lifetime instance under `key`, built by `create` the first time it is asked for. */
  shared<T>(key: string, create: () => T): T;
  /** Registers something to init before traffic and close with the gateway (call it from a `shared` factory). */
  addResource(resource: Resource): void;
  /** Registers a readiness check for the gateway's lifetime (call it from a `shared` factory). */
  addReadinessCheck(check: ReadinessCheck): void;
}

/** A chain capability (auth, rate limit + cache, ...): built once per runtime, asked once per route. */
export interface Plugin {
  readonly name: string;
  /** The step this plugin runs on `route`, or null when the route does not use it. */
  stepFor(route: CompiledRoute): Step | null;
}

/**
 * The plugins in chain order. A route runs only the steps of the plugins it configures, so a bare
 * route runs no step at all. Some plugins only shape the route at start-up (drop lists, response
 * transforms) and run no step.
 */
export function createPlugins(ctx: PluginContext): Plugin[] {
  // The store outlives reloads: buckets and the Redis connection are the gateway's, not a runtime's.
  const store = ctx.config.routes.some((r) => r.rateLimit !== undefined || r.cache !== undefined) ? ctx.shared('store', () => createStore(ctx)) : null;
  const cache = store !== null ? new CachePlugin(ctx, store) : null;
  return [
    // Before authentication: a refused address costs nothing more, and preflights need no credentials.
    ipRulesPlugin(ctx),
    corsPlugin(ctx),
    createAuthPlugin(ctx),
    // Rate limits (and the cache lookup, in the same store call) once the consumer is known.
    // A cache whose hits do not consume tokens looks up first, in a call of its own.
    ...(cache !== null ? [cache] : []),
    ...(store !== null ? [new RateLimitPlugin(ctx, store, cache)] : []),
    // Just before the relay, once the consumer is known.
    headerRulesPlugin(),
    envelopePlugin(),
    deprecationPlugin(),
    bodyLimitPlugin(ctx),
  ];
}
