import type { Test } from 'tap';
import { startGateway, type TestGateway } from './gateway';
import { call } from './http';
import { countBy, fire, identityFromHeader, metric, sleep } from './ratelimit';
import type { TestUpstream } from './upstream';

/**
 * Behaviour every store must show, run against the memory store and against Redis with the same
 * expectations. `store` is the config's store section.
 */
export function rateLimitBehaviour(t: Test, up: () => TestUpstream, store: () => Record<string, unknown>): void {
  const gateway = async (t: Test, routes: Record<string, unknown>[], extra: Record<string, unknown> = {}): Promise<TestGateway> => {
    const gw = await startGateway(
      { store: store(), upstreams: { up: { targets: [up().url] } }, routes: routes.map((r) => ({ upstream: 'up', ...r })), ...extra } as never,
      {},
      { plugins: identityFromHeader },
    );
    t.teardown(() => gw.close());
    return gw;
  };

  t.test('exactness: 1000 concurrent requests against a limit of 100 admit exactly 100', async (t) => {
    const gw = await gateway(t, [{ name: 'exact', match: { prefix: '/exact' }, rateLimit: { limits: [{ rate: 100, per: '1h' }] } }]);
    const shots = await fire([gw.url], 1000, '/exact/x');
    t.same(countBy(shots, (s) => s.status), { 200: 100, 429: 900 });
    const m = (await call(gw.adminUrl, '/metrics')).body;
    t.equal(metric(m, 'gateway_ratelimit_decisions_total', { route: 'exact', result: 'failed_open' }), 0, 'every request was decided');
    t.equal(metric(m, 'gateway_ratelimit_decisions_total', { route: 'exact', result: 'allowed' }), 100);
    t.equal(metric(m, 'gateway_ratelimit_decisions_total', { route: 'exact', result: 'limited' }), 900);
    t.equal(up().seen.filter((s) => s.url.startsWith('/exact')).length, 100, 'only admitted requests reach the upstream');
  });

  t.test('header values and Retry-After follow the bucket state; 429 is a problem body', async (t) => {
    const gw = await gateway(t, [{ name: 'hdr', match: { prefix: '/hdr' }, rateLimit: { limits: [{ rate: 10, per: '1m', burst: 3 }] } }]);
    const a = await call(gw.url, '/hdr/1');
    t.equal(a.status, 200);
    t.equal(a.headers['ratelimit-policy'], '"ip-10per1m";q=3;w=18', 'q = burst, w = seconds to refill it');
    t.equal(a.headers.ratelimit, '"ip-10per1m";r=2;t=6', 'r = tokens left, t = seconds to the next token');
    t.equal(a.headers['x-ratelimit-limit'], '3');
    t.equal(a.headers['x-ratelimit-remaining'], '2');
    t.equal(a.headers['x-ratelimit-reset'], '6', 'seconds until the bucket is full');
    const b = await call(gw.url, '/hdr/2');
    t.equal(b.headers['x-ratelimit-remaining'], '1');
    t.equal(b.headers['x-ratelimit-reset'], '12');
    await call(gw.url, '/hdr/3');
    const d = await call(gw.url, '/hdr/4');
    t.equal(d.status, 429);
    t.equal(d.headers['retry-after'], '6', 'whole seconds until a token, rounded up');
    t.equal(d.headers.ratelimit, '"ip-10per1m";r=0;t=6');
    t.equal(d.headers['x-ratelimit-remaining'], '0');
    t.equal(d.headers['x-ratelimit-reset'], '18');
    t.equal(d.headers['content-type'], 'application/problem+json');
    const body = d.json();
    t.equal(body.code, 'RATE_LIMITED');
    t.equal(body.status, 429);
    t.match(body.detail, /ip-10per1m/);
    t.equal(body.requestId, d.headers['x-request-id']);
  });

  t.test('a route can hide the headers; Retry-After stays on 429', async (t) => {
    const gw = await gateway(t, [{ name: 'quiet', match: { prefix: '/quiet' }, rateLimit: { headers: false, limits: [{ rate: 1, per: '1h' }] } }]);
    const a = await call(gw.url, '/quiet');
    t.equal(a.status, 200);
    for (const h of ['ratelimit', 'ratelimit-policy', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']) t.notOk(h in a.headers, h);
    const b = await call(gw.url, '/quiet');
    t.equal(b.status, 429);
    t.equal(b.headers['retry-after'], '3600');
    t.notOk('ratelimit' in b.headers);
  });

  t.test('burst capacity, then refill at the configured rate', async (t) => {
    const gw = await gateway(t, [{ name: 'refill', match: { prefix: '/refill' }, rateLimit: { limits: [{ rate: 60, per: '1m', burst: 3 }] } }]);
    const first = await Promise.all([1, 2, 3, 4].map(() => call(gw.url, '/refill')));
    t.same(countBy(first, (r) => r.status), { 200: 3, 429: 1 }, 'burst of 3 at once');
    const exhausted = performance.now();
    // Hammering while empty must not delay the refill: rejected requests take nothing.
    for (let i = 0; i < 5; i++) t.equal((await call(gw.url, '/refill')).status, 429);
    // One token per second: 2.3 s later exactly two are back (the third comes at 3 s).
    await sleep(2300 - (performance.now() - exhausted));
    const second = [await call(gw.url, '/refill'), await call(gw.url, '/refill'), await call(gw.url, '/refill')];
    t.same(second.map((r) => r.status), [200, 200, 429]);
    t.equal(second[2].headers['retry-after'], '1');
  });

  t.test('several windows at once; a rejected request consumes nothing', async (t) => {
    const gw = await gateway(t, [
      { name: 'multi', match: { prefix: '/multi' }, rateLimit: { limits: [{ rate: 3, per: '3s' }, { rate: 5, per: '1h', name: 'hourly' }] } },
    ]);
    const a = await Promise.all([1, 2, 3, 4].map(() => call(gw.url, '/multi')));
    const exhausted = performance.now();
    t.same(countBy(a, (r) => r.status), { 200: 3, 429: 1 }, 'the 3 s window stops the fourth');
    const short = a.find((r) => r.status === 429)!;
    t.equal(short.headers['retry-after'], '1');
    t.match(short.headers.ratelimit, /"ip-3per3s";r=0;t=1, "hourly";r=2;t=/);
    // One token a second: 2.1 s later two are back (the third comes at 3 s).
    await sleep(2100 - (performance.now() - exhausted));
    t.same([(await call(gw.url, '/multi')).status, (await call(gw.url, '/multi')).status], [200, 200], 'fourth and fifth of the hour');
    await sleep(1100);
    const last = await call(gw.url, '/multi');
    t.equal(last.status, 429, 'the hourly bucket is empty');
    t.equal(last.headers['x-ratelimit-limit'], '5', 'the hourly bucket is the most constrained');
    t.equal(last.headers['x-ratelimit-remaining'], '0');
    let before = 0;
    for (let i = 0; i < 4; i++) {
      const r = i === 0 ? last : await call(gw.url, '/multi');
      t.equal(r.status, 429);
      const wait = Number(r.headers['retry-after']);
      t.ok(wait > 710 && wait <= 720, `the hourly bucket decides: one token per 720 s, minus the time spent (${wait})`);
      const left = Number(/"ip-3per3s";r=(\d+);/.exec(String(r.headers.ratelimit))?.[1]);
      t.ok(left >= 1 && left >= before, `the 3 s bucket keeps its refilled tokens: rejected requests take nothing (${left})`);
      before = left;
    }
  });

  t.test('keys: ip, header with IP fallback, route-wide, consumer with IP fallback and consumer limits', async (t) => {
    const gw = await gateway(
      t,
      [
        { name: 'tenant', match: { prefix: '/tenant' }, rateLimit: { limits: [{ rate: 2, per: '1h', by: 'header:X-Tenant' }] } },
        { name: 'shared', match: { prefix: '/shared' }, rateLimit: { limits: [{ rate: 3, per: '1h', by: 'route' }] } },
        { name: 'cons', match: { prefix: '/cons' }, rateLimit: { limits: [{ rate: 2, per: '1h', by: 'consumer' }] } },
        { name: 'mixed', match: { prefix: '/mixed' }, rateLimit: { limits: [{ rate: 4, per: '1h' }] } },
      ],
      { consumers: [{ id: 'alice', rateLimits: [{ rate: 1, per: '1h' }] }, { id: 'bob' }] },
    );
    const st = async (path: string, headers: Record<string, string> = {}) => (await call(gw.url, path, { headers })).status;

    t.same([await st('/tenant', { 'x-tenant': 'a' }), await st('/tenant', { 'x-tenant': 'a' }), await st('/tenant', { 'x-tenant': 'a' })], [200, 200, 429]);
    t.equal(await st('/tenant', { 'x-tenant': 'b' }), 200, 'another header value, another bucket');
    t.same([await st('/tenant'), await st('/tenant'), await st('/tenant')], [200, 200, 429], 'no header: keyed by IP');

    t.same([await st('/shared'), await st('/shared', { 'x-tenant': 'z' }), await st('/shared', { 'x-test-consumer': 'bob' }), await st('/shared')], [200, 200, 200, 429]);

    // alice has her own 1/h on top of the route's 2/h per consumer; bob only the route's.
    t.same([await st('/cons', { 'x-test-consumer': 'alice' }), await st('/cons', { 'x-test-consumer': 'alice' })], [200, 429]);
    const rej = await call(gw.url, '/cons', { headers: { 'x-test-consumer': 'alice' } });
    t.match(rej.headers['ratelimit-policy'], /^"consumer-2per1h";q=2;w=3600, "consumer-1per1h";q=1;w=3600$/);
    t.same([await st('/cons', { 'x-test-consumer': 'bob' }), await st('/cons', { 'x-test-consumer': 'bob' }), await st('/cons', { 'x-test-consumer': 'bob' })], [200, 200, 429]);
    t.same([await st('/cons'), await st('/cons'), await st('/cons')], [200, 200, 429], 'anonymous: the consumer key falls back to the IP');

    // Route keyed by IP; alice's own limit (keyed by consumer) applies too.
    t.same([await st('/mixed', { 'x-test-consumer': 'alice' }), await st('/mixed', { 'x-test-consumer': 'alice' })], [200, 429]);
    t.same([await st('/mixed', { 'x-test-consumer': 'bob' }), await st('/mixed'), await st('/mixed'), await st('/mixed')], [200, 200, 200, 429], 'alice\'s admitted request counted in the IP bucket; her rejected one did not');
  });

  t.test('forged X-Forwarded-For: ignored from an untrusted peer, honoured (right to left) from a trusted proxy', async (t) => {
    const routes = [{ name: 'xff', match: { prefix: '/xff' }, rateLimit: { limits: [{ rate: 2, per: '1h' }] } }];
    const untrusted = await gateway(t, routes);
    const forged = ['1.1.1.1', '2.2.2.2', '3.3.3.3, 4.4.4.4', '127.0.0.2'];
    const a = [];
    for (const xff of forged) a.push((await call(untrusted.url, '/xff', { headers: { 'x-forwarded-for': xff } })).status);
    t.same(a, [200, 200, 429, 429], 'every forged address lands in the socket peer bucket');

    const trusted = await gateway(t, routes, { trustedProxies: ['127.0.0.1'] });
    const st = async (xff: string) => (await call(trusted.url, '/xff', { headers: { 'x-forwarded-for': xff } })).status;
    t.same([await st('1.1.1.1'), await st('1.1.1.1'), await st('1.1.1.1')], [200, 200, 429]);
    t.equal(await st('2.2.2.2'), 200, 'another client behind the proxy has its own bucket');
    t.equal(await st('9.9.9.9, 1.1.1.1'), 429, 'a client prepending a forged hop keeps its own key');
  });
}
