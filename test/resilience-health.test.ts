import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { parseConfig } from '../src/config/load';
import { startGateway, withTestDefaults, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

const ADMIN_TOKEN = 'admin-token-for-resilience-tests';

interface TargetView {
  url: string;
  routable: boolean;
  healthy: boolean;
  breaker: string;
  healthCheck: { path: string; last: { ok: boolean; detail: string } | null } | null;
}

async function targets(gw: TestGateway, upstream?: string): Promise<TargetView[]> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const all = res.json<{ upstreams: { name: string; targets: TargetView[] }[] }>().upstreams;
  return (upstream === undefined ? all[0] : all.find((u) => u.name === upstream)!).targets;
}

/** Polls until `cond` holds; fails the test (instead of hanging it) after `ms`. */
async function waitFor(t: { fail(msg: string): void }, what: string, cond: () => Promise<boolean>, ms = 8000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await sleep(25);
  }
  t.fail(`timed out waiting for ${what}`);
}

// A generous probe timeout: on a loaded machine a healthy probe can take a few hundred ms.
const HEALTH = { enabled: true, intervalMs: 100, timeoutMs: 1000, healthyThreshold: 2, unhealthyThreshold: 2 };

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  upstream: Record<string, unknown>,
  count = 2,
  basePath = '',
): Promise<{ gw: TestGateway; ups: FlakyUpstream[] }> {
  const ups: FlakyUpstream[] = [];
  for (let i = 0; i < count; i++) ups.push(await startFlakyUpstream({ healthPath: `${basePath}/health` }));
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'warn' },
    upstreams: {
      up: {
        targets: ups.map((u) => u.url + basePath),
        retries: { maxRetries: 0 },
        ...upstream,
        healthCheck: { ...HEALTH, ...(upstream.healthCheck as object) },
      },
    },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    for (const u of ups) await u.close();
  });
  return { gw, ups };
}

t.test('a failing health check takes a target out of the rotation; passing ones bring it back', async (t) => {
  const { gw, ups } = await setup(t, {}, 2, '/svc');
  const [a, b] = ups;
  await waitFor(t, 'first probes', async () => a.probes > 0 && b.probes > 0);
  t.same((await targets(gw)).map((v) => v.healthCheck?.path), ['/health', '/health']);
  t.match((await targets(gw))[0].healthCheck?.last, { ok: true, detail: 'status 200' }, 'probed under the target base path');

  a.healthStatus = 500;
  await waitFor(t, 'a unhealthy', async () => !(await targets(gw))[0].healthy);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { target: a.url + '/svc' }), 0);
  t.ok(gw.logs.some((l) => l.msg === 'upstream target unhealthy: out of the rotation' && l.detail === 'status 500'));
  const aHits = a.hits;
  for (let i = 0; i < 10; i++) t.equal((await call(gw.url, `/x${i}`)).status, 200);
  t.equal(a.hits, aHits, 'no traffic for the unhealthy target');
  t.ok(b.seen.at(-1)!.url === '/svc/x9');

  a.healthStatus = 200;
  await waitFor(t, 'a healthy again', async () => (await targets(gw))[0].healthy);
  for (let i = 0; i < 10; i++) t.equal((await call(gw.url, '/y')).status, 200);
  t.equal(a.hits, aHits + 5, 'back in the rotation');
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { target: a.url + '/svc' }), 1);
  t.ok((await metricValue(gw.adminUrl, 'gateway_upstream_health_checks_total', { target: a.url + '/svc', result: 'failure' })) >= 2);
});

t.test('every target unhealthy: 503 with Retry-After at once, without calling them', async (t) => {
  const { gw, ups } = await setup(t, {});
  for (const u of ups) u.healthStatus = 503;
  await waitFor(t, 'both unhealthy', async () => (await targets(gw)).every((v) => !v.healthy));
  for (const u of ups) u.behave({ kind: 'hang' });
  const res = await call(gw.url, '/x');
  t.equal(res.status, 503);
  t.equal(res.json().code, 'UPSTREAM_UNAVAILABLE');
  t.equal(res.headers['retry-after'], '1', 'the probe interval, in whole seconds');
  t.equal(ups[0].hits + ups[1].hits, 0);
});

t.test('a stopped target is ejected and always comes back once it answers again', async (t) => {
  const { gw, ups } = await setup(t, {}, 1);
  const [a] = ups;
  await waitFor(t, 'first probe', async () => a.probes > 0);
  await a.stop();
  await waitFor(t, 'a unhealthy', async () => !(await targets(gw))[0].healthy);
  t.match((await targets(gw))[0].healthCheck?.last?.detail, /ECONNREFUSED/);
  // Out for a good many probe intervals: it must still come back.
  await sleep(800);
  t.equal((await call(gw.url, '/x')).json().code, 'UPSTREAM_UNAVAILABLE');
  await a.start();
  await waitFor(t, 'a healthy again', async () => (await targets(gw))[0].healthy);
  t.equal((await call(gw.url, '/x')).status, 200);
});

t.test('a probe that hangs past timeoutMs fails; expected statuses are configurable', async (t) => {
  const { gw, ups } = await setup(t, { healthCheck: { expectedStatuses: ['2xx', 301] } }, 2);
  const [a, b] = ups;
  a.healthStatus = 0;
  b.healthStatus = 301;
  await waitFor(t, 'a unhealthy', async () => !(await targets(gw))[0].healthy);
  t.match((await targets(gw))[0].healthCheck?.last?.detail, /no answer within 1000 ms/);
  t.ok((await targets(gw))[1].healthy, '301 counts as healthy when listed');
  a.healthStatus = 204;
  await waitFor(t, 'a healthy again', async () => (await targets(gw))[0].healthy);
});

t.test('a recovery seen by the health checks lets traffic probe an open breaker at once', async (t) => {
  const { gw, ups } = await setup(t, { breaker: { consecutiveFailures: 2, openMs: 60000, maxOpenMs: 60000 } }, 1);
  const [a] = ups;
  a.behave({ kind: 'status', status: 503 });
  await call(gw.url, '/x');
  await call(gw.url, '/x');
  t.equal((await targets(gw))[0].breaker, 'open', 'open for a minute');
  a.healthStatus = 500;
  await waitFor(t, 'a unhealthy', async () => !(await targets(gw))[0].healthy);
  a.behave({ kind: 'ok' });
  a.healthStatus = 200;
  await waitFor(t, 'a healthy', async () => (await targets(gw))[0].healthy);
  const res = await call(gw.url, '/x');
  t.equal(res.status, 200, 'the next request probes the breaker instead of waiting out the minute');
  t.equal((await targets(gw))[0].breaker, 'closed');
});

t.test('probes stop when the gateway closes', async (t) => {
  const a = await startFlakyUpstream();
  t.teardown(() => a.close());
  const gw = await startGateway({
    upstreams: { up: { targets: [a.url], healthCheck: HEALTH } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  await waitFor(t, 'probes', async () => a.probes >= 2);
  await gw.close();
  const after = a.probes;
  await sleep(350);
  t.equal(a.probes, after, 'no probe after close');
});

t.test('reloads: unchanged upstreams keep their breaker and probes, new ones are probed, removed ones stop', async (t) => {
  const a = await startFlakyUpstream();
  const b = await startFlakyUpstream();
  const keep = { targets: [a.url], healthCheck: HEALTH, breaker: { consecutiveFailures: 1, openMs: 60000 } };
  const config = (upstreams: Record<string, { targets: string[] } & Record<string, unknown>>) =>
    parseConfig(
      withTestDefaults({
        admin: { token: ADMIN_TOKEN },
        log: { level: 'warn' },
        upstreams,
        routes: Object.keys(upstreams).map((n) => ({ name: n, match: { prefix: `/${n}` }, upstream: n })),
      }),
      { env: {} },
    );
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'warn' },
    upstreams: { keep },
    routes: [{ name: 'keep', match: { prefix: '/keep' }, upstream: 'keep' }],
  });
  t.teardown(async () => {
    await gw.close();
    await a.close();
    await b.close();
  });
  a.behave({ kind: 'status', status: 503 });
  t.equal((await call(gw.url, '/keep/x')).status, 503);
  t.equal((await targets(gw, 'keep'))[0].breaker, 'open');

  await gw.gateway.reload(config({ keep, added: { targets: [b.url], healthCheck: HEALTH } }));
  t.equal((await targets(gw, 'keep'))[0].breaker, 'open', 'the unchanged upstream kept its breaker state');
  const before = b.probes;
  await waitFor(t, 'probes of the added upstream', async () => b.probes >= before + 2);

  await gw.gateway.reload(config({ keep }));
  await sleep(150);
  const after = b.probes;
  await sleep(350);
  t.equal(b.probes, after, 'the removed upstream is no longer probed');
  const kept = a.probes;
  await waitFor(t, 'probes of the kept upstream', async () => a.probes > kept);
});
