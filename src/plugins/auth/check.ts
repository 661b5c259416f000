import { readFileSync } from 'node:fs';
import type { ConfigProblem, GatewayConfig } from '../types';
import { identityHeaderPairs } from './identity-headers';
import { loadPublicKey } from './jwt';

const HMAC = /^HS/;
const MIN_SECRET_BYTES = 32;

/** Reads the PEM of `jwt.publicKey` / `jwt.publicKeyFile`; throws with a readable message. */
export function readPublicKeyPem(jwt: { publicKey?: string; publicKeyFile?: string }): string {
  if (jwt.publicKey !== undefined) return jwt.publicKey;
  return readFileSync(jwt.publicKeyFile!, 'utf8');
}

/** Auth rules that span fields, added to the config loader's cross-checks. */
export function checkAuthConfig(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  const jwt = cfg.auth.jwt;
  const idHeaders = identityHeaderNames(cfg);
  if (new Set(idHeaders).size !== idHeaders.length) {
    problems.push({ path: 'auth.identityHeaders', message: 'the identity header names must differ from each other' });
  }
  if (jwt) {
    const sources = (['secret', 'publicKey', 'publicKeyFile', 'jwks'] as const).filter((k) => jwt[k] !== undefined);
    if (sources.length !== 1) {
      problems.push({
        path: 'auth.jwt',
        message: sources.length
          ? `exactly one key source is allowed, got ${sources.join(' and ')}`
          : 'a key source is required: secret, publicKey, publicKeyFile or jwks',
      });
    }
    const hmac = jwt.algorithms.filter((a) => HMAC.test(a));
    if (jwt.secret !== undefined) {
      if (Buffer.byteLength(jwt.secret) < MIN_SECRET_BYTES) {
        problems.push({ path: 'auth.jwt.secret', message: `must be at least ${MIN_SECRET_BYTES} bytes (it is ${Buffer.byteLength(jwt.secret)})` });
      }
      if (/-----BEGIN|"kty"/.test(jwt.secret)) {
        problems.push({ path: 'auth.jwt.secret', message: 'looks like a public key; a public key is never an HMAC secret (use publicKey)' });
      }
      if (hmac.length !== jwt.algorithms.length) {
        problems.push({ path: 'auth.jwt.algorithms', message: 'a secret verifies HS256/HS384/HS512 only' });
      }
    } else if (hmac.length) {
      problems.push({ path: 'auth.jwt.algorithms', message: `${hmac.join(', ')} needs a secret: never an HMAC algorithm with a public key` });
    }
    if (jwt.publicKey !== undefined || jwt.publicKeyFile !== undefined) {
      const path = jwt.publicKey !== undefined ? 'auth.jwt.publicKey' : 'auth.jwt.publicKeyFile';
      let pem: string | null = null;
      try {
        pem = readPublicKeyPem(jwt);
      } catch (err) {
        problems.push({ path, message: `cannot read: ${(err as Error).message}` });
      }
      try {
        if (pem !== null) loadPublicKey(pem, jwt.algorithms);
      } catch (err) {
        problems.push({ path, message: (err as Error).message });
      }
    }
    if (jwt.jwks) {
      let url: URL | null = null;
      try {
        url = new URL(jwt.jwks.url);
      } catch {
        problems.push({ path: 'auth.jwt.jwks.url', message: `"${jwt.jwks.url}" is not a URL` });
      }
      if (url && url.protocol !== 'https:' && url.protocol !== 'http:') {
        problems.push({ path: 'auth.jwt.jwks.url', message: `protocol must be https: or http:, got ${url.protocol}` });
      }
    }
    for (const name of Object.keys(jwt.claimHeaders)) {
      const lower = name.toLowerCase();
      if (idHeaders.includes(lower) || lower === 'authorization' || lower === cfg.auth.apiKeys.header.toLowerCase()) {
        problems.push({ path: `auth.jwt.claimHeaders[${JSON.stringify(name)}]`, message: 'collides with an identity or credential header' });
      }
    }
  }

  const consumerIds = new Map<string, number>();
  const prefixes = new Map<string, string>();
  cfg.consumers.forEach((c, i) => {
    const at = `consumers[${i}]`;
    if (consumerIds.has(c.id)) problems.push({ path: `${at}.id`, message: `duplicate consumer id "${c.id}" (also consumers[${consumerIds.get(c.id)}])` });
    consumerIds.set(c.id, i);
    try {
      identityHeaderPairs(cfg.auth.identityHeaders, c.id, undefined, c.roles, []);
    } catch (err) {
      problems.push({ path: `${at}.roles`, message: `cannot be sent upstream: ${(err as Error).message}` });
    }
    for (const [j, r] of (c.routes ?? []).entries()) {
      if (!cfg.routes.some((route) => route.name === r)) problems.push({ path: `${at}.routes[${j}]`, message: `unknown route "${r}"` });
    }
    c.apiKeys.forEach((k, j) => {
      const kat = `${at}.apiKeys[${j}]`;
      const other = prefixes.get(k.prefix);
      if (other) problems.push({ path: `${kat}.prefix`, message: `duplicate key prefix (also ${other})` });
      prefixes.set(k.prefix, kat);
      if (k.prefix.startsWith('ik_') && !cfg.auth.apiKeys.importedKeys) {
        problems.push({ path: `${kat}.prefix`, message: 'an imported key (ik_) is only accepted with auth.apiKeys.importedKeys: true' });
      }
      for (const field of ['created', 'expires'] as const) {
        const v = k[field];
        if (v !== undefined && Number.isNaN(Date.parse(v))) problems.push({ path: `${kat}.${field}`, message: `"${v}" is not an ISO 8601 date` });
      }
    });
    if (c.apiKeys.length && cfg.auth.apiKeys.store !== 'memory') {
      problems.push({ path: `${at}.apiKeys`, message: 'keys in the configuration file need auth.apiKeys.store: memory' });
    }
  });

  if (cfg.auth.apiKeys.store === 'redis') {
    try {
      const u = new URL(cfg.auth.apiKeys.redis.url);
      if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
        problems.push({ path: 'auth.apiKeys.redis.url', message: `protocol must be redis: or rediss:, got ${u.protocol}` });
      }
    } catch {
      problems.push({ path: 'auth.apiKeys.redis.url', message: `"${cfg.auth.apiKeys.redis.url}" is not a URL` });
    }
  }

  cfg.routes.forEach((r, i) => {
    const auth = r.auth;
    if (!auth) return;
    const at = `routes[${i}].auth`;
    if (auth.methods.includes('jwt') && !jwt) problems.push({ path: `${at}.methods`, message: 'jwt needs auth.jwt to be configured' });
    if (auth.tokenTypes && !auth.methods.includes('jwt')) {
      problems.push({ path: `${at}.tokenTypes`, message: 'token types apply to JWTs: add jwt to methods or remove tokenTypes' });
    }
    if (new Set(auth.methods).size !== auth.methods.length) problems.push({ path: `${at}.methods`, message: 'lists a method twice' });
    if (!auth.required && (auth.roles || auth.scopes)) {
      problems.push({ path: `${at}.required`, message: 'roles and scopes need required: true (an anonymous caller has neither)' });
    }
  });
}

/** The lower-case identity header names, in a fixed order. */
export function identityHeaderNames(cfg: GatewayConfig): string[] {
  const h = cfg.auth.identityHeaders;
  return [h.consumerId, h.userId, h.roles].map((n) => n.toLowerCase());
}
