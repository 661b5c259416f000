import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCacheUpstream } from './helpers/cache';
import { cacheBehaviour } from './helpers/cache-behaviour';
import { parseConfig } from '../src/config/load';
import { startGateway, withTestDefaults } from './helpers/gateway';
import { call } from './helpers/http';

t.test('memory store', (t) => cacheBehaviour(t, () => ({ type: 'memory' })));

t.test('stale-if-error: a stale entry answers when the upstream dies', async (t) => {
  const up = await startCacheUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'sie', match: { prefix: '/sie' }, upstream: 'up', cache: { staleIfError: 60 } }],
  } as never);
  t.teardown(() => gw.close());
  const a = await call(gw.url, '/sie/x?cc=max-age=1');
  await sleep(1100);
  await up.close();
  const b = await call(gw.url, '/sie/x?cc=max-age=1');
  t.equal(b.status, 200);
  t.equal(b.headers['x-cache'], 'STALE');
  t.equal(b.body, a.body);
  const c = await call(gw.url, '/sie/other');
  t.equal(c.status, 502, 'nothing stale to serve: the upstream failure as usual');
});

t.test('the memory store is bounded by bytes (LRU)', async (t) => {
  const up = await startCacheUpstream();
  const gw = await startGateway({
    store: { type: 'memory', memory: { cacheMaxBytes: 2048 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'lru', match: { prefix: '/lru' }, upstream: 'up', cache: {} }],
  } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  for (let i = 0; i < 20; i++) await call(gw.url, `/lru/${i}`);
  t.equal((await call(gw.url, '/lru/19')).headers['x-cache'], 'HIT', 'the most recent entry stays');
  t.equal((await call(gw.url, '/lru/0')).headers['x-cache'], 'MISS', 'the oldest was evicted');
  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.match(m, /gateway_cache_evictions_total [1-9]/);
  const bytes = Number(/gateway_cache_bytes (\d+)/.exec(m)?.[1]);
  t.ok(bytes > 0 && bytes <= 2048, `bytes held within the bound (${bytes})`);
});

t.test('config: a cache on a Redis Cluster store is refused with its path; defaults are filled', async (t) => {
  const base = { upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'c', match: { prefix: '/c' }, upstream: 'up', cache: {} }] };
  const cfg = parseConfig(withTestDefaults(base as never), { env: {} });
  t.same(cfg.routes[0].cache, {
    maxTtl: 300,
    defaultTtl: 0,
    maxBodyBytes: 1048576,
    statuses: [200, 203, 204, 300, 301, 404, 410],
    scope: 'shared',
    ignoreClientDirectives: false,
    revalidationTtl: 300,
    staleWhileRevalidate: 0,
    staleIfError: 0,
    countHits: true,
  });
  t.throws(() => parseConfig(withTestDefaults({ ...base, store: { type: 'redis', redis: { mode: 'cluster', nodes: ['127.0.0.1:7000'] } } } as never), { env: {} }), /routes\[0\]\.cache/);
  t.throws(() => parseConfig(withTestDefaults({ ...base, routes: [{ ...base.routes[0], cache: { statuses: [503] } }] } as never), { env: {} }), /statuses/);
});
