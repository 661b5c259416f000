import type { FastifyBaseLogger } from 'fastify';
import type { ReadinessCheck } from '../admin/server';
import type { Step } from '../chain';
import type { GatewayConfig } from '../config/schema';
import type { GatewayMetrics } from '../observability/metrics';
import type { CompiledRoute } from '../routes';
import { createStore } from '../store';
import { RateLimitPlugin } from './rate-limit/plugin';

/** Something a plugin opens at start-up and must close with the gateway (Redis clients, timers). */
export interface Resource {
  readonly name: string;
  /** Runs once before the listeners open; a failure stops start-up. */
  init?(): Promise<void>;
  close(): Promise<void>;
}

/** What plugins may use and register while the gateway is assembled. */
export interface PluginContext {
  readonly config: Readonly<GatewayConfig>;
  readonly metrics: GatewayMetrics;
  readonly log: FastifyBaseLogger;
  addResource(resource: Resource): void;
  addReadinessCheck(check: ReadinessCheck): void;
}

/** A chain capability (auth, rate limit + cache, ...): built once per gateway, asked once per route. */
export interface Plugin {
  readonly name: string;
  /** The step this plugin runs on `route`, or null when the route does not use it. */
  stepFor(route: CompiledRoute): Step | null;
}

/**
 * The plugins in chain order. A route runs only the steps of the plugins it configures, so a bare
 * route runs no step at all.
 */
export function createPlugins(ctx: PluginContext): Plugin[] {
  const plugins: Plugin[] = [];
  const store = ctx.config.routes.some((r) => r.rateLimit !== undefined) ? createStore(ctx) : null;
  if (store !== null) plugins.push(new RateLimitPlugin(ctx, store));
  return plugins;
}
