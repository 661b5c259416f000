import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

const TOKEN = 'admin-token-0123456789';

interface TargetView {
  url: string;
  routable: boolean;
  healthy: boolean;
  breaker: string;
  breakerOpenForMs: number;
  breakerTrips: number;
  inFlight: number;
  queued: number;
}

async function targets(gw: TestGateway): Promise<TargetView[]> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${TOKEN}` } });
  return res.json<{ upstreams: { targets: TargetView[] }[] }>().upstreams[0].targets;
}

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  breaker: Record<string, unknown>,
  count = 1,
): Promise<{ gw: TestGateway; ups: FlakyUpstream[] }> {
  const ups: FlakyUpstream[] = [];
  for (let i = 0; i < count; i++) ups.push(await startFlakyUpstream());
  const gw = await startGateway({
    admin: { token: TOKEN },
    log: { level: 'warn' },
    upstreams: {
      up: {
        targets: ups.map((u) => u.url),
        breaker: { consecutiveFailures: 3, failureRatio: 0, openMs: 400, maxOpenMs: 3000, ...breaker },
        retries: { maxRetries: 0 },
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

t.test('consecutive failures open the breaker; it answers 503 with Retry-After without calling the upstream, probes half-open, closes on recovery', async (t) => {
  const { gw, ups } = await setup(t, { openMs: 2000 });
  const [up] = ups;
  up.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 3; i++) {
    const res = await call(gw.url, '/x');
    t.equal(res.status, 503);
    t.equal(res.body, 'status 503', "the upstream's own answer while the breaker is closed");
  }
  t.equal(up.hits, 3);
  t.equal((await targets(gw))[0].breaker, 'open');

  // Were the upstream called now, these requests would hang and end in 504.
  up.behave({ kind: 'hang' });
  for (let i = 0; i < 5; i++) {
    const res = await call(gw.url, '/x');
    t.equal(res.status, 503);
    t.equal(res.json().code, 'UPSTREAM_UNAVAILABLE');
    t.match(res.headers['retry-after'], /^[12]$/, 'Retry-After: the rest of the 2 s open time, rounded up');
    t.ok(res.headers['x-request-id']);
  }
  t.equal(up.hits, 3, 'no request reached the upstream while the breaker was open');
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_state', { upstream: 'up' }), 2);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_rejected_total', { upstream: 'up', reason: 'unavailable' }), 5);

  await sleep((await targets(gw))[0].breakerOpenForMs + 50);
  up.behave({ kind: 'delay', ms: 1000 });
  const probe = call(gw.url, '/probe');
  for (let i = 0; i < 100 && up.hits < 4; i++) await sleep(20);
  const during = await call(gw.url, '/x');
  t.equal(during.status, 503, 'one probe at a time while half-open');
  t.equal((await targets(gw))[0].breaker, 'half-open');
  t.equal((await probe).status, 200, 'the probe went through');
  t.equal(up.hits, 4);
  t.equal((await targets(gw))[0].breaker, 'closed', 'a successful probe closes the breaker');

  up.behave({ kind: 'ok' });
  for (let i = 0; i < 5; i++) t.equal((await call(gw.url, '/x')).status, 200);
  t.equal(up.hits, 9);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_transitions_total', { upstream: 'up', to: 'open' }), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_transitions_total', { upstream: 'up', to: 'half-open' }), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_transitions_total', { upstream: 'up', to: 'closed' }), 1);
  t.ok(gw.logs.some((l) => l.msg === 'circuit breaker opened' && l.upstream === 'up' && l.openMs === 2000));
});

t.test('a failed probe opens the breaker again for longer, up to maxOpenMs', async (t) => {
  const { gw, ups } = await setup(t, { consecutiveFailures: 1, openMs: 300, maxOpenMs: 1000 });
  const [up] = ups;
  const openTimes = () => gw.logs.filter((l) => l.msg === 'circuit breaker opened').map((l) => l.openMs);
  const waitHalfOpen = async () => sleep((await targets(gw))[0].breakerOpenForMs + 30);
  up.behave({ kind: 'status', status: 502 });
  t.equal((await call(gw.url, '/x')).status, 502);
  let [view] = await targets(gw);
  t.equal(view.breakerTrips, 1);
  t.ok(view.breakerOpenForMs > 0 && view.breakerOpenForMs <= 300, `first trip: ${view.breakerOpenForMs} ms left`);

  await waitHalfOpen();
  t.equal((await call(gw.url, '/x')).status, 502, 'the probe fails');
  [view] = await targets(gw);
  t.equal(view.breaker, 'open');
  t.equal(view.breakerTrips, 2);

  await waitHalfOpen();
  t.equal((await call(gw.url, '/x')).status, 502);
  t.equal((await targets(gw))[0].breakerTrips, 3);
  t.same(openTimes(), [300, 600, 1000], 'open time doubles with each trip, capped at maxOpenMs');
  t.equal(up.hits, 3);

  up.behave({ kind: 'ok' });
  await waitHalfOpen();
  t.equal((await call(gw.url, '/x')).status, 200, 'recovers after the capped open time');
  t.equal((await targets(gw))[0].breaker, 'closed');
});

t.test('failure ratio over the rolling window opens the breaker; a lower ratio does not', async (t) => {
  const { gw, ups } = await setup(t, { consecutiveFailures: 0, failureRatio: 0.5, minRequests: 10, windowMs: 10000 });
  const [up] = ups;
  // One failure in four: under the ratio, whatever the count.
  for (let i = 0; i < 10; i++) {
    up.burst(1, { kind: 'status', status: 504 });
    up.burst(3, { kind: 'ok' });
  }
  const statuses = new Set<number>();
  for (let i = 0; i < 40; i++) statuses.add((await call(gw.url, '/x')).status);
  t.same([...statuses].sort(), [200, 504], "only the upstream's answers");
  t.equal((await targets(gw))[0].breaker, 'closed', '25% failures keep it closed');

  // The window still holds 40 requests with 10 failures: alternate until failures reach half.
  up.behave({ kind: 'status', status: 503 });
  let opened = -1;
  for (let i = 0; i < 40 && opened < 0; i++) {
    await call(gw.url, '/x');
    if ((await targets(gw))[0].breaker === 'open') opened = i + 1;
  }
  t.equal(opened, 20, 'opens once failures are half of the window (20 of 40 + 20)');
  const hits = up.hits;
  t.equal((await call(gw.url, '/x')).json().code, 'UPSTREAM_UNAVAILABLE');
  t.equal(up.hits, hits);
});

t.test('what counts as a failure is configurable', async (t) => {
  const ignoring500 = await setup(t, { consecutiveFailures: 2 });
  ignoring500.ups[0].behave({ kind: 'status', status: 500 });
  for (let i = 0; i < 6; i++) t.equal((await call(ignoring500.gw.url, '/x')).status, 500);
  t.equal((await targets(ignoring500.gw))[0].breaker, 'closed', 'a plain 500 is not a gateway error: not counted by default');

  const counting5xx = await setup(t, { consecutiveFailures: 2, failureOn: ['5xx'] });
  counting5xx.ups[0].behave({ kind: 'status', status: 500 });
  for (let i = 0; i < 2; i++) t.equal((await call(counting5xx.gw.url, '/x')).status, 500);
  t.equal((await targets(counting5xx.gw))[0].breaker, 'open', "with failureOn: ['5xx'] it is");

  const connectOnly = await setup(t, { consecutiveFailures: 2, failureOn: ['connect'] });
  connectOnly.ups[0].behave({ kind: 'reset' });
  for (let i = 0; i < 4; i++) t.equal((await call(connectOnly.gw.url, '/x')).status, 502);
  t.equal((await targets(connectOnly.gw))[0].breaker, 'closed', 'resets do not count when only connect failures do');
  await connectOnly.ups[0].stop();
  for (let i = 0; i < 2; i++) t.equal((await call(connectOnly.gw.url, '/x')).json().code, 'UPSTREAM_CONNECT_FAILED');
  t.equal((await targets(connectOnly.gw))[0].breaker, 'open', 'refused connections do');
});

t.test('a stopped upstream trips the breaker; restarted on the same port it is probed back in', async (t) => {
  const { gw, ups } = await setup(t, { openMs: 300 });
  const [up] = ups;
  t.equal((await call(gw.url, '/x')).status, 200);
  await up.stop();
  for (let i = 0; i < 3; i++) t.equal((await call(gw.url, '/x')).json().code, 'UPSTREAM_CONNECT_FAILED');
  t.equal((await call(gw.url, '/x')).json().code, 'UPSTREAM_UNAVAILABLE');
  await up.start();
  await sleep(350);
  t.equal((await call(gw.url, '/x')).status, 200);
  t.equal((await targets(gw))[0].breaker, 'closed');
});

t.test('an open target leaves the rotation; when every target is open the answer is 503 at once', async (t) => {
  const { gw, ups } = await setup(t, { openMs: 2500, maxOpenMs: 5000 }, 2);
  const [a, b] = ups;
  a.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 6; i++) await call(gw.url, '/x');
  t.equal(a.hits, 3, 'a took its share until its breaker opened');
  t.same((await targets(gw)).map((v) => v.breaker), ['open', 'closed']);
  const bBefore = b.hits;
  for (let i = 0; i < 10; i++) t.equal((await call(gw.url, '/x')).status, 200);
  t.equal(a.hits, 3, 'nothing more for the open target');
  t.equal(b.hits, bBefore + 10, 'everything to the closed one');

  b.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 3; i++) await call(gw.url, '/x');
  t.same((await targets(gw)).map((v) => v.breaker), ['open', 'open']);
  const hits = a.hits + b.hits;
  const res = await call(gw.url, '/x');
  t.equal(res.status, 503);
  t.equal(res.json().code, 'UPSTREAM_UNAVAILABLE');
  t.equal(res.headers['content-type'], 'application/problem+json');
  t.ok(Number(res.headers['retry-after']) >= 1 && Number(res.headers['retry-after']) <= 3, `Retry-After ${res.headers['retry-after']}`);
  t.equal(a.hits + b.hits, hits);
});

t.test('/admin/upstreams requires the admin token when one is set', async (t) => {
  const { gw } = await setup(t, {});
  const anon = await call(gw.adminUrl, '/admin/upstreams');
  t.equal(anon.status, 401);
  t.equal(anon.json().code, 'UNAUTHENTICATED');
  t.equal((await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401);
  const ok = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(ok.status, 200);
  t.match(ok.json(), { upstreams: [{ name: 'up', available: 1, targets: [{ breaker: 'closed', healthy: true, inFlight: 0, queued: 0 }] }] });
});
