import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';
import { PLUGINS } from '../plugins';
import type { CheckContext } from '../plugins/types';
import { ConfigError, type ConfigProblem } from './problem';
import { ConfigSchema, type GatewayConfig } from './schema';

export { ConfigError, formatProblem, type ConfigProblem } from './problem';

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, coerceTypes: false, verbose: true });
const validateSchema = ajv.compile<GatewayConfig>(ConfigSchema);

const ENV_REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const WHOLE_ENV_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/;

/**
 * Replaces ${NAME} and ${NAME:-default} in every string value (not in keys), so secrets stay out of
 * the file. A value that is exactly one reference is re-read as a YAML scalar, so `port: ${PORT:-8080}`
 * becomes a number. `$${` escapes a literal `${`.
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: string, problems: ConfigProblem[]): unknown {
  if (typeof value === 'string') {
    const whole = WHOLE_ENV_REF.exec(value);
    if (whole) {
      const v = env[whole[1]] ?? whole[2];
      if (v === undefined) {
        problems.push({ path, message: `environment variable ${whole[1]} is not set and has no default` });
        return value;
      }
      const scalar: unknown = YAML.parse(v === '' ? '""' : v);
      return typeof scalar === 'number' || typeof scalar === 'boolean' ? scalar : v;
    }
    return value.replace(ENV_REF, (m, name: string | undefined, def: string | undefined) => {
      if (m === '$${') return '${';
      const v = env[name!] ?? def;
      if (v === undefined) {
        problems.push({ path, message: `environment variable ${name} is not set and has no default` });
        return m;
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, `${path}[${i}]`, problems));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, joinPath(path, k), problems);
    return out;
  }
  return value;
}

function joinPath(base: string, key: string): string {
  const seg = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? key : JSON.stringify(key);
  return base ? (seg.startsWith('"') ? `${base}[${seg}]` : `${base}.${seg}`) : seg;
}

/** Turns ajv's /routes/2/upstream into routes[2].upstream. */
function pointerToPath(pointer: string): string {
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out = /^\d+$/.test(seg) ? `${out}[${seg}]` : joinPath(out, seg);
  }
  return out;
}

function ajvProblems(errors: ErrorObject[]): ConfigProblem[] {
  const seen = new Set<string>();
  const out: ConfigProblem[] = [];
  for (const e of errors) {
    // A failed union reports each branch; the enum-like summary below is clearer than the branches.
    if (e.keyword === 'const' && errors.some((o) => o.keyword === 'anyOf' && o.instancePath === e.instancePath)) continue;
    let path = pointerToPath(e.instancePath);
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') {
      path = joinPath(path, String(e.params.additionalProperty));
      message = 'unknown key';
    } else if (e.keyword === 'required') {
      path = joinPath(path, String(e.params.missingProperty));
      message = 'is required';
    } else if (e.keyword === 'anyOf') {
      // ajv reports each literal of a union as a sibling `const` error (e.schema needs verbose mode).
      const options = errors.filter((o) => o.keyword === 'const' && o.instancePath === e.instancePath).map((o) => o.params.allowedValue as unknown);
      message = options.length ? `must be one of ${options.map((o) => JSON.stringify(o)).join(', ')}` : message;
    }
    const key = `${path}\u0000${message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push({ path, message });
    }
  }
  return out;
}

function checkCidr(entry: string, path: string, problems: ConfigProblem[], list: BlockList): void {
  const [addr, bits, extra] = entry.split('/');
  const family = isIP(addr);
  const max = family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!family || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    problems.push({ path, message: `"${entry}" is not an IP address or CIDR` });
    return;
  }
  list.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
}

/** Methods whose requests may have effects that a replay would repeat. */
const NEVER_RETRIED: ReadonlySet<string> = new Set(['POST', 'PATCH', 'CONNECT']);

/** Validates a plugin's own part of the configuration (user plugin options) against its schema, defaults applied. */
function validateAt(schema: object, value: unknown, at: string): ConfigProblem[] {
  let validate;
  try {
    validate = ajv.compile(schema);
  } catch (err) {
    return [{ path: at, message: `cannot be checked: the plugin's schema is invalid (${(err as Error).message})` }];
  }
  if (validate(value)) return [];
  return ajvProblems(validate.errors ?? []).map((p) => ({
    path: p.path === '' ? at : p.path.startsWith('[') ? `${at}${p.path}` : `${at}.${p.path}`,
    message: p.message,
  }));
}

/** Rules that span fields, which JSON Schema cannot express. `source` is the file, for relative paths. */
function crossCheck(cfg: GatewayConfig, problems: ConfigProblem[], source?: string): void {
  const list = new BlockList();
  cfg.trustedProxies.forEach((p, i) => checkCidr(p, `trustedProxies[${i}]`, problems, list));

  for (const [name, up] of Object.entries(cfg.upstreams)) {
    up.targets.forEach((t, i) => {
      const path = `${joinPath('upstreams', name)}.targets[${i}]`;
      let url: URL;
      try {
        url = new URL(t);
      } catch {
        problems.push({ path, message: `"${t}" is not a URL` });
        return;
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        problems.push({ path, message: `protocol must be http: or https:, got ${url.protocol}` });
      }
      if (url.search || url.hash) problems.push({ path, message: 'a target may not carry a query or fragment' });
      if (url.username || url.password) problems.push({ path, message: 'credentials do not belong in a target URL' });
    });
    const at = joinPath('upstreams', name);
    up.retries.methods.forEach((m, i) => {
      if (NEVER_RETRIED.has(m)) problems.push({ path: `${at}.retries.methods[${i}]`, message: `${m} is not idempotent and is never retried` });
    });
    if (up.breaker.maxOpenMs < up.breaker.openMs) {
      problems.push({ path: `${at}.breaker.maxOpenMs`, message: `must be at least breaker.openMs (${up.breaker.openMs})` });
    }
    if (up.tls.caFile) {
      try {
        readFileSync(up.tls.caFile);
      } catch (err) {
        problems.push({ path: `${joinPath('upstreams', name)}.tls.caFile`, message: `cannot read: ${(err as Error).message}` });
      }
    }
  }

  const names = new Map<string, number>();
  const matchers = new Map<string, number>();
  cfg.routes.forEach((r, i) => {
    const at = `routes[${i}]`;
    if (names.has(r.name)) problems.push({ path: `${at}.name`, message: `duplicate route name "${r.name}" (also routes[${names.get(r.name)}])` });
    names.set(r.name, i);
    if (!Object.hasOwn(cfg.upstreams, r.upstream)) {
      problems.push({ path: `${at}.upstream`, message: `unknown upstream "${r.upstream}"` });
    }
    const prefix = r.match.prefix;
    if (prefix.length > 1 && prefix.endsWith('/')) {
      problems.push({ path: `${at}.match.prefix`, message: 'must not end with "/" (prefixes match at segment boundaries)' });
    }
    if (/(^|\/)\.{1,2}(\/|$)|\/\/|%|\\/.test(prefix)) {
      problems.push({ path: `${at}.match.prefix`, message: 'must be a normalised path (no dot segments, "//", "\\" or percent-encoding)' });
    }
    if (r.rewrite.stripPrefix && r.rewrite.replacePrefix !== undefined) {
      problems.push({ path: `${at}.rewrite`, message: 'stripPrefix and replacePrefix exclude each other' });
    }
    const methods = r.match.methods ?? ['*'];
    for (const host of r.match.hosts ?? ['*']) {
      for (const m of methods) {
        const key = `${host.toLowerCase()} ${m} ${prefix}`;
        const other = matchers.get(key);
        if (other !== undefined && other !== i) {
          problems.push({ path: `${at}.match`, message: `overlaps routes[${other}] (same prefix, host and method)` });
          return;
        }
        matchers.set(key, i);
      }
    }
  });
  const load: CheckContext = { baseDir: source ? dirname(resolve(source)) : process.cwd(), validate: validateAt };
  for (const p of PLUGINS) p.check?.(cfg, problems, load);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Validates a plain object (already parsed), applies defaults and freezes it. Throws ConfigError. */
export function parseConfig(input: unknown, opts: { env?: NodeJS.ProcessEnv; source?: string } = {}): Readonly<GatewayConfig> {
  const env = opts.env ?? process.env;
  const problems: ConfigProblem[] = [];
  const data = substituteEnv(structuredClone(input ?? {}), env, '', problems);
  if (problems.length) throw new ConfigError(opts.source ?? '', problems);
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(opts.source ?? '', [{ path: '', message: 'the configuration must be a YAML mapping' }]);
  }
  const cfg = data as GatewayConfig;
  if (!validateSchema(data)) {
    const all = ajvProblems(validateSchema.errors ?? []);
    // Report cross-field problems too, so one run lists everything; on a malformed shape the
    // cross-checks may trip over missing parts, and then the schema errors alone are reported.
    try {
      const extra: ConfigProblem[] = [];
      crossCheck(cfg, extra, opts.source);
      for (const p of extra) if (!all.some((a) => a.path === p.path)) all.push(p);
    } catch {
      // The schema errors already describe the malformed shape.
    }
    throw new ConfigError(opts.source ?? '', all);
  }
  if (env.PORT !== undefined && env.PORT !== '') {
    const port = Number(env.PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      problems.push({ path: 'listen.port', message: `environment variable PORT="${env.PORT}" is not a port number` });
    } else cfg.listen.port = port;
  }
  crossCheck(cfg, problems, opts.source);
  if (problems.length) throw new ConfigError(opts.source ?? '', problems);
  return deepFreeze(cfg);
}

/** Reads, substitutes, validates and freezes a YAML configuration file. Throws ConfigError. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Readonly<GatewayConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read file: ${(err as Error).message}` }]);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ path: '', message: `YAML syntax: ${e.message.split('\n')[0]}` })),
    );
  }
  return parseConfig(doc.toJS(), { env, source: file });
}
