import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';
import { checkTls } from '../net/tls';
import { PLUGINS } from '../plugins';
import type { CheckContext } from '../plugins/types';
import { ConfigError, type ConfigProblem } from './problem';
import { ConfigSchema, type GatewayConfig, type RouteSplitConfig } from './schema';

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
  return segsToPath(segsOf(pointer));
}

function segsOf(pointer: string): string[] {
  return pointer.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function segsToPath(segs: readonly string[]): string {
  let out = '';
  for (const seg of segs) out = /^\d+$/.test(seg) ? `${out}[${seg}]` : joinPath(out, seg);
  return out;
}

/** The parts of a JSON Schema node the error messages read. */
interface SchemaNode {
  type?: string | string[];
  description?: string;
  /** What the field accepts, in words: error messages say it instead of a regular expression. */
  expected?: string;
  /** The same for the names of a map's keys. */
  expectedKey?: string;
  const?: unknown;
  enum?: unknown[];
  anyOf?: SchemaNode[];
  properties?: Record<string, SchemaNode>;
  patternProperties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  required?: string[];
  default?: unknown;
}

const TYPE_WORDS: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  null: 'null',
};

function orList(words: string[]): string {
  return words.length < 2 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`;
}

function literal(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** What a schema node accepts, in words (never its regular expression). */
function expectedOf(s: SchemaNode): string {
  if (s.expected) return s.expected;
  if (s.const !== undefined) return literal(s.const);
  if (s.enum) return `one of ${orList(s.enum.map(literal))}`;
  if (s.anyOf) {
    if (s.anyOf.every((b) => b.const !== undefined)) return `one of ${orList(s.anyOf.map((b) => literal(b.const)))}`;
    return orList(s.anyOf.map(expectedOf));
  }
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  return orList(types.map((t) => TYPE_WORDS[t] ?? t)) || 'a valid value';
}

/** Words for a pattern that has no `expected`: its description says what the field holds, which beats a regex. */
function patternWords(s: SchemaNode): string {
  if (s.expected || !s.description) return expectedOf(s);
  return s.description.replace(/\.$/, '').replace(/^[A-Z](?![A-Z])/, (c) => c.toLowerCase());
}

/** The offending value as the message shows it: scalars as JSON, collections by kind. */
function shown(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return 'a mapping';
  if (v === undefined) return 'nothing';
  const json = JSON.stringify(v);
  return json.length > 60 ? `${json.slice(0, 57)}..."` : json;
}

/** Edit distance with adjacent transpositions counted as one edit (hots -> host is one). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known key closest to an unknown one, when it is close enough to be a typo. */
export function closestKey(unknown: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = k.toLowerCase() === unknown.toLowerCase() ? 0 : editDistance(unknown, k);
    if (d <= 2 && d < unknown.length && d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function ajvMessage(e: ErrorObject): string {
  const schema = (e.parentSchema ?? {}) as SchemaNode;
  const p = e.params as Record<string, unknown>;
  const got = `(got ${shown(e.data)})`;
  switch (e.keyword) {
    case 'pattern':
      return `expected ${patternWords(schema)} ${got}`;
    case 'type':
    case 'const':
    case 'enum':
    case 'anyOf':
    case 'oneOf':
    case 'format':
      return `expected ${expectedOf(schema)} ${got}`;
    case 'minimum':
      return `expected at least ${p.limit} ${got}`;
    case 'maximum':
      return `expected at most ${p.limit} ${got}`;
    case 'exclusiveMinimum':
      return `expected more than ${p.limit} ${got}`;
    case 'exclusiveMaximum':
      return `expected less than ${p.limit} ${got}`;
    case 'multipleOf':
      return `expected a multiple of ${p.multipleOf} ${got}`;
    case 'minItems':
      return `expected at least ${plural(Number(p.limit), 'item')} (got ${(e.data as unknown[]).length})`;
    case 'maxItems':
      return `expected at most ${plural(Number(p.limit), 'item')} (got ${(e.data as unknown[]).length})`;
    case 'minLength':
      return `expected at least ${plural(Number(p.limit), 'character')} (got ${(e.data as string).length})`;
    case 'maxLength':
      return `expected at most ${plural(Number(p.limit), 'character')} (got ${(e.data as string).length})`;
    case 'uniqueItems':
      return `expected no duplicates (got ${shown((e.data as unknown[])[Number(p.i)])} as items ${Math.min(Number(p.i), Number(p.j))} and ${Math.max(Number(p.i), Number(p.j))})`;
    case 'required':
      return 'is required';
    default:
      return e.message ?? 'is invalid';
  }
}

/** A map of named entries (a Record), as opposed to an object with fixed keys. */
function isMap(s: SchemaNode): boolean {
  return s.patternProperties !== undefined && s.properties === undefined;
}

function ajvProblems(errors: ErrorObject[]): ConfigProblem[] {
  // A failed union reports each branch too; the union's own message says it all, so the branches' go.
  const unions = errors.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf').map((e) => `${e.schemaPath}/`);
  const seen = new Set<string>();
  const out: ConfigProblem[] = [];
  for (const e of errors) {
    if (unions.some((u) => e.schemaPath.startsWith(u))) continue;
    let path = pointerToPath(e.instancePath);
    let message: string;
    if (e.keyword === 'additionalProperties') {
      const key = String(e.params.additionalProperty);
      const schema = e.parentSchema as SchemaNode;
      path = joinPath(path, key);
      if (isMap(schema)) {
        message = `expected ${schema.expectedKey ?? 'another name'} (got ${JSON.stringify(key)})`;
      } else {
        const near = closestKey(key, Object.keys(schema.properties ?? {}));
        message = near ? `unknown key (did you mean ${near}?)` : 'unknown key';
      }
    } else if (e.keyword === 'required') {
      path = joinPath(path, String(e.params.missingProperty));
      message = ajvMessage(e);
    } else message = ajvMessage(e);
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

/** A DNS server as node:dns takes it: an IP address, optionally with a port (IPv6 in brackets then). */
function isDnsServer(s: string): boolean {
  if (isIP(s) !== 0) return true;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) return false;
  return m[1] !== undefined ? isIP(m[1]) === 6 : isIP(m[2]) === 4;
}

/** Rules that span fields, which JSON Schema cannot express. `source` is the file, for relative paths. */
function crossCheck(cfg: GatewayConfig, problems: ConfigProblem[], source?: string): void {
  const list = new BlockList();
  cfg.trustedProxies.forEach((p, i) => checkCidr(p, `trustedProxies[${i}]`, problems, list));

  for (const [name, up] of Object.entries(cfg.upstreams)) {
    up.targets.forEach((entry, i) => {
      const t = typeof entry === 'string' ? entry : entry.url;
      const path = `${joinPath('upstreams', name)}.targets[${i}]${typeof entry === 'string' ? '' : '.url'}`;
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
      if (up.discovery.type === 'srv' && url.port) problems.push({ path, message: 'with discovery.type srv the port comes from the SRV records: leave it out of the URL' });
    });
    const at = joinPath('upstreams', name);
    if (up.balance === 'hash' && up.hash.key === undefined) problems.push({ path: `${at}.hash.key`, message: 'is required with balance: hash' });
    if (up.discovery.maxTtlMs < up.discovery.minTtlMs) {
      problems.push({ path: `${at}.discovery.maxTtlMs`, message: `must be at least discovery.minTtlMs (${up.discovery.minTtlMs})` });
    }
    up.discovery.servers.forEach((s, i) => {
      if (!isDnsServer(s)) problems.push({ path: `${at}.discovery.servers[${i}]`, message: `"${s}" is not an IP address with an optional port (1.2.3.4, 1.2.3.4:53, [::1]:53)` });
    });
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
    if (r.mirror && !Object.hasOwn(cfg.upstreams, r.mirror.upstream)) {
      problems.push({ path: `${at}.mirror.upstream`, message: `unknown upstream "${r.mirror.upstream}"` });
    }
    if (r.split) checkSplit(r.split, r.upstream, cfg.upstreams, `${at}.split`, problems);
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
  checkTls(cfg, problems);
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

/** The schema node at a path of the configuration; undefined inside a union, whose branch is unknown. */
function schemaAt(segs: readonly string[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = ConfigSchema as unknown as SchemaNode;
  for (const seg of segs) {
    if (!node) return undefined;
    if (node.properties?.[seg]) node = node.properties[seg];
    else if (node.patternProperties) node = Object.entries(node.patternProperties).find(([re]) => new RegExp(re, 'u').test(seg))?.[1];
    else if (node.items && /^\d+$/.test(seg)) node = node.items;
    else return undefined;
  }
  return node;
}

/** A path string (routes[2].match, auth.jwt.claimHeaders["X-A"]) back into segments; null when it is not one. */
function pathToSegs(path: string): string[] | null {
  const segs: string[] = [];
  const token = /\.?([A-Za-z_$][A-Za-z0-9_$]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/y;
  while (token.lastIndex < path.length) {
    const m = token.exec(path);
    if (!m) return null;
    segs.push(m[1] ?? m[2] ?? (JSON.parse(m[3]) as string));
  }
  return segs;
}

/**
 * The configuration with its malformed parts taken out, so the cross-field checks can run on the rest.
 * A malformed value goes (its default comes back) when the field is optional; otherwise the list
 * item or map entry holding it goes. Indices of list items after a removed one shift, so the removed
 * indices are kept to map the checks' paths back to the file's.
 */
class WellFormedParts {
  /** Removed parts (not unknown keys, which carry no meaning), as path strings of the file. */
  readonly removed: string[] = [];
  /** Names of removed list items and map entries: a reference to one is not "unknown", it is malformed. */
  readonly removedNames = new Set<string>();
  /** A whole list or map was malformed, so no reference into one can be judged. */
  collectionRemoved = false;
  private readonly targets = new Map<string, { segs: string[]; unknown: boolean }>();
  private shifted = new Map<string, number[]>();

  constructor(private readonly original: unknown) {}

  /** Runs the cross-checks on the well-formed parts; null when no well-formed shape is left to check. */
  crossCheck(errors: ErrorObject[], source?: string): ConfigProblem[] | null {
    for (let round = 0; round < 20; round++) {
      let grew = false;
      for (const e of errors) {
        const segs = this.toOriginal(segsOf(e.instancePath));
        const extra = e.keyword === 'additionalProperties';
        const target = extra ? [...segs, String(e.params.additionalProperty)] : this.removable(segs);
        if (!target) return null;
        const key = target.join('\u0000');
        if (!this.targets.has(key)) {
          // A map entry whose name is malformed still names something; an unknown key names nothing.
          this.targets.set(key, { segs: target, unknown: extra && !isMap(e.parentSchema as SchemaNode) });
          grew = true;
        }
      }
      if (!grew && round > 0) return null;
      const copy = this.prune();
      if (validateSchema(copy)) {
        const found: ConfigProblem[] = [];
        try {
          crossCheck(copy as GatewayConfig, found, source);
        } catch {
          return null;
        }
        return found.map((p) => ({ path: this.mapPath(p.path), message: p.message.replace(PATH_LIKE, (m) => this.mapPath(m)) }));
      }
      errors = [...(validateSchema.errors ?? [])];
    }
    return null;
  }

  /** The nearest part at or above `segs` that can go: an optional field, a list item or a map entry. */
  private removable(segs: string[]): string[] | null {
    for (let cur = segs; cur.length; cur = cur.slice(0, -1)) {
      const parent = schemaAt(cur.slice(0, -1));
      const key = cur[cur.length - 1];
      if (!parent) continue;
      if (parent.items) return cur;
      if (parent.properties?.[key]) {
        if (!parent.required?.includes(key) || parent.properties[key].default !== undefined) return cur;
      } else if (parent.patternProperties) return cur;
    }
    return null;
  }

  private prune(): unknown {
    const copy = structuredClone(this.original) as Record<string, unknown>;
    const gone = Symbol('removed');
    const all = [...this.targets.values()];
    const keys = all.map((t) => t.segs.join('\u0000'));
    this.removed.length = 0;
    this.removedNames.clear();
    this.collectionRemoved = false;
    this.shifted = new Map();
    all.forEach(({ segs, unknown }, i) => {
      // Inside a part that goes anyway.
      if (keys.some((k, j) => j !== i && keys[i].startsWith(`${k}\u0000`))) return;
      let parent: unknown = copy;
      for (const seg of segs.slice(0, -1)) parent = (parent as Record<string, unknown>)?.[seg];
      if (!parent || typeof parent !== 'object') return;
      const last = segs[segs.length - 1];
      const value = (parent as Record<string, unknown>)[last];
      if (!unknown) {
        this.removed.push(segsToPath(segs));
        const schema = schemaAt(segs.slice(0, -1));
        if (schema && !schema.properties?.[last] && value && typeof value === 'object') {
          const name = (value as Record<string, unknown>).name ?? (value as Record<string, unknown>).id;
          if (typeof name === 'string') this.removedNames.add(name);
        }
        if (schema?.patternProperties && !schema.properties?.[last]) this.removedNames.add(last);
        const own = schemaAt(segs);
        if (own && (own.items || isMap(own))) this.collectionRemoved = true;
      }
      if (Array.isArray(parent)) {
        parent[Number(last)] = gone;
        const at = segs.slice(0, -1).join('\u0000');
        this.shifted.set(at, [...(this.shifted.get(at) ?? []), Number(last)].sort((a, b) => a - b));
      } else delete (parent as Record<string, unknown>)[last];
    });
    const compact = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.filter((x) => x !== gone).map(compact);
      if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) (v as Record<string, unknown>)[k] = compact(x);
      return v;
    };
    return compact(copy);
  }

  /** Segments of the pruned copy as segments of the file (list indices shift back over removed items). */
  private toOriginal(segs: string[]): string[] {
    const out: string[] = [];
    for (const seg of segs) {
      const removed = this.shifted.get(out.join('\u0000'));
      if (removed && /^\d+$/.test(seg)) {
        let i = Number(seg);
        for (const r of removed) if (r <= i) i++;
        out.push(String(i));
      } else out.push(seg);
    }
    return out;
  }

  private mapPath(path: string): string {
    if (!this.shifted.size || !/\[\d/.test(path)) return path;
    const segs = pathToSegs(path);
    return segs ? segsToPath(this.toOriginal(segs)) : path;
  }
}

/** What looks like a configuration path inside a message, such as routes[3] in "overlaps routes[3]". */
const PATH_LIKE = /[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*/g;

/** True when one path is the other or lies inside it. */
function related(a: string, b: string): boolean {
  const [short, long] = a.length <= b.length ? [a, b] : [b, a];
  return long === short || long.startsWith(`${short}.`) || long.startsWith(`${short}[`) || short === '';
}

/**
 * Every problem of an invalid configuration at once: the schema's, and the cross-field checks' on the
 * parts that are well-formed. A cross-check about a malformed part (or a reference to a removed one)
 * is left out: the schema problem already names it, and the check saw a default or nothing there.
 */
function allProblems(original: unknown, errors: ErrorObject[], early: ConfigProblem[], source?: string): ConfigProblem[] {
  const earlyPaths = early.map((p) => p.path);
  const out = [...early, ...ajvProblems(errors).filter((p) => !earlyPaths.includes(p.path))];
  const parts = new WellFormedParts(original);
  const cross = parts.crossCheck(errors, source) ?? [];
  const quiet = [...earlyPaths, ...parts.removed];
  for (const p of cross) {
    if (quiet.some((q) => related(q, p.path))) continue;
    if ([...parts.removedNames].some((n) => p.message.includes(JSON.stringify(n)))) continue;
    if (parts.collectionRemoved && /^unknown [a-z ]+ "/.test(p.message)) continue;
    if (!out.some((o) => o.path === p.path && o.message === p.message)) out.push(p);
  }
  return out;
}

/** Validates a plain object (already parsed), applies defaults and freezes it. Throws ConfigError. */
export function parseConfig(input: unknown, opts: { env?: NodeJS.ProcessEnv; source?: string } = {}): Readonly<GatewayConfig> {
  const env = opts.env ?? process.env;
  const problems: ConfigProblem[] = [];
  const data = substituteEnv(structuredClone(input ?? {}), env, '', problems);
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(opts.source ?? '', [...problems, { path: '', message: 'the configuration must be a YAML mapping' }]);
  }
  const cfg = data as GatewayConfig;
  let port: number | undefined;
  if (env.PORT !== undefined && env.PORT !== '') {
    port = Number(env.PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      problems.push({ path: 'listen.port', message: `environment variable PORT="${env.PORT}" is not a port number` });
      port = undefined;
    }
  }
  if (!validateSchema(data) || problems.length) {
    throw new ConfigError(opts.source ?? '', allProblems(data, [...(validateSchema.errors ?? [])], problems, opts.source));
  }
  if (port !== undefined) cfg.listen.port = port;
  if (cfg.store.redis.replicas === 'auto') cfg.store.redis.replicas = replicasFromEnv(env, problems);
  crossCheck(cfg, problems, opts.source);
  if (problems.length) throw new ConfigError(opts.source ?? '', problems);
  return deepFreeze(cfg);
}

/** store.redis.replicas: auto, the replica count the Helm chart puts in GATEWAY_REPLICAS. */
function replicasFromEnv(env: NodeJS.ProcessEnv, problems: ConfigProblem[]): number {
  const raw = env.GATEWAY_REPLICAS;
  const n = Number(raw);
  if (raw !== undefined && raw !== '' && Number.isInteger(n) && n >= 1) return n;
  problems.push({
    path: 'store.redis.replicas',
    message: `auto reads the replica count from the environment variable GATEWAY_REPLICAS, which is ${raw === undefined ? 'not set' : `"${raw}", not a whole number of at least 1`} (the Helm chart sets it; else give the count)`,
  });
  return 1;
}

/** The line of the file with a caret under the column, as a compiler shows it. */
function excerpt(lines: string[], line: number, col: number): string {
  const text = (lines[line - 1] ?? '').replace(/\t/g, ' ');
  const gutter = String(line);
  return `${gutter} | ${text}\n${' '.repeat(gutter.length)} | ${' '.repeat(Math.max(0, col - 1))}^`;
}

/**
 * A YAML syntax error is reported once: after the first one the parser's further complaints are
 * mostly its confusion (an unclosed bracket makes every later line wrong). Duplicate keys are
 * independent of each other, so each is reported. A tab in indentation, which YAML forbids and
 * editors hide, gets its own message.
 */
function yamlProblems(text: string, errors: YAML.YAMLError[]): ConfigProblem[] {
  const lines = text.split(/\r?\n/);
  const at = (e: YAML.YAMLError) => e.linePos?.[0] ?? { line: 1, col: 1 };
  const problem = (line: number, col: number, message: string): ConfigProblem => ({
    path: '',
    message: `line ${line}, column ${col}: ${message}\n${excerpt(lines, line, col)}`,
  });
  if (errors.every((e) => e.code === 'DUPLICATE_KEY')) {
    return errors.map((e) => problem(at(e).line, at(e).col, `duplicate key ${JSON.stringify(keyAt(lines, at(e)))}`));
  }
  const first = at(errors[0]);
  const tabLine = lines.findIndex((l, i) => i < first.line && /^ *\t/.test(l) && /\S/.test(l));
  const tab = errors.find((e) => e.code === 'TAB_AS_INDENT');
  if (tab || tabLine >= 0) {
    const line = tab ? at(tab).line : tabLine + 1;
    const col = (lines[line - 1] ?? '').indexOf('\t') + 1;
    return [problem(line, Math.max(col, 1), 'tabs are not allowed in YAML indentation; use spaces')];
  }
  const message = `YAML syntax error: ${errors[0].message.replace(/ at line \d+, column \d+[\s\S]*$/, '')}`;
  // The parser notices an unclosed quote at the end of the file; the quote that opened it is the last one.
  const quote = errors[0].code === 'MISSING_CHAR' ? /closing (["'])quote/.exec(message)?.[1] : undefined;
  const opened = quote ? text.lastIndexOf(quote, errors[0].pos[0]) : -1;
  if (opened >= 0) {
    const before = text.slice(0, opened).split(/\r?\n/);
    return [problem(before.length, before[before.length - 1].length + 1, message)];
  }
  return [problem(first.line, first.col, message)];
}

/** The key a duplicate-key error points at. */
function keyAt(lines: string[], pos: { line: number; col: number }): string {
  const rest = (lines[pos.line - 1] ?? '').slice(pos.col - 1);
  return /^("(?:[^"\\]|\\.)*"|'[^']*'|[^:]*?)\s*:/.exec(rest)?.[1]?.replace(/^["']|["']$/g, '') ?? rest.trim();
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
  if (doc.errors.length) throw new ConfigError(file, yamlProblems(text, doc.errors));
  return parseConfig(doc.toJS(), { env, source: file });
}

/** A split names known upstreams once each, includes the route's own upstream, and has some weight. */
function checkSplit(split: RouteSplitConfig, upstream: string, upstreams: GatewayConfig['upstreams'], at: string, problems: ConfigProblem[]): void {
  const seen = new Set<string>();
  split.sides.forEach((side, i) => {
    const path = `${at}.sides[${i}]`;
    if (!Object.hasOwn(upstreams, side.upstream)) problems.push({ path: `${path}.upstream`, message: `unknown upstream "${side.upstream}"` });
    if (seen.has(side.upstream)) problems.push({ path: `${path}.upstream`, message: `upstream "${side.upstream}" is already a side of this split` });
    seen.add(side.upstream);
    (side.match ?? []).forEach((m, j) => {
      if ((m.header === undefined) === (m.cookie === undefined)) problems.push({ path: `${path}.match[${j}]`, message: 'give exactly one of header or cookie' });
    });
  });
  if (!seen.has(upstream)) {
    problems.push({
      path: `${at}.sides`,
      message: `the route's upstream "${upstream}" must be one of the sides: with split, upstream names the side that WebSocket upgrades go to`,
    });
  }
  if (split.sides.every((s) => s.weight === 0)) problems.push({ path: `${at}.sides`, message: 'at least one side needs a weight above 0' });
}
