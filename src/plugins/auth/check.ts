import { readFileSync } from 'node:fs';
import type { ConfigProblem, GatewayConfig } from '../types';
import { identityHeaderPairs } from './identity-headers';
import { loadPublicKey } from './jwt';
import type { JwtKeyConfig } from './schema';
import type { OidcConfig } from './oidc-schema';
import { aesKey } from './sealed-cookie';

const HMAC = /^HS/;
const MIN_SECRET_BYTES = 32;

/** Reads the PEM of `jwt.publicKey` / `jwt.publicKeyFile`; throws with a readable message. */
export function readPublicKeyPem(jwt: { publicKey?: string; publicKeyFile?: string }): string {
  if (jwt.publicKey !== undefined) return jwt.publicKey;
  return readFileSync(jwt.publicKeyFile!, 'utf8');
}

/** One issuer's keys and algorithms (`at` is auth.jwt or auth.jwt.issuers[i]). */
function checkKeySource(jwt: JwtKeyConfig, at: string, problems: ConfigProblem[]): void {
  const sources = (['secret', 'publicKey', 'publicKeyFile', 'jwks'] as const).filter((k) => jwt[k] !== undefined);
  if (sources.length !== 1) {
    problems.push({
      path: at,
      message: sources.length
        ? `exactly one key source is allowed, got ${sources.join(' and ')}`
        : 'a key source is required: secret, publicKey, publicKeyFile or jwks',
    });
  }
  const hmac = jwt.algorithms.filter((a) => HMAC.test(a));
  if (jwt.secret !== undefined) {
    if (Buffer.byteLength(jwt.secret) < MIN_SECRET_BYTES) {
      problems.push({ path: `${at}.secret`, message: `must be at least ${MIN_SECRET_BYTES} bytes (it is ${Buffer.byteLength(jwt.secret)})` });
    }
    if (/-----BEGIN|"kty"/.test(jwt.secret)) {
      problems.push({ path: `${at}.secret`, message: 'looks like a public key; a public key is never an HMAC secret (use publicKey)' });
    }
    if (hmac.length !== jwt.algorithms.length) {
      problems.push({ path: `${at}.algorithms`, message: 'a secret verifies HS256/HS384/HS512 only' });
    }
  } else if (hmac.length) {
    problems.push({ path: `${at}.algorithms`, message: `${hmac.join(', ')} needs a secret: never an HMAC algorithm with a public key` });
  }
  if (jwt.publicKey !== undefined || jwt.publicKeyFile !== undefined) {
    const path = jwt.publicKey !== undefined ? `${at}.publicKey` : `${at}.publicKeyFile`;
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
      problems.push({ path: `${at}.jwks.url`, message: `"${jwt.jwks.url}" is not a URL` });
    }
    if (url && url.protocol !== 'https:' && url.protocol !== 'http:') {
      problems.push({ path: `${at}.jwks.url`, message: `protocol must be https: or http:, got ${url.protocol}` });
    }
  }
}

/** Auth rules that span fields, added to the config loader's cross-checks. */
export function checkAuthConfig(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  const jwt = cfg.auth.jwt;
  const idHeaders = identityHeaderNames(cfg);
  if (new Set(idHeaders).size !== idHeaders.length) {
    problems.push({ path: 'auth.identityHeaders', message: 'the identity header names must differ from each other' });
  }
  if (jwt) {
    if (jwt.issuers === undefined) {
      if (jwt.algorithms === undefined) problems.push({ path: 'auth.jwt.algorithms', message: 'is required' });
      else checkKeySource({ ...jwt, algorithms: jwt.algorithms }, 'auth.jwt', problems);
    } else {
      const single = (['algorithms', 'secret', 'publicKey', 'publicKeyFile', 'jwks', 'issuer', 'audience'] as const).filter((k) => jwt[k] !== undefined);
      for (const k of single) problems.push({ path: `auth.jwt.${k}`, message: 'with issuers, set it on each issuer instead' });
      const seen = new Map<string, number>();
      jwt.issuers.forEach((iss, i) => {
        const at = `auth.jwt.issuers[${i}]`;
        const twin = seen.get(iss.issuer);
        if (twin !== undefined) problems.push({ path: `${at}.issuer`, message: `duplicate issuer "${iss.issuer}" (also auth.jwt.issuers[${twin}])` });
        else seen.set(iss.issuer, i);
        checkKeySource(iss, at, problems);
      });
    }
    for (const name of Object.keys(jwt.claimHeaders)) {
      const lower = name.toLowerCase();
      if (idHeaders.includes(lower) || lower === 'authorization' || lower === cfg.auth.apiKeys.header.toLowerCase()) {
        problems.push({ path: `auth.jwt.claimHeaders[${JSON.stringify(name)}]`, message: 'collides with an identity or credential header' });
      }
    }
  }

  const cert = cfg.auth.clientCert;
  if (cert) {
    const names = [cert.subjectHeader, cert.fingerprintHeader].map((n) => n.toLowerCase());
    if (names[0] === names[1]) problems.push({ path: 'auth.clientCert.fingerprintHeader', message: 'must differ from subjectHeader' });
    (['subjectHeader', 'fingerprintHeader'] as const).forEach((field, i) => {
      if (idHeaders.includes(names[i]) || names[i] === 'authorization' || names[i] === cfg.auth.apiKeys.header.toLowerCase()) {
        problems.push({ path: `auth.clientCert.${field}`, message: 'collides with an identity or credential header' });
      }
    });
  }
  if (cfg.auth.oidc) checkOidc(cfg.auth.oidc, idHeaders, cfg.auth.apiKeys.header.toLowerCase(), problems);

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

  checkRemoteAuth(cfg, idHeaders, problems);

  cfg.routes.forEach((r, i) => {
    const auth = r.auth;
    if (!auth) return;
    const at = `routes[${i}].auth`;
    if (auth.methods.includes('jwt') && !jwt) problems.push({ path: `${at}.methods`, message: 'jwt needs auth.jwt to be configured' });
    if (auth.methods.includes('clientCert')) {
      if (!cfg.auth.clientCert) problems.push({ path: `${at}.methods`, message: 'clientCert needs auth.clientCert to be configured' });
      if ((cfg.listen.tls?.clientCertificates.mode ?? 'off') === 'off') {
        problems.push({ path: `${at}.methods`, message: 'clientCert needs the TLS listener to ask for client certificates (listen.tls.clientCertificates.mode request or require)' });
      }
    }
    if (auth.methods.includes('external') && !cfg.auth.external) problems.push({ path: `${at}.methods`, message: 'external needs auth.external to be configured' });
    if (auth.methods.includes('introspection') && !cfg.auth.introspection) {
      problems.push({ path: `${at}.methods`, message: 'introspection needs auth.introspection to be configured' });
    }
    if (auth.methods.includes('oidc') && (auth.methods.includes('external') || auth.methods.includes('introspection'))) {
      problems.push({ path: `${at}.methods`, message: 'oidc cannot share a route with external or introspection yet: give the browser login its own route' });
    }
    if (auth.failOpen && !auth.methods.includes('external')) {
      problems.push({ path: `${at}.failOpen`, message: 'failing open applies to the external authorizer: add external to methods or remove failOpen' });
    }
    if (auth.methods.includes('oidc') && !cfg.auth.oidc) problems.push({ path: `${at}.methods`, message: 'oidc needs auth.oidc to be configured' });
    if (auth.tokenTypes && !auth.methods.includes('jwt')) {
      problems.push({ path: `${at}.tokenTypes`, message: 'token types apply to JWTs: add jwt to methods or remove tokenTypes' });
    }
    if (new Set(auth.methods).size !== auth.methods.length) problems.push({ path: `${at}.methods`, message: 'lists a method twice' });
    if (!auth.required && (auth.roles || auth.scopes)) {
      problems.push({ path: `${at}.required`, message: 'roles and scopes need required: true (an anonymous caller has neither)' });
    }
  });
}

/** The external authorizer and introspection settings that span fields. */
function checkRemoteAuth(cfg: GatewayConfig, idHeaders: string[], problems: ConfigProblem[]): void {
  const credentialHeaders = ['authorization', cfg.auth.apiKeys.header.toLowerCase()];
  const ext = cfg.auth.external;
  if (ext) {
    const forwarded = new Set(ext.forwardHeaders.map((h) => h.toLowerCase()));
    ext.cache.identitySources.forEach((h, j) => {
      if (!forwarded.has(h.toLowerCase())) {
        problems.push({ path: `auth.external.cache.identitySources[${j}]`, message: `"${h}" is not in forwardHeaders: decisions are only keyed by what the authorizer sees` });
      }
    });
    if (ext.cache.identitySources.length === 0) problems.push({ path: 'auth.external.cache.identitySources', message: 'at least one header is needed to tell callers apart' });
    // The user id header is free for the authorizer to set (its identity names no user); the consumer and roles headers are the gateway's.
    const gatewaySet = [cfg.auth.identityHeaders.consumerId, cfg.auth.identityHeaders.roles].map((h) => h.toLowerCase());
    ext.upstreamHeaders.forEach((h, j) => {
      const lower = h.toLowerCase();
      if (gatewaySet.includes(lower) || credentialHeaders.includes(lower) || lower === 'host' || lower === 'content-length' || lower === 'transfer-encoding') {
        problems.push({ path: `auth.external.upstreamHeaders[${j}]`, message: 'collides with the consumer or roles header the gateway sets, or a credential or framing header' });
      }
    });
    ext.clientHeaders.forEach((h, j) => {
      if (['content-length', 'transfer-encoding', 'connection'].includes(h.toLowerCase())) {
        problems.push({ path: `auth.external.clientHeaders[${j}]`, message: 'a framing header is the gateway\'s to set, never relayed' });
      }
    });
    try {
      new URL(ext.url);
    } catch {
      problems.push({ path: 'auth.external.url', message: `"${ext.url}" is not a URL` });
    }
  }
  const intro = cfg.auth.introspection;
  if (intro) {
    for (const name of Object.keys(intro.claimHeaders)) {
      const lower = name.toLowerCase();
      if (idHeaders.includes(lower) || credentialHeaders.includes(lower)) {
        problems.push({ path: `auth.introspection.claimHeaders[${JSON.stringify(name)}]`, message: 'collides with an identity or credential header' });
      }
    }
    try {
      new URL(intro.url);
    } catch {
      problems.push({ path: 'auth.introspection.url', message: `"${intro.url}" is not a URL` });
    }
  }
}

function httpUrl(value: string, path: string, problems: ConfigProblem[]): URL | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    problems.push({ path, message: `"${value}" is not an absolute URL` });
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    problems.push({ path, message: `protocol must be https: or http:, got ${url.protocol}` });
    return null;
  }
  return url;
}

function checkOidc(oidc: OidcConfig, idHeaders: string[], apiKeyHeader: string, problems: ConfigProblem[]): void {
  httpUrl(oidc.issuer, 'auth.oidc.issuer', problems);
  const redirect = httpUrl(oidc.redirectUri, 'auth.oidc.redirectUri', problems);
  if (redirect && redirect.hash !== '') problems.push({ path: 'auth.oidc.redirectUri', message: 'must not have a fragment (RFC 6749 §3.1.2)' });
  if (redirect && redirect.pathname === oidc.logoutPath) problems.push({ path: 'auth.oidc.logoutPath', message: 'must differ from the path of redirectUri' });
  if (oidc.postLogoutRedirectUri !== undefined) httpUrl(oidc.postLogoutRedirectUri, 'auth.oidc.postLogoutRedirectUri', problems);
  if (!oidc.scopes.includes('openid')) problems.push({ path: 'auth.oidc.scopes', message: 'must include openid' });
  if (oidc.clientAuth !== undefined && oidc.clientSecret === undefined) {
    problems.push({ path: 'auth.oidc.clientAuth', message: `${oidc.clientAuth} needs clientSecret` });
  }
  oidc.session.keys.forEach((k, i) => {
    if (aesKey(k) === null) problems.push({ path: `auth.oidc.session.keys[${i}]`, message: 'must be 32 bytes in base64 or base64url (openssl rand -base64 32)' });
  });
  for (const name of Object.keys(oidc.claimHeaders)) {
    const lower = name.toLowerCase();
    if (idHeaders.includes(lower) || lower === 'authorization' || lower === 'cookie' || lower === apiKeyHeader) {
      problems.push({ path: `auth.oidc.claimHeaders[${JSON.stringify(name)}]`, message: 'collides with an identity or credential header' });
    }
  }
}

/** A prefix matches a path at segment boundaries, as the router does. */
function prefixMatches(prefix: string, path: string): boolean {
  const p = prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  return p === '/' || path === p || path.startsWith(p + '/');
}

/**
 * The login's own paths are answered by the routes that list `oidc`: one routed elsewhere (the longest
 * matching prefix belongs to another route, or none matches) means logins or logouts never complete.
 */
export function authWarnings(cfg: Readonly<GatewayConfig>): ConfigProblem[] {
  const oidc = cfg.auth.oidc;
  if (!oidc) return [];
  let callback: string;
  try {
    callback = new URL(oidc.redirectUri).pathname;
  } catch {
    return [];
  }
  const out: ConfigProblem[] = [];
  for (const [field, path] of [['redirectUri', callback], ['logoutPath', oidc.logoutPath]] as const) {
    let best = -1;
    let lists = false;
    for (const r of cfg.routes) {
      if (!prefixMatches(r.match.prefix, path) || r.match.prefix.length < best) continue;
      const here = r.auth?.methods.includes('oidc') ?? false;
      lists = r.match.prefix.length === best ? lists || here : here;
      best = r.match.prefix.length;
    }
    if (!lists) {
      out.push({
        path: `auth.oidc.${field}`,
        message: `${path} is not under a route that lists oidc (the longest matching prefix decides), so the gateway never answers it; add a route for it or move it under one`,
      });
    }
  }
  return out;
}

/** The lower-case identity header names, in a fixed order. */
export function identityHeaderNames(cfg: GatewayConfig): string[] {
  const h = cfg.auth.identityHeaders;
  return [h.consumerId, h.userId, h.roles].map((n) => n.toLowerCase());
}
