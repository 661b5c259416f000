import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { ConfigError } from '../src/config/problem';
import { bytes, mint, now } from './helpers/auth';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metric } from './helpers/ratelimit';
import { startUpstream } from './helpers/upstream';

const SECRET_A = 'issuer-a-secret-0123456789abcdef-xyz';
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaJwk = { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'c1', use: 'sig', alg: 'RS256' };

const A = 'https://a.example.com';
const B = 'https://b.example.com';
const C = 'https://c.example.com';
const claims = (iss: string | undefined, extra: Record<string, unknown> = {}) => ({ sub: 'user-1', exp: now() + 600, ...(iss === undefined ? {} : { iss }), ...extra });
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

t.test('several issuers: the iss picks the keys, algorithms and audience; an unknown iss is refused before any signature work', async (t) => {
  const up = await startUpstream();
  let jwksFetches = 0;
  const jwks = await startUpstream((_req, res) => {
    jwksFetches++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [rsaJwk] }));
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: {
      jwt: {
        issuers: [
          { issuer: A, algorithms: ['HS256'], secret: SECRET_A },
          { issuer: B, algorithms: ['ES256'], publicKey: ec.publicKey.export({ type: 'spki', format: 'pem' }) as string, audience: ['api-b'] },
          { issuer: C, algorithms: ['RS256'], jwks: { url: `${jwks.url}/jwks.json`, cooldownMs: 0 } },
        ],
      },
    },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  } as TestConfig);
  t.teardown(async () => {
    await gw.close();
    await Promise.all([up.close(), jwks.close()]);
  });
  const fetchesAtStart = jwksFetches;

  const fromA = await mint(claims(A, { sub: 'from-a' }), bytes(SECRET_A));
  const fromB = await mint(claims(B, { sub: 'from-b', aud: 'api-b' }), ec.privateKey, { alg: 'ES256' });
  const fromC = await mint(claims(C, { sub: 'from-c' }), rsa.privateKey, { alg: 'RS256', kid: 'c1' });
  for (const [token, who] of [
    [fromA, 'from-a'],
    [fromB, 'from-b'],
    [fromC, 'from-c'],
  ]) {
    const r = await call(gw.url, '/api/x', bearer(token));
    t.equal(r.status, 200, who);
    t.equal(up.seen.at(-1)?.headers['x-consumer-id'], who, `${who}: verified with its issuer's keys`);
  }

  const refusals: [string, string, RegExp][] = [
    [await mint(claims(B, { aud: 'api-b' }), bytes(SECRET_A)), 'UNAUTHENTICATED', /algorithm|signature|not valid/i],
    [await mint(claims(B, { aud: 'api-a' }), ec.privateKey, { alg: 'ES256' }), 'UNAUTHENTICATED', /aud/i],
    [await mint(claims(A), ec.privateKey, { alg: 'ES256' }), 'UNAUTHENTICATED', /algorithm|not valid/i],
    [await mint(claims('https://evil.example.com'), bytes(SECRET_A)), 'UNKNOWN_TOKEN_ISSUER', /issuer \(iss\) is not accepted/],
    [await mint(claims(A.toUpperCase()), bytes(SECRET_A)), 'UNKNOWN_TOKEN_ISSUER', /not accepted/],
    [await mint(claims(undefined), bytes(SECRET_A)), 'UNKNOWN_TOKEN_ISSUER', /names no issuer/],
    [await mint(claims('https://evil.example.com'), rsa.privateKey, { alg: 'RS256', kid: 'never-seen' }), 'UNKNOWN_TOKEN_ISSUER', /not accepted/],
  ];
  for (const [token, code, detail] of refusals) {
    const r = await call(gw.url, '/api/x', bearer(token));
    t.equal(r.status, 401);
    t.equal(r.json().code, code);
    t.match(r.json().detail, detail);
    t.equal(r.headers['www-authenticate'], 'Bearer realm="gateway", error="invalid_token"');
  }
  t.equal(jwksFetches, fetchesAtStart, "an unknown issuer's token with an unknown kid never reaches any issuer's key set");
  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.equal(metric(m, 'gateway_auth_jwt_issuer_tokens_total', { issuer: 'unknown' }), 4, 'unknown and missing issuers are counted');
  t.equal(metric(m, 'gateway_auth_jwt_issuer_tokens_total', { issuer: A }), 2);
  t.equal(metric(m, 'gateway_auth_jwt_issuer_tokens_total', { issuer: B }), 3);
});

t.test('the single-issuer form still works and counts as its issuer', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET_A, issuer: A } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  } as TestConfig);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await call(gw.url, '/api/x', bearer(await mint(claims(A), bytes(SECRET_A))))).status, 200);
  const other = await call(gw.url, '/api/x', bearer(await mint(claims(B), bytes(SECRET_A))));
  t.equal(other.status, 401);
  t.equal(other.json().code, 'UNAUTHENTICATED', 'one issuer: its iss rule refuses others as before');
  t.equal(metric((await call(gw.adminUrl, '/metrics')).body, 'gateway_auth_jwt_issuer_tokens_total', { issuer: A }), 2);
});

function problems(jwt: Record<string, unknown>): string[] {
  try {
    parseConfig(withTestDefaults({ auth: { jwt }, upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] } as TestConfig));
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

t.test('configuration of several issuers', async (t) => {
  t.same(problems({ secret: SECRET_A }), ['auth.jwt.algorithms: is required']);
  t.same(problems({ algorithms: ['HS256'], secret: SECRET_A, issuers: [{ issuer: A, algorithms: ['HS256'], secret: SECRET_A }] }), [
    'auth.jwt.algorithms: with issuers, set it on each issuer instead',
    'auth.jwt.secret: with issuers, set it on each issuer instead',
  ]);
  t.same(
    problems({
      issuers: [
        { issuer: A, algorithms: ['HS256'], secret: 'short' },
        { issuer: A, algorithms: ['RS256'] },
      ],
    }),
    [
      'auth.jwt.issuers[0].secret: must be at least 32 bytes (it is 5)',
      'auth.jwt.issuers[1].issuer: duplicate issuer "https://a.example.com" (also auth.jwt.issuers[0])',
      'auth.jwt.issuers[1]: a key source is required: secret, publicKey, publicKeyFile or jwks',
    ],
  );
  t.same(problems({ issuers: [{ issuer: A, algorithms: ['HS256'], publicKey: ec.publicKey.export({ type: 'spki', format: 'pem' }) }] }), [
    'auth.jwt.issuers[0].algorithms: HS256 needs a secret: never an HMAC algorithm with a public key',
    'auth.jwt.issuers[0].publicKey: a ec key cannot verify any of HS256',
  ]);
  t.match(problems({ issuers: [{ algorithms: ['HS256'], secret: SECRET_A }] }), [/auth\.jwt\.issuers\[0\]\.issuer/]);
});
