import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';
import t from 'tap';
import YAML from 'yaml';
import { bytes, headerValues, makeKey, mint, now } from './helpers/auth';
import { levelOf, startGateway, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startRedis } from './helpers/redis';
import { startUpstream } from './helpers/upstream';
import { keysCommand } from '../src/plugins/auth/keys-cli';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
const SECRET = 'jwt-secret-for-api-key-tests-0123456789';

const admin = (extra: Record<string, string> = {}) => ({ authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', ...extra });

/** `gateway keys ...` as a real process (slow to start under tsx: used once, for the wiring). */
const spawnCli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'src', 'main.ts'), 'keys', ...args], { encoding: 'utf8' });

/** The same command in-process, with the exit status and output main.ts would give. */
async function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  try {
    await keysCommand(args, (s) => (stdout += s));
    return { status: 0, stdout, stderr: '' };
  } catch (err) {
    return { status: 1, stdout, stderr: (err as Error).message };
  }
}

t.test('memory store: keys from the configuration, expiry, rotation, stripping, identity', async (t) => {
  const up = await startUpstream();
  const alice1 = makeKey();
  const alice2 = makeKey();
  const bobOld = makeKey();
  const carol = makeKey();
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET }, apiKeys: { query: 'api_key' } },
    consumers: [
      { id: 'alice', roles: ['reader', 'writer'], apiKeys: [{ prefix: alice1.prefix, sha256: alice1.sha256 }, { prefix: alice2.prefix, sha256: alice2.sha256, expires: '2999-01-01T00:00:00Z' }] },
      { id: 'bob', apiKeys: [{ prefix: bobOld.prefix, sha256: bobOld.sha256, created: '2020-01-01T00:00:00Z', expires: '2021-01-01T00:00:00Z' }] },
      { id: 'carol', routes: ['both'], apiKeys: [{ prefix: carol.prefix, sha256: carol.sha256 }] },
    ],
    routes: [
      { name: 'keys', match: { prefix: '/keys' }, upstream: 'up', auth: { methods: ['apiKey'] } },
      { name: 'both', match: { prefix: '/both' }, upstream: 'up', auth: { methods: ['apiKey', 'jwt'] } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const twoSpellings = await call(gw.url, '/keys/x', { headers: { 'X-API-Key': alice1.key, X_API_Key: 'spoofed-copy' } });
  t.equal(twoSpellings.status, 400, 'the key header in two spellings is refused before authentication');
  let res = await call(gw.url, '/keys/x', { headers: { 'X-API-Key': alice1.key, 'x-consumer-id': 'mallory' } });
  t.equal(res.status, 200);
  const raw = up.seen.at(-1)!.rawHeaders;
  t.same(headerValues(raw, 'x-consumer-id'), ['alice'], 'the consumer of the key, once');
  t.same(headerValues(raw, 'x-user-roles'), ['reader,writer']);
  t.same(headerValues(raw, 'x-user-id'), [], 'an API key has no user');
  t.same(headerValues(raw, 'x-api-key'), [], 'the key (and any "_" spelling) is not forwarded');
  t.equal((await call(gw.url, '/keys/x', { headers: { 'x-api-key': alice2.key } })).status, 200, 'a second active key (rotation)');

  res = await call(gw.url, '/keys/x', { headers: { 'x-api-key': bobOld.key } });
  t.equal(res.status, 401, 'expired key');
  t.equal(res.json().detail, 'the API key has expired');
  t.equal(res.headers['www-authenticate'], 'ApiKey realm="gateway", header="X-API-Key", error="invalid_key"');
  const unknown = makeKey();
  for (const [what, key] of [['unknown key', unknown.key], ['garbage', 'hello'], ['prefix only', alice1.prefix], ['key with a suffix', `${alice1.key}x`], ['two keys', `${alice1.key}, ${alice2.key}`]]) {
    res = await call(gw.url, '/keys/x', { headers: { 'x-api-key': key } });
    t.equal(res.status, 401, what);
  }
  res = await call(gw.url, '/keys/x');
  t.equal(res.status, 401, 'no key');
  t.equal(res.headers['www-authenticate'], 'ApiKey realm="gateway", header="X-API-Key"');

  res = await call(gw.url, `/keys/x?a=1&api_key=${alice1.key}`);
  t.equal(res.status, 200, 'key from the configured query parameter');
  t.equal(up.seen.at(-1)!.url, '/keys/x?a=1', 'and removed from the forwarded query');

  t.equal((await call(gw.url, '/keys/x', { headers: { 'x-api-key': carol.key } })).status, 403, 'consumer limited to other routes');
  t.equal((await call(gw.url, '/both/x', { headers: { 'x-api-key': carol.key } })).status, 200);
  const token = await mint({ sub: 'jwt-user', exp: now() + 60 }, bytes(SECRET));
  t.equal((await call(gw.url, '/both/x', { headers: { authorization: `Bearer ${token}` } })).status, 200, 'either method');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-consumer-id'), ['jwt-user']);
  res = await call(gw.url, '/both/x');
  t.equal(res.headers['www-authenticate'], 'ApiKey realm="gateway", header="X-API-Key", Bearer realm="gateway"', 'both challenges, in route order');

  // The admin API lists memory-store keys but cannot change them: they live in the file.
  res = await call(gw.adminUrl, '/admin/consumers/bob/keys', { headers: admin() });
  t.equal(res.status, 200);
  t.same(res.json().keys, [{ prefix: bobOld.prefix, consumer: 'bob', created: '2020-01-01T00:00:00.000Z', expires: '2021-01-01T00:00:00.000Z', expired: true }]);
  res = await call(gw.adminUrl, '/admin/consumers/bob/keys', { method: 'POST', headers: admin(), body: '{}' });
  t.equal(res.status, 409);
  t.equal(res.json().code, 'KEY_STORE_READ_ONLY');
  t.equal((await call(gw.adminUrl, `/admin/keys/${alice1.prefix}`, { method: 'DELETE', headers: admin() })).status, 409);
  t.equal((await call(gw.url, '/keys/x', { headers: { 'x-api-key': alice1.key } })).status, 200, 'the key still works');
});

t.test('admin API: the admin token is required and compared exactly', async (t) => {
  const gw = await startGateway({ admin: { token: ADMIN_TOKEN }, consumers: [{ id: 'alice' }] });
  const noToken = await startGateway({ consumers: [{ id: 'alice' }] });
  t.teardown(async () => {
    await gw.close();
    await noToken.close();
  });
  for (const [what, headers] of [
    ['no token', {}],
    ['wrong token', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}x` }],
    ['token prefix', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, 10)}` }],
    ['longer token', { authorization: `Bearer ${ADMIN_TOKEN}0` }],
    ['other scheme', { authorization: `Basic ${ADMIN_TOKEN}` }],
  ] as [string, Record<string, string>][]) {
    const res = await call(gw.adminUrl, '/admin/consumers/alice/keys', { headers });
    t.equal(res.status, 401, what);
    t.equal(res.json().code, 'UNAUTHENTICATED', what);
  }
  t.equal((await call(gw.adminUrl, '/admin/consumers/alice/keys', { headers: admin() })).status, 200);
  t.equal((await call(gw.adminUrl, '/admin/consumers/nobody/keys', { headers: admin() })).status, 404);
  t.equal((await call(noToken.adminUrl, '/admin/consumers/alice/keys', { headers: admin() })).status, 404, 'no admin.token: no admin API');
  t.equal((await call(gw.adminUrl, '/healthz')).status, 200, 'probes need no token');
});

t.test('memory store CLI: create, list and revoke edit the configuration file; a reload applies them', async (t) => {
  const up = await startUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'gw-keys-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    [
      '# keys live here',
      `admin: { token: ${ADMIN_TOKEN} }`,
      'upstreams:',
      `  up: { targets: [${up.url}] }`,
      'routes:',
      '  - { name: r, match: { prefix: /r }, upstream: up, auth: { methods: [apiKey] } }',
      'consumers:',
      '  - id: alice # the first consumer',
      '    roles: [reader]',
      '',
    ].join('\n'),
  );
  const created = spawnCli('create', 'alice', '--expires', '30d', '--config', file);
  t.equal(created.status, 0, created.stderr);
  const key = /key: +(gk_\S+)/.exec(created.stdout)?.[1] ?? '';
  const prefix = /prefix: +(gk_\S+)/.exec(created.stdout)?.[1] ?? '';
  t.match(key, /^gk_[a-z2-7]{8}_[A-Za-z0-9_-]{43}$/);
  const text = readFileSync(file, 'utf8');
  t.notOk(text.includes(key), 'the key itself is not in the file');
  t.ok(text.includes(createHash('sha256').update(key).digest('hex')), 'its SHA-256 is');
  t.match(text, /# the first consumer/, 'comments survive');

  const gw = await startGateway(YAML.parse(text) as TestConfig, {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const use = (k: string) => call(gw.url, '/r/x', { headers: { 'x-api-key': k } }).then((r) => r.status);
  const reload = () => call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => r.status);
  t.equal(await use(key), 200, 'the created key works');

  const list = await cli('list', 'alice', '--config', file);
  t.equal(list.status, 0, list.stderr);
  t.match(list.stdout, new RegExp(`${prefix} .* active`));
  t.equal((await cli('list', 'nobody', '--config', file)).status, 1);
  t.equal((await cli('create', 'alice', '--expires', '2001-01-01', '--config', file)).status, 1, 'expiry in the past');

  const second = await cli('create', 'alice', '--config', file);
  const key2 = /key: +(gk_\S+)/.exec(second.stdout)?.[1] ?? '';
  t.equal(await use(key2), 401, 'a new key needs a reload');
  t.equal(await reload(), 200);
  t.equal(await use(key2), 200, 'the new key works after the reload');
  t.equal(await use(key), 200, 'and the first one still does (rotation)');

  const revoked = await cli('revoke', prefix, '--config', file);
  t.equal(revoked.status, 0, revoked.stderr);
  t.notOk(readFileSync(file, 'utf8').includes(prefix), 'the key is gone from the file');
  t.equal(await reload(), 200);
  t.equal(await use(key), 401, 'the revoked key is refused after the reload');
  t.equal(await use(key2), 200);
  const again = await cli('revoke', prefix, '--config', file);
  t.equal(again.status, 1);
  t.match(again.stderr, /no key with prefix/);
  t.equal((await cli('bogus', '--config', file)).status, 1);
});

t.test('redis store: admin lifecycle, shared by replicas, revocation seen everywhere within a second', async (t) => {
  const redis = await startRedis();
  const up = await startUpstream();
  const config = (extra: Record<string, unknown> = {}): TestConfig => ({
    admin: { token: ADMIN_TOKEN },
    upstreams: { up: { targets: [up.url] } },
    auth: { apiKeys: { store: 'redis', redis: { url: redis.url, keyPrefix: 'test:auth:', commandTimeoutMs: 1000 }, ...extra } },
    consumers: [{ id: 'alice', roles: ['reader'] }, { id: 'bob' }],
    routes: [{ name: 'keys', match: { prefix: '/keys' }, upstream: 'up', auth: { methods: ['apiKey'] } }],
  });
  const gw1 = await startGateway(config());
  // Replica 2 caches lookups for 900 ms: a revocation it sees sooner came over pub/sub.
  const gw2 = await startGateway(config({ cacheMs: 900 }));
  const probe = new Redis(redis.url);
  t.teardown(async () => {
    probe.disconnect();
    await gw1.close();
    await gw2.close();
    await up.close();
    await redis.close();
  });
  const use = (gw: TestGateway, key: string) => call(gw.url, '/keys/x', { headers: { 'x-api-key': key } }).then((r) => r.status);

  let res = await call(gw1.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin(), body: '{"expires":"90d"}' });
  t.equal(res.status, 201, res.body + JSON.stringify(gw1.logs.filter((l) => levelOf(l) >= 40)));
  t.equal(res.headers['cache-control'], 'no-store');
  const k1 = res.json<{ key: string; prefix: string; expires: string; consumer: string }>();
  t.equal(k1.consumer, 'alice');
  t.ok(Date.parse(k1.expires) > Date.now() + 89 * 86_400_000, 'expires in 90 days');
  res = await call(gw2.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin() });
  t.equal(res.status, 201, 'no body: a key that never expires');
  const k2 = res.json<{ key: string; prefix: string; expires: null }>();
  t.equal(k2.expires, null);

  const stored = await probe.keys('test:auth:*');
  t.notOk((await Promise.all(stored.map((k) => probe.type(k).then((type) => (type === 'string' ? probe.get(k) : probe.smembers(k).then((m) => m.join(','))))))).join('\n').includes(k1.key), 'Redis never holds a plain key');

  t.equal(await use(gw1, k1.key), 200, 'replica 1 accepts the key');
  t.equal(await use(gw2, k1.key), 200, 'replica 2 accepts the key');
  t.equal(await use(gw2, k2.key), 200, 'both keys active (rotation)');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-consumer-id'), ['alice']);

  res = await call(gw2.adminUrl, '/admin/consumers/alice/keys', { headers: admin() });
  t.same(res.json<{ keys: { prefix: string }[] }>().keys.map((k) => k.prefix).sort(), [k1.prefix, k2.prefix].sort(), 'listing on either replica');
  t.notOk(res.body.includes(k1.key), 'the listing never shows a key');
  t.equal((await call(gw1.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin(), body: '{"expires":"2000-01-01"}' })).status, 400);
  t.equal((await call(gw1.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin(), body: '{"expires":5}' })).status, 400);
  t.equal((await call(gw1.adminUrl, '/admin/consumers/nobody/keys', { method: 'POST', headers: admin() })).status, 404);
  t.equal((await call(gw1.adminUrl, '/admin/keys/gk_aaaaaaaa', { method: 'DELETE', headers: admin() })).status, 404);
  t.equal((await call(gw1.adminUrl, '/admin/keys/not-a-prefix', { method: 'DELETE', headers: admin() })).status, 400);

  // Both replicas have the key freshly cached; revoke through replica 1 and watch replica 2.
  await sleep(1000);
  t.equal(await use(gw1, k1.key), 200);
  t.equal(await use(gw2, k1.key), 200);
  const revokedAt = Date.now();
  t.equal((await call(gw1.adminUrl, `/admin/keys/${k1.prefix}`, { method: 'DELETE', headers: admin() })).status, 204);
  t.equal(await use(gw1, k1.key), 401, 'the revoking replica refuses at once');
  let seenAfter = -1;
  while (Date.now() - revokedAt < 3000) {
    if ((await use(gw2, k1.key)) === 401) {
      seenAfter = Date.now() - revokedAt;
      break;
    }
    await sleep(20);
  }
  t.ok(seenAfter >= 0 && seenAfter < 1000, `replica 2 refuses the revoked key within a second (after ${seenAfter} ms)`);
  t.ok(seenAfter >= 0 && seenAfter < 600, `pushed over pub/sub, not waiting for its 900 ms cache (after ${seenAfter} ms)`);
  t.equal(await use(gw2, k2.key), 200, 'the other key still works');

  // Without the pub/sub message (a key deleted behind the gateway's back) the cache bound still holds.
  t.equal(await use(gw1, k2.key), 200);
  const hash = createHash('sha256').update(k2.key).digest('hex');
  const deletedAt = Date.now();
  await probe.del(`test:auth:key:${hash}`);
  let gone = -1;
  while (Date.now() - deletedAt < 3000) {
    if ((await use(gw1, k2.key)) === 401) {
      gone = Date.now() - deletedAt;
      break;
    }
    await sleep(20);
  }
  t.ok(gone >= 0 && gone < 1000, `without an invalidation message the key is refused within a second (after ${gone} ms)`);

  // An expiry set in Redis is honoured by the gateway even before Redis drops the key.
  const k3 = await call(gw1.adminUrl, '/admin/consumers/bob/keys', { method: 'POST', headers: admin() }).then((r) => r.json<{ key: string; prefix: string }>());
  const h3 = createHash('sha256').update(k3.key).digest('hex');
  const rec = JSON.parse((await probe.get(`test:auth:key:${h3}`))!) as Record<string, unknown>;
  await probe.set(`test:auth:key:${h3}`, JSON.stringify({ ...rec, expires: Date.now() - 1000 }));
  await sleep(700);
  res = await call(gw1.url, '/keys/x', { headers: { 'x-api-key': k3.key } });
  t.equal(res.status, 401);
  t.equal(res.json().detail, 'the API key has expired');

  // The command line works against the same store.
  const dir = mkdtempSync(join(tmpdir(), 'gw-keys-redis-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, YAML.stringify(config()));
  const created = await cli('create', 'bob', '--config', file);
  t.equal(created.status, 0, created.stderr);
  const cliKey = /key: +(gk_\S+)/.exec(created.stdout)![1];
  const cliPrefix = /prefix: +(gk_\S+)/.exec(created.stdout)![1];
  t.equal(await use(gw2, cliKey), 200, 'a key created by the CLI works on a running replica');
  t.match((await cli('list', 'bob', '--config', file)).stdout, new RegExp(cliPrefix));
  t.equal((await cli('revoke', cliPrefix, '--config', file)).status, 0);
  await sleep(50);
  t.equal(await use(gw2, cliKey), 401, 'revoked from the CLI');
});

t.test('redis store down or hung: 503 AUTH_UNAVAILABLE, never 500; recovers when Redis returns', async (t) => {
  const redis = await startRedis();
  const up = await startUpstream();
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    upstreams: { up: { targets: [up.url] } },
    auth: { apiKeys: { store: 'redis', cacheMs: 100, redis: { url: redis.url, commandTimeoutMs: 500, connectTimeoutMs: 500 } } },
    consumers: [{ id: 'alice' }],
    routes: [{ name: 'keys', match: { prefix: '/keys' }, upstream: 'up', auth: { methods: ['apiKey'] } }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await redis.close();
  });
  const create = () =>
    call(gw.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin() }).then((r) => (r.status === 201 ? r.json<{ key: string }>().key : ''));
  const use = (key: string) => call(gw.url, '/keys/x', { headers: { 'x-api-key': key } });
  const key = await create();
  t.equal((await use(key)).status, 200);

  redis.pause();
  await sleep(150);
  const started = Date.now();
  let res = await use(key);
  t.equal(res.status, 503, 'hung Redis');
  t.equal(res.json().code, 'AUTH_UNAVAILABLE');
  t.ok(Date.now() - started < 2000, 'answered within the command timeout, not hung');
  t.equal((await call(gw.adminUrl, '/admin/consumers/alice/keys', { method: 'POST', headers: admin() })).status, 503, 'admin: store unavailable');
  redis.resume();

  await redis.kill();
  await sleep(150);
  res = await use(key);
  t.equal(res.status, 503, 'Redis down');
  t.equal(res.json().code, 'AUTH_UNAVAILABLE');
  t.equal(up.seen.length, 1, 'nothing reached the upstream while the store was down');

  await redis.restart();
  let fresh = '';
  for (let i = 0; i < 50 && fresh === ''; i++) {
    await sleep(100);
    fresh = await create().catch(() => '');
  }
  t.ok(fresh, 'the admin API works again once Redis is back');
  t.equal((await use(fresh)).status, 200, 'lookups work again');
});
