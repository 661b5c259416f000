import Redis from 'ioredis';
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/load';
import { ConfigError } from '../src/config/problem';
import { makeKey } from './helpers/auth';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metric } from './helpers/ratelimit';
import { startRedis, type TestRedis } from './helpers/redis';
import { startUpstream, type TestUpstream } from './helpers/upstream';

let up: TestUpstream;
let redis: TestRedis;
let admin: Redis;
t.before(async () => {
  up = await startUpstream();
  redis = await startRedis();
  admin = new Redis(redis.url);
});
t.teardown(async () => {
  admin.disconnect();
  await redis.close();
  await up.close();
});

const alice = makeKey();
const bob = makeKey();

/**
 * Alice has a daily quota of 5 across every route and her own per-route limit of 3 per minute; bob
 * has none. /a and /b rate-limit (/b with a monthly route quota too), /c only authenticates,
 * /free neither.
 */
function quotaConfig(store: Record<string, unknown>): TestConfig {
  const auth = { methods: ['apiKey'] };
  return {
    store,
    consumers: [
      {
        id: 'alice',
        apiKeys: [{ prefix: alice.prefix, sha256: alice.sha256 }],
        rateLimits: [{ rate: 5, per: '1d', scope: 'consumer', name: 'daily' }, { rate: 3, per: '1m' }],
      },
      { id: 'bob', apiKeys: [{ prefix: bob.prefix, sha256: bob.sha256 }] },
    ],
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'a', match: { prefix: '/a' }, upstream: 'up', auth, rateLimit: { limits: [{ rate: 100, per: '1m', by: 'consumer' }] } },
      { name: 'b', match: { prefix: '/b' }, upstream: 'up', auth, rateLimit: { limits: [{ rate: 4, per: '1mo', by: 'consumer', scope: 'consumer', name: 'monthly' }] } },
      { name: 'c', match: { prefix: '/c' }, upstream: 'up', auth },
      { name: 'free', match: { prefix: '/free' }, upstream: 'up' },
    ],
  } as TestConfig;
}

async function quotaBehaviour(t: Test, store: () => Record<string, unknown>): Promise<void> {
  const gw = await startGateway(quotaConfig(store()));
  t.teardown(() => gw.close());
  const as = (key: string) => ({ headers: { 'x-api-key': key } });

  const a1 = await call(gw.url, '/a/1', as(alice.key));
  t.equal(a1.status, 200);
  t.equal(a1.headers['ratelimit-policy'], '"consumer-100per1m";q=100;w=60, "daily";q=5;w=86400, "consumer-3per1m";q=3;w=60', 'the quota is a policy like any other, with its day-long window');
  t.match(a1.headers.ratelimit, /"daily";r=4;t=\d+/);
  t.equal(a1.headers['x-ratelimit-remaining'], '2', 'the tightest bucket is reported: the per-route 3 per minute');
  t.equal(a1.headers['x-ratelimit-limit'], '3');

  const c1 = await call(gw.url, '/c/1', as(alice.key));
  t.equal(c1.status, 200, 'a route without rateLimit still counts toward the quota');
  t.equal(c1.headers['ratelimit-policy'], '"daily";q=5;w=86400', "a route without rateLimit applies the consumer's quotas only, not its per-route limits");
  t.match(c1.headers.ratelimit, /"daily";r=3;/, 'one bucket across routes: the day has 3 left after /a and /c');

  const b1 = await call(gw.url, '/b/1', as(alice.key));
  t.equal(b1.status, 200);
  t.match(b1.headers['ratelimit-policy'], /"monthly";q=4;w=2592000/, 'a month is 30 days');
  t.match(b1.headers.ratelimit, /"daily";r=2;/);
  t.equal(b1.headers['x-ratelimit-remaining'], '2', 'the quota is now the tightest (2 left, as the per-route bucket of /b)');

  t.equal((await call(gw.url, '/a/2', as(alice.key))).status, 200);
  const c2 = await call(gw.url, '/c/2', as(alice.key));
  t.equal(c2.status, 200);
  t.equal(c2.headers['x-ratelimit-remaining'], '0', 'the fifth request of the day took the last token');
  t.equal(c2.headers['x-ratelimit-limit'], '5');

  for (const path of ['/a/3', '/b/2', '/c/3']) {
    const r = await call(gw.url, path, as(alice.key));
    t.equal(r.status, 429, `${path}: the daily quota is spent on every route`);
    t.equal(r.json().detail, 'Rate limit "daily" exceeded');
    t.ok(Number(r.headers['retry-after']) > 3600, `${path}: retry when a token of the day comes back (${r.headers['retry-after']} s)`);
  }
  t.equal((await call(gw.url, '/free/x', as(alice.key))).status, 200, 'a route without auth knows no consumer: no quota');
  t.equal((await call(gw.url, '/c/1', as(bob.key))).headers['ratelimit-policy'], undefined, 'a consumer without quotas: nothing on a route that does not rate-limit');
  for (let i = 0; i < 4; i++) t.equal((await call(gw.url, '/b/x', as(bob.key))).status, 200);
  const b5 = await call(gw.url, '/b/x', as(bob.key));
  t.equal(b5.status, 429, 'a route quota of scope consumer is per caller (by consumer): bob has his own 4 a month');
  t.equal(b5.json().detail, 'Rate limit "monthly" exceeded');

  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.equal(metric(m, 'gateway_ratelimit_rejections_total', { scope: 'consumer' }), 4, '429s by quota across routes');
  t.equal(metric(m, 'gateway_ratelimit_rejections_total', { scope: 'route' }), 0);
}

t.test('memory store: quotas across routes', (t) => quotaBehaviour(t, () => ({ type: 'memory' })));

let prefix = 0;
t.test('redis store: quotas across routes, one gate call per request', async (t) => {
  const keyPrefix = `q${prefix++}:`;
  await admin.config('RESETSTAT');
  await quotaBehaviour(t, () => ({ type: 'redis', redis: { url: redis.url, keyPrefix, timeoutMs: 1000 } }));
  const stats = await admin.info('commandstats');
  const evalsha = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  // /a 3, /b 2 + bob 5, /c 4 (alice; bob's /c has no limit to take), plus the warm-up call.
  const rateLimited = 3 + 7 + 3;
  t.ok(evalsha === rateLimited || evalsha === rateLimited + 1, `one script call per rate-limited request (${evalsha})`);
  const keys = await admin.keys(`${keyPrefix}*`);
  const aliceQuotas = keys.filter((k) => k.startsWith(`${keyPrefix}{c:alice}q|`));
  const bobQuotas = keys.filter((k) => k.startsWith(`${keyPrefix}{c:bob}q|`));
  t.equal(aliceQuotas.length, 2, "alice: her daily quota and the route's monthly one, each one bucket named by no route", { keys });
  t.equal(bobQuotas.length, 1, 'bob: the monthly one only');
  const monthly = bobQuotas[0].slice(`${keyPrefix}{c:bob}`.length);
  t.ok(aliceQuotas.some((k) => k.endsWith(monthly)), "the route's quota is the same limit for both, keyed by caller");
  const daily = aliceQuotas.find((k) => !k.endsWith(monthly))!;
  t.ok((await admin.pttl(daily)) > 3_600_000, 'the daily quota key lives as long as its day');
  t.ok(keys.every((k) => k.startsWith(`${keyPrefix}{c:`)), 'every key of a route with a quota is tagged with the caller alone (one Cluster slot per request)');
});

function problems(cfg: TestConfig): string[] {
  try {
    parseConfig(withTestDefaults(cfg));
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

t.test('configuration: periods, scope and Redis Cluster', async (t) => {
  const route = (limits: unknown[]): TestConfig => ({ upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up', rateLimit: { limits } }] }) as TestConfig;
  t.same(problems(route([{ rate: 1000, per: '1mo' }, { rate: 10, per: '2w' }])), []);
  t.match(problems(route([{ rate: 1000, per: '1month' }])), [/routes\[0\]\.rateLimit\.limits\[0\]\.per: .*1mo/]);
  t.same(problems(route([{ rate: 1, per: '13mo' }])), ['routes[0].rateLimit.limits[0].burst: the bucket would take more than 366 days to refill; lower burst or per']);
  t.same(problems(route([{ rate: 1, per: '1d', by: 'route', scope: 'consumer' }])), [
    'routes[0].rateLimit.limits[0].scope: a quota across routes cannot be keyed by route; use by: consumer (or ip, apiKey, header:<name>)',
  ]);
  t.same(problems(route([{ rate: 5, per: '1d', by: 'consumer', scope: 'consumer' }, { rate: 5, per: '1d', by: 'consumer' }])), [], 'the same numbers in another scope are another limit');
  const cluster = { type: 'redis', redis: { mode: 'cluster', nodes: ['127.0.0.1:7000'] } } as TestConfig['store'];
  t.same(problems({ ...route([{ rate: 5, per: '1d', by: 'consumer', scope: 'consumer' }, { rate: 5, per: '1s', by: 'ip' }]), store: cluster }), [
    'routes[0].rateLimit: on Redis Cluster, every limit of a route that applies a quota across routes (scope consumer) must use the same `by` (here consumer, ip), so that one request\'s buckets share a slot',
  ]);
  t.same(problems({ ...route([{ rate: 5, per: '1d', by: 'consumer', scope: 'consumer' }, { rate: 5, per: '1s', by: 'consumer' }]), store: cluster }), []);
});
