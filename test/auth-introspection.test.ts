import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { bytes, mint, now } from './helpers/auth';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const CLIENT_ID = 'gateway client';
const CLIENT_SECRET = 's3cret:with/odd chars';
const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';
const ISS = 'https://issuer.test';

/**
 * A real RFC 7662 endpoint: checks the gateway's client credentials (client_secret_basic), reads
 * the form, and answers from `tokens`; `down` makes it answer 503.
 */
async function startIntrospection(tokens: Record<string, Record<string, unknown> | (() => Record<string, unknown>)>) {
  const state = { down: false, asked: [] as string[] };
  const server = await startUpstream((req, res, body) => {
    if (state.down) {
      res.writeHead(503);
      return void res.end();
    }
    // RFC 6749 §2.3.1: form-encoded before base64.
    const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
    const expected = `Basic ${Buffer.from(`${enc(CLIENT_ID)}:${enc(CLIENT_SECRET)}`).toString('base64')}`;
    if (req.method !== 'POST' || req.headers.authorization !== expected || req.headers['content-type'] !== 'application/x-www-form-urlencoded') {
      res.writeHead(401, { 'www-authenticate': 'Basic' });
      return void res.end();
    }
    const form = new URLSearchParams(body);
    const token = form.get('token') ?? '';
    state.asked.push(token);
    const entry = tokens[token];
    const answer = typeof entry === 'function' ? entry() : (entry ?? { active: false });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer));
  });
  return Object.assign(server, { state, count: (token: string) => state.asked.filter((x) => x === token).length });
}

/**
 * An upstream and a gateway whose one route takes introspected tokens from `i`, closed with the test.
 * `introspection` and `top` add to (or replace) the defaults: the test's client credentials, a 2 s budget.
 */
async function introspectedGateway(t: Test, i: Awaited<ReturnType<typeof startIntrospection>>, introspection: Record<string, unknown> = {}, top: Record<string, unknown> = {}) {
  const u = await startUpstream();
  const g = await startGateway(
    {
      upstreams: { up: { targets: [u.url] } },
      auth: { introspection: { url: i.url, clientId: '${ID}', clientSecret: '${SECRET}', timeoutMs: 2000, ...introspection } },
      routes: [{ name: 'api', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['introspection'] } }],
      ...top,
    },
    { ID: CLIENT_ID, SECRET: CLIENT_SECRET },
  );
  t.teardown(async () => {
    await g.close();
    await u.close();
    await i.close();
  });
  return { g, u };
}

let intro: Awaited<ReturnType<typeof startIntrospection>>;
let up: TestUpstream;
let gw: TestGateway;

t.before(async () => {
  intro = await startIntrospection({
    'opaque-active': { active: true, sub: 'user-9', client_id: 'app-1', scope: 'read write', exp: now() + 600, iss: ISS },
    'opaque-reader': { active: true, sub: 'user-8', client_id: 'app-1', scope: 'read', exp: now() + 600 },
    'opaque-client': { active: true, client_id: 'service-a', scope: 'read' },
    'opaque-expired': { active: true, sub: 'user-9', exp: now() - 10 },
    'opaque-short': () => ({ active: true, sub: 'user-7', exp: now() + 2 }),
    'opaque-later': { active: true, sub: 'user-6', nbf: now() + 600 },
  });
  up = await startUpstream();
  gw = await startGateway(
    {
      upstreams: { up: { targets: [up.url] } },
      auth: {
        jwt: { algorithms: ['HS256'], secret: SECRET, issuer: ISS },
        introspection: {
          url: `${intro.url}/oauth2/introspect`,
          clientId: '${INTRO_ID}',
          clientSecret: '${INTRO_SECRET}',
          tokenTypeHint: 'access_token',
          claimHeaders: { 'X-Client-Id': 'client_id' },
          breaker: { enabled: false },
          // Generous for a loaded machine: these tests are about answers, not the budget.
          timeoutMs: 2000,
        },
      },
      consumers: [{ id: 'service-a', roles: ['robot'] }],
      routes: [
        { name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['introspection'] } },
        { name: 'write', match: { prefix: '/write' }, upstream: 'up', auth: { methods: ['introspection'], scopes: { '*': ['write'] } } },
        { name: 'mixed', match: { prefix: '/mixed' }, upstream: 'up', auth: { methods: ['jwt', 'introspection'] } },
      ],
    },
    { INTRO_ID: CLIENT_ID, INTRO_SECRET: CLIENT_SECRET },
  );
});

t.teardown(async () => {
  await gw.close();
  await up.close();
  await intro.close();
});

const bearer = (token: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${token}`, ...extra });
const lastUpstream = () => up.seen[up.seen.length - 1];

t.test('an active token is let in; sub, client_id and scope become the identity', async (t) => {
  const res = await call(gw.url, '/api/x', { headers: bearer('opaque-active', { 'x-client-id': 'spoof', 'x-user-id': 'spoof' }) });
  t.equal(res.status, 200);
  const seen = intro.seen.find((s) => s.body.includes('opaque-active'))!;
  t.equal(seen.url, '/oauth2/introspect');
  t.equal(new URLSearchParams(seen.body).get('token_type_hint'), 'access_token');
  const got = lastUpstream().headers;
  t.equal(got['x-consumer-id'], 'user-9');
  t.equal(got['x-user-id'], 'user-9');
  t.equal(got['x-client-id'], 'app-1', 'mapped member, the client-sent copy dropped');
  t.equal(got.authorization, undefined);

  const client = await call(gw.url, '/api/x', { headers: bearer('opaque-client') });
  t.equal(client.status, 200);
  t.equal(lastUpstream().headers['x-consumer-id'], 'service-a', 'no sub: client_id names the consumer');
  t.equal(lastUpstream().headers['x-user-roles'], 'robot', 'a known consumer brings its roles');
});

t.test('inactive, expired or not yet valid tokens are 401 with a Bearer challenge', async (t) => {
  for (const token of ['opaque-unknown', 'opaque-expired', 'opaque-later']) {
    const res = await call(gw.url, '/api/x', { headers: bearer(token) });
    t.equal(res.status, 401, token);
    t.match(res.headers['www-authenticate'], /^Bearer realm="gateway", error="invalid_token"/);
  }
  const again = await call(gw.url, '/api/x', { headers: bearer('opaque-unknown') });
  t.equal(again.status, 401);
  t.equal(intro.count('opaque-unknown'), 1, 'an inactive result is cached briefly');
  t.equal((await call(gw.url, '/api/x')).status, 401, 'no token at all');
});

t.test('scopes from the answer are checked by the route', async (t) => {
  t.equal((await call(gw.url, '/write', { headers: bearer('opaque-active') })).status, 200);
  t.equal((await call(gw.url, '/write', { headers: bearer('opaque-reader') })).status, 403);
});

t.test('results are cached by token until the earlier of exp and the TTL', async (t) => {
  const n = intro.count('opaque-active');
  for (let i = 0; i < 3; i++) t.equal((await call(gw.url, '/api/x', { headers: bearer('opaque-active') })).status, 200);
  t.equal(intro.count('opaque-active'), n, 'served from the cache');
  t.equal((await call(gw.url, '/api/x', { headers: bearer('opaque-short') })).status, 200);
  t.equal((await call(gw.url, '/api/x', { headers: bearer('opaque-short') })).status, 200);
  t.equal(intro.count('opaque-short'), 1);
  await sleep(2100);
  t.equal((await call(gw.url, '/api/x', { headers: bearer('opaque-short') })).status, 200);
  t.equal(intro.count('opaque-short'), 2, 'asked again once the token exp passed');
  t.ok((await metricValue(gw.adminUrl, 'gateway_auth_remote_cache_total', { service: 'introspection', result: 'hit' })) >= 4);
});

t.test('JWT and opaque tokens share a route: JWTs from the issuer are verified locally', async (t) => {
  const n = intro.state.asked.length;
  const jwt = await mint({ sub: 'jwt-user', iss: ISS, exp: now() + 600 }, bytes(SECRET));
  const res = await call(gw.url, '/mixed', { headers: bearer(jwt) });
  t.equal(res.status, 200);
  t.equal(lastUpstream().headers['x-consumer-id'], 'jwt-user');
  t.equal(intro.state.asked.length, n, 'no introspection for a local JWT');
  const opaque = await call(gw.url, '/mixed', { headers: bearer('opaque-reader') });
  t.equal(opaque.status, 200);
  t.equal(lastUpstream().headers['x-consumer-id'], 'user-8');
  const foreign = await mint({ sub: 'x', iss: 'https://elsewhere.test', exp: now() + 600 }, bytes('another-secret-that-is-long-enough-0123456789'));
  const other = await call(gw.url, '/mixed', { headers: bearer(foreign) });
  t.equal(other.status, 401, 'a JWT from another issuer is introspected (and inactive there)');
  t.equal(intro.count(foreign), 1);
  const forged = await mint({ sub: 'x', iss: ISS, exp: now() + 600 }, bytes('another-secret-that-is-long-enough-0123456789'));
  t.equal((await call(gw.url, '/mixed', { headers: bearer(forged) })).status, 401, 'a JWT claiming our issuer must verify locally');
  t.equal(intro.count(forged), 0);
});

t.test('with several JWT issuers, a JWT from any of them is verified locally, any other is introspected', async (t) => {
  const OTHER = 'https://second-issuer.test';
  const OTHER_SECRET = 'second-secret-that-is-long-enough-for-hs256-0123';
  const multi = await startGateway(
    {
      upstreams: { up: { targets: [up.url] } },
      auth: {
        jwt: {
          issuers: [
            { issuer: ISS, algorithms: ['HS256'], secret: SECRET },
            { issuer: OTHER, algorithms: ['HS256'], secret: OTHER_SECRET },
          ],
        },
        introspection: { url: `${intro.url}/oauth2/introspect`, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, breaker: { enabled: false }, timeoutMs: 2000 },
      },
      routes: [{ name: 'mixed', match: { prefix: '/mixed' }, upstream: 'up', auth: { methods: ['jwt', 'introspection'] } }],
    },
  );
  t.teardown(() => multi.close());
  const second = await mint({ sub: 'second-user', iss: OTHER, exp: now() + 600 }, bytes(OTHER_SECRET));
  t.equal((await call(multi.url, '/mixed', { headers: bearer(second) })).status, 200, 'the second issuer is local too');
  t.equal(lastUpstream().headers['x-consumer-id'], 'second-user');
  t.equal(intro.count(second), 0, 'no introspection for a JWT of a configured issuer');
  const forged = await mint({ sub: 'forged-second', iss: OTHER, exp: now() + 600 }, bytes('another-secret-that-is-long-enough-0123456789'));
  t.equal((await call(multi.url, '/mixed', { headers: bearer(forged) })).status, 401, 'a JWT claiming a configured issuer must verify locally');
  t.equal(intro.count(forged), 0);
  const foreign = await mint({ sub: 'foreign-to-both', iss: 'https://elsewhere.test', exp: now() + 600 }, bytes('another-secret-that-is-long-enough-0123456789'));
  t.equal((await call(multi.url, '/mixed', { headers: bearer(foreign) })).status, 401, 'a JWT from no configured issuer is introspected (and inactive there)');
  t.equal(intro.count(foreign), 1);
});

t.test('with tracing on, an unsampled request passes its trace context to the introspection endpoint', async (t) => {
  const i = await startIntrospection({ traced: { active: true, sub: 't-1' } });
  const { g, u } = await introspectedGateway(t, i, {}, { tracing: { enabled: true, endpoint: 'http://127.0.0.1:1/v1/traces', sampleRatio: 0 } });
  t.equal((await call(g.url, '/', { headers: bearer('traced') })).status, 200);
  const tp = i.seen[0].headers.traceparent;
  t.match(tp, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'an unsampled context');
  t.equal(tp, u.seen[0].headers.traceparent, 'the one the upstream gets');
});

t.test('endpoint down: 503, unless a cached active result is still valid', async (t) => {
  const i = await startIntrospection({
    cached: { active: true, sub: 'c-1', exp: now() + 600 },
    'no-exp': { active: true, sub: 'c-2' },
    fresh: { active: true, sub: 'c-3' },
  });
  const { g, u } = await introspectedGateway(t, i, { cache: { ttlMs: 200 }, breaker: { enabled: false } });
  t.equal((await call(g.url, '/', { headers: bearer('cached') })).status, 200);
  t.equal((await call(g.url, '/', { headers: bearer('no-exp') })).status, 200);
  await sleep(300);
  i.state.down = true;
  const stale = await call(g.url, '/', { headers: bearer('cached') });
  t.equal(stale.status, 200, 'past its TTL but before exp: used while the endpoint is down');
  t.equal(u.seen[u.seen.length - 1].headers['x-consumer-id'], 'c-1');
  t.equal(await metricValue(g.adminUrl, 'gateway_auth_remote_decisions_total', { service: 'introspection', result: 'stale' }), 1);
  const noExp = await call(g.url, '/', { headers: bearer('no-exp') });
  t.equal(noExp.status, 503, 'without exp nothing says it is still valid');
  t.equal(noExp.json().code, 'AUTHORIZER_UNAVAILABLE');
  const unknown = await call(g.url, '/', { headers: bearer('fresh') });
  t.equal(unknown.status, 503, 'an uncached token cannot be checked');
  t.equal(unknown.headers['retry-after'], '1');
  i.state.down = false;
  t.equal((await call(g.url, '/', { headers: bearer('fresh') })).status, 200, 'back when the endpoint is');
});

t.test('wrong client credentials at the endpoint are the gateway\'s problem: 503, not 401', async (t) => {
  const i = await startIntrospection({ tok: { active: true, sub: 'x' } });
  const { g } = await introspectedGateway(t, i, { clientId: 'wrong', clientSecret: 'wrong' });
  const res = await call(g.url, '/', { headers: bearer('tok') });
  t.equal(res.status, 503);
});
