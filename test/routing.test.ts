import t from 'tap';
import { hasPathParameters, normalizePath } from '../src/routing/normalize';
import { Router, hostName } from '../src/routing/router';
import type { RouteConfig } from '../src/config/schema';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

t.test('normalisation resolves dot segments, encoded dots and slashes, and empty segments', async (t) => {
  const cases: [string, string | null][] = [
    ['/api/users/123', '/api/users/123'],
    ['/api/users/../admin', '/api/admin'],
    ['/api/users/%2e%2e/admin', '/api/admin'],
    ['/api/users/%2E%2E/admin', '/api/admin'],
    ['/api/users/..%2fadmin', '/api/admin'],
    ['/api/users/..%2Fadmin', '/api/admin'],
    ['/api/users/..%5cadmin', '/api/admin'],
    ['/api/users\\..\\admin', '/api/admin'],
    ['/api//users///1', '/api/users/1'],
    ['/api/./users/./1', '/api/users/1'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/api/users/', '/api/users/'],
    ['/api/users/1/..', '/api/users/'],
    ['/a/%7Euser/%41', '/a/~user/A'],
    ['/a/%c3%a9', '/a/%C3%A9'],
    ['/a/%zz', null],
    ['/a/%2', null],
    ['/a/%00b', null],
    ['api/users', null],
    ['/', '/'],
    ['/api/..;x/admin', null],
    ['/api/..;/admin', null],
    ['/api/.;x/admin', null],
    ['/api/.;/x', null],
    ['/api/%2e%2e;/admin', null],
    ['/api/%2E%2e;x/admin', null],
    ['/api/..%3bx/admin', null],
    ['/api/.%3B/admin', null],
    ['/api/a;x/b', '/api/a;x/b'],
    ['/api/...;x', '/api/...;x'],
    ['/api/..x;y', '/api/..x;y'],
    ['/api/;x/..', '/api/'],
  ];
  for (const [input, expected] of cases) t.equal(normalizePath(input), expected, input);
  t.ok(hasPathParameters('/a;b'));
  t.ok(hasPathParameters('/a%3Bb'));
  t.notOk(hasPathParameters('/a/b%3C'));
});

const route = (name: string, prefix: string, extra: Partial<RouteConfig['match']> = {}) =>
  ({ config: { name, match: { prefix, ...extra } } }) as unknown as { config: RouteConfig };

t.test('router: longest prefix at segment boundaries, hosts, methods', async (t) => {
  const users = route('users', '/api/users');
  const v1 = route('v1', '/api/v1/users');
  const v2 = route('v2', '/api/v2/users');
  const root = route('root', '/');
  const hosted = route('hosted', '/api/users', { hosts: ['admin.example.com', '*.internal.example.com'] });
  const readOnly = route('ro', '/ro', { methods: ['GET', 'HEAD'] });
  const r = new Router([users, v1, v2, hosted, readOnly]);
  const name = (path: string, host = '', method = 'GET') => {
    const m = r.match(path, host, method);
    return m.kind === 'route' ? (m.route as { config: RouteConfig }).config.name : m.kind;
  };
  t.equal(name('/api/users'), 'users');
  t.equal(name('/api/users/'), 'users');
  t.equal(name('/api/users/123'), 'users');
  t.equal(name('/api/users-admin'), 'not-found');
  t.equal(name('/api/usersX'), 'not-found');
  t.equal(name('/api'), 'not-found');
  t.equal(name('/api/v1/users/9'), 'v1');
  t.equal(name('/api/v2/users/9'), 'v2');
  t.equal(name('/api/users/1', 'admin.example.com'), 'hosted');
  t.equal(name('/api/users/1', 'a.b.internal.example.com'), 'hosted');
  t.equal(name('/api/users/1', 'other.example.com'), 'users');
  t.equal(name('/ro/x', '', 'GET'), 'ro');
  const m = r.match('/ro/x', '', 'DELETE');
  t.same(m, { kind: 'method-not-allowed', allow: 'GET, HEAD', route: readOnly }, 'a 405 names the route the path matched');
  const withRoot = new Router([users, root]);
  t.equal(withRoot.match('/anything/else', '', 'GET').kind, 'route');
  t.equal(hostName('Example.COM:8080'), 'example.com');
  t.equal(hostName('[::1]:8080'), '[::1]');
});

t.test('over sockets: prefix boundaries, versions side by side, traversal never escapes', async (t) => {
  const users = await startUpstream();
  const v2 = await startUpstream();
  const admin = await startUpstream();
  const gw = await startGateway({
    upstreams: { users: { targets: [users.url] }, v2: { targets: [v2.url] }, admin: { targets: [admin.url] } },
    routes: [
      { name: 'users', match: { prefix: '/api/users' }, upstream: 'users' },
      { name: 'users-v2', match: { prefix: '/api/v2/users' }, upstream: 'v2', rewrite: { stripPrefix: true } },
      { name: 'admin', match: { prefix: '/api/admin' }, upstream: 'admin' },
      { name: 'orders', match: { prefix: '/api/orders', methods: ['GET'] }, upstream: 'users', rewrite: { replacePrefix: '/v1/orders' } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([users.close(), v2.close(), admin.close()]);
  });

  t.equal((await call(gw.url, '/api/users/123?x=1&y=2')).status, 200);
  t.equal(users.seen.at(-1)?.url, '/api/users/123?x=1&y=2', 'path and query forwarded as is');
  t.equal((await call(gw.url, '/api/users-admin')).status, 404);
  t.equal((await call(gw.url, '/api/usersX')).status, 404);

  t.equal((await call(gw.url, '/api/v2/users/7')).status, 200);
  t.equal(v2.seen.at(-1)?.url, '/7', 'v2 stripped its prefix');
  t.equal((await call(gw.url, '/api/v2/users')).status, 200);
  t.equal(v2.seen.at(-1)?.url, '/', 'stripping the whole path leaves /');

  t.equal((await call(gw.url, '/api/orders/5')).status, 200);
  t.equal(users.seen.at(-1)?.url, '/v1/orders/5', 'prefix replaced');

  // Traversal attempts: whatever they resolve to is routed as such, never forwarded raw.
  const before = users.seen.length;
  for (const p of ['/api/users/../admin', '/api/users/%2e%2e/admin', '/api/users/..%2fadmin', '/api/users/%2E%2E%2Fadmin/x']) {
    const res = await call(gw.url, p);
    t.equal(res.status, 200, p);
    t.match(admin.seen.at(-1)?.url, /^\/api\/admin/, `${p} reached the admin route, normalised`);
  }
  t.equal(users.seen.length, before, 'the users upstream never saw a traversal');
  const escaped = await call(gw.url, '/api/v2/users/..%2f..%2f..%2fetc/passwd');
  t.equal(escaped.status, 404, 'resolved outside every route');

  const bad = await call(gw.url, '/api/users/%zz');
  t.equal(bad.status, 400);
  t.equal(bad.json().code, 'BAD_PATH');

  const notAllowed = await call(gw.url, '/api/orders/1', { method: 'DELETE' });
  t.equal(notAllowed.status, 405);
  t.equal(notAllowed.headers.allow, 'GET');
  t.equal(notAllowed.headers['content-type'], 'application/problem+json');
  t.equal(notAllowed.json().code, 'METHOD_NOT_ALLOWED');

  const none = await call(gw.url, '/nowhere');
  t.equal(none.status, 404);
  t.same(Object.keys(none.json()).sort(), ['code', 'detail', 'requestId', 'status', 'title', 'type']);
  t.equal(none.json().requestId, none.headers['x-request-id']);

  const long = '/api/users/' + 'a'.repeat(3000);
  t.equal((await call(gw.url, long)).status, 200, 'long paths are routed');
});
