import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call, type Answer } from './helpers/http';
import { metricValue } from './helpers/metrics';

const ADMIN_TOKEN = 'admin-token-for-resilience-tests';

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  upstream: Record<string, unknown>,
): Promise<{ gw: TestGateway; up: FlakyUpstream }> {
  const up = await startFlakyUpstream();
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'warn' },
    upstreams: { up: { targets: [up.url], retries: { maxRetries: 0 }, ...upstream } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await up.close();
    await gw.close();
  });
  return { gw, up };
}

async function state(gw: TestGateway): Promise<{ inFlight: number; queued: number }> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return res.json<{ upstreams: { targets: { inFlight: number; queued: number }[] }[] }>().upstreams[0].targets[0];
}

async function until(cond: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(20);
  }
  return false;
}

t.test('a saturated pool answers 503 within queueTimeoutMs, without reaching the upstream', async (t) => {
  const { gw, up } = await setup(t, { pool: { connections: 2 }, queue: { timeoutMs: 300 }, timeouts: { requestMs: 2500 } });
  up.behave({ kind: 'hang' });
  const busy = [call(gw.url, '/1'), call(gw.url, '/2')];
  t.ok(await until(async () => up.hits === 2), 'both connections busy');
  const started = performance.now();
  const res = await call(gw.url, '/3');
  const elapsed = performance.now() - started;
  t.equal(res.status, 503);
  t.equal(res.json().code, 'UPSTREAM_QUEUE_FULL');
  t.ok(elapsed >= 280 && elapsed < 2400, `waited queueTimeoutMs, then gave up, well before the deadline (${elapsed.toFixed(0)} ms)`);
  t.equal(up.hits, 2, 'the queued request never reached the upstream');
  t.same(
    (await Promise.all(busy)).map((r) => r.status),
    [504, 504],
    'the hung requests end at their deadline',
  );
  t.ok(await until(async () => (await state(gw)).inFlight === 0), 'nothing left in flight');
  t.match(await state(gw), { inFlight: 0, queued: 0 });
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_rejected_total', { reason: 'queue-timeout' }), 1);
});

t.test('a queued request goes on as soon as a connection frees up', async (t) => {
  const { gw, up } = await setup(t, { pool: { connections: 1 }, queue: { timeoutMs: 3000 } });
  up.behave({ kind: 'delay', ms: 150 });
  const answers = await Promise.all([1, 2, 3, 4].map((i) => call(gw.url, `/${i}`)));
  t.same(
    answers.map((r) => r.status),
    [200, 200, 200, 200],
  );
  t.equal(up.hits, 4);
  t.match(await state(gw), { inFlight: 0, queued: 0 });
});

t.test('beyond maxQueued the answer is 503 at once, and memory stays bounded under a flood', async (t) => {
  const { gw, up } = await setup(t, { pool: { connections: 2 }, queue: { timeoutMs: 4000, maxQueued: 5 }, timeouts: { requestMs: 6000 } });
  up.behave({ kind: 'hang' });
  const order: string[] = [];
  const tracked = (name: string, p: Promise<Answer>) =>
    p.then((r) => {
      order.push(name);
      return r;
    });
  const first = [0, 1, 2, 3, 4, 5, 6].map((i) => tracked(`first${i}`, call(gw.url, `/a${i}`)));
  t.ok(await until(async () => (await state(gw)).queued === 5), 'two in flight, five waiting');
  const flood = await Promise.all(Array.from({ length: 100 }, (_, i) => call(gw.url, `/flood${i}`)));
  t.ok(
    flood.every((r) => r.status === 503 && r.json().code === 'UPSTREAM_QUEUE_FULL' && r.headers['retry-after'] === '1'),
    '100 more: all 503 queue full, with Retry-After',
  );
  t.equal(order.length, 0, 'answered while the queued requests still wait: at once, not after queueTimeoutMs');
  t.match(await state(gw), { inFlight: 7, queued: 5 }, 'nothing beyond the bound was taken in');
  t.equal(up.hits, 2);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_queued_requests', { upstream: 'up' }), 5);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_connections', { upstream: 'up', state: 'in_use' }), 2);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_rejected_total', { reason: 'queue-full' }), 100);

  const firsts = await Promise.all(first);
  t.same(firsts.map((r) => r.status).sort(), [503, 503, 503, 503, 503, 504, 504]);
  t.ok(await until(async () => (await state(gw)).inFlight === 0), 'the bookkeeping drains back to zero');
  t.match(await state(gw), { inFlight: 0, queued: 0 });
});

t.test('a queued request whose client leaves frees its place', async (t) => {
  const { gw, up } = await setup(t, { pool: { connections: 1 }, queue: { timeoutMs: 5000, maxQueued: 1 }, timeouts: { requestMs: 3000 } });
  up.behave({ kind: 'hang' });
  const hung = call(gw.url, '/hang');
  t.ok(await until(async () => up.hits === 1));
  await t.rejects(call(gw.url, '/leaves', { timeoutMs: 200 }), /client timeout/);
  const res = await call(gw.url, '/full');
  t.equal(res.json().code, 'UPSTREAM_QUEUE_FULL', 'the departed request stays counted until undici lets go of it: the bound holds');
  t.equal((await hung).status, 504);
  t.ok(await until(async () => (await state(gw)).queued === 0 && (await state(gw)).inFlight === 0));
  up.behave({ kind: 'ok' });
  t.equal((await call(gw.url, '/after')).status, 200);
});
