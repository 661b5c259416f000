import t from 'tap';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

t.test('CORS: preflights answered by the gateway, actual requests decorated', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/json',
      'access-control-allow-origin': 'https://evil.example',
      'access-control-allow-credentials': 'true',
      'x-total-count': '3',
    });
    res.end('[]');
  });
  const gone = await startUpstream();
  await gone.close();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] }, gone: { targets: [gone.url] } },
    policies: { cors: { origins: ['https://app.example.com'], maxAgeSeconds: 120 } },
    routes: [
      {
        name: 'api',
        match: { prefix: '/api', methods: ['GET', 'POST'] },
        upstream: 'up',
        policies: {
          cors: {
            origins: ['https://app.example.com', 'https://*.partner.example', 'http://localhost:*'],
            credentials: true,
            exposeHeaders: ['X-Total-Count'],
            allowHeaders: ['Content-Type', 'Authorization'],
            maxAgeSeconds: 3600,
          },
        },
      },
      { name: 'global', match: { prefix: '/global' }, upstream: 'up' },
      { name: 'off', match: { prefix: '/off' }, upstream: 'up', policies: { cors: { enabled: false } } },
      { name: 'down', match: { prefix: '/down' }, upstream: 'gone' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const preflight = (path: string, origin: string, method = 'POST', headers: Record<string, string> = {}) =>
    call(gw.url, path, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, ...headers } });

  const seenBefore = up.seen.length;
  const pf = await preflight('/api/orders', 'https://app.example.com', 'POST', { 'access-control-request-headers': 'content-type, authorization' });
  t.equal(pf.status, 204, 'preflight answered even though OPTIONS is not among the route methods');
  t.equal(pf.headers['access-control-allow-origin'], 'https://app.example.com');
  t.equal(pf.headers['access-control-allow-methods'], 'GET, POST', "the route's methods by default");
  t.equal(pf.headers['access-control-allow-headers'], 'Content-Type, Authorization');
  t.equal(pf.headers['access-control-allow-credentials'], 'true');
  t.equal(pf.headers['access-control-max-age'], '3600');
  t.match(pf.headers.vary, /Origin/);
  t.ok(pf.headers['x-request-id'], 'preflights carry a request id');
  t.equal(pf.body, '');

  const sub = await preflight('/api/orders', 'https://eu.shop.partner.example', 'GET');
  t.equal(sub.status, 204);
  t.equal(sub.headers['access-control-allow-origin'], 'https://eu.shop.partner.example', 'subdomain pattern');
  const port = await preflight('/api/orders', 'http://localhost:5173', 'GET');
  t.equal(port.headers['access-control-allow-origin'], 'http://localhost:5173', 'any-port pattern');

  const bare = await preflight('/api/orders', 'https://partner.example');
  t.equal(bare.status, 403, 'the bare domain is not a subdomain');
  t.equal(bare.json().code, 'FORBIDDEN');
  t.notOk('access-control-allow-origin' in bare.headers);
  const lookalike = await preflight('/api/orders', 'https://app.example.com.evil.example');
  t.equal(lookalike.status, 403, 'patterns are anchored');
  const wrongScheme = await preflight('/api/orders', 'http://app.example.com');
  t.equal(wrongScheme.status, 403, 'the scheme is part of the origin');
  const wrongMethod = await preflight('/api/orders', 'https://app.example.com', 'DELETE');
  t.equal(wrongMethod.status, 405, 'a preflight for a method no route takes is not answered');
  t.equal(up.seen.length, seenBefore, 'no preflight ever reached the upstream');

  const actual = await call(gw.url, '/api/orders', { headers: { origin: 'https://app.example.com' } });
  t.equal(actual.status, 200);
  t.equal(actual.headers['access-control-allow-origin'], 'https://app.example.com', "the gateway's value, not the upstream's");
  t.equal(actual.rawHeaders.filter((h) => h.toLowerCase() === 'access-control-allow-origin').length, 1);
  t.equal(actual.headers['access-control-allow-credentials'], 'true');
  t.equal(actual.headers['access-control-expose-headers'], 'X-Total-Count');
  t.match(actual.headers.vary, /Origin/);

  const foreign = await call(gw.url, '/api/orders', { headers: { origin: 'https://evil.example' } });
  t.equal(foreign.status, 200, 'a disallowed origin is still proxied; the browser withholds the answer');
  t.notOk('access-control-allow-origin' in foreign.headers, "the upstream's permissive header is dropped");
  t.notOk('access-control-allow-credentials' in foreign.headers);
  const noOrigin = await call(gw.url, '/api/orders');
  t.notOk('access-control-allow-origin' in noOrigin.headers);
  t.match(noOrigin.headers.vary, /Origin/, 'Vary: Origin even without Origin, for shared caches');

  const optionsNoPreflight = await call(gw.url, '/api/orders', { method: 'OPTIONS' });
  t.equal(optionsNoPreflight.status, 405, 'a plain OPTIONS is still routed by its own method');

  const global = await preflight('/global/x', 'https://app.example.com', 'PUT');
  t.equal(global.status, 204, 'the global policy applies to routes without their own');
  t.equal(global.headers['access-control-allow-methods'], 'GET, HEAD, POST, PUT, PATCH, DELETE');
  t.equal(global.headers['access-control-max-age'], '120');
  t.notOk('access-control-allow-credentials' in global.headers);
  const reflected = await preflight('/global/x', 'https://app.example.com', 'PUT', { 'access-control-request-headers': 'x-custom' });
  t.equal(reflected.headers['access-control-allow-headers'], 'x-custom', 'without allowHeaders the asked headers are allowed');
  const globalDenied = await preflight('/global/x', 'https://api.partner.example');
  t.equal(globalDenied.status, 403, 'the route policy does not leak into other routes');

  const seenOff = up.seen.length;
  const off = await preflight('/off/x', 'https://app.example.com');
  t.equal(off.status, 200, 'CORS turned off for one route: the upstream answers its OPTIONS');
  t.equal(up.seen.length, seenOff + 1);
  t.equal(off.headers['access-control-allow-origin'], 'https://evil.example', "no CORS policy: the upstream's headers pass");

  const down = await call(gw.url, '/down/x', { headers: { origin: 'https://app.example.com' } });
  t.equal(down.status, 502);
  t.equal(down.headers['access-control-allow-origin'], 'https://app.example.com', 'gateway errors are readable by the browser');
  t.equal(down.headers['content-type'], 'application/problem+json');
});

t.test('CORS: any origin', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'open', match: { prefix: '/' }, upstream: 'up', policies: { cors: { origins: ['*'], methods: ['GET'] } } }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const pf = await call(gw.url, '/x', { method: 'OPTIONS', headers: { origin: 'https://whoever.example', 'access-control-request-method': 'GET' } });
  t.equal(pf.status, 204);
  t.equal(pf.headers['access-control-allow-origin'], '*');
  t.equal(pf.headers['access-control-allow-methods'], 'GET');
  t.equal(up.seen.length, 0);
  const res = await call(gw.url, '/x', { headers: { origin: 'https://whoever.example' } });
  t.equal(res.headers['access-control-allow-origin'], '*');
  t.notOk(res.headers.vary, 'the answer does not depend on Origin');
});
