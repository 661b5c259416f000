import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BENCH_API_KEY, BENCH_CONSUMER, BENCH_JWT_SECRET, benchJwt } from './auth';
import { DIST, freePort, httpReady, startProcess, type Proc } from './harness';
import { startRedisServer } from './redis';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';

/** What every server of a bench run can rely on. */
export interface BenchEnv {
  upstreamUrl: string;
}

export interface RunningServer {
  baseUrl: string;
  procs: Proc[];
  /** Processes the server needs (a redis-server): stopped with it, not counted in its CPU per request. */
  helpers?: Proc[];
}

/** A process (or group) that serves one or more scenarios. Started once per run, only if needed. */
export interface ServerSpec {
  name: string;
  start(env: BenchEnv): Promise<RunningServer>;
}

export interface Scenario {
  name: string;
  description: string;
  server: string;
  path: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
}

/** The gateway's bench configuration: one route per scenario family, default settings otherwise. */
function gatewayConfig(env: BenchEnv, port: number, adminPort: number): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort },
    // Nothing to drain between bench runs: stop at once.
    shutdown: { drainDelayMs: 0 },
    upstreams: { users: { targets: [env.upstreamUrl] } },
    auth: { jwt: { algorithms: ['HS256'], secret: BENCH_JWT_SECRET } },
    consumers: [BENCH_CONSUMER],
    routes: [
      { name: 'users', match: { prefix: '/api/users' }, upstream: 'users' },
      {
        name: 'policies',
        match: { prefix: '/api/policies' },
        upstream: 'users',
        policies: {
          ipRules: { deny: ['192.0.2.0/24', '2001:db8::/32'] },
          cors: { origins: ['https://app.example.com', 'https://*.example.org'] },
          headers: { request: { set: { 'x-trace': 'gw-{requestId}' } }, response: { remove: ['cache-control'], set: { 'x-route': '{route}' } } },
          envelope: true,
          deprecation: { date: '2025-01-01T00:00:00Z', sunset: '2027-01-01T00:00:00Z' },
        },
      },
      { name: 'users-jwt', match: { prefix: '/api/jwt' }, upstream: 'users', auth: { methods: ['jwt'] } },
      { name: 'users-key', match: { prefix: '/api/key' }, upstream: 'users', auth: { methods: ['apiKey'] } },
    ],
  };
}

export async function startGatewayProcess(name: string, config: (port: number, adminPort: number) => Record<string, unknown>): Promise<RunningServer> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-'));
  const file = join(dir, 'gateway.json');
  // JSON is valid YAML: the bench writes it directly.
  writeFileSync(file, JSON.stringify(config(port, adminPort)));
  // --slow-gateway-us (bench:ci's self-test) reaches every gateway process through this variable.
  const preload = process.env.BENCH_SLOW_GATEWAY_US ? ['--require', join(DIST, 'bench/slowdown.js')] : [];
  // A process of several workers loads the gateway once per thread: slower to start on a loaded machine.
  const proc = await startProcess(
    name,
    [...NODE_FLAGS, ...preload, join(DIST, 'src/main.js'), '--config', file],
    () => httpReady(`http://127.0.0.1:${adminPort}/readyz`),
    { PORT: '' },
    { readyWithinMs: 60000 },
  );
  return { baseUrl: `http://127.0.0.1:${port}`, procs: [proc] };
}

/**
 * The bench routes with one more feature on every route (`extra`), with the memory store or a
 * private redis-server. The CPU per request is the gateway's alone (Redis, like the upstream, is not
 * counted).
 */
function storeServer(name: string, store: 'memory' | 'redis', extra: Record<string, unknown>, autoPipelining = false, top: Record<string, unknown> = {}): ServerSpec {
  return {
    name,
    start: async (env) => {
      const redis = store === 'redis' ? await startRedisServer(`${name}-redis`) : null;
      const running = await startGatewayProcess(name, (port, adminPort) => {
        const cfg = gatewayConfig(env, port, adminPort) as { routes: Record<string, unknown>[] };
        return {
          ...cfg,
          ...top,
          store: redis ? { type: 'redis', redis: { url: redis.url, autoPipelining } } : { type: 'memory' },
          routes: cfg.routes.map((r) => ({ ...r, ...extra })),
        };
      });
      return { baseUrl: running.baseUrl, procs: running.procs, helpers: redis ? [redis.proc] : [] };
    },
  };
}

/** A bench-only server (not the gateway) started with `args` on a free port, ready once it answers. */
function benchServer(name: string, args: (port: number, env: BenchEnv) => string[]): ServerSpec {
  return {
    name,
    start: async (env) => {
      const port = await freePort();
      const proc = await startProcess(name, args(port, env), () => httpReady(`http://127.0.0.1:${port}/api/users/1`));
      return { baseUrl: `http://127.0.0.1:${port}`, procs: [proc] };
    },
  };
}

/** A rate limit that never rejects: every request pays for a full decision and its five headers. */
const RATE_LIMITED = { rateLimit: { limits: [{ rate: 1000000000, per: '1h' }] } };
/** A response cache: the bench upstream answers `public, max-age=60`, so after the first request every request is a hit. */
const CACHED = { cache: {} };

/**
 * The bare routes with tracing on at `ratio`. The bench upstream stands in for the collector (it
 * answers every POST 200): the gateway pays for its spans and their export, the collector is not counted.
 */
function tracingServer(name: string, ratio: number): ServerSpec {
  return {
    name,
    start: (env) =>
      startGatewayProcess(name, (port, adminPort) => ({
        ...gatewayConfig(env, port, adminPort),
        tracing: { enabled: true, endpoint: `${env.upstreamUrl}/v1/traces`, sampleRatio: ratio },
      })),
  };
}

export const SERVERS: ServerSpec[] = [
  storeServer('gateway-cache-memory', 'memory', CACHED),
  storeServer('gateway-cache-redis', 'redis', CACHED),
  storeServer('gateway-cache-redis-autopipe', 'redis', CACHED, true),
  storeServer('gateway-rl-memory', 'memory', RATE_LIMITED),
  storeServer('gateway-rl-memory-workers-2', 'memory', RATE_LIMITED, false, { workers: 2 }),
  {
    name: 'gateway-workers-2',
    start: (env) => startGatewayProcess('gateway-workers-2', (port, adminPort) => ({ ...gatewayConfig(env, port, adminPort), workers: 2 })),
  },
  storeServer('gateway-rl-redis', 'redis', RATE_LIMITED),
  storeServer('gateway-rl-redis-autopipe', 'redis', RATE_LIMITED, true),
  {
    name: 'upstream',
    start: async (env) => ({ baseUrl: env.upstreamUrl, procs: [] }),
  },
  tracingServer('gateway-tracing-0pct', 0),
  tracingServer('gateway-tracing-1pct', 0.01),
  tracingServer('gateway-tracing-100pct', 1),
  benchServer('http-proxy', (port, env) => [join(DIST, 'bench/reference.js'), String(port), env.upstreamUrl]),
  benchServer('fastify-static', (port) => [...NODE_FLAGS, join(DIST, 'bench/static.js'), String(port)]),
  {
    name: 'gateway',
    start: (env) => startGatewayProcess('gateway', (port, adminPort) => gatewayConfig(env, port, adminPort)),
  },
  {
    name: 'gateway-quiet',
    start: (env) =>
      startGatewayProcess('gateway-quiet', (port, adminPort) => ({ ...gatewayConfig(env, port, adminPort), log: { access: false } })),
  },
  {
    // A server of its own: the bare route's server carries no remote auth configuration at all.
    name: 'gateway-remote-auth',
    start: (env) =>
      startGatewayProcess('gateway-remote-auth', (port, adminPort) => {
        const cfg = gatewayConfig(env, port, adminPort) as { routes: Record<string, unknown>[]; auth: Record<string, unknown> };
        return {
          ...cfg,
          auth: {
            ...cfg.auth,
            external: { url: `${env.upstreamUrl}/authz`, identity: { consumerHeader: 'X-Auth-Consumer' } },
            introspection: { url: `${env.upstreamUrl}/introspect`, clientId: 'bench', clientSecret: 'bench-secret' },
          },
          routes: [
            ...cfg.routes,
            { name: 'users-external', match: { prefix: '/api/external' }, upstream: 'users', auth: { methods: ['external'] } },
            { name: 'users-introspect', match: { prefix: '/api/introspect' }, upstream: 'users', auth: { methods: ['introspection'] } },
          ],
        };
      }),
  },
  {
    name: 'gateway-jwt-nocache',
    start: (env) =>
      startGatewayProcess('gateway-jwt-nocache', (port, adminPort) => ({
        ...gatewayConfig(env, port, adminPort),
        auth: { jwt: { algorithms: ['HS256'], secret: BENCH_JWT_SECRET, cache: { maxEntries: 0 } } },
      })),
  },
];

/** The reference every ratio is taken against, and the bare gateway route later scenarios compare with. */
export const REFERENCE = 'http-proxy';
export const BARE = 'gateway';

export const SCENARIOS: Scenario[] = [
  { name: 'direct', description: 'autocannon straight to the upstream (ceiling)', server: 'upstream', path: '/api/users/123' },
  { name: 'http-proxy', description: '@fastify/http-proxy alone, same undici pool settings (reference)', server: 'http-proxy', path: '/api/users/123' },
  { name: 'gateway', description: 'the gateway, one bare route (metrics on, access log at its default)', server: 'gateway', path: '/api/users/123' },
  {
    name: 'gateway-policies',
    description: 'a route with IP rules, CORS, request and response header rules, the JSON envelope and deprecation headers',
    server: 'gateway',
    path: '/api/policies/123',
    headers: { origin: 'https://app.example.com' },
  },
  { name: 'gateway-no-access-log', description: 'the same route with the access log off (its per-request cost)', server: 'gateway-quiet', path: '/api/users/123' },
  { name: 'gateway-jwt', description: 'a route requiring a JWT (HS256; one token, so verification is cached)', server: 'gateway', path: '/api/jwt/123', headers: { authorization: `Bearer ${benchJwt()}` } },
  { name: 'gateway-jwt-nocache', description: 'the JWT route with the verification cache off (an HMAC check per request)', server: 'gateway-jwt-nocache', path: '/api/jwt/123', headers: { authorization: `Bearer ${benchJwt()}` } },
  {
    name: 'external-auth-cached',
    description: 'a route with an external HTTP authorizer; its decision (Cache-Control max-age=60) is cached, so a request costs a hash and a lookup (target: within 10 % of the bare route)',
    server: 'gateway-remote-auth',
    path: '/api/external/123',
    headers: { authorization: 'Bearer bench-opaque-token' },
  },
  {
    name: 'introspection-cached',
    description: 'a route taking opaque tokens checked by OAuth 2.0 introspection (RFC 7662); the active result is cached (target: within 10 % of the bare route)',
    server: 'gateway-remote-auth',
    path: '/api/introspect/123',
    headers: { authorization: 'Bearer bench-opaque-token' },
  },
  { name: 'gateway-api-key', description: 'a route requiring an API key (memory store: SHA-256 and a map lookup)', server: 'gateway', path: '/api/key/123', headers: { 'x-api-key': BENCH_API_KEY } },
  {
    name: 'tracing-0pct',
    description: 'the bare route with tracing on and nothing sampled: what every request pays (a trace id in the access line, a traceparent to the upstream); tracing-1pct less this is the sampled share',
    server: 'gateway-tracing-0pct',
    path: '/api/users/123',
  },
  { name: 'tracing-1pct', description: 'the bare route with OpenTelemetry tracing on, 1 % of traces sampled (the others still propagate a traceparent)', server: 'gateway-tracing-1pct', path: '/api/users/123' },
  { name: 'tracing-100pct', description: 'the bare route with every request traced: a server and a client span each, exported over OTLP/HTTP', server: 'gateway-tracing-100pct', path: '/api/users/123' },
  { name: 'ratelimit-memory', description: 'the bare route plus a rate limit, memory store', server: 'gateway-rl-memory', path: '/api/users/123' },
  {
    name: 'gateway-workers-2',
    description: 'the bare route, workers: 2 (two event loops on SO_REUSEPORT listeners; one on Node < 22.12). Compare req/s and CPU with gateway',
    server: 'gateway-workers-2',
    path: '/api/users/123',
  },
  {
    name: 'ratelimit-memory-workers-2',
    description: 'the rate-limited route, memory store, workers: 2 (buckets shared exactly through the SharedArrayBuffer table). Compare with ratelimit-memory',
    server: 'gateway-rl-memory-workers-2',
    path: '/api/users/123',
  },
  { name: 'ratelimit-redis', description: 'the bare route plus a rate limit, Redis store (one EVALSHA per request; the calls of one event-loop turn share a write)', server: 'gateway-rl-redis', path: '/api/users/123' },
  {
    name: 'ratelimit-redis-autopipe',
    description: 'the same with ioredis auto-pipelining on (store.redis.autoPipelining: true)',
    server: 'gateway-rl-redis-autopipe',
    path: '/api/users/123',
  },
  { name: 'cache-hit-memory', description: 'the bare route with a response cache, memory store: every request a hit (targets 3x the bare route)', server: 'gateway-cache-memory', path: '/api/users/123' },
  { name: 'cache-hit-redis', description: 'the bare route with a response cache, Redis store: every request a hit, one EVALSHA (targets 1.5x the bare route)', server: 'gateway-cache-redis', path: '/api/users/123' },
  {
    name: 'cache-hit-redis-autopipe',
    description: 'the same with ioredis auto-pipelining on (store.redis.autoPipelining: true)',
    server: 'gateway-cache-redis-autopipe',
    path: '/api/users/123',
  },
  {
    name: 'fastify-static',
    description: 'Fastify alone answering the same response from memory: the ceiling of any cache hit (none of the gateway work)',
    server: 'fastify-static',
    path: '/api/users/123',
  },
];

/**
 * The order of the scenarios in round `round`. The order rotates from round to round so no scenario
 * always follows the same neighbour, but the two baselines (reference and bare route) always run
 * back to back, taking turns at going first: their ratio is the headline figure, and on a shared
 * machine whose speed drifts over minutes, two measures a minute apart differ by more than the
 * gateway's changes do. The pair moves through the round with the rotation.
 */
export function roundOrder<T extends { name: string }>(list: readonly T[], round: number): T[] {
  const named = (name: string) => list.filter((s) => s.name === name);
  const pair = round % 2 === 0 ? [...named(REFERENCE), ...named(BARE)] : [...named(BARE), ...named(REFERENCE)];
  const rest = list.filter((s) => s.name !== REFERENCE && s.name !== BARE);
  const rotated = rest.map((_, i) => rest[(i + round) % rest.length]);
  const at = round % (rotated.length + 1);
  return [...rotated.slice(0, at), ...pair, ...rotated.slice(at)];
}
