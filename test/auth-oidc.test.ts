import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { bytes, mint, now } from './helpers/auth';
import { startGateway, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { authorizeAtProvider, CLIENT_ID, CLIENT_SECRET, get, Jar, loginThroughGateway, startOidcProvider, type TestProvider } from './helpers/oidc';
import { freePort } from './helpers/redis';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const key = () => randomBytes(32).toString('base64');
const K1 = key();
const K2 = key();

interface Setup {
  provider: TestProvider;
  upstream: TestUpstream;
  port: number;
  redirectUri: string;
}

async function setup(t: Test, accessTokenTtl = 3600): Promise<Setup> {
  const port = await freePort();
  const redirectUri = `http://127.0.0.1:${port}/oidc/callback`;
  const provider = await startOidcProvider({
    redirectUris: [redirectUri],
    postLogoutRedirectUris: [`http://127.0.0.1:${port}/bye`],
    accessTokenTtl,
    accounts: { alice: { roles: ['admin', 'staff'], email: 'alice@example.test' }, bigname: { name: 'x'.repeat(6000) } },
  });
  const upstream = await startUpstream();
  t.teardown(() => Promise.all([provider.close(), upstream.close()]));
  return { provider, upstream, port, redirectUri };
}

function config(s: Setup, oidc: Record<string, unknown> = {}, port = s.port): TestConfig {
  return {
    listen: { port },
    upstreams: { up: { targets: [s.upstream.url] } },
    auth: {
      oidc: {
        issuer: s.provider.issuer,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri: s.redirectUri,
        scopes: ['openid', 'email', 'roles'],
        postLogoutRedirectUri: `http://127.0.0.1:${s.port}/bye`,
        claimHeaders: { 'X-User-Email': 'email' },
        refreshBeforeSec: 0,
        session: { keys: [K1], secure: false },
        ...oidc,
      },
    },
    routes: [{ name: 'app', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['oidc'] } }],
  } as TestConfig;
}

async function gateway(t: Test, cfg: TestConfig): Promise<TestGateway> {
  const gw = await startGateway(cfg);
  t.teardown(() => gw.close());
  return gw;
}

const api = { accept: 'application/json' };

t.test('a browser is sent to log in; after the login the session reaches the upstream as identity headers', async (t) => {
  const s = await setup(t);
  const gw = await gateway(t, config(s));
  const before = await metricValue(gw.adminUrl, 'gateway_oidc_logins_total', { stage: 'completed' });

  const first = await get(`${gw.url}/app/page?x=1`, new Jar());
  t.equal(first.status, 302, 'a browser without a session is redirected');
  const to = new URL(first.headers.location!);
  t.equal(to.origin, s.provider.issuer, 'to the provider');
  t.equal(to.searchParams.get('response_type'), 'code');
  t.equal(to.searchParams.get('code_challenge_method'), 'S256');
  t.match(to.searchParams.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
  t.ok(to.searchParams.get('state') && to.searchParams.get('nonce'), 'with state and nonce');
  t.equal(to.searchParams.get('redirect_uri'), s.redirectUri);
  const setCookie = String(first.headers['set-cookie']);
  t.match(setCookie, /gateway_session_login=[^;]+; Max-Age=600; Path=\/; HttpOnly; SameSite=Lax/, 'the login state cookie');

  const login = await loginThroughGateway(gw.url, '/app/page?x=1', 'alice');
  t.equal(login.landedAt, `${gw.url}/app/page?x=1`, 'the callback sends the browser where it was going');
  t.ok(login.jar.cookies.get('gateway_session'), 'the session cookie is set');
  t.notOk(login.jar.cookies.has('gateway_session_login'), 'the login state cookie is cleared');

  const page = await call(gw.url, '/app/page', { headers: { accept: 'text/html', cookie: `${login.jar.header()}; theme=dark` } });
  t.equal(page.status, 200);
  const seen = s.upstream.seen.at(-1)!;
  t.equal(seen.headers['x-consumer-id'], 'alice');
  t.equal(seen.headers['x-user-id'], 'alice');
  t.equal(seen.headers['x-user-roles'], 'admin,staff');
  t.equal(seen.headers['x-user-email'], 'alice@example.test');
  t.equal(seen.headers.cookie, 'theme=dark', 'the session cookies never reach the upstream; the others do');
  t.equal(seen.headers.authorization, undefined, 'the access token is not forwarded unless asked');
  t.equal(await metricValue(gw.adminUrl, 'gateway_oidc_logins_total', { stage: 'completed' }), before + 1);

  const spoof = await call(gw.url, '/app/page', { headers: { accept: 'text/html', cookie: login.jar.header(), 'x-consumer-id': 'mallory', 'x_user_roles': 'root' } });
  t.equal(spoof.status, 200);
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'alice', 'a client-sent identity header is replaced');
  t.notOk('x_user_roles' in s.upstream.seen.at(-1)!.headers, 'and its "_" spelling dropped');
});

t.test('API clients get 401, not a redirect; a tampered cookie is refused and cleared', async (t) => {
  const s = await setup(t);
  const gw = await gateway(t, config(s));
  for (const headers of [api, { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' }, {}] as Record<string, string>[]) {
    const res = await call(gw.url, '/app/data', { headers });
    t.equal(res.status, 401, `401 for ${JSON.stringify(headers)}`);
    t.equal(res.json().code, 'UNAUTHENTICATED');
  }
  const postAsBrowser = await call(gw.url, '/app/form', { method: 'POST', headers: { accept: 'text/html' }, body: 'a=1' });
  t.equal(postAsBrowser.status, 401, 'a browser POST without a session is not redirected (its body cannot be replayed)');

  const { jar } = await loginThroughGateway(gw.url, '/app', 'alice');
  const ok = await call(gw.url, '/app/data', { headers: { ...api, cookie: jar.header() } });
  t.equal(ok.status, 200, 'the session works for API calls too');

  const value = jar.cookies.get('gateway_session')!;
  const i = Math.floor(value.length / 2);
  const tampered = value.slice(0, i) + (value[i] === 'A' ? 'B' : 'A') + value.slice(i + 1);
  const res = await call(gw.url, '/app/data', { headers: { ...api, cookie: `gateway_session=${tampered}` } });
  t.equal(res.status, 401, 'a tampered cookie is no session');
  t.match(String(res.headers['set-cookie']), /gateway_session=; Max-Age=0/, 'and is cleared');
  const forged = await call(gw.url, '/app/data', { headers: { ...api, cookie: `gateway_session=${Buffer.from('{"c":"root","r":[],"s":[],"h":[],"ae":null,"ex":9e15}').toString('base64url')}` } });
  t.equal(forged.status, 401, 'an unsealed session is refused');
  const asBrowser = await call(gw.url, '/app', { headers: { accept: 'text/html', cookie: `gateway_session=${tampered}` } });
  t.equal(asBrowser.status, 302, 'a browser with a tampered cookie logs in again');
  t.equal(s.upstream.seen.filter((r) => r.url === '/app/data').length, 1, 'only the valid session reached the upstream');
});

t.test('keys rotate: every key opens, the first seals; a removed key ends its sessions', async (t) => {
  const s = await setup(t);
  const a = await gateway(t, config(s, { session: { keys: [K1], secure: false } }));
  const { jar } = await loginThroughGateway(a.url, '/app', 'alice');
  const cookie = jar.header();

  // Another replica (or the same after a reload) with a new key first and the old one kept.
  const b = await gateway(t, config(s, { session: { keys: [K2, K1], secure: false } }, 0));
  const res = await call(b.url, '/app/x', { headers: { ...api, cookie } });
  t.equal(res.status, 200, 'a session sealed with the old key still opens');
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'alice');

  // b seals new sessions with K2: a replica that only has K1 cannot open them.
  const login = await get(`${b.url}/app`, new Jar());
  t.equal(login.status, 302);
  const c = await gateway(t, config(s, { session: { keys: [K2], secure: false } }, 0));
  const gone = await call(c.url, '/app/x', { headers: { ...api, cookie } });
  t.equal(gone.status, 401, 'once the old key is removed its sessions end');
  const loginCookie = String(login.headers['set-cookie']).split(';')[0];
  const stateFromB = await call(c.url, '/oidc/callback?state=x&code=y', { headers: { cookie: loginCookie } });
  t.equal(stateFromB.status, 400, 'a login state sealed with K2 opens on c (and is then checked)');
  t.match(stateFromB.json().detail, /state parameter does not match/);
});

t.test('the access token is renewed with the refresh token before it expires; a refused refresh ends the session', async (t) => {
  const s = await setup(t, 30);
  const gw = await gateway(t, config(s, { refreshBeforeSec: 60, forwardAccessToken: true }));
  const { jar } = await loginThroughGateway(gw.url, '/app', 'alice');
  const loginToken = jar.cookies.get('gateway_session')!;
  const okBefore = await metricValue(gw.adminUrl, 'gateway_oidc_refreshes_total', { result: 'ok' });

  // Renewal starts 60 s before expiry and the token lives 30 s: the next request renews it.
  const res = await call(gw.url, '/app/r', { headers: { ...api, cookie: jar.header() } });
  t.equal(res.status, 200);
  jar.take(res);
  t.not(jar.cookies.get('gateway_session'), loginToken, 'the renewed session is set on the response');
  t.match(String(res.headers['set-cookie']), /HttpOnly; SameSite=Lax/);
  t.equal(await metricValue(gw.adminUrl, 'gateway_oidc_refreshes_total', { result: 'ok' }), okBefore + 1);
  const auth1 = s.upstream.seen.at(-1)!.headers.authorization;
  t.match(auth1, /^Bearer \S+$/, 'the access token is forwarded when asked');

  // A request still carrying the old cookie (sent before the browser saw the new one) gets the renewed session, without a second refresh.
  const late = await call(gw.url, '/app/r', { headers: { ...api, cookie: `gateway_session=${loginToken}` } });
  t.equal(late.status, 200);
  t.equal(s.upstream.seen.at(-1)!.headers.authorization, auth1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_oidc_refreshes_total', { result: 'ok' }), okBefore + 1, 'one refresh for both');

  // The renewed session renews again with its new (rotated) refresh token.
  const again = await call(gw.url, '/app/r', { headers: { ...api, cookie: jar.header() } });
  t.equal(again.status, 200);
  t.not(s.upstream.seen.at(-1)!.headers.authorization, auth1, 'a new access token');

  // Another replica sees the first cookie, whose refresh token was rotated away: the provider refuses it.
  const other = await gateway(t, config(s, { refreshBeforeSec: 60, forwardAccessToken: true }, 0));
  const refused = await call(other.url, '/app/r', { headers: { ...api, cookie: `gateway_session=${loginToken}` } });
  t.equal(refused.status, 401, 'a refused refresh ends the session');
  t.match(String(refused.headers['set-cookie']), /gateway_session=; Max-Age=0/);
  t.equal(await metricValue(other.adminUrl, 'gateway_oidc_refreshes_total', { result: 'refused' }), 1);
});

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

t.test('the provider down at start-up: 503 with the reason, then logins work once it answers', async (t) => {
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

t.test('the provider down at refresh: the session lasts as long as its access token, then 503', async (t) => {
  // Long enough for a login on a loaded machine; the token is issued before the login completes.
  const ttl = 8;
  const s = await setup(t, ttl);
  const gw = await gateway(t, config(s, { refreshBeforeSec: 60 }));
  const { jar } = await loginThroughGateway(gw.url, '/app', 'alice');
  const loggedInAt = Date.now();
  await s.provider.close();
  const res = await call(gw.url, '/app/x', { headers: { ...api, cookie: jar.header() } });
  t.equal(res.status, 200, 'the access token is still valid: the request goes through');
  t.equal(s.upstream.seen.at(-1)!.headers['x-consumer-id'], 'alice');
  t.ok((await metricValue(gw.adminUrl, 'gateway_oidc_refreshes_total', { result: 'error' })) >= 1, 'the failed refresh is counted');
  await new Promise((r) => setTimeout(r, loggedInAt + ttl * 1000 + 500 - Date.now()));
  const late = await call(gw.url, '/app/x', { headers: { ...api, cookie: jar.header() } });
  t.equal(late.status, 503, 'expired and not renewable: unavailable, not a silent logout');
  t.equal(late.json().code, 'AUTH_UNAVAILABLE');
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
