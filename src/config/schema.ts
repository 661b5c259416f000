import { Type, type Static, type TProperties, type ObjectOptions } from '@sinclair/typebox';
import { ConsumerSchema } from '../plugins/auth/consumers-schema';
import { PoliciesSchema, RoutePoliciesSchema } from '../plugins/policies/schema';
import { AuthSchema, RouteAuthSchema } from '../plugins/auth/schema';
import { RouteRateLimitSchema } from '../plugins/rate-limit/schema';
import { StoreSchema } from '../store/schema';

/**
 * The configuration schema is the single source of validation, TypeScript types and the
 * config reference (docs/config.md is generated from it). Every field carries a description
 * and, unless it is required, a default.
 */

/** A closed object: unknown keys are configuration errors. */
const Obj = <T extends TProperties>(props: T, opts: ObjectOptions & { description: string }) =>
  Type.Object(props, { additionalProperties: false, ...opts });

const Ms = (description: string, def: number, minimum = 0) =>
  Type.Integer({ description: `${description} (milliseconds).`, default: def, minimum });

export const ListenSchema = Obj(
  {
    host: Type.String({ description: 'Address the public listener binds to.', default: '0.0.0.0' }),
    port: Type.Integer({
      description: 'Port of the public listener. The PORT environment variable overrides it.',
      default: 8080,
      minimum: 0,
      maximum: 65535,
    }),
  },
  { description: 'Where the gateway accepts client traffic.', default: {} },
);

export const AdminSchema = Obj(
  {
    enabled: Type.Boolean({ description: 'Start the admin listener.', default: true }),
    host: Type.String({
      description: 'Address the admin listener binds to. Keep it private: it exposes metrics and the admin API.',
      default: '127.0.0.1',
    }),
    port: Type.Integer({ description: 'Port of the admin listener.', default: 9901, minimum: 0, maximum: 65535 }),
    token: Type.Optional(
      Type.String({
        description:
          'Bearer token for the admin API, known as token id "admin" in audit lines (use ${ENV} substitution). Without any token only /healthz, /readyz and /metrics answer.',
        minLength: 16,
      }),
    ),
    tokens: Type.Array(
      Obj(
        {
          id: Type.String({ description: 'Who holds the token; written to audit lines.', pattern: '^[A-Za-z0-9_.@-]{1,64}$' }),
          token: Type.String({ description: 'The bearer token (use ${ENV} substitution).', minLength: 16 }),
        },
        { description: 'A named admin token.' },
      ),
      { description: 'More admin tokens, one per operator or automation, so audit lines say who acted.', default: [] },
    ),
    metricsPublic: Type.Boolean({
      description: 'Serve /metrics without a token. When false, /metrics needs an admin token like the admin API.',
      default: true,
    }),
  },
  { description: 'The admin listener: probes, metrics and the admin API.', default: {} },
);

export const LogSchema = Obj(
  {
    level: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { description: 'Minimum level of log lines written to stdout (pino JSON).', default: 'info' },
    ),
    access: Type.Boolean({
      description: 'Write one access line per request (request id, route, method, status, total and upstream ms).',
      default: true,
    }),
  },
  { description: 'Logging.', default: {} },
);

export const ShutdownSchema = Obj(
  {
    drainDelayMs: Ms(
      'After SIGTERM/SIGINT, how long readiness reports 503 while the listener keeps serving, so load balancers stop sending new traffic',
      5000,
    ),
    timeoutMs: Ms('Hard limit for the whole shutdown; past it the process exits anyway and says so', 30000, 1),
  },
  { description: 'Graceful drain on SIGTERM and SIGINT.', default: {} },
);

export const PoolSchema = Obj(
  {
    connections: Type.Integer({
      description: 'Maximum connections per target. 128 measured best on a 2-core machine.',
      default: 128,
      minimum: 1,
    }),
    pipelining: Type.Integer({
      description:
        'Requests in flight per connection. 1 disables pipelining (the safe choice: pipelining replays are unsafe for non-idempotent requests).',
      default: 1,
      minimum: 1,
      maximum: 128,
    }),
    keepAliveTimeoutMs: Ms(
      'How long an idle upstream connection is kept. Keep it below the upstream server keep-alive timeout to avoid the idle-socket race',
      4000,
      1,
    ),
    keepAliveMaxTimeoutMs: Ms('Upper bound for a keep-alive timeout announced by the upstream', 600000, 1),
  },
  { description: 'Connection pool of each target of the upstream (one undici Pool per target).', default: {} },
);

export const TimeoutsSchema = Obj(
  {
    connectMs: Ms('Time allowed to open a TCP (and TLS) connection to a target', 5000, 1),
    headersMs: Ms('Time allowed between sending the request and receiving the response headers', 30000, 1),
    bodyMs: Ms('Longest pause allowed between two chunks of the response body', 30000, 1),
    requestMs: Ms('Overall deadline of one request, from arrival to the last byte of the response', 60000, 1),
  },
  { description: 'Timeouts toward the upstream. Every one is explicit: none waits forever.', default: {} },
);

export const TlsSchema = Obj(
  {
    caFile: Type.Optional(
      Type.String({ description: 'PEM file of certificate authorities trusted for this upstream, added to the defaults.' }),
    ),
    rejectUnauthorized: Type.Boolean({
      description: 'Verify the upstream certificate. Turn off only for local experiments.',
      default: true,
    }),
    servername: Type.Optional(Type.String({ description: 'SNI server name; defaults to the target host.' })),
  },
  { description: 'TLS settings for https:// targets.', default: {} },
);

export const UpstreamSchema = Obj(
  {
    targets: Type.Array(
      Type.String({ description: 'Base URL of one target, http:// or https://, optionally with a base path.' }),
      { description: 'Targets balanced round-robin.', minItems: 1 },
    ),
    pool: PoolSchema,
    timeouts: TimeoutsSchema,
    tls: TlsSchema,
  },
  { description: 'A backend service reached through one or more targets.' },
);

export const MatchSchema = Obj(
  {
    prefix: Type.String({
      description:
        'Path prefix, matched at segment boundaries after normalisation (/api/users matches /api/users and /api/users/1, never /api/users-admin).',
      pattern: '^/',
    }),
    methods: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Z]+$', description: 'An HTTP method in upper case.' }), {
        description: 'Methods the route accepts; other methods get 405 with Allow. All methods when omitted.',
        minItems: 1,
      }),
    ),
    hosts: Type.Optional(
      Type.Array(
        Type.String({
          description: 'A host name, or *.example.com for any subdomain.',
          pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$',
        }),
        { description: 'Host names the route answers for. Any host when omitted.', minItems: 1 },
      ),
    ),
  },
  { description: 'Which requests the route takes.' },
);

export const RewriteSchema = Obj(
  {
    stripPrefix: Type.Boolean({
      description: 'Remove the matched prefix before forwarding (/api/users/1 → /1).',
      default: false,
    }),
    replacePrefix: Type.Optional(
      Type.String({
        description: 'Replace the matched prefix with this one before forwarding (/api/users/1 → /v2/users/1).',
        pattern: '^/',
      }),
    ),
  },
  { description: 'How the path is rewritten before it is forwarded.', default: {} },
);

/** Sections that later capabilities fill in; present now so configs can already carry them. */
const Reserved = (description: string) =>
  Type.Record(Type.String(), Type.Unknown({ description: 'Reserved for a later capability.' }), { description: `${description} (reserved)` });

export const RouteSchema = Obj(
  {
    name: Type.String({
      description: 'Unique route name; used in metrics labels and logs (never raw paths).',
      pattern: '^[A-Za-z0-9_.-]+$',
      maxLength: 64,
    }),
    match: MatchSchema,
    upstream: Type.String({ description: 'Name of the upstream this route forwards to.' }),
    rewrite: RewriteSchema,
    preserveHost: Type.Boolean({
      description: "Forward the client's Host header instead of the target's.",
      default: false,
    }),
    rateLimit: Type.Optional(RouteRateLimitSchema),
    cache: Type.Optional(Reserved('Response cache of this route')),
    auth: Type.Optional(RouteAuthSchema),
    policies: RoutePoliciesSchema,
  },
  { description: 'A route: which requests go to which upstream, and how.' },
);

export const ConfigSchema = Obj(
  {
    listen: ListenSchema,
    trustedProxies: Type.Array(
      Type.String({ description: 'An IPv4 or IPv6 address or CIDR, such as 10.0.0.0/8.' }),
      {
        description:
          'Peers whose X-Forwarded-For is believed. The client IP is the first untrusted address walking X-Forwarded-For right to left.',
        default: [],
      },
    ),
    admin: AdminSchema,
    log: LogSchema,
    shutdown: ShutdownSchema,
    upstreams: Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]+$' }), UpstreamSchema, {
      description: 'Backends by name.',
      default: {},
    }),
    routes: Type.Array(RouteSchema, { description: 'Routes; the longest matching prefix wins.', default: [] }),
    store: StoreSchema,
    auth: AuthSchema,
    reload: Obj(
      {
        watch: Type.Boolean({
          description: 'Reload automatically when the configuration file changes (polled; works with Kubernetes ConfigMap symlink swaps).',
          default: false,
        }),
        watchIntervalMs: Ms('How often the watched file is checked', 1000, 100),
      },
      { description: 'Hot reload. SIGHUP and POST /admin/reload always reload; watching the file is optional.', default: {} },
    ),
    consumers: Type.Array(ConsumerSchema, { description: 'API consumers known to the gateway.', default: [] }),
    policies: PoliciesSchema,
  },
  { description: 'Gateway configuration.' },
);

export type GatewayConfig = Static<typeof ConfigSchema>;
export type RouteConfig = Static<typeof RouteSchema>;
export type UpstreamConfig = Static<typeof UpstreamSchema>;
