import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { startGateway, withTestDefaults, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { SPAN_KIND, startOtlpReceiver } from './helpers/otlp';
import { startUpstream, type SeenRequest, type TestUpstream } from './helpers/upstream';

/**
 * A real authorizer over HTTP. The bearer token says what it answers; every call is recorded.
 */
async function startAuthorizer(): Promise<TestUpstream & { calls(token: string): SeenRequest[] }> {
  const authz = await startUpstream(async (req, res) => {
    const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    switch (token) {
      case 'alice':
      case 'alice-2':
        res.writeHead(200, { 'x-auth-consumer': 'alice', 'x-auth-roles': 'admin, ops', 'x-auth-scopes': 'read write', 'x-tenant': 't-1', 'x-user-id': 'u-1', 'x-internal': 'never' });
        return void res.end('ok');
      case 'nobody':
        res.writeHead(204, { 'x-tenant': 't-anon' });
        return void res.end();
      case 'short':
        res.writeHead(200, { 'x-auth-consumer': 'short', 'cache-control': 'max-age=1' });
        return void res.end();
      case 'nostore':
        res.writeHead(200, { 'x-auth-consumer': 'ns', 'cache-control': 'no-store' });
        return void res.end();
      case 'bad': {
        const body = JSON.stringify({ error: 'token revoked' });
        res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json', 'x-internal': 'secret' });
        return void res.end(body);
      }
      case 'forbidden':
        res.writeHead(403, { 'content-type': 'text/plain' });
        return void res.end('not for you');
      case 'login':
        res.writeHead(302, { location: 'https://login.example/?next=/ext' });
        return void res.end();
      case 'slow':
        await sleep(3000);
        res.writeHead(200, { 'x-auth-consumer': 'slow' });
        return void res.end();
      default:
        res.writeHead(500);
        return void res.end('boom');
    }
  });
  const calls = (token: string) => authz.seen.filter((s) => s.headers.authorization === `Bearer ${token}`);
  return Object.assign(authz, { calls });
}

function externalConfig(authzUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    url: `${authzUrl}/ignored`,
    path: '/check{path}',
    forwardHeaders: ['Authorization', 'X-Client-Hint'],
    upstreamHeaders: ['X-Tenant', 'X-User-Id'],
    identity: { consumerHeader: 'X-Auth-Consumer', rolesHeader: 'X-Auth-Roles', scopesHeader: 'X-Auth-Scopes' },
    clientHeaders: ['WWW-Authenticate', 'Content-Type', 'Location'],
    // Generous for a loaded machine; the slow authorizer answers well past it.
    timeoutMs: 1000,
    ...extra,
  };
}

let authz: Awaited<ReturnType<typeof startAuthorizer>>;
let up: TestUpstream;
let gw: TestGateway;

t.before(async () => {
  authz = await startAuthorizer();
  up = await startUpstream();
  gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { external: externalConfig(authz.url, { breaker: { enabled: false } }) },
    routes: [
      { name: 'ext', match: { prefix: '/ext' }, upstream: 'up', auth: { methods: ['external'] } },
      { name: 'open', match: { prefix: '/fail-open' }, upstream: 'up', auth: { methods: ['external'], failOpen: true } },
      { name: 'admin', match: { prefix: '/admin' }, upstream: 'up', auth: { methods: ['external'], roles: ['root'] } },
      { name: 'public', match: { prefix: '/public' }, upstream: 'up' },
    ],
  });
});

t.teardown(async () => {
  await gw.close();
  await up.close();
  await authz.close();
});

const bearer = (token: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${token}`, ...extra });
const lastUpstream = () => up.seen[up.seen.length - 1];

t.test('2xx allows: the authorizer sees the request, the upstream gets its headers and identity', async (t) => {
  const res = await call(gw.url, '/ext/orders?x=1', {
    headers: bearer('alice', { 'x-client-hint': 'h1', 'x-request-id': 'rid-1', cookie: 'a=b', 'x-other': 'o' }),
  });
  t.equal(res.status, 200);
  const [seen] = authz.calls('alice');
  t.equal(seen.method, 'GET');
  t.equal(seen.url, '/check/ext/orders', 'the path template, filled in');
  t.equal(seen.headers['x-client-hint'], 'h1', 'allow-listed header sent');
  t.equal(seen.headers.cookie, undefined, 'headers off the allow-list stay home');
  t.equal(seen.headers['x-other'], undefined);
  t.equal(seen.headers['x-forwarded-method'], 'GET');
  t.equal(seen.headers['x-forwarded-uri'], '/ext/orders?x=1');
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(seen.headers['x-request-id'], 'rid-1');
  const got = lastUpstream().headers;
  t.equal(got['x-tenant'], 't-1', 'configured answer header copied upstream');
  t.equal(got['x-user-id'], 'u-1');
  t.equal(got['x-internal'], undefined, 'other answer headers are not');
  t.equal(got['x-consumer-id'], 'alice', 'the identity header became the consumer');
  t.equal(got['x-user-roles'], 'admin,ops');
  t.equal(got.authorization, undefined, 'the credential is not forwarded upstream');
});

t.test('identity headers sent by the client never reach the upstream', async (t) => {
  await call(gw.url, '/ext/x', { headers: bearer('alice', { 'x-tenant': 'evil', x_tenant: 'evil', 'x-consumer-id': 'mallory', 'X-USER-ID': 'mallory' }) });
  const got = lastUpstream();
  t.same(got.rawHeaders.filter((_, i, a) => i % 2 === 0 && /^x[-_]tenant$/i.test(a[i])).length, 1, 'one X-Tenant, the authorizer\'s');
  t.equal(got.headers['x-tenant'], 't-1');
  t.equal(got.headers['x-consumer-id'], 'alice');
  t.equal(got.headers['x-user-id'], 'u-1');
  await call(gw.url, '/public', { headers: { 'x-tenant': 'evil' } });
  t.equal(lastUpstream().headers['x-tenant'], undefined, 'dropped on routes without auth too');
});

t.test('a decision is cached by identity: one authorizer call for repeated requests', async (t) => {
  const before = authz.calls('alice-2').length;
  const hits = await metricValue(gw.adminUrl, 'gateway_auth_remote_cache_total', { service: 'external', result: 'hit' });
  for (let i = 0; i < 5; i++) t.equal((await call(gw.url, `/ext/p${i}`, { headers: bearer('alice-2') })).status, 200);
  t.equal(authz.calls('alice-2').length - before, 1, 'the authorizer was called once');
  t.equal(lastUpstream().headers['x-tenant'], 't-1', 'a cached decision still sets the headers');
  t.equal(await metricValue(gw.adminUrl, 'gateway_auth_remote_cache_total', { service: 'external', result: 'hit' }), hits + 4);
  // Concurrent first requests share one call.
  await Promise.all([1, 2, 3, 4].map(() => call(gw.url, '/ext/c', { headers: bearer('nobody') })));
  t.equal(authz.calls('nobody').length, 1, 'concurrent requests with one identity made one call');
});

t.test('a 2xx without an identity header lets the request through without identity', async (t) => {
  const res = await call(gw.url, '/ext/n', { headers: bearer('nobody', { 'x-consumer-id': 'spoof' }) });
  t.equal(res.status, 200);
  t.equal(lastUpstream().headers['x-tenant'], 't-anon');
  t.equal(lastUpstream().headers['x-consumer-id'], undefined);
  const admin = await call(gw.url, '/admin', { headers: bearer('nobody') });
  t.equal(admin.status, 403, 'a route with roles needs an identity');
  const noRole = await call(gw.url, '/admin', { headers: bearer('alice') });
  t.equal(noRole.status, 403, 'roles from the authorizer are checked');
});

t.test('refusals are relayed: status, selected headers and body; briefly cached', async (t) => {
  const before = up.seen.length;
  const res = await call(gw.url, '/ext/x', { headers: bearer('bad') });
  t.equal(res.status, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"');
  t.equal(res.headers['content-type'], 'application/json');
  t.same(res.json(), { error: 'token revoked' });
  t.equal(res.headers['x-internal'], undefined, 'headers off the list are not relayed');
  t.ok(res.headers['x-request-id']);
  const again = await call(gw.url, '/ext/x', { headers: bearer('bad') });
  t.equal(again.status, 401);
  t.same(again.json(), { error: 'token revoked' });
  t.equal(authz.calls('bad').length, 1, 'the refusal was cached');

  const forbidden = await call(gw.url, '/ext/x', { headers: bearer('forbidden') });
  t.equal(forbidden.status, 403);
  t.equal(forbidden.body, 'not for you');
  const login = await call(gw.url, '/ext/x', { headers: bearer('login') });
  t.equal(login.status, 302, 'a redirect to a login page goes through');
  t.equal(login.headers.location, 'https://login.example/?next=/ext');
  t.equal(up.seen.length, before, 'the upstream saw none of them');
});

t.test("Cache-Control of the authorizer's answer sets the TTL", async (t) => {
  await call(gw.url, '/ext/s', { headers: bearer('short') });
  await call(gw.url, '/ext/s', { headers: bearer('short') });
  t.equal(authz.calls('short').length, 1, 'max-age=1: reused within the second');
  await sleep(1100);
  await call(gw.url, '/ext/s', { headers: bearer('short') });
  t.equal(authz.calls('short').length, 2, 'asked again once max-age passed');
  await call(gw.url, '/ext/s', { headers: bearer('nostore') });
  await call(gw.url, '/ext/s', { headers: bearer('nostore') });
  t.equal(authz.calls('nostore').length, 2, 'no-store: never reused');
});

t.test('no identity source: 401 without calling the authorizer', async (t) => {
  const n = authz.seen.length;
  const res = await call(gw.url, '/ext/x');
  t.equal(res.status, 401);
  t.equal(res.json().code, 'UNAUTHENTICATED');
  // Every 401 carries a challenge (RFC 9110 §11.6.1): the missing credential is the Authorization header.
  t.equal(res.headers['www-authenticate'], 'Bearer realm="gateway"');
  t.equal(authz.seen.length, n);
});

t.test('a slow authorizer is cut at the time budget: 503, or through without identity on a fail-open route', async (t) => {
  const started = performance.now();
  const res = await call(gw.url, '/ext/x', { headers: bearer('slow') });
  const elapsed = performance.now() - started;
  t.equal(res.status, 503);
  t.equal(res.json().code, 'AUTHORIZER_UNAVAILABLE');
  t.equal(res.headers['retry-after'], '1');
  t.ok(elapsed < 2500, `answered at the budget, not when the authorizer did (${elapsed.toFixed(0)} ms)`);
  t.ok(elapsed >= 990, `not before the budget (${elapsed.toFixed(0)} ms)`);
  t.ok((await metricValue(gw.adminUrl, 'gateway_auth_remote_calls_total', { service: 'external', outcome: 'timeout' })) >= 1);

  const open = await call(gw.url, '/fail-open/x', { headers: bearer('slow', { 'x-consumer-id': 'spoof' }) });
  t.equal(open.status, 200, 'the route fails open');
  t.equal(lastUpstream().headers['x-consumer-id'], undefined, 'without an identity');
  t.ok((await metricValue(gw.adminUrl, 'gateway_auth_remote_decisions_total', { service: 'external', result: 'fail_open' })) >= 1);

  const boom = await call(gw.url, '/ext/x', { headers: bearer('boom') });
  t.equal(boom.status, 503, 'an authorizer 5xx is 503 too');
});

t.test('the breaker stops calling a failing authorizer', async (t) => {
  const a = await startAuthorizer();
  const u = await startUpstream();
  const g = await startGateway({
    upstreams: { up: { targets: [u.url] } },
    auth: { external: externalConfig(a.url, { breaker: { consecutiveFailures: 2, openMs: 60000 } }) },
    routes: [{ name: 'ext', match: { prefix: '/ext' }, upstream: 'up', auth: { methods: ['external'] } }],
  });
  t.teardown(async () => {
    await g.close();
    await u.close();
    await a.close();
  });
  for (let i = 0; i < 2; i++) t.equal((await call(g.url, '/ext', { headers: bearer('boom') })).status, 503);
  t.equal(a.calls('boom').length, 2);
  const res = await call(g.url, '/ext', { headers: bearer('alice') });
  t.equal(res.status, 503, 'open breaker: refused without a call');
  t.equal(a.calls('alice').length, 0);
  t.equal(await metricValue(g.adminUrl, 'gateway_auth_remote_calls_total', { service: 'external', outcome: 'breaker_open' }), 1);
});

t.test('the body goes to the authorizer when asked (bounded), and still reaches the upstream', async (t) => {
  const a = await startAuthorizer();
  const u = await startUpstream();
  const g = await startGateway({
    upstreams: { up: { targets: [u.url] } },
    auth: { external: externalConfig(a.url, { method: 'POST', body: { enabled: true, maxBytes: 16 } }) },
    routes: [{ name: 'ext', match: { prefix: '/ext' }, upstream: 'up', auth: { methods: ['external'] } }],
  });
  t.teardown(async () => {
    await g.close();
    await u.close();
    await a.close();
  });
  const res = await call(g.url, '/ext', { method: 'PUT', headers: bearer('alice', { 'content-type': 'text/plain' }), body: 'hello' });
  t.equal(res.status, 200);
  t.equal(a.calls('alice')[0].method, 'POST');
  t.equal(a.calls('alice')[0].body, 'hello', 'the authorizer got the body');
  t.equal(a.calls('alice')[0].headers['content-type'], 'text/plain');
  t.equal(u.seen[0].method, 'PUT');
  t.equal(u.seen[0].body, 'hello', 'so did the upstream');
  const big = await call(g.url, '/ext', { method: 'POST', headers: bearer('alice'), body: 'x'.repeat(17) });
  t.equal(big.status, 413);
  t.equal(a.calls('alice').length, 1, 'the too-large body was refused before any call');
  for (let i = 0; i < 2; i++) t.equal((await call(g.url, '/ext', { headers: bearer('alice') })).status, 200);
  t.equal(a.calls('alice').length, 2, 'a decision made on a body is not reused; one made without is');
});

t.test('with tracing on, the authorizer call is a client span under the server span', async (t) => {
  const otlp = await startOtlpReceiver();
  const a = await startAuthorizer();
  const u = await startUpstream();
  const g = await startGateway({
    upstreams: { up: { targets: [u.url] } },
    auth: { external: externalConfig(a.url) },
    tracing: { enabled: true, endpoint: otlp.url, export: { scheduledDelayMs: 20, maxExportBatchSize: 1, timeoutMs: 2000 } },
    routes: [{ name: 'ext', match: { prefix: '/ext' }, upstream: 'up', auth: { methods: ['external'] } }],
  });
  t.teardown(async () => {
    await g.close();
    await u.close();
    await a.close();
    await otlp.close();
  });
  t.equal((await call(g.url, '/ext', { headers: bearer('alice') })).status, 200);
  const spans = await otlp.waitForSpans(3);
  const server = spans.find((s) => s.kind === SPAN_KIND.SERVER)!;
  const authSpan = spans.find((s) => s.name === 'auth external')!;
  t.ok(authSpan, 'a span for the authorizer call');
  t.equal(authSpan.kind, SPAN_KIND.CLIENT);
  t.equal(authSpan.parentSpanId, server.spanId, 'child of the server span');
  t.equal(authSpan.attributes['http.response.status_code'], 200);
  t.match(a.calls('alice')[0].headers.traceparent, new RegExp(`^00-${server.traceId}-${authSpan.spanId}-01$`), 'the authorizer gets the trace context');
});

t.test('an unsampled request passes its own trace context to the authorizer, replacing a forwarded client one', async (t) => {
  const a = await startAuthorizer();
  const u = await startUpstream();
  const g = await startGateway({
    upstreams: { up: { targets: [u.url] } },
    // traceparent and tracestate are allow-listed: with tracing on, the gateway's context replaces them all the same.
    auth: { external: externalConfig(a.url, { forwardHeaders: ['Authorization', 'traceparent', 'tracestate'] }) },
    tracing: { enabled: true, endpoint: 'http://127.0.0.1:1/v1/traces', sampleRatio: 0 },
    routes: [{ name: 'ext', match: { prefix: '/ext' }, upstream: 'up', auth: { methods: ['external'] } }],
  });
  t.teardown(async () => {
    await g.close();
    await u.close();
    await a.close();
  });
  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const PARENT = '00f067aa0ba902b7';
  const headers = { ...bearer('alice'), traceparent: `00-${TRACE}-${PARENT}-00`, tracestate: 'congo=t61rcWkgMzE' };
  t.equal((await call(g.url, '/ext', { headers })).status, 200);
  const authz = a.calls('alice')[0].headers;
  t.match(authz.traceparent, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-00$`), 'the caller\'s trace goes on, unsampled');
  t.not(String(authz.traceparent).slice(36, 52), PARENT, 'under a parent id of the gateway');
  t.equal(authz.traceparent, u.seen[0].headers.traceparent, 'the same context as the upstream gets');
  t.equal(authz.tracestate, 'congo=t61rcWkgMzE', 'with its tracestate');

  // An invalid client traceparent starts a new trace: its tracestate is not passed on (W3C §3.3).
  const fresh = { ...bearer('nobody'), traceparent: 'not-a-traceparent', tracestate: 'a=b' };
  t.equal((await call(g.url, '/ext', { headers: fresh })).status, 200);
  const second = a.calls('nobody')[0].headers;
  t.match(second.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  t.equal(second.traceparent, u.seen[1].headers.traceparent, 'the new trace, as the upstream gets it');
  t.notOk('tracestate' in second, 'no tracestate');
  t.equal(a.calls('nobody')[0].rawHeaders.filter((h) => h.toLowerCase() === 'traceparent').length, 1, 'one traceparent');
});

t.test('configuration errors name the field', async (t) => {
  const base = (external: Record<string, unknown>, route: Record<string, unknown> = { methods: ['external'] }): TestConfig => ({
    upstreams: { up: { targets: ['http://127.0.0.1:1'] } },
    auth: { external: { url: 'http://127.0.0.1:1/check', ...external } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up', auth: route }],
  });
  const fails = (cfg: TestConfig, pattern: RegExp) => t.throws(() => parseConfig(withTestDefaults(cfg)), pattern);
  fails(base({ cache: { identitySources: ['X-Token'] } }), /auth\.external\.cache\.identitySources\[0\].*forwardHeaders/);
  fails(base({ upstreamHeaders: ['X-Consumer-Id'] }), /auth\.external\.upstreamHeaders\[0\]/);
  fails(base({ upstreamHeaders: ['Authorization'] }), /auth\.external\.upstreamHeaders\[0\]/);
  fails(base({ url: 'ftp://x' }), /auth\.external\.url/);
  fails(base({ clientHeaders: ['Content-Length'] }), /auth\.external\.clientHeaders\[0\]/);
  fails(base({ timeoutMs: 0 }), /auth\.external\.timeoutMs/);
  fails(base({}, { methods: ['jwt'], failOpen: true, required: true }), /routes\[0\]\.auth/);
  fails({ upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['external'] } }] }, /external needs auth\.external/);
  t.doesNotThrow(() => parseConfig(withTestDefaults(base({}))));
});

