import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { HashRing, cookieValue } from '../src/proxy/balance';
import { hash32 } from '../src/hash';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, withTestDefaults, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

const ADMIN_TOKEN = 'admin-token-of-the-balancing-tests-01';

interface UpstreamView {
  name: string;
  available: number;
  targetsByOrigin: { static: number; dns: number };
  balance: string;
  slowStartMs: number;
  panic: boolean;
  minHealthyPercent: number;
  targets: { url: string; weight: number; effectiveWeight: number; slowStartLeftMs: number; source: string; routable: boolean; healthy: boolean; breaker: string }[];
}

async function upstreamView(gw: TestGateway): Promise<UpstreamView> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return res.json<{ upstreams: UpstreamView[] }>().upstreams[0];
}

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  count: number,
  upstream: (ups: FlakyUpstream[]) => Record<string, unknown>,
): Promise<{ gw: TestGateway; ups: FlakyUpstream[] }> {
  const ups: FlakyUpstream[] = [];
  for (let i = 0; i < count; i++) ups.push(await startFlakyUpstream());
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'info', access: false },
    upstreams: { up: { retries: { maxRetries: 0 }, ...upstream(ups) } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    for (const u of ups) await u.close();
  });
  return { gw, ups };
}

/** Polls until `cond` holds; fails the test (instead of hanging it) after `ms`. */
async function waitFor(t: { fail(msg: string): void }, what: string, cond: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await sleep(20);
  }
  t.fail(`timed out waiting for ${what}`);
}

async function sequential(gw: TestGateway, n: number, headers: Record<string, string> = {}): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await call(gw.url, `/r${i}`, { headers })).status);
  return statuses;
}

t.test('weighted round-robin: 3:1 weights give 3:1 traffic, interleaved smoothly', async (t) => {
  const { gw, ups } = await setup(t, 2, (ups) => ({ targets: [{ url: ups[0].url, weight: 3 }, ups[1].url] }));
  const [a, b] = ups;
  await sequential(gw, 8);
  // Smooth: never more than three in a row for the heavy target, and the light one every fourth.
  const order = [...a.seen.map((s) => ({ u: s.url, who: 'a' })), ...b.seen.map((s) => ({ u: s.url, who: 'b' }))]
    .sort((x, y) => Number(x.u.slice(2)) - Number(y.u.slice(2)))
    .map((x) => x.who)
    .join('');
  t.match(order, /^(aaba|abaa|baaa|aaab){2}$/, `smooth interleaving, got ${order}`);
  await sequential(gw, 392);
  t.ok(Math.abs(a.hits - 300) <= 20 && Math.abs(b.hits - 100) <= 20, `3:1 over 400 requests, got ${a.hits}:${b.hits}`);
});

t.test('weighted round-robin skips a target out of the rotation and keeps the others at their ratio', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({
    targets: [{ url: ups[0].url, weight: 2 }, { url: ups[1].url, weight: 1 }, { url: ups[2].url, weight: 1 }],
    breaker: { consecutiveFailures: 1, openMs: 60000, maxOpenMs: 60000 },
  }));
  const [a, b, c] = ups;
  await c.stop();
  // The refused connection opens c's breaker; the request it carried moves to another target
  // (an attempt that never reached its target is not a retry), so no client sees it.
  const first = await sequential(gw, 4);
  t.same(first, [200, 200, 200, 200], 'the refused attempt went to another target');
  const before = [a.hits, b.hits];
  t.same(await sequential(gw, 30), new Array(30).fill(200));
  t.equal(a.hits - before[0], 20, 'a keeps twice the share of b');
  t.equal(b.hits - before[1], 10);
});

t.test('least-request: an idle target wins over a slow one', async (t) => {
  const { gw, ups } = await setup(t, 2, (ups) => ({ targets: ups.map((u) => u.url), balance: 'least-request' }));
  const [slow, fast] = ups;
  slow.behave({ kind: 'delay', ms: 400 });
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < 30; i++) {
    calls.push(call(gw.url, `/x${i}`));
    await sleep(15);
  }
  await Promise.all(calls);
  // Round-robin would send 15 to each; with two targets both are always compared, so the slow one
  // only gets a request when its in-flight count is not higher than the fast one's.
  t.ok(slow.hits <= 6, `the slow target got ${slow.hits} of 30`);
  t.equal(slow.hits + fast.hits, 30);
});

t.test('least-request spreads evenly over equal targets and avoids broken ones', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({ targets: ups.map((u) => u.url), balance: 'least-request', breaker: { consecutiveFailures: 1, openMs: 60000 } }));
  await ups[2].stop();
  const statuses = await sequential(gw, 60);
  t.ok(statuses.filter((s) => s !== 200).length <= 1, 'at most the request that tripped the breaker failed');
  t.ok(ups[0].hits >= 15 && ups[1].hits >= 15, `spread ${ups[0].hits}/${ups[1].hits}`);
});

t.test('hash: the same header value always reaches the same target; different values spread', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({ targets: ups.map((u) => u.url), balance: 'hash', hash: { key: 'header:x-user' } }));
  const placed = new Map<string, Set<string>>();
  for (let u = 0; u < 30; u++) {
    for (let i = 0; i < 3; i++) {
      const res = await call(gw.url, '/p', { headers: { 'x-user': `user-${u}` } });
      const host = res.json<{ host: string }>().host;
      if (!placed.has(`user-${u}`)) placed.set(`user-${u}`, new Set());
      placed.get(`user-${u}`)!.add(host);
    }
  }
  t.ok([...placed.values()].every((s) => s.size === 1), 'every user stays on one target');
  const used = new Set([...placed.values()].map((s) => [...s][0]));
  t.equal(used.size, 3, 'thirty users spread over the three targets');
  // No key: round-robin.
  const before = ups.map((u) => u.hits);
  await sequential(gw, 6);
  t.same(
    ups.map((u, i) => u.hits - before[i]),
    [2, 2, 2],
  );
});

t.test('hash by client IP: one client stays on one target', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({ targets: ups.map((u) => u.url), balance: 'hash', hash: { key: 'ip' } }));
  await sequential(gw, 9);
  t.same(
    ups.map((u) => u.hits).sort(),
    [0, 0, 9],
  );
});

t.test('hash by cookie: sticky per cookie value, and the key target being out sends the key to the next one', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({
    targets: ups.map((u) => u.url),
    balance: 'hash',
    hash: { key: 'cookie:session' },
    breaker: { consecutiveFailures: 1, openMs: 60000, maxOpenMs: 60000 },
  }));
  const where = async () => (await call(gw.url, '/c', { headers: { cookie: 'theme=dark; session=abc123; x=1' } })).json<{ host: string }>().host;
  const home = await where();
  t.equal(await where(), home);
  const owner = ups.find((u) => home.endsWith(`:${u.port}`))!;
  owner.behave({ kind: 'status', status: 502 });
  t.equal((await call(gw.url, '/c', { headers: { cookie: 'session=abc123' } })).status, 502, 'the failure trips the breaker');
  const next = await where();
  t.not(next, home, 'moved to the next target on the ring');
  t.equal(await where(), next, 'and stays there');
});

t.test('hash with bounded load: a hot key spills over once its target carries more than loadFactor × average', async (t) => {
  const run = async (loadFactor: number) => {
    const { gw, ups } = await setup(t, 3, (ups) => ({ targets: ups.map((u) => u.url), balance: 'hash', hash: { key: 'path', loadFactor } }));
    for (const u of ups) u.behave({ kind: 'delay', ms: 500 });
    await Promise.all(Array.from({ length: 12 }, () => call(gw.url, '/hot')));
    return ups.map((u) => u.hits).sort((x, y) => y - x);
  };
  t.same(await run(0), [12, 0, 0], 'unbounded: every request on the key owner');
  const bounded = await run(1.25);
  t.ok(bounded[0] < 12 && bounded[0] >= 4 && bounded[1] > 0, `bounded: spread ${bounded.join('/')}`);
});

t.test('hash ring: adding one target of ten moves about a tenth of the keys, all to the new one', async (t) => {
  const members = Array.from({ length: 10 }, (_, i) => ({ name: `http://10.0.0.${i + 1}:8080`, weight: 1 }));
  const before = new HashRing(members);
  const after = new HashRing([...members, { name: 'http://10.0.0.11:8080', weight: 1 }]);
  const keys = 20000;
  let moved = 0;
  let movedElsewhere = 0;
  const load = new Array<number>(10).fill(0);
  for (let k = 0; k < keys; k++) {
    const key = `user-${k}`;
    const a = before.owner(key);
    const b = after.owner(key);
    load[a]++;
    if (a !== b) {
      moved++;
      if (b !== 10) movedElsewhere++;
    }
  }
  const share = moved / keys;
  t.ok(share >= 0.05 && share <= 0.15, `moved ${share.toFixed(3)} of the keys`);
  t.equal(movedElsewhere, 0, 'keys only move to the new target');
  t.ok(Math.min(...load) > keys / 10 / 1.35 && Math.max(...load) < (keys / 10) * 1.35, `even spread: ${load.join(' ')}`);
  // Removing one target only moves that target's keys.
  const fewer = new HashRing(members.slice(1));
  let disturbed = 0;
  for (let k = 0; k < keys; k++) {
    const a = before.owner(`user-${k}`);
    if (a !== 0 && members[a].name !== members.slice(1)[fewer.owner(`user-${k}`)].name) disturbed++;
  }
  t.equal(disturbed, 0, 'removing a target leaves the other keys in place');
  // Weights: a target of weight 3 gets about three times the keys.
  const weighted = new HashRing([
    { name: 'a', weight: 3 },
    { name: 'b', weight: 1 },
  ]);
  let heavy = 0;
  for (let k = 0; k < keys; k++) if (weighted.owner(`k${k}`) === 0) heavy++;
  t.ok(heavy / keys > 0.68 && heavy / keys < 0.82, `weight 3 of 4 got ${(heavy / keys).toFixed(3)}`);
  t.not(hash32('a'), hash32('b'));
});

t.test('cookie values are found wherever they are in the header', async (t) => {
  t.equal(cookieValue('session=1', 'session'), '1');
  t.equal(cookieValue('a=b; session=xyz; c=d', 'session'), 'xyz');
  t.equal(cookieValue('mysession=1; session=2', 'session'), '2');
  t.equal(cookieValue('a=b', 'session'), undefined);
  t.equal(cookieValue('session', 'session'), undefined);
});

t.test('slow start: a target back from an open breaker ramps up instead of taking its full share at once', async (t) => {
  const { gw, ups } = await setup(t, 2, (ups) => ({
    targets: ups.map((u) => u.url),
    slowStartMs: 6000,
    breaker: { consecutiveFailures: 1, openMs: 300, maxOpenMs: 300 },
  }));
  const [a, b] = ups;
  a.burst(1, { kind: 'status', status: 502 });
  await sequential(gw, 2);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_state', { target: a.url }), 2, 'a is out');
  await sleep(350);
  // The first request a gets after its open time is the probe that closes the breaker.
  await waitFor(t, 'a back', async () => {
    await call(gw.url, '/probe');
    return (await metricValue(gw.adminUrl, 'gateway_upstream_breaker_state', { target: a.url })) === 0;
  });
  const view = await upstreamView(gw);
  t.equal(view.slowStartMs, 6000);
  const [va, vb] = view.targets;
  t.equal(va.weight, 1, 'a: configured weight');
  t.ok(va.effectiveWeight >= 0.1 && va.effectiveWeight < 0.3, `a: effective weight ${va.effectiveWeight} while it ramps`);
  t.ok(va.slowStartLeftMs > 4000 && va.slowStartLeftMs <= 6000, `a: ${va.slowStartLeftMs} ms of slow start left`);
  t.same([vb.weight, vb.effectiveWeight, vb.slowStartLeftMs], [1, 1, 0], 'b: full weight');
  const metricWeight = await metricValue(gw.adminUrl, 'gateway_upstream_target_effective_weight', { target: a.url });
  t.ok(metricWeight >= 0.1 && metricWeight < 0.3, `the effective weight metric: ${metricWeight}`);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_target_effective_weight', { target: b.url }), 1);
  const [a0, b0] = [a.hits, b.hits];
  await sequential(gw, 40);
  const share = (a.hits - a0) / 40;
  // Plain round-robin gives a half; at most ~1.5 s into a 6 s ramp a has under a quarter of b's weight.
  t.ok(share > 0 && share < 0.3, `a's share right after recovery: ${share}`);
  t.equal(a.hits - a0 + b.hits - b0, 40);
});

t.test('slow start is off by default: a recovered target takes its full share at once', async (t) => {
  const { gw, ups } = await setup(t, 2, (ups) => ({ targets: ups.map((u) => u.url), breaker: { consecutiveFailures: 1, openMs: 300, maxOpenMs: 300 } }));
  const [a] = ups;
  a.burst(1, { kind: 'status', status: 502 });
  await sequential(gw, 2);
  await sleep(350);
  await waitFor(t, 'a back', async () => {
    await call(gw.url, '/probe');
    return (await metricValue(gw.adminUrl, 'gateway_upstream_breaker_state', { target: a.url })) === 0;
  });
  const a0 = a.hits;
  await sequential(gw, 40);
  t.equal(a.hits - a0, 20);
});

t.test('panic mode: with fewer than minHealthyPercent targets healthy, traffic goes to all of them', async (t) => {
  const { gw, ups } = await setup(t, 3, (ups) => ({
    targets: ups.map((u) => u.url),
    minHealthyPercent: 50,
    healthCheck: { enabled: true, intervalMs: 100, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 1 },
  }));
  const [a, b, c] = ups;
  await waitFor(t, 'first probes', () => ups.every((u) => u.probes > 0));
  b.healthStatus = 500;
  await waitFor(t, 'b unhealthy', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { target: b.url })) === 0);
  // One of three out: 67 % routable, no panic; b gets nothing.
  let b0 = b.hits;
  t.same(await sequential(gw, 6), new Array(6).fill(200));
  t.equal(b.hits, b0);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_panic', { upstream: 'up' }), 0);

  c.healthStatus = 500;
  await waitFor(t, 'c unhealthy', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { target: c.url })) === 0);
  const before = ups.map((u) => u.hits);
  t.same(await sequential(gw, 9), new Array(9).fill(200), 'every request answered');
  t.same(
    ups.map((u, i) => u.hits - before[i]),
    [3, 3, 3],
    '2 of 3 down with minHealthyPercent 50: all three take traffic',
  );
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_panic', { upstream: 'up' }), 1);
  const view = await upstreamView(gw);
  t.same(
    { panic: view.panic, minHealthyPercent: view.minHealthyPercent, available: view.available, byOrigin: view.targetsByOrigin },
    { panic: true, minHealthyPercent: 50, available: 1, byOrigin: { static: 3, dns: 0 } },
    'the admin view shows the panic',
  );
  t.same(
    view.targets.map((x) => [x.healthy, x.routable, x.breaker, x.source]),
    [
      [true, true, 'closed', 'static'],
      [false, false, 'closed', 'static'],
      [false, false, 'closed', 'static'],
    ],
  );
  t.ok(gw.logs.some((l) => l.msg === 'panic mode: too few targets take traffic, sending to all of them' && l.upstream === 'up' && l.routable === 1 && l.total === 3));

  b.healthStatus = 200;
  await waitFor(t, 'b healthy', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { target: b.url })) === 1);
  const c0 = c.hits;
  b0 = b.hits;
  await sequential(gw, 6);
  t.equal(c.hits, c0, 'panic over: the unhealthy target gets nothing again');
  t.ok(b.hits > b0);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_panic', { upstream: 'up' }), 0);
  t.equal((await upstreamView(gw)).panic, false, 'the admin view shows the panic is over');
  t.ok(gw.logs.some((l) => l.msg === 'panic mode over' && l.routable === 2));
  t.ok(a.hits > 0);
});

t.test('panic mode also answers when every target is out; without it the gateway fails fast with 503', async (t) => {
  const hc = { enabled: true, intervalMs: 100, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 1 };
  for (const minHealthyPercent of [0, 50]) {
    const { gw, ups } = await setup(t, 2, (ups) => ({ targets: ups.map((u) => u.url), minHealthyPercent, healthCheck: hc }));
    for (const u of ups) u.healthStatus = 500;
    await waitFor(t, 'all unhealthy', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_target_healthy', { upstream: 'up' })) === 0);
    const statuses = await sequential(gw, 4);
    t.same(statuses, new Array(4).fill(minHealthyPercent === 0 ? 503 : 200), `minHealthyPercent ${minHealthyPercent}`);
  }
});

t.test('config: weighted targets, balance and hash keys are checked', async (t) => {
  const cfg = parseConfig(
    withTestDefaults({
      upstreams: { a: { targets: ['http://a:1', { url: 'http://b:1', weight: 5 }], balance: 'least-request' } },
      routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'a' }],
    }),
  );
  t.same(cfg.upstreams.a.targets, ['http://a:1', { url: 'http://b:1', weight: 5 }]);
  t.equal(cfg.upstreams.a.hash.loadFactor, 1.25);
  const problems = (over: Record<string, unknown>) => {
    try {
      parseConfig(withTestDefaults({ upstreams: { a: { targets: ['http://a:1'], ...over } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'a' }] }));
      return [];
    } catch (err) {
      return (err as { problems: { path: string; message: string }[] }).problems.map((p) => `${p.path}: ${p.message}`);
    }
  };
  t.same(problems({ balance: 'hash' }), ['upstreams.a.hash.key: is required with balance: hash']);
  t.match(problems({ balance: 'hash', hash: { key: 'body' } }).join('\n'), /upstreams\.a\.hash\.key: expected header:<name>, cookie:<name>, ip, consumer or path/);
  t.match(problems({ balance: 'random' }).join('\n'), /upstreams\.a\.balance/);
  t.match(problems({ targets: [{ url: 'ftp://x' }] }).join('\n'), /upstreams\.a\.targets\[0\]\.url: protocol must be http: or https:/);
  t.match(problems({ targets: [{ url: 'http://x', weight: 0 }] }).join('\n'), /upstreams\.a\.targets\[0\]/);
  t.match(problems({ minHealthyPercent: 101 }).join('\n'), /upstreams\.a\.minHealthyPercent/);
});
