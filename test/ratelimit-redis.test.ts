import Redis from 'ioredis';
import pino from 'pino';
import t from 'tap';
import { GatewayMetrics } from '../src/observability/metrics';
import { RedisStore } from '../src/store/redis';
import { RedisStoreSchema } from '../src/store/schema';
import { Value } from '@sinclair/typebox/value';
import { levelOf, startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { countBy, fire, metric } from './helpers/ratelimit';
import { rateLimitBehaviour } from './helpers/ratelimit-behaviour';
import { freePort, startRedis, type TestRedis } from './helpers/redis';
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

// Each subtest gets its own key prefix, so buckets never leak between tests sharing the server.
// The budget is generous here: these tests are about decisions, a burst of 1000 new connections
// on a shared 2-core machine can lag the event loop past 50 ms, and budgets have their own tests.
let n = 0;
t.test('redis store', async (t) =>
  rateLimitBehaviour(t, () => up, () => ({ type: 'redis', redis: { url: redis.url, keyPrefix: `b${n++}:`, timeoutMs: 1000 } })),
);

t.test('exactness: three gateway instances sharing one Redis admit exactly 100 of 1000 concurrent requests', async (t) => {
  const config = {
    store: { type: 'redis', redis: { url: redis.url, keyPrefix: 'x3:', timeoutMs: 1000 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'exact', match: { prefix: '/exact3' }, upstream: 'up', rateLimit: { limits: [{ rate: 100, per: '1h' }] } }],
  };
  const gws = await Promise.all([1, 2, 3].map(() => startGateway(config as never)));
  t.teardown(() => Promise.all(gws.map((g) => g.close())));
  const shots = await fire(gws.map((g) => g.url), 1000, '/exact3/x');
  t.same(countBy(shots, (s) => s.status), { 200: 100, 429: 900 });
  let allowed = 0;
  let failed = 0;
  for (const g of gws) {
    const m = (await call(g.adminUrl, '/metrics')).body;
    allowed += metric(m, 'gateway_ratelimit_decisions_total', { result: 'allowed' });
    failed += metric(m, 'gateway_ratelimit_decisions_total', { result: 'failed_open' });
  }
  t.equal(failed, 0, 'every request was decided by Redis');
  t.equal(allowed, 100, 'the three instances together admitted 100');
  t.ok(gws.every((g) => g.logs.every((l) => levelOf(l) < 50)), 'no error logged');
});

t.test('keys carry prefix, hash tag, route and limit version, and every key has a TTL', async (t) => {
  const start = (limits: unknown[]) =>
    startGateway({
      store: { type: 'redis', redis: { url: redis.url, keyPrefix: 'kt:' } },
      upstreams: { up: { targets: [up.url] } },
      routes: [
        { name: 'solo', match: { prefix: '/solo' }, upstream: 'up', rateLimit: { limits } },
        { name: 'both', match: { prefix: '/both' }, upstream: 'up', rateLimit: { limits: [{ rate: 5, per: '1m' }, { rate: 50, per: '1h', by: 'route' }] } },
      ],
    } as never);
  const gw = await start([{ rate: 5, per: '1m' }, { rate: 50, per: '1h' }]);
  await call(gw.url, '/solo');
  await call(gw.url, '/both');
  const keys = (await admin.keys('kt:*')).sort();
  t.equal(keys.length, 4);
  const solo = keys.filter((k) => k.startsWith('kt:{solo|i:127.0.0.1}'));
  t.equal(solo.length, 2, 'limits keyed alike share a per-caller hash tag');
  const both = keys.filter((k) => k.startsWith('kt:{both}'));
  t.equal(both.length, 2, 'a route-wide limit puts all buckets of the route under the route tag');
  t.ok(both.some((k) => k.endsWith('|r')) && both.some((k) => k.endsWith('|i:127.0.0.1')));
  for (const k of keys) {
    const ttl = await admin.pttl(k);
    t.ok(ttl > 0 && ttl <= 72_000, `${k} expires (${ttl} ms)`);
  }
  await gw.close();

  // The same route with a changed limit gets fresh buckets; the unchanged one keeps its count.
  const changed = await start([{ rate: 5, per: '1m' }, { rate: 60, per: '1h' }]);
  t.teardown(() => changed.close());
  const r = await call(changed.url, '/solo');
  t.match(r.headers.ratelimit, /"ip-5per1m";r=3;t=\d+, "ip-60per1h";r=59;/);
  t.equal((await admin.keys('kt:{solo*')).length, 3);
});

const quietLog = () => pino({ level: 'silent' });
const redisConfig = (over: Record<string, unknown>) => Value.Default(RedisStoreSchema, { ...over }) as never;

t.test('a script Redis refuses stops start-up with a clear error', async (t) => {
  const store = new RedisStore({ config: redisConfig({ url: redis.url }), log: quietLog(), metrics: new GatewayMetrics({ processMetrics: false }), script: 'return {1, ' });
  t.teardown(() => store.close());
  await t.rejects(store.init(), /lua\/gate\.lua was refused by Redis: ERR .*compil/i);
});

t.test('Redis down at start-up: the gateway starts, readiness reports it degraded, liveness does not care, it connects later', async (t) => {
  const port = await freePort();
  const gw = await startGateway({
    store: { type: 'redis', redis: { url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 200, reconnectMaxDelayMs: 100, timeoutMs: 400 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'late', match: { prefix: '/late' }, upstream: 'up', rateLimit: { limits: [{ rate: 1, per: '1h' }] } }],
  } as never);
  t.teardown(() => gw.close());
  const ready = await call(gw.adminUrl, '/readyz');
  t.equal(ready.status, 200, 'its only store route fails open: the replica can serve');
  t.equal(ready.json().status, 'degraded');
  t.equal(ready.json<{ checks: Record<string, boolean> }>().checks.redis, false);
  t.equal((await call(gw.adminUrl, '/healthz')).status, 200);
  const open = await call(gw.url, '/late');
  t.equal(open.status, 200, 'failMode open admits');
  t.notOk('ratelimit' in open.headers, 'no rate-limit headers without a decision');

  const late = await startRedisOn(port);
  t.teardown(() => late.close());
  let ok = false;
  for (let i = 0; i < 100 && !ok; i++) {
    ok = (await call(gw.adminUrl, '/readyz')).json().status === 'ready';
    if (!ok) await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(ok, 'ready once Redis is up');
  t.same([(await call(gw.url, '/late')).status, (await call(gw.url, '/late')).status], [200, 429]);
});

/** A redis-server on a given port (the helper picks its own). */
async function startRedisOn(port: number): Promise<{ close(): Promise<void> }> {
  const { spawn } = await import('node:child_process');
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  return {
    close: async () => {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

t.test('Sentinel mode: the primary is found through a Sentinel', async (t) => {
  const { spawn } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor gwprimary 127.0.0.1 ${redis.port} 1\n`);
  const sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  t.teardown(async () => {
    const exited = new Promise((r) => sentinel.once('exit', r));
    sentinel.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 50 });
  t.teardown(() => probe.disconnect());
  let master: unknown = null;
  for (let i = 0; i < 100 && !Array.isArray(master); i++) {
    master = await probe.call('SENTINEL', 'get-master-addr-by-name', 'gwprimary').catch(() => null);
    if (!Array.isArray(master)) await new Promise((r) => setTimeout(r, 50));
  }
  t.same(master, ['127.0.0.1', String(redis.port)], 'the Sentinel knows the primary');

  const gw = await startGateway({
    store: { type: 'redis', redis: { mode: 'sentinel', sentinels: [`127.0.0.1:${port}`], masterName: 'gwprimary', keyPrefix: 'sn:', timeoutMs: 1000 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'sn', match: { prefix: '/sn' }, upstream: 'up', rateLimit: { limits: [{ rate: 2, per: '1h' }] } }],
  } as never);
  t.teardown(() => gw.close());
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await call(gw.url, '/sn')).status);
  t.same(statuses, [200, 200, 429]);
  t.equal((await admin.keys('sn:*')).length, 1, 'the bucket lives on the primary');
});

t.test('gate calls made in one event-loop turn leave in one write, and each gets its own answer', async (t) => {
  const store = new RedisStore({ config: redisConfig({ url: redis.url, keyPrefix: 'turn:', autoPipelining: false }), log: quietLog(), metrics: new GatewayMetrics({ processMetrics: false }) });
  t.teardown(() => store.close());
  await store.init();
  const stream = (store.client as Redis).stream;
  const spec = { burst: 5, intervalUs: 3600e6 / 5, argInterval: String(3600e6 / 5), argBurst: '5' };
  const before = Number(/total_commands_processed:(\d+)/.exec(await admin.info('stats'))![1]);
  const calls = Array.from({ length: 20 }, () => store.gate({ keys: ['turn:{k}:a'], specs: [spec] }));
  t.ok(stream.writableCorked > 0, 'the connection holds its writes while the turn runs');
  t.ok(stream.writableLength > 0, 'the calls are waiting in it');
  await new Promise((r) => setImmediate(r));
  t.equal(stream.writableCorked, 0, 'and lets them go once the turn is over');
  const answers = await Promise.all(calls);
  t.equal(answers.filter((a) => a?.admitted === true).length, 5, 'exactly the burst is admitted');
  t.equal(answers.filter((a) => a?.admitted === false).length, 15);
  const after = Number(/total_commands_processed:(\d+)/.exec(await admin.info('stats'))![1]);
  t.ok(after - before >= 20, 'each call reached Redis as a command of its own');
});
