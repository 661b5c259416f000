import t from 'tap';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { api, config, gateway, get, Jar, K1, K2, loginThroughGateway, setup } from './helpers/oidc';

// Many real logins (a provider, its forms, the callback): more than the default per-file timeout on a busy machine.
t.setTimeout(240000);

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
