import { authPlugin } from './auth/descriptor';
import { cachePlugin } from './cache/descriptor';
import { httpsPlugin } from './https/descriptor';
import { policiesPlugin } from './policies/descriptor';
import { rateLimitPlugin } from './rate-limit/descriptor';
import { tracingPlugin } from './tracing/descriptor';
import type { Phase, Plugin, PluginContext } from './types';
import { userPlugins } from './user/descriptor';

export type { Plugin, PluginContext, PluginDescriptor, Resource } from './types';

/**
 * Every chain capability, one object per plugin folder. The configuration schema, its load-time
 * checks and each runtime's steps all come from this list: adding a plugin is adding it here.
 * A typed tuple, so the assembled schema keeps every plugin's field types.
 */
export const PLUGINS = [tracingPlugin, httpsPlugin, policiesPlugin, authPlugin, cachePlugin, rateLimitPlugin, userPlugins] as const;

/** The chain's phases in order (see Phase in ./types). */
export const PHASES: readonly Phase[] = ['access', 'authenticate', 'admit', 'request', 'forward'];

/**
 * The plugins of one runtime in chain order: phase by phase, and within a phase in list order. A
 * route runs only the steps of the plugins it configures, so a bare route runs no step at all. Some
 * plugins only shape the route at start-up (drop lists, response transforms) and run no step.
 */
export function createPlugins(ctx: PluginContext): Plugin[] {
  const built = PLUGINS.map((p) => p.create(ctx));
  return PHASES.flatMap((phase) => built.flatMap((b) => b[phase] ?? []));
}
