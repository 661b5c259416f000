import { createPublicKey } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { Counter } from 'prom-client';
import type { Plugin, PluginContext } from '..';
import { registerKeyRoutes } from '../../admin/keys';
import type { GatewayConfig } from '../../config/schema';
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

export function createKeyStore(cfg: Readonly<GatewayConfig>, log: FastifyBaseLogger): KeyStore & { init?(): Promise<void>; close?(): Promise<void> } {
  return cfg.auth.apiKeys.store === 'redis' ? new RedisKeyStore(cfg.auth.apiKeys, log) : new MemoryKeyStore(cfg.consumers);
}

function jwtKeySource(jwt: JwtConfig, ctx: PluginContext): KeySource {
  const rules = claimRules(jwt);
  if (jwt.secret !== undefined) return { kind: 'static', verify: keyVerifier(jwt.secret, jwt.algorithms, rules) };
  if (jwt.jwks) {
    const jwks = new JwksKeySource({
      ...jwt.jwks,
      algorithms: jwt.algorithms,
      rules,
      log: ctx.log,
      fetches: new Counter({
        name: 'gateway_auth_jwks_fetches_total',
        help: 'Fetches of the JWKS key set, by result (ok, error).',
        labelNames: ['result'],
        registers: [ctx.metrics.registry],
      }),
    });
    ctx.addResource(jwks);
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
  const store = createKeyStore(cfg, ctx.log);
  if (store instanceof RedisKeyStore) ctx.addResource(store);
  const jwt = auth.jwt ? new JwtAuthenticator(auth.jwt, jwtKeySource(auth.jwt, ctx), consumers, names) : null;

  const sources: CredentialSources = {
    jwt,
    apiKeys: new ApiKeyAuthenticator(store, consumers),
    apiKeyHeader: auth.apiKeys.header.toLowerCase(),
    apiKeyHeaderName: auth.apiKeys.header,
    jwtCookie: auth.jwt?.cookie,
    jwtQuery: auth.jwt?.query,
    apiKeyQuery: auth.apiKeys.query,
    realm: auth.realm,
  };
  const counter = new Counter({
    name: 'gateway_auth_requests_total',
    help: 'Authentication decisions, by route and result (ok, anonymous, unauthenticated, forbidden, unavailable).',
    labelNames: ['route', 'result'],
    registers: [ctx.metrics.registry],
  });

  const identityDrops = [names.consumerId, names.userId, names.roles, ...Object.keys(auth.jwt?.claimHeaders ?? {})].flatMap(headerVariants);
  const credentialDrops = ['authorization', ...headerVariants(auth.apiKeys.header)];

  ctx.addAdminRoutes((admin) => registerKeyRoutes(admin, { store, consumers, token: cfg.admin.token }));

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
      return new AuthStep(route.name, routeAuth, sources, counter, ctx.log);
    },
  };
}
