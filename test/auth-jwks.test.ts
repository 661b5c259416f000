import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { bytes, mint, now } from './helpers/auth';
import { startGateway, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { freePort } from './helpers/redis';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const COOLDOWN = 400;

interface Signer {
  kid: string;
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
}

function rsaSigner(kid: string): Signer {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' } };
}

const k1 = rsaSigner('k1');
const k2 = rsaSigner('k2');
const attacker = rsaSigner('k1');

/** A JWKS endpoint whose document the test changes as it goes. */
async function jwksServer(port = 0): Promise<{ server: TestUpstream; keys: Record<string, unknown>[]; mode: { answer: 'keys' | 'garbage' | '500' } }> {
  const keys: Record<string, unknown>[] = [];
  const mode = { answer: 'keys' as 'keys' | 'garbage' | '500' };
  const server = await startUpstream((_req, res) => {
    if (mode.answer === '500') {
      res.writeHead(500);
      res.end('oops');
      return;
    }
    const body = mode.answer === 'garbage' ? '<html>not json' : JSON.stringify({ keys });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  }, port);
  return { server, keys, mode };
}

const claims = (extra: Record<string, unknown> = {}) => ({ sub: 'jwks-user', exp: now() + 600, ...extra });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const signed = (s: Signer, header: Record<string, unknown> = {}, key: KeyObject = s.privateKey) =>
  mint(claims(), key, { alg: 'RS256', kid: s.kid, ...header });

function gatewayConfig(upUrl: string, jwksUrl: string, cooldownMs = COOLDOWN): TestConfig {
  return {
    upstreams: { up: { targets: [upUrl] } },
    auth: { jwt: { algorithms: ['RS256'], jwks: { url: jwksUrl, cooldownMs, timeoutMs: 1000 } } },
    routes: [{ name: 'api', match: { prefix: '/api' }, upstream: 'up', auth: { methods: ['jwt'] } }],
  };
}

t.test('keys are cached; an unknown kid refetches at most once per cooldown', async (t) => {
  const cooldown = 1500;
  // Tokens are minted first so the timing below is the gateway's alone.
  const t1 = await signed(k1);
  const t2 = await signed(k2);
  const randoms = await Promise.all(Array.from({ length: 20 }, (_, i) => signed({ ...k2, kid: `rand-${i}` })));
  const hmac = await mint(claims(), bytes('a-shared-secret-anyone-can-download'), { alg: 'HS256', kid: 'sym' });
  const forged = await signed(k1, {}, attacker.privateKey);

  const up = await startUpstream();
  const jwks = await jwksServer();
  jwks.keys.push(k1.jwk, { kty: 'oct', kid: 'sym', k: Buffer.from('a-shared-secret-anyone-can-download').toString('base64url') });
  const gw = await startGateway(gatewayConfig(up.url, jwks.server.url, cooldown));
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await jwks.server.close();
  });
  t.equal(jwks.server.seen.length, 1, 'fetched once at start-up');

  t.equal((await call(gw.url, '/api/x', { headers: bearer(t2) })).status, 401, 'unknown kid right after start-up');
  t.equal(jwks.server.seen.length, 1, 'no refetch: the start-up fetch is within the cooldown');
  for (let i = 0; i < 3; i++) t.equal((await call(gw.url, '/api/x', { headers: bearer(t1) })).status, 200);
  t.equal(jwks.server.seen.length, 1, 'known kid: served from the cache');

  await sleep(cooldown + 50);
  t.equal((await call(gw.url, '/api/x', { headers: bearer(t2) })).status, 401, 'kid not published yet');
  t.equal(jwks.server.seen.length, 2, 'the unknown kid triggered one refetch');
  const burst = await Promise.all(randoms.map(async (tok) => (await call(gw.url, '/api/x', { headers: bearer(tok) })).status));
  t.same(new Set(burst), new Set([401]), 'a burst of unknown kids is refused');
  t.equal(jwks.server.seen.length, 2, 'no refetch within the cooldown');

  jwks.keys.push(k2.jwk);
  await sleep(cooldown + 50);
  const rotated = await Promise.all(Array.from({ length: 10 }, async () => (await call(gw.url, '/api/x', { headers: bearer(t2) })).status));
  t.same(new Set(rotated), new Set([200]), 'after the cooldown the new key is fetched and accepted');
  t.equal(jwks.server.seen.length, 3, 'concurrent requests shared one refetch');

  t.equal((await call(gw.url, '/api/x', { headers: bearer(hmac) })).status, 401, 'a symmetric key in the JWKS is never used');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(forged) })).status, 401, 'right kid, wrong key');
});

t.test('kid, jku, x5u and jwk headers never cause a fetch outside the configured JWKS', async (t) => {
  const up = await startUpstream();
  const trap = await startUpstream();
  const jwks = await jwksServer();
  jwks.keys.push(k1.jwk);
  const gw = await startGateway(gatewayConfig(up.url, jwks.server.url));
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await trap.close();
    await jwks.server.close();
  });
  const fetchesBefore = jwks.server.seen.length;
  const attackerJwk = { ...attacker.jwk, kid: undefined };
  const tricks: [string, Record<string, unknown>][] = [
    ['kid path traversal', { kid: '../../../../../../etc/passwd' }],
    ['kid file URL', { kid: 'file:///etc/passwd' }],
    ['kid URL', { kid: `${trap.url}/kid` }],
    ['kid SQL-ish', { kid: "k1' OR '1'='1" }],
    ['kid __proto__', { kid: '__proto__' }],
    ['jku to the trap', { jku: `${trap.url}/jwks.json`, kid: 'trap-key' }],
    ['jku with the known kid', { jku: `${trap.url}/jwks.json`, kid: 'k1' }],
    ['x5u to the trap', { x5u: `${trap.url}/cert.pem`, kid: 'trap-key' }],
    ['embedded jwk', { jwk: attackerJwk, kid: 'k1' }],
    ['embedded jwk without kid', { jwk: attackerJwk, kid: undefined }],
    ['x5c chain', { x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'], kid: 'k1' }],
  ];
  for (const [what, header] of tricks) {
    const token = await mint(claims(), attacker.privateKey, { alg: 'RS256', ...header } as never);
    const res = await call(gw.url, '/api/x', { headers: bearer(token) });
    t.equal(res.status, 401, what);
  }
  const kidNotString = await mint(claims(), attacker.privateKey, { alg: 'RS256', kid: { $ref: trap.url } } as never);
  t.equal((await call(gw.url, '/api/x', { headers: bearer(kidNotString) })).status, 401, 'kid that is not a string');
  t.equal(trap.seen.length, 0, 'no request ever reached a URL named in a token');
  t.ok(jwks.server.seen.length - fetchesBefore <= 1, 'at most one refetch of the configured JWKS (cooldown)');
  t.equal(up.seen.length, 0, 'nothing reached the upstream');
});

t.test('cached keys keep working while the JWKS endpoint is down; no usable key is 503', async (t) => {
  const up = await startUpstream();
  const jwks = await jwksServer();
  jwks.keys.push(k1.jwk);
  const gw = await startGateway(gatewayConfig(up.url, jwks.server.url));
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  jwks.mode.answer = 'garbage';
  await sleep(COOLDOWN + 50);
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await signed(k2)) })).status, 503, 'unknown kid, and the key set cannot be read');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await signed(k1)) })).status, 200, 'garbage answer: cached key kept');
  jwks.mode.answer = '500';
  await sleep(COOLDOWN + 50);
  await call(gw.url, '/api/x', { headers: bearer(await signed(k2)) });
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await signed(k1)) })).status, 200, 'HTTP 500: cached key kept');

  await jwks.server.close();
  await sleep(COOLDOWN + 50);
  const res = await call(gw.url, '/api/x', { headers: bearer(await signed(k2)) });
  t.equal(res.status, 503, 'endpoint down and no key for this kid: 503, not 401');
  t.equal(res.json().code, 'AUTH_UNAVAILABLE');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await signed(k1)) })).status, 200, 'endpoint down: cached key still works');
  t.equal((await call(gw.url, '/api/x', { headers: bearer(await signed(k1, {}, attacker.privateKey)) })).status, 401, 'and still checks signatures');
});

t.test('start-up with the JWKS unreachable answers 503 until the keys can be fetched', async (t) => {
  const up = await startUpstream();
  const port = await freePort();
  const gw = await startGateway(gatewayConfig(up.url, `http://127.0.0.1:${port}/.well-known/jwks.json`));
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const token = await signed(k1);
  const res = await call(gw.url, '/api/x', { headers: bearer(token) });
  t.equal(res.status, 503);
  t.equal(res.json().code, 'AUTH_UNAVAILABLE');
  t.equal(up.seen.length, 0);

  const jwks = await jwksServer(port);
  t.teardown(() => jwks.server.close());
  jwks.keys.push(k1.jwk);
  await sleep(COOLDOWN + 50);
  t.equal((await call(gw.url, '/api/x', { headers: bearer(token) })).status, 200, 'the endpoint came back');
  t.equal(jwks.server.seen.length, 1);
  t.match((await call(gw.adminUrl, '/metrics')).body, /gateway_auth_jwks_fetches_total\{result="error"\} [1-9]/);
});
