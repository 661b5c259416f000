import t from 'tap';
import { bytes, mint, now } from './helpers/auth';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

const SECRET = 'jwt-secret-for-policy-tests-0123456789';
const ORIGIN = 'https://app.example.com';

t.test('policies around authentication: IP rules and preflights before it, header templates after it', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    routes: [
      {
        name: 'api',
        match: { prefix: '/api', methods: ['GET', 'POST'] },
        upstream: 'up',
        auth: { methods: ['jwt'] },
        policies: {
          cors: { origins: [ORIGIN], credentials: true },
          headers: {
            request: { set: { 'X-Tenant': 'tenant-{consumerId}', 'X-Trace': '{requestId}' } },
            response: { set: { 'X-Served-For': '{consumerId}' } },
          },
        },
      },
      {
        name: 'walled',
        match: { prefix: '/walled' },
        upstream: 'up',
        auth: { methods: ['jwt'] },
        policies: { ipRules: { deny: ['127.0.0.0/8'] } },
      },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const preflight = await call(gw.url, '/api/orders', {
    method: 'OPTIONS',
    headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  t.equal(preflight.status, 204, 'a preflight needs no credentials');
  t.equal(preflight.headers['access-control-allow-origin'], ORIGIN);
  t.equal(preflight.headers['access-control-allow-headers'], 'authorization, content-type');
  t.equal(up.seen.length, 0, 'and never reaches the upstream');

  const anonymous = await call(gw.url, '/api/orders', { headers: { origin: ORIGIN } });
  t.equal(anonymous.status, 401);
  t.equal(anonymous.headers['access-control-allow-origin'], ORIGIN, 'the 401 is readable by the calling page');
  t.equal(anonymous.headers['access-control-allow-credentials'], 'true');
  t.ok(anonymous.headers['www-authenticate'], "auth's own headers are kept");

  const token = await mint({ sub: 'acme', exp: now() + 300 }, bytes(SECRET));
  const res = await call(gw.url, '/api/orders', {
    headers: { origin: ORIGIN, authorization: `Bearer ${token}`, 'x-request-id': 'policy-auth-1', 'x-tenant': 'forged' },
  });
  t.equal(res.status, 200);
  const seen = up.seen.at(-1)!.headers;
  t.equal(seen['x-tenant'], 'tenant-acme', 'the consumer id template, filled once auth knows the consumer');
  t.equal(seen['x-trace'], 'policy-auth-1');
  t.equal(res.headers['x-served-for'], 'acme');
  t.equal(res.headers['access-control-allow-origin'], ORIGIN);

  const walled = await call(gw.url, '/walled/x', { headers: { authorization: `Bearer ${token}` } });
  t.equal(walled.status, 403, 'IP rules answer before authentication is even tried');
  t.equal(walled.json().code, 'FORBIDDEN');
  t.equal(up.seen.length, 1);
});

t.test('gateway answers made by later steps (429, breaker 503) carry the CORS headers too', async (t) => {
  const up = await startUpstream();
  const down = await startUpstream();
  await down.close();
  const gw = await startGateway({
    upstreams: {
      up: { targets: [up.url] },
      down: { targets: [down.url], breaker: { consecutiveFailures: 1, failureRatio: 0, openMs: 60000 }, retries: { maxRetries: 0 } },
    },
    policies: { cors: { origins: [ORIGIN] } },
    routes: [
      { name: 'limited', match: { prefix: '/limited' }, upstream: 'up', rateLimit: { limits: [{ rate: 1, per: '1h' }] } },
      { name: 'down', match: { prefix: '/down' }, upstream: 'down' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const headers = { origin: ORIGIN };
  t.equal((await call(gw.url, '/limited/a', { headers })).status, 200);
  const limited = await call(gw.url, '/limited/a', { headers });
  t.equal(limited.status, 429);
  t.equal(limited.headers['access-control-allow-origin'], ORIGIN, 'the 429 is readable by the calling page');
  t.ok(limited.headers['retry-after'], "the rate limiter's own headers are kept");
  t.equal((await call(gw.url, '/down/x', { headers })).status, 502, 'the failure that opens the breaker');
  const open = await call(gw.url, '/down/x', { headers });
  t.equal(open.status, 503);
  t.equal(open.json().code, 'UPSTREAM_UNAVAILABLE');
  t.equal(open.headers['access-control-allow-origin'], ORIGIN, 'so is the 503 of an open breaker');
});
