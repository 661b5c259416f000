import { createHash, hash } from 'node:crypto';
import type { RequestContext } from '../../context';
import type { BucketSpec } from '../../store/types';
import type { LimitConfig } from './schema';

/** A month is 30 days: GCRA buckets refill continuously, so a calendar month has no meaning to them. */
const UNIT_US: Record<string, number> = { ms: 1e3, s: 1e6, m: 60e6, h: 3600e6, d: 86400e6, w: 7 * 86400e6, mo: 30 * 86400e6 };

/** 500ms, 1s, 1m, 1h, 1d, 1w, 1mo → microseconds. */
export function durationUs(d: string): number {
  const m = /^([1-9][0-9]*)(ms|s|m|h|d|w|mo)$/.exec(d);
  if (!m) throw new Error(`not a duration: ${d}`);
  return Number(m[1]) * UNIT_US[m[2]];
}

/** Longest time a bucket may take to refill from empty: keeps GCRA times well inside exact doubles. */
export const MAX_FILL_US = 366 * 86400e6;

/** Microseconds per token: GCRA arithmetic stays in whole microseconds, exact in Lua and JS alike. */
export function intervalUs(limit: Pick<LimitConfig, 'rate' | 'per'>): number {
  return Math.round(durationUs(limit.per) / limit.rate);
}

export function burstOf(limit: Pick<LimitConfig, 'rate' | 'burst'>): number {
  return limit.burst ?? limit.rate;
}

/** Identity of a limit's definition: a changed limit gets fresh buckets instead of stale counters. */
export function limitSignature(limit: LimitConfig): string {
  return `${limit.rate}/${limit.per}/${burstOf(limit)}/${limit.by}${limit.scope === 'consumer' ? '/consumer-scope' : ''}`;
}

/** Whether any consumer's own limits hold a quota across routes (scope consumer). */
export function hasConsumerQuotas(consumers: readonly { rateLimits: readonly LimitConfig[] }[]): boolean {
  return consumers.some((c) => c.rateLimits.some((l) => l.scope === 'consumer'));
}

/** What a bucket is keyed by, computed per request. Values carry a kind prefix so an IP never equals a consumer id. */
export type Partition = (ctx: RequestContext) => string;

const digest = (s: string): string => hash('sha256', s, 'base64url').slice(0, 22);

/** Header values longer than this are hashed so that keys stay small. */
const MAX_RAW_VALUE = 128;

/** `apiKeyHeader` is the lower-case name of the API key header (auth.apiKeys.header). */
export function partitionFor(by: string, apiKeyHeader: string): Partition {
  switch (by) {
    case 'ip':
      return (ctx) => 'i:' + ctx.clientIp;
    case 'consumer':
      return (ctx) => (ctx.identity !== null ? 'c:' + ctx.identity.consumerId : 'i:' + ctx.clientIp);
    case 'apiKey':
      // Keyed by a digest: API keys are secrets and must not appear in Redis key names.
      return (ctx) => {
        const key = ctx.req.headers[apiKeyHeader];
        return typeof key === 'string' && key !== '' ? 'k:' + digest(key) : 'i:' + ctx.clientIp;
      };
    case 'route':
      return () => 'r';
    default: {
      const name = by.slice('header:'.length).toLowerCase();
      return (ctx) => {
        const raw = ctx.req.headers[name];
        const v = Array.isArray(raw) ? raw.join(',') : raw;
        if (v === undefined || v === '') return 'i:' + ctx.clientIp;
        return v.length > MAX_RAW_VALUE ? 'H:' + digest(v) : 'h:' + v;
      };
    }
  }
}

/** A limit ready for the hot path: bucket parameters, key parts, and its header fragments. */
export interface CompiledLimit extends BucketSpec {
  readonly name: string;
  readonly by: string;
  /** route: a bucket of this route; consumer: one bucket across routes (a quota). */
  readonly scope: 'route' | 'consumer';
  readonly partition: Partition;
  /** The store key is head + partition value + tail (see RateLimiter for the two layouts). */
  readonly head: string;
  readonly tail: string;
  /** This limit's item of RateLimit-Policy, such as "ip-100per1m";q=100;w=60. */
  readonly policyItem: string;
}

export interface KeyLayout {
  keyPrefix: string;
  route: string;
  /** Lower-case name of the header `by: apiKey` reads. */
  apiKeyHeader: string;
  /**
   * Every limit that can apply on the route is keyed the same way, so the hash tag can include
   * the caller: buckets spread over Cluster shards instead of one shard per route.
   */
  perCaller: boolean;
  /**
   * The route also applies limits of scope consumer, whose keys cannot name the route: the hash
   * tag is then the caller alone, for the route's buckets too, so that one request's keys still
   * share a Cluster slot (only possible with perCaller; the configuration check enforces it on Cluster).
   */
  callerTag: boolean;
}

export function defaultName(limit: LimitConfig): string {
  return `${limit.by}-${limit.rate}per${limit.per}`;
}

/**
 * The default name of a consumer's own limit: marked as the consumer's, without saying so twice
 * when the limit is keyed by the consumer anyway (consumer-3per1m, consumer-ip-3per1m).
 */
export function defaultConsumerName(limit: LimitConfig): string {
  const name = defaultName(limit);
  return limit.by === 'consumer' ? name : `consumer-${name}`;
}

/**
 * Compiles one limit. `owner` is set for a consumer's own limits, so that two consumers with the
 * same definition never share a bucket.
 */
export function compileLimit(limit: LimitConfig, layout: KeyLayout, name: string, owner?: string): CompiledLimit {
  const interval = intervalUs(limit);
  const burst = burstOf(limit);
  const scope = limit.scope;
  // A quota across routes is one bucket wherever it is applied: its configured name is part of what
  // it is (not the shown one, which may get a suffix on a route where the name is taken).
  const identity = limitSignature(limit) + (owner === undefined ? '' : `/consumer=${owner}`) + (scope === 'consumer' ? `/name=${limit.name ?? ''}` : '');
  const version = createHash('sha1').update(identity).digest('hex').slice(0, 10);
  const { keyPrefix, route } = layout;
  // Hash tags: every key of one request shares the text between the braces, hence one slot.
  let head: string;
  let tail: string;
  if (scope === 'consumer') {
    head = `${keyPrefix}{`;
    tail = `}q|${version}`;
  } else if (layout.callerTag) {
    head = `${keyPrefix}{`;
    tail = `}${route}|${version}`;
  } else if (layout.perCaller) {
    head = `${keyPrefix}{${route}|`;
    tail = `}${version}`;
  } else {
    head = `${keyPrefix}{${route}}${version}|`;
    tail = '';
  }
  const windowS = Math.max(1, Math.ceil((burst * interval) / 1e6));
  return {
    name,
    by: limit.by,
    scope,
    partition: partitionFor(limit.by, layout.apiKeyHeader),
    head,
    tail,
    burst,
    intervalUs: interval,
    argInterval: String(interval),
    argBurst: String(burst),
    policyItem: `"${name}";q=${burst};w=${windowS}`,
  };
}
