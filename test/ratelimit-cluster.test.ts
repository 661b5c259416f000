import Redis from 'ioredis';
import t from 'tap';
import { levelOf, startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { countBy, fire, metric } from './helpers/ratelimit';
import { startRedisCluster, type TestCluster } from './helpers/redis-cluster';
import { startUpstream, type TestUpstream } from './helpers/upstream';

let up: TestUpstream;
let cluster: TestCluster;
let gws: TestGateway[];
// A generous budget: this file is about exactness and slots; budgets have their own tests, and a
// machine shared by parallel test runs can stall a process past 1 s.
t.before(async () => {
  up = await startUpstream();
  cluster = await startRedisCluster(3);
  const config = {
    trustedProxies: ['127.0.0.1'],
    store: { type: 'redis', redis: { mode: 'cluster', nodes: [cluster.nodes[0]], keyPrefix: 'c:', timeoutMs: 5000 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [
      // Per-caller hash tag: each client's buckets on the shard of its own slot.
      { name: 'percaller', match: { prefix: '/percaller' }, upstream: 'up', rateLimit: { limits: [{ rate: 100, per: '1h' }, { rate: 1000, per: '1d' }] } },
      // A route-wide bucket next to per-IP ones: all under the route's tag, one slot, no CROSSSLOT.
      { name: 'mixed', match: { prefix: '/mixed' }, upstream: 'up', rateLimit: { limits: [{ rate: 100, per: '1h', by: 'route' }, { rate: 50, per: '1h' }] } },
    ],
  };
  gws = await Promise.all([1, 2, 3].map(() => startGateway(config as never)));
});
t.teardown(async () => {
  await Promise.all(gws.map((g) => g.close()));
  await cluster.close();
  await up.close();
});

t.test('Redis Cluster: three instances, 1000 concurrent requests, exactly 100 admitted, no CROSSSLOT', async (t) => {
  // Twenty clients behind the trusted proxy: their per-caller tags hash to slots on every shard.
  const clients = Array.from({ length: 20 }, (_, i) => `10.0.0.${i + 1}`);
  // The machine is shared: allow slow answers rather than fail on a loaded box (exactness is the claim).
  const timeoutMs = 30000;
  const shots = await fire(gws.map((g) => g.url), 1000, '/percaller/x', { timeoutMs, headers: (i) => ({ 'x-forwarded-for': clients[i % 20] }) });
  t.same(countBy(shots, (s) => s.status), { 200: 1000 }, 'per-caller buckets: 50 requests for each of 20 clients all fit in 100');

  const one = await fire(gws.map((g) => g.url), 1000, '/percaller/y', { timeoutMs, headers: () => ({ 'x-forwarded-for': '10.9.9.9' }) });
  t.same(countBy(one, (s) => s.status), { 200: 100, 429: 900 }, 'one client: exactly 100 of 1000');

  const mixed = await fire(gws.map((g) => g.url), 1000, '/mixed/x', { timeoutMs, headers: (i) => ({ 'x-forwarded-for': `10.1.${i % 10}.1` }) });
  t.same(countBy(mixed, (s) => s.status), { 200: 100, 429: 900 }, 'route-wide bucket: exactly 100 of 1000 across ten clients');

  const kinds: Record<string, number> = {};
  let failedOpen = 0;
  for (const g of gws) {
    const m = (await call(g.adminUrl, '/metrics')).body;
    for (const k of ['timeout', 'connection', 'overload', 'noscript', 'cluster', 'reply', 'other']) {
      kinds[k] = (kinds[k] ?? 0) + metric(m, 'gateway_redis_errors_total', { kind: k });
    }
    failedOpen += metric(m, 'gateway_ratelimit_decisions_total', { result: 'failed_open' });
  }
  t.same(kinds, { timeout: 0, connection: 0, overload: 0, noscript: 0, cluster: 0, reply: 0, other: 0 }, 'no Redis error of any kind (CROSSSLOT would count as cluster)');
  t.equal(failedOpen, 0, 'every request decided by the cluster');
  t.ok(gws.every((g) => g.logs.every((l) => levelOf(l) < 50)), 'no error logged');

  const nodes = cluster.ports.map((port) => new Redis(port));
  t.teardown(() => nodes.forEach((n) => n.disconnect()));
  const perNode = await Promise.all(nodes.map((n) => n.dbsize()));
  t.equal(perNode.filter((k) => k > 0).length, 3, `keys spread over all three shards (${perNode.join(', ')})`);
});
