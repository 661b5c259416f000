import { mkdtempSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
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
