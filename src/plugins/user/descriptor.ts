import type { Step } from '../../chain';
import type { CompiledRoute } from '../../routes';
import type { CheckContext, ConfigProblem, GatewayConfig, Plugin, PluginContext, PluginDescriptor, UserPlugin, UserPluginModule } from '../types';
import { USER_PLUGIN_NAME, userFields, type UserPluginConfig } from './schema';

const NAME = new RegExp(USER_PLUGIN_NAME);

/** The plugin a module exports, or a sentence saying why it is not one. */
function pluginOf(exported: unknown): UserPluginModule | string {
  let m = exported as Record<string, unknown> | null;
  // A transpiled `export default` arrives as { default: plugin }.
  if (m !== null && typeof m === 'object' && typeof m.create !== 'function' && m.default !== undefined) m = m.default as Record<string, unknown> | null;
  if (m === null || (typeof m !== 'object' && typeof m !== 'function')) return 'does not export a plugin object';
  if (typeof m.create !== 'function') return 'does not export a plugin: `create` must be a function';
  if (typeof m.name !== 'string' || !NAME.test(m.name)) return 'does not export a plugin: `name` must be a string of letters, digits, "_", "." or "-" (at most 64)';
  if (m.check !== undefined && typeof m.check !== 'function') return 'does not export a plugin: `check` must be a function';
  const schema = m.schema as Record<string, unknown> | undefined;
  if (schema !== undefined && (typeof schema !== 'object' || schema === null || (schema.options !== undefined && (typeof schema.options !== 'object' || schema.options === null)))) {
    return 'does not export a plugin: `schema.options` must be a JSON Schema object';
  }
  return m as unknown as UserPluginModule;
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0];
}

/** Loads the module of `entry` (resolved against `baseDir`); the resolved file, or a problem. */
function load(spec: string, baseDir: string): { file: string; plugin: UserPluginModule } | string {
  let file: string;
  try {
    file = require.resolve(spec, { paths: [baseDir] });
  } catch {
    return `cannot find module "${spec}" (relative paths start from ${baseDir})`;
  }
  let exported: unknown;
  try {
    exported = require(file) as unknown;
  } catch (err) {
    return `cannot load ${file}: ${firstLine(err)}`;
  }
  const plugin = pluginOf(exported);
  return typeof plugin === 'string' ? `${file} ${plugin}` : { file, plugin };
}

function under(base: string, path: string): string {
  if (!path) return base;
  return path.startsWith('[') ? `${base}${path}` : `${base}.${path}`;
}

/**
 * Loads every user plugin module, validates its options against the module's schema (defaults
 * applied), runs its own checks, and records the resolved module file and name in the configuration
 * so each runtime loads the same file. Routes may only name plugins that are listed.
 */
function checkUserPlugins(cfg: GatewayConfig, problems: ConfigProblem[], env: CheckContext): void {
  const names = new Map<string, number>();
  cfg.plugins.forEach((entry: UserPluginConfig, i) => {
    const at = `plugins[${i}]`;
    const loaded = load(entry.module, env.baseDir);
    if (typeof loaded === 'string') {
      problems.push({ path: `${at}.module`, message: loaded });
      if (entry.name !== undefined) names.set(entry.name, i);
      return;
    }
    const { file, plugin } = loaded;
    entry.module = file;
    entry.name ??= plugin.name;
    const other = names.get(entry.name);
    if (other !== undefined) {
      problems.push({ path: `${at}.name`, message: `duplicate plugin name "${entry.name}" (also plugins[${other}]); name one of them` });
    } else names.set(entry.name, i);
    const schema = plugin.schema?.options;
    if (schema === undefined) {
      if (Object.keys(entry.options).length > 0) problems.push({ path: `${at}.options`, message: `plugin "${entry.name}" takes no options` });
      return;
    }
    const invalid = env.validate(schema, entry.options, `${at}.options`);
    problems.push(...invalid);
    if (invalid.length > 0 || plugin.check === undefined) return;
    const own: ConfigProblem[] = [];
    try {
      plugin.check(entry.options, own);
    } catch (err) {
      own.push({ path: '', message: `check failed: ${firstLine(err)}` });
    }
    for (const p of own) problems.push({ path: under(`${at}.options`, p.path), message: p.message });
  });
  cfg.routes.forEach((r, i) => {
    r.plugins.forEach((name, j) => {
      if (!names.has(name)) {
        const known = [...names.keys()];
        problems.push({
          path: `routes[${i}].plugins[${j}]`,
          message: `unknown plugin "${name}" (${known.length ? `plugins lists ${known.map((n) => `"${n}"`).join(', ')}` : 'the top-level plugins list is empty'})`,
        });
      }
    });
  });
}

/** One user plugin in a runtime: asked only for the routes that enable it. */
class UserPluginStage implements Plugin {
  constructor(
    readonly name: string,
    private readonly module: string,
    private readonly plugin: UserPlugin,
  ) {}

  stepFor(route: CompiledRoute): Step | null {
    if (!route.config.plugins.includes(this.name)) return null;
    const step = this.plugin.stepFor(route) ?? null;
    if (step !== null && typeof (step as Partial<Step>).run !== 'function') {
      throw new Error(`plugin "${this.name}" (${this.module}): stepFor() must return a step with run(ctx), or null`);
    }
    return step;
  }
}

function createUserPlugins(ctx: PluginContext): { access: Plugin[]; request: Plugin[] } {
  const out = { access: [] as Plugin[], request: [] as Plugin[] };
  const used = new Set(ctx.config.routes.flatMap((r) => r.plugins));
  for (const entry of ctx.config.plugins) {
    const name = entry.name!;
    // A plugin no route enables costs nothing: it is not built.
    if (!used.has(name)) continue;
    // The loader recorded the resolved file: the base directory no longer matters.
    const loaded = load(entry.module, process.cwd());
    if (typeof loaded === 'string') throw new Error(`plugin "${name}": ${loaded}`);
    let plugin: UserPlugin;
    try {
      plugin = loaded.plugin.create({
        name,
        options: entry.options,
        config: ctx.config,
        log: ctx.log.child({ plugin: name }),
        addResource: (r) => ctx.addRuntimeResource(r),
      });
    } catch (err) {
      throw new Error(`plugin "${name}" (${entry.module}): create() failed: ${firstLine(err)}`, { cause: err });
    }
    if (plugin === null || typeof plugin !== 'object' || typeof plugin.stepFor !== 'function') {
      throw new Error(`plugin "${name}" (${entry.module}): create() must return an object with stepFor(route)`);
    }
    out[entry.phase].push(new UserPluginStage(name, entry.module, plugin));
  }
  return out;
}

/** User plugins: modules named in the configuration's `plugins`, enabled per route by name. */
export const userPlugins: PluginDescriptor<typeof userFields.top, typeof userFields.route> = {
  name: 'user',
  schema: userFields,
  check: checkUserPlugins,
  create: createUserPlugins,
};
