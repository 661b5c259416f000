import { performance } from 'node:perf_hooks';
import { MemoryCache } from './memory-cache';
import { gcraDecide } from './gcra';
import type { GateRequest, GateResult, SyncGateStore } from './types';

const RESOLVED: Promise<void> = Promise.resolve();

/** Monotonic microseconds: one process needs no shared clock, and must not jump with NTP. */
const monotonicUs = (): number => Math.floor(performance.now() * 1000);

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
  /** The debts of the request being decided (reused: a request names a few buckets). */
  private readonly debts: number[] = [];

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
    const debts = this.debts;
    for (let i = 0; i < n; i++) {
      const tat = this.young.get(keys[i]) ?? this.old.get(keys[i]);
      debts[i] = tat === undefined || tat <= now ? 0 : tat - now;
    }
    const result = gcraDecide(debts, n, specs);
    for (let i = 0; i < n; i++) {
      if (result.admitted) this.touch(keys[i], now + debts[i] + specs[i].intervalUs);
      // A bucket hammered while empty is in use: keep it young, or evicting it would refill it.
      else if (debts[i] > 0) this.touch(keys[i], now + debts[i]);
    }
    return result;
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
