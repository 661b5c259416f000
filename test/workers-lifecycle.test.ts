import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { supportsReusePort } from '../src/workers/pool';
import { startCli } from './helpers/cli';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { freePort } from './helpers/redis';
import { startUpstream, type TestUpstream } from './helpers/upstream';
import { killWorker, route, startPool } from './helpers/workers';

// Skipped with the reason on a Node without SO_REUSEPORT listeners; .ci/run runs this file on Node 22 and 24.
// Each test starts worker threads that load the gateway: slow on a loaded CI machine.
t.setTimeout(300_000);
const skip = supportsReusePort() ? false : `workers need SO_REUSEPORT listeners (Node 22.12 or later); ${process.version} has none`;

let up: TestUpstream;
t.before(async () => {
  up = await startUpstream();
});
t.teardown(() => up?.close());

t.test('a worker that dies is replaced and counted; readiness follows', { skip }, async (t) => {
  const g = await startPool({ upstreams: { u: { targets: [up.url] } }, routes: [route('r', '/r')] });
  t.teardown(() => g.pool.close());
  await killWorker(g.pool, 0);
  // Event-driven: poll the admin listener until the replacement listens (bounded by the test timeout).
  let restarts = 0;
  while ((restarts = await metricValue(g.adminUrl, 'gateway_worker_restarts_total')) < 1 || (await metricValue(g.adminUrl, 'gateway_workers', { state: 'listening' })) < 2) {
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(restarts, 1, 'counted once');
  t.equal((await call(g.adminUrl, '/readyz')).status, 200, 'ready again with every worker listening');
  const statuses = await Promise.all(Array.from({ length: 40 }, () => call(g.url, '/r/a').then((a) => a.status)));
  t.same([...new Set(statuses)], [200], 'both workers serve');
  t.ok(g.logs.some((l) => l.msg === 'worker thread exited; starting a replacement'), 'the crash is logged');
});

t.test('drain: readiness fails at once, in-flight requests finish, every worker exits', { skip }, async (t) => {
  const slow = await startUpstream(async (_req, res) => {
    await new Promise((r) => setTimeout(r, 300));
    res.end('slow done');
  });
  t.teardown(() => slow.close());
  const g = await startPool({ upstreams: { u: { targets: [slow.url] } }, routes: [route('r', '/r')], shutdown: { drainDelayMs: 200 } });
  const inFlight = Promise.all(Array.from({ length: 10 }, () => call(g.url, '/r/a')));
  await new Promise((r) => setTimeout(r, 100));
  const done = g.pool.shutdown();
  t.equal((await call(g.adminUrl, '/readyz')).status, 503, 'not ready while draining');
  const answers = await inFlight;
  t.same(
    answers.map((a) => a.body),
    Array(10).fill('slow done'),
    'requests in flight when the drain began were answered',
  );
  await done;
  t.equal(g.pool.running, 0, 'every worker exited');
  await t.rejects(call(g.url, '/r/a', { timeoutMs: 2000 }), 'the public port is closed');
});

t.test('the CLI with workers: 2 (on a Node without SO_REUSEPORT: says so and serves with one)', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'gateway.json');
  const [port, adminPort] = [await freePort(), await freePort()];
  writeFileSync(
    file,
    JSON.stringify({ workers: 2, listen: { host: '127.0.0.1', port }, admin: { port: adminPort }, shutdown: { drainDelayMs: 0 }, upstreams: { u: { targets: [up.url] } }, routes: [route('r', '/r')] }),
  );
  const cli = startCli(file);
  t.teardown(() => cli.child.kill('SIGKILL'));
  t.ok(await cli.waitFor('gateway listening', 120000), cli.output());
  if (skip) t.match(cli.output(), /needs SO_REUSEPORT listeners \(Node 22\.12 or later\); this Node has none, so one worker serves/, 'the start-up says why one worker serves');
  else t.match(cli.output(), /"workers":2,"msg":"gateway listening"/);
  const statuses = await Promise.all(Array.from({ length: 20 }, () => call(`http://127.0.0.1:${port}`, '/r/a').then((a) => a.status)));
  t.same([...new Set(statuses)], [200]);
  t.equal(await metricValue(`http://127.0.0.1:${adminPort}`, 'gateway_requests_total', { route: 'r' }), 20, 'the admin listener counts every request');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exited, 0, 'SIGTERM drains every worker and the process exits 0');
});
