import { Type, type Static } from '@sinclair/typebox';

/** Longest a response may be kept: invalidation generations in Redis outlive every entry (see backend.ts). */
export const MAX_TTL_S = 86400;

export const RouteCacheSchema = Type.Object(
  {
    maxTtl: Type.Integer({
      description: 'Longest a response is considered fresh (seconds), whatever the upstream says (s-maxage, max-age, Expires are capped by it).',
      default: 300,
      minimum: 1,
      maximum: MAX_TTL_S,
    }),
    defaultTtl: Type.Integer({
      description:
        'Freshness (seconds) of a response that carries no explicit freshness (s-maxage, max-age, Expires). 0 keeps the route a strict RFC 9111 shared cache: only what the upstream marks fresh is stored.',
      default: 0,
      minimum: 0,
      maximum: MAX_TTL_S,
    }),
    maxBodyBytes: Type.Integer({
      description: 'Largest response body stored; a longer response is relayed but not stored.',
      default: 1048576,
      minimum: 0,
    }),
    statuses: Type.Array(Type.Integer({ minimum: 200, maximum: 499, description: 'A status stored without explicit freshness.' }), {
      description:
        'Statuses that may be stored when the response carries no explicit freshness (kept for defaultTtl, or as the base of a revalidation). A response with s-maxage, max-age or Expires is stored whatever its final status (RFC 9111 §3), except 206 and 304; errors the gateway makes itself are never stored.',
      default: [200, 203, 204, 300, 301, 404, 410],
      minItems: 1,
    }),
    scope: Type.Union([Type.Literal('shared'), Type.Literal('consumer')], {
      description:
        'shared: one entry for every caller; a request carrying credentials (Authorization or the API key header) is served and stored only when the response says public or s-maxage. consumer: the verified consumer id is part of the key, so consumers never see each other\'s entries.',
      default: 'shared',
    }),
    ignoreClientDirectives: Type.Boolean({
      description: 'Ignore the client\'s Cache-Control no-cache / no-store and Pragma: no-cache, so clients cannot force upstream traffic.',
      default: false,
    }),
    revalidationTtl: Type.Integer({
      description:
        'Seconds a response carrying a validator (ETag or Last-Modified) is kept past its freshness, even one that is stale on arrival or marked no-cache / must-revalidate. A request finding it stale (or sending Cache-Control: no-cache) sends the upstream a conditional request (If-None-Match with the ETag, else If-Modified-Since), unless the client sent its own validators, which then pass through unchanged; a 304 refreshes the stored headers and freshness and the client gets the stored response (X-Cache: REVALIDATED), a 200 replaces the entry. 0: only responses fresh on arrival are stored, and stale ones are fetched whole.',
      default: 300,
      minimum: 0,
      maximum: MAX_TTL_S,
    }),
    staleWhileRevalidate: Type.Integer({
      description:
        'Seconds past freshness during which a request finding the entry stale is answered from it at once (X-Cache: STALE) while one background request per key refreshes it from the upstream (conditional when the entry has a validator), like nginx proxy_cache_background_update. A response\'s own stale-while-revalidate directive (RFC 5861) replaces it, capped by it. Never for must-revalidate, proxy-revalidate, s-maxage or no-cache responses.',
      default: 0,
      minimum: 0,
      maximum: MAX_TTL_S,
    }),
    staleIfError: Type.Integer({
      description:
        'Seconds past freshness during which a stale entry answers when the upstream fails (connection error, timeout, 5xx). A response\'s own stale-if-error directive (RFC 5861) replaces it, capped by it. Never for must-revalidate, proxy-revalidate, s-maxage or no-cache responses.',
      default: 0,
      minimum: 0,
      maximum: MAX_TTL_S,
    }),
    targetedFields: Type.Array(Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description: 'A response header field name.', expected: 'a header field name such as CDN-Cache-Control' }), {
      description:
        'Targeted cache-control fields (RFC 9213) in order of precedence: the first one the response carries that parses as a Structured Fields Dictionary is read instead of Cache-Control for this cache (an invalid one is ignored). Put a field of your own first (such as Gateway-Cache-Control) to steer the gateway alone. The fields reach the client unchanged (a CDN in front may read CDN-Cache-Control too); a header rule that removes one hides it from the cache as well.',
      default: ['CDN-Cache-Control'],
    }),
    countHits: Type.Boolean({
      description:
        'A hit consumes rate-limit tokens like any request (the lookup then rides in the same store call as the rate limit: one round trip; on Redis Cluster, two calls sent at once). false: hits are free, at the cost of a second store call on a miss (cache lookup first, then the rate limit).',
      default: true,
    }),
  },
  { additionalProperties: false, description: 'Response cache of this route (GET and HEAD), in the gateway store.' },
);

export type RouteCacheConfig = Static<typeof RouteCacheSchema>;
