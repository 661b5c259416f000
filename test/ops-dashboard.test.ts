import { spawn, spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { Gateway } from '../src/app';
import { parseConfig } from '../src/config/load';
import { withTestDefaults } from './helpers/gateway';
import { call } from './helpers/http';
import { startRedis, type TestRedis } from './helpers/redis';
import { startUpstream } from './helpers/upstream';

const ROOT = join(__dirname, '..');
const DASHBOARD = join(ROOT, 'charts', 'gateway', 'dashboards', 'gateway.json');

interface Target {
  expr: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown }[] };
};
/** The exposition scraped by the export test, linted by the promtool test. */
let exposed = '';
const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => ({ panel: p.title, expr: x.expr })));

/**
 * Dashboard metrics whose code is not in this tree yet, each with where its name comes from. A name
 * is pending only while src/ does not mention it: once its feature lands, the test fails until a
 * driver below makes the series exist and the entry is removed.
 */
const PENDING: Record<string, string> = {
};

/** PromQL words that are not metric names. */
const PROMQL_WORDS = new Set(['sum', 'max', 'min', 'avg', 'count', 'rate', 'irate', 'increase', 'histogram_quantile', 'clamp_min', 'or', 'vector']);

/** Metric names of an expression; throws on anything the parser does not account for, so none slips by. */
function metricNames(expr: string): { name: string; matchers: string }[] {
  const out: { name: string; matchers: string }[] = [];
  let rest = expr.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/g, (_m, name: string, matchers: string) => {
    out.push({ name, matchers });
    return ' ';
  });
  rest = rest
    .replace(/\b(by|without)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b\d+(\.\d+)?(e[-+]?\d+)?\b/g, ' ');
  for (const word of rest.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? []) {
    if (!PROMQL_WORDS.has(word)) throw new Error(`unexpected "${word}" in ${expr} (a metric without a selector, or a function to add to PROMQL_WORDS)`);
  }
  return out;
}

const srcText = (readdirSync(join(ROOT, 'src'), { recursive: true }) as string[])
  .filter((f) => f.endsWith('.ts'))
  .map((f) => readFileSync(join(ROOT, 'src', f), 'utf8'))
  .join('\n');
/** Histogram series are defined under their family name. */
const family = (name: string) => name.replace(/_(bucket|sum|count)$/, '');
const definedInSrc = (name: string) => srcText.includes(`'${name}'`) || srcText.includes(`'${family(name)}'`);
/** prom-client's default metrics (registered with an empty prefix when processMetrics is on). */
const isProcessMetric = (name: string) => /^(nodejs|process)_/.test(name);

t.test('the dashboard: variables, panels, and every query filtered by them', async (t) => {
  t.equal(dashboard.uid, 'api-gateway');
  const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  for (const name of ['datasource', 'namespace', 'instance', 'route']) t.ok(vars.has(name), `variable $${name}`);
  t.match(JSON.stringify(vars.get('route')!.query), /label_values\(gateway_requests_total\{.*\}, route\)/);
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  // Grafana draws panels where gridPos says: two that share a cell hide one another.
  const cells = new Map<string, string>();
  for (const p of dashboard.panels) {
    const { x, y, w, h } = p.gridPos;
    const clash = new Set<string>();
    for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
      const other = cells.get(`${i},${j}`);
      if (other) clash.add(other);
      else cells.set(`${i},${j}`, p.title);
    }
    t.same([...clash], [], `${p.title} overlaps no other panel`);
  }
  for (const p of dashboard.panels) {
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`);
    if (p.type !== 'row') t.ok((p.targets ?? []).length > 0, `${p.title} has a query`);
  }
  const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join(' | ');
  for (const topic of ['requests per second', 'error ratio', 'latency percentiles', 'gateway-added', 'rate-limit', 'cache hit ratio', 'breaker', 'health', 'redis', 'pool', 'queued', 'event-loop lag']) {
    t.ok(titles.includes(topic), `a panel about ${topic}`);
  }
  const added = ['authorizer and introspection calls', 'authorization decision cache', 'status code', 'bytes per second', 'open client connections', 'cache stores', 'jwks', 'rejections by scope', 'by issuer', 'client certificate', 'retries', 'rejections', 'breaker transitions', 'health-check results', 'configuration reloads', 'configuration hash', 'version', 'open websockets', 'websocket upgrades', 'websocket messages', 'websocket bytes', 'tracing spans'];
  // Traffic management (issue #19): discovery, balancing, split and mirror.
  added.push('targets by origin', 'weights', 'panic mode', 'split requests', 'split results by upstream', 'mirror results');
  for (const topic of added) t.ok(titles.includes(topic), `a panel about ${topic}`);
  for (const { panel, expr } of exprs) {
    // A panel shows 0 when nothing happened (no series yet, or no traffic for a ratio), not "No data".
    t.ok(expr.endsWith(' or vector(0)'), `${panel}: ${expr} falls back to 0`);
    for (const { name, matchers } of metricNames(expr)) {
      t.match(matchers, 'namespace=~"$namespace"', `${panel}: ${name} filtered by namespace`);
      t.match(matchers, 'instance=~"$instance"', `${panel}: ${name} filtered by instance`);
    }
  }
});

t.test('the metric extraction cannot be fooled', async (t) => {
  t.same(
    metricNames('histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x="1"}[$__rate_interval]))) / sum(b_total{y=~"z"})').map((m) => m.name),
    ['a_bucket', 'b_total'],
  );
  t.throws(() => metricNames('sum(rate(bare_metric[5m]))'), /unexpected "bare_metric"/);
  t.same(metricNames('(sum(a_total{x="1"}) or vector(0)) / clamp_min(sum(b_total{}), 1e-9) or vector(0)').map((m) => m.name), ['a_total', 'b_total']);
});

t.test('every metric the dashboard queries is exported by a running gateway, and promtool accepts the exposition', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const queried = new Map<string, { matchers: string[] }>();
  for (const { expr } of exprs) {
    for (const { name, matchers } of metricNames(expr)) {
      if (!queried.has(name)) queried.set(name, { matchers: [] });
      queried.get(name)!.matchers.push(matchers);
    }
  }

  // A port nothing listens on: connections to it are refused.
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise((r) => closed.close(r));
  const config: Record<string, any> = {
    upstreams: {
      up: { targets: [up.url] },
      // The refused target fails once and its breaker opens (a transition), then the upstream has no
      // target left (a rejection); its health probes fail meanwhile.
      dead: { targets: [deadUrl], breaker: { consecutiveFailures: 1 } },
      // Round robin over a refused target and a live one: one of two requests is retried. The refused
      // target fails its probes without leaving the rotation before the requests are through.
      half: { targets: [deadUrl, up.url], breaker: { enabled: false }, healthCheck: { enabled: true, intervalMs: 50, unhealthyThreshold: 100 } },
      // The other side of a split route, and the shadow of a mirroring one.
      canary: { targets: [up.url] },
    },
    routes: [
      { name: 'users', match: { prefix: '/api/users' }, upstream: 'up' },
      { name: 'dead', match: { prefix: '/api/dead' }, upstream: 'dead' },
      { name: 'half', match: { prefix: '/api/half' }, upstream: 'half' },
      { name: 'split', match: { prefix: '/api/split' }, upstream: 'up', split: { sides: [{ upstream: 'up', weight: 1 }, { upstream: 'canary', weight: 1 }] } },
      { name: 'mirrored', match: { prefix: '/api/mirrored' }, upstream: 'up', mirror: { upstream: 'canary' } },
    ],
  };
  /** Requests that make each feature's series exist: [path, expected status]. */
  const drive: [string, number][] = [
    ['/api/users/1', 200],
    ['/nowhere', 404],
    ['/api/dead/1', 502],
    ['/api/dead/2', 503],
    ['/api/half/1', 200],
    ['/api/half/2', 200],
    ['/api/split/1', 200],
    ['/api/split/2', 200],
    ['/api/mirrored/1', 200],
  ];
  let redis: TestRedis | null = null;
  // Each feature below is driven once its code is in this tree (the name of its metric in src/).
  if (definedInSrc('gateway_ratelimit_decisions_total')) {
    redis = await startRedis();
    config.store = { type: 'redis', redis: { url: redis.url, timeoutMs: 1000 } };
    config.routes.push({ name: 'limited', match: { prefix: '/api/limited' }, upstream: 'up', rateLimit: { limits: [{ rate: 1, per: '1m' }] } });
    drive.push(['/api/limited/1', 200], ['/api/limited/2', 429]);
  }
  if (definedInSrc('gateway_auth_requests_total')) {
    config.auth = { jwt: { algorithms: ['HS256'], secret: 'a-test-secret-of-at-least-thirty-two-bytes' } };
    config.routes.push({ name: 'private', match: { prefix: '/api/private' }, upstream: 'up', auth: { methods: ['jwt'] } });
    drive.push(['/api/private/1', 401]);
    // Client certificates as credentials: their result series exist once configured.
    if (definedInSrc('gateway_auth_client_cert_total')) config.auth.clientCert = {};
  }
  if (definedInSrc('gateway_auth_remote_calls_total')) {
    // The echo upstream stands in for the authorizer and the introspection endpoint: their series exist once configured.
    config.auth = { ...config.auth, external: { url: up.url }, introspection: { url: up.url, clientId: 'gw', clientSecret: 'secret' } };
    config.routes.push({ name: 'authorized', match: { prefix: '/api/authorized' }, upstream: 'up', auth: { methods: ['external', 'introspection'] } });
    drive.push(['/api/authorized/1', 401]);
  }
  if (definedInSrc('gateway_oidc_logins_total')) {
    // A provider that is down: the login series exist (at zero) from start-up, an API client gets 401.
    config.auth = {
      ...config.auth,
      oidc: { issuer: deadUrl, clientId: 'gw', redirectUri: 'http://127.0.0.1/oidc/callback', session: { keys: [Buffer.alloc(32, 1).toString('base64')] } },
    };
    config.routes.push({ name: 'login', match: { prefix: '/app' }, upstream: 'up', auth: { methods: ['oidc'] } });
    drive.push(['/app/1', 401]);
  }
  if (definedInSrc('gateway_cache_requests_total')) {
    config.routes.push({ name: 'cached', match: { prefix: '/api/cached' }, upstream: 'up', cache: { defaultTtl: 60 } });
    drive.push(['/api/cached/1', 200], ['/api/cached/1', 200]);
  }
  t.teardown(() => redis?.close());
  // Tracing on (sampling nothing: its counters exist from the start), and a WebSocket route.
  config.tracing = { enabled: true, sampleRatio: 0 };
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(data)));
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  config.upstreams.sockets = { targets: [`http://127.0.0.1:${(wss.address() as AddressInfo).port}`] };
  config.routes.push({ name: 'socket', match: { prefix: '/api/socket' }, upstream: 'sockets' });

  const cfg = parseConfig(withTestDefaults(config), { env: {} });
  const gateway = new Gateway(cfg, { processMetrics: true, logger: pino({ level: 'silent' }) });
  t.teardown(() => gateway.close());
  const { port, adminPort } = await gateway.listen();
  for (const [path, status] of drive) t.equal((await call(`http://127.0.0.1:${port}`, path)).status, status, `GET ${path}`);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/socket`);
  await new Promise((r, j) => ws.once('open', r).once('error', j));
  ws.send('ping');
  t.equal(String(await new Promise((r) => ws.once('message', r))), 'ping', 'a WebSocket message through the gateway');
  ws.close();
  await new Promise((r) => ws.once('close', r));
  // Garbage enough for a minor collection, so the GC histogram has observations.
  let keep = 0;
  for (let i = 0; i < 200000; i++) keep += [i, { i }].length;
  t.ok(keep > 0);
  await sleep(100);
  const exposition = (await call(`http://127.0.0.1:${adminPort}`, '/metrics')).body;

  const samples = new Map<string, string[]>();
  for (const line of exposition.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const name = line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)![0];
    if (!samples.has(name)) samples.set(name, []);
    samples.get(name)!.push(line);
  }

  for (const [name, { matchers }] of queried) {
    if (name in PENDING) {
      t.notOk(definedInSrc(name), `${name} is pending (${PENDING[name]}); once src/ defines it, drive it here and remove it from PENDING`);
      continue;
    }
    t.ok(definedInSrc(name) || isProcessMetric(name), `${name} is defined in src/ or by prom-client's defaults (else list it in PENDING with its source)`);
    const lines = samples.get(name) ?? [];
    t.ok(lines.length > 0, `${name} is exported`);
    // Filtering by route only works on series that carry it.
    if (lines.length && matchers.some((m) => m.includes('route=~'))) t.ok(lines.every((l) => l.includes('route="')), `${name} has a route label`);
    if (lines.length && lines.some((l) => l.includes('route="'))) t.ok(matchers.every((m) => m.includes('route=~"$route"')), `${name} queries follow $route`);
  }
  for (const name of Object.keys(PENDING)) t.ok(queried.has(name), `PENDING lists only dashboard metrics (${name})`);

  exposed = exposition;
});

const promtoolMissing = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).error !== undefined;

t.test('promtool is on PATH in CI (.ci/run installs Debian\'s prometheus package)', async (t) => {
  t.ok(!promtoolMissing || !process.env.CI, 'CI never skips the lint');
});

t.test('promtool check metrics accepts the exposition, and rejects a bad one', { skip: promtoolMissing && 'promtool not installed (apt-get install prometheus)' }, async (t) => {
  t.ok(exposed.includes('gateway_requests_total'), 'the exposition of the test above');
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: exposed, encoding: 'utf8', timeout: 30000 });
  t.equal(lint.status, 0, `promtool check metrics:\n${lint.stdout}${lint.stderr}`);
  t.equal((lint.stdout + lint.stderr).trim(), '', 'no lint findings');

  // The lint bites: a gauge named like a counter, as prom-client's nodejs_active_handles_total was.
  const bad = spawnSync('promtool', ['check', 'metrics'], {
    input: '# HELP x_total Something.\n# TYPE x_total gauge\nx_total 1\n',
    encoding: 'utf8',
    timeout: 30000,
  });
  t.not(bad.status, 0);
  t.match(bad.stdout + bad.stderr, /non-counter metrics should not have "_total" suffix/);
});

const prometheusMissing = spawnSync('prometheus', ['--version'], { encoding: 'utf8' }).error !== undefined;

t.test(
  'a real Prometheus scrapes /metrics as OpenMetrics and keeps the trace ids of the latency exemplars',
  { skip: prometheusMissing && 'prometheus not installed (apt-get install prometheus)' },
  async (t) => {
    const up = await startUpstream();
    t.teardown(() => up.close());
    const cfg = parseConfig(
      withTestDefaults({
        upstreams: { up: { targets: [up.url] } },
        routes: [{ name: 'users', match: { prefix: '/api/users' }, upstream: 'up' }],
        tracing: { enabled: true, sampleRatio: 0, endpoint: 'http://127.0.0.1:1/v1/traces', export: { timeoutMs: 100 } },
      }),
      { env: {} },
    );
    const gateway = new Gateway(cfg, { processMetrics: true, logger: pino({ level: 'silent' }) });
    t.teardown(() => gateway.close());
    const { port, adminPort } = await gateway.listen();
    const traceId = 'aaaabbbbccccddddeeeeffff00001111';
    const res = await call(`http://127.0.0.1:${port}`, '/api/users/1', { headers: { traceparent: `00-${traceId}-1111222233334444-01` } });
    t.equal(res.status, 200, 'a sampled request');

    const webPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const dir = mkdtempSync(join(tmpdir(), 'gw-prometheus-'));
    writeFileSync(join(dir, 'prometheus.yml'), `global: { scrape_interval: 1s }\nscrape_configs:\n  - job_name: gateway\n    static_configs: [{ targets: ["127.0.0.1:${adminPort}"] }]\n`);
    const prom = spawn(
      'prometheus',
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${webPort}`, '--enable-feature=exemplar-storage'],
      { stdio: 'ignore' },
    );
    t.teardown(async () => {
      const exited = new Promise((r) => prom.once('exit', r));
      prom.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    });
    const api = async (path: string): Promise<any> => {
      try {
        return JSON.parse((await call(`http://127.0.0.1:${webPort}`, path)).body);
      } catch {
        return null;
      }
    };
    let exemplars: { labels: { trace_id: string }; value: string }[] = [];
    let requests: unknown[] = [];
    for (let i = 0; i < 120 && (exemplars.length === 0 || requests.length === 0); i++) {
      await sleep(250);
      const now = Date.now() / 1000;
      const ex = await api(`/api/v1/query_exemplars?query=gateway_request_duration_seconds_bucket&start=${now - 300}&end=${now + 60}`);
      exemplars = (ex?.data ?? []).flatMap((s: { exemplars: unknown[] }) => s.exemplars);
      requests = (await api('/api/v1/query?query=gateway_requests_total'))?.data?.result ?? [];
    }
    t.same(
      exemplars.map((e) => e.labels.trace_id),
      [traceId],
      'Prometheus stored the exemplar of the sampled request',
    );
    t.equal(requests.length, 1, 'and the counters under their usual names');
  },
);
