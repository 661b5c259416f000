import type { TProperties } from '@sinclair/typebox';
import type { FastifyBaseLogger } from 'fastify';
import type { ReadinessCheck } from '../admin/server';
import type { Step } from '../chain';
import type { ConfigProblem } from '../config/problem';
import type { GatewayConfig } from '../config/schema';
import type { GatewayMetrics } from '../observability/metrics';
import type { CompiledRoute } from '../routes';

/**
 * The plugin interfaces, types only. Plugins import them from here rather than from the modules that
 * list plugins (plugins/index.ts) or load the configuration (config/load.ts), which import the
 * plugins: no import cycle joins plugin code to the config loader.
 */

export type { ConfigProblem, GatewayConfig };

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
  /** The instance under `key` for this runtime only, so two plugins of one runtime can share it. */
  local<T>(key: string, create: () => T): T;
  /** Registers something to init before traffic and close with the gateway (call it from a `shared` factory). */
  addResource(resource: Resource): void;
  /**
   * Registers something this runtime owns: initialised before the runtime serves, closed once a
   * reload has replaced the runtime (or the gateway closes).
   */
  addRuntimeResource(resource: Resource): void;
  /** Registers a readiness check for the gateway's lifetime (call it from a `shared` factory). */
  addReadinessCheck(check: ReadinessCheck): void;
  /** The process's shared bucket table when this gateway is one worker of several (src/workers), else null. */
  readonly sharedBuckets: SharedArrayBuffer | null;
}

/** A chain capability as one runtime uses it: asked once per route for the step the route runs. */
export interface Plugin {
  readonly name: string;
  /** The step this plugin runs on `route`, or null when the route does not use it. */
  stepFor(route: CompiledRoute): Step | null;
}

/**
 * Where steps sit in the chain. Phases run in this order (PHASES in plugins/index.ts); within a
 * phase, plugins run in the order of the plugin list, user plugins last.
 *
 *   access        before authentication: IP rules, CORS (preflights need no credentials)
 *   authenticate  auth
 *   admit         the response cache and rate limits (one store call when they ride together)
 *   request       user plugins by default: the consumer is known and the request admitted
 *   forward       just before the relay: header rules, envelope, deprecation, body limit
 */
export type Phase = 'access' | 'authenticate' | 'admit' | 'request' | 'forward';

/** What a plugin built for one runtime, by phase. */
export type PhasedPlugins = Partial<Record<Phase, readonly Plugin[]>>;

/** What a load-time check may use besides the configuration. */
export interface CheckContext {
  /** Directory relative paths in the configuration are resolved against (the config file's). */
  readonly baseDir: string;
  /** Validates `value` against a JSON Schema (defaults applied in place); problems carry paths under `path`. */
  validate(schema: object, value: unknown, path: string): ConfigProblem[];
}

/**
 * A chain capability: one object per plugin folder, listed in plugins/index.ts. config/ assembles
 * the schema from the plugins' `schema` (through plugins/fields.ts) and runs `check` after
 * validation; each runtime calls `create`. config/ knows no plugin by name.
 */
export interface PluginDescriptor<Top extends TProperties = TProperties, Route extends TProperties = TProperties> {
  readonly name: string;
  /** Config fields this plugin owns: at the top level of the configuration, and in every route. */
  readonly schema: { readonly top: Top; readonly route: Route };
  /** Rules that span fields, which JSON Schema cannot express, as {path, message} problems. */
  check?(cfg: GatewayConfig, problems: ConfigProblem[], load: CheckContext): void;
  /** What a valid configuration does that is likely not what was meant (logged at load, printed by `gateway validate`). */
  warnings?(cfg: Readonly<GatewayConfig>): ConfigProblem[];
  /** The plugin's chain stages for one runtime; a plugin no route uses returns none. */
  create(ctx: PluginContext): PhasedPlugins;
}

/**
 * What a user plugin module exports (module.exports, or its default export): the same parts as a
 * built-in plugin, with its configuration in `options`.
 */
export interface UserPluginModule {
  /** The name routes enable the plugin by, unless the configuration names it. */
  readonly name: string;
  /** JSON Schema of `options` (TypeBox schemas are JSON Schema); defaults are applied. No schema: no options. */
  readonly schema?: { readonly options?: object };
  /** Rules the schema cannot express; problem paths are relative to `options`. */
  check?(options: Readonly<Record<string, unknown>>, problems: ConfigProblem[]): void;
  /** Builds the plugin for one runtime, again on every reload. */
  create(ctx: UserPluginContext): UserPlugin;
}

/** A user plugin as one runtime uses it. */
export interface UserPlugin {
  /** The step `route` runs (only asked for routes that enable the plugin), or null for none. */
  stepFor(route: CompiledRoute): Step | null;
}

export interface UserPluginContext {
  /** The plugin's name in this configuration. */
  readonly name: string;
  /** The validated options, defaults applied. */
  readonly options: Readonly<Record<string, unknown>>;
  readonly config: Readonly<GatewayConfig>;
  /** The gateway's logger; lines carry `plugin: <name>`. */
  readonly log: FastifyBaseLogger;
  /**
   * Registers something the plugin opened: `init` runs before this configuration serves (a failure
   * stops start-up, or the reload, which keeps the old configuration), `close` once a reload has
   * replaced it or the gateway closes.
   */
  addResource(resource: Resource): void;
}
