import type { Step, StepResult } from '../../chain';
import type { CachePlugin } from '../cache/plugin';
import type { CacheRequest, RouteCache } from '../cache/route-cache';
import type { RequestContext } from '../../context';
import { sendProblem } from '../../errors';
import type { CounterCell, CounterFamily } from '../../observability/fast-metrics';
import type { CompiledRoute } from '../../routes';
import { MemoryStore } from '../../store/memory';
import { replicaCount } from '../../store/schema';
import { MemoryCache } from '../../store/memory-cache';
import { BUCKET_FIELDS, F_NEXT_MS, F_REMAINING, F_RESET_MS, F_RETRY_MS, type CacheFound, type GateResult, type GateStore } from '../../store/types';
import type { Plugin, PluginContext } from '../types';
import { compileLimit, defaultConsumerName, defaultName, type CompiledLimit, type KeyLayout } from './limits';
import type { LimitConfig, RouteRateLimitConfig } from './schema';

/** The limits one caller is subject to on one route, with the header text that never changes. */
interface LimitSet {
  readonly limits: readonly CompiledLimit[];
  /** RateLimit-Policy value. */
  readonly policy: string;
  /** The same limits divided among the replicas, for failMode local; null otherwise. */
  readonly local: LimitSet | null;
}

type Decision = 'allowed' | 'limited' | 'failed_open' | 'failed_closed' | 'local_allowed' | 'local_limited';

/** Where a route with failMode local decides while Redis cannot answer: this replica's share of the limits. */
interface LocalFallback {
  readonly store: MemoryStore;
  readonly replicas: number;
}

/** How long a client should wait before retrying when the store is down and the route fails closed. */
const STORE_DOWN_RETRY_AFTER_S = 1;

function limitSet(limits: CompiledLimit[], replicas = 0): LimitSet {
  const local = replicas === 0 ? null : limitSet(limits.map((l) => localShare(l, replicas)));
  return { limits, policy: limits.map((l) => l.policyItem).join(', '), local };
}

/**
 * One replica's share of a bucket: the rate divided (the interval multiplied) and the burst
 * divided, rounded down so that the replicas together never admit more than the burst.
 */
function localShare(l: CompiledLimit, replicas: number): CompiledLimit {
  const burst = Math.max(1, Math.floor(l.burst / replicas));
  const intervalUs = l.intervalUs * replicas;
  const windowS = Math.max(1, Math.ceil((burst * intervalUs) / 1e6));
  return {
    ...l,
    burst,
    intervalUs,
    argInterval: String(intervalUs),
    argBurst: String(burst),
    policyItem: `"${l.name}";q=${burst};w=${windowS}`,
  };
}

/** Names must be unique within what one response shows; later duplicates get a suffix. */
function uniqueName(wanted: string, taken: Set<string>): string {
  let name = wanted;
  for (let i = 2; taken.has(name); i++) name = `${wanted}-${i}`;
  taken.add(name);
  return name;
}

/**
 * The rate-limit step of one route: builds the bucket keys of the request, asks the store (one
 * gate call), and answers 429 itself or lets the request go on with the rate-limit headers.
 */
export class RateLimitStep implements Step {
  readonly name = 'rate-limit';
  private readonly base: LimitSet;
  /** Consumer id → route limits plus that consumer's own; null when no consumer has limits here. */
  private readonly consumers: Map<string, LimitSet> | null;
  private readonly perCaller: boolean;
  private readonly failClosed: boolean;
  private readonly headers: boolean;
  private readonly decisions: Record<Decision, CounterCell>;
  /** 429s by the scope of the bucket that refused (the one the client must wait longest for). */
  private readonly rejections: Record<CompiledLimit['scope'], CounterCell>;

  constructor(
    route: CompiledRoute,
    cfg: RouteRateLimitConfig,
    consumerLimits: ReadonlyMap<string, readonly LimitConfig[]>,
    private readonly store: GateStore,
    keyPrefix: string,
    apiKeyHeader: string,
    decisions: CounterFamily,
    rejections: CounterFamily,
    /** The route's cache when its lookup rides in this step's gate call. */
    private readonly cache: RouteCache | null = null,
    private readonly local: LocalFallback | null = null,
  ) {
    const replicas = local === null ? 0 : local.replicas;
    const applied = cfg.consumerLimits ? consumerLimits : new Map<string, readonly LimitConfig[]>();
    const bys = new Set<string>(cfg.limits.map((l) => l.by));
    let quotas = cfg.limits.some((l) => l.scope === 'consumer');
    for (const limits of applied.values()) {
      for (const l of limits) {
        bys.add(l.by);
        if (l.scope === 'consumer') quotas = true;
      }
    }
    const perCaller = bys.size === 1 && !bys.has('route');
    const layout: KeyLayout = { keyPrefix, route: route.name, apiKeyHeader, perCaller, callerTag: perCaller && quotas };
    this.perCaller = layout.perCaller;

    const routeNames = new Set<string>();
    const routeLimits = cfg.limits.map((l) => compileLimit(l, layout, uniqueName(l.name ?? defaultName(l), routeNames)));
    this.base = limitSet(routeLimits, replicas);
    if (applied.size === 0) {
      this.consumers = null;
    } else {
      this.consumers = new Map();
      for (const [id, limits] of applied) {
        const names = new Set(routeNames);
        const own = limits.map((l) => compileLimit(l, layout, uniqueName(l.name ?? defaultConsumerName(l), names), id));
        this.consumers.set(id, limitSet([...routeLimits, ...own], replicas));
      }
    }
    this.failClosed = cfg.failMode === 'closed';
    this.headers = cfg.headers;
    const results: Decision[] = ['allowed', 'limited', 'failed_open', 'failed_closed', 'local_allowed', 'local_limited'];
    this.decisions = Object.fromEntries(results.map((r) => [r, decisions.child(route.name, r)])) as Record<Decision, CounterCell>;
    this.rejections = { route: rejections.child(route.name, 'route'), consumer: rejections.child(route.name, 'consumer') };
  }

  run(ctx: RequestContext): boolean | Promise<boolean> {
    let set = this.base;
    if (this.consumers !== null && ctx.identity !== null) set = this.consumers.get(ctx.identity.consumerId) ?? this.base;
    const limits = set.limits;
    const n = limits.length;
    if (n === 0) return true;
    const keys: string[] = new Array<string>(n);
    if (this.perCaller) {
      const value = limits[0].partition(ctx);
      for (let i = 0; i < n; i++) keys[i] = limits[i].head + value + limits[i].tail;
    } else {
      for (let i = 0; i < n; i++) keys[i] = limits[i].head + limits[i].partition(ctx) + limits[i].tail;
    }
    const store = this.store;
    const cr = this.cache === null ? null : this.cache.prepare(ctx);
    const req = cr === null ? { keys, specs: limits } : { keys, specs: limits, cache: cr.lookup };
    if (store.kind === 'memory') return this.decide(ctx, set, store.gate(req), cr, keys);
    return store.gate(req).then((r) => this.decide(ctx, set, r, cr, keys));
  }

  private decide(ctx: RequestContext, set: LimitSet, r: GateResult | null, cr: CacheRequest | null, keys: string[]): StepResult {
    if (r === null && set.local !== null) return this.decideLocally(ctx, set.local, this.local!.store.gate({ keys, specs: set.local.limits }), cr);
    if (r === null) {
      if (!this.failClosed) {
        this.decisions.failed_open.inc();
        ctx.rateLimitResult = 'failed_open';
        return cr === null ? true : this.cache!.answer(ctx, cr, null, this);
      }
      this.decisions.failed_closed.inc();
      ctx.rateLimitResult = 'failed_closed';
      ctx.errorCode = 'STORE_UNAVAILABLE';
      sendProblem(ctx.res, ctx.id, 'STORE_UNAVAILABLE', {
        detail: 'The rate-limit store did not answer in time',
        headers: { 'retry-after': STORE_DOWN_RETRY_AFTER_S },
        extra: ctx.responseHeaders,
      });
      return false;
    }
    if (r.admitted) {
      this.decisions.allowed.inc();
      ctx.rateLimitResult = 'allowed';
      return this.admit(ctx, set, r, cr, r.cache ?? null);
    }
    this.decisions.limited.inc();
    ctx.rateLimitResult = 'limited';
    return this.reject(ctx, set, r);
  }

  /** Redis could not answer: this replica's share of the limits decides, and the cache is bypassed as when failing open. */
  private decideLocally(ctx: RequestContext, set: LimitSet, r: GateResult, cr: CacheRequest | null): StepResult {
    if (r.admitted) {
      this.decisions.local_allowed.inc();
      ctx.rateLimitResult = 'local_allowed';
      return this.admit(ctx, set, r, cr, null);
    }
    this.decisions.local_limited.inc();
    ctx.rateLimitResult = 'local_limited';
    return this.reject(ctx, set, r);
  }

  private admit(ctx: RequestContext, set: LimitSet, r: GateResult, cr: CacheRequest | null, found: CacheFound | null): StepResult {
    if (this.headers) {
      const b = r.buckets;
      const limits = set.limits;
      const m = mostConstrained(b, limits.length);
      const at = m * BUCKET_FIELDS;
      ctx.addResponseHeader('RateLimit-Policy', set.policy);
      ctx.addResponseHeader('RateLimit', serviceLimits(b, limits));
      ctx.addResponseHeader('X-RateLimit-Limit', String(limits[m].burst));
      ctx.addResponseHeader('X-RateLimit-Remaining', String(b[at + F_REMAINING]));
      ctx.addResponseHeader('X-RateLimit-Reset', String(Math.ceil(b[at + F_RESET_MS] / 1000)));
    }
    return cr === null ? true : this.cache!.answer(ctx, cr, found, this);
  }

  private reject(ctx: RequestContext, set: LimitSet, r: GateResult): StepResult {
    const b = r.buckets;
    const limits = set.limits;
    // The request needs a token in every bucket: it may come back when the slowest one has one.
    let m = 0;
    for (let i = 1; i < limits.length; i++) if (b[i * BUCKET_FIELDS + F_RETRY_MS] > b[m * BUCKET_FIELDS + F_RETRY_MS]) m = i;
    const at = m * BUCKET_FIELDS;
    this.rejections[limits[m].scope].inc();
    const headers: Record<string, string | number> = {
      'retry-after': Math.max(1, Math.ceil(b[at + F_RETRY_MS] / 1000)),
    };
    if (this.headers) {
      headers['RateLimit-Policy'] = set.policy;
      headers['RateLimit'] = serviceLimits(b, limits);
      headers['X-RateLimit-Limit'] = limits[m].burst;
      headers['X-RateLimit-Remaining'] = b[at + F_REMAINING];
      headers['X-RateLimit-Reset'] = Math.ceil(b[at + F_RESET_MS] / 1000);
    }
    ctx.errorCode = 'RATE_LIMITED';
    sendProblem(ctx.res, ctx.id, 'RATE_LIMITED', { detail: `Rate limit "${limits[m].name}" exceeded`, headers, extra: ctx.responseHeaders });
    return false;
  }
}

/** The bucket with the fewest tokens left; on a tie, the one whose next token is furthest away. */
function mostConstrained(b: readonly number[], n: number): number {
  let m = 0;
  for (let i = 1; i < n; i++) {
    const at = i * BUCKET_FIELDS;
    const mt = m * BUCKET_FIELDS;
    if (b[at + F_REMAINING] < b[mt + F_REMAINING] || (b[at + F_REMAINING] === b[mt + F_REMAINING] && b[at + F_NEXT_MS] > b[mt + F_NEXT_MS])) m = i;
  }
  return m;
}

/**
 * RateLimit field (draft-ietf-httpapi-ratelimit-headers): one item per policy, r = tokens left,
 * t = seconds until the next token, the time within which the client can use no more than r.
 */
function serviceLimits(b: readonly number[], limits: readonly CompiledLimit[]): string {
  let out = '';
  for (let i = 0; i < limits.length; i++) {
    const at = i * BUCKET_FIELDS;
    if (i > 0) out += ', ';
    out += `"${limits[i].name}";r=${b[at + F_REMAINING]};t=${Math.ceil(b[at + F_NEXT_MS] / 1000)}`;
  }
  return out;
}

/** A route with auth and no `rateLimit` when consumers have quotas: only those quotas, with the defaults. */
const QUOTAS_ONLY: RouteRateLimitConfig = { limits: [], consumerLimits: true, failMode: 'open', headers: true };

/** Builds a rate-limit step for every route with a `rateLimit` section (once per runtime, so per reload). */
export class RateLimitPlugin implements Plugin {
  readonly name = 'rate-limit';
  private readonly decisions: CounterFamily;
  private readonly rejections: CounterFamily;
  private readonly consumerLimits: Map<string, readonly LimitConfig[]>;
  /** The consumers' quotas across routes alone: what routes with auth but no rateLimit apply. */
  private readonly quotas: Map<string, readonly LimitConfig[]>;
  private readonly keyPrefix: string;
  private readonly apiKeyHeader: string;
  private readonly local: LocalFallback | null;

  constructor(
    ctx: PluginContext,
    private readonly store: GateStore,
    private readonly cache: CachePlugin | null = null,
  ) {
    this.decisions = ctx.shared('ratelimit.decisions', () =>
      ctx.metrics.counter(
        'gateway_ratelimit_decisions_total',
        'Rate-limit decisions by route and result: allowed, limited (429), failed_open (store down, admitted), failed_closed (store down, 503), local_allowed and local_limited (store down, decided by this replica\'s share of the limits: failMode local).',
        ['route', 'result'],
      ),
    );
    this.rejections = ctx.shared('ratelimit.rejections', () =>
      ctx.metrics.counter(
        'gateway_ratelimit_rejections_total',
        'Requests refused with 429, by route and by the scope of the limit that refused them: route (a bucket of the route) or consumer (a quota across routes).',
        ['route', 'scope'],
      ),
    );
    this.quotas = new Map();
    for (const c of ctx.config.consumers) {
      const own = c.rateLimits.filter((l) => l.scope === 'consumer');
      if (own.length > 0) this.quotas.set(c.id, own);
    }
    this.consumerLimits = new Map(ctx.config.consumers.filter((c) => c.rateLimits.length > 0).map((c) => [c.id, c.rateLimits]));
    this.keyPrefix = ctx.config.store.redis.keyPrefix;
    this.apiKeyHeader = ctx.config.auth.apiKeys.header.toLowerCase();
    const wanted = store.kind === 'redis' && ctx.config.routes.some((r) => r.rateLimit?.failMode === 'local');
    // Shared like the Redis store: a reload during an outage must not refill the local buckets.
    const memory = ctx.config.store.memory;
    this.local = wanted
      ? { store: ctx.shared('ratelimit.local', () => new MemoryStore(memory.maxKeys, undefined, new MemoryCache(1024))), replicas: replicaCount(ctx.config.store.redis.replicas) }
      : null;
  }

  stepFor(route: CompiledRoute): Step | null {
    const cfg = route.config.rateLimit;
    if (cfg === undefined) {
      // A quota covers all of a consumer's traffic: every route where a consumer can be known.
      if (this.quotas.size === 0 || route.config.auth === undefined) return null;
      return new RateLimitStep(route, QUOTAS_ONLY, this.quotas, this.store, this.keyPrefix, this.apiKeyHeader, this.decisions, this.rejections);
    }
    const cache = this.cache !== null && this.cache.joinsRateLimit(route) ? this.cache.forRoute(route) : null;
    const local = cfg.failMode === 'local' ? this.local : null;
    return new RateLimitStep(route, cfg, this.consumerLimits, this.store, this.keyPrefix, this.apiKeyHeader, this.decisions, this.rejections, cache, local);
  }
}
