import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { configHash } from '../src/observability/gateway-info';
import { startCli } from './helpers/cli';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { freePort } from './helpers/redis';
import { startUpstream } from './helpers/upstream';

const TOKEN = 'admin-token-0123456789abcdef';
const OPS_TOKEN = 'ops-token-0123456789abcdefgh';
const auth = (token = TOKEN) => ({ authorization: `Bearer ${token}` });

function configFile(): { file: string; write(cfg: TestConfig): void } {
  const file = join(mkdtempSync(join(tmpdir(), 'gw-admin-')), 'gateway.yaml');
  return { file, write: (cfg) => writeFileSync(file, JSON.stringify(withTestDefaults(cfg))) };
}

t.test('admin API needs a valid token; probes and metrics stay open', async (t) => {
  const gw = await startGateway({ admin: { token: TOKEN, tokens: [{ id: 'ops', token: OPS_TOKEN }] }, routes: [] });
  t.teardown(() => gw.close());
  for (const path of ['/admin/config', '/admin/routes', '/admin/upstreams', '/admin/consumers']) {
    const none = await call(gw.adminUrl, path);
    t.equal(none.status, 401, `${path} without a token`);
    t.equal(none.headers['www-authenticate'], 'Bearer realm="gateway-admin"');
    t.equal(none.json().code, 'UNAUTHENTICATED');
    t.equal((await call(gw.adminUrl, path, { headers: auth('admin-token-0123456789abcdeX') })).status, 401, `${path} with a wrong token`);
    t.equal((await call(gw.adminUrl, path, { headers: auth(TOKEN.slice(0, 10)) })).status, 401, `${path} with a prefix of the token`);
    t.equal((await call(gw.adminUrl, path, { headers: { authorization: TOKEN } })).status, 401, `${path} without the Bearer scheme`);
    t.equal((await call(gw.adminUrl, path, { headers: auth() })).status, 200, `${path} with the token`);
    t.equal((await call(gw.adminUrl, path, { headers: auth(OPS_TOKEN) })).status, 200, `${path} with a named token`);
  }
  t.equal((await call(gw.adminUrl, '/healthz')).status, 200);
  t.equal((await call(gw.adminUrl, '/readyz')).status, 200);
  t.equal((await call(gw.adminUrl, '/metrics')).status, 200);
});

t.test('without a token the admin API is off; metrics can require the token', async (t) => {
  const off = await startGateway({ routes: [] });
  t.equal((await call(off.adminUrl, '/admin/config', { headers: auth() })).status, 404);
  await off.close();
  const closed = await startGateway({ admin: { token: TOKEN, metricsPublic: false }, routes: [] });
  t.equal((await call(closed.adminUrl, '/metrics')).status, 401);
  t.equal((await call(closed.adminUrl, '/metrics', { headers: auth() })).status, 200);
  await closed.close();
});

t.test('secrets never appear in the config dump', async (t) => {
  const gw = await startGateway(
    {
      admin: { token: '${ADMIN_TOKEN}', tokens: [{ id: 'ci', token: 'ci-secret-token-value-123' }] },
      upstreams: { up: { targets: ['http://127.0.0.1:1'] } },
      routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
    },
    { ADMIN_TOKEN: TOKEN },
  );
  t.teardown(() => gw.close());
  const dump = await call(gw.adminUrl, '/admin/config', { headers: auth() });
  t.equal(dump.status, 200);
  t.notMatch(dump.body, TOKEN);
  t.notMatch(dump.body, 'ci-secret-token-value-123');
  t.match(dump.body, '[redacted]');
  t.equal(dump.json<{ routes: { name: string }[] }>().routes[0].name, 'r');
});

t.test('zero-drop hot reload: 10 reloads with route changes under continuous load', async (t) => {
  const a = await startUpstream();
  const b = await startUpstream();
  let connectionsToA = 0;
  a.server.on('connection', (_s: Socket) => connectionsToA++);
  const { file, write } = configFile();
  const base = (i: number): TestConfig => ({
    admin: { token: TOKEN },
    upstreams: { a: { targets: [a.url] }, ...(i % 2 ? { b: { targets: [b.url] } } : {}) },
    routes: [
      { name: 'stable', match: { prefix: '/stable' }, upstream: 'a' },
      { name: `gen-${i}`, match: { prefix: `/gen/${i}` }, upstream: i % 2 ? 'b' : 'a' },
    ],
  });
  write(base(0));
  const gw = await startGateway(base(0), {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([a.close(), b.close()]);
  });

  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const workers = Array.from({ length: 8 }, async () => {
    while (!stop) {
      try {
        const res = await call(gw.url, '/stable/x');
        if (res.status === 200) ok++;
        else failures.push(`status ${res.status}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });
  await sleep(200);
  const connectionsBefore = connectionsToA;
  for (let i = 1; i <= 10; i++) {
    write(base(i));
    const res = await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: auth() });
    t.equal(res.status, 200, `reload ${i}`);
    const body = res.json<{ routes: { added: string[]; removed: string[] }; upstreams: { kept: string[] } }>();
    t.same(body.routes.added, [`gen-${i}`]);
    t.same(body.routes.removed, [`gen-${i - 1}`]);
    t.ok(body.upstreams.kept.includes('a'), 'the unchanged upstream keeps its pool');
    t.equal((await call(gw.url, `/gen/${i}/x`)).status, 200, `new route answers right after reload ${i}`);
    t.equal((await call(gw.url, `/gen/${i - 1}/x`)).status, 404, `removed route answers 404 after reload ${i}`);
    await sleep(50);
  }
  stop = true;
  await Promise.all(workers);
  t.same(failures, [], 'zero failed requests');
  t.ok(ok > 50, `${ok} requests served during the reloads`);
  t.ok(connectionsToA - connectionsBefore <= 20, `no reconnect storm (${connectionsToA - connectionsBefore} new connections to the kept upstream)`);
  gw.gateway.flushLogs();
  const audits = gw.logs.filter((l) => l.audit === true && l.action === 'reload' && l.result === 'applied');
  t.equal(audits.length, 10);
  t.equal(audits[0].actor, 'admin', 'audit lines name the token id');
});

t.test('an invalid reload keeps the old config serving and returns the errors', async (t) => {
  const up = await startUpstream();
  const { file, write } = configFile();
  const good: TestConfig = { admin: { token: TOKEN }, upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }] };
  write(good);
  const gw = await startGateway(good, {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  writeFileSync(file, JSON.stringify(withTestDefaults({ ...good, routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'nope' }] })));
  const res = await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' } });
  t.equal(res.status, 400);
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  t.same(res.json().errors, [{ path: 'routes[0].upstream', message: 'unknown upstream "nope"' }]);
  t.equal((await call(gw.url, '/r/1')).status, 200, 'old config still serving');
  const broken = await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: '{nope' });
  t.equal(broken.status, 400, 'a malformed admin body is a 400 problem, not a crash');
  t.equal(broken.json().code, 'BAD_REQUEST');
  gw.gateway.flushLogs();
  t.ok(gw.logs.some((l) => l.action === 'reload' && l.result === 'rejected' && JSON.stringify(l.errors).includes('routes[0].upstream')));
});

t.test('reload.watch picks up a changed file', async (t) => {
  const up = await startUpstream();
  const { file, write } = configFile();
  const cfg = (prefix: string): TestConfig => ({
    reload: { watch: true, watchIntervalMs: 100 },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix }, upstream: 'up' }],
  });
  write(cfg('/old'));
  const gw = await startGateway(cfg('/old'), {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  await sleep(150);
  write(cfg('/new'));
  let status = 0;
  for (let i = 0; i < 40 && status !== 200; i++) {
    await sleep(50);
    status = (await call(gw.url, '/new/x')).status;
  }
  t.equal(status, 200);
  t.equal((await call(gw.url, '/old/x')).status, 404);
});

t.test('SIGHUP reloads the CLI gateway', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const [port, adminPort] = [await freePort(), await freePort()];
  const { file } = configFile();
  const write = (prefix: string) =>
    writeFileSync(file, JSON.stringify({ listen: { host: '127.0.0.1', port }, admin: { port: adminPort }, shutdown: { drainDelayMs: 0 }, upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix }, upstream: 'up' }] }));
  write('/before');
  const cli = startCli(file);
  t.teardown(() => cli.child.kill('SIGKILL'));
  t.ok(await cli.waitFor('gateway listening'), cli.output());
  write('/after');
  cli.child.kill('SIGHUP');
  t.ok(await cli.waitFor('configuration reloaded', 10000), cli.output());
  t.equal((await call(`http://127.0.0.1:${port}`, '/after/x')).status, 200);
  t.equal((await call(`http://127.0.0.1:${port}`, '/before/x')).status, 404);
  t.match(cli.output(), /"actor":"SIGHUP"/);
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('GET /admin: version, uptime, configuration hash; /admin/routes shows each route\'s policies', async (t) => {
  const gw = await startGateway({
    admin: { token: TOKEN },
    auth: { jwt: { algorithms: ['HS256'], secret: 'a-test-secret-of-at-least-thirty-two-bytes' } },
    upstreams: { up: { targets: ['http://127.0.0.1:1'] } },
    routes: [
      { name: 'guarded', match: { prefix: '/g' }, upstream: 'up', auth: { methods: ['jwt'] }, rateLimit: { limits: [{ rate: 5, per: '1s' }] }, cache: { defaultTtl: 30 } },
      { name: 'bare', match: { prefix: '/b' }, upstream: 'up' },
    ],
  });
  t.teardown(() => gw.close());
  const res = await call(gw.adminUrl, '/admin', { headers: auth() });
  t.equal(res.status, 200);
  const body = res.json<{ version: string; node: string; uptimeSeconds: number; startedAt: string; config: { hash: string }; logLevel: string }>();
  t.equal(body.version, (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version);
  t.equal(body.node, process.version);
  t.type(body.uptimeSeconds, 'number');
  t.equal(body.config.hash, configHash(gw.gateway.config));
  t.equal(body.logLevel, 'info');
  t.equal((await call(gw.adminUrl, '/admin')).status, 401, 'GET /admin needs the token too');

  const routes = (await call(gw.adminUrl, '/admin/routes', { headers: auth() })).json<{ name: string; policies: Record<string, any> }[]>();
  const guarded = routes.find((r) => r.name === 'guarded')!;
  t.same(guarded.policies.auth.methods, ['jwt']);
  t.match(guarded.policies.rateLimit.limits[0], { rate: 5, per: '1s' }, 'the rate limits');
  t.equal(guarded.policies.cache.defaultTtl, 30);
  t.notOk('auth' in routes.find((r) => r.name === 'bare')!.policies, 'a route without auth shows none');
});

t.test('the log level changes at runtime and reverts on reload', async (t) => {
  const { file, write } = configFile();
  const cfg: TestConfig = { admin: { token: TOKEN }, upstreams: { dead: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'dead' }] };
  write(cfg);
  const gw = await startGateway(cfg, {}, { configFile: file });
  t.teardown(() => gw.close());
  const failures = () => {
    gw.gateway.flushLogs();
    return gw.logs.filter((l) => l.msg === 'upstream request failed').length;
  };
  const put = (body: string) => call(gw.adminUrl, '/admin/log-level', { method: 'PUT', headers: { ...auth(), 'content-type': 'application/json' }, body });
  t.equal((await call(gw.url, '/r/1')).status, 502);
  t.equal(failures(), 1, 'a warning at level info');

  const bad = await put('{"level":"loud"}');
  t.equal(bad.status, 400);
  t.match(bad.json().detail, /level must be one of fatal, error, warn, info, debug, trace, silent/);
  t.equal((await put('{"level":"error"}')).status, 200);
  t.equal((await call(gw.adminUrl, '/admin', { headers: auth() })).json().logLevel, 'error');
  t.equal((await call(gw.url, '/r/2')).status, 502);
  t.equal(failures(), 1, 'no warning at level error');
  t.ok(
    gw.logs.some((l) => l.action === 'log-level' && l.to === 'error' && l.actor === 'admin'),
    'the change is audited',
  );

  t.equal((await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: auth() })).status, 200);
  t.equal((await call(gw.adminUrl, '/admin', { headers: auth() })).json().logLevel, 'info', 'back to the configured level');
  t.equal((await call(gw.url, '/r/3')).status, 502);
  t.equal(failures(), 2, 'warnings again after the reload');
});

t.test('a target can be drained or ejected by hand and put back', async (t) => {
  const a = await startUpstream(async (_req, res) => void res.end('a'));
  const b = await startUpstream(async (_req, res) => void res.end('b'));
  const gw = await startGateway({
    admin: { token: TOKEN },
    upstreams: { up: { targets: [a.url, b.url] } },
    routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([a.close(), b.close()]);
  });
  const bodies = async (n: number) => {
    const out = new Set<string>();
    for (let i = 0; i < n; i++) {
      const res = await call(gw.url, `/r/${i}`);
      out.add(`${res.status} ${res.body.startsWith('{') ? res.json().code : res.body}`);
    }
    return [...out].sort();
  };
  const act = (target: string, action: string) => call(gw.adminUrl, `/admin/upstreams/up/targets/${target}/${action}`, { method: 'POST', headers: auth() });
  const state = async () =>
    (await call(gw.adminUrl, '/admin/upstreams', { headers: auth() })).json<{ upstreams: { targets: { url: string; manual: string | null; routable: boolean }[] }[] }>().upstreams[0].targets.map((x) => x.manual);

  t.same(await bodies(4), ['200 a', '200 b']);
  const drained = await act('0', 'drain');
  t.equal(drained.status, 200);
  t.match(drained.json(), { upstream: 'up', target: a.url, manual: 'drained', routable: false });
  t.same(await bodies(4), ['200 b'], 'a drained target gets no new requests');
  t.same(await state(), ['drained', null]);

  t.equal((await act(encodeURIComponent(b.url), 'eject')).status, 200, 'a target named by its URL');
  t.same(await state(), ['drained', 'ejected']);
  t.same(await bodies(2), ['503 UPSTREAM_UNAVAILABLE'], 'no target left');

  t.equal((await act('0', 'restore')).status, 200);
  t.equal((await act('1', 'restore')).status, 200);
  t.same(await state(), [null, null]);
  t.same(await bodies(4), ['200 a', '200 b'], 'both back in the rotation');

  t.equal((await act('7', 'drain')).status, 404, 'no such target');
  t.equal((await call(gw.adminUrl, '/admin/upstreams/nope/targets/0/drain', { method: 'POST', headers: auth() })).status, 404, 'no such upstream');
  t.equal((await act('0', 'explode')).status, 404, 'no such action');
});

t.test('wrong methods on admin endpoints get 405 with Allow; admin request ids are UUIDs', async (t) => {
  const gw = await startGateway({ admin: { token: TOKEN }, routes: [] });
  t.teardown(() => gw.close());
  for (const [method, path, allow] of [
    ['DELETE', '/admin/routes', 'GET, HEAD'],
    ['GET', '/admin/reload', 'POST'],
    ['POST', '/admin/log-level', 'PUT'],
    ['GET', '/admin/upstreams/up/targets/0/drain', 'POST'],
    ['PUT', '/admin', 'GET, HEAD'],
  ]) {
    const res = await call(gw.adminUrl, path, { method, headers: auth() });
    t.equal(res.status, 405, `${method} ${path}`);
    t.equal(res.headers.allow, allow);
    t.equal(res.json().code, 'METHOD_NOT_ALLOWED');
  }
  t.equal((await call(gw.adminUrl, '/admin/nothing-here', { headers: auth() })).status, 404, 'unknown paths stay 404');
  const res = await call(gw.adminUrl, '/admin/nothing-here', { headers: auth() });
  t.match(res.headers['x-request-id'], UUID);
  t.equal(res.json().requestId, res.headers['x-request-id']);
  const given = await call(gw.adminUrl, '/admin', { headers: { ...auth(), 'x-request-id': 'ops-42' } });
  t.equal(given.headers['x-request-id'], 'ops-42', "a sane caller's id is kept");
  const odd = await call(gw.adminUrl, '/admin', { headers: { ...auth(), 'x-request-id': 'no spaces allowed' } });
  t.match(odd.headers['x-request-id'], UUID);
});
