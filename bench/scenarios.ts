import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIST, freePort, httpReady, startProcess, type Proc } from './harness';

/** What every server of a bench run can rely on. */
export interface BenchEnv {
  upstreamUrl: string;
}

export interface RunningServer {
  baseUrl: string;
  procs: Proc[];
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
    routes: [{ name: 'users', match: { prefix: '/api/users' }, upstream: 'users' }],
  };
}

async function startGatewayProcess(name: string, config: (port: number, adminPort: number) => Record<string, unknown>): Promise<RunningServer> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-'));
  const file = join(dir, 'gateway.json');
  // JSON is valid YAML: the bench writes it directly.
  writeFileSync(file, JSON.stringify(config(port, adminPort)));
  // --slow-gateway-us (bench:ci's self-test) reaches every gateway process through this variable.
  const preload = process.env.BENCH_SLOW_GATEWAY_US ? ['--require', join(DIST, 'bench/slowdown.js')] : [];
  const proc = await startProcess(name, [...preload, join(DIST, 'src/main.js'), '--config', file], () => httpReady(`http://127.0.0.1:${adminPort}/readyz`), {
    PORT: '',
  });
  return { baseUrl: `http://127.0.0.1:${port}`, procs: [proc] };
}

export const SERVERS: ServerSpec[] = [
  {
    name: 'upstream',
    start: async (env) => ({ baseUrl: env.upstreamUrl, procs: [] }),
  },
  {
    name: 'http-proxy',
    start: async (env) => {
      const port = await freePort();
      const proc = await startProcess('http-proxy', [join(DIST, 'bench/reference.js'), String(port), env.upstreamUrl], () =>
        httpReady(`http://127.0.0.1:${port}/api/users/1`),
      );
      return { baseUrl: `http://127.0.0.1:${port}`, procs: [proc] };
    },
  },
  {
    name: 'gateway',
    start: (env) => startGatewayProcess('gateway', (port, adminPort) => gatewayConfig(env, port, adminPort)),
  },
  {
    name: 'gateway-quiet',
    start: (env) =>
      startGatewayProcess('gateway-quiet', (port, adminPort) => ({ ...gatewayConfig(env, port, adminPort), log: { access: false } })),
  },
];

/** The reference every ratio is taken against, and the bare gateway route later scenarios compare with. */
export const REFERENCE = 'http-proxy';
export const BARE = 'gateway';

export const SCENARIOS: Scenario[] = [
  { name: 'direct', description: 'autocannon straight to the upstream (ceiling)', server: 'upstream', path: '/api/users/123' },
  { name: 'http-proxy', description: '@fastify/http-proxy alone, same undici pool settings (reference)', server: 'http-proxy', path: '/api/users/123' },
  { name: 'gateway', description: 'the gateway, one bare route (metrics on, access log at its default)', server: 'gateway', path: '/api/users/123' },
  { name: 'gateway-no-access-log', description: 'the same route with the access log off (its per-request cost)', server: 'gateway-quiet', path: '/api/users/123' },
];
