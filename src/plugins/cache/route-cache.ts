import type { StepResult } from '../../chain';
import type { RequestContext } from '../../context';
import type { CounterCell } from '../../observability/fast-metrics';
import type { ResponseObserver } from '../../proxy/relay';
import type { CacheFound, CacheLookup, GateStore } from '../../store/types';
import { decodeEntry, encodeEntry, type Entry, type EntryHead } from './entry';
import { explicitLifetime, headerOf, parseCacheControl } from './http';
import { exactGen, type CacheKeys } from './keys';
import type { RouteCacheConfig } from './schema';

export type CacheResult = 'hit' | 'miss' | 'bypass' | 'stale';

/** What the cache knows about one GET/HEAD request between its lookup and its answer. */
export interface CacheRequest {
  readonly key: string;
  readonly lookup: CacheLookup;
  /** Carries credentials that the key does not partition by (shared scope). */
  readonly credential: boolean;
  /** The client allows an answer from the cache (no `no-cache`). */
  readonly serve: boolean;
  readonly head: boolean;
}

/** Headers never stored: hop-by-hop, recomputed (length, age), or the cache's own. */
const NOT_STORED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'age', 'x-cache']);

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface CacheCells {
  readonly results: Record<CacheResult, CounterCell>;
  readonly stores: CounterCell;
}

/** One request filling an entry; others for the same key wait on it (single-flight). */
class Flight {
  readonly promise: Promise<Entry | null>;
  private resolveFn!: (e: Entry | null) => void;
  constructor() {
    this.promise = new Promise((r) => (this.resolveFn = r));
  }
  resolve(e: Entry | null): void {
    this.resolveFn(e);
  }
}

function headerValue(ctx: RequestContext, name: string): string {
  const v = ctx.req.headers[name];
  return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v;
}

/**
 * The response cache of one route: builds the lookup of a request (which rides in the gate call),
 * answers hits, and fills entries by observing the relayed response.
 */
export class RouteCache {
  private readonly statuses: ReadonlySet<number>;
  private readonly flights = new Map<string, Flight>();
  private readonly consumerScope: boolean;

  constructor(
    private readonly cfg: RouteCacheConfig,
    private readonly keys: CacheKeys,
    private readonly keyPrefix: string,
    readonly store: GateStore,
    private readonly apiKeyHeader: string,
    private readonly cells: CacheCells,
  ) {
    this.statuses = new Set(cfg.statuses);
    this.consumerScope = cfg.scope === 'consumer';
  }

  /**
   * The lookup of a GET or HEAD, or null when the request does not use the cache (it then goes
   * upstream untouched; an unsafe method gets an observer that invalidates its path on success).
   */
  prepare(ctx: RequestContext): CacheRequest | null {
    const method = ctx.req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      if (method !== undefined && UNSAFE.has(method)) ctx.observer = new Invalidator(this.store, exactGen(this.keyPrefix, ctx.path));
      return null;
    }
    let serve = true;
    if (!this.cfg.ignoreClientDirectives) {
      const cc = ctx.req.headers['cache-control'];
      const d = parseCacheControl(cc);
      if (d.noStore) {
        this.count(ctx, 'bypass');
        return null;
      }
      serve = !d.noCache && !(cc === undefined && ctx.req.headers.pragma?.toLowerCase().includes('no-cache'));
    }
    const scoped = this.consumerScope && ctx.identity !== null;
    const credential = !scoped && (ctx.req.headers.authorization !== undefined || ctx.req.headers[this.apiKeyHeader] !== undefined);
    const key = this.keys.entry((ctx.req.headers.host ?? '').toLowerCase(), ctx.path, ctx.query, scoped ? 'c' + ctx.identity!.consumerId : 's');
    return { key, lookup: { entryKey: key, genKeys: this.keys.gens(ctx.path) }, credential, serve, head: method === 'HEAD' };
  }

  /** Answers from the lookup's result: false when the cache answered, true to go upstream. */
  answer(ctx: RequestContext, cr: CacheRequest, found: CacheFound | undefined | null): StepResult {
    if (found === undefined || found === null) {
      // The store did not answer: pass through, and store nothing (the generation is unknown).
      this.count(ctx, 'bypass');
      return true;
    }
    const entry = found.entry === null ? null : decodeEntry(found.entry);
    const usable = entry !== null && entry.head.k >= found.maxGen && this.matches(ctx, cr, entry.head);
    const now = Date.now();
    let staleMs = Infinity;
    if (usable) {
      const ageMs = now - entry.head.t + entry.head.a * 1000;
      if (cr.serve && ageMs < entry.head.l) return this.serve(ctx, entry, 'hit', ageMs);
      staleMs = entry.head.r ? Infinity : ageMs - entry.head.l;
    }
    const flight = this.flights.get(cr.key);
    if (flight !== undefined && cr.serve) {
      if (usable && staleMs <= this.cfg.staleWhileRevalidate * 1000) return this.serve(ctx, entry, 'stale', staleMs + entry.head.l);
      return flight.promise.then((e) => {
        if (e !== null && !ctx.res.destroyed && this.matches(ctx, cr, e.head)) return this.serve(ctx, e, 'hit', e.head.a * 1000);
        this.count(ctx, 'miss');
        return true;
      });
    }
    this.count(ctx, 'miss');
    if (flight !== undefined || cr.head) return true;
    const f = new Flight();
    this.flights.set(cr.key, f);
    const stale = usable && staleMs <= this.cfg.staleIfError * 1000 ? entry : null;
    const filler = new Filler(this, ctx, cr, found.clock, stale, f);
    ctx.observer = filler;
    // The relay may answer without calling the observer (no target takes traffic): the flight ends with the response anyway.
    ctx.res.once('close', filler.onError);
    return true;
  }

  /** Vary'd values and credentials allow this entry for this request. */
  private matches(ctx: RequestContext, cr: CacheRequest, head: EntryHead): boolean {
    if (cr.credential && !head.p) return false;
    for (const [name, value] of head.v) if (headerValue(ctx, name) !== value) return false;
    return true;
  }

  /** @internal Writes a cached response to the client. */
  serve(ctx: RequestContext, entry: Entry, result: CacheResult, ageMs: number): false {
    const { head, body } = entry;
    const h = head.h.slice();
    h.push('age', String(Math.max(0, Math.floor(ageMs / 1000))), 'x-cache', result === 'stale' ? 'STALE' : 'HIT', 'x-request-id', ctx.id);
    if (head.s !== 204 && head.s !== 304) h.push('content-length', String(body.length));
    const extra = ctx.responseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i += 2) if (extra[i] !== 'X-Cache') h.push(extra[i], extra[i + 1]);
    this.cells.results[result].inc();
    ctx.res.writeHead(head.s, h);
    ctx.res.end(ctx.req.method === 'HEAD' || head.s === 204 ? undefined : body);
    return false;
  }

  private count(ctx: RequestContext, result: CacheResult): void {
    this.cells.results[result].inc();
    ctx.addResponseHeader('X-Cache', result === 'miss' ? 'MISS' : 'BYPASS');
  }

  /** @internal The head of an entry for this response, or null when it must not be stored. */
  storable(cr: CacheRequest, status: number, h: readonly string[], stamp: number): EntryHead | null {
    if (!this.statuses.has(status)) return null;
    const cc = parseCacheControl(headerOf(h, 'cache-control'));
    if (cc.noStore || cc.private || headerOf(h, 'set-cookie') !== undefined) return null;
    const authOk = cc.public || cc.sMaxAge >= 0;
    if (cr.credential && !authOk) return null;
    const varyHeader = headerOf(h, 'vary');
    const vary: [string, string][] = [];
    if (varyHeader !== undefined) {
      for (const raw of varyHeader.split(',')) {
        const name = raw.trim().toLowerCase();
        if (name === '*') return null;
        if (name !== '') vary.push([name, '']);
      }
    }
    const now = Date.now();
    let life = cc.noCache ? 0 : explicitLifetime(cc, headerOf(h, 'expires'), headerOf(h, 'date'), now);
    if (life < 0) life = this.cfg.defaultTtl;
    life = Math.min(life, this.cfg.maxTtl);
    const age = Number(headerOf(h, 'age') ?? '0');
    const initialAge = Number.isFinite(age) && age > 0 ? Math.floor(age) : 0;
    // Revalidation is not implemented: a response that is not fresh now is of no use later.
    if (life - initialAge <= 0) return null;
    const kept: string[] = [];
    for (let i = 0; i < h.length; i += 2) if (!NOT_STORED.has(h[i].toLowerCase())) kept.push(h[i], h[i + 1]);
    return { s: status, h: kept, t: now, l: life * 1000, a: initialAge, k: stamp, v: vary, p: authOk, r: cc.mustRevalidate || cc.noCache };
  }

  /** @internal */
  stored(cr: CacheRequest, head: EntryHead, body: Buffer, f: Flight, ctx: RequestContext): void {
    for (const pair of head.v) pair[1] = headerValue(ctx, pair[0]);
    const staleS = head.r ? 0 : Math.max(this.cfg.staleIfError, this.cfg.staleWhileRevalidate);
    this.cells.stores.inc();
    f.resolve({ head, body });
    // Until the store has the entry, a lookup may still miss: such requests join the finished flight.
    void this.store.cachePut(cr.key, encodeEntry(head, body), head.l - head.a * 1000 + staleS * 1000).then(() => this.forget(cr, f));
  }

  /** @internal */
  settle(cr: CacheRequest, f: Flight, e: Entry | null): void {
    this.forget(cr, f);
    f.resolve(e);
  }

  private forget(cr: CacheRequest, f: Flight): void {
    if (this.flights.get(cr.key) === f) this.flights.delete(cr.key);
  }

  get maxBodyBytes(): number {
    return this.cfg.maxBodyBytes;
  }
}

/** Observes a miss's response and stores it when it is complete and cacheable. */
class Filler implements ResponseObserver {
  private head: EntryHead | null = null;
  private chunks: Buffer[] = [];
  private bytes = 0;
  private settled = false;

  constructor(
    private readonly cache: RouteCache,
    private readonly ctx: RequestContext,
    private readonly cr: CacheRequest,
    private readonly stamp: number,
    private readonly stale: Entry | null,
    private readonly flight: Flight,
  ) {}

  onHeaders(status: number, headers: readonly string[]): void {
    // The relay appends x-request-id and the steps' headers after the upstream's own.
    const own = headers.length - 2 - (this.ctx.responseHeaders?.length ?? 0);
    this.head = this.settled ? null : this.cache.storable(this.cr, status, headers.slice(0, own), this.stamp);
    if (this.head === null) this.settle(null);
  }

  onData(chunk: Buffer): void {
    if (this.head === null) return;
    this.bytes += chunk.length;
    if (this.bytes > this.cache.maxBodyBytes) {
      this.head = null;
      this.chunks = [];
      this.settle(null);
      return;
    }
    this.chunks.push(chunk);
  }

  onComplete(): void {
    if (this.head === null || this.settled) return;
    this.settled = true;
    this.cache.stored(this.cr, this.head, Buffer.concat(this.chunks, this.bytes), this.flight, this.ctx);
  }

  readonly onError = (): void => {
    this.head = null;
    this.chunks = [];
    this.settle(null);
  };

  /** The upstream failed before anything was sent: answer from the stale entry (stale-if-error). */
  takeOver(): boolean {
    const e = this.stale;
    if (e === null || this.ctx.res.headersSent) return false;
    this.settle(null);
    this.cache.serve(this.ctx, e, 'stale', Date.now() - e.head.t + e.head.a * 1000);
    return true;
  }

  private settle(e: Entry | null): void {
    if (this.settled) return;
    this.settled = true;
    this.cache.settle(this.cr, this.flight, e);
  }
}

/** Bumps the path's generation once an unsafe request succeeded (RFC 9111 §4.4). */
class Invalidator implements ResponseObserver {
  constructor(
    private readonly store: GateStore,
    private readonly genKey: string,
  ) {}
  onHeaders(status: number): void {
    if (status >= 200 && status < 400) void this.store.cacheBump([this.genKey]);
  }
  onData(): void {}
  onComplete(): void {}
  onError(): void {}
}
