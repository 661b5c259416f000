import { performance } from 'node:perf_hooks';
import { MemoryCache } from './memory-cache';
import { BUCKET_FIELDS, F_NEXT_MS, F_REMAINING, F_RESET_MS, F_RETRY_MS, type GateRequest, type GateResult, type SyncGateStore } from './types';

const RESOLVED: Promise<void> = Promise.resolve();

/** Monotonic microseconds: one process needs no shared clock, and must not jump with NTP. */
const monotonicUs = (): number => Math.floor(performance.now() * 1000);

/**
 * Fills the result fields of one bucket from its debt `d` (microseconds until the bucket is full).
 * lua/gate.lua does the same arithmetic; keep the two in step.
 */
export function bucketFields(out: number[], at: number, d: number, intervalUs: number, capUs: number, retryUs: number): void {
  out[at + F_REMAINING] = Math.floor((capUs - d) / intervalUs);
  out[at + F_RETRY_MS] = Math.ceil(retryUs / 1000);
  const part = d % intervalUs;
  out[at + F_NEXT_MS] = d === 0 ? 0 : Math.ceil((part === 0 ? intervalUs : part) / 1000);
  out[at + F_RESET_MS] = Math.ceil(d / 1000);
}

/**
 * The in-process twin of lua/gate.lua: the same GCRA buckets, bounded by maxKeys. Recency is kept
 * in two generations of maxKeys/2 (a bucket used in the young one survives, the old one is dropped
 * whole when the young one fills): O(1) per access, where evicting from one big Map one key at a
 * time degrades under churn. A dropped bucket restarts full, which only ever errs on the side of
 * admitting; a flood of distinct keys cannot grow memory past the bound.
 */
export class MemoryStore implements SyncGateStore {
  readonly kind = 'memory';
  /** Key → time (µs, monotonic) at which the bucket is full again, young and old generation. */
  private young = new Map<string, number>();
  private old = new Map<string, number>();
  private readonly generation: number;

  constructor(
    maxKeys: number,
    protected readonly now: () => number = monotonicUs,
    readonly cache: MemoryCache = new MemoryCache(64 * 1024 * 1024),
  ) {
    this.generation = Math.max(1, Math.floor(maxKeys / 2));
  }

  /** Entries held (a bucket may be counted in both generations): never more than maxKeys. */
  get size(): number {
    return this.young.size + this.old.size;
  }

  gate(req: GateRequest): GateResult {
    const r = this.buckets(req);
    return req.cache === undefined ? r : { admitted: r.admitted, buckets: r.buckets, cache: this.cache.lookup(req.cache) };
  }

  cachePut(key: string, value: Buffer, ttlMs: number): Promise<void> {
    this.cache.put(key, value, ttlMs);
    return RESOLVED;
  }

  /** One process, one clock: the key space's clock matters only to Redis Cluster. */
  cacheBump(_clockKey: string, genKeys: readonly string[]): Promise<boolean> {
    this.cache.bump(genKeys);
    return Promise.resolve(true);
  }

  protected buckets(req: GateRequest): GateResult {
    const { keys, specs } = req;
    const now = this.now();
    const n = keys.length;
    const out: number[] = new Array<number>(n * BUCKET_FIELDS);
    let admitted = true;
    // First pass: every bucket's debt, kept in the reset slot until the verdict is known.
    for (let i = 0; i < n; i++) {
      const tat = this.young.get(keys[i]) ?? this.old.get(keys[i]);
      const d = tat === undefined || tat <= now ? 0 : tat - now;
      out[i * BUCKET_FIELDS + F_RESET_MS] = d;
      if (d + specs[i].intervalUs > specs[i].burst * specs[i].intervalUs) admitted = false;
    }
    for (let i = 0; i < n; i++) {
      const { intervalUs, burst } = specs[i];
      const capUs = burst * intervalUs;
      const at = i * BUCKET_FIELDS;
      let d = out[at + F_RESET_MS];
      let retry = 0;
      if (admitted) {
        d += intervalUs;
        this.touch(keys[i], now + d);
      } else {
        // A bucket hammered while empty is in use: keep it young, or evicting it would refill it.
        if (d > 0) this.touch(keys[i], now + d);
        if (d + intervalUs > capUs) retry = d + intervalUs - capUs;
      }
      bucketFields(out, at, d, intervalUs, capUs, retry);
    }
    return { admitted, buckets: out };
  }

  private touch(key: string, tat: number): void {
    const young = this.young;
    young.set(key, tat);
    if (young.size >= this.generation) {
      this.old = young;
      this.young = new Map();
    }
  }
}
