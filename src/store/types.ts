/**
 * The store answers "the gate": one call per request that checks and consumes every token bucket
 * the request is subject to, atomically. On Redis it is one EVALSHA of lua/gate.lua; in memory it
 * is a synchronous function with the same arithmetic.
 *
 * The shapes are sections so that later steps can join the same call (the response cache adds an
 * optional `cache` section to the request and the result; the Redis store packs it after the
 * buckets in the same script call, so a request still costs one round trip). On Redis Cluster the
 * buckets and the cache keys are in different slots: the store sends the two sections as two calls
 * of the same script at once (about one round trip still) and joins their answers.
 */

/**
 * A token bucket's parameters, fixed at start-up. The bucket is kept as GCRA: one number per key,
 * the time at which the bucket will be full again. `intervalUs` is the time one token takes to
 * come back, so the capacity in time is `burst * intervalUs`.
 */
export interface BucketSpec {
  readonly burst: number;
  /** Microseconds per token (per / rate, rounded to a whole microsecond, at least 1). */
  readonly intervalUs: number;
  /** The two ARGV strings of this bucket in the Lua call: interval and burst. */
  readonly argInterval: string;
  readonly argBurst: string;
}

export interface GateRequest {
  /**
   * Store keys of the buckets, parallel to `specs`. All keys of one request share one hash tag, so
   * on Redis Cluster they live in one slot and one script call serves them. The cache section's
   * keys share another (one per route; see plugins/cache/keys.ts).
   */
  readonly keys: readonly string[];
  readonly specs: readonly BucketSpec[];
  /** The response-cache section: the entry to fetch along with the decision. */
  readonly cache?: CacheLookup;
}

/**
 * A cache lookup. Invalidation is by generation: every bump takes the next value of one counter
 * (the clock) and writes it to the generation keys it invalidates (route, exact path, path
 * prefixes). An entry stored with stamp s is valid while every generation key of its request is
 * at most s, so a bump on any replica hides older entries at once, and an entry filled from a
 * response that raced a bump carries a stamp below it.
 *
 * Several variants of one URL (Vary): the primary key holds either the entry (the response does
 * not vary) or a vary marker naming the request headers it varies on, and each variant lives at
 * its own key (the primary key plus a hash of those headers' values). A caller that already knows
 * the names asks for the variant key in the same call; one that does not learns them from the
 * marker and looks again.
 */
export interface CacheLookup {
  readonly entryKey: string;
  /** The clock the route's stamps and generations come from (one per key space: see plugins/cache/keys.ts). */
  readonly clockKey: string;
  /** The key of the variant for this request's values of the Vary'd headers, when the names are known. */
  readonly variantKey: string | null;
  readonly genKeys: readonly string[];
}

export interface CacheFound {
  /** The value at the primary key: an entry or a vary marker (see plugins/cache/entry.ts), or null. */
  readonly entry: Buffer | null;
  /** The value at the variant key, or null (absent, or no variant key asked). */
  readonly variant: Buffer | null;
  /** The clock now: the stamp of an entry filled after this lookup. */
  readonly clock: number;
  /** Highest generation among the lookup's generation keys. */
  readonly maxGen: number;
}

/** Cache writes; fire and forget (a failed write only costs a later miss). */
export interface CacheWrites {
  /** Resolves once the entry is readable by lookups (or the write failed). */
  cachePut(key: string, value: Buffer, ttlMs: number): Promise<void>;
  /**
   * Bumps generation keys past every entry stored so far, with the next value of `clockKey` (the
   * clock of their key space). Resolves once applied (false: not applied).
   */
  cacheBump(clockKey: string, genKeys: readonly string[]): Promise<boolean>;
}

/** Fields per bucket in `GateResult.buckets`. */
export const BUCKET_FIELDS = 4;
/** Tokens left after this request (floored). */
export const F_REMAINING = 0;
/** Milliseconds until the bucket has a token again; 0 when it had one. */
export const F_RETRY_MS = 1;
/** Milliseconds until the next token arrives; 0 when the bucket is full. */
export const F_NEXT_MS = 2;
/** Milliseconds until the bucket is full again. */
export const F_RESET_MS = 3;

export interface GateResult {
  /** Every bucket had a token and one was taken from each; false means nothing was taken. */
  readonly admitted: boolean;
  /** BUCKET_FIELDS numbers per bucket, in request order (see the F_ constants). */
  readonly buckets: readonly number[];
  /** Present when the request had a cache section. */
  readonly cache?: CacheFound;
}

/** The in-process store: answers synchronously so a chain with only memory limits stays sync. */
export interface SyncGateStore extends CacheWrites {
  readonly kind: 'memory';
  gate(req: GateRequest): GateResult;
}

/**
 * The shared store: resolves within its budget, with null when it could not answer (down, slow,
 * overloaded). It never rejects; the failure is already counted and logged.
 */
export interface AsyncGateStore extends CacheWrites {
  readonly kind: 'redis';
  gate(req: GateRequest): Promise<GateResult | null>;
}

export type GateStore = SyncGateStore | AsyncGateStore;
