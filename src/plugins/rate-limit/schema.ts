import { Type, type Static } from '@sinclair/typebox';

/** A refill period such as 500ms, 1s, 1m, 1h, 1d, 1w or 1mo (30 days). */
export const PERIOD_PATTERN = '^[1-9][0-9]*(ms|s|m|h|d|w|mo)$';

const BY_PATTERN = '^(ip|consumer|apiKey|route|header:[!#$%&\'*+.^_`|~0-9A-Za-z-]+)$';

const limitFields = (byDefault: string, byDescription: string, nameDescription: string) => ({
  rate: Type.Integer({ description: 'Tokens added to the bucket every `per`.', minimum: 1 }),
  per: Type.String({
    description:
      'Refill period: ms, s, m, h, d, w (7 days) or mo (30 days, not the calendar month: buckets refill continuously, so a quota of 1000 per 1mo gives a token back every 43.2 minutes rather than resetting on the 1st).',
    pattern: PERIOD_PATTERN,
    expected: 'a duration like 500ms, 1s, 5m, 1h, 1d, 1w, 1mo',
  }),
  burst: Type.Optional(
    Type.Integer({ description: 'Bucket capacity (the largest burst). Defaults to `rate`.', minimum: 1 }),
  ),
  by: Type.String({ description: byDescription, pattern: BY_PATTERN, expected: 'ip, consumer, apiKey, route or header:<name>', default: byDefault }),
  scope: Type.Union([Type.Literal('route'), Type.Literal('consumer')], {
    description:
      'route: each route has its own bucket. consumer: one bucket across every route that applies this limit (a quota for all of the caller\'s traffic, keyed by `by`, never by the route); routes share it when they apply the same limit (same rate, per, burst, by and name).',
    default: 'route',
  }),
  name: Type.Optional(
    Type.String({
      description: nameDescription,
      pattern: '^[A-Za-z0-9_.:-]{1,64}$',
      expected: 'a name of 1 to 64 letters, digits and _ . : -',
    }),
  ),
});

const BY_DESCRIPTION =
  'What the bucket is keyed by: ip, consumer (falls back to the client IP without an identity), apiKey (the API key header named by auth.apiKeys.header, X-API-Key by default, hashed; falls back to the client IP), header:<name> (falls back to the client IP when absent), or route (one bucket shared by everyone).';

const NAME_DESCRIPTION = 'Policy name shown in the RateLimit-Policy and RateLimit headers. Defaults to a name built from the limit, such as ip-100per1m.';

export const LimitSchema = Type.Object(limitFields('ip', BY_DESCRIPTION, NAME_DESCRIPTION), {
  additionalProperties: false,
  description: 'A token bucket: `rate` tokens per `per`, holding at most `burst`.',
});

/** A consumer's own limit: the same bucket, keyed by the consumer unless told otherwise. */
export const ConsumerLimitSchema = Type.Object(
  limitFields(
    'consumer',
    BY_DESCRIPTION,
    "Policy name shown in the RateLimit-Policy and RateLimit headers. Defaults to a name built from the limit and marked as the consumer's: consumer-100per1m when keyed by consumer, consumer-ip-100per1m when keyed by ip.",
  ),
  {
    additionalProperties: false,
    description: 'A token bucket: `rate` tokens per `per`, holding at most `burst`.',
  },
);

export const RouteRateLimitSchema = Type.Object(
  {
    limits: Type.Array(LimitSchema, {
      description:
        'Buckets every request on this route must find a token in; all are checked and consumed together (a rejected request takes nothing).',
      default: [],
    }),
    consumerLimits: Type.Boolean({
      description:
        "Also apply the authenticated consumer's own `rateLimits` on this route: per-route ones with buckets of this route, scope consumer ones with the consumer's one bucket across routes. With false this route's traffic does not count against the consumer's quotas.",
      default: true,
    }),
    failMode: Type.Union([Type.Literal('open'), Type.Literal('closed'), Type.Literal('local')], {
      description:
        "When the store cannot answer within its budget: open admits the request (no rate-limit headers, counted in metrics), closed answers 503 with Retry-After, local decides from this replica's memory with every bucket's rate and burst divided by store.redis.replicas (burst rounded down, at least 1), with the headers of that local bucket; each request asks Redis first, so limits are shared again as soon as it answers.",
      default: 'open',
    }),
    headers: Type.Boolean({
      description:
        'Send RateLimit-Policy, RateLimit (draft-ietf-httpapi-ratelimit-headers) and X-RateLimit-Limit/-Remaining/-Reset. Retry-After is always sent on 429.',
      default: true,
    }),
  },
  { additionalProperties: false, description: 'Token-bucket rate limits of this route.' },
);

export type LimitConfig = Static<typeof LimitSchema>;
export type RouteRateLimitConfig = Static<typeof RouteRateLimitSchema>;
