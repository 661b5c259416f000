import { generateKeyPairSync } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnsecuredJWT } from 'jose';
import t, { type Test } from 'tap';
import type { JwtAlgorithm } from '../src/plugins/auth/schema';
import { b64url, bytes, headerValues, makeKey, mint, mintRaw, now, rawExchange } from './helpers/auth';
import { parseConfig } from '../src/config/load';
import { startGateway, withTestDefaults, type TestConfig, type TestGateway } from './helpers/gateway';
import { call, type Answer } from './helpers/http';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';
const ISS = 'https://issuer.test';
const AUD = 'gateway-api';

const claims = (extra: Record<string, unknown> = {}) => ({ sub: 'user-1', iss: ISS, aud: AUD, exp: now() + 600, ...extra });
const hs = (extra: Record<string, unknown> = {}, secret = SECRET) => mint(claims(extra), bytes(secret));
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

let up: TestUpstream;
let gw: TestGateway;

t.before(async () => {
  up = await startUpstream();
  gw = await startGateway({
    log: { level: 'debug' },
    upstreams: { up: { targets: [up.url] } },
    auth: {
      jwt: {
        algorithms: ['HS256'],
        secret: SECRET,
        issuer: ISS,
        audience: [AUD, 'other-api'],
        clockToleranceSec: 30,
        cookie: 'session',
        query: 'access_token',
        claimHeaders: { 'X-User-Email': 'email' },
      },
    },
    consumers: [
      { id: 'partner', roles: ['partner'], scopes: ['orders:read'], routes: ['api', 'orders'] },
    ],
    routes: [
      { name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } },
      { name: 'admin', match: { prefix: '/admin-area' }, upstream: 'up', auth: { methods: ['jwt'], roles: ['admin', 'ops'] } },
      {
        name: 'orders',
        match: { prefix: '/orders' },
        upstream: 'up',
        auth: { methods: ['jwt'], scopes: { GET: ['orders:read'], '*': ['orders:read', 'orders:write'] } },
      },
      { name: 'open', match: { prefix: '/open' }, upstream: 'up', auth: { methods: ['jwt'], required: false } },
      { name: 'passthrough', match: { prefix: '/pass' }, upstream: 'up', auth: { methods: ['jwt'], forwardCredentials: true } },
      { name: 'public', match: { prefix: '/public' }, upstream: 'up' },
    ],
  });
});

t.teardown(async () => {
  await gw.close();
  await up.close();
});

/** Calls the gateway and checks the request never reached the upstream. */
async function refused(t: Test, path: string, headers: Record<string, string>, status = 401, what = ''): Promise<Answer> {
  const before = up.seen.length;
  const res = await call(gw.url, path, { headers });
  t.equal(res.status, status, `${what}: status ${status}`);
  t.equal(up.seen.length, before, `${what}: the upstream was not called`);
  if (status === 401) {
    t.match(res.headers['www-authenticate'], /^Bearer realm="gateway"/, `${what}: WWW-Authenticate`);
    t.equal(res.json().code, 'UNAUTHENTICATED', `${what}: problem code`);
  }
  return res;
}

t.test('a valid token passes; the upstream gets the verified identity and no credential', async (t) => {
  const token = await hs({ roles: ['reader', 'writer'], email: 'u1@example.test' });
  const res = await call(gw.url, '/api/x', { headers: bearer(token) });
  t.equal(res.status, 200);
  const seen = up.seen.at(-1)!;
  t.same(headerValues(seen.rawHeaders, 'x-consumer-id'), ['user-1']);
  t.same(headerValues(seen.rawHeaders, 'x-user-id'), ['user-1']);
  t.same(headerValues(seen.rawHeaders, 'x-user-roles'), ['reader,writer']);
  t.same(headerValues(seen.rawHeaders, 'x-user-email'), ['u1@example.test'], 'claim mapped to a header');
  t.same(headerValues(seen.rawHeaders, 'authorization'), [], 'Authorization is not forwarded');

  const lower = await call(gw.url, '/api/x', { headers: { authorization: `bearer   ${token}` } });
  t.equal(lower.status, 200, 'the scheme is case-insensitive');
});

t.test('missing, foreign-scheme and empty credentials are 401 with a challenge', async (t) => {
  const res = await refused(t, '/api/x', {}, 401, 'no credentials');
  t.equal(res.headers['www-authenticate'], 'Bearer realm="gateway"');
  t.equal(res.json().detail, 'credentials are required');
  await refused(t, '/api/x', { authorization: 'Basic dXNlcjpwYXNz' }, 401, 'Basic scheme');
  const empty = await refused(t, '/api/x', { authorization: 'Bearer ' }, 401, 'empty bearer');
  t.equal(empty.headers['www-authenticate'], 'Bearer realm="gateway", error="invalid_token"');
});

t.test('attack suite: every forged or broken token is 401, never 500', async (t) => {
  const header = b64url({ alg: 'HS256', typ: 'JWT' });
  const payload = b64url(claims());
  const good = await hs();
  const [, , sig] = good.split('.');
  const unsigned = new UnsecuredJWT(claims()).encode();
  const cases: [string, string][] = [
    ['alg none, trailing dot', unsigned],
    ['alg none, no trailing dot', unsigned.replace(/\.$/, '')],
    ['alg none with a copied signature', `${b64url({ alg: 'none' })}.${payload}.${sig}`],
    ['alg NONE', `${b64url({ alg: 'NONE' })}.${payload}.`],
    ['wrong secret', await hs({}, 'another-secret-that-is-long-enough-0123456789')],
    ['missing exp', await mint({ sub: 'u', iss: ISS, aud: AUD }, bytes(SECRET))],
    ['exp as a string', await hs({ exp: String(now() + 600) })],
    ['expired beyond tolerance', await hs({ exp: now() - 120 })],
    ['nbf in the future', await hs({ nbf: now() + 120 })],
    ['wrong iss', await hs({ iss: 'https://evil.test' })],
    ['iss prefix', await hs({ iss: 'https://issuer.tes' })],
    ['iss suffix', await hs({ iss: 'https://issuer.test.evil' })],
    ['iss as array', await hs({ iss: [ISS] })],
    ['missing iss', await mint({ sub: 'u', aud: AUD, exp: now() + 60 }, bytes(SECRET))],
    ['wrong aud', await hs({ aud: 'evil-api' })],
    ['aud prefix', await hs({ aud: 'gateway-ap' })],
    ['aud suffix', await hs({ aud: 'gateway-api-x' })],
    ['aud array without ours', await hs({ aud: ['evil', 'gateway-apix'] })],
    ['missing aud', await mint({ sub: 'u', iss: ISS, exp: now() + 60 }, bytes(SECRET))],
    ['no sub', await mint({ iss: ISS, aud: AUD, exp: now() + 60 }, bytes(SECRET))],
    ['sub not a string', await hs({ sub: 42 })],
    ['roles not strings', await hs({ roles: [{ admin: true }] })],
    ['CR/LF in sub', await hs({ sub: 'user\r\nX-Injected: 1' })],
    ['comma in a role', await hs({ roles: ['a,admin'] })],
    ['huge sub', await hs({ sub: 'x'.repeat(2000) })],
    ['unknown crit', await mint(claims(), bytes(SECRET), { alg: 'HS256', crit: ['x-must-understand'], 'x-must-understand': 1 } as never, { 'x-must-understand': true })],
    ['2 segments', `${header}.${payload}`],
    ['4 segments', `${good}.${sig}`],
    ['1 segment', header],
    ['bad base64url in header', `${header}!.${payload}.${sig}`],
    ['bad base64url in payload', `${header}.${payload}*.${sig}`],
    ['padding in signature', `${header}.${payload}.${sig}=`],
    ['header not JSON', `${b64url('not json')}.${payload}.${sig}`],
    ['header is an array', `${b64url([{ alg: 'HS256' }])}.${payload}.${sig}`],
    ['payload is a JSON array', `${header}.${b64url([claims()])}.${sig}`],
    ['payload is a number', `${header}.${b64url('42')}.${sig}`],
    ['garbage', '!!!.@@@.###'],
    ['dots only', '..'],
    ['oversized token', `${header}.${b64url({ ...claims(), pad: 'x'.repeat(9000) })}.${sig}`],
  ];
  for (const [what, token] of cases) await refused(t, '/api/x', bearer(token), 401, what);

  const huge = await call(gw.url, '/api/x', { headers: bearer('a'.repeat(20000)) });
  t.equal(huge.status, 431, 'a token beyond the header size limit is refused by the parser, not a 500');
});

t.test('clock tolerance: expired or not-yet-valid inside the tolerance still passes', async (t) => {
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await hs({ exp: now() - 10 })) })).status, 200, 'exp 10 s ago, tolerance 30 s');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await hs({ nbf: now() + 10 })) })).status, 200, 'nbf in 10 s, tolerance 30 s');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await hs({ aud: ['x', 'other-api'] })) })).status, 200, 'aud array with an accepted value');
});

t.test('time claims (exp, nbf, iat) are NumericDates: finite numbers from 1970 to the year 9999', async (t) => {
  const raw = (payload: string) => mintRaw(payload, bytes(SECRET));
  const base = `"sub":"user-1","iss":"${ISS}","aud":"${AUD}"`;
  const cases: [string, string][] = [
    ['exp 1e308', await hs({ exp: 1e308 })],
    ['exp 1e400 (read as Infinity)', await raw(`{${base},"exp":1e400}`)],
    ['exp one second past 9999-12-31T23:59:59Z', await hs({ exp: 253402300800 })],
    ['exp as a boolean', await hs({ exp: true })],
    ['exp null', await hs({ exp: null })],
    ['nbf -1e308', await hs({ nbf: -1e308 })],
    ['nbf -1e400 (read as -Infinity)', await raw(`{${base},"exp":${now() + 600},"nbf":-1e400}`)],
    ['nbf before 1970', await hs({ nbf: -1 })],
    ['nbf as a string', await hs({ nbf: String(now() - 10) })],
    ['iat an object', await hs({ iat: {} })],
    ['iat an array', await hs({ iat: [now()] })],
    ['iat as a string', await hs({ iat: String(now()) })],
    ['iat as a boolean', await hs({ iat: false })],
    ['iat null', await hs({ iat: null })],
    ['iat 1e308', await hs({ iat: 1e308 })],
    ['iat before 1970', await hs({ iat: -86400 })],
  ];
  for (const [what, token] of cases) {
    const res = await refused(t, '/api/x', bearer(token), 401, what);
    t.match(res.json().detail, /^the token (claim "(exp|nbf|iat)" is not a date|issuer, audience or a time claim is not accepted)/, `${what}: detail`);
  }
  const iat = await refused(t, '/api/x', bearer(await hs({ iat: {} })), 401, 'iat an object');
  t.equal(iat.json().detail, 'the token claim "iat" is not a date (seconds since 1970, up to the year 9999)');

  const fine: [string, string][] = [
    ['exp at the last second of 9999', await hs({ exp: 253402300799 })],
    ['fractional exp, nbf and iat', await hs({ exp: now() + 600.5, nbf: now() - 0.25, iat: now() - 0.75 })],
    ['iat and nbf at the epoch', await hs({ iat: 0, nbf: 0 })],
  ];
  for (const [what, token] of fine) t.equal((await call(gw.url, '/api/x', { headers: bearer(token) })).status, 200, what);
});

t.test('default maxTokenBytes: any token that fits in the request head is read', async (t) => {
  const g = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  });
  t.teardown(() => g.close());
  const big = await mint({ sub: 'big-claims', exp: now() + 600, profile: 'p'.repeat(8192) }, bytes(SECRET));
  t.ok(big.length > 10900 && big.length < 11100, `an 8 KB claim makes an 11 KB token (${big.length})`);
  const res = await call(g.url, '/api/x', { headers: bearer(big) });
  t.equal(res.status, 200, 'accepted end to end under the default 16 KiB header limit');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-consumer-id'), ['big-claims']);

  const huge = await mint({ sub: 'huge', exp: now() + 600, profile: 'p'.repeat(14000) }, bytes(SECRET));
  t.equal((await call(g.url, '/api/x', { headers: bearer(huge) })).status, 431, 'past the header limit: the listener refuses it');

  const wide = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { limits: { maxHeaderBytes: 65536 } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  });
  t.teardown(() => wide.close());
  t.equal((await call(wide.url, '/api/x', { headers: bearer(huge) })).status, 200, 'a larger header limit admits larger tokens');

  const capped = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { limits: { maxHeaderBytes: 65536 } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET, maxTokenBytes: 4096 } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  });
  t.teardown(() => capped.close());
  const over = await call(capped.url, '/api/x', { headers: bearer(big) });
  t.equal(over.status, 401, 'an explicit maxTokenBytes still applies');
  t.equal(over.json().detail, 'the token is too large');
  t.equal((await call(capped.url, '/api/x', { headers: bearer(await hs()) })).status, 200, 'a small token passes');
});

t.test('tokenTypes: a route can accept only some token types (typ), compared as media types', async (t) => {
  const key = makeKey();
  const g = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    consumers: [{ id: 'keyed', apiKeys: [{ prefix: key.prefix, sha256: key.sha256 }] }],
    routes: [
      { name: 'access', match: { prefix: '/access' }, upstream: 'up', auth: { methods: ['jwt'], tokenTypes: ['at+jwt'] } },
      { name: 'long', match: { prefix: '/long' }, upstream: 'up', auth: { methods: ['jwt', 'apiKey'], tokenTypes: ['Application/AT+JWT'] } },
      { name: 'any', match: { prefix: '/any' }, upstream: 'up', auth: { methods: ['jwt'] } },
    ],
  });
  t.teardown(() => g.close());
  const typed = (typ: unknown) => mint({ sub: 'typed', exp: now() + 600 }, bytes(SECRET), (typ === undefined ? { alg: 'HS256' } : { alg: 'HS256', typ }) as never);
  const accepted = ['at+jwt', 'application/at+jwt', 'AT+JWT', 'Application/At+Jwt'];
  const refusedTypes: [string, unknown][] = [
    ['typ JWT', 'JWT'],
    ['typ application/jwt', 'application/jwt'],
    ['no typ', undefined],
    ['typ at+jwt with a parameter', 'at+jwt; v=1'],
    ['typ text/at+jwt', 'text/at+jwt'],
    ['typ refresh+jwt', 'refresh+jwt'],
    ['typ empty', ''],
  ];
  for (const path of ['/access/x', '/long/x']) {
    for (const typ of accepted) t.equal((await call(g.url, path, { headers: bearer(await typed(typ)) })).status, 200, `${path}: typ ${typ}`);
    for (const [what, typ] of refusedTypes) {
      const before = up.seen.length;
      const res = await call(g.url, path, { headers: bearer(await typed(typ)) });
      t.equal(res.status, 401, `${path}: ${what} refused`);
      t.equal(up.seen.length, before, `${path}: ${what} never reached the upstream`);
      t.equal(res.json().detail, 'the token type (typ) is not accepted on this route', `${path}: ${what}: detail`);
      t.match(res.headers['www-authenticate'], /^Bearer realm="gateway", error="invalid_token"/, `${path}: ${what}: challenge`);
    }
  }
  t.equal((await call(g.url, '/long/x', { headers: { 'x-api-key': key.key } })).status, 200, 'API keys are not token types: unaffected');
  for (const [what, typ] of [['JWT', 'JWT'], ['none', undefined], ['at+jwt', 'at+jwt']] as const) {
    t.equal((await call(g.url, '/any/x', { headers: bearer(await typed(typ)) })).status, 200, `a route without tokenTypes accepts typ ${what}`);
  }
  for (const path of ['/access/x', '/any/x']) {
    const res = await call(g.url, path, { headers: bearer(await typed(5)) });
    t.equal(res.status, 401, `${path}: a typ that is not a string is malformed`);
    t.equal(res.json().detail, 'the token typ must be a string');
  }
  const again = await typed('JWT');
  t.equal((await call(g.url, '/any/x', { headers: bearer(again) })).status, 200, 'cached on one route');
  t.equal((await call(g.url, '/access/x', { headers: bearer(again) })).status, 401, 'a cached verification is still checked against the route');
});

t.test('a cached verification never outlives the token', async (t) => {
  const g = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET, clockToleranceSec: 0 } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  });
  t.teardown(() => g.close());
  const exp = now() + 2;
  const token = await mint({ sub: 'short', exp }, bytes(SECRET));
  t.equal((await call(g.url, '/api/x', { headers: bearer(token) })).status, 200);
  t.equal((await call(g.url, '/api/x', { headers: bearer(token) })).status, 200, 'second use (cached)');
  await sleep(exp * 1000 - Date.now() + 50);
  const late = await call(g.url, '/api/x', { headers: bearer(token) });
  t.equal(late.status, 401, 'refused once exp has passed, although it was cached');
  t.equal(late.json().detail, 'the token has expired');
});

t.test('a reload with a new secret drops cached verifications', async (t) => {
  const base = {
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  };
  const g = await startGateway({ ...base, auth: { jwt: { algorithms: ['HS256'], secret: SECRET } } } as TestConfig);
  t.teardown(() => g.close());
  const token = await mint({ sub: 'rotating', exp: now() + 600 }, bytes(SECRET));
  t.equal((await call(g.url, '/api/x', { headers: bearer(token) })).status, 200);
  const rotated = 'the-next-secret-after-rotation-0123456789';
  await g.gateway.reload(parseConfig(withTestDefaults({ ...base, auth: { jwt: { algorithms: ['HS256'], secret: rotated } } } as TestConfig), { env: {} }));
  t.equal((await call(g.url, '/api/x', { headers: bearer(token) })).status, 401, 'the old secret no longer verifies, cache or not');
  t.equal((await call(g.url, '/api/x', { headers: bearer(await mint({ sub: 'r', exp: now() + 60 }, bytes(rotated))) })).status, 200);
});

t.test('spoofed identity headers never reach the upstream, in any spelling', async (t) => {
  const token = await hs({ sub: 'real-user', roles: ['reader'] });
  const spoof = [
    'X-User-Id', 'evil-1',
    'x-user-id', 'evil-2',
    'X-USER-ID', 'evil-3',
    'X_User_Id', 'evil-4',
    'x_user-id', 'evil-5',
    'X-User-Roles', 'admin',
    'X_USER_ROLES', 'admin',
    'X-Consumer-Id', 'evil-consumer',
    'x_consumer_id', 'evil-consumer',
    'X-User-Email', 'ceo@example.test',
  ];
  for (const path of ['/api/x', '/public/x', '/open/x']) {
    const headers: Record<string, string[]> = {};
    for (let i = 0; i < spoof.length; i += 2) (headers[spoof[i]] ??= []).push(spoof[i + 1]);
    if (path === '/api/x') headers.authorization = [`Bearer ${token}`];
    const res = await call(gw.url, path, { headers });
    t.equal(res.status, 200, path);
    const raw = up.seen.at(-1)!.rawHeaders;
    if (path === '/api/x') {
      t.same(headerValues(raw, 'x-user-id'), ['real-user'], `${path}: exactly one user id, the verified one`);
      t.same(headerValues(raw, 'x-user-roles'), ['reader'], `${path}: exactly one roles header`);
      t.same(headerValues(raw, 'x-consumer-id'), ['real-user'], `${path}: exactly one consumer id`);
    } else {
      for (const h of ['x-user-id', 'x-user-roles', 'x-consumer-id']) t.same(headerValues(raw, h), [], `${path}: no ${h} at all`);
    }
    t.same(headerValues(raw, 'x-user-email'), [], `${path}: mapped claim header stripped (the token has no email)`);
  }

  // Whitespace around the name is not a header name HTTP allows: the parser refuses the request.
  for (const line of ['X-User-Id : evil', 'X-User-Id\t: evil', ' X-User-Id: evil', 'X-User-Id:ok\r\n evil']) {
    const before = up.seen.length;
    const answer = await rawExchange(gw.port, `GET /public/x HTTP/1.1\r\nHost: a\r\n${line}\r\nConnection: close\r\n\r\n`);
    t.match(answer, /^HTTP\/1\.1 400 /, `${JSON.stringify(line)} is refused`);
    t.equal(up.seen.length, before, `${JSON.stringify(line)} never reaches the upstream`);
  }
});

t.test('claim headers: unsafe values are left out; unsafe identities are refused', async (t) => {
  const res = await call(gw.url, '/api/x', { headers: bearer(await hs({ email: 'a@b.test\r\nX-Evil: 1' })) });
  t.equal(res.status, 200);
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-user-email'), [], 'a claim with CR/LF is not sent');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-evil'), []);
  await refused(t, '/api/x', bearer(await hs({ sub: 'tab\there' })), 401, 'control character in sub');
});

t.test('roles, scopes per method and consumer route lists: 403 when authenticated but not allowed', async (t) => {
  const user = await hs({ roles: ['reader'] });
  const admin = await hs({ roles: ['reader', 'ops'] });
  const noRoles = await hs();
  let res = await refused(t, '/admin-area/x', bearer(user), 403, 'missing role');
  t.equal(res.json().code, 'FORBIDDEN');
  await refused(t, '/admin-area/x', bearer(noRoles), 403, 'no roles at all');
  t.equal((await call(gw.url, '/admin-area/x', { headers: bearer(admin) })).status, 200, 'one of the roles is enough');
  t.equal((await call(gw.url, '/admin-area/x', { headers: bearer(await hs({ roles: 'ops reader' })) })).status, 200, 'space-separated roles');

  const read = await hs({ scope: 'orders:read profile' });
  const write = await hs({ scope: ['orders:read', 'orders:write'] });
  t.equal((await call(gw.url, '/orders/1', { headers: bearer(read) })).status, 200, 'GET needs orders:read');
  res = await call(gw.url, '/orders/1', { method: 'POST', headers: bearer(read) });
  t.equal(res.status, 403, 'POST needs orders:write too');
  t.match(res.json().detail, /orders:write/);
  t.equal((await call(gw.url, '/orders/1', { method: 'DELETE', headers: bearer(write) })).status, 200, '* covers other methods');

  // A configured consumer adds its roles and scopes, and may be limited to some routes.
  const partner = await hs({ sub: 'partner' });
  t.equal((await call(gw.url, '/orders/1', { headers: bearer(partner) })).status, 200, 'scope from the consumer config');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-user-roles'), ['partner']);
  await refused(t, '/admin-area/x', bearer(await hs({ sub: 'partner', roles: ['ops'] })), 403, 'consumer not allowed on this route');
});

t.test('required: false lets anonymous callers through without identity, but not bad tokens', async (t) => {
  const res = await call(gw.url, '/open/x', { headers: { 'x-user-id': 'spoof' } });
  t.equal(res.status, 200);
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-user-id'), []);
  t.equal((await call(gw.url, '/open/x', { headers: bearer(await hs()) })).status, 200);
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'x-user-id'), ['user-1']);
  await refused(t, '/open/x', bearer('not.a.token'), 401, 'invalid token on an optional route');
});

t.test('credentials: forwarded only with forwardCredentials; cookie and query sources are stripped', async (t) => {
  const token = await hs();
  await call(gw.url, '/pass/x', { headers: bearer(token) });
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'authorization'), [`Bearer ${token}`], 'forwardCredentials keeps Authorization');

  let res = await call(gw.url, '/api/x', { headers: { cookie: `theme=dark; session=${token}; lang=en` } });
  t.equal(res.status, 200, 'token from the configured cookie');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'cookie'), ['theme=dark; lang=en'], 'the token cookie is removed, the others kept');
  res = await call(gw.url, '/api/x', { headers: { cookie: `session=${token}` } });
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'cookie'), [], 'no cookie left: no Cookie header');
  await call(gw.url, '/api/x', { headers: { cookie: 'a=1', ...bearer(token) } });
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'cookie'), ['a=1'], 'other cookies survive');

  res = await call(gw.url, `/api/x?page=2&access_token=${token}&q=a%20b`);
  t.equal(res.status, 200, 'token from the configured query parameter');
  t.equal(up.seen.at(-1)!.url, '/api/x?page=2&q=a%20b', 'the token parameter is removed, the rest byte for byte');
  await refused(t, '/api/x?token=' + token, {}, 401, 'another query parameter is not a source');
});

t.test('credentials never reach the logs', async (t) => {
  const token = await hs({ sub: 'log-check' });
  await call(gw.url, `/api/x?access_token=${token}`);
  await call(gw.url, '/api/x', { headers: bearer(token.slice(0, -2) + 'xx') });
  const text = JSON.stringify(gw.logs);
  t.ok(gw.logs.length > 0, 'there are log lines');
  t.notOk(text.includes(token.split('.')[2].slice(0, 20)), 'no token signature in the logs');
  t.notOk(text.includes(token.split('.')[1].slice(0, 20)), 'no token payload in the logs');
});

t.test('metrics count decisions by route and result', async (t) => {
  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.match(m, /gateway_auth_requests_total\{route="api",result="ok"\} \d+/);
  t.match(m, /gateway_auth_requests_total\{route="api",result="unauthenticated"\} \d+/);
  t.match(m, /gateway_auth_requests_total\{route="admin",result="forbidden"\} \d+/);
});

t.test('public keys: RS, PS, ES and EdDSA tokens; HMAC tokens signed with the public key are refused', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const pem = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const start = (algorithms: JwtAlgorithm[], publicKey: string) =>
    startGateway({
      upstreams: { up: { targets: [up.url] } },
      auth: { jwt: { algorithms, publicKey } },
      routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
    });
  const rs = await start(['RS256', 'PS256'], pem);
  const es = await start(['ES256'], ec.publicKey.export({ type: 'spki', format: 'pem' }) as string);
  const eddsa = await start(['EdDSA'], ed.publicKey.export({ type: 'spki', format: 'pem' }) as string);
  t.teardown(async () => {
    await rs.close();
    await es.close();
    await eddsa.close();
  });
  const c = { sub: 'pk-user', exp: now() + 600 };
  t.equal((await call(rs.url, '/api/x', { headers: bearer(await mint(c, rsa.privateKey, { alg: 'RS256' })) })).status, 200, 'RS256');
  t.equal((await call(rs.url, '/api/x', { headers: bearer(await mint(c, rsa.privateKey, { alg: 'PS256' })) })).status, 200, 'PS256');
  t.equal((await call(rs.url, '/api/x', { headers: bearer(await mint(c, rsa.privateKey, { alg: 'RS384' })) })).status, 401, 'RS384 not configured');
  t.equal((await call(es.url, '/api/x', { headers: bearer(await mint(c, ec.privateKey, { alg: 'ES256' })) })).status, 200, 'ES256');
  t.equal((await call(eddsa.url, '/api/x', { headers: bearer(await mint(c, ed.privateKey, { alg: 'EdDSA' })) })).status, 200, 'EdDSA');
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  t.equal((await call(rs.url, '/api/x', { headers: bearer(await mint(c, other.privateKey, { alg: 'RS256' })) })).status, 401, 'another RSA key');

  const der = rsa.publicKey.export({ type: 'spki', format: 'der' });
  const pkcs1 = rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string;
  const jwk = JSON.stringify(rsa.publicKey.export({ format: 'jwk' }));
  const variants: [string, string | Uint8Array][] = [
    ['PEM', pem],
    ['PEM without trailing newline', pem.trimEnd()],
    ['PEM with leading whitespace', `  \n${pem}`],
    ['PEM with CRLF', pem.replace(/\n/g, '\r\n')],
    ['PKCS#1 PEM', pkcs1],
    ['base64 body only', der.toString('base64')],
    ['DER bytes', new Uint8Array(der)],
    ['JWK JSON', jwk],
  ];
  for (const alg of ['HS256', 'HS384', 'HS512']) {
    for (const [what, key] of variants) {
      const token = await mint(c, typeof key === 'string' ? bytes(key) : key, { alg });
      const res = await call(rs.url, '/api/x', { headers: bearer(token) });
      t.equal(res.status, 401, `${alg} signed with the public key as ${what}`);
    }
  }
});
