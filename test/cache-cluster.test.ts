import Redis from 'ioredis';
import t from 'tap';
import { startCacheUpstream, type CacheUpstream } from './helpers/cache';
import { cacheBehaviour } from './helpers/cache-behaviour';
import { levelOf, startGateway, type TestGateway } from './helpers/gateway';
import { call, type Answer } from './helpers/http';
import { countBy, fire, metric } from './helpers/ratelimit';
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster';

const ADMIN_TOKEN = 'cache-cluster-admin-token-0123456789';
const PREFIX = 'cc:';
const ERROR_KINDS = ['timeout', 'connection', 'overload', 'noscript', 'cluster', 'reply', 'other'];

let up: CacheUpstream;
let cluster: TestCluster;
let a: TestGateway;
let b: TestGateway;
// A generous budget, as in ratelimit-cluster.test.ts: this file is about slots and semantics, and a
// loaded machine can stall a process; budgets and failures have their own tests.
t.before(async () => {
  up = await startCacheUpstream();
  cluster = await startRedisCluster(3);
  const config = {
    trustedProxies: ['127.0.0.1'],
    admin: { token: ADMIN_TOKEN },
    store: { type: 'redis', redis: { mode: 'cluster', nodes: [cluster.nodes[0]], keyPrefix: PREFIX, timeoutMs: 5000 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'plain', match: { prefix: '/plain' }, upstream: 'up', cache: {} },
      { name: 'docs', match: { prefix: '/docs' }, upstream: 'up', cache: {} },
      // Hits count against the limit (the default): buckets and lookup are two calls in different slots.
      { name: 'limited', match: { prefix: '/limited' }, upstream: 'up', cache: {}, rateLimit: { limits: [{ rate: 5, per: '1h' }] } },
      // Hits are free: the lookup is its own call, the rate limit runs only on a miss.
      { name: 'free', match: { prefix: '/free' }, upstream: 'up', cache: { countHits: false }, rateLimit: { limits: [{ rate: 5, per: '1h' }] } },
      // One path, two cached routes: reads on one, writes on the other (their keys in different slots).
      { name: 'reads', match: { prefix: '/shared', methods: ['GET', 'HEAD'] }, upstream: 'up', cache: {} },
      { name: 'writes', match: { prefix: '/shared', methods: ['POST', 'PUT', 'PATCH', 'DELETE'] }, upstream: 'up', cache: {} },
    ],
  };
  [a, b] = await Promise.all([startGateway(config as never), startGateway(config as never)]);
});
t.teardown(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await cluster?.close();
  await up?.close();
});

// The Host header is part of the key: both instances are addressed as one service.
const get = (gw: TestGateway, path: string, headers: Record<string, string> = {}): Promise<Answer> => call(gw.url, path, { headers: { host: 'api.example', ...headers } });
const xc = (r: Answer) => r.headers['x-cache'];
const purge = (gw: TestGateway, q: string) => call(gw.adminUrl, `/admin/cache/purge?${q}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });

t.test('miss then hit, shared by both instances, without touching the upstream again', async (t) => {
  const first = await get(a, '/plain/one?x=1');
  t.equal(first.status, 200);
  t.equal(xc(first), 'MISS');
  const again = await get(a, '/plain/one?x=1');
  t.equal(xc(again), 'HIT');
  t.equal(again.body, first.body);
  const other = await get(b, '/plain/one?x=1');
  t.equal(other.status, 200);
  t.equal(xc(other), 'HIT', 'instance b finds the entry instance a stored');
  t.equal(other.body, first.body);
  t.equal(other.headers['content-type'], 'application/json');
  t.match(other.headers.age, /^\d+$/);
  const head = await call(b.url, '/plain/one?x=1', { method: 'HEAD', headers: { host: 'api.example' } });
  t.equal(head.status, 200);
  t.equal(xc(head), 'HIT', 'HEAD uses the GET entry');
  t.equal(head.body, '');
  t.equal(up.count('/plain/one'), 1);
});

t.test('rate-limited cached route: hits take tokens (countHits), and the exact limit holds across instances', async (t) => {
  const ip = { 'x-forwarded-for': '10.1.0.1' };
  const seen: Answer[] = [];
  for (let i = 0; i < 6; i++) seen.push(await get(i % 2 === 0 ? a : b, '/limited/x', ip));
  t.same(
    seen.map((r) => r.status),
    [200, 200, 200, 200, 200, 429],
  );
  t.same(
    seen.slice(0, 5).map(xc),
    ['MISS', 'HIT', 'HIT', 'HIT', 'HIT'],
  );
  t.same(
    seen.slice(0, 5).map((r) => r.headers['x-ratelimit-remaining']),
    ['4', '3', '2', '1', '0'],
    'every hit consumed a token',
  );
  t.equal(seen[1].body, seen[0].body);
  t.match(seen[5].headers['retry-after'], /^\d+$/);
  t.equal(up.count('/limited/x'), 1);

  // 100 concurrent requests for the cached URL from one client, over both instances: exactly 5 admitted.
  const shots = await fire([a.url, b.url], 100, '/limited/x', { timeoutMs: 30000, headers: () => ({ host: 'api.example', 'x-forwarded-for': '10.1.0.2' }) });
  t.same(countBy(shots, (s) => s.status), { 200: 5, 429: 95 });
  t.same(countBy(shots.filter((s) => s.status === 200), (s) => String(s.headers['x-cache'])), { HIT: 5 }, 'the admitted ones were hits');
  t.equal(up.count('/limited/x'), 1);
});

t.test('countHits false: hits are free, misses take tokens', async (t) => {
  const ip = { 'x-forwarded-for': '10.2.0.1' };
  const same: Answer[] = [];
  for (let i = 0; i < 10; i++) same.push(await get(i % 2 === 0 ? a : b, '/free/x', ip));
  t.same([...new Set(same.map((r) => r.status))], [200], 'ten requests for one URL, all answered');
  t.equal(same.filter((r) => xc(r) === 'HIT').length, 9);
  t.equal(up.count('/free/x'), 1);
  const misses: number[] = [];
  for (let i = 0; i < 5; i++) misses.push((await get(b, `/free/m${i}`, ip)).status);
  t.same(misses, [200, 200, 200, 200, 429], 'the first miss took a token: four more misses left one over');
  t.equal(xc(await get(a, '/free/x', ip)), 'HIT', 'a hit is still answered with the bucket empty');
});

t.test('a successful write through one instance invalidates the path on the other', async (t) => {
  await get(a, '/plain/inv?x=1');
  t.equal(xc(await get(b, '/plain/inv?x=1')), 'HIT');
  t.equal((await call(a.url, '/plain/inv?status=400', { method: 'POST', body: '{}', headers: { host: 'api.example' } })).status, 400);
  t.equal(xc(await get(b, '/plain/inv?x=1')), 'HIT', 'a 4xx write leaves the entry');
  t.equal((await call(a.url, '/plain/inv', { method: 'PUT', body: '{}', headers: { host: 'api.example' } })).status, 200);
  t.equal(xc(await get(b, '/plain/inv?x=1')), 'MISS', 'instance b no longer serves it');
  t.equal(xc(await get(a, '/plain/inv?x=1')), 'HIT', 'and instance a gets the refreshed entry');
  t.equal(up.count('/plain/inv'), 4);
});

t.test('a write on one cached route invalidates the entries another route holds for the path', async (t) => {
  await get(a, '/shared/doc');
  t.equal(xc(await get(b, '/shared/doc')), 'HIT');
  t.equal((await call(b.url, '/shared/doc', { method: 'DELETE', headers: { host: 'api.example' } })).status, 200);
  t.equal(xc(await get(a, '/shared/doc')), 'MISS', 'the reads route no longer serves the path the writes route changed');
  t.equal(up.count('/shared/doc'), 3);
});

t.test('admin purge by prefix, exact path and route, seen by both instances', async (t) => {
  const paths = ['/plain/pp/a', '/plain/pp/b/c', '/plain/ppx', '/docs/pp/a', '/docs/keep'];
  for (const p of paths) t.equal(xc(await get(a, p)), 'MISS');
  for (const p of paths) t.equal(xc(await get(b, p)), 'HIT', `${p} cached`);

  t.equal((await call(a.adminUrl, '/admin/cache/purge?prefix=/plain/pp', { method: 'POST' })).status, 401, 'the admin token is required');
  const r = await purge(a, 'prefix=/plain/pp');
  t.equal(r.status, 200);
  t.same(r.json(), { purged: { prefix: '/plain/pp' } });
  t.equal(xc(await get(b, '/plain/pp/a')), 'MISS');
  t.equal(xc(await get(b, '/plain/pp/b/c')), 'MISS');
  t.equal(xc(await get(b, '/plain/ppx')), 'HIT', 'a prefix purges at segment boundaries');
  t.equal(xc(await get(b, '/docs/pp/a')), 'HIT', 'other routes keep their entries');

  t.equal((await purge(b, 'path=/docs/pp/a')).status, 200);
  t.equal(xc(await get(a, '/docs/pp/a')), 'MISS');
  t.equal(xc(await get(a, '/docs/keep')), 'HIT');

  t.equal((await purge(a, 'route=docs')).status, 200);
  t.equal(xc(await get(b, '/docs/keep')), 'MISS', 'the route purge reached the route');
  t.equal(xc(await get(b, '/plain/ppx')), 'HIT', 'and only that route');

  // A prefix spanning routes: every route's own generation keys are bumped.
  t.equal((await purge(b, 'prefix=/')).status, 200);
  t.equal(xc(await get(a, '/plain/ppx')), 'MISS');
  t.equal(xc(await get(a, '/docs/keep')), 'MISS');
  t.equal(xc(await get(a, '/plain/one?x=1')), 'MISS');
  t.equal((await purge(a, 'route=nope')).status, 400);
  t.equal(up.count('/plain/pp/a'), 2);
  t.equal(up.count('/plain/ppx'), 2);
  t.equal(up.count('/docs/keep'), 3);
});

t.test('Vary: each variant has its own entry, found by the other instance', async (t) => {
  const path = '/plain/var?vary=Accept-Language';
  const en = await get(a, path, { 'accept-language': 'en' });
  const fr = await get(a, path, { 'accept-language': 'fr' });
  t.equal(xc(en), 'MISS');
  t.equal(xc(fr), 'MISS');
  t.not(en.body, fr.body);
  const bEn = await get(b, path, { 'accept-language': 'en' });
  t.equal(xc(bEn), 'HIT');
  t.equal(bEn.body, en.body);
  const bFr = await get(b, path, { 'accept-language': 'fr' });
  t.equal(xc(bFr), 'HIT');
  t.equal(bFr.body, fr.body);
  t.equal((bFr.json() as { lang: string }).lang, 'fr');
  t.equal(xc(await get(b, path, { 'accept-language': 'de' })), 'MISS', 'a third value is a third variant');
  t.equal(up.count('/plain/var'), 3);
});

// Every rule the memory and standalone stores keep, on the cluster (its own gateway and key prefix).
t.test('the cache rules of every store', (t) =>
  cacheBehaviour(t, () => ({ type: 'redis', redis: { mode: 'cluster', nodes: [cluster.nodes[1]], keyPrefix: 'cb:', timeoutMs: 5000 } })),
);

t.test('each route keeps its cache keys in one slot; routes spread over the masters; no Redis error', async (t) => {
  const nodes = cluster.ports.map((port) => new Redis(port));
  t.teardown(() => nodes.forEach((n) => n.disconnect()));
  const keysOf = async (n: Redis, route: string): Promise<string[]> => {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await n.scan(cursor, 'MATCH', `${PREFIX}{c:${route}}*`, 'COUNT', 1000);
      out.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return out;
  };
  const homes = new Set<number>();
  for (const route of ['plain', 'docs', 'limited', 'free', 'reads', 'writes']) {
    const perNode = await Promise.all(nodes.map((n) => keysOf(n, route)));
    const holding = perNode.flatMap((keys, i) => (keys.length > 0 ? [i] : []));
    t.equal(holding.length, 1, `route ${route}: its cache keys on one master`);
    const keys = perNode[holding[0]];
    t.ok(keys.includes(`${PREFIX}{c:${route}}clock`), `route ${route}: its own clock`);
    // The writes route only ever answered writes: it holds generations, no entry.
    t.equal(keys.some((k) => k.startsWith(`${PREFIX}{c:${route}}e:`)), route !== 'writes', `route ${route}: entries next to its clock`);
    const slots = new Set(await Promise.all(keys.map((k) => nodes[0].cluster('KEYSLOT', k) as Promise<number>)));
    t.equal(slots.size, 1, `route ${route}: ${keys.length} keys, one slot`);
    homes.add(holding[0]);
  }
  t.ok(homes.size > 1, `the routes' caches spread over ${homes.size} masters`);
  const sizes = await Promise.all(nodes.map((n) => n.dbsize()));
  t.ok(sizes.filter((s) => s > 0).length > 1, `keys on more than one master (${sizes.join(', ')})`);

  const kinds: Record<string, number> = {};
  for (const gw of [a, b]) {
    const m = (await call(gw.adminUrl, '/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
    for (const k of ERROR_KINDS) kinds[k] = (kinds[k] ?? 0) + metric(m, 'gateway_redis_errors_total', { kind: k });
    t.equal(metric(m, 'gateway_cache_requests_total', { result: 'bypass' }), 0, 'the store answered every lookup');
    t.equal(metric(m, 'gateway_ratelimit_decisions_total', { result: 'failed_open' }), 0);
  }
  t.same(kinds, Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])), 'no Redis error of any kind (CROSSSLOT would count as cluster)');
  t.ok([a, b].every((g) => g.logs.every((l) => levelOf(l) < 50)), 'no error logged');
});
