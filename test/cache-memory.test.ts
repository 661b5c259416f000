import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCacheUpstream } from './helpers/cache';
import { cacheBehaviour } from './helpers/cache-behaviour';
import { parseConfig } from '../src/config/load';
import { MemoryCache } from '../src/store/memory-cache';
import { startGateway, withTestDefaults } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

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

t.test("a background refresh goes through the route's request header rules, without the client's validators", async (t) => {
  const up = await startCacheUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [
      {
        name: 'hr',
        match: { prefix: '/hr' },
        upstream: 'up',
        cache: { staleWhileRevalidate: 60 },
        policies: { headers: { request: { set: { 'x-internal': 'route-{route}' } } } },
      },
    ],
  } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const path = '/hr/x?etag=a&cc=max-age=1';
  await call(gw.url, path);
  await sleep(1100);
  const b = await call(gw.url, path, { headers: { 'if-none-match': '"client"' } });
  t.equal(b.status, 200);
  t.equal(b.headers['x-cache'], 'STALE');
  for (let i = 0; i < 40 && up.count('/hr/x') < 2; i++) await sleep(25);
  t.equal(up.count('/hr/x'), 2);
  const seen = up.last('/hr/x');
  t.equal(seen?.['x-internal'], 'route-hr', 'the header rule applied');
  t.equal(seen?.['if-none-match'], '"a"', "the stored ETag, not the client's");
});

t.test('closing the gateway cancels a background refresh in flight', async (t) => {
  let calls = 0;
  let refreshClosed = false;
  const up = await startUpstream((req, res) => {
    if (++calls === 1) {
      res.writeHead(200, { 'cache-control': 'max-age=1', 'content-length': '2' });
      res.end('v1');
      return;
    }
    // The refresh never gets an answer: only its cancellation ends it.
    req.socket.once('close', () => (refreshClosed = true));
  });
  t.teardown(() => up.close());
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url], timeouts: { requestMs: 20000 } } },
    routes: [{ name: 'bg', match: { prefix: '/bg' }, upstream: 'up', cache: { staleWhileRevalidate: 60 } }],
  } as never);
  await call(gw.url, '/bg/x');
  await sleep(1100);
  const b = await call(gw.url, '/bg/x');
  t.equal(b.headers['x-cache'], 'STALE');
  t.equal(b.body, 'v1');
  for (let i = 0; i < 40 && calls < 2; i++) await sleep(25);
  t.equal(calls, 2, 'the refresh is waiting on the upstream');
  const started = Date.now();
  await gw.close();
  const took = Date.now() - started;
  t.ok(took < 1000, `close did not wait for the refresh (${took} ms)`);
  for (let i = 0; i < 40 && !refreshClosed; i++) await sleep(25);
  t.ok(refreshClosed, "the refresh's upstream connection was closed");
});

t.test('eviction spares what was read since it was last passed over (second-chance LRU)', async (t) => {
  const cache = new MemoryCache(100);
  const lookup = (k: string): Buffer | null => cache.lookup({ entryKey: k, clockKey: 'c', variantKey: null, genKeys: [] }).entry;
  for (const k of ['a', 'b', 'c', 'd']) cache.put(k, Buffer.alloc(25), 60000);
  t.ok(lookup('a'), 'a is read');
  cache.put('e', Buffer.alloc(25), 60000);
  t.ok(lookup('a'), 'a, read before the store filled up, was kept');
  t.equal(lookup('b'), null, 'b, the oldest unread entry, went instead');
  cache.put('f', Buffer.alloc(25), 60000);
  cache.put('g', Buffer.alloc(25), 60000);
  t.equal(lookup('c'), null);
  t.equal(lookup('d'), null);
  t.ok(lookup('e') && lookup('f') && lookup('g'), 'the newest stay');
  t.ok(lookup('a'), 'a was read again');
  cache.put('h', Buffer.alloc(25), 60000);
  t.ok(lookup('a'), 'a keeps its second chance');
  t.equal(lookup('e'), null, 'e, now the oldest unread entry, went');
  t.equal(cache.size, 4);
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

t.test('config: defaults are filled; a cache on a Redis Cluster store is accepted; a 5xx status is refused', async (t) => {
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
    targetedFields: ['CDN-Cache-Control'],
    countHits: true,
  });
  const cluster = parseConfig(withTestDefaults({ ...base, store: { type: 'redis', redis: { mode: 'cluster', nodes: ['127.0.0.1:7000'] } } } as never), { env: {} });
  t.equal(cluster.routes[0].cache?.maxTtl, 300, 'each route keeps its cache keys in one slot of its own (test/cache-cluster.test.ts)');
  t.throws(() => parseConfig(withTestDefaults({ ...base, routes: [{ ...base.routes[0], cache: { statuses: [503] } }] } as never), { env: {} }), /statuses/);
});
