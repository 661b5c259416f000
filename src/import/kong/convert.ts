import { importedKey } from '../../plugins/auth/api-keys';
import { JWT_ALGORITHMS } from '../../plugins/auth/schema';
import { pluginsAt, type KongPlugin, type Scope } from './plugins';

/** Something of the Kong file that was not carried over, or only approximately, by its path in that file. */
export interface ImportIssue {
  path: string;
  message: string;
}

export interface ImportResult {
  /** The gateway configuration, ready to be written as YAML. */
  config: Record<string, unknown>;
  issues: ImportIssue[];
}

type Obj = Record<string, any>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const list = (v: unknown): any[] => (Array.isArray(v) ? v : []);
const NAME = /[^A-Za-z0-9_.-]+/g;
/** A Kong name made into one of ours (letters, digits, _ . -, at most 64). */
const safeName = (s: string): string => s.replace(NAME, '-').slice(0, 64) || 'unnamed';

/** The decK format versions whose services/routes/plugins layout this converter reads. */
const FORMATS = new Set(['1.1', '2.1', '3.0']);
/** Kong's route default (strip_path true, preserve_host false) and target port default. */
const KONG_TARGET_PORT = 8000;

interface Service {
  path: string;
  name: string;
  kong: Obj;
  upstream: string | null;
}

interface RouteOut {
  route: Obj;
  /** Paths of the Kong route, service and consumer whose plugins apply. */
  kongRoute: Obj;
  kongPath: string;
  service: Service | null;
}

/**
 * Kong's declarative configuration (decK, _format_version 1.1 to 3.0) to the gateway's. Whatever has
 * no equivalent, or converts only approximately, is listed with its path in the Kong file: a
 * migration must know what it lost, not guess.
 */
export function convertKong(doc: unknown): ImportResult {
  const issues: ImportIssue[] = [];
  const report = (path: string, message: string) => issues.push({ path, message });
  if (!isObj(doc)) return { config: {}, issues: [{ path: '(file)', message: 'not a Kong declarative configuration (a YAML mapping is expected)' }] };
  const format = String(doc._format_version ?? '');
  if (!FORMATS.has(format)) report('_format_version', `"${format}" is not a decK format this importer knows (1.1, 2.1, 3.0); read as 3.0`);

  const out: Obj = { listen: { host: '0.0.0.0', port: 8000 }, upstreams: {}, routes: [] };
  const kongUpstreams = new Map<string, { u: Obj; path: string }>();
  list(doc.upstreams).forEach((u, i) => {
    if (isObj(u) && typeof u.name === 'string') kongUpstreams.set(u.name, { u, path: `upstreams[${i}]` });
  });
  const usedUpstreams = new Set<string>();

  // Services, with the routes nested under them and the top-level routes that name them.
  const services: Service[] = [];
  const serviceByName = new Map<string, Service>();
  list(doc.services).forEach((s, i) => {
    const path = `services[${i}]`;
    if (!isObj(s)) return report(path, 'not a mapping');
    const name = uniqueName(safeName(String(s.name ?? `service-${i}`)), out.upstreams);
    const svc: Service = { path, name, kong: s, upstream: null };
    const upstream = convertService(s, path, kongUpstreams, usedUpstreams, report);
    if (upstream) {
      out.upstreams[name] = upstream;
      svc.upstream = name;
    }
    services.push(svc);
    if (typeof s.name === 'string') serviceByName.set(s.name, svc);
    if (typeof s.id === 'string') serviceByName.set(s.id, svc);
  });
  for (const [name, { path }] of kongUpstreams) if (!usedUpstreams.has(name)) report(path, `upstream "${name}" is used by no service: left out`);

  const routes: RouteOut[] = [];
  const taken = new Set<string>();
  const addRoutes = (r: unknown, path: string, service: Service | null) => {
    if (!isObj(r)) return report(path, 'not a mapping');
    if (!service) return report(path, 'the route names no service this file defines: left out');
    if (!service.upstream) return report(path, `its service (${service.path}) could not be converted: left out`);
    for (const route of convertRoute(r, path, service, taken, report)) routes.push({ route, kongRoute: r, kongPath: path, service });
  };
  services.forEach((svc) => list(svc.kong.routes).forEach((r, j) => addRoutes(r, `${svc.path}.routes[${j}]`, svc)));
  list(doc.routes).forEach((r, i) => {
    const ref = isObj(r) ? (isObj(r.service) ? (r.service.name ?? r.service.id) : r.service) : undefined;
    addRoutes(r, `routes[${i}]`, typeof ref === 'string' ? (serviceByName.get(ref) ?? null) : null);
  });
  checkOverlaps(routes, report);

  // Consumers first: the plugins refer to them, and JWT secrets live with them.
  const consumers = convertConsumers(doc, out, report);

  const scope: Scope = { doc, services, consumers: consumers.byKongName };
  const ctx = { out, report, consumers, jwtUsed: false, apiKeysUsed: false };
  const pluginsOf = pluginsAt(scope, report);
  for (const r of routes) {
    const effective = pluginsOf.forRoute(r.kongRoute);
    applyRoutePlugins(r.route, effective, ctx);
    out.routes.push(r.route);
  }
  applyGlobalPolicies(pluginsOf.global, ctx);
  applyConsumerPlugins(pluginsOf.consumer, ctx);
  if (ctx.jwtUsed) out.auth = { ...out.auth, jwt: jwtConfig(doc, consumers, pluginsOf.jwtPlugins, report) };
  if (consumers.list.length) out.consumers = consumers.list;
  if (consumers.imported) out.auth = { ...out.auth, apiKeys: { ...out.auth?.apiKeys, importedKeys: true } };
  return { config: out, issues };
}

function uniqueName(name: string, taken: Obj | Set<string>): string {
  const has = (n: string) => (taken instanceof Set ? taken.has(n) : n in taken);
  let candidate = name;
  for (let k = 2; has(candidate); k++) candidate = `${name.slice(0, 60)}-${k}`;
  if (taken instanceof Set) taken.add(candidate);
  return candidate;
}

const SECONDS_TO_MS = (v: unknown) => Math.round(Number(v) * 1000);

function convertService(
  s: Obj,
  path: string,
  kongUpstreams: Map<string, { u: Obj; path: string }>,
  used: Set<string>,
  report: (p: string, m: string) => void,
): Obj | null {
  let protocol: string;
  let host: string;
  let port: number | undefined;
  let base: string;
  if (typeof s.url === 'string') {
    let url: URL;
    try {
      url = new URL(s.url);
    } catch {
      report(`${path}.url`, `"${s.url}" is not a URL: service left out`);
      return null;
    }
    protocol = url.protocol.slice(0, -1);
    host = url.hostname;
    port = url.port ? Number(url.port) : undefined;
    base = url.pathname === '/' ? '' : url.pathname;
  } else {
    protocol = String(s.protocol ?? 'http');
    host = String(s.host ?? '');
    port = s.port === undefined ? undefined : Number(s.port);
    base = typeof s.path === 'string' && s.path !== '/' ? s.path : '';
  }
  // WebSocket services are plain HTTP(S) to us: upgrades ride any route.
  const scheme = protocol === 'ws' ? 'http' : protocol === 'wss' ? 'https' : protocol;
  if (scheme !== 'http' && scheme !== 'https') {
    report(`${path}.protocol`, `protocol ${protocol}: no equivalent (HTTP and HTTPS upstreams only); service left out`);
    return null;
  }
  if (!host) {
    report(path, 'no host: service left out');
    return null;
  }
  const upstream: Obj = {};
  const ku = kongUpstreams.get(host);
  if (ku) {
    used.add(host);
    const { u, path: upath } = ku;
    const targets: Obj[] = [];
    list(u.targets).forEach((t, k) => {
      const target = String(t?.target ?? '');
      const weight = t?.weight === undefined ? 100 : Number(t.weight);
      if (weight === 0) return report(`${upath}.targets[${k}]`, 'weight 0 (a disabled target): left out');
      const hostPort = /:\d+$/.test(target) ? target : `${target}:${KONG_TARGET_PORT}`;
      targets.push({ url: `${scheme}://${hostPort}${base}`, weight });
    });
    if (targets.length === 0) {
      report(`${upath}.targets`, 'no usable target: the services that use this upstream are left out');
      return null;
    }
    // Kong weights go to 65535, ours to 1000: scaled down together, the shares stay.
    const max = Math.max(...targets.map((t) => t.weight));
    if (max > 1000) for (const t of targets) t.weight = Math.max(1, Math.round((t.weight * 1000) / max));
    upstream.targets = targets.every((t) => t.weight === targets[0].weight) ? targets.map((t) => t.url) : targets;
    Object.assign(upstream, convertBalancing(u, upath, report));
  } else {
    const p = port ?? (scheme === 'https' ? 443 : 80);
    upstream.targets = [`${scheme}://${host}:${p}${base}`];
  }
  // Kong's read timeout is between two reads: our headers and body timeouts; it has no overall deadline.
  const connect = s.connect_timeout === undefined ? undefined : Number(s.connect_timeout);
  const read = s.read_timeout === undefined ? undefined : Number(s.read_timeout);
  const timeouts: Obj = {};
  if (connect !== undefined) timeouts.connectMs = connect;
  if (read !== undefined) {
    timeouts.headersMs = read;
    timeouts.bodyMs = read;
  }
  const total = (connect ?? 60000) + (read ?? 60000);
  if ((connect !== undefined || read !== undefined) && total > 60000) timeouts.requestMs = total;
  if (Object.keys(timeouts).length) upstream.timeouts = timeouts;
  if (s.write_timeout !== undefined && Number(s.write_timeout) !== 60000) {
    report(`${path}.write_timeout`, 'no equivalent (request bodies are bounded by the overall deadline, timeouts.requestMs)');
  }
  if (s.retries !== undefined) upstream.retries = { maxRetries: Math.min(Number(s.retries), 10) };
  if (s.tls_verify === false) report(`${path}.tls_verify`, 'false: not carried over (upstream TLS is always verified unless upstreams.*.tls says otherwise)');
  if (s.client_certificate !== undefined) report(`${path}.client_certificate`, 'not converted: set upstreams.*.tls with the certificate files');
  return upstream;
}

function convertBalancing(u: Obj, path: string, report: (p: string, m: string) => void): Obj {
  const out: Obj = {};
  const algorithm = u.algorithm ?? 'round-robin';
  if (algorithm === 'least-connections') out.balance = 'least-request';
  else if (algorithm === 'consistent-hashing') {
    const on = u.hash_on ?? 'none';
    const key =
      on === 'header' && u.hash_on_header ? `header:${u.hash_on_header}`
      : on === 'cookie' && u.hash_on_cookie ? `cookie:${u.hash_on_cookie}`
      : on === 'ip' ? 'ip'
      : on === 'consumer' ? 'consumer'
      : on === 'path' ? 'path'
      : null;
    if (key) out.balance = 'hash', out.hash = { key };
    else report(`${path}.hash_on`, `${on}: no equivalent hash key (header, cookie, ip, consumer or path); round-robin instead`);
    if (u.hash_fallback !== undefined && u.hash_fallback !== 'none') report(`${path}.hash_fallback`, 'no equivalent: a request without the key goes round-robin');
  } else if (algorithm !== 'round-robin') report(`${path}.algorithm`, `${algorithm}: no equivalent; round-robin instead`);

  const active = u.healthchecks?.active;
  if (isObj(active)) {
    const interval = Number(active.healthy?.interval ?? 0) || Number(active.unhealthy?.interval ?? 0);
    if (interval > 0) {
      const hc: Obj = { enabled: true, intervalMs: SECONDS_TO_MS(interval) };
      if (active.http_path) hc.path = active.http_path;
      if (active.timeout !== undefined) hc.timeoutMs = SECONDS_TO_MS(active.timeout);
      if (active.healthy?.successes) hc.healthyThreshold = Number(active.healthy.successes);
      const fails = Number(active.unhealthy?.http_failures ?? 0) || Number(active.unhealthy?.tcp_failures ?? 0) || Number(active.unhealthy?.timeouts ?? 0);
      if (fails) hc.unhealthyThreshold = fails;
      if (Array.isArray(active.healthy?.http_statuses)) hc.expectedStatuses = active.healthy.http_statuses.map(Number);
      if (active.type !== undefined && active.type !== 'http' && active.type !== 'https') {
        report(`${path}.healthchecks.active.type`, `${active.type}: no equivalent (probes are HTTP GETs)`);
      }
      out.healthCheck = hc;
    }
  }
  const passive = u.healthchecks?.passive?.unhealthy;
  if (isObj(passive)) {
    const counts = [passive.http_failures, passive.tcp_failures, passive.timeouts].map((v) => Number(v ?? 0)).filter((n) => n > 0);
    if (counts.length) {
      out.breaker = { consecutiveFailures: Math.min(...counts) };
      if (Number(passive.http_failures ?? 0) > 0) out.breaker.failureOn = ['connect', 'timeout', 'reset', 'bad-response', 'gateway-error', '5xx'];
    }
  }
  return out;
}

function convertRoute(r: Obj, path: string, svc: Service, taken: Set<string>, report: (p: string, m: string) => void): Obj[] {
  for (const field of ['headers', 'snis', 'sources', 'destinations'] as const) {
    if (r[field] !== undefined && !(Array.isArray(r[field]) && r[field].length === 0) && !(isObj(r[field]) && Object.keys(r[field]).length === 0)) {
      report(`${path}.${field}`, 'no equivalent: routes match on path, method and host only');
    }
  }
  const protocols = list(r.protocols);
  const odd = protocols.filter((p) => !['http', 'https', 'ws', 'wss'].includes(p));
  if (odd.length) report(`${path}.protocols`, `${odd.join(', ')}: no equivalent`);
  if (protocols.length && !protocols.includes('http') && !protocols.includes('ws')) {
    report(`${path}.protocols`, 'https only: the gateway serves a route on every listener; configure listen.tls and redirect plain HTTP');
  }
  const hosts: string[] = [];
  list(r.hosts).forEach((h, k) => {
    const host = String(h);
    if (/^(\*\.)?[A-Za-z0-9.-]+$/.test(host)) hosts.push(host);
    else report(`${path}.hosts[${k}]`, `"${host}": no equivalent (host names and *.suffix wildcards only); left out`);
  });
  const methods = list(r.methods).map((m) => String(m).toUpperCase());
  const paths = list(r.paths).length ? list(r.paths).map(String) : ['/'];
  const base = safeName(String(r.name ?? `${svc.name}-route`));
  const out: Obj[] = [];
  paths.forEach((p, k) => {
    if (p.startsWith('~')) return report(`${path}.paths[${k}]`, `regular expression ${p}: no equivalent (prefixes only); left out`);
    let prefix = p.length > 1 ? p.replace(/\/+$/, '') : p;
    if (!prefix.startsWith('/')) prefix = `/${prefix}`;
    const route: Obj = {
      name: uniqueName(paths.length > 1 ? safeName(`${base}-${k}`) : base, taken),
      match: { prefix, ...(methods.length ? { methods } : {}), ...(hosts.length ? { hosts } : {}) },
      upstream: svc.upstream,
    };
    // Kong strips the matched path by default; the service path is the target's base path.
    if (r.strip_path !== false && prefix !== '/') route.rewrite = { stripPrefix: true };
    if (r.preserve_host === true) route.preserveHost = true;
    out.push(route);
  });
  if (r.regex_priority) report(`${path}.regex_priority`, 'ignored: the longest matching prefix wins');
  return out;
}

/** Kong takes the first of two identical routes; our loader refuses them, so the later ones go. */
function checkOverlaps(routes: RouteOut[], report: (p: string, m: string) => void): void {
  const seen = new Map<string, string>();
  for (let i = 0; i < routes.length; i++) {
    const m = routes[i].route.match;
    const keys = (m.hosts ?? ['']).flatMap((h: string) => (m.methods ?? ['*']).map((x: string) => `${h.toLowerCase()} ${x} ${m.prefix}`));
    const clash = keys.map((k: string) => seen.get(k)).find((v: string | undefined) => v !== undefined);
    if (clash !== undefined) {
      report(routes[i].kongPath, `matches the same prefix, host and method as ${clash}: left out`);
      routes.splice(i--, 1);
      continue;
    }
    for (const k of keys) seen.set(k, routes[i].kongPath);
  }
}

export interface Consumers {
  list: Obj[];
  /** Kong username, custom_id and id → our consumer. */
  byKongName: Map<string, { out: Obj; path: string }>;
  /** Each consumer's JWT credentials, with their path. */
  jwtSecrets: { consumer: Obj; secret: Obj; path: string }[];
  imported: boolean;
}

function convertConsumers(doc: Obj, out: Obj, report: (p: string, m: string) => void): Consumers {
  const result: Consumers = { list: [], byKongName: new Map(), jwtSecrets: [], imported: false };
  const ids = new Set<string>();
  list(doc.consumers).forEach((c, i) => {
    const path = `consumers[${i}]`;
    if (!isObj(c)) return report(path, 'not a mapping');
    const raw = String(c.username ?? c.custom_id ?? `consumer-${i}`);
    let id = raw.replace(/[^A-Za-z0-9_.@:-]+/g, '-').slice(0, 128);
    if (id !== raw) report(`${path}.username`, `"${raw}" is not a valid consumer id: imported as "${id}"`);
    id = uniqueName(id, ids);
    const consumer: Obj = { id };
    if (c.username !== undefined && c.custom_id !== undefined) report(`${path}.custom_id`, 'not carried over: the consumer id is the username (sent upstream as X-Consumer-Id)');
    const roles = list(c.acls).map((a) => String(a?.group ?? '')).filter(Boolean);
    if (roles.length) consumer.roles = roles;
    const keys: Obj[] = [];
    list(c.keyauth_credentials).forEach((k, j) => {
      const kpath = `${path}.keyauth_credentials[${j}]`;
      try {
        const key = importedKey(String(k?.key ?? ''));
        const entry: Obj = { prefix: key.prefix, sha256: key.sha256 };
        if (typeof k.created_at === 'number') entry.created = new Date(k.created_at * 1000).toISOString();
        if (k.ttl) report(`${kpath}.ttl`, 'not carried over (the remaining lifetime is not in the file): the key does not expire; set expires by hand');
        keys.push(entry);
      } catch (err) {
        report(kpath, `${(err as Error).message}: left out`);
      }
    });
    if (keys.length) {
      consumer.apiKeys = keys;
      result.imported = true;
    }
    list(c.jwt_secrets).forEach((s, j) => {
      if (isObj(s)) result.jwtSecrets.push({ consumer, secret: s, path: `${path}.jwt_secrets[${j}]` });
    });
    for (const field of ['basicauth_credentials', 'hmacauth_credentials', 'oauth2_credentials', 'mtls_auth_credentials'] as const) {
      if (list(c[field]).length) report(`${path}.${field}`, 'no equivalent credential type: left out');
    }
    if (list(c.groups).length) report(`${path}.groups`, 'consumer groups: no equivalent');
    result.list.push(consumer);
    for (const name of [c.username, c.custom_id, c.id]) if (typeof name === 'string') result.byKongName.set(name, { out: consumer, path });
  });
  void out;
  return result;
}

interface Ctx {
  out: Obj;
  report: (p: string, m: string) => void;
  consumers: Consumers;
  jwtUsed: boolean;
  apiKeysUsed: boolean;
}

const PERIODS: [string, string][] = [
  ['second', '1s'],
  ['minute', '1m'],
  ['hour', '1h'],
  ['day', '1d'],
  ['month', '30d'],
  ['year', '365d'],
];

function rateLimits(p: KongPlugin, ctx: Ctx, byDefault: 'consumer' | 'ip'): Obj | null {
  const c = p.config;
  const by =
    c.limit_by === undefined || c.limit_by === 'consumer' ? byDefault
    : c.limit_by === 'credential' ? 'apiKey'
    : c.limit_by === 'ip' ? 'ip'
    : c.limit_by === 'header' && c.header_name ? `header:${c.header_name}`
    : c.limit_by === 'service' ? 'route'
    : null;
  if (by === null) {
    ctx.report(`${p.path}.config.limit_by`, `${c.limit_by}: no equivalent (consumer, credential, ip, header or service); plugin left out`);
    return null;
  }
  if (c.limit_by === 'service') ctx.report(`${p.path}.config.limit_by`, 'service: one counter per route (Kong counts the whole service)');
  const limits: Obj[] = [];
  for (const [field, per] of PERIODS) {
    if (c[field] === undefined || c[field] === null) continue;
    limits.push({ rate: Number(c[field]), per, by });
    if (field === 'month' || field === 'year') ctx.report(`${p.path}.config.${field}`, `a calendar ${field} in Kong, a rolling ${per} here`);
  }
  if (limits.length === 0) {
    ctx.report(`${p.path}.config`, 'no limit (second, minute, hour, day, month or year): plugin left out');
    return null;
  }
  const policy = c.policy ?? 'local';
  if (policy === 'redis') {
    const host = c.redis?.host ?? c.redis_host;
    if (host && ctx.out.store === undefined) {
      const port = c.redis?.port ?? c.redis_port ?? 6379;
      const db = c.redis?.database ?? c.redis_database ?? 0;
      const ssl = c.redis?.ssl ?? c.redis_ssl;
      ctx.out.store = { type: 'redis', redis: { url: `${ssl ? 'rediss' : 'redis'}://${host}:${port}/${db}` } };
      const password = c.redis?.password ?? c.redis_password;
      if (password) ctx.report(`${p.path}.config.redis.password`, 'not copied: set store.redis.password to ${REDIS_PASSWORD} and pass it in the environment');
    }
  } else if (policy === 'cluster') {
    ctx.report(`${p.path}.config.policy`, 'cluster (counters in Kong\'s database): no equivalent; counters are local unless store.type is redis');
  }
  const out: Obj = { limits };
  if (c.fault_tolerant === false) out.failMode = 'closed';
  if (c.hide_client_headers === true) out.headers = false;
  if (c.error_code !== undefined && Number(c.error_code) !== 429) ctx.report(`${p.path}.config.error_code`, 'not carried over: the answer is always 429 with Retry-After');
  if (c.error_message !== undefined && c.error_message !== 'API rate limit exceeded') ctx.report(`${p.path}.config.error_message`, 'not carried over: the answer is a problem+json body');
  if (c.sync_rate !== undefined && Number(c.sync_rate) !== -1) ctx.report(`${p.path}.config.sync_rate`, 'not needed: Redis counters are exact');
  return out;
}

function corsPolicy(p: KongPlugin, ctx: Ctx): Obj {
  const c = p.config;
  const cors: Obj = {};
  const origins = list(c.origins).map(String);
  const plain = origins.filter((o) => o === '*' || /^https?:\/\/[A-Za-z0-9.:[\]-]+$/.test(o));
  origins.filter((o) => !plain.includes(o)).forEach((o) => ctx.report(`${p.path}.config.origins`, `"${o}" (a pattern): no equivalent, exact origins only; left out`));
  cors.origins = plain.length ? plain : ['*'];
  if (list(c.methods).length) cors.methods = list(c.methods).map((m) => String(m).toUpperCase());
  if (list(c.headers).length) cors.allowHeaders = list(c.headers).map(String);
  if (list(c.exposed_headers).length) cors.exposeHeaders = list(c.exposed_headers).map(String);
  if (c.credentials === true) {
    if (cors.origins.includes('*')) ctx.report(`${p.path}.config.credentials`, 'true with any origin: credentials need explicit origins here (Kong reflects the Origin); left out');
    else cors.credentials = true;
  }
  if (c.max_age !== undefined && c.max_age !== null) cors.maxAgeSeconds = Number(c.max_age);
  if (c.preflight_continue === true) ctx.report(`${p.path}.config.preflight_continue`, 'no equivalent: preflights are answered by the gateway');
  if (c.private_network === true) ctx.report(`${p.path}.config.private_network`, 'no equivalent');
  return cors;
}

function ipRules(p: KongPlugin, ctx: Ctx): Obj {
  const c = p.config;
  const rules: Obj = {};
  const allow = list(c.allow ?? c.whitelist).map(String);
  const deny = list(c.deny ?? c.blacklist).map(String);
  if (allow.length) rules.allow = allow;
  if (deny.length) rules.deny = deny;
  if (c.status !== undefined && c.status !== null && Number(c.status) !== 403) ctx.report(`${p.path}.config.status`, 'not carried over: a refused address gets 403');
  if (c.message !== undefined && c.message !== null) ctx.report(`${p.path}.config.message`, 'not carried over: the answer is a problem+json body');
  return rules;
}

/** "Name:value" pairs of request-transformer. */
function pairs(items: unknown, path: string, ctx: Ctx): Record<string, string> {
  const out: Record<string, string> = {};
  list(items).forEach((item, k) => {
    const s = String(item);
    const colon = s.indexOf(':');
    if (colon <= 0) return ctx.report(`${path}[${k}]`, `"${s}" is not name:value: left out`);
    const value = s.slice(colon + 1);
    if (/\$\(/.test(value)) return ctx.report(`${path}[${k}]`, 'a template value: no equivalent; left out');
    out[s.slice(0, colon)] = value;
  });
  return out;
}

function requestHeaders(p: KongPlugin, ctx: Ctx): Obj | null {
  const c = p.config;
  const request: Obj = {};
  const remove = list(c.remove?.headers).map(String);
  if (remove.length) request.remove = remove;
  const rename = pairs(c.rename?.headers, `${p.path}.config.rename.headers`, ctx);
  if (Object.keys(rename).length) request.rename = rename;
  const set = { ...pairs(c.replace?.headers, `${p.path}.config.replace.headers`, ctx), ...pairs(c.add?.headers, `${p.path}.config.add.headers`, ctx) };
  if (list(c.replace?.headers).length) ctx.report(`${p.path}.config.replace.headers`, 'converted to set: the header is set even when the client did not send it');
  if (list(c.add?.headers).length) ctx.report(`${p.path}.config.add.headers`, "converted to set: the client's value is replaced (Kong keeps it)");
  if (Object.keys(set).length) request.set = set;
  const add = pairs(c.append?.headers, `${p.path}.config.append.headers`, ctx);
  if (Object.keys(add).length) request.add = add;
  for (const part of ['remove', 'rename', 'replace', 'add', 'append'] as const) {
    for (const what of ['querystring', 'body', 'json_types']) {
      if (list(c[part]?.[what]).length) ctx.report(`${p.path}.config.${part}.${what}`, 'no equivalent (headers only)');
    }
  }
  if (c.replace?.uri) ctx.report(`${p.path}.config.replace.uri`, 'no equivalent: use the route\'s rewrite.replacePrefix');
  if (c.http_method) ctx.report(`${p.path}.config.http_method`, 'no equivalent');
  return Object.keys(request).length ? request : null;
}

/** Kong plugins whose job the gateway does without being asked. */
const BUILT_IN: Record<string, string> = {
  prometheus: 'not needed: metrics are built in (/metrics on the admin listener)',
  'correlation-id': 'not needed: X-Request-Id is built in',
  'request-size-limiting': 'convert by hand: routes[].policies.limits.maxBodyBytes',
  'response-transformer': 'convert by hand: routes[].policies.headers.response',
};

function applyRoutePlugins(route: Obj, plugins: KongPlugin[], ctx: Ctx): void {
  const methods: string[] = [];
  let anonymous = false;
  let forward = false;
  const policies: Obj = {};
  let acl: KongPlugin | null = null;
  for (const p of plugins) {
    const c = p.config;
    switch (p.name) {
      case 'acl':
        acl = p;
        break;
      case 'rate-limiting': {
        const rl = rateLimits(p, ctx, 'consumer');
        if (rl) route.rateLimit = rl;
        break;
      }
      case 'key-auth': {
        methods.push('apiKey');
        ctx.apiKeysUsed = true;
        applyKeyNames(p, ctx);
        if (c.anonymous) anonymous = true;
        if (c.hide_credentials !== true) forward = true;
        break;
      }
      case 'jwt': {
        methods.push('jwt');
        ctx.jwtUsed = true;
        if (c.anonymous) anonymous = true;
        if (c.hide_credentials === false) forward = true;
        break;
      }
      case 'proxy-cache': {
        route.cache = cacheConfig(p, ctx);
        break;
      }
      case 'cors':
        policies.cors = corsPolicy(p, ctx);
        break;
      case 'ip-restriction':
        policies.ipRules = ipRules(p, ctx);
        break;
      case 'request-transformer': {
        const request = requestHeaders(p, ctx);
        if (request) policies.headers = { request };
        break;
      }
      default:
        if (!p.reported) ctx.report(`${p.path} (name: ${p.name})`, `${BUILT_IN[p.name] ?? 'no equivalent'}`);
        p.reported = true;
    }
  }
  if (methods.length) {
    route.auth = { methods };
    if (acl) applyAcl(route.auth, acl, ctx, anonymous);
    if (anonymous && !route.auth.roles) route.auth.required = false;
    if (forward) route.auth.forwardCredentials = true;
    if (route.cache) route.cache.scope = 'consumer';
  }
  if (Object.keys(policies).length) route.policies = policies;
  if (acl && !methods.length) ctx.report(`${acl.path} (name: acl)`, 'no authentication plugin on this route, so no consumer to check: left out');
}

/** ACL groups are consumer roles (imported from the consumers' acls); allow is "any of these roles". */
function applyAcl(auth: Obj, p: KongPlugin, ctx: Ctx, anonymous: boolean): void {
  const allow = list(p.config.allow ?? p.config.whitelist).map(String);
  const deny = list(p.config.deny ?? p.config.blacklist).map(String);
  if (deny.length) ctx.report(`${p.path}.config.deny`, 'no equivalent (roles allow, never deny); left out');
  if (!allow.length) return;
  auth.roles = allow;
  if (anonymous) ctx.report(`${p.path} (name: acl)`, 'with an anonymous consumer: here roles need an authenticated caller, so anonymous access is refused');
  if (auth.methods.includes('jwt')) ctx.report(`${p.path} (name: acl)`, 'a JWT may also carry roles in its roles claim (auth.jwt.claims.roles), which Kong ignores');
}

function applyKeyNames(p: KongPlugin, ctx: Ctx): void {
  const c = p.config;
  const names = list(c.key_names).map(String);
  const name = names[0] ?? 'apikey';
  const apiKeys: Obj = (ctx.out.auth ??= {}).apiKeys ??= {};
  if (apiKeys.header === undefined) {
    apiKeys.header = name;
    if (c.key_in_query !== false) apiKeys.query = name;
  } else if (apiKeys.header !== name) {
    ctx.report(`${p.path}.config.key_names`, `one API-key header for the whole gateway: ${apiKeys.header} (from an earlier key-auth) is used`);
  }
  if (names.length > 1) ctx.report(`${p.path}.config.key_names`, `one name only: ${name} is used, ${names.slice(1).join(', ')} left out`);
  if (c.key_in_header === false) ctx.report(`${p.path}.config.key_in_header`, 'false: no equivalent; the header is always read');
  if (c.key_in_body === true) ctx.report(`${p.path}.config.key_in_body`, 'no equivalent: keys are read from the header or the query');
}

function cacheConfig(p: KongPlugin, ctx: Ctx): Obj {
  const c = p.config;
  const ttl = c.cache_ttl === undefined ? 300 : Number(c.cache_ttl);
  const cache: Obj = { defaultTtl: ttl, maxTtl: Math.max(300, ttl) };
  cache.statuses = list(c.response_code).length ? list(c.response_code).map(Number) : [200, 301, 404];
  // Kong ignores Cache-Control unless told otherwise.
  if (c.cache_control !== true) cache.ignoreClientDirectives = true;
  const methods = list(c.request_method).map((m) => String(m).toUpperCase()).filter((m) => m !== 'GET' && m !== 'HEAD');
  if (methods.length) ctx.report(`${p.path}.config.request_method`, `${methods.join(', ')}: only GET and HEAD are cached`);
  if (c.content_type !== undefined) ctx.report(`${p.path}.config.content_type`, 'no equivalent: every content type is cached');
  if (list(c.vary_headers).length) ctx.report(`${p.path}.config.vary_headers`, 'not needed: the upstream Vary header is honoured');
  if (list(c.vary_query_params).length) ctx.report(`${p.path}.config.vary_query_params`, 'no equivalent: the whole query is part of the key');
  if (c.strategy !== undefined && c.strategy !== 'memory') ctx.report(`${p.path}.config.strategy`, `${c.strategy}: the cache uses the gateway store (store.type)`);
  return cache;
}

function applyGlobalPolicies(plugins: KongPlugin[], ctx: Ctx): void {
  const policies: Obj = {};
  for (const p of plugins) {
    if (p.name === 'cors') policies.cors = corsPolicy(p, ctx);
    else if (p.name === 'ip-restriction') policies.ipRules = ipRules(p, ctx);
  }
  if (Object.keys(policies).length) ctx.out.policies = policies;
}

function applyConsumerPlugins(plugins: KongPlugin[], ctx: Ctx): void {
  for (const p of plugins) {
    const consumer = p.consumer!;
    if (p.name === 'rate-limiting') {
      const rl = rateLimits(p, ctx, 'consumer');
      if (rl) consumer.rateLimits = rl.limits;
    } else ctx.report(`${p.path} (name: ${p.name})`, `no equivalent for a consumer`);
  }
}

function jwtConfig(doc: Obj, consumers: Consumers, plugins: KongPlugin[], report: (p: string, m: string) => void): Obj {
  const jwt: Obj = {};
  const first = plugins[0]?.config ?? {};
  const claim = String(first.key_claim_name ?? 'iss');
  const verify = list(first.claims_to_verify).map(String);
  jwt.requiredClaims = [claim, ...verify.filter((c) => c === 'exp' || c === 'nbf')];
  if (claim !== 'sub') jwt.claims = { consumer: claim, user: 'sub' };
  const params = first.uri_param_names === undefined ? ['jwt'] : list(first.uri_param_names).map(String);
  if (params.length) jwt.query = params[0];
  const cookies = list(first.cookie_names).map(String);
  if (cookies.length) jwt.cookie = cookies[0];
  const headers = list(first.header_names).map(String).filter((h) => h.toLowerCase() !== 'authorization');
  if (headers.length) report(`${plugins[0].path}.config.header_names`, `${headers.join(', ')}: no equivalent (the Authorization header, the query and a cookie)`);
  if (Number(first.maximum_expiration ?? 0) > 0) report(`${plugins[0].path}.config.maximum_expiration`, 'no equivalent');
  for (const p of plugins.slice(1)) {
    if (JSON.stringify(p.config) !== JSON.stringify(plugins[0].config)) report(`${p.path}.config`, `one JWT configuration for the whole gateway: ${plugins[0].path} is used`);
  }

  // One key source for the whole gateway: the secrets of every consumer must be one.
  const hmac = new Set(JWT_ALGORITHMS.filter((a) => a.startsWith('HS')));
  let chosen: { algorithm: string; material: string; path: string } | null = null;
  const algorithms = new Set<string>();
  for (const { consumer, secret, path } of consumers.jwtSecrets) {
    const algorithm = String(secret.algorithm ?? 'HS256');
    if (!(JWT_ALGORITHMS as readonly string[]).includes(algorithm)) {
      report(`${path}.algorithm`, `${algorithm}: not accepted; credential left out`);
      continue;
    }
    let material = hmac.has(algorithm as never) ? String(secret.secret ?? '') : String(secret.rsa_public_key ?? '');
    if (hmac.has(algorithm as never) && first.secret_is_base64 === true) material = Buffer.from(material, 'base64').toString('latin1');
    if (chosen === null) chosen = { algorithm, material, path };
    else if (chosen.material !== material || hmac.has(chosen.algorithm as never) !== hmac.has(algorithm as never)) {
      report(path, `one JWT key for the whole gateway: this credential's key differs from ${chosen.path}'s; left out`);
      continue;
    }
    algorithms.add(algorithm);
    if (secret.key !== undefined && secret.key !== consumer.id) {
      report(`${path}.key`, `tokens carry ${claim}="${secret.key}", which becomes the consumer id; consumer "${consumer.id}" is not matched (make the token's ${claim} "${consumer.id}")`);
    }
  }
  jwt.algorithms = chosen ? [...algorithms] : ['HS256'];
  if (chosen && hmac.has(chosen.algorithm as never)) {
    if (Buffer.byteLength(chosen.material) >= 32) jwt.secret = chosen.material;
    else {
      report(`${chosen.path}.secret`, 'shorter than 32 bytes, which the gateway refuses: set JWT_SECRET to a longer secret and re-issue the tokens');
      jwt.secret = '${JWT_SECRET}';
    }
  } else if (chosen) {
    jwt.publicKey = chosen.material;
  } else {
    report('consumers', 'the jwt plugin is used but no consumer has a JWT secret: set JWT_SECRET');
    jwt.secret = '${JWT_SECRET}';
  }
  // Kong also refuses a token whose key claim names no credential; here any token the key verifies is accepted.
  void doc;
  return jwt;
}
