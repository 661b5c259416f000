import { connect } from 'node:net';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

t.test('IP rules on the socket peer: allow, deny, global and per-route override', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { ipRules: { deny: ['127.0.0.1/32'] } },
    routes: [
      { name: 'global', match: { prefix: '/global' }, upstream: 'up' },
      { name: 'open', match: { prefix: '/open' }, upstream: 'up', policies: { ipRules: {} } },
      { name: 'internal', match: { prefix: '/internal' }, upstream: 'up', policies: { ipRules: { allow: ['10.0.0.0/8', '192.168.0.0/16'] } } },
      { name: 'loopback', match: { prefix: '/loopback' }, upstream: 'up', policies: { ipRules: { allow: ['127.0.0.0/8'], deny: ['127.0.0.2'] } } },
      {
        name: 'cors',
        match: { prefix: '/cors' },
        upstream: 'up',
        policies: { ipRules: { deny: ['127.0.0.0/8'] }, cors: { origins: ['https://app.example.com'] } },
      },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const denied = await call(gw.url, '/global/x');
  t.equal(denied.status, 403, 'global deny');
  t.equal(denied.headers['content-type'], 'application/problem+json');
  t.equal(denied.json().code, 'FORBIDDEN');
  t.notMatch(denied.body, /127\.0\.0\.1/, 'the answer does not echo the address');
  t.equal((await call(gw.url, '/open/x')).status, 200, 'a route with its own (empty) rules replaces the global ones');
  t.equal((await call(gw.url, '/internal/x')).status, 403, 'not in the allow list');
  t.equal((await call(gw.url, '/loopback/x')).status, 200, 'in the allow list, not denied');
  const pf = await call(gw.url, '/cors/x', { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'GET' } });
  t.equal(pf.status, 403, 'IP rules run before CORS preflights');
  t.same(
    up.seen.map((s) => s.url),
    ['/open/x', '/loopback/x'],
    'refused requests never reached the upstream',
  );
  gw.gateway.flushLogs();
  const access = gw.logs.filter((l) => l.msg === 'request completed' && l.route === 'global');
  t.equal(access[0]?.error, 'FORBIDDEN', 'logged with its code');
});

t.test('IP rules on the client address resolved through trusted proxies (IPv4 and IPv6)', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    trustedProxies: ['127.0.0.1', '2001:db8:ffff::/48'],
    upstreams: { up: { targets: [up.url] } },
    routes: [
      {
        name: 'r',
        match: { prefix: '/' },
        upstream: 'up',
        policies: { ipRules: { deny: ['203.0.113.0/24', '2001:db8:bad::/48'] } },
      },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const xff = (v: string) => call(gw.url, '/x', { headers: { 'x-forwarded-for': v } });
  t.equal((await xff('203.0.113.9')).status, 403, 'denied IPv4 client behind a trusted proxy');
  t.equal((await xff('198.51.100.1')).status, 200);
  t.equal((await xff('2001:db8:bad::17')).status, 403, 'denied IPv6 client');
  t.equal((await xff('2001:db8:bad::17, 2001:db8:ffff::1')).status, 403, 'through a chain of trusted proxies');
  t.equal((await xff('2001:db8:900d::1')).status, 200, 'other IPv6 clients pass');
  t.equal((await xff('203.0.113.9, 198.51.100.1')).status, 200, 'the first untrusted hop is the client: a forged left part is ignored');
});

function rawGet(port: number, host: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, host, () => s.write(`GET ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

t.test('IPv6 deny rule on a listener bound to ::1', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    listen: { host: '::1' },
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'deny6', match: { prefix: '/deny6' }, upstream: 'up', policies: { ipRules: { deny: ['::1/128'] } } },
      { name: 'deny6range', match: { prefix: '/range' }, upstream: 'up', policies: { ipRules: { deny: ['::/8'] } } },
      { name: 'allow6', match: { prefix: '/allow6' }, upstream: 'up', policies: { ipRules: { allow: ['::1'] } } },
      { name: 'only4', match: { prefix: '/only4' }, upstream: 'up', policies: { ipRules: { allow: ['0.0.0.0/0'] } } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.match(await rawGet(gw.port, '::1', '/deny6/x'), /^HTTP\/1\.1 403 /, 'IPv6 peer denied by address');
  t.match(await rawGet(gw.port, '::1', '/range/x'), /^HTTP\/1\.1 403 /, 'IPv6 peer denied by range');
  t.match(await rawGet(gw.port, '::1', '/allow6/x'), /^HTTP\/1\.1 200 /, 'IPv6 peer allowed');
  t.match(await rawGet(gw.port, '::1', '/only4/x'), /^HTTP\/1\.1 403 /, 'an IPv4-only allow list refuses IPv6 peers');
  t.same(up.seen.map((s) => s.url), ['/allow6/x']);
});

t.test('policies follow a hot reload; listener limits are reported as needing a restart', async (t) => {
  const up = await startUpstream();
  const base: TestConfig = { upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }] };
  const gw = await startGateway(base);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await call(gw.url, '/r/x')).status, 200);
  const reload = (policies: Record<string, unknown>) =>
    gw.gateway.reload(parseConfig(withTestDefaults({ ...base, policies }), { env: {} }), 'test');

  const bodyOnly = await reload({ limits: { maxBodyBytes: 10 } });
  t.same(bodyOnly.restartRequired, [], 'the body limit reloads without a restart');
  t.equal((await call(gw.url, '/r/x', { method: 'POST', body: 'x'.repeat(11) })).status, 413, 'and applies at once');

  const denied = await reload({ ipRules: { deny: ['127.0.0.0/8'] }, limits: { maxBodyBytes: 10, headersTimeoutMs: 1000 } });
  t.equal((await call(gw.url, '/r/x')).status, 403, 'the new IP rules apply to the next request');
  t.same(denied.restartRequired, ['policies.limits'], 'the head timeout is a listener option');
  const silent = await reload({ ipRules: { deny: ['127.0.0.0/8'] }, limits: { maxBodyBytes: 10, headersTimeoutMs: 1000, firstByteTimeoutMs: 500 } });
  t.same(silent.restartRequired, ['policies.limits'], 'so is the silent-connection timeout');
});
