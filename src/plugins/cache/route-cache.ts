import type { IncomingMessage } from 'node:http';
import type { Step, StepResult } from '../../chain';
import type { RequestContext } from '../../context';
import type { CounterCell } from '../../observability/fast-metrics';
import type { BackgroundRelays } from '../../proxy/background';
import { copyResponseHeaders } from '../../proxy/headers';
import type { ResponseObserver } from '../../proxy/relay';
import type { CacheFound, CacheLookup, GateStore } from '../../store/types';
import { decodeEntry, encodeEntry, encodeMarker, type Entry, type EntryHead, type VaryMarker } from './entry';
import { explicitLifetime, headerOf, parseAge, parseCacheControl, parseHttpDate, parseTargeted, type Directives } from './http';
import type { CacheKeys, CacheKeySpace } from './keys';
import type { RouteCacheConfig } from './schema';

export type CacheResult = 'hit' | 'miss' | 'bypass' | 'stale' | 'revalidated';

/**
 * Why a request bypassed the cache (the `reason` label of a bypass): the client's no-store, the store
 * did not answer, or a shared cache met a request with credentials whose response did not say
 * public or s-maxage (so it could not be stored).
 */
export type BypassReason = 'client' | 'store' | 'credentials';

const X_CACHE: Record<'hit' | 'stale' | 'revalidated', string> = { hit: 'HIT', stale: 'STALE', revalidated: 'REVALIDATED' };

/** What the cache knows about one GET/HEAD request between its lookup and its answer. */
export interface CacheRequest {
  /** The primary key of the URL. */
  readonly key: string;
  /** The Vary'd header names known for the URL (comma-separated), or null. */
  readonly vary: string | null;
  /** What concurrent requests share one upstream fill by: the variant key when known, else the primary key. */
  readonly flight: string;
  readonly lookup: CacheLookup;
  /** Carries credentials that the key does not partition by (shared scope). */
  readonly credential: boolean;
  /** The client allows an answer from the cache (no `no-cache`). */
  readonly serve: boolean;
  readonly head: boolean;
}

/** Headers never stored: hop-by-hop, recomputed (length, age), or the cache's own. */
const NOT_STORED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'age', 'x-cache']);

/** Safe methods (RFC 9110 §9.2.1); any other method, known or not, invalidates on success (RFC 9111 §4.4). */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/** URLs whose Vary'd header names a route remembers; past it the oldest learned are forgotten (a forgotten one costs a second lookup). */
const VARY_NAMES_KEPT = 10000;

const EMPTY = Buffer.alloc(0);

/** A response's RFC 5861 window, capped by the route's: the route's own when the response names none. */
const window = (directive: number, route: number): number => (directive < 0 ? route : Math.min(directive, route));

const asEntry = (v: Entry | VaryMarker | null): Entry | null => (v === null || 'vary' in v ? null : v);

export interface CacheCells {
  readonly results: Record<Exclude<CacheResult, 'bypass'>, CounterCell>;
  readonly bypass: Record<BypassReason, CounterCell>;
  readonly stores: CounterCell;
}

/** One request filling an entry; others for the same key wait on it (single-flight). */
class Flight {
  readonly promise: Promise<Entry | null>;
  /** What the flight brought, once it is over; it stays joinable until the store has the entry. */
  entry: Entry | null = null;
  private resolveFn!: (e: Entry | null) => void;
  constructor() {
    this.promise = new Promise((r) => (this.resolveFn = r));
  }
  resolve(e: Entry | null): void {
    this.entry = e;
    this.resolveFn(e);
  }
}

/** Headers a 304 answered from the cache carries (RFC 9110 §15.4.5): the rest is representation metadata. */
const NOT_MODIFIED_KEPT = new Set(['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary']);

/** The request header and value that revalidate a stored response: its ETag, else its Last-Modified. */
function validatorOf(h: readonly string[]): [string, string] | null {
  const etag = headerOf(h, 'etag');
  if (etag !== undefined) return ['if-none-match', etag];
  const lm = headerOf(h, 'last-modified');
  return lm === undefined ? null : ['if-modified-since', lm];
}

const ETAG = /(?:W\/)?"[^"]*"|\*/g;
const opaque = (tag: string): string => (tag.startsWith('W/') ? tag.slice(2) : tag);

/** The client's own conditional GET is satisfied by the stored response (weak comparison, RFC 9110 §13.1.2). */
function clientNotModified(ctx: RequestContext, h: readonly string[]): boolean {
  const inm = ctx.req.headers['if-none-match'];
  if (inm !== undefined) {
    const etag = headerOf(h, 'etag');
    if (etag === undefined) return false;
    for (const tag of inm.match(ETAG) ?? []) if (tag === '*' || opaque(tag) === opaque(etag)) return true;
    return false;
  }
  const ims = ctx.req.headers['if-modified-since'];
  const lm = headerOf(h, 'last-modified');
  if (ims === undefined || lm === undefined) return false;
  const since = parseHttpDate(ims);
  const modified = parseHttpDate(lm);
  return !Number.isNaN(since) && !Number.isNaN(modified) && modified <= since;
}

/** Stored headers updated with those of a 304 (RFC 9111 §3.2): each name the 304 carries replaces the stored ones. */
function mergeHeaders(stored: readonly string[], fresh: readonly string[]): string[] {
  const names = new Set<string>();
  for (let i = 0; i < fresh.length; i += 2) {
    const name = fresh[i].toLowerCase();
    if (!NOT_STORED.has(name)) names.add(name);
  }
  const out: string[] = [];
  for (let i = 0; i < stored.length; i += 2) if (!names.has(stored[i].toLowerCase())) out.push(stored[i], stored[i + 1]);
  for (let i = 0; i < fresh.length; i += 2) if (names.has(fresh[i].toLowerCase())) out.push(fresh[i], fresh[i + 1]);
  return out;
}

/** The one byte range a Range header asks of `length` bytes: [first, last], 'unsatisfiable', or null to send the whole (RFC 9110 §14.2). */
function byteRange(value: string, length: number): [number, number] | 'unsatisfiable' | null {
  const m = /^bytes[ \t]*=[ \t]*([0-9]{0,15})-([0-9]{0,15})[ \t]*$/i.exec(value);
  // Several ranges, another unit, or no range at all: the full response is a valid answer.
  if (m === null || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    return suffix === 0 || length === 0 ? 'unsatisfiable' : [Math.max(0, length - suffix), length - 1];
  }
  const first = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < first) return null;
  if (first >= length) return 'unsatisfiable';
  return [first, m[2] === '' ? length - 1 : Math.min(Number(m[2]), length - 1)];
}

/** If-Range (RFC 9110 §13.1.5): absent, or a strong match of the stored ETag or Last-Modified. */
function ifRangeHolds(ctx: RequestContext, h: readonly string[]): boolean {
  const v = ctx.req.headers['if-range'];
  if (v === undefined) return true;
  if (typeof v !== 'string') return false;
  if (v.startsWith('"') || v.startsWith('W/')) {
    const etag = headerOf(h, 'etag');
    return etag !== undefined && !v.startsWith('W/') && !etag.startsWith('W/') && v === etag;
  }
  const since = parseHttpDate(v);
  const lm = parseHttpDate(headerOf(h, 'last-modified'));
  // A Last-Modified is a strong validator only when it is at least a second older than the response's Date (RFC 9110 §8.8.2.2).
  const date = parseHttpDate(headerOf(h, 'date'));
  return !Number.isNaN(since) && since === lm && date - lm >= 1000;
}

function headerValue(ctx: RequestContext, name: string): string {
  const v = ctx.req.headers[name];
  return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v;
}

/** Bytes of entries a route's ReadMemo keeps (Redis store); past it the memo starts over. */
const READ_MEMO_BYTES = 4 * 1024 * 1024;

/** Per key, the last bytes read and their decoded value, within a byte bound. */
class ReadMemo {
  private readonly byKey = new Map<string, { raw: Buffer; value: Entry | VaryMarker }>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  decode(key: string, raw: Buffer): Entry | VaryMarker | null {
    const last = this.byKey.get(key);
    if (last !== undefined && last.raw.equals(raw)) return last.value;
    if (raw.length > this.maxBytes / 16) return decodeEntry(raw);
    // Bytes of its own: `raw` is a view of a whole socket read, which the memo would keep alive.
    const own = Buffer.allocUnsafeSlow(raw.length);
    raw.copy(own);
    const value = decodeEntry(own);
    if (value === null) return null;
    if (this.bytes + own.length > this.maxBytes) {
      this.byKey.clear();
      this.bytes = 0;
    } else if (last !== undefined) {
      this.bytes -= last.raw.length;
    }
    this.byKey.set(key, { raw: own, value });
    this.bytes += own.length;
    return value;
  }
}

/**
 * The response cache of one route: builds the lookup of a request (which rides in the gate call),
 * answers hits, and fills entries by observing the relayed response.
 */
export class RouteCache {
  private readonly statuses: ReadonlySet<number>;
  private readonly flights = new Map<string, Flight>();
  private readonly consumerScope: boolean;
  /** Primary key → the Vary'd header names its marker listed, so a lookup asks for the variant in the same call. */
  private readonly varies = new Map<string, string>();
  /** How long a vary marker is kept: as long as any variant can be. */
  private readonly markerTtlMs: number;
  /**
   * Memory store only: the value each stored Buffer holds. That store hands back the very Buffer it
   * was given, so a hit finds its entry here and parses no JSON; entries leave with their Buffers.
   */
  private readonly decoded: WeakMap<Buffer, Entry | VaryMarker> | null;
  /**
   * Redis store: the last bytes read at each key and what they decoded to. A hit brings a new Buffer
   * every time; when its bytes are the same as last time (a compare) the head is not parsed again.
   */
  private readonly lastRead: ReadMemo | null;
  /** The route's targeted cache-control fields (RFC 9213), lower case, in order of precedence. */
  private readonly targeted: readonly string[];

  constructor(
    private readonly cfg: RouteCacheConfig,
    private readonly keys: CacheKeys,
    /** Where invalidations go: on a Cluster, every cached route's own key space. */
    private readonly space: CacheKeySpace,
    readonly store: GateStore,
    private readonly apiKeyHeader: string,
    private readonly cells: CacheCells,
    private readonly background: BackgroundRelays,
  ) {
    this.statuses = new Set(cfg.statuses);
    this.consumerScope = cfg.scope === 'consumer';
    this.decoded = store.kind === 'memory' ? new WeakMap() : null;
    this.lastRead = store.kind === 'memory' ? null : new ReadMemo(READ_MEMO_BYTES);
    this.markerTtlMs = (cfg.maxTtl + Math.max(cfg.staleIfError, cfg.staleWhileRevalidate, cfg.revalidationTtl)) * 1000;
    this.targeted = cfg.targetedFields.map((f) => f.toLowerCase());
  }

  /** The directives this cache obeys: the first valid targeted field's (RFC 9213 §2.1), else Cache-Control's. */
  private directives(h: readonly string[]): Directives {
    for (const name of this.targeted) {
      const v = headerOf(h, name);
      if (v === undefined) continue;
      const d = parseTargeted(v);
      if (d !== null) return d;
    }
    return parseCacheControl(headerOf(h, 'cache-control'));
  }

  /**
   * The lookup of a GET or HEAD, or null when the request does not use the cache (it then goes
   * upstream untouched; an unsafe method gets an observer that invalidates its path on success).
   */
  prepare(ctx: RequestContext): CacheRequest | null {
    // A WebSocket upgrade (a GET) must reach the upstream: a cached 200 would be a silent non-upgrade.
    if ((ctx.req as IncomingMessage & { upgrade?: boolean }).upgrade === true) return null;
    const method = ctx.req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      if (method !== undefined && !SAFE.has(method)) ctx.observer = new Invalidator(this.store, this.space, ctx.path, ctx.req.headers.host);
      return null;
    }
    let serve = true;
    if (!this.cfg.ignoreClientDirectives) {
      const cc = ctx.req.headers['cache-control'];
      const d = parseCacheControl(cc);
      if (d.noStore) {
        this.bypass(ctx, 'client');
        return null;
      }
      serve = !d.noCache && !(cc === undefined && ctx.req.headers.pragma?.toLowerCase().includes('no-cache'));
    }
    const scoped = this.consumerScope && ctx.identity !== null;
    const credential = !scoped && (ctx.req.headers.authorization !== undefined || ctx.req.headers[this.apiKeyHeader] !== undefined);
    const key = this.keys.entry((ctx.req.headers.host ?? '').toLowerCase(), ctx.path, ctx.query, scoped ? 'c' + ctx.identity!.consumerId : 's');
    return this.request(ctx, key, this.varies.get(key) ?? null, this.keys.gens(ctx.path), credential, serve, method === 'HEAD');
  }

  private request(ctx: RequestContext, key: string, vary: string | null, genKeys: readonly string[], credential: boolean, serve: boolean, head: boolean): CacheRequest {
    let variantKey: string | null = null;
    if (vary !== null) variantKey = this.keys.variant(key, vary.split(',').map((name) => [name, headerValue(ctx, name)] as const));
    return { key, vary, flight: variantKey ?? key, lookup: { entryKey: key, clockKey: this.keys.clock, variantKey, genKeys }, credential, serve, head };
  }

  private learn(key: string, vary: string): void {
    this.varies.delete(key);
    this.varies.set(key, vary);
    if (this.varies.size > VARY_NAMES_KEPT) this.varies.delete(this.varies.keys().next().value!);
  }

  /** The marker named other headers than the lookup asked with (or it asked with none): look again with them. */
  private relook(ctx: RequestContext, cr: CacheRequest, vary: string, step: Step): StepResult {
    this.learn(cr.key, vary);
    const next = this.request(ctx, cr.key, vary, cr.lookup.genKeys, cr.credential, cr.serve, cr.head);
    const req = { keys: [], specs: [], cache: next.lookup };
    const store = this.store;
    if (store.kind === 'memory') return this.answer(ctx, next, store.gate(req).cache, step, true);
    return store.gate(req).then((r) => this.answer(ctx, next, r === null ? null : r.cache, step, true));
  }

  /**
   * Answers from the lookup's result: false when the cache answered, true to go upstream. `step`
   * is the step that made the lookup: a background refresh runs the route's steps after it.
   */
  answer(ctx: RequestContext, cr: CacheRequest, found: CacheFound | undefined | null, step: Step, relooked = false): StepResult {
    if (found === undefined || found === null) {
      // The store did not answer: pass through, and store nothing (the generation is unknown).
      this.bypass(ctx, 'store');
      return true;
    }
    const primary = found.entry === null ? null : this.decode(found.entry, cr.key);
    // Once only: a marker that changes under a second lookup (writers racing) makes a miss.
    if (primary !== null && 'vary' in primary && primary.vary !== cr.vary && !relooked) return this.relook(ctx, cr, primary.vary, step);
    const entry = this.chosen(cr, primary, found.variant);
    const usable = entry !== null && entry.head.k >= found.maxGen && this.matches(ctx, cr, entry.head);
    const now = Date.now();
    let staleMs = Infinity;
    if (usable) {
      const ageMs = now - entry.head.t + entry.head.a * 1000;
      if (cr.serve && ageMs < entry.head.l) return this.serve(ctx, entry, 'hit', ageMs);
      staleMs = entry.head.r ? Infinity : ageMs - entry.head.l;
    }
    // A finished flight only stands in for the store until the store has its entry: a lookup that
    // already found that entry (or a newer one) goes by what it found.
    const inFlight = this.flights.get(cr.flight);
    const flight = inFlight !== undefined && usable && inFlight.entry !== null && entry.head.t >= inFlight.entry.head.t ? undefined : inFlight;
    if (usable && cr.serve && staleMs <= (entry.head.w ?? this.cfg.staleWhileRevalidate) * 1000) {
      // Answered at once; one refresh per key goes upstream behind it.
      if (flight === undefined) this.refresh(ctx, cr, entry, found.clock, step);
      return this.serve(ctx, entry, 'stale', staleMs + entry.head.l);
    }
    if (flight !== undefined && cr.serve) {
      return flight.promise.then((e) => {
        // Shared only while fresh: a response to revalidate on every use (no-cache) answers its own request alone.
        const ageMs = e === null ? 0 : Date.now() - e.head.t + e.head.a * 1000;
        if (e !== null && ageMs < e.head.l && !ctx.res.destroyed && this.matches(ctx, cr, e.head)) return this.serve(ctx, e, 'hit', ageMs);
        this.count(ctx, 'miss');
        return true;
      });
    }
    if (flight !== undefined || cr.head) {
      this.count(ctx, 'miss');
      return true;
    }
    const f = new Flight();
    this.flights.set(cr.flight, f);
    const stale = usable && staleMs <= (entry.head.e ?? this.cfg.staleIfError) * 1000 ? entry : null;
    // A client with validators of its own is answered by the upstream as it asked: its 304 passes through.
    const validator = usable && ctx.req.headers['if-none-match'] === undefined && ctx.req.headers['if-modified-since'] === undefined ? validatorOf(entry.head.h) : null;
    if (validator !== null) ctx.addUpstreamHeader(validator[0], validator[1]);
    // A revalidation is counted when the upstream answers: a 304 makes it 'revalidated', anything else a miss.
    // So is a request with credentials on a shared cache: a response it may not store makes it a bypass.
    this.count(ctx, 'miss', validator === null && !cr.credential);
    const filler = new Filler(this, ctx, cr, found.clock, stale, f, validator === null ? null : entry, false, validator !== null || cr.credential);
    ctx.observer = filler;
    // The relay may answer without calling the observer (no target takes traffic): the flight ends with the response anyway.
    ctx.res.once('close', filler.onError);
    return true;
  }

  /** Refreshes a stale entry from the upstream with no client waiting (conditional when it has a validator). */
  private refresh(client: RequestContext, cr: CacheRequest, entry: Entry, stamp: number, step: Step): void {
    const ctx = this.background.context(client);
    if (ctx === null) return;
    const f = new Flight();
    this.flights.set(cr.flight, f);
    const validator = validatorOf(entry.head.h);
    if (validator !== null) ctx.addUpstreamHeader(validator[0], validator[1]);
    const filler = new Filler(this, ctx, cr, stamp, null, f, validator === null ? null : entry, true, false);
    ctx.observer = filler;
    ctx.res.once('close', filler.onError);
    this.background.run(ctx, step);
  }

  private decode(buf: Buffer, key: string): Entry | VaryMarker | null {
    const memo = this.decoded;
    if (memo === null) return this.lastRead!.decode(key, buf);
    const known = memo.get(buf);
    if (known !== undefined) return known;
    const value = decodeEntry(buf);
    if (value !== null) memo.set(buf, value);
    return value;
  }

  private encode(value: Entry | VaryMarker): Buffer {
    if ('vary' in value) {
      const marker = encodeMarker(value.vary);
      this.decoded?.set(marker, value);
      return marker;
    }
    const buf = encodeEntry(value.head, value.body);
    // The body as a view of the stored bytes: the memo must not hold a second copy the byte bound does not count.
    this.decoded?.set(buf, { head: value.head, body: buf.subarray(buf.length - value.body.length) });
    return buf;
  }

  /** The entry a lookup found for this request: the primary key's, or the variant's under a matching (or vanished) marker. */
  private chosen(cr: CacheRequest, primary: Entry | VaryMarker | null, variant: Buffer | null): Entry | null {
    if (primary !== null && !('vary' in primary)) {
      // The URL no longer varies: stop asking for variants.
      if (cr.vary !== null) this.varies.delete(cr.key);
      return primary;
    }
    // A variant may outlive its marker (evicted): its own Vary'd values still decide. A marker naming other headers is news for the next request.
    if (variant === null || (primary !== null && primary.vary !== cr.vary)) return null;
    return asEntry(this.decode(variant, cr.flight));
  }

  /** Vary'd values and credentials allow this entry for this request. */
  private matches(ctx: RequestContext, cr: CacheRequest, head: EntryHead): boolean {
    if (cr.credential && !head.p) return false;
    for (const [name, value] of head.v) if (headerValue(ctx, name) !== value) return false;
    return true;
  }

  /** @internal Writes a cached response to the client: 304 when the client's own validators match it. */
  serve(ctx: RequestContext, entry: Entry, result: 'hit' | 'stale' | 'revalidated', ageMs: number): false {
    const { head } = entry;
    let body = entry.body;
    const notModified = head.s === 200 && clientNotModified(ctx, head.h);
    let status = notModified ? 304 : head.s;
    // A single range of a stored complete 200 is cut from it; anything else gets the whole response.
    const range = status === 200 && ctx.req.method === 'GET' ? ctx.req.headers.range : undefined;
    const r = range === undefined || !ifRangeHolds(ctx, head.h) ? null : byteRange(range, body.length);
    let h: string[];
    if (notModified || r === 'unsatisfiable') {
      h = [];
      for (let i = 0; i < head.h.length; i += 2) if (NOT_MODIFIED_KEPT.has(head.h[i].toLowerCase())) h.push(head.h[i], head.h[i + 1]);
    } else {
      h = head.h.slice();
    }
    if (r === 'unsatisfiable') {
      status = 416;
      h.push('content-range', `bytes */${body.length}`);
      body = EMPTY;
    } else if (r !== null) {
      status = 206;
      h.push('content-range', `bytes ${r[0]}-${r[1]}/${body.length}`);
      body = body.subarray(r[0], r[1] + 1);
    }
    h.push('age', String(Math.max(0, Math.floor(ageMs / 1000))), 'x-cache', X_CACHE[result], 'x-request-id', ctx.id);
    const bodiless = notModified || head.s === 204 || head.s === 304;
    if (!bodiless) h.push('content-length', String(body.length));
    const extra = ctx.responseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i += 2) if (extra[i] !== 'X-Cache') h.push(extra[i], extra[i + 1]);
    this.cells.results[result].inc();
    ctx.cacheResult = result;
    ctx.res.writeHead(status, h);
    ctx.res.end(ctx.req.method === 'HEAD' || bodiless ? undefined : body);
    return false;
  }

  private count(ctx: RequestContext, result: 'miss', now = true): void {
    if (now) this.cells.results[result].inc();
    ctx.cacheResult = result;
    ctx.addResponseHeader('X-Cache', 'MISS');
  }

  private bypass(ctx: RequestContext, reason: BypassReason): void {
    this.cells.bypass[reason].inc();
    ctx.cacheResult = 'bypass';
    ctx.addResponseHeader('X-Cache', 'BYPASS');
  }

  /** @internal A request counted once its response is known (a revalidation that got no 304, a request with credentials that could be stored): a miss. */
  countMiss(): void {
    this.cells.results.miss.inc();
  }

  /** @internal A request with credentials on the shared cache whose response may not be stored: a bypass. */
  countCredentialBypass(): void {
    this.cells.bypass.credentials.inc();
  }

  /** @internal The response may not be stored only because the request carried credentials and the response is not public / s-maxage. */
  refusedForCredentials(cr: CacheRequest, h: readonly string[]): boolean {
    if (!cr.credential) return false;
    const cc = this.directives(h);
    return !cc.public && cc.sMaxAge < 0;
  }

  /** @internal The head of an entry for this response, or null when it must not be stored. */
  storable(cr: CacheRequest, status: number, h: readonly string[], stamp: number): EntryHead | null {
    // A partial response or a 304 to the client's own conditional request is no stored response.
    if (status === 206 || status === 304) return null;
    const cc = this.directives(h);
    if (cc.noStore || cc.private || headerOf(h, 'set-cookie') !== undefined) return null;
    const authOk = cc.public || cc.sMaxAge >= 0;
    if (cr.credential && !authOk) return null;
    const varyHeader = headerOf(h, 'vary');
    const vary: [string, string][] = [];
    if (varyHeader !== undefined) {
      const names = new Set<string>();
      for (const raw of varyHeader.split(',')) {
        const name = raw.trim().toLowerCase();
        if (name === '*') return null;
        if (name !== '') names.add(name);
      }
      // Sorted: a marker and a variant key read the same whatever order the upstream lists them in.
      for (const name of [...names].sort()) vary.push([name, '']);
    }
    const now = Date.now();
    const explicit = explicitLifetime(cc, headerOf(h, 'expires'), headerOf(h, 'date'), now);
    // Explicit freshness makes any final status storable (RFC 9111 §3); the route's list governs the rest.
    if (explicit < 0 && !this.statuses.has(status)) return null;
    let life = cc.noCache ? 0 : explicit;
    if (life < 0) life = this.cfg.defaultTtl;
    life = Math.min(life, this.cfg.maxTtl);
    const initialAge = parseAge(headerOf(h, 'age'));
    // A response that is not fresh now is of use later only as the base of a conditional request.
    if (life - initialAge <= 0 && (this.cfg.revalidationTtl === 0 || validatorOf(h) === null)) return null;
    const kept: string[] = [];
    for (let i = 0; i < h.length; i += 2) if (!NOT_STORED.has(h[i].toLowerCase())) kept.push(h[i], h[i + 1]);
    // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10).
    const r = cc.mustRevalidate || cc.noCache || cc.sMaxAge >= 0;
    const w = r ? 0 : window(cc.staleWhileRevalidate, this.cfg.staleWhileRevalidate);
    const e = r ? 0 : window(cc.staleIfError, this.cfg.staleIfError);
    return { s: status, h: kept, t: now, l: life * 1000, a: initialAge, k: stamp, v: vary, p: authOk, r, w, e };
  }

  /** @internal */
  stored(cr: CacheRequest, head: EntryHead, body: Buffer, f: Flight, ctx: RequestContext): Entry {
    for (const pair of head.v) pair[1] = headerValue(ctx, pair[0]);
    const staleS = head.r ? 0 : Math.max(head.e ?? this.cfg.staleIfError, head.w ?? this.cfg.staleWhileRevalidate);
    const keepS = Math.max(staleS, validatorOf(head.h) === null ? 0 : this.cfg.revalidationTtl);
    const entry = { head, body };
    this.cells.stores.inc();
    f.resolve(entry);
    const ttlMs = Math.max(0, head.l - head.a * 1000) + keepS * 1000;
    let written: Promise<unknown>;
    if (head.v.length === 0) {
      written = this.store.cachePut(cr.key, this.encode(entry), ttlMs);
    } else {
      const vary = head.v.map((pair) => pair[0]).join(',');
      this.learn(cr.key, vary);
      written = Promise.all([
        this.store.cachePut(this.keys.variant(cr.key, head.v), this.encode(entry), ttlMs),
        this.store.cachePut(cr.key, this.encode({ vary }), this.markerTtlMs),
      ]);
    }
    // Until the store has the entry, a lookup may still miss: such requests join the finished flight.
    void written.then(() => this.forget(cr, f));
    return entry;
  }

  /**
   * @internal A 304 answered the conditional request made for `entry`: the entry with the 304's
   * headers and freshness (RFC 9111 §4.3.4), stored again unless they now forbid it.
   */
  revalidated(cr: CacheRequest, entry: Entry, fresh: readonly string[], stamp: number, f: Flight, ctx: RequestContext): Entry {
    const h = mergeHeaders(entry.head.h, fresh);
    const head = this.storable(cr, entry.head.s, h, stamp);
    if (head !== null) return this.stored(cr, head, entry.body, f, ctx);
    this.settle(cr, f, null);
    return { head: { ...entry.head, h, t: Date.now(), a: 0 }, body: entry.body };
  }

  /** @internal */
  settle(cr: CacheRequest, f: Flight, e: Entry | null): void {
    this.forget(cr, f);
    f.resolve(e);
  }

  private forget(cr: CacheRequest, f: Flight): void {
    if (this.flights.get(cr.flight) === f) this.flights.delete(cr.flight);
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
    /** The entry whose validator the upstream request carries; its miss is counted once the answer is known. */
    private revalidating: Entry | null = null,
    /** No client waits on this response (a stale-while-revalidate refresh): it only refreshes the entry. */
    private readonly background = false,
    /** The request's result is counted once the upstream answers (see RouteCache.answer). */
    private pending = false,
  ) {}

  /** The upstream failed: a request still uncounted was a miss. */
  private missed(): void {
    this.revalidating = null;
    if (!this.pending) return;
    this.pending = false;
    this.cache.countMiss();
  }

  notModified(raw: Buffer[]): boolean {
    const e = this.revalidating;
    if (e === null || this.settled) return false;
    this.revalidating = null;
    this.pending = false;
    this.settled = true;
    const h: string[] = [];
    // The 304 came from the target the relay sent the request to.
    copyResponseHeaders(raw, h, this.ctx.target!.headerStrings);
    // Stored headers went through the route's header rules: so do the ones that replace them.
    this.ctx.route.responseTransform?.(this.ctx, 304, h);
    const fresh = this.cache.revalidated(this.cr, e, h, this.stamp, this.flight, this.ctx);
    if (this.background) this.ctx.res.end();
    else this.cache.serve(this.ctx, fresh, 'revalidated', fresh.head.a * 1000);
    return true;
  }

  onHeaders(status: number, headers: string[]): void {
    this.revalidating = null;
    // The relay appends x-request-id and the steps' headers after the upstream's own.
    const own = headers.length - 2 - (this.ctx.responseHeaders?.length ?? 0);
    const upstream = headers.slice(0, own);
    if (this.pending) {
      this.pending = false;
      if (this.cache.refusedForCredentials(this.cr, upstream)) {
        this.cache.countCredentialBypass();
        for (let i = own; i < headers.length; i += 2) if (headers[i] === 'X-Cache') headers[i + 1] = 'BYPASS';
      } else {
        this.cache.countMiss();
      }
    }
    this.head = this.settled ? null : this.cache.storable(this.cr, status, upstream, this.stamp);
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
    this.missed();
    this.head = null;
    this.chunks = [];
    this.settle(null);
  };

  /** The upstream failed before anything was sent: answer from the stale entry (stale-if-error). */
  takeOver(): boolean {
    const e = this.stale;
    if (e === null || this.ctx.res.headersSent) return false;
    this.revalidating = null;
    this.pending = false;
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

/**
 * The path of a Location / Content-Location value when it names the request's own host (a relative
 * reference always does), else null: another origin's entries are not this request's to invalidate.
 */
function sameHostPath(value: string | undefined, host: string, path: string): string | null {
  if (value === undefined || value === '') return null;
  try {
    const base = new URL(`http://${host}${path}`);
    const u = new URL(value, base);
    return u.host === base.host && (u.protocol === 'http:' || u.protocol === 'https:') ? u.pathname : null;
  } catch {
    return null;
  }
}

/**
 * Bumps the generations of the target path once an unsafe (or unknown) method succeeded, and of the
 * paths its Location and Content-Location name on the same host (RFC 9111 §4.4): one bump per key
 * space that may hold each path.
 */
class Invalidator implements ResponseObserver {
  constructor(
    private readonly store: GateStore,
    private readonly space: CacheKeySpace,
    private readonly path: string,
    private readonly host: string | undefined,
  ) {}
  onHeaders(status: number, headers: readonly string[]): void {
    if (status < 200 || status >= 400) return;
    const paths = new Set([this.path]);
    if (this.host !== undefined) {
      for (const name of ['location', 'content-location']) {
        const p = sameHostPath(headerOf(headers, name), this.host, this.path);
        if (p !== null) paths.add(p);
      }
    }
    for (const p of paths) for (const b of this.space.path(p)) void this.store.cacheBump(b.clock, b.keys);
  }
  onData(): void {}
  onComplete(): void {}
  onError(): void {}
}
