import type { UpstreamConfig } from '../config/schema';
import type { RequestContext } from '../context';
import { hash32 } from '../hash';
import type { Ticket } from './target-state';
import type { Target } from './upstreams';

/** Who asks for a target: the admission ticket, and the request that hash keys come from. */
export interface PickRequest extends Ticket {
  readonly ctx: RequestContext;
}

/**
 * How an upstream picks a target, chosen once at start-up from its config. `all` is panic mode:
 * every target is a candidate whatever its breaker and health say.
 */
export interface Balancer {
  pick(now: number, avoid: Target | null, req: PickRequest, all: boolean): Target | null;
  /** The targets changed (DNS discovery): per-target bookkeeping starts over. Never on the hot path. */
  reset(targets: readonly Target[]): void;
}

/**
 * Admits `t`; in panic mode a target that would not admit the request gets it anyway, as no probe,
 * unless an operator took it out by hand (admin API): that holds even in panic.
 */
function take(t: Target, now: number, req: PickRequest, all: boolean): boolean {
  if (t.state.admit(now, req)) return true;
  req.probe = false;
  return all && t.state.manual === null;
}

/** The weight of `t` now: during slow start a share growing linearly from a tenth to the full weight. */
function weightAt(t: Target, now: number, slowStartMs: number): number {
  if (slowStartMs === 0) return t.weight;
  const ramp = (now - t.state.routableSince) / slowStartMs;
  return ramp >= 1 ? t.weight : t.weight * Math.max(0.1, ramp);
}

/** The weight the balancer of an upstream configured as `cfg` gives `t` now (the hash ring keeps full weights). */
export function effectiveWeight(cfg: UpstreamConfig, t: Target, now: number): number {
  return cfg.balance === 'hash' ? t.weight : weightAt(t, now, cfg.slowStartMs);
}

/**
 * Plain round-robin over targets of equal weight without slow start: a cursor and nothing else,
 * so the common case costs what it always did.
 */
export class RoundRobin implements Balancer {
  private targets: readonly Target[];
  private cursor = 0;

  constructor(targets: readonly Target[]) {
    this.targets = targets;
  }

  reset(targets: readonly Target[]): void {
    this.targets = targets;
    this.cursor = 0;
  }

  pick(now: number, avoid: Target | null, req: PickRequest, all: boolean): Target | null {
    const targets = this.targets;
    const n = targets.length;
    for (let i = 0; i < n; i++) {
      const t = targets[this.cursor];
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1;
      if (t === avoid) continue;
      if (take(t, now, req, all)) return t;
    }
    return avoid !== null && take(avoid, now, req, all) ? avoid : null;
  }
}

/**
 * nginx's smooth weighted round-robin: every pick adds each candidate's weight to its running
 * score and takes the highest, which then gives back the total. Weights 5:1:1 go a a b a c a a
 * rather than a a a a a b c. Targets that cannot take the request sit out without changing their
 * score; slow start lowers a target's weight while it ramps up.
 */
export class SmoothWeighted implements Balancer {
  private targets: readonly Target[];
  private scores: Float64Array;

  constructor(
    targets: readonly Target[],
    private readonly slowStartMs: number,
  ) {
    this.targets = targets;
    this.scores = new Float64Array(targets.length);
  }

  reset(targets: readonly Target[]): void {
    this.targets = targets;
    this.scores = new Float64Array(targets.length);
  }

  pick(now: number, avoid: Target | null, req: PickRequest, all: boolean): Target | null {
    let t = this.choose(now, avoid, all);
    if (t === null && avoid !== null && (all || avoid.state.usable(now))) t = avoid;
    return t !== null && take(t, now, req, all) ? t : null;
  }

  private choose(now: number, avoid: Target | null, all: boolean): Target | null {
    const { targets, scores } = this;
    let best = -1;
    let total = 0;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (t === avoid || !(all || t.state.usable(now))) continue;
      const w = weightAt(t, now, this.slowStartMs);
      scores[i] += w;
      total += w;
      if (best < 0 || scores[i] > scores[best]) best = i;
    }
    if (best < 0) return null;
    scores[best] -= total;
    return targets[best];
  }
}

/**
 * Least request by the power of two choices: two targets drawn at random, the one with fewer
 * requests in flight per unit of weight wins. Nearly as good as scanning for the least loaded, at
 * constant cost, and without every gateway replica herding onto the same idle target.
 */
export class LeastRequest implements Balancer {
  private targets: readonly Target[];

  constructor(
    targets: readonly Target[],
    private readonly slowStartMs: number,
  ) {
    this.targets = targets;
  }

  reset(targets: readonly Target[]): void {
    this.targets = targets;
  }

  pick(now: number, avoid: Target | null, req: PickRequest, all: boolean): Target | null {
    const targets = this.targets;
    const n = targets.length;
    if (n === 0) return null;
    const i = (Math.random() * n) | 0;
    let j = (Math.random() * (n - 1)) | 0;
    if (j >= i) j++;
    const a = this.candidate(targets[i], now, avoid, all);
    const b = n > 1 ? this.candidate(targets[j], now, avoid, all) : null;
    let t = a !== null && b !== null ? (this.load(b, now) < this.load(a, now) ? b : a) : (a ?? b);
    // Both draws were out of the rotation: the least loaded of the rest.
    if (t === null) {
      let best = Number.POSITIVE_INFINITY;
      for (const c of targets) {
        if (this.candidate(c, now, avoid, all) === null) continue;
        const l = this.load(c, now);
        if (l < best) {
          best = l;
          t = c;
        }
      }
    }
    if (t === null && avoid !== null && (all || avoid.state.usable(now))) t = avoid;
    return t !== null && take(t, now, req, all) ? t : null;
  }

  private candidate(t: Target, now: number, avoid: Target | null, all: boolean): Target | null {
    return t !== avoid && (all || t.state.usable(now)) ? t : null;
  }

  private load(t: Target, now: number): number {
    return (t.state.inFlight + 1) / weightAt(t, now, this.slowStartMs);
  }
}

/** Points on the ring per target of average weight: enough for an even spread (about ±10 % at 160). */
const VIRTUAL_NODES = 160;

/**
 * A consistent-hash ring: each member owns points in proportion to its weight, and a key belongs to
 * the first point at or after its hash. A member's points depend on its name only, so adding or
 * removing one member of n moves about 1/n of the keys, all of them to or from that member.
 */
export class HashRing {
  /** Sorted point hashes, and the member index owning each. */
  readonly points: Uint32Array;
  readonly owners: Uint32Array;

  constructor(members: readonly { name: string; weight: number }[]) {
    const mean = members.reduce((s, m) => s + m.weight, 0) / Math.max(1, members.length);
    const all: [number, number][] = [];
    members.forEach((m, idx) => {
      const count = Math.max(1, Math.round((VIRTUAL_NODES * m.weight) / mean));
      for (let v = 0; v < count; v++) all.push([hash32(`${m.name}#${v}`), idx]);
    });
    all.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    this.points = Uint32Array.from(all, (p) => p[0]);
    this.owners = Uint32Array.from(all, (p) => p[1]);
  }

  /** Index of the first point at or after `h`, wrapping around (the ring must not be empty). */
  find(h: number): number {
    const points = this.points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }

  /** The member a key belongs to. */
  owner(key: string): number {
    return this.owners[this.find(hash32(key))];
  }
}

/** Reads the hash key of a request; undefined when the request has none. */
export type KeyReader = (ctx: RequestContext) => string | undefined;

/** The value of cookie `name` in a Cookie header, without splitting the header. */
export function cookieValue(header: string, name: string): string | undefined {
  let at = 0;
  while (at < header.length) {
    while (header.charCodeAt(at) === 32) at++;
    const end = header.indexOf(';', at);
    const stop = end === -1 ? header.length : end;
    if (header.startsWith(name, at) && header.charCodeAt(at + name.length) === 61 /* = */) return header.slice(at + name.length + 1, stop);
    at = stop + 1;
  }
  return undefined;
}

export function keyReader(key: string): KeyReader {
  if (key === 'ip') return (ctx) => ctx.clientIp || undefined;
  if (key === 'consumer') return (ctx) => ctx.identity?.consumerId;
  if (key === 'path') return (ctx) => ctx.path;
  if (key.startsWith('header:')) {
    const name = key.slice(7).toLowerCase();
    return (ctx) => {
      const v = ctx.req.headers[name];
      return typeof v === 'string' ? v : v?.[0];
    };
  }
  const name = key.slice(7);
  return (ctx) => {
    const cookie = ctx.req.headers.cookie;
    return cookie === undefined ? undefined : cookieValue(cookie, name);
  };
}

/**
 * Consistent hashing with bounded loads (Mirrokni et al., as in HAProxy's hash-balance-factor):
 * the request goes to the owner of its key's point unless that target is out of the rotation or
 * already carries more than loadFactor times the average requests in flight; then the next point's
 * owner is asked, and so on around the ring. Requests without a key go round-robin.
 */
export class ConsistentHash implements Balancer {
  private targets: readonly Target[];
  private ring: HashRing;
  private readonly fallback: RoundRobin;

  constructor(
    targets: readonly Target[],
    private readonly read: KeyReader,
    private readonly loadFactor: number,
  ) {
    this.targets = targets;
    this.ring = ringOf(targets);
    this.fallback = new RoundRobin(targets);
  }

  reset(targets: readonly Target[]): void {
    this.targets = targets;
    this.ring = ringOf(targets);
    this.fallback.reset(targets);
  }

  pick(now: number, avoid: Target | null, req: PickRequest, all: boolean): Target | null {
    const key = this.read(req.ctx);
    const { targets, ring } = this;
    if (key === undefined || targets.length === 0) return this.fallback.pick(now, avoid, req, all);
    const limit = this.loadFactor > 0 ? this.limit(now, all) : Number.POSITIVE_INFINITY;
    const { points, owners } = ring;
    let k = ring.find(hash32(key));
    let spare: Target | null = null;
    for (let steps = 0; steps < points.length; steps++) {
      const t = targets[owners[k]];
      if (t !== avoid && (all || t.state.usable(now))) {
        if (t.state.inFlight < limit) return take(t, now, req, all) ? t : null;
        spare ??= t;
      }
      k = k + 1 === points.length ? 0 : k + 1;
    }
    // Every candidate is over the bound: the key's own one still beats a 503.
    if (spare === null && avoid !== null && (all || avoid.state.usable(now))) spare = avoid;
    return spare !== null && take(spare, now, req, all) ? spare : null;
  }

  /** Requests in flight a target may carry before the next one on the ring is asked. */
  private limit(now: number, all: boolean): number {
    let inFlight = 0;
    let candidates = 0;
    for (const t of this.targets) {
      if (!(all || t.state.usable(now))) continue;
      inFlight += t.state.inFlight;
      candidates++;
    }
    return Math.ceil((this.loadFactor * (inFlight + 1)) / Math.max(1, candidates));
  }
}

function ringOf(targets: readonly Target[]): HashRing {
  return new HashRing(targets.map((t) => ({ name: t.url, weight: t.weight })));
}

/** The balancer an upstream's config asks for. */
export function createBalancer(cfg: UpstreamConfig, targets: readonly Target[], weighted: boolean): Balancer {
  switch (cfg.balance) {
    case 'least-request':
      return new LeastRequest(targets, cfg.slowStartMs);
    case 'hash':
      return new ConsistentHash(targets, keyReader(cfg.hash.key!), cfg.hash.loadFactor);
    default:
      return weighted || cfg.slowStartMs > 0 ? new SmoothWeighted(targets, cfg.slowStartMs) : new RoundRobin(targets);
  }
}
