import { createPublicKey } from 'node:crypto';
import type { Plugin, PluginContext } from '../types';
import type { CounterFamily } from '../../observability/fast-metrics';
import type { CompiledRoute } from '../../routes';
import { ApiKeyAuthenticator, MemoryKeyStore, type KeyStore } from './api-keys';
import { readPublicKeyPem } from './check';
import { ClientCertAuthenticator } from './client-cert';
import { ConsumerDirectory } from './consumers';
import { ExternalAuthorizer } from './external';
import { Introspector } from './introspection';
import { RemoteMetrics, remoteMetricFamilies, RemoteService, type RemoteMetricFamilies, type RemoteServiceName } from './remote-call';
import type { AuthBreakerConfig } from './remote-schema';
import { headerVariants, type IdentityHeaderNames } from './identity-headers';
import { JwksKeySource } from './jwks';
import { algorithmsForKey, claimRules, JwtAuthenticator, keyVerifier, loadPublicKey, type KeySource, type TokenIssuers } from './jwt';
import { CALLBACK_FAILURES, OidcLogin, type OidcMetrics } from './oidc';
import { OidcClient } from './oidc-client';
import { RedisKeyStore } from './redis-keys';
import type { JwtConfig, JwtKeyConfig } from './schema';
import { AuthStep, type CredentialSources } from './step';

/** Auth metrics live as long as the gateway: plugins are rebuilt on reload, metric families are not. */
function authMetrics(ctx: PluginContext): {
  decisions: CounterFamily;
  jwksFetches: CounterFamily;
  jwtIssuers: CounterFamily;
  clientCerts: CounterFamily;
  remote: RemoteMetricFamilies;
} {
  return ctx.shared('auth:metrics', () => {
    const jwksFetches = ctx.metrics.counter('gateway_auth_jwks_fetches_total', 'Fetches of the JWKS key set, by result (ok, error).', ['result']);
    // Both series from the start: a dashboard shows 0 fetch errors rather than nothing.
    jwksFetches.child('ok');
    jwksFetches.child('error');
    return {
      decisions: ctx.metrics.counter(
        'gateway_auth_requests_total',
        'Authentication decisions, by route and result (ok, anonymous, unauthenticated, forbidden, unavailable).',
        ['route', 'result'],
      ),
      jwksFetches,
      jwtIssuers: ctx.metrics.counter(
        'gateway_auth_jwt_issuer_tokens_total',
        'Tokens verified (not served from the token cache), by issuer: a configured iss, any (the single-issuer form without issuer), or unknown (an iss no issuer entry names: refused before any signature work).',
        ['issuer'],
      ),
      clientCerts: ctx.metrics.counter(
        'gateway_auth_client_cert_total',
        'Client certificates checked as credentials, by result: ok, unverified (did not chain to the CA), no_identity (no subject CN or SAN of the configured kind), unknown_consumer, unsendable (the name cannot be an identity header).',
        ['result'],
      ),
      remote: remoteMetricFamilies(ctx.metrics),
    };
  });
}

/** Login metrics, every series present from the start so the dashboard shows zeros rather than gaps. */
function oidcMetrics(ctx: PluginContext): OidcMetrics {
  return ctx.shared('auth:oidc-metrics', () => {
    const m = ctx.metrics;
    const logins = m.counter('gateway_oidc_logins_total', 'OIDC logins, by stage: started (sent to the provider) and completed (session set).', ['stage']);
    const callbackFailures = m.counter('gateway_oidc_callback_failures_total', 'OIDC login callbacks refused, by reason.', ['reason']);
    const refreshes = m.counter('gateway_oidc_refreshes_total', 'OIDC session renewals with the refresh token, by result (ok, refused, error).', ['result']);
    for (const s of ['started', 'completed']) logins.child(s);
    for (const r of CALLBACK_FAILURES) callbackFailures.child(r);
    for (const r of ['ok', 'refused', 'error']) refreshes.child(r);
    return { logins, callbackFailures, refreshes };
  });
}

/**
 * The pool, breaker and time budget of a remote auth service outlive reloads that keep its
 * settings; the decision caches belong to the runtime (they hold identities built from its consumers).
 */
function remoteService(
  ctx: PluginContext,
  name: RemoteServiceName,
  cfg: { url: string; timeoutMs: number; connections: number; breaker: AuthBreakerConfig },
  maxBytes: number,
): { service: RemoteService; metrics: RemoteMetrics } {
  const metrics = ctx.shared(`auth:remote-metrics:${name}`, () => new RemoteMetrics(authMetrics(ctx).remote, name));
  const key = JSON.stringify([cfg.url, cfg.timeoutMs, cfg.connections, cfg.breaker, maxBytes]);
  const service = ctx.shared(`auth:remote:${name}:${key}`, () => {
    const s = new RemoteService({ name, url: cfg.url, timeoutMs: cfg.timeoutMs, connections: cfg.connections, maxBytes, breaker: cfg.breaker, metrics, log: ctx.log });
    ctx.addResource(s);
    return s;
  });
  return { service, metrics };
}

/**
 * The key store of the configuration in `ctx`. A Redis store (its connections and cache) outlives
 * reloads and is shared with the admin API; the memory store is the configuration itself.
 */
export function keyStoreFor(ctx: PluginContext): KeyStore {
  const k = ctx.config.auth.apiKeys;
  if (k.store === 'memory') return new MemoryKeyStore(ctx.config.consumers);
  return ctx.shared(`auth:key-store:${JSON.stringify([k.redis, k.cacheMs, k.cacheMaxEntries])}`, () => {
    const store = new RedisKeyStore(k, ctx.log);
    ctx.addResource(store);
    return store;
  });
}

function jwtKeySource(jwt: JwtConfig, keyCfg: JwtKeyConfig, ctx: PluginContext): KeySource {
  const rules = claimRules(jwt, keyCfg);
  const algs = keyCfg.algorithms;
  if (keyCfg.secret !== undefined) return { kind: 'static', verify: keyVerifier(keyCfg.secret, algs, rules) };
  const jwksConfig = keyCfg.jwks;
  if (jwksConfig) {
    // The fetched keys survive reloads that keep the same key set and claim rules.
    const jwks = ctx.shared(`auth:jwks:${JSON.stringify([jwksConfig, algs, rules])}`, () => {
      const source = new JwksKeySource({ ...jwksConfig, algorithms: algs, rules, log: ctx.log, fetches: authMetrics(ctx).jwksFetches });
      ctx.addResource(source);
      return source;
    });
    return { kind: 'jwks', jwks };
  }
  const pem = loadPublicKey(readPublicKeyPem(keyCfg), algs);
  const key = createPublicKey(pem);
  const algorithms = algorithmsForKey(key.asymmetricKeyType, key.asymmetricKeyDetails?.namedCurve, algs);
  return { kind: 'static', verify: keyVerifier(pem, algorithms, rules) };
}

/** The issuers of `jwt`: the single-issuer form (checked to have algorithms), or one entry per `iss`. */
function tokenIssuers(jwt: JwtConfig, ctx: PluginContext): TokenIssuers {
  const counts = authMetrics(ctx).jwtIssuers;
  if (jwt.issuers === undefined) {
    return { one: { keys: jwtKeySource(jwt, { ...jwt, algorithms: jwt.algorithms! }, ctx), verified: counts.child(jwt.issuer ?? 'any') } };
  }
  const byIss = new Map(jwt.issuers.map((i) => [i.issuer, { keys: jwtKeySource(jwt, i, ctx), verified: counts.child(i.issuer) }]));
  return { byIss, unknown: counts.child('unknown') };
}

/** The iss values a JWT verified here carries (issuer or issuers[]), or undefined when any is accepted. */
function localIssuers(jwt: JwtConfig | undefined): ReadonlySet<string> | undefined {
  if (jwt?.issuers !== undefined) return new Set(jwt.issuers.map((i) => i.issuer));
  return jwt?.issuer !== undefined ? new Set([jwt.issuer]) : undefined;
}

/**
 * Authentication at the door. Every route loses client-sent identity headers; routes with `auth`
 * also get a step that verifies the credential, checks the route's rules, sets ctx.identity and
 * the identity headers, and keeps the credential from the upstream unless told otherwise.
 */
export function createAuthPlugin(ctx: PluginContext): Plugin {
  const cfg = ctx.config;
  const auth = cfg.auth;
  const names: IdentityHeaderNames = { ...auth.identityHeaders };
  const consumers = new ConsumerDirectory(cfg.consumers, names);
  // Node refuses a longer head (431) before any of this runs, so the listener's limit is the natural default.
  const maxTokenBytes = auth.jwt?.maxTokenBytes ?? cfg.policies.limits.maxHeaderBytes;
  const jwt = auth.jwt ? new JwtAuthenticator(auth.jwt, tokenIssuers(auth.jwt, ctx), consumers, names, maxTokenBytes) : null;
  let introspection: Introspector | null = null;
  if (auth.introspection) {
    const i = auth.introspection;
    const { service, metrics } = remoteService(ctx, 'introspection', i, i.maxResponseBytes);
    introspection = new Introspector(i, service, consumers, names, metrics, maxTokenBytes, ctx.log);
  }
  let external: ExternalAuthorizer | null = null;
  let externalMetrics: RemoteMetrics | null = null;
  if (auth.external) {
    const { service, metrics } = remoteService(ctx, 'external', auth.external, Math.max(auth.external.denyBodyMaxBytes, 16384));
    external = new ExternalAuthorizer(auth.external, service, consumers, names, metrics);
    externalMetrics = metrics;
  }

  const certCfg = auth.clientCert;
  const clientCert = certCfg ? new ClientCertAuthenticator(certCfg, consumers, names, authMetrics(ctx).clientCerts) : null;
  const oidcCfg = auth.oidc;
  let oidc: OidcLogin | null = null;
  if (oidcCfg) {
    // Discovery and keys survive reloads that keep the same provider settings.
    const key = JSON.stringify([oidcCfg.issuer, oidcCfg.clientId, oidcCfg.clientSecret, oidcCfg.clientAuth, oidcCfg.algorithms, oidcCfg.clockToleranceSec, oidcCfg.discovery]);
    const client = ctx.shared(`auth:oidc:${key}`, () => {
      const c = new OidcClient({ cfg: oidcCfg, log: ctx.log, jwksFetches: authMetrics(ctx).jwksFetches });
      ctx.addResource(c);
      return c;
    });
    oidc = new OidcLogin(oidcCfg, client, consumers, names, oidcMetrics(ctx), ctx.log);
  }

  const sources: CredentialSources = {
    jwt,
    clientCert,
    apiKeys: new ApiKeyAuthenticator(keyStoreFor(ctx), consumers, auth.apiKeys.importedKeys),
    apiKeyHeader: auth.apiKeys.header.toLowerCase(),
    apiKeyHeaderName: auth.apiKeys.header,
    jwtCookie: auth.jwt?.cookie,
    jwtQuery: auth.jwt?.query,
    apiKeyQuery: auth.apiKeys.query,
    realm: auth.realm,
    introspection,
    external,
    externalMetrics,
    jwtIssuers: localIssuers(auth.jwt),
    oidc,
  };
  const { decisions } = authMetrics(ctx);

  const certHeaders = certCfg ? [certCfg.subjectHeader, certCfg.fingerprintHeader] : [];
  // Headers the external authorizer or the introspection answer may set are identity too.
  const identityDrops = [
    names.consumerId,
    names.userId,
    names.roles,
    ...Object.keys(auth.jwt?.claimHeaders ?? {}),
    ...Object.keys(auth.introspection?.claimHeaders ?? {}),
    ...(auth.external?.upstreamHeaders ?? []),
    ...Object.keys(oidcCfg?.claimHeaders ?? {}),
    ...certHeaders,
  ].flatMap(headerVariants);
  const credentialDrops = ['authorization', ...headerVariants(auth.apiKeys.header)];

  return {
    name: 'auth',
    stepFor(route: CompiledRoute) {
      for (const h of identityDrops) route.dropRequestHeaders.add(h);
      const routeAuth = route.config.auth;
      if (!routeAuth) return null;
      const usesLogin = routeAuth.methods.includes('oidc');
      if (!routeAuth.forwardCredentials) {
        for (const h of credentialDrops) route.dropRequestHeaders.add(h);
        // The step forwards the other cookies itself.
        if (sources.jwtCookie !== undefined) route.dropRequestHeaders.add('cookie');
      }
      if (usesLogin) {
        route.dropRequestHeaders.add('cookie');
        // The access token replaces whatever Authorization the client sent.
        if (oidcCfg!.forwardAccessToken) route.dropRequestHeaders.add('authorization');
      }
      return new AuthStep(route.name, routeAuth, sources, decisions, ctx.log);
    },
  };
}
