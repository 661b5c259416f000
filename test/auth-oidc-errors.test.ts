import t from 'tap';
import { bytes, mint, now } from './helpers/auth';
import type { TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { api, authorizeAtProvider, config, gateway, get, Jar, K1, loginThroughGateway, setup } from './helpers/oidc';
import { freePort } from './helpers/redis';

// Many real logins (a provider, its forms, the callback): more than the default per-file timeout on a busy machine.
t.setTimeout(240000);

t.test('logout clears the session and sends the browser to the end-session endpoint', async (t) => {
  const s = await setup(t);
  const gw = await gateway(t, config(s));
  const { jar } = await loginThroughGateway(gw.url, '/app', 'alice');
  const res = await get(`${gw.url}/oidc/logout`, jar);
  t.equal(res.status, 302);
  t.notOk(jar.cookies.has('gateway_session'), 'the session cookie is cleared');
  const to = new URL(res.headers.location!);
  t.equal(to.origin + to.pathname, `${s.provider.issuer}/session/end`);
  t.ok(to.searchParams.get('id_token_hint'), 'with the ID token as hint');
  t.equal(to.searchParams.get('post_logout_redirect_uri'), `http://127.0.0.1:${s.port}/bye`);
  const confirm = await get(to.href, new Jar());
  t.equal(confirm.status, 200, 'the provider accepts the logout request (hint and redirect)');
  const after = await call(gw.url, '/app', { headers: api });
  t.equal(after.status, 401);
});

t.test('callback errors are clear 4xx: bad state, provider error, replayed code, no login in progress', async (t) => {
  const s = await setup(t);
  const gw = await gateway(t, config(s));
  const failures = (reason: string) => metricValue(gw.adminUrl, 'gateway_oidc_callback_failures_total', { reason });

  const noLogin = await call(gw.url, '/oidc/callback?code=abc&state=def', { headers: { accept: 'text/html' } });
  t.equal(noLogin.status, 400);
  t.equal(noLogin.json().code, 'OIDC_CALLBACK_INVALID');
  t.match(noLogin.json().detail, /no login is in progress/);

  const jar = new Jar();
  const start = await get(`${gw.url}/app`, jar);
  const state = new URL(start.headers.location!).searchParams.get('state')!;
  const bad = await call(gw.url, '/oidc/callback?code=abc&state=forged', { headers: { cookie: jar.header() } });
  t.equal(bad.status, 400, 'bad state');
  t.match(bad.json().detail, /state parameter does not match/);
  t.match(String(bad.headers['set-cookie']), /gateway_session_login=; Max-Age=0/, 'the login attempt is used up');

  const denied = await call(gw.url, `/oidc/callback?error=access_denied&error_description=no&state=${state}`, { headers: { cookie: jar.header() } });
  t.equal(denied.status, 403, 'the user refused at the provider');
  t.equal(denied.json().code, 'OIDC_LOGIN_REFUSED');
  t.match(denied.json().detail, /error=access_denied/);

  const wrongIss = await call(gw.url, `/oidc/callback?code=abc&state=${state}&iss=http%3A%2F%2Fevil.test`, { headers: { cookie: jar.header() } });
  t.equal(wrongIss.status, 400, 'a response from another issuer (RFC 9207)');

  const login = await loginThroughGateway(gw.url, '/app', 'alice');
  const u = new URL(login.callbackUrl);
  const replay = await call(gw.url, u.pathname + u.search, { headers: { cookie: login.loginCookie } });
  t.equal(replay.status, 400, 'a replayed code');
  t.equal(replay.json().code, 'OIDC_CALLBACK_INVALID');
  t.match(replay.json().detail, /refused the authorization code \(invalid_grant\)/);
  t.equal(await failures('code_refused'), 1);
  t.equal(await failures('state'), 3);
  t.equal(await failures('provider_error'), 1);
});

t.test('the provider down at start-up, or naming another issuer: 503 with the reason', async (t) => {
  const s = await setup(t);
  const deadPort = await freePort();
  const gw = await gateway(t, config(s, { issuer: `http://127.0.0.1:${deadPort}`, discovery: { retryMs: 0, timeoutMs: 1000 } }));
  const res = await call(gw.url, '/app', { headers: { accept: 'text/html' } });
  t.equal(res.status, 503);
  t.equal(res.json().code, 'AUTH_UNAVAILABLE');
  t.match(res.json().detail, /identity provider cannot be reached: .*ECONNREFUSED/);
  t.ok(gw.logs.some((l) => l.msg === 'OIDC discovery failed'), 'logged');

  const wrongIssuer = await gateway(t, config(s, { issuer: `${s.provider.issuer}/other` }, 0));
  const res2 = await call(wrongIssuer.url, '/app', { headers: { accept: 'text/html' } });
  t.equal(res2.status, 503);
  t.match(res2.json().detail, /answered 404|names issuer/);
});

t.test('config: oidc methods need auth.oidc; keys must be 32 bytes; openid is required', async (t) => {
  const s = await setup(t);
  const { parseConfig } = await import('../src/config/load');
  const bad = (cfg: TestConfig) => {
    try {
      parseConfig({ ...cfg, listen: { port: 0 } });
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  t.match(bad({ ...config(s), auth: {} }), /routes\[0\]\.auth\.methods: oidc needs auth\.oidc/);
  t.match(bad(config(s, { session: { keys: ['short'] } })), /auth\.oidc\.session\.keys\[0\]: must be 32 bytes/);
  t.match(bad(config(s, { scopes: ['email'] })), /auth\.oidc\.scopes: must include openid/);
  t.match(bad(config(s, { redirectUri: '/relative' })), /auth\.oidc\.redirectUri: "\/relative" is not an absolute URL/);
  t.equal(bad(config(s)), '');

  const { configWarnings } = await import('../src/config/warnings');
  t.same(configWarnings(parseConfig({ ...config(s), listen: { port: 0 } })), [], 'the login paths are under the oidc route');
  const elsewhere = config(s);
  (elsewhere.routes as Record<string, unknown>[]).push({ name: 'api', match: { prefix: '/oidc' }, upstream: 'up' });
  const warned = configWarnings(parseConfig({ ...elsewhere, listen: { port: 0 } }));
  t.same(
    warned.map((w) => w.path),
    ['auth.oidc.redirectUri', 'auth.oidc.logoutPath'],
    'a login path taken by a route without oidc is warned about',
  );
  t.match(warned[0].message, /\/oidc\/callback is not under a route that lists oidc/);
});

t.test('a large session is split over several cookies; one too large for them is refused clearly', async (t) => {
  const s = await setup(t);
  const gw = await gateway(t, config(s, { scopes: ['openid', 'profile'], session: { keys: [K1], secure: false, maxCookies: 4 } }));
  // A 6 KB claim makes the ID token (kept for the logout hint) and so the session larger than one cookie.
  const { jar } = await loginThroughGateway(gw.url, '/app', 'bigname');
  const chunks = ['gateway_session', 'gateway_session.1', 'gateway_session.2'].filter((n) => jar.cookies.has(n));
  t.ok(chunks.length >= 2, `split over ${chunks.length} cookies`);
  for (const n of chunks) t.ok(n.length + 1 + jar.cookies.get(n)!.length < 4000, `${n} stays under 4 KB`);
  const res = await call(gw.url, '/app/x', { headers: { ...api, cookie: jar.header() } });
  t.equal(res.status, 200, 'the chunks join into the session');
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'bigname');
  const missing = await call(gw.url, '/app/x', { headers: { ...api, cookie: `gateway_session=${jar.cookies.get('gateway_session')}` } });
  t.equal(missing.status, 401, 'a session missing a chunk is refused');

  const small = await gateway(t, config(s, { scopes: ['openid', 'profile'], session: { keys: [K1], secure: false, maxCookies: 1 } }, 0));
  const j = new Jar();
  const start = await get(`${small.url}/app`, j);
  const cb = await authorizeAtProvider(start.headers.location!, 'bigname');
  const u = new URL(cb);
  const refused = await call(small.url, u.pathname + u.search, { headers: { cookie: j.header() } });
  t.equal(refused.status, 502);
  t.equal(refused.json().code, 'IDP_BAD_RESPONSE');
  t.match(refused.json().detail, /do not fit in 1 cookies of 4 KB/);
  t.equal(await metricValue(small.adminUrl, 'gateway_oidc_callback_failures_total', { reason: 'session_too_large' }), 1);
});

t.test('a route listing jwt and oidc takes a bearer token first, else the session', async (t) => {
  const s = await setup(t);
  const secret = 'a-test-secret-of-at-least-thirty-two-bytes';
  const cfg = config(s);
  (cfg.auth as Record<string, unknown>).jwt = { algorithms: ['HS256'], secret };
  (cfg.routes as { auth: unknown }[])[0].auth = { methods: ['jwt', 'oidc'] };
  const gw = await gateway(t, cfg);

  const token = await mint({ sub: 'service-a', exp: now() + 600 }, bytes(secret));
  const byToken = await call(gw.url, '/app/x', { headers: { ...api, authorization: `Bearer ${token}` } });
  t.equal(byToken.status, 200);
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'service-a');

  const none = await call(gw.url, '/app/x', { headers: api });
  t.equal(none.status, 401);
  t.equal(none.headers['www-authenticate'], 'Bearer realm="gateway"', 'the bearer challenge is announced; a session has no scheme');
  const badToken = await call(gw.url, '/app/x', { headers: { accept: 'text/html', authorization: 'Bearer nope' } });
  t.equal(badToken.status, 401, 'an invalid token is refused, not turned into a login');

  const { jar } = await loginThroughGateway(gw.url, '/app', 'alice');
  const bySession = await call(gw.url, '/app/x', { headers: { ...api, cookie: jar.header() } });
  t.equal(bySession.status, 200);
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'alice');
});
