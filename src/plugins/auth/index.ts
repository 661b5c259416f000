import { createPublicKey } from 'node:crypto';
import type { Plugin, PluginContext } from '../types';
import type { CounterFamily } from '../../observability/fast-metrics';
import type { CompiledRoute } from '../../routes';
import { ApiKeyAuthenticator, MemoryKeyStore, type KeyStore } from './api-keys';
import { readPublicKeyPem } from './check';
import { ConsumerDirectory } from './consumers';
import { headerVariants, type IdentityHeaderNames } from './identity-headers';
import { JwksKeySource } from './jwks';
import { algorithmsForKey, claimRules, JwtAuthenticator, keyVerifier, loadPublicKey, type KeySource } from './jwt';
import { RedisKeyStore } from './redis-keys';
import type { JwtConfig } from './schema';
import { AuthStep, type CredentialSources } from './step';

/** Auth metrics live as long as the gateway: plugins are rebuilt on reload, metric families are not. */
function authMetrics(ctx: PluginContext): { decisions: CounterFamily; jwksFetches: CounterFamily } {
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
    };
  });
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

function jwtKeySource(jwt: JwtConfig, ctx: PluginContext): KeySource {
  const rules = claimRules(jwt);
  if (jwt.secret !== undefined) return { kind: 'static', verify: keyVerifier(jwt.secret, jwt.algorithms, rules) };
  const jwksConfig = jwt.jwks;
  if (jwksConfig) {
    // The fetched keys survive reloads that keep the same key set and claim rules.
    const jwks = ctx.shared(`auth:jwks:${JSON.stringify([jwksConfig, jwt.algorithms, rules])}`, () => {
      const source = new JwksKeySource({ ...jwksConfig, algorithms: jwt.algorithms, rules, log: ctx.log, fetches: authMetrics(ctx).jwksFetches });
      ctx.addResource(source);
      return source;
    });
    return { kind: 'jwks', jwks };
  }
  const pem = loadPublicKey(readPublicKeyPem(jwt), jwt.algorithms);
  const key = createPublicKey(pem);
  const algorithms = algorithmsForKey(key.asymmetricKeyType, key.asymmetricKeyDetails?.namedCurve, jwt.algorithms);
  return { kind: 'static', verify: keyVerifier(pem, algorithms, rules) };
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
  const jwt = auth.jwt ? new JwtAuthenticator(auth.jwt, jwtKeySource(auth.jwt, ctx), consumers, names, maxTokenBytes) : null;

  const sources: CredentialSources = {
    jwt,
    apiKeys: new ApiKeyAuthenticator(keyStoreFor(ctx), consumers, auth.apiKeys.importedKeys),
    apiKeyHeader: auth.apiKeys.header.toLowerCase(),
    apiKeyHeaderName: auth.apiKeys.header,
    jwtCookie: auth.jwt?.cookie,
    jwtQuery: auth.jwt?.query,
    apiKeyQuery: auth.apiKeys.query,
    realm: auth.realm,
  };
  const { decisions } = authMetrics(ctx);

  const identityDrops = [names.consumerId, names.userId, names.roles, ...Object.keys(auth.jwt?.claimHeaders ?? {})].flatMap(headerVariants);
  const credentialDrops = ['authorization', ...headerVariants(auth.apiKeys.header)];

  return {
    name: 'auth',
    stepFor(route: CompiledRoute) {
      for (const h of identityDrops) route.dropRequestHeaders.add(h);
      const routeAuth = route.config.auth;
      if (!routeAuth) return null;
      if (!routeAuth.forwardCredentials) {
        for (const h of credentialDrops) route.dropRequestHeaders.add(h);
        // The step forwards the other cookies itself.
        if (sources.jwtCookie !== undefined) route.dropRequestHeaders.add('cookie');
      }
      return new AuthStep(route.name, routeAuth, sources, decisions, ctx.log);
    },
  };
}
