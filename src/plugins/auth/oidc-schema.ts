import { Type, type Static, type TProperties, type ObjectOptions } from '@sinclair/typebox';

const Obj = <T extends TProperties>(props: T, opts: ObjectOptions & { description: string }) =>
  Type.Object(props, { additionalProperties: false, ...opts });

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_NAME_WORDS = "a header name such as X-User-Email (letters, digits and !#$%&'*+.^_`|~-)";
/** RFC 6265 cookie-name characters (a token), without "." which separates the chunks of a large session. */
const COOKIE_NAME = "^[!#$%&'*+^_`|~0-9A-Za-z-]+$";
const COOKIE_NAME_WORDS = "a cookie name such as gateway_session (letters, digits and !#$%&'*+^_`|~-, no dot)";
const PATH = '^/[!$&-;=@-Z_a-z~]*$';
const PATH_WORDS = 'an absolute path such as /oidc/logout';

/** ID token signature algorithms; HS* is left out: the client secret is not a signing key here. */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

export const OidcSessionSchema = Obj(
  {
    cookie: Type.String({
      description: 'Name of the session cookie. A session larger than one cookie continues in <name>.1, <name>.2, ...; the login state lives in <name>_login.',
      default: 'gateway_session',
      pattern: COOKIE_NAME,
      expected: COOKIE_NAME_WORDS,
    }),
    keys: Type.Array(
      Type.String({ description: 'A 32-byte AES-256 key in base64 or base64url (for example `openssl rand -base64 32`, through ${ENV}).' }),
      {
        description:
          'Keys sealing the session cookies (AES-256-GCM). The first key seals; every key opens, so a new key goes first and the old one stays until the sessions it sealed have expired.',
        minItems: 1,
      },
    ),
    secure: Type.Boolean({ description: 'Mark the cookies Secure (HTTPS only). Turn off only for plain-HTTP development.', default: true }),
    domain: Type.Optional(
      Type.String({ description: 'Domain attribute of the cookies (unset: the host that set them).', pattern: '^[A-Za-z0-9.-]+$', expected: 'a domain name such as example.com' }),
    ),
    maxAgeSec: Type.Integer({ description: 'Longest a session lasts after login, refreshes included (seconds).', default: 28800, minimum: 60 }),
    maxCookies: Type.Integer({
      description: 'Most cookies a session may be split into (each at most 4 KB). A login whose tokens do not fit is refused with 502 and a message saying so.',
      default: 3,
      minimum: 1,
      maximum: 10,
    }),
    loginTimeoutSec: Type.Integer({ description: 'Time a user has to complete a login at the provider (seconds).', default: 600, minimum: 30 }),
  },
  { description: 'Stateless sessions: sealed cookies that every replica opens, so no session store is needed.' },
);

export const OidcSchema = Obj(
  {
    issuer: Type.String({
      description: "The provider's issuer URL. Discovery reads <issuer>/.well-known/openid-configuration, whose `issuer` must equal this exactly.",
      minLength: 1,
    }),
    clientId: Type.String({ description: 'Client id registered at the provider; also the audience the ID token must name.', minLength: 1 }),
    clientSecret: Type.Optional(Type.String({ description: 'Client secret (use ${ENV} substitution). Unset: a public client, PKCE only.', minLength: 1 })),
    clientAuth: Type.Optional(
      Type.Union([Type.Literal('client_secret_basic'), Type.Literal('client_secret_post')], {
        description: 'How the secret is sent to the token endpoint. Unset: client_secret_basic when a secret is set.',
      }),
    ),
    redirectUri: Type.String({
      description: 'Absolute callback URL registered at the provider. Its path is answered by every route that lists `oidc`, so it must fall under one of them.',
      minLength: 1,
    }),
    scopes: Type.Array(Type.String({ description: 'A scope.', pattern: '^[!#-\\[\\]-~]+$', expected: 'printable ASCII without spaces, " or \\' }), {
      description: 'Scopes asked for; `openid` is required, `offline_access` (or the provider\'s equivalent) yields a refresh token.',
      default: ['openid', 'profile', 'email'],
      minItems: 1,
    }),
    algorithms: Type.Array(Type.Union(OIDC_ALGORITHMS.map((a) => Type.Literal(a))), {
      description: 'Accepted ID token signature algorithms, always explicit.',
      default: ['RS256'],
      minItems: 1,
    }),
    clockToleranceSec: Type.Integer({ description: 'Clock skew allowed on ID token `exp`, `iat` and `nbf` (seconds).', default: 5, minimum: 0, maximum: 300 }),
    logoutPath: Type.String({
      description: 'Path (under a route listing `oidc`) that ends the session and redirects to the provider\'s end_session_endpoint.',
      default: '/oidc/logout',
      pattern: PATH,
      expected: PATH_WORDS,
    }),
    postLogoutRedirectUri: Type.Optional(
      Type.String({ description: 'Where the provider sends the user after logout (registered at the provider). Unset: none is sent.', minLength: 1 }),
    ),
    refreshBeforeSec: Type.Integer({
      description: 'Renew the access token with the refresh token this long before it expires (seconds). Without a refresh token the session ends with the access token.',
      default: 60,
      minimum: 0,
    }),
    forwardAccessToken: Type.Boolean({ description: 'Send the access token upstream as `Authorization: Bearer`.', default: false }),
    claims: Obj(
      {
        consumer: Type.String({ description: 'ID token claim holding the consumer id.', default: 'sub' }),
        user: Type.String({ description: 'ID token claim sent upstream as the user id.', default: 'sub' }),
        roles: Type.String({ description: 'ID token claim holding roles (array, or a space-separated string).', default: 'roles' }),
        scopes: Type.String({ description: 'Claim holding scopes; unset in the ID token, the granted `scope` of the token response is used.', default: 'scope' }),
      },
      { description: 'Where the identity is read from in the ID token.', default: {} },
    ),
    claimHeaders: Type.Record(Type.String({ pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }), Type.String({ description: 'A claim name.' }), {
      description: 'Extra upstream headers set from ID token claims, header name → claim. Client-sent headers of these names are always removed.',
      default: {},
    }),
    session: OidcSessionSchema,
    discovery: Obj(
      {
        timeoutMs: Type.Integer({ description: 'Deadline of one request to the provider: discovery, keys, token endpoint (milliseconds).', default: 5000, minimum: 1 }),
        maxBytes: Type.Integer({ description: 'Largest document accepted from the provider (bytes).', default: 1048576, minimum: 1024 }),
        refreshMs: Type.Integer({ description: 'How often the discovery document is read again (milliseconds).', default: 3600000, minimum: 1000 }),
        retryMs: Type.Integer({ description: 'After a failed discovery, a login tries again at most this often (milliseconds).', default: 5000, minimum: 0 }),
      },
      { description: 'Reading the provider: the discovery document at start-up and every refreshMs, then its keys (JWKS).', default: {} },
    ),
  },
  { description: 'OpenID Connect login for browser routes (authorization code flow with PKCE); routes opt in with the `oidc` method.' },
);

export type OidcConfig = Static<typeof OidcSchema>;
