import { Type, type Static, type TProperties, type ObjectOptions } from '@sinclair/typebox';
import { OidcSchema } from './oidc-schema';
import { ExternalAuthSchema, IntrospectionSchema } from './remote-schema';

// A local copy of the config schema's closed-object helper: importing it from config/schema.ts
// would make the two modules import each other.
const Obj = <T extends TProperties>(props: T, opts: ObjectOptions & { description: string }) =>
  Type.Object(props, { additionalProperties: false, ...opts });

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_NAME_WORDS = "a header name such as X-API-Key (letters, digits and !#$%&'*+.^_`|~-)";
/** A media type (RFC 6838 names), with or without its `application/` part. */
const MEDIA_TYPE = '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)?$';

/** Signature algorithms a token may use. `none` is deliberately not one of them. */
export const JWT_ALGORITHMS = [
  'HS256', 'HS384', 'HS512',
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA',
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

export const JwksSchema = Obj(
  {
    url: Type.String({ description: 'URL of the JSON Web Key Set (https:// in production). The only place keys are ever fetched from.' }),
    cooldownMs: Type.Integer({
      description: 'A token with an unknown `kid` triggers a refetch at most once per this many milliseconds.',
      default: 30000,
      minimum: 0,
    }),
    refreshMs: Type.Integer({ description: 'Background refresh interval of the key set (milliseconds).', default: 600000, minimum: 1000 }),
    timeoutMs: Type.Integer({ description: 'Deadline of one fetch of the key set (milliseconds).', default: 5000, minimum: 1 }),
    maxBytes: Type.Integer({ description: 'Largest key set accepted (bytes).', default: 1048576, minimum: 1024 }),
  },
  { description: 'Keys fetched from a JWKS endpoint, cached; cached keys keep working while the endpoint is down.' },
);

const ALGORITHMS_DESCRIPTION = 'Accepted signature algorithms, always explicit. HS* only with `secret`; never HS* with a public key or JWKS.';
const algorithmList = () =>
  Type.Array(Type.Union(JWT_ALGORITHMS.map((a) => Type.Literal(a))), { description: ALGORITHMS_DESCRIPTION, minItems: 1 });
const keyFields = () => ({
  secret: Type.Optional(Type.String({ description: 'HMAC secret for HS256/384/512, at least 32 bytes (use ${ENV} substitution).' })),
  publicKey: Type.Optional(Type.String({ description: 'PEM public key (or certificate) for RS/PS/ES/EdDSA.' })),
  publicKeyFile: Type.Optional(Type.String({ description: 'File holding the PEM public key (or certificate).' })),
  jwks: Type.Optional(JwksSchema),
});
const audienceList = () =>
  Type.Array(Type.String({ description: 'An accepted audience.', minLength: 1 }), {
    description: 'Accepted audiences, matched exactly; the token `aud` (string or array) must contain one of them.',
    minItems: 1,
  });

export const JwtIssuerSchema = Obj(
  {
    issuer: Type.String({ description: 'The `iss` this entry verifies, matched exactly; a token naming it is checked with these keys only.', minLength: 1 }),
    algorithms: algorithmList(),
    ...keyFields(),
    audience: Type.Optional(audienceList()),
  },
  { description: 'One accepted token issuer: exactly one key source (secret, publicKey, publicKeyFile or jwks), its algorithms and audience.' },
);

export const JwtSchema = Obj(
  {
    algorithms: Type.Optional(algorithmList()),
    ...keyFields(),
    issuer: Type.Optional(Type.String({ description: 'Required `iss`, matched exactly.', minLength: 1 })),
    audience: Type.Optional(audienceList()),
    issuers: Type.Optional(
      Type.Array(JwtIssuerSchema, {
        description:
          "Several issuers instead of the single one above (leave algorithms, the key source, issuer and audience unset): the token's `iss`, read before any signature work, picks the entry whose keys verify it; a token from any other issuer is refused (401 UNKNOWN_TOKEN_ISSUER). The settings below apply to every issuer.",
        minItems: 1,
      }),
    ),
    requiredClaims: Type.Array(Type.String({ description: 'A claim name.' }), {
      description: 'Claims every token must carry. `iss` and `aud` are added when issuer or audience are set.',
      default: ['exp'],
    }),
    clockToleranceSec: Type.Integer({
      description: 'Clock skew allowed when checking `exp` and `nbf` (seconds).',
      default: 5,
      minimum: 0,
      maximum: 300,
    }),
    maxTokenBytes: Type.Optional(
      Type.Integer({
        description:
          "Longer tokens are refused without being parsed. Unset (the default): the listener's header limit (`policies.limits.maxHeaderBytes`), so any token that fits in the request head is read.",
        minimum: 256,
      }),
    ),
    cookie: Type.Optional(Type.String({ description: 'Also read the token from this cookie (off by default).', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS })),
    query: Type.Optional(
      Type.String({ description: 'Also read the token from this query parameter (off by default: URLs end up in logs).', minLength: 1 }),
    ),
    claims: Obj(
      {
        consumer: Type.String({ description: 'Claim holding the consumer id.', default: 'sub' }),
        user: Type.String({ description: 'Claim sent upstream as the user id.', default: 'sub' }),
        roles: Type.String({ description: 'Claim holding roles (array, or a space-separated string).', default: 'roles' }),
        scopes: Type.String({ description: 'Claim holding scopes (space-separated string, or array).', default: 'scope' }),
      },
      { description: 'Where the identity is read from in the token.', default: {} },
    ),
    claimHeaders: Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ description: 'A claim name.' }), {
      description:
        'Extra upstream headers set from claims, header name → claim. Client-sent headers of these names are always removed; a claim that is not a printable value leaves its header out.',
      default: {},
    }),
    cache: Obj(
      {
        maxEntries: Type.Integer({ description: 'Verified tokens remembered (0 disables the cache).', default: 10000, minimum: 0 }),
        ttlMs: Type.Integer({ description: 'Longest a verification result is reused; never past the token `exp`.', default: 300000, minimum: 1 }),
      },
      { description: 'Cache of verification results, keyed by the whole token.', default: {} },
    ),
  },
  { description: 'JSON Web Tokens: either algorithms and exactly one key source (secret, publicKey, publicKeyFile or jwks), or `issuers`.' },
);

export const KeyRedisSchema = Obj(
  {
    url: Type.String({ description: 'Redis URL (redis:// or rediss://).', default: 'redis://127.0.0.1:6379' }),
    keyPrefix: Type.String({ description: 'Prefix of every Redis key and channel the key store uses.', default: 'gateway:auth:' }),
    connectTimeoutMs: Type.Integer({ description: 'Deadline to connect (milliseconds).', default: 2000, minimum: 1 }),
    commandTimeoutMs: Type.Integer({ description: 'Deadline of one command (milliseconds).', default: 500, minimum: 1 }),
  },
  { description: 'Redis connection of the key store.', default: {} },
);

export const ApiKeysSchema = Obj(
  {
    header: Type.String({ description: 'Request header carrying the API key.', default: 'X-API-Key', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }),
    query: Type.Optional(
      Type.String({ description: 'Also read the key from this query parameter (off by default: URLs end up in logs).', minLength: 1 }),
    ),
    store: Type.Union([Type.Literal('memory'), Type.Literal('redis')], {
      description:
        'Where hashed keys live: memory (consumers[].apiKeys in this file; changed with `gateway keys` and a reload) or redis (shared by every replica, managed live through the admin API).',
      default: 'memory',
    }),
    redis: KeyRedisSchema,
    cacheMs: Type.Integer({
      description:
        'How long a replica reuses a key lookup from Redis. Revocations are also pushed over pub/sub; this bound keeps them within a second even if a message is lost.',
      default: 500,
      minimum: 0,
      maximum: 900,
    }),
    cacheMaxEntries: Type.Integer({ description: 'Key lookups remembered per replica.', default: 10000, minimum: 1 }),
    importedKeys: Type.Boolean({
      description:
        'Also accept keys that are not in the gateway\'s gk_ format: keys imported from another gateway as they were (`gateway import kong`), stored hashed under an ik_ prefix. New keys are gk_ keys either way. Off, a key of another shape is refused before it is hashed.',
      default: false,
    }),
  },
  { description: 'API keys.', default: {} },
);

export const IdentityHeadersSchema = Obj(
  {
    consumerId: Type.String({ description: 'Upstream header carrying the consumer id.', default: 'X-Consumer-Id', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }),
    userId: Type.String({ description: 'Upstream header carrying the user id (JWT only).', default: 'X-User-Id', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }),
    roles: Type.String({ description: 'Upstream header carrying the roles, comma-separated.', default: 'X-User-Roles', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }),
    maxLength: Type.Integer({
      description: 'Longest identity header value; a longer identity is refused (401).',
      default: 1024,
      minimum: 16,
      maximum: 8192,
    }),
  },
  {
    description:
      'Identity headers: every client-sent copy (any case, "_" for "-") is removed on every route, then set from the verified identity.',
    default: {},
  },
);

export const ClientCertSchema = Obj(
  {
    consumerFrom: Type.Union([Type.Literal('subject.CN'), Type.Literal('san.dns'), Type.Literal('san.uri'), Type.Literal('san.email')], {
      description: 'Where the consumer id is read from in the verified certificate: the subject common name, or the first SAN of a kind (DNS name, URI such as a SPIFFE id, email).',
      default: 'subject.CN',
    }),
    requireKnownConsumer: Type.Boolean({
      description:
        'Refuse (403 CLIENT_CERT_UNKNOWN_CONSUMER) a certificate whose name is no consumer id. With false any certificate the CA signed is a caller, with no roles unless a consumer of that id grants them.',
      default: true,
    }),
    forward: Type.Boolean({ description: 'Send the certificate subject and SHA-256 fingerprint upstream in the two headers below.', default: false }),
    subjectHeader: Type.String({ description: 'Upstream header carrying the certificate subject (CN=...,O=...).', default: 'X-Client-Cert-Subject', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }),
    fingerprintHeader: Type.String({
      description: 'Upstream header carrying the certificate SHA-256 fingerprint (AA:BB:...).',
      default: 'X-Client-Cert-Fingerprint',
      pattern: HEADER_NAME,
      expected: HEADER_NAME_WORDS,
    }),
  },
  {
    description:
      'TLS client certificates as credentials (route method clientCert). Needs listen.tls.clientCertificates (mode request or require), which verifies the chain; client-sent copies of the two headers are always removed.',
  },
);

export const AuthSchema = Obj(
  {
    realm: Type.String({ description: 'Realm announced in WWW-Authenticate.', default: 'gateway', pattern: '^[ !#-\\[\\]-~]{1,64}$', expected: 'at most 64 printable ASCII characters without " or \\' }),
    jwt: Type.Optional(JwtSchema),
    oidc: Type.Optional(OidcSchema),
    apiKeys: ApiKeysSchema,
    clientCert: Type.Optional(ClientCertSchema),
    external: Type.Optional(ExternalAuthSchema),
    introspection: Type.Optional(IntrospectionSchema),
    identityHeaders: IdentityHeadersSchema,
  },
  { description: 'Authentication providers.', default: {} },
);

export const AUTH_METHODS = ['jwt', 'apiKey', 'oidc', 'introspection', 'external', 'clientCert'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

export const RouteAuthSchema = Obj(
  {
    methods: Type.Array(Type.Union(AUTH_METHODS.map((m) => Type.Literal(m))), {
      description:
        'Accepted credentials, tried in this order (the first one present decides). `oidc` is the login session cookie; without any credential, a browser is sent to log in and other clients get 401. `clientCert` is the verified TLS client certificate (auth.clientCert). jwt and introspection both read the bearer token: on a route with both, a token that parses as a JWT from auth.jwt.issuer (any JWT when no issuer is set) is verified locally, any other is introspected.',
      minItems: 1,
    }),
    required: Type.Boolean({
      description: 'Refuse requests without credentials (401). With false, anonymous requests pass with no identity; invalid credentials are still refused.',
      default: true,
    }),
    roles: Type.Optional(
      Type.Array(Type.String({ description: 'A role.' }), { description: 'The caller needs at least one of these roles (403 otherwise).', minItems: 1 }),
    ),
    scopes: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^([A-Z]+|\\*)$' }),
        Type.Array(Type.String({ description: 'A scope.' }), { description: 'Scopes that are all required.' }),
        { description: 'Scopes the caller needs, by HTTP method; `*` covers the methods not listed (403 otherwise).' },
      ),
    ),
    tokenTypes: Type.Optional(
      Type.Array(Type.String({ description: 'A token type, such as at+jwt.', pattern: MEDIA_TYPE, expected: 'a media type such as at+jwt or application/at+jwt' }), {
        description:
          'Accepted JWT `typ` header values, such as at+jwt (RFC 9068 access tokens) to refuse ID or refresh tokens here. Compared as media types: case-insensitive, `application/` implied (at+jwt = application/at+jwt). A token of another type or without `typ` is refused (401). Unset (the default): any type, or none. API keys are not affected.',
        minItems: 1,
      }),
    ),
    failOpen: Type.Boolean({
      description:
        'When the external authorizer cannot decide (5xx, timeout, breaker open), let the request through without an identity instead of answering 503. Needs external in methods.',
      default: false,
    }),
    forwardCredentials: Type.Boolean({
      description: 'Forward the Authorization / API key header (and token cookie or query parameter) upstream.',
      default: false,
    }),
  },
  { description: 'Authentication required by this route.' },
);

export type AuthConfig = Static<typeof AuthSchema>;
export type JwtConfig = Static<typeof JwtSchema>;
export type JwtIssuerConfig = Static<typeof JwtIssuerSchema>;
/** What verifies the tokens of one issuer: the single-issuer fields of JwtConfig, or one of its issuers. */
export type JwtKeyConfig = Pick<JwtIssuerConfig, 'algorithms' | 'secret' | 'publicKey' | 'publicKeyFile' | 'jwks' | 'audience'> & { issuer?: string };
export type ApiKeysConfig = Static<typeof ApiKeysSchema>;
export type ClientCertConfig = Static<typeof ClientCertSchema>;
export type RouteAuthConfig = Static<typeof RouteAuthSchema>;
