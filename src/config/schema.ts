import { Type, type Static, type TProperties, type ObjectOptions } from '@sinclair/typebox';
import { PLUGIN_FIELDS } from '../plugins/fields';
import { HstsSchema } from '../net/hsts-schema';
import { StoreSchema } from '../store/schema';
import { WebSocketRouteSchema } from '../websocket/schema';

/**
 * The configuration schema is the single source of validation, TypeScript types and the
 * config reference (docs/config.md is generated from it). Every field carries a description
 * and, unless it is required, a default.
 */

/** A closed object: unknown keys are configuration errors. */
const Obj = <T extends TProperties>(props: T, opts: ObjectOptions & { description: string }) =>
  Type.Object(props, { additionalProperties: false, ...opts });

type UnionToIntersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;
type PluginFields<K extends 'top' | 'route'> = UnionToIntersection<(typeof PLUGIN_FIELDS)[number][K]>;

/**
 * The fields every plugin adds at one level, merged. Their types come from the typed plugin list, so
 * GatewayConfig and RouteConfig stay precise; a field claimed twice is a programming error.
 */
function pluginFields<K extends 'top' | 'route'>(level: K, core: TProperties): PluginFields<K> {
  const out: TProperties = {};
  for (const fields of PLUGIN_FIELDS) {
    for (const [key, schema] of Object.entries(fields[level])) {
      if (Object.hasOwn(core, key) || Object.hasOwn(out, key)) throw new Error(`two plugins define the ${level} config field "${key}"`);
      out[key] = schema;
    }
  }
  return out as PluginFields<K>;
}

const Ms = (description: string, def: number, minimum = 0) =>
  Type.Integer({ description: `${description} (milliseconds).`, default: def, minimum });

export const ServerCertificateSchema = Obj(
  {
    certFile: Type.String({ description: 'PEM file of the certificate, followed by its intermediates.' }),
    keyFile: Type.String({ description: 'PEM file of the private key of the certificate.' }),
    serverNames: Type.Optional(
      Type.Array(
        Type.String({
          description: 'A host name, or *.example.com for any one label under example.com.',
          pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$',
          expected: 'a host name such as api.example.com, or *.example.com',
        }),
        { description: "SNI names this certificate answers for. Default: the DNS names of the certificate's subjectAltName.", minItems: 1 },
      ),
    ),
  },
  { description: 'A certificate of the TLS listener.' },
);

export const ListenTlsSchema = Obj(
  {
    port: Type.Integer({ description: 'Port of the TLS listener (on listen.host).', default: 8443, minimum: 0, maximum: 65535 }),
    certificates: Type.Array(ServerCertificateSchema, {
      description:
        'Certificates chosen by the SNI name the client sends: an exact name first, then a wildcard, then the first certificate (the default, also for clients that send no SNI). Files are read again on every reload.',
      minItems: 1,
    }),
    minVersion: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], {
      description: 'Oldest TLS version accepted; older clients fail the handshake.',
      default: 'TLSv1.2',
    }),
    clientCertificates: Obj(
      {
        mode: Type.Union([Type.Literal('off'), Type.Literal('request'), Type.Literal('require')], {
          description:
            'off: no client certificate is asked for; request: asked for, and a verified one is available to the chain (ctx.clientCert); require: a connection without a certificate signed by caFile fails the handshake.',
          default: 'off',
        }),
        caFile: Type.Optional(Type.String({ description: 'PEM file of the authorities client certificates must chain to (required unless mode is off).' })),
      },
      { description: 'Client certificates (mTLS at the edge).', default: {} },
    ),
    hsts: Type.Optional(HstsSchema),
    http2: Type.Boolean({
      description:
        'Serve HTTP/2 beside HTTP/1.1 on this port: ALPN offers h2 and http/1.1, and each connection speaks what the client picked. HTTP/2 requests go through the same chain and are relayed to HTTP/1.1 upstreams (gRPC routes relay over HTTP/2). Off, ALPN offers http/1.1 only.',
      default: true,
    }),
  },
  { description: 'The TLS listener, beside the plain one (or alone with plain: false). ALPN offers h2 and http/1.1 (see http2).' },
);

export const ListenSchema = Obj(
  {
    host: Type.String({ description: 'Address the public listener binds to.', default: '0.0.0.0' }),
    port: Type.Integer({
      description: 'Port of the public listener. The PORT environment variable overrides it.',
      default: 8080,
      minimum: 0,
      maximum: 65535,
    }),
    plain: Type.Boolean({
      description: 'Serve plain HTTP on `port`. Turn it off to accept TLS only (listen.tls is then required).',
      default: true,
    }),
    tls: Type.Optional(ListenTlsSchema),
    h2c: Type.Optional(
      Obj(
        {
          port: Type.Integer({ description: 'Port of the h2c listener (on listen.host).', minimum: 0, maximum: 65535 }),
        },
        {
          description:
            'A cleartext HTTP/2 listener (h2c with prior knowledge, RFC 9113 §3.3) on a port of its own, for gRPC clients and meshes that speak HTTP/2 without TLS. The HTTP/1.1 port keeps refusing the HTTP/2 preface (505); the Upgrade: h2c dance is not supported.',
        },
      ),
    ),
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
          id: Type.String({ description: 'Who holds the token; written to audit lines.', pattern: '^[A-Za-z0-9_.@-]{1,64}$', expected: 'an id of 1 to 64 letters, digits and _ . @ -' }),
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

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_NAME_WORDS = "a header name such as X-Tenant (letters, digits and !#$%&'*+.^_`|~-)";

/** What an access line can hold besides its time and level (see observability/access-log.ts). */
export const ACCESS_FIELDS = [
  'reqId',
  'traceId',
  'method',
  'host',
  'path',
  'query',
  'status',
  'route',
  'target',
  'consumer',
  'client',
  'userAgent',
  'bytesIn',
  'bytesOut',
  'ms',
  'upstreamMs',
  'cache',
  'rateLimit',
  'error',
  'grpcStatus',
] as const;
export type AccessField = (typeof ACCESS_FIELDS)[number];
/** All but the query string, the user agent and the gRPC status, which are opt-in. */
const DEFAULT_ACCESS_FIELDS = ACCESS_FIELDS.filter((f) => f !== 'query' && f !== 'userAgent' && f !== 'grpcStatus');

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
    accessFormat: Type.Union([Type.Literal('json'), Type.Literal('logfmt')], {
      description: 'Shape of the access line: json (one JSON object, like the other log lines) or logfmt (key=value pairs).',
      default: 'json',
    }),
    accessFields: Type.Array(Type.Union(ACCESS_FIELDS.map((f) => Type.Literal(f))), {
      description:
        'Fields of the access line, in this order after time and level (a field without a value, such as consumer on an anonymous request, is left out). query is written with the values of redactQuery parameters replaced.',
      default: [...DEFAULT_ACCESS_FIELDS],
      uniqueItems: true,
    }),
    accessHeaders: Type.Array(Type.String({ description: 'A request header name.', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }), {
      description: 'Request headers written to the access line (as header.<name>); those in redactHeaders are written as [redacted].',
      default: [],
    }),
    redactQuery: Type.Array(Type.String({ description: 'A query parameter name (compared without regard to case).', minLength: 1 }), {
      description: 'Query parameters whose values never reach the access line.',
      default: ['access_token', 'token', 'id_token', 'refresh_token', 'api_key', 'apikey', 'key', 'password', 'secret', 'signature', 'sig', 'code'],
    }),
    redactHeaders: Type.Array(Type.String({ description: 'A header name (compared without regard to case).', pattern: HEADER_NAME, expected: HEADER_NAME_WORDS }), {
      description: 'Request headers whose values never reach the access line, even when listed in accessHeaders.',
      default: ['authorization', 'proxy-authorization', 'cookie', 'x-api-key'],
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
    certFile: Type.Optional(
      Type.String({ description: 'PEM file of the client certificate presented to the upstream (mTLS); needs keyFile. Re-read on every reload.' }),
    ),
    keyFile: Type.Optional(Type.String({ description: 'PEM file of the private key of certFile.' })),
  },
  { description: 'TLS settings for https:// targets.', default: {} },
);

/** What can count as an upstream failure, for the circuit breaker and for retries. */
export const FAILURE_KINDS = ['connect', 'timeout', 'reset', 'bad-response', 'gateway-error', '5xx'] as const;

const FailureKinds = (description: string, def: readonly (typeof FAILURE_KINDS)[number][]) =>
  Type.Array(Type.Union(FAILURE_KINDS.map((k) => Type.Literal(k))), {
    description:
      `${description} connect: refused or timed-out connection; timeout: no headers or body in time, or the request deadline passed; ` +
      'reset: connection closed before the response ended; bad-response: unparsable answer; gateway-error: a 502, 503 or 504 answer; 5xx: any 5xx answer.',
    default: [...def],
    uniqueItems: true,
  });

export const BreakerSchema = Obj(
  {
    enabled: Type.Boolean({ description: 'Run a circuit breaker for each target of the upstream.', default: true }),
    consecutiveFailures: Type.Integer({
      description: 'Open after this many failures in a row. 0 turns this trigger off.',
      default: 5,
      minimum: 0,
    }),
    failureRatio: Type.Number({
      description: 'Open when failures reach this share of the requests in the rolling window. 0 turns this trigger off.',
      default: 0.5,
      minimum: 0,
      maximum: 1,
    }),
    minRequests: Type.Integer({
      description: 'Requests the rolling window must hold before failureRatio is judged.',
      default: 20,
      minimum: 1,
    }),
    windowMs: Ms('Length of the rolling window for failureRatio', 10000, 100),
    failureOn: FailureKinds('What counts as a failure.', ['connect', 'timeout', 'reset', 'bad-response', 'gateway-error']),
    openMs: Ms('How long a tripped breaker rejects requests before it lets probes through', 5000, 1),
    backoffMultiplier: Type.Number({
      description: 'openMs is multiplied by this for every trip that follows the previous one within maxOpenMs of recovering.',
      default: 2,
      minimum: 1,
    }),
    maxOpenMs: Ms('Cap on the open time as it grows with repeated trips', 60000, 1),
    halfOpenProbes: Type.Integer({
      description:
        'Requests let through at once when the open time is over; the breaker closes when that many succeed and opens again when one fails.',
      default: 1,
      minimum: 1,
    }),
  },
  {
    description:
      'Circuit breaker per target (passive health): while it is open the target leaves the rotation; when every target is out the gateway answers 503 with Retry-After without calling the upstream.',
    default: {},
  },
);

const StatusPattern = Type.Union(
  [
    Type.Integer({ description: 'A status code.', minimum: 100, maximum: 599 }),
    Type.String({ description: 'A status class such as 2xx.', pattern: '^[1-5]xx$', expected: 'a status class such as 2xx' }),
  ],
  { description: 'A status code or class.', expected: 'a status code from 100 to 599 or a class such as 2xx' },
);

export const HealthCheckSchema = Obj(
  {
    enabled: Type.Boolean({ description: 'Probe every target actively.', default: false }),
    path: Type.String({ description: "Path probed with GET on each target (after the target's base path).", default: '/health', pattern: '^/', expected: 'a path starting with /' }),
    intervalMs: Ms('Time between the end of one probe and the start of the next', 5000, 50),
    timeoutMs: Ms('Time a probe may take, headers and body, before it counts as failed', 2000, 1),
    healthyThreshold: Type.Integer({ description: 'Passing probes in a row that bring an unhealthy target back.', default: 2, minimum: 1 }),
    unhealthyThreshold: Type.Integer({ description: 'Failing probes in a row that take a target out of the rotation.', default: 3, minimum: 1 }),
    expectedStatuses: Type.Array(StatusPattern, {
      description: 'Statuses that count as passing.',
      default: ['2xx'],
      minItems: 1,
    }),
    grpcService: Type.Optional(
      Type.String({
        description:
          "Probe with the gRPC health protocol instead of GET path: grpc.health.v1.Health/Check over HTTP/2 (h2c or TLS as the targets) for this service name ('' asks about the server as a whole); a probe passes when the answer is grpc-status 0 with status SERVING. path and expectedStatuses are not used then.",
      }),
    ),
  },
  {
    description:
      'Active health checks. An unhealthy target leaves the rotation and comes back once enough probes pass; probes never stop while the gateway runs.',
    default: {},
  },
);

export const RetriesSchema = Obj(
  {
    maxRetries: Type.Integer({
      description:
        'Retries per request after the first attempt. 0 turns retries off. An attempt that never reached its target (connection refused or timed out, no byte of the request sent) moves to another target whatever this says, its method and the budget (once per other target, within the deadline).',
      default: 1,
      minimum: 0,
      maximum: 10,
    }),
    methods: Type.Array(Type.String({ pattern: '^[A-Z]+$', expected: 'an HTTP method in upper case, such as GET', description: 'An idempotent HTTP method in upper case.' }), {
      description: 'Methods that may be retried. Only idempotent ones: POST and PATCH are refused. Requests with a body are never retried.',
      default: ['GET', 'HEAD', 'OPTIONS'],
      uniqueItems: true,
    }),
    on: FailureKinds('Failures that are retried, on another target when there is one.', ['connect', 'reset', 'gateway-error']),
    budgetRatio: Type.Number({
      description: 'Retry budget: retries stay at or below this share of the requests in the budget window.',
      default: 0.2,
      minimum: 0,
      maximum: 1,
    }),
    budgetMinRetries: Type.Integer({
      description: 'Retries allowed in each budget window whatever the ratio, so a quiet upstream can still retry.',
      default: 3,
      minimum: 0,
    }),
    budgetWindowMs: Ms('Sliding window of the retry budget', 10000, 100),
    staleConnection: Type.Boolean({
      description:
        'Retry once a request without a body, of a method in `methods`, that failed on a reused keep-alive connection the upstream had closed before any response byte came back (the idle-socket race). It does not count against the budget. Other methods are never sent twice: the upstream may have read the request before the connection closed.',
      default: true,
    }),
  },
  {
    description:
      'Safe retries: only before anything was sent to the client, within the request deadline (timeouts.requestMs) and the retry budget.',
    default: {},
  },
);

export const QueueSchema = Obj(
  {
    timeoutMs: Ms('Longest wait for a connection when every connection of the target is busy; then 503', 5000, 1),
    maxQueued: Type.Integer({
      description: 'Requests that may wait for a busy target at once; beyond it the answer is 503 straight away, which keeps memory bounded.',
      default: 1024,
      minimum: 0,
    }),
  },
  { description: 'Bounded waiting when a target is saturated (pool.connections × pool.pipelining requests in flight).', default: {} },
);

const TargetUrl = Type.String({ description: 'Base URL of one target, http:// or https://, optionally with a base path.' });

export const BALANCE_ALGORITHMS = ['round-robin', 'least-request', 'hash'] as const;

export const HashSchema = Obj(
  {
    key: Type.Optional(
      Type.String({
        description:
          'What requests are hashed on (required with balance: hash): header:<name>, cookie:<name>, ip (the client IP), consumer (the authenticated consumer id) or path. A request without the key goes round-robin.',
        pattern: '^(header:[A-Za-z0-9!#$%&\'*+.^_`|~-]+|cookie:[^\\s;=,]+|ip|consumer|path)$',
        expected: 'header:<name>, cookie:<name>, ip, consumer or path',
      }),
    ),
    loadFactor: Type.Number({
      description:
        'Bounded load: a target with more requests in flight than loadFactor times the average is passed over for the next one on the ring (consistent hashing with bounded loads). 0 turns the bound off.',
      default: 1.25,
      minimum: 0,
    }),
  },
  { description: 'Consistent hashing (balance: hash): a ring with virtual nodes per target, so adding or removing one target of n moves about 1/n of the keys.', default: {} },
);

export const DiscoverySchema = Obj(
  {
    type: Type.Union([Type.Literal('static'), Type.Literal('dns'), Type.Literal('srv')], {
      description:
        'static: the target URLs as written. dns: each target host name is resolved (A and AAAA) and every address becomes a target on the URL\'s port, re-resolved at the records\' TTL. srv: each target host name is an SRV name; every record becomes a target on its port with its weight. Meant for a Kubernetes headless Service, so that balancing, breakers and health checks act on the pods.',
      default: 'static',
    }),
    servers: Type.Array(Type.String({ description: 'A DNS server address, ip or ip:port.' }), {
      description: 'DNS servers to ask; empty uses the system resolvers.',
      default: [],
    }),
    minTtlMs: Ms('Shortest time between two resolutions, whatever the records\' TTL', 1000, 100),
    maxTtlMs: Ms('Longest time between two resolutions, whatever the records\' TTL', 60000, 100),
    emptyKeepMs: Ms('How long the last known targets are kept when the name resolves to no address; DNS errors keep them as long as they last', 30000, 0),
  },
  { description: 'Where the targets come from: the configuration, or DNS.', default: {} },
);

export const UpstreamSchema = Obj(
  {
    targets: Type.Array(
      Type.Union(
        [
          TargetUrl,
          Obj(
            {
              url: TargetUrl,
              weight: Type.Optional(Type.Integer({ description: 'Share of the traffic relative to the other targets.', default: 1, minimum: 1, maximum: 1000 })),
            },
            { description: 'A target with a weight.' },
          ),
        ],
        { description: 'A target: its URL, or {url, weight}.', expected: 'a URL or {url, weight}' },
      ),
      { description: 'Targets the upstream balances over.', minItems: 1 },
    ),
    balance: Type.Union(BALANCE_ALGORITHMS.map((a) => Type.Literal(a)), {
      description:
        'How a target is picked: round-robin (smooth weighted round-robin), least-request (the less loaded of two random targets, by requests in flight per weight) or hash (consistent hashing on hash.key).',
      default: 'round-robin',
    }),
    hash: HashSchema,
    slowStartMs: Ms('A target that joins or recovers gets its weight ramped up over this window instead of a full share at once. 0 turns slow start off', 0),
    minHealthyPercent: Type.Integer({
      description:
        'Panic threshold: when fewer than this percentage of the targets take traffic, traffic goes to all of them (better some answers than 503 for every request). 0 turns panic mode off: the gateway answers 503 once every target is out.',
      default: 0,
      minimum: 0,
      maximum: 100,
    }),
    protocol: Type.Union([Type.Literal('http'), Type.Literal('grpc')], {
      description:
        'How the gateway talks to the targets. http: HTTP/1.1 (undici pools). grpc: every route to this upstream relays gRPC over HTTP/2 (h2c for http:// targets, TLS with ALPN h2 for https://), streaming both ways with trailers, one multiplexed connection per target.',
      default: 'http',
    }),
    discovery: DiscoverySchema,
    pool: PoolSchema,
    timeouts: TimeoutsSchema,
    tls: TlsSchema,
    breaker: BreakerSchema,
    healthCheck: HealthCheckSchema,
    retries: RetriesSchema,
    queue: QueueSchema,
  },
  { description: 'A backend service reached through one or more targets.' },
);

export const MatchSchema = Obj(
  {
    prefix: Type.String({
      description:
        'Path prefix, matched at segment boundaries after normalisation (/api/users matches /api/users and /api/users/1, never /api/users-admin).',
      pattern: '^/',
      expected: 'a path starting with /',
    }),
    methods: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Z]+$', expected: 'an HTTP method in upper case, such as GET', description: 'An HTTP method in upper case.' }), {
        description: 'Methods the route accepts; other methods get 405 with Allow. All methods when omitted.',
        minItems: 1,
      }),
    ),
    hosts: Type.Optional(
      Type.Array(
        Type.String({
          description: 'A host name, or *.example.com for any subdomain.',
          pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$',
          expected: 'a host name such as api.example.com, or *.example.com',
        }),
        { description: 'Host names the route answers for. Any host when omitted.', minItems: 1 },
      ),
    ),
    allowPathParameters: Type.Boolean({
      description:
        'Forward paths with ";" parameters in their segments (matrix parameters, ;jsessionid=...). Off, such a path (";" or %3B) gets 400: Tomcat, Jetty and Spring upstreams strip parameters before matching, so /admin;x/ routed by a catch-all route would reach /admin/ there. Dot segments with parameters (..;x) get 400 either way.',
      default: false,
    }),
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
        expected: 'a path starting with /',
      }),
    ),
  },
  { description: 'How the path is rewritten before it is forwarded.', default: {} },
);

const SplitMatchSchema = Obj(
  {
    header: Type.Optional(
      Type.String({
        description: 'Request header whose value is compared (give header or cookie, not both).',
        pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        expected: 'a header name',
      }),
    ),
    cookie: Type.Optional(
      Type.String({ description: 'Cookie whose value is compared (give header or cookie, not both).', pattern: '^[^\\s;=,]+$', expected: 'a cookie name' }),
    ),
    value: Type.String({ description: 'The value that sends the request to this side.' }),
  },
  { description: 'A request whose header or cookie has this value goes to this side, whatever the weights.' },
);

export const SplitSchema = Obj(
  {
    sides: Type.Array(
      Obj(
        {
          upstream: Type.String({ description: 'Name of the upstream of this side.' }),
          weight: Type.Integer({ description: 'Share of the traffic relative to the other sides (0 takes only matched requests).', default: 1, minimum: 0, maximum: 1000000 }),
          match: Type.Optional(Type.Array(SplitMatchSchema, { description: 'Rules that send a request to this side whatever the weights; checked in side order, the first that holds wins.' })),
        },
        { description: 'One side of the split.' },
      ),
      { description: 'The upstreams the route splits its requests between; the route\'s own `upstream` must be one of them.', minItems: 2 },
    ),
    sticky: Type.Optional(
      Type.String({
        description:
          'Keep each user on one side: the side is chosen by the hash of this key over the weights (header:<name>, cookie:<name>, ip or consumer). A request without the key is split by weight alone.',
        pattern: '^(header:[A-Za-z0-9!#$%&\'*+.^_`|~-]+|cookie:[^\\s;=,]+|ip|consumer)$',
        expected: 'header:<name>, cookie:<name>, ip or consumer',
      }),
    ),
  },
  {
    description:
      'Traffic split (canary): requests go to one of several upstreams by match rule, sticky hash or weight, each upstream with its own health, breaker and metrics. WebSocket upgrades go to the route\'s `upstream`.',
  },
);

export const MirrorSchema = Obj(
  {
    upstream: Type.String({ description: 'Name of the shadow upstream that gets the copies.' }),
    sampleRatio: Type.Number({ description: 'Share of the requests copied, from 0 to 1.', default: 1, minimum: 0, maximum: 1 }),
    maxConcurrent: Type.Integer({ description: 'Copies in flight at most; further ones are dropped (counted), never queued.', default: 16, minimum: 1 }),
  },
  {
    description:
      'Copy a sampled share of the requests without a body to a shadow upstream, fire and forget: the copy never delays or fails the client\'s request, its answer is discarded, and it carries X-Gateway-Mirror: 1 (a request with that header is never mirrored again).',
  },
);

const routeCore = {
    name: Type.String({
      description: 'Unique route name; used in metrics labels and logs (never raw paths).',
      pattern: '^[A-Za-z0-9_.-]+$',
      expected: 'a name of letters, digits and _ . -',
      maxLength: 64,
    }),
    match: MatchSchema,
    upstream: Type.String({ description: 'Name of the upstream this route forwards to (with split: one of its sides).' }),
    split: Type.Optional(SplitSchema),
    mirror: Type.Optional(MirrorSchema),
    rewrite: RewriteSchema,
    preserveHost: Type.Boolean({
      description: "Forward the client's Host header instead of the target's.",
      default: false,
    }),
    websocket: WebSocketRouteSchema,
    protocol: Type.Optional(
      Type.Union([Type.Literal('http'), Type.Literal('grpc')], {
        description:
          "grpc: relay this route's requests as gRPC over HTTP/2 (see upstreams.*.protocol); gateway errors are then gRPC statuses. Default: the upstream's protocol.",
      }),
    ),
};

export const RouteSchema = Obj(
  { ...routeCore, ...pluginFields('route', routeCore) },
  { description: 'A route: which requests go to which upstream, and how.' },
);

const configCore = {
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
      expectedKey: 'a name of letters, digits and _ . -',
      additionalProperties: false,
      default: {},
    }),
    routes: Type.Array(RouteSchema, { description: 'Routes; the longest matching prefix wins.', default: [] }),
    store: StoreSchema,
    reload: Obj(
      {
        watch: Type.Boolean({
          description:
            'Reload automatically when the configuration file, or a certificate, key or CA file it names (listen.tls, upstreams.*.tls), changes (polled; works with Kubernetes ConfigMap and Secret symlink swaps).',
          default: false,
        }),
        watchIntervalMs: Ms('How often the watched file is checked', 1000, 100),
      },
      { description: 'Hot reload. SIGHUP and POST /admin/reload always reload; watching the file is optional.', default: {} },
    ),
};

export const ConfigSchema = Obj({ ...configCore, ...pluginFields('top', configCore) }, { description: 'Gateway configuration.' });

export type GatewayConfig = Static<typeof ConfigSchema>;
export type RouteConfig = Static<typeof RouteSchema>;
export type RouteSplitConfig = Static<typeof SplitSchema>;
export type RouteMirrorConfig = Static<typeof MirrorSchema>;
export type UpstreamConfig = Static<typeof UpstreamSchema>;
export type FailureKind = (typeof FAILURE_KINDS)[number];
