import type { CacheFound, CacheLookup } from './types';

/** Generation keys kept before the table is reset (see `floor`). */
const MAX_GENERATIONS = 100000;

export interface MemoryCacheEvents {
  evicted(count: number): void;
  bytes(total: number): void;
}

interface Slot {
  value: Buffer;
  expiresAt: number;
  /** Read since it last reached the old end of the map (second-chance LRU, see put). */
  used: boolean;
}

/**
 * The response cache of the memory store: bounded by bytes, with expiry, and the generation table
 * of lua/gate.lua kept in process. Eviction is second-chance LRU: a hit only sets a flag, and the
 * eviction pass moves flagged entries to the recent end instead of dropping them. (Moving the entry
 * on every hit, the textbook LRU on Map order, made the Map shrink and rehash on the hot path.) The generation table is
 * bounded too: when it fills it is cleared and `floor` takes the clock, so a forgotten generation
 * reads as "bumped now", which only ever hides entries, never revives one.
 */
export class MemoryCache {
  private readonly entries = new Map<string, Slot>();
  private readonly gens = new Map<string, number>();
  private bytes = 0;
  private clock = 0;
  private floor = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly events: MemoryCacheEvents | null = null,
    private readonly now: () => number = Date.now,
  ) {}

  lookup(req: CacheLookup): CacheFound {
    let maxGen = this.floor;
    for (const k of req.genKeys) {
      const g = this.gens.get(k);
      if (g !== undefined && g > maxGen) maxGen = g;
    }
    return { entry: this.get(req.entryKey), variant: req.variantKey === null ? null : this.get(req.variantKey), clock: this.clock, maxGen };
  }

  /** The live value at `key`, marked as used; an expired one is dropped. */
  private get(key: string): Buffer | null {
    const e = this.entries.get(key);
    if (e === undefined) return null;
    if (e.expiresAt > this.now()) {
      e.used = true;
      return e.value;
    }
    this.entries.delete(key);
    this.bytes -= e.value.length;
    this.events?.bytes(this.bytes);
    return null;
  }

  put(key: string, value: Buffer, ttlMs: number): void {
    const old = this.entries.get(key);
    if (old !== undefined) {
      this.bytes -= old.value.length;
      this.entries.delete(key);
    }
    if (value.length > this.maxBytes) return;
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs, used: false });
    this.bytes += value.length;
    let evicted = 0;
    let spared = false;
    // Oldest first; an entry read since it was last passed over (and, once, the one just stored)
    // goes back to the recent end. Each entry moves at most once, so the pass ends.
    for (const [k, e] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      if (e.used || (k === key && !spared)) {
        if (k === key) spared = true;
        e.used = false;
        this.entries.delete(k);
        this.entries.set(k, e);
        continue;
      }
      this.entries.delete(k);
      this.bytes -= e.value.length;
      evicted++;
    }
    if (evicted > 0) this.events?.evicted(evicted);
    this.events?.bytes(this.bytes);
  }

  bump(genKeys: readonly string[]): void {
    const g = ++this.clock;
    if (this.gens.size + genKeys.length > MAX_GENERATIONS) {
      this.gens.clear();
      this.floor = g;
    }
    for (const k of genKeys) this.gens.set(k, g);
  }

  get size(): number {
    return this.entries.size;
  }
}
