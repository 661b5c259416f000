import t from 'tap';
import { startCacheUpstream } from './helpers/cache';
import { cacheBehaviour } from './helpers/cache-behaviour';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metric } from './helpers/ratelimit';
import { startRedis, type TestRedis } from './helpers/redis';

let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.teardown(() => redis.close());

let n = 0;
const redisStore = (extra: Record<string, unknown> = {}) => ({ type: 'redis', redis: { url: redis.url, keyPrefix: `c${n++}:`, timeoutMs: 1000, ...extra } });

t.test('redis store', (t) => cacheBehaviour(t, () => redisStore()));

t.test('one store round trip per request: the lookup rides in the rate-limit call', async (t) => {
  const up = await startCacheUpstream();
  const gw = await startGateway({
    store: redisStore(),
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'rt', match: { prefix: '/rt' }, upstream: 'up', cache: {}, rateLimit: { limits: [{ rate: 100, per: '1m' }] } }],
  } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  // The store's warm-up call at start-up is a script call too.
  const before = metric((await call(gw.adminUrl, '/metrics')).body, 'gateway_redis_script_duration_seconds_count', {});
  for (let i = 0; i < 10; i++) await call(gw.url, '/rt/a');
  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.equal(metric(m, 'gateway_redis_script_duration_seconds_count', {}) - before, 10, 'ten requests, ten script calls');
  t.equal(metric(m, 'gateway_cache_requests_total', { result: 'hit' }), 9);
  t.equal(up.count('/rt/a'), 1);
});

t.test('a write through one instance invalidates the entry on another', async (t) => {
  const up = await startCacheUpstream();
  const store = redisStore();
  const config = {
    store,
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'inv', match: { prefix: '/inv' }, upstream: 'up', cache: {} }],
  };
  const [a, b] = await Promise.all([startGateway(config as never), startGateway(config as never)]);
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()]);
    await up.close();
  });
  // The Host header is part of the key: both instances are addressed as one service.
  const host = { host: 'api.example' };
  await call(a.url, '/inv/item', { headers: host });
  t.equal((await call(b.url, '/inv/item', { headers: host })).headers['x-cache'], 'HIT', 'the entry is shared');
  t.equal((await call(a.url, '/inv/item', { method: 'PUT', body: '{}', headers: host })).status, 200);
  const after = await call(b.url, '/inv/item', { headers: host });
  t.equal(after.headers['x-cache'], 'MISS', 'instance b no longer serves it');
  t.equal((await call(a.url, '/inv/item', { headers: host })).headers['x-cache'], 'HIT', 'and instance a gets the refreshed entry');
  t.equal(up.count('/inv/item'), 3);
});

t.test('Vary: a second instance learns the variants from the marker with one extra lookup', async (t) => {
  const up = await startCacheUpstream();
  const config = {
    store: redisStore(),
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'var', match: { prefix: '/var' }, upstream: 'up', cache: {} }],
  };
  const [a, b] = await Promise.all([startGateway(config as never), startGateway(config as never)]);
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()]);
    await up.close();
  });
  const headers = (lang: string) => ({ host: 'api.example', 'accept-language': lang });
  const path = '/var/x?vary=Accept-Language';
  const en = await call(a.url, path, { headers: headers('en') });
  const fr = await call(a.url, path, { headers: headers('fr') });
  t.equal(up.count('/var/x'), 2);
  const calls = async () => metric((await call(b.adminUrl, '/metrics')).body, 'gateway_redis_script_duration_seconds_count', {});
  const before = await calls();
  const bEn = await call(b.url, path, { headers: headers('en') });
  t.equal(bEn.headers['x-cache'], 'HIT');
  t.equal(bEn.body, en.body);
  t.equal((await calls()) - before, 2, 'the primary lookup found the marker: one more lookup for the variant');
  const bFr = await call(b.url, path, { headers: headers('fr') });
  t.equal(bFr.headers['x-cache'], 'HIT');
  t.equal(bFr.body, fr.body);
  t.equal((await calls()) - before, 3, 'names known: the variant rides in the one lookup');
  t.equal(up.count('/var/x'), 2);
});

t.test('Redis killed mid-traffic: requests pass through, never a 5xx; the cache comes back', async (t) => {
  const own = await startRedis();
  t.teardown(() => own.close());
  const up = await startCacheUpstream();
  const gw = await startGateway({
    store: { type: 'redis', redis: { url: own.url, timeoutMs: 50, reconnectMaxDelayMs: 50 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'k', match: { prefix: '/k' }, upstream: 'up', cache: {} },
      { name: 'kl', match: { prefix: '/kl' }, upstream: 'up', cache: {}, rateLimit: { limits: [{ rate: 1000, per: '1m' }] } },
    ],
  } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  await call(gw.url, '/k/a');
  await call(gw.url, '/kl/a');
  const statuses: number[] = [];
  const traffic = (async () => {
    for (let i = 0; i < 60; i++) {
      const [x, y] = await Promise.all([call(gw.url, '/k/a'), call(gw.url, '/kl/a')]);
      statuses.push(x.status, y.status);
    }
  })();
  await own.kill();
  await traffic;
  t.same([...new Set(statuses)], [200], 'every request answered 200');
  const before = up.count('/k/a');
  t.equal((await call(gw.url, '/k/a')).headers['x-cache'], 'BYPASS', 'with the store down the request passes through');
  t.equal(up.count('/k/a'), before + 1);
  await own.restart();
  let xc: unknown;
  for (let i = 0; i < 100 && xc !== 'HIT'; i++) {
    xc = (await call(gw.url, '/k/a')).headers['x-cache'];
    if (xc !== 'HIT') await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(xc, 'HIT', 'caching again once Redis is back');
});

t.test('a slow Redis (paused) costs at most the budget, then the request passes through', async (t) => {
  const own = await startRedis();
  t.teardown(() => own.close());
  const up = await startCacheUpstream();
  const gw = await startGateway({
    store: { type: 'redis', redis: { url: own.url, timeoutMs: 50 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'p', match: { prefix: '/p' }, upstream: 'up', cache: {} }],
  } as never);
  t.teardown(async () => {
    own.resume();
    await gw.close();
    await up.close();
  });
  await call(gw.url, '/p/a');
  own.pause();
  const r = await call(gw.url, '/p/a', { timeoutMs: 3000 });
  t.equal(r.status, 200);
  t.equal(r.headers['x-cache'], 'BYPASS');
  own.resume();
});
