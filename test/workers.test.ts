import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { supportsReusePort } from '../src/workers/pool';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream, type TestUpstream } from './helpers/upstream';
import { auth, poolConfig, route, servedBy, startPool } from './helpers/workers';

// Skipped with the reason on a Node without SO_REUSEPORT listeners; .ci/run runs this file on Node 22 and 24.
// Each test starts worker threads that load the gateway: slow on a loaded CI machine.
t.setTimeout(300_000);
const skip = supportsReusePort() ? false : `workers need SO_REUSEPORT listeners (Node 22.12 or later); ${process.version} has none`;

let up: TestUpstream;
t.before(async () => {
  up = await startUpstream();
});
t.teardown(() => up?.close());

t.test('2 workers, 1000 concurrent requests, a limit of 100: exactly 100 admitted, and /metrics sums both workers', { skip }, async (t) => {
  const g = await startPool({
    upstreams: { u: { targets: [up.url] } },
    routes: [route('limited', '/limited', { rateLimit: { limits: [{ rate: 100, per: '1h', by: 'route' }] } })],
  });
  t.teardown(() => g.pool.close());
  const answers = await Promise.all(Array.from({ length: 1000 }, () => call(g.url, '/limited/x', { timeoutMs: 60000 })));
  const admitted = answers.filter((a) => a.status === 200).length;
  t.equal(admitted, 100, 'exactly the limit, not 100 per worker');
  t.equal(answers.filter((a) => a.status === 429).length, 900, 'every other request refused with 429');
  const served = await servedBy(g.pool);
  t.equal(served.length, 2);
  t.ok(served.every((n) => n > 0), `both workers served requests (${served.join(' + ')})`);
  t.equal(
    await metricValue(g.adminUrl, 'gateway_requests_total', { route: 'limited' }),
    1000,
    'the admin listener reports the whole process: counters of both workers summed',
  );
  t.equal(await metricValue(g.adminUrl, 'gateway_request_duration_seconds_count', { route: 'limited' }), 1000, 'histograms merged');
  t.equal(await metricValue(g.adminUrl, 'gateway_build_info'), 1, 'one build series, not one per worker');
  const ready = await call(g.adminUrl, '/readyz');
  t.equal(ready.status, 200);
  t.equal(ready.json<{ checks: Record<string, unknown> }>().checks.workers, true, 'ready: every worker listens');
});

t.test('a reload reaches every worker', { skip }, async (t) => {
  const file = join(t.testdir(), 'gateway.json');
  const base = { upstreams: { u: { targets: [up.url] } }, routes: [route('old', '/old')] };
  writeFileSync(file, JSON.stringify(poolConfig(base)));
  const g = await startPool(base, file);
  t.teardown(() => g.pool.close());
  t.equal((await call(g.url, '/new/a')).status, 404);
  writeFileSync(
    file,
    JSON.stringify(poolConfig({ ...base, routes: [route('old', '/old'), route('new', '/new')] })),
  );
  const res = await call(g.adminUrl, '/admin/reload', { method: 'POST', headers: auth });
  t.equal(res.status, 200, res.body);
  t.same(res.json<{ routes: { added: string[] } }>().routes.added, ['new']);
  // Fresh connections land on either worker: 60 in a row all see the new route only if both swapped.
  const statuses = await Promise.all(Array.from({ length: 60 }, () => call(g.url, '/new/a').then((a) => a.status)));
  t.same([...new Set(statuses)], [200], 'every worker serves the new configuration');
  const served = await servedBy(g.pool);
  t.ok(served.every((n) => n > 0), `both workers answered (${served.join(' + ')})`);
  t.equal(await metricValue(g.adminUrl, 'gateway_config_reloads_total', { result: 'applied' }), 1, 'one reload of the process, not one per worker');
});

