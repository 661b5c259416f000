import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { parseConfig, ConfigError } from '../src/config/load';
import { MemoryStore } from '../src/store/memory';
import { BUCKET_FIELDS, F_REMAINING, type BucketSpec } from '../src/store/types';
import { makeKey } from './helpers/auth';
import { startGateway, withTestDefaults } from './helpers/gateway';
import { call } from './helpers/http';
import { identityFromHeader, metric } from './helpers/ratelimit';
import { rateLimitBehaviour } from './helpers/ratelimit-behaviour';
import { startUpstream, type TestUpstream } from './helpers/upstream';

let up: TestUpstream;
t.before(async () => {
  up = await startUpstream();
});
t.teardown(() => up.close());

t.test('memory store', async (t) => rateLimitBehaviour(t, () => up, () => ({ type: 'memory' })));

const spec = (rate: number, perUs: number, burst = rate): BucketSpec => {
  const intervalUs = Math.round(perUs / rate);
  return { burst, intervalUs, argInterval: String(intervalUs), argBurst: String(burst) };
};

t.test('a flood of one million distinct keys keeps the memory store within its bound', async (t) => {
  let now = 1e12;
  const store = new MemoryStore(10000, () => now);
  const specs = [spec(1, 3600e6)];
  const hot = ['hot'];
  store.gate({ keys: hot, specs });
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < 1e6; i++) {
    store.gate({ keys: ['k' + i], specs });
    // The hot key stays in use, so the LRU keeps it: its bucket is still empty.
    if (i % 1000 === 0) t.equal(store.gate({ keys: hot, specs }).admitted, false);
    now += 1;
  }
  t.ok(store.size <= 10000, `within the bound (${store.size})`);
  gc();
  const grown = process.memoryUsage().heapUsed - heapBefore;
  t.ok(grown < 10e6, `heap did not grow with the flood (${Math.round(grown / 1e6)} MB)`);
  t.equal(store.gate({ keys: ['k0'], specs }).admitted, true, 'the oldest keys were dropped (they restart full)');
});

t.test('memory store arithmetic: refill and cap on an injected clock', async (t) => {
  let now = 0;
  const store = new MemoryStore(100, () => now);
  const specs = [spec(10, 1e6, 5)];
  const take = () => store.gate({ keys: ['a'], specs });
  for (let i = 0; i < 5; i++) t.equal(take().admitted, true);
  const r = take();
  t.equal(r.admitted, false);
  t.same(r.buckets, [0, 100, 100, 500], 'remaining, retry, next, reset (ms)');
  now += 99_999;
  t.equal(take().admitted, false, '1 µs short of a token');
  now += 1;
  t.equal(take().buckets[F_REMAINING], 0);
  now += 10e6;
  const full = take();
  t.equal(full.buckets[F_REMAINING], 4, 'never more than burst');
  t.equal(full.buckets.length, BUCKET_FIELDS);
});

t.test('config: limits and store are validated with precise paths', async (t) => {
  const problems = (input: unknown): string[] => {
    try {
      parseConfig(input, { env: {} });
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
      throw err;
    }
  };
  const route = (rateLimit: unknown) => ({ name: 'r', match: { prefix: '/r' }, upstream: 'u', rateLimit });
  const base = { upstreams: { u: { targets: ['http://127.0.0.1:1'] } } };
  const ok = parseConfig({ ...base, routes: [route({ limits: [{ rate: 1, per: '1s' }] })] }, { env: {} });
  t.equal(ok.routes[0].rateLimit!.failMode, 'open');
  t.equal(ok.routes[0].rateLimit!.headers, true);
  t.equal(ok.routes[0].rateLimit!.limits[0].by, 'ip');
  t.equal(ok.store.type, 'memory');
  t.equal(ok.store.redis.timeoutMs, 50);
  t.equal(ok.store.memory.maxKeys, 100000);

  const p = problems({
    ...base,
    routes: [
      route({
        limits: [
          { rate: 10, per: '1m' },
          { rate: 10, per: '1m', by: 'ip' },
          { rate: 2000000, per: '1s' },
          { rate: 1, per: '1d', burst: 400 },
          { rate: 1, per: '1x' },
          { rate: 1, per: '1s', by: 'cookie' },
        ],
        failMode: 'sideways',
        extra: 1,
      }),
    ],
    consumers: [{ id: 'c', rateLimits: [{ rate: 0, per: '1s' }] }],
    store: { type: 'redis', redis: { keyPrefix: 'a{b}' } },
  });
  const expect = [
    'routes[0].rateLimit.limits[4].per: expected a duration like 500ms, 1s, 5m, 1h, 1d, 1w, 1mo (got "1x")',
    'routes[0].rateLimit.limits[5].by: expected ip, consumer, apiKey, route or header:<name> (got "cookie")',
    'routes[0].rateLimit.failMode: expected one of open, closed or local (got "sideways")',
    'routes[0].rateLimit.extra: unknown key',
    'consumers[0].rateLimits[0].rate: expected at least 1 (got 0)',
    'store.redis.keyPrefix: expected at most 64 characters without braces or whitespace (got "a{b}")',
  ];
  for (const e of expect) t.ok(p.some((x) => x.startsWith(e)), `${e}\n  in ${p.join('\n  ')}`);

  const semantic = problems({
    ...base,
    routes: [route({ limits: [{ rate: 10, per: '1m' }, { rate: 10, per: '1m', by: 'ip' }, { rate: 2000000, per: '1s' }, { rate: 1, per: '1d', burst: 400 }] })],
    store: { type: 'redis' },
  });
  t.same(semantic.sort(), [
    'routes[0].rateLimit.limits[1]: same limit as routes[0].rateLimit.limits[0]',
    'routes[0].rateLimit.limits[2].rate: more than one token per microsecond (2000000 per 1s) is not supported',
    'routes[0].rateLimit.limits[3].burst: the bucket would take more than 366 days to refill; lower burst or per',
    'store.redis.url: is required when store.type is redis in standalone mode',
  ].sort());
  t.same(problems({ ...base, store: { type: 'redis', redis: { mode: 'cluster' } } }), ['store.redis.nodes: list at least one node in cluster mode']);
});

t.test('a reload keeps the buckets of unchanged limits; a changed limit starts fresh', async (t) => {
  const config = (rate: number, extra: Record<string, unknown>[] = []) => ({
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'rl', match: { prefix: '/rl' }, upstream: 'up', rateLimit: { limits: [{ rate, per: '1h' }] } }, ...extra],
  });
  const gw = await startGateway(config(2));
  t.teardown(() => gw.close());
  t.same([(await call(gw.url, '/rl')).status, (await call(gw.url, '/rl')).status, (await call(gw.url, '/rl')).status], [200, 200, 429]);
  await gw.gateway.reload(parseConfig(withTestDefaults(config(2, [{ name: 'other', match: { prefix: '/other' }, upstream: 'up' }])), { env: {} }));
  t.equal((await call(gw.url, '/other')).status, 200, 'the reload took effect');
  t.equal((await call(gw.url, '/rl')).status, 429, 'the bucket survived the reload');
  await gw.gateway.reload(parseConfig(withTestDefaults(config(3)), { env: {} }));
  const r = await call(gw.url, '/rl');
  t.equal(r.status, 200, 'a changed limit has a new bucket');
  t.equal(r.headers['x-ratelimit-remaining'], '2');
  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.equal(metric(m, 'gateway_ratelimit_decisions_total', { route: 'rl', result: 'limited' }), 2, 'one counter across reloads');
});

t.test('by: apiKey reads the configured API key header, not X-API-Key', async (t) => {
  const k1 = makeKey();
  const k2 = makeKey();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { apiKeys: { header: 'X-Client-Key' } },
    consumers: [{ id: 'alice', apiKeys: [{ prefix: k1.prefix, sha256: k1.sha256 }, { prefix: k2.prefix, sha256: k2.sha256 }] }],
    routes: [
      { name: 'keyed', match: { prefix: '/keyed' }, upstream: 'up', auth: { methods: ['apiKey'] }, rateLimit: { limits: [{ rate: 2, per: '1h', by: 'apiKey' }] } },
      { name: 'open', match: { prefix: '/open' }, upstream: 'up', rateLimit: { limits: [{ rate: 2, per: '1h', by: 'apiKey' }] } },
    ],
  });
  t.teardown(() => gw.close());
  const st = async (path: string, headers: Record<string, string>) => (await call(gw.url, path, { headers })).status;

  const one = { 'x-client-key': k1.key };
  t.same([await st('/keyed', one), await st('/keyed', one), await st('/keyed', one)], [200, 200, 429], 'one bucket per key');
  t.equal(await st('/keyed', { 'x-client-key': k2.key }), 200, "the consumer's other key has its own bucket");

  // X-API-Key means nothing here: changing it does not change the bucket, the configured header does.
  t.same(
    [await st('/open', { 'x-client-key': 'a', 'x-api-key': '1' }), await st('/open', { 'x-client-key': 'a', 'x-api-key': '2' }), await st('/open', { 'x-client-key': 'a', 'x-api-key': '3' })],
    [200, 200, 429],
  );
  t.equal(await st('/open', { 'x-client-key': 'b' }), 200, 'another value of the configured header, another bucket');
  t.same([await st('/open', { 'x-api-key': '4' }), await st('/open', { 'x-api-key': '5' }), await st('/open', {})], [200, 200, 429], 'without the configured header: keyed by IP');
});

t.test("a consumer's own limits are named consumer-<rate>per<per>, marked once", async (t) => {
  const gw = await startGateway(
    {
      upstreams: { up: { targets: [up.url] } },
      consumers: [{ id: 'alice', rateLimits: [{ rate: 3, per: '1m' }, { rate: 10, per: '1h', by: 'ip' }, { rate: 5, per: '1h', name: 'gold' }] }],
      routes: [{ name: 'named', match: { prefix: '/named' }, upstream: 'up', rateLimit: { limits: [{ rate: 100, per: '1m' }] } }],
    },
    {},
    { plugins: identityFromHeader },
  );
  t.teardown(() => gw.close());
  const alice = { 'x-test-consumer': 'alice' };
  const first = await call(gw.url, '/named', { headers: alice });
  t.equal(first.status, 200);
  t.equal(first.headers['ratelimit-policy'], '"ip-100per1m";q=100;w=60, "consumer-3per1m";q=3;w=60, "consumer-ip-10per1h";q=10;w=3600, "gold";q=5;w=3600');
  t.match(first.headers.ratelimit, /^"ip-100per1m";r=99;t=\d+, "consumer-3per1m";r=2;t=\d+, "consumer-ip-10per1h";r=9;t=\d+, "gold";r=4;t=\d+$/);
  await call(gw.url, '/named', { headers: alice });
  await call(gw.url, '/named', { headers: alice });
  const limited = await call(gw.url, '/named', { headers: alice });
  t.equal(limited.status, 429);
  t.equal(limited.json().detail, 'Rate limit "consumer-3per1m" exceeded');
  t.equal((await call(gw.url, '/named')).headers['ratelimit-policy'], '"ip-100per1m";q=100;w=60', 'anonymous: the route limit only');
});
