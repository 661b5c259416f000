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
