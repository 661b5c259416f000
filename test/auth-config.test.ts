import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ConfigError, parseConfig } from '../src/config/load';
import { bearerToken, cookieValue, queryValue, withoutCookies, withoutQueryParams } from '../src/plugins/auth/credentials';
import { headerVariants } from '../src/plugins/auth/identity-headers';
import { TtlCache } from '../src/plugins/auth/ttl-cache';
import { parseExpiry } from '../src/plugins/auth/api-keys';

const SECRET = 'a-secret-long-enough-for-hmac-0123456789';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const RSA_PEM = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;

const base = {
  upstreams: { up: { targets: ['http://127.0.0.1:3001'] } },
  routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
};

function problems(input: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig({ ...base, ...input }, { env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

const has = (t: Test, list: string[], expected: string) => t.ok(list.includes(expected), `${expected}\n---\n${list.join('\n')}`);

t.test('defaults: memory key store, X-API-Key, exp required, identity header names', async (t) => {
  const cfg = parseConfig({ ...base, auth: { jwt: { algorithms: ['HS256'], secret: SECRET } } }, { env: {} });
  t.equal(cfg.auth.apiKeys.header, 'X-API-Key');
  t.equal(cfg.auth.apiKeys.store, 'memory');
  t.equal(cfg.auth.apiKeys.query, undefined, 'query parameter off by default');
  t.equal(cfg.auth.jwt!.cookie, undefined, 'cookie off by default');
  t.same(cfg.auth.jwt!.requiredClaims, ['exp']);
  t.same(cfg.auth.identityHeaders, { consumerId: 'X-Consumer-Id', userId: 'X-User-Id', roles: 'X-User-Roles', maxLength: 1024 });
  t.equal(cfg.routes[0].auth!.required, true);
  t.equal(cfg.routes[0].auth!.forwardCredentials, false);
  t.equal(cfg.auth.jwt!.maxTokenBytes, undefined, "maxTokenBytes unset: the listener's header limit applies");
  t.equal(cfg.routes[0].auth!.tokenTypes, undefined, 'any token type by default');
});

t.test('an empty or missing secret stops start-up', async (t) => {
  const jwt = (secret: string) => ({ auth: { jwt: { algorithms: ['HS256'], secret } } });
  has(t, problems(jwt('${JWT_SECRET}'), { JWT_SECRET: '' }), 'auth.jwt.secret: must be at least 32 bytes (it is 0)');
  has(t, problems(jwt('${JWT_SECRET}')), 'auth.jwt.secret: environment variable JWT_SECRET is not set and has no default');
  has(t, problems(jwt('short')), 'auth.jwt.secret: must be at least 32 bytes (it is 5)');
  has(t, problems({ auth: { jwt: { algorithms: ['HS256'] } } }), 'auth.jwt: a key source is required: secret, publicKey, publicKeyFile or jwks');
  t.same(problems(jwt('${JWT_SECRET}'), { JWT_SECRET: SECRET }), []);
});

t.test('algorithms are explicit, never none, never HMAC with a public key', async (t) => {
  has(t, problems({ auth: { jwt: { secret: SECRET } } }), 'auth.jwt.algorithms: is required');
  has(t, problems({ auth: { jwt: { algorithms: [], secret: SECRET } } }), 'auth.jwt.algorithms: expected at least 1 item (got 0)');
  const none = problems({ auth: { jwt: { algorithms: ['none'], secret: SECRET } } });
  t.ok(none.some((p) => p.startsWith('auth.jwt.algorithms[0]: expected one of HS256, HS384') && p.endsWith('(got "none")') && !/\bnone\b.*\(got/.test(p)), none.join('\n'));
  t.same(problems({ log: { level: 'loud' }, auth: { jwt: { algorithms: ['HS256'], secret: SECRET } } }), ['log.level: expected one of fatal, error, warn, info, debug, trace or silent (got "loud")'], 'union errors in general');
  has(t, problems({ auth: { jwt: { algorithms: ['HS256', 'RS256'], publicKey: RSA_PEM } } }), 'auth.jwt.algorithms: HS256 needs a secret: never an HMAC algorithm with a public key');
  has(t, problems({ auth: { jwt: { algorithms: ['HS256'], jwks: { url: 'https://idp.test/jwks' } } } }), 'auth.jwt.algorithms: HS256 needs a secret: never an HMAC algorithm with a public key');
  has(t, problems({ auth: { jwt: { algorithms: ['HS256', 'RS256'], secret: SECRET } } }), 'auth.jwt.algorithms: a secret verifies HS256/HS384/HS512 only');
  has(t, problems({ auth: { jwt: { algorithms: ['HS256'], secret: `  ${RSA_PEM}` } } }), 'auth.jwt.secret: looks like a public key; a public key is never an HMAC secret (use publicKey)');
  has(t, problems({ auth: { jwt: { algorithms: ['RS256'], secret: SECRET, publicKey: RSA_PEM } } }), 'auth.jwt: exactly one key source is allowed, got secret and publicKey');
});

t.test('public keys are checked at start-up', async (t) => {
  const pk = (algorithms: string[], publicKey: string) => problems({ auth: { jwt: { algorithms, publicKey } } });
  t.same(pk(['RS256'], RSA_PEM), []);
  has(t, pk(['RS256'], 'not a pem'), 'auth.jwt.publicKey: is not a PEM public key or certificate');
  has(t, pk(['RS256'], rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string), 'auth.jwt.publicKey: holds a private key; configure the public key only');
  has(t, pk(['RS256'], ec.publicKey.export({ type: 'spki', format: 'pem' }) as string), 'auth.jwt.publicKey: a ec key cannot verify any of RS256');
  const dir = mkdtempSync(join(tmpdir(), 'gw-auth-'));
  writeFileSync(join(dir, 'key.pem'), RSA_PEM);
  t.same(problems({ auth: { jwt: { algorithms: ['RS256'], publicKeyFile: join(dir, 'key.pem') } } }), []);
  t.ok(problems({ auth: { jwt: { algorithms: ['RS256'], publicKeyFile: join(dir, 'missing.pem') } } }).some((p) => p.startsWith('auth.jwt.publicKeyFile: cannot read: ENOENT')));
  has(t, problems({ auth: { jwt: { algorithms: ['RS256'], jwks: { url: 'ftp://idp.test/jwks' } } } }), 'auth.jwt.jwks.url: protocol must be https: or http:, got ftp:');
});

t.test('routes, consumers and keys are cross-checked', async (t) => {
  const key = { prefix: 'gk_abcdefgh', sha256: 'a'.repeat(64) };
  const p = problems({
    auth: { apiKeys: { store: 'redis' }, jwt: { algorithms: ['HS256'], secret: SECRET, claimHeaders: { 'x-user-id': 'email' } } },
    routes: [
      { name: 'a', match: { prefix: '/a' }, upstream: 'up', auth: { methods: ['apiKey', 'apiKey'] } },
      { name: 'b', match: { prefix: '/b' }, upstream: 'up', auth: { methods: ['apiKey'], required: false, roles: ['x'] } },
    ],
    consumers: [
      { id: 'c1', routes: ['a', 'nope'], apiKeys: [key, { ...key, expires: 'tomorrow' }] },
      { id: 'c1', roles: ['a,b'] },
    ],
  });
  has(t, p, 'routes[0].auth.methods: lists a method twice');
  has(t, p, 'routes[1].auth.required: roles and scopes need required: true (an anonymous caller has neither)');
  has(t, p, 'consumers[0].routes[1]: unknown route "nope"');
  has(t, p, 'consumers[0].apiKeys[1].prefix: duplicate key prefix (also consumers[0].apiKeys[0])');
  has(t, p, 'consumers[0].apiKeys[1].expires: "tomorrow" is not an ISO 8601 date');
  has(t, p, 'consumers[0].apiKeys: keys in the configuration file need auth.apiKeys.store: memory');
  has(t, p, 'consumers[1].id: duplicate consumer id "c1" (also consumers[0])');
  has(t, p, 'consumers[1].roles: cannot be sent upstream: a role is not a valid header list item');
  has(t, p, 'auth.jwt.claimHeaders["x-user-id"]: collides with an identity or credential header');
  has(t, problems({}), 'routes[0].auth.methods: jwt needs auth.jwt to be configured');
  const types = (auth: Record<string, unknown>) =>
    problems({ auth: { jwt: { algorithms: ['HS256'], secret: SECRET } }, routes: [{ name: 'a', match: { prefix: '/a' }, upstream: 'up', auth }] });
  has(t, types({ methods: ['apiKey'], tokenTypes: ['at+jwt'] }), 'routes[0].auth.tokenTypes: token types apply to JWTs: add jwt to methods or remove tokenTypes');
  t.ok(types({ methods: ['jwt'], tokenTypes: ['at+jwt, JWT'] }).some((x) => x.startsWith('routes[0].auth.tokenTypes[0]')), 'a list in one string is not a type');
  t.ok(types({ methods: ['jwt'], tokenTypes: [] }).some((x) => x.startsWith('routes[0].auth.tokenTypes')), 'an empty list is refused');
  t.same(types({ methods: ['jwt', 'apiKey'], tokenTypes: ['at+jwt', 'application/JWT'] }), []);
  t.ok(problems({ consumers: [{ id: 'c', apiKeys: [{ prefix: 'gk_UPPER', sha256: 'x' }] }] }).some((x) => x.startsWith('consumers[0].apiKeys[0].prefix')));
});

t.test('building blocks', async (t) => {
  t.same(headerVariants('X-User-Id').sort(), ['x-user-id', 'x-user_id', 'x_user-id', 'x_user_id']);
  t.same(headerVariants('X_API-Key').length, 4);

  const c = new TtlCache<number>(2);
  c.set('a', 1, 100);
  c.set('b', 2, 100);
  c.set('c', 3, 100);
  t.equal(c.size, 2, 'bounded');
  t.equal(c.get('a', 0), undefined, 'oldest evicted');
  t.equal(c.get('c', 99), 3);
  t.equal(c.get('c', 100), undefined, 'not at or past its deadline');
  t.equal(new TtlCache<number>(0).size, 0);

  t.equal(bearerToken('Bearer abc'), 'abc');
  t.equal(bearerToken('BEARER   abc '), 'abc');
  t.equal(bearerToken('Bearer'), '');
  t.equal(bearerToken('Bearerabc'), undefined);
  t.equal(bearerToken('Basic abc'), undefined);
  t.equal(cookieValue('a=1; session=tok; b=2', 'session'), 'tok');
  t.equal(cookieValue('xsession=tok', 'session'), undefined);
  t.equal(withoutCookies('a=1; session=tok;b=2', new Set(['session'])), 'a=1; b=2');
  t.equal(queryValue('?a=1&access_token=x%2By&b', 'access_token'), 'x+y');
  t.equal(queryValue('?access%5Ftoken=z', 'access_token'), 'z', 'encoded names are matched decoded');
  t.equal(withoutQueryParams('?a=%20&access%5Ftoken=z&b=2', new Set(['access_token'])), '?a=%20&b=2');
  t.equal(withoutQueryParams('?access_token=z', new Set(['access_token'])), '');
  t.equal(withoutQueryParams('?bad=%E0%A4%A&x=1', new Set(['x'])), '?bad=%E0%A4%A', 'undecodable parts are kept as they are');

  const now = Date.UTC(2030, 0, 1);
  t.equal(parseExpiry('90d', now), now + 90 * 86_400_000);
  t.equal(parseExpiry('2031-01-01T00:00:00Z', now), Date.UTC(2031, 0, 1));
  t.throws(() => parseExpiry('2029-01-01', now), /in the past/);
  t.throws(() => parseExpiry('soon', now), /neither an ISO 8601 date nor a duration/);
});
