import { Type, type Static, type TProperties } from '@sinclair/typebox';

/**
 * Configuration of the request and response policies: the global `policies` section and the
 * `policies` section of a route. Rules that span fields (CIDRs, header names, templates, origins,
 * dates) are checked in ./check.ts with precise paths.
 */

const Obj = <T extends TProperties>(props: T, description: string, def?: object) =>
  Type.Object(props, { additionalProperties: false, description, ...(def ? { default: def } : {}) });

const Names = (description: string) =>
  Type.Array(Type.String({ description: 'A header name.' }), { description, default: [] });

const NameValues = (description: string, value: string) =>
  Type.Record(Type.String(), Type.String({ description: value }), { description, default: {} });

const TEMPLATE_NOTE =
  'Values may use {requestId}, {consumerId}, {clientIp} and {route}; a header whose template refers to an empty value (no consumer on an anonymous request) is left out.';

export const HeaderRulesSchema = Obj(
  {
    remove: Names('Headers removed.'),
    rename: NameValues('Headers renamed, old name → new name; every value is kept.', 'The new name of the header.'),
    set: NameValues(`Headers set, replacing any value already there. ${TEMPLATE_NOTE}`, 'The value (a template).'),
    add: NameValues(`Headers added next to any value already there. ${TEMPLATE_NOTE}`, 'The value (a template).'),
  },
  'Header rules for one direction, applied in the order remove, rename, set, add. A header name may appear in one rule only.',
  {},
);

export const HeadersPolicySchema = Obj(
  {
    request: HeaderRulesSchema,
    response: Obj(
      HeaderRulesSchema.properties,
      "Rules for the upstream's response headers before the client gets them (gateway errors are not rewritten).",
      {},
    ),
  },
  'Header rules of the route. The gateway keeps the headers it owns (Host, X-Forwarded-*, X-Request-Id, framing and hop-by-hop headers) out of reach.',
  {},
);

export const IpRulesSchema = Obj(
  {
    allow: Type.Array(Type.String({ description: 'An IPv4 or IPv6 address or CIDR.' }), {
      description: 'When not empty, only client addresses in these ranges pass.',
      default: [],
    }),
    deny: Type.Array(Type.String({ description: 'An IPv4 or IPv6 address or CIDR.' }), {
      description: 'Client addresses in these ranges are refused (403), even when they are also allowed.',
      default: [],
    }),
  },
  'Allow and deny lists checked against the resolved client IP (trusted proxies honoured).',
);

export const CorsSchema = Obj(
  {
    enabled: Type.Boolean({ description: 'Apply CORS; false turns off a global policy for one route.', default: true }),
    origins: Type.Array(
      Type.String({
        description:
          'An origin such as https://app.example.com, a pattern such as https://*.example.com or http://localhost:*, or * for any origin.',
      }),
      { description: 'Origins allowed to call the route from a browser.', default: [] },
    ),
    methods: Type.Array(Type.String({ pattern: '^[A-Z]+$', expected: 'an HTTP method in upper case, such as GET', description: 'An HTTP method in upper case.' }), {
      description: "Methods announced to preflights. Empty: the route's methods, or the usual ones when the route takes any.",
      default: [],
    }),
    allowHeaders: Type.Optional(
      Type.Array(Type.String({ description: 'A header name.' }), {
        description: 'Request headers a browser may send. Omitted: whatever the preflight asks for is allowed.',
      }),
    ),
    exposeHeaders: Names('Response headers browser scripts may read beyond the CORS-safelisted ones.'),
    credentials: Type.Boolean({
      description: 'Allow cookies and HTTP authentication (Access-Control-Allow-Credentials); needs explicit origins, never *.',
      default: false,
    }),
    maxAgeSeconds: Type.Integer({ description: 'How long browsers may cache a preflight answer (seconds).', default: 600, minimum: 0 }),
  },
  'Cross-origin resource sharing. The gateway answers preflights itself (the upstream never sees them, auth is not asked for) and owns the Access-Control-* response headers.',
);

export const DeprecationSchema = Obj(
  {
    date: Type.String({
      description:
        'When the route was or will be deprecated, as an ISO 8601 date-time with a zone (2025-06-30T23:59:59Z); sent as `Deprecation: @<epoch seconds>` (RFC 9745).',
    }),
    sunset: Type.Optional(
      Type.String({ description: 'When the route stops answering, ISO 8601 with a zone; sent as an HTTP-date in `Sunset` (RFC 8594). Not before `date`.' }),
    ),
    link: Type.Optional(
      Type.String({ description: 'URL of the deprecation notice or migration guide, sent as `Link: <url>; rel="deprecation"`.' }),
    ),
  },
  'Marks the route deprecated: its responses carry Deprecation (and Sunset, Link) headers.',
);

const MaxBodyBytes = Type.Integer({
  description: 'Largest request body in bytes; larger ones get 413, including chunked bodies that grow past it while streaming.',
  minimum: 0,
});

export const LimitsSchema = Obj(
  {
    maxBodyBytes: Type.Optional(MaxBodyBytes),
    maxHeaderBytes: Type.Integer({
      description: 'Largest request head (request line and headers) in bytes; larger ones get 431.',
      default: 16384,
      minimum: 1024,
      maximum: 1048576,
    }),
    headersTimeoutMs: Type.Integer({
      description: 'Time allowed to receive the whole request head (milliseconds); slower clients (slowloris) get 408 and are disconnected.',
      default: 30000,
      minimum: 1,
    }),
    requestTimeoutMs: Type.Integer({
      description:
        'Time allowed to receive the whole request, body included (milliseconds); slower clients get 408 and are disconnected. 0 turns it off.',
      default: 300000,
      minimum: 0,
    }),
    firstByteTimeoutMs: Type.Integer({
      description:
        'Time a new connection may stay silent (milliseconds): one that has not sent a byte by then is closed without an answer, so idle connections cannot pile up file descriptors. 0 leaves them to headersTimeoutMs.',
      default: 10000,
      minimum: 0,
    }),
  },
  'Size limits and client timeouts of the public listener.',
  {},
);

export const PoliciesSchema = Obj(
  {
    ipRules: Obj(IpRulesSchema.properties, 'IP rules of every route that has none of its own.', {}),
    cors: Type.Optional(Obj(CorsSchema.properties, 'CORS of every route that has none of its own.')),
    limits: LimitsSchema,
  },
  'Policies shared by all routes; a route section of the same name replaces the global one for that route.',
  {},
);

export const RoutePoliciesSchema = Obj(
  {
    ipRules: Type.Optional(Obj(IpRulesSchema.properties, 'IP rules of this route, replacing the global ones.')),
    cors: Type.Optional(Obj(CorsSchema.properties, 'CORS of this route, replacing the global policy.')),
    headers: HeadersPolicySchema,
    envelope: Type.Boolean({
      description:
        'Wrap JSON responses as {"requestId", "timestamp", "data"} (streamed, never buffered). Other responses, problem+json and gateway errors pass untouched.',
      default: false,
    }),
    limits: Obj({ maxBodyBytes: Type.Optional(MaxBodyBytes) }, 'Limits of this route, replacing the global ones.', {}),
    deprecation: Type.Optional(DeprecationSchema),
  },
  'Request and response policies of this route.',
  {},
);

export type PoliciesConfig = Static<typeof PoliciesSchema>;
export type RoutePoliciesConfig = Static<typeof RoutePoliciesSchema>;
export type HeaderRulesConfig = Static<typeof HeaderRulesSchema>;
export type IpRulesConfig = Static<typeof IpRulesSchema>;
export type CorsConfig = Static<typeof CorsSchema>;
export type DeprecationConfig = Static<typeof DeprecationSchema>;
export type LimitsConfig = Static<typeof LimitsSchema>;
