import { performance } from 'node:perf_hooks';
import { MemoryCache } from './memory-cache';
import { fmix32 } from '../hash';
import { gcraDecide } from './gcra';
import { MemoryStore } from './memory';
import type { GateRequest, GateResult } from './types';

/** Slots a key may sit in, from its home slot on (within its stripe): a lookup reads all of them. */
const WINDOW = 8;
/** Stripes of the table, each with its own lock, so workers deciding for different keys rarely meet. */
const MAX_STRIPES = 64;
/** Header words: stripe count, slots per stripe. */
const HEADER = 2;
/** Spins on a held lock before yielding the core for a moment (the holder may have been descheduled). */
const SPINS = 1000;

/**
 * A microsecond clock every thread of the process reads alike: performance.now() counts from each
 * thread's own start, so the offset to the process-wide monotonic clock is taken once per thread.
 */
export function sharedClock(): () => number {
  const offset = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
  return () => Math.floor(performance.now() * 1000 + offset);
}

/**
 * The memory store's token buckets in shared memory, for the workers of one process (nginx's shared
 * zone): every worker thread maps the same SharedArrayBuffer, so a limit of 100 admits 100 whatever
 * worker serves each request, with no message per request.
 *
 * Layout: a header, one lock word per stripe, then per slot a 64-bit key hash (two 32-bit words,
 * 0/0 = never used) and the bucket's GCRA state (the time, in µs of the shared clock, at which the
 * bucket is full again). A key lives in the stripe its hash names, in one of WINDOW slots from its
 * home slot on. A bucket whose time has passed is full, the same as no bucket, so its slot is
 * reused without any deletion; when every slot of the window holds a bucket still refilling, the
 * one closest to full is dropped (it restarts full: this errs only on the side of admitting, like
 * the single-process store's LRU). Two keys with the same 64-bit hash share a bucket (a chance of
 * about one in 2^64 per pair).
 *
 * A decision locks the stripes of its keys in ascending order (no deadlock between workers), reads
 * every bucket, and takes a token from each only when all have one: the same all-or-nothing answer
 * as lua/gate.lua and MemoryStore. Locks are held for a few hundred instructions and always released
 * (try/finally), so a worker that throws never leaves a stripe locked.
 */
export class SharedBuckets {
  readonly buffer: SharedArrayBuffer;
  private readonly stripes: number;
  private readonly perStripe: number;
  private readonly locks: Int32Array;
  private readonly hashes: Uint32Array;
  private readonly tats: Float64Array;
  /** Per key of the request being decided: hash words, stripe, slot. Grown when a request has more keys. */
  private h1 = new Uint32Array(4);
  private h2 = new Uint32Array(4);
  private slots = new Int32Array(4);
  private held = new Int32Array(4);
  /** The debts of the request being decided, parallel to `slots`. */
  private readonly debts: number[] = [];

  /** The buffer for about `maxKeys` buckets (twice as many slots, so windows rarely fill). */
  static allocate(maxKeys: number): SharedArrayBuffer {
    const stripes = Math.max(1, Math.min(MAX_STRIPES, Math.floor((2 * maxKeys) / (4 * WINDOW))));
    const perStripe = Math.max(WINDOW, Math.ceil((2 * maxKeys) / stripes));
    const slots = stripes * perStripe;
    // Float64 data must start on an 8-byte boundary.
    const intWords = HEADER + stripes + 2 * slots;
    const bytes = Math.ceil((intWords * 4) / 8) * 8 + slots * 8;
    const buffer = new SharedArrayBuffer(bytes);
    const header = new Int32Array(buffer, 0, HEADER);
    header[0] = stripes;
    header[1] = perStripe;
    return buffer;
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    const header = new Int32Array(buffer, 0, HEADER);
    this.stripes = header[0];
    this.perStripe = header[1];
    const slots = this.stripes * this.perStripe;
    this.locks = new Int32Array(buffer, HEADER * 4, this.stripes);
    this.hashes = new Uint32Array(buffer, (HEADER + this.stripes) * 4, 2 * slots);
    this.tats = new Float64Array(buffer, Math.ceil(((HEADER + this.stripes + 2 * slots) * 4) / 8) * 8, slots);
  }

  /** Checks and takes a token from every bucket of the request, atomically across workers. */
  gate(keys: readonly string[], specs: GateRequest['specs'], now: number): GateResult {
    const n = keys.length;
    if (n > this.slots.length) this.grow(n);
    for (let i = 0; i < n; i++) this.hash(keys[i], i);
    const held = this.lockStripes(n);
    try {
      return this.decide(n, specs, now);
    } finally {
      for (let i = 0; i < held; i++) Atomics.store(this.locks, this.held[i], 0);
    }
  }

  private grow(n: number): void {
    this.h1 = new Uint32Array(n);
    this.h2 = new Uint32Array(n);
    this.slots = new Int32Array(n);
    this.held = new Int32Array(n);
  }

  /** Two independent 32-bit hashes of the key (FNV-1a and a multiply-xorshift, each finalised with murmur3's mix). */
  private hash(key: string, i: number): void {
    let a = 0x811c9dc5;
    let b = 0x9747b28c;
    for (let c = 0; c < key.length; c++) {
      const ch = key.charCodeAt(c);
      a = Math.imul(a ^ ch, 0x01000193);
      b = Math.imul(b ^ ch, 0x5bd1e995);
      b ^= b >>> 15;
    }
    a = fmix32(a ^ key.length);
    b = fmix32(b ^ Math.imul(key.length, 0x9e3779b1));
    // 0/0 marks a slot never used.
    if (a === 0 && b === 0) b = 1;
    this.h1[i] = a;
    this.h2[i] = b;
  }

  /** Locks the distinct stripes of the request's keys in ascending order; returns how many. */
  private lockStripes(n: number): number {
    const held = this.held;
    let count = 0;
    for (let i = 0; i < n; i++) {
      const s = this.h1[i] % this.stripes;
      let j = 0;
      while (j < count && held[j] !== s) j++;
      if (j < count) continue;
      j = count++;
      for (; j > 0 && held[j - 1] > s; j--) held[j] = held[j - 1];
      held[j] = s;
    }
    for (let i = 0; i < count; i++) this.lock(held[i]);
    return count;
  }

  private lock(stripe: number): void {
    const locks = this.locks;
    let spins = 0;
    while (Atomics.compareExchange(locks, stripe, 0, 1) !== 0) {
      if (++spins >= SPINS) {
        // The holder is likely off its core: sleep a little instead of burning ours.
        Atomics.wait(locks, stripe, 1, 0.05);
        spins = 0;
      }
    }
  }

  /** The slot of key i: its own, else a free one (never used, or full again), else the one closest to full. */
  private find(i: number, now: number): number {
    const a = this.h1[i];
    const b = this.h2[i];
    const base = (a % this.stripes) * this.perStripe;
    const home = b % this.perStripe;
    let free = -1;
    let oldest = -1;
    for (let w = 0; w < WINDOW; w++) {
      const slot = base + ((home + w) % this.perStripe);
      if (this.hashes[2 * slot] === a && this.hashes[2 * slot + 1] === b) return slot;
      if (this.claimed(slot, i)) continue;
      const tat = this.tats[slot];
      if (tat <= now) {
        if (free < 0) free = slot;
      } else if (oldest < 0 || tat < this.tats[oldest]) {
        oldest = slot;
      }
    }
    // Only when earlier keys of this request took the whole window (more keys than WINDOW on one
    // home): this key then shares its home slot's bucket.
    const slot = free >= 0 ? free : oldest >= 0 ? oldest : base + home;
    this.hashes[2 * slot] = a;
    this.hashes[2 * slot + 1] = b;
    this.tats[slot] = 0;
    return slot;
  }

  /** Whether an earlier key of this request took the slot (its state must not be reused for another key). */
  private claimed(slot: number, before: number): boolean {
    for (let j = 0; j < before; j++) if (this.slots[j] === slot) return true;
    return false;
  }

  /** MemoryStore.buckets on the shared slots: the same arithmetic (gcra.ts). */
  private decide(n: number, specs: GateRequest['specs'], now: number): GateResult {
    const debts = this.debts;
    for (let i = 0; i < n; i++) {
      const slot = this.find(i, now);
      this.slots[i] = slot;
      const tat = this.tats[slot];
      debts[i] = tat <= now ? 0 : tat - now;
    }
    const result = gcraDecide(debts, n, specs);
    if (result.admitted) for (let i = 0; i < n; i++) this.tats[this.slots[i]] = now + debts[i] + specs[i].intervalUs;
    return result;
  }
}

/**
 * The memory store of one worker among several: buckets in the process's shared table, the
 * response cache this worker's own (see README, "workers": per-worker caches measured faster than
 * a shared one, and purges reach every worker).
 */
export class SharedMemoryStore extends MemoryStore {
  private readonly table: SharedBuckets;

  constructor(buffer: SharedArrayBuffer, cache: MemoryCache, now: () => number = sharedClock()) {
    super(1, now, cache);
    this.table = new SharedBuckets(buffer);
  }

  protected override buckets(req: GateRequest): GateResult {
    return this.table.gate(req.keys, req.specs, this.now());
  }
}
