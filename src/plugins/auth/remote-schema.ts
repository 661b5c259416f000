import { Type, type Static, type TProperties, type ObjectOptions } from '@sinclair/typebox';

// A local copy of the config schema's closed-object helper (see schema.ts).
const Obj = <T extends TProperties>(props: T, opts: ObjectOptions & { description: string }) =>
  Type.Object(props, { additionalProperties: false, ...opts });

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_NAME_WORDS = "a header name such as X-User-Id (letters, digits and !#$%&'*+.^_`|~-)";
const HeaderName = (description: string) => Type.String({ description, pattern: HEADER_NAME, expected: HEADER_NAME_WORDS });
const HeaderList = (description: string, def: string[]) =>
  Type.Array(HeaderName('A header name.'), { description, default: def, uniqueItems: true });
const Ms = (description: string, def: number, min = 1, max?: number) =>
  Type.Integer({ description: `${description} (milliseconds).`, default: def, minimum: min, ...(max !== undefined ? { maximum: max } : {}) });

/**
 * The breaker of a remote auth service. The same machine as an upstream target's breaker
 * (src/proxy/breaker.ts); what counts as a failure is fixed: no answer in time, no connection, a
 * broken answer or a 5xx.
 */
export const AuthBreakerSchema = Obj(
  {
    enabled: Type.Boolean({ description: 'Stop calling the service while it keeps failing, and answer at once as if it were down.', default: true }),
    consecutiveFailures: Type.Integer({ description: 'Open after this many failures in a row. 0 turns this trigger off.', default: 5, minimum: 0 }),
    failureRatio: Type.Number({
      description: 'Open when failures reach this share of the calls in the rolling window. 0 turns this trigger off.',
      default: 0.5,
      minimum: 0,
      maximum: 1,
    }),
    minRequests: Type.Integer({ description: 'Calls the rolling window must hold before failureRatio is judged.', default: 20, minimum: 1 }),
    windowMs: Ms('Length of the rolling window for failureRatio', 10000, 100),
    openMs: Ms('How long a tripped breaker refuses calls before it lets a probe through', 5000),
    backoffMultiplier: Type.Number({ description: 'openMs grows by this factor with every trip that follows a short recovery.', default: 2, minimum: 1 }),
    maxOpenMs: Ms('Cap on the open time as it grows with repeated trips', 60000),
    halfOpenProbes: Type.Integer({ description: 'Calls let through at once after the open time; that many successes close the breaker.', default: 1, minimum: 1 }),
  },
  { description: 'Circuit breaker of the calls: failures are timeouts, connection errors, unreadable answers and 5xx.', default: {} },
);

export const ExternalAuthSchema = Obj(
  {
    url: Type.String({
      description: 'URL of the authorizer (http:// or https://). Its path is the path called unless `path` is set.',
      pattern: '^https?://',
      expected: 'an http:// or https:// URL',
    }),
    method: Type.Union([Type.Literal('GET'), Type.Literal('POST'), Type.Literal('original')], {
      description: 'Method of the authorizer call; `original` uses the client request\'s method.',
      default: 'GET',
    }),
    path: Type.Optional(
      Type.String({
        description:
          'Path template of the call, replacing the URL\'s path: {path} (the request path, normalised), {query} (the raw query with its "?", or nothing), {method} and {route} are filled in. Example: /authz{path}{query}.',
        pattern: '^/',
        expected: 'a path starting with /',
      }),
    ),
    forwardHeaders: HeaderList(
      'Client request headers sent to the authorizer (an allow-list). X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-For (the client IP) and X-Request-Id are always sent.',
      ['Authorization', 'Cookie'],
    ),
    body: Obj(
      {
        enabled: Type.Boolean({ description: 'Send the request body to the authorizer (it is buffered, then sent upstream as well).', default: false }),
        maxBytes: Type.Integer({ description: 'Largest body sent; a larger request is refused (413).', default: 8192, minimum: 1, maximum: 1048576 }),
      },
      { description: 'The request body, sent only when asked.', default: {} },
    ),
    upstreamHeaders: HeaderList(
      'Headers of an allowing answer (2xx) added to the upstream request, such as X-User-Id or X-Tenant. Client-sent headers of these names are always removed.',
      [],
    ),
    identity: Obj(
      {
        consumerHeader: Type.Optional(HeaderName('Header of an allowing answer naming the consumer. Without it (or when the answer lacks it) the request passes without an identity.')),
        rolesHeader: Type.Optional(HeaderName('Header of an allowing answer listing roles (comma- or space-separated).')),
        scopesHeader: Type.Optional(HeaderName('Header of an allowing answer listing scopes (space- or comma-separated).')),
      },
      { description: 'Where the caller\'s identity is read from in the authorizer\'s answer.', default: {} },
    ),
    clientHeaders: HeaderList(
      'Headers of a refusing answer relayed to the client with its status and body.',
      ['WWW-Authenticate', 'Location', 'Content-Type', 'Set-Cookie'],
    ),
    denyBodyMaxBytes: Type.Integer({ description: 'Largest refusal body relayed to the client; a longer one is dropped (the status and headers still go).', default: 4096, minimum: 0, maximum: 65536 }),
    timeoutMs: Ms('Time budget of one call, connection included; past it the call counts as failed', 200, 1, 60000),
    connections: Type.Integer({ description: 'Connections of the authorizer\'s own pool.', default: 32, minimum: 1 }),
    cache: Obj(
      {
        identitySources: HeaderList(
          'Request headers the decision is cached by (a hash of their values). Each must be in forwardHeaders: a decision is never keyed by something the authorizer did not see. A request that has none of them has no credential for this method.',
          ['Authorization'],
        ),
        ttlMs: Ms('How long an allowing decision is reused when the authorizer does not say (Cache-Control max-age); 0 turns the cache off', 60000, 0),
        maxTtlMs: Ms('Cap on the reuse time an authorizer may ask for with Cache-Control', 300000, 0),
        denyTtlMs: Ms('How long a refusal is reused (capped by its Cache-Control); short, so that a caller who fixed their credential is soon let in', 5000, 0),
        maxEntries: Type.Integer({ description: 'Decisions remembered per replica; the oldest go first.', default: 10000, minimum: 1 }),
      },
      { description: 'Decision cache, per replica. Cache-Control: no-store or no-cache in the authorizer\'s answer keeps a decision out.', default: {} },
    ),
    breaker: AuthBreakerSchema,
  },
  { description: 'External HTTP authorizer (Envoy ext_authz, Traefik ForwardAuth style): routes list `external` in auth.methods.' },
);

export const IntrospectionSchema = Obj(
  {
    url: Type.String({ description: 'Introspection endpoint (RFC 7662), http:// or https://.', pattern: '^https?://', expected: 'an http:// or https:// URL' }),
    clientId: Type.String({ description: 'Client id of the gateway at the authorization server (use ${ENV}).', minLength: 1 }),
    clientSecret: Type.String({ description: 'Client secret of the gateway (use ${ENV}: never in the file).', minLength: 1 }),
    clientAuth: Type.Union([Type.Literal('basic'), Type.Literal('post')], {
      description: 'How the gateway authenticates: basic (client_secret_basic, HTTP Basic) or post (client_secret_post, in the form).',
      default: 'basic',
    }),
    tokenTypeHint: Type.Optional(Type.String({ description: 'token_type_hint sent with each token, such as access_token.', minLength: 1 })),
    issuer: Type.Optional(Type.String({ description: 'Required `iss` of active tokens (checked when set).' })),
    audience: Type.Optional(
      Type.Array(Type.String({ description: 'An audience.' }), { description: 'An active token must name one of these in `aud` (checked when set).', minItems: 1 }),
    ),
    claims: Obj(
      {
        consumer: Type.String({ description: 'Member naming the consumer; `client_id` is used when it is absent (client-credentials tokens have no sub).', default: 'sub' }),
        user: Type.String({ description: 'Member sent upstream as the user id.', default: 'sub' }),
        roles: Type.String({ description: 'Member holding roles (array, or a space-separated string).', default: 'roles' }),
        scopes: Type.String({ description: 'Member holding scopes (RFC 7662: space-separated `scope`).', default: 'scope' }),
      },
      { description: 'Where the identity is read from in the introspection answer.', default: {} },
    ),
    claimHeaders: Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ description: 'A member of the answer.' }), {
      description: 'Extra upstream headers set from the answer, header name → member (e.g. X-Client-Id: client_id). Client-sent copies are always removed.',
      default: {},
    }),
    timeoutMs: Ms('Time budget of one introspection call, connection included', 200, 1, 60000),
    connections: Type.Integer({ description: 'Connections of the endpoint\'s own pool.', default: 32, minimum: 1 }),
    maxResponseBytes: Type.Integer({ description: 'Largest introspection answer read.', default: 16384, minimum: 256 }),
    cache: Obj(
      {
        ttlMs: Ms('How long an active result is reused; never past the token `exp`. 0 turns the cache off', 60000, 0),
        inactiveTtlMs: Ms('How long an inactive result is reused', 10000, 0),
        maxEntries: Type.Integer({ description: 'Results remembered per replica (keyed by a hash of the token); the oldest go first.', default: 10000, minimum: 1 }),
      },
      {
        description: 'Result cache, per replica. While the endpoint is down, an active result whose ttlMs passed is still used until the token `exp`.',
        default: {},
      },
    ),
    breaker: AuthBreakerSchema,
  },
  { description: 'OAuth 2.0 token introspection (RFC 7662) of opaque bearer tokens: routes list `introspection` in auth.methods.' },
);

export type ExternalAuthConfig = Static<typeof ExternalAuthSchema>;
export type IntrospectionConfig = Static<typeof IntrospectionSchema>;
export type AuthBreakerConfig = Static<typeof AuthBreakerSchema>;
