import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import Redis, { Cluster, Command, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { ReadinessCheck } from '../admin/server';
import type { CounterCell, HistogramCell } from '../observability/fast-metrics';
import type { GatewayMetrics } from '../observability/metrics';
import type { Resource } from '../plugins/types';
import type { RedisStoreConfig } from './schema';
import { BUCKET_FIELDS, type AsyncGateStore, type BucketSpec, type CacheFound, type GateRequest, type GateResult } from './types';

/**
 * Takes the next clock value and writes it to every generation key. Generation keys expire well
 * after any entry they guard can (entries live at most a day plus their stale windows).
 */
const BUMP_SCRIPT = `local c = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do redis.call('SET', KEYS[i], c, 'PX', ARGV[1]) end
return c`;
const GENERATION_TTL_MS = 8 * 86400 * 1000;

/** Finds lua/<name> from src/store (tests, tsx) or dist/src/store (built). */
export function readLua(name: string): string {
  for (const up of ['../..', '../../..']) {
    const file = resolve(__dirname, up, 'lua', name);
    if (existsSync(file)) return readFileSync(file, 'utf8');
  }
  throw new Error(`cannot find lua/${name} next to ${join(__dirname, '../..')}`);
}

/** Kinds of Redis failure, the label values of gateway_redis_errors_total. */
type ErrorKind = 'timeout' | 'connection' | 'overload' | 'noscript' | 'cluster' | 'reply' | 'other';
const ERROR_KINDS: readonly ErrorKind[] = ['timeout', 'connection', 'overload', 'noscript', 'cluster', 'reply', 'other'];

function errorKind(err: unknown): ErrorKind {
  const e = err as { name?: string; message?: string };
  const msg = e.message ?? '';
  if (e.name === 'MaxRetriesPerRequestError' || msg.includes('Connection is closed') || msg.includes("Stream isn't writeable")) {
    return 'connection';
  }
  if (/^(CROSSSLOT|CLUSTERDOWN|TRYAGAIN|MOVED|ASK)\b/.test(msg) || msg.includes('Too many Cluster redirections') || msg.includes('Failed to refresh slots cache')) {
    return 'cluster';
  }
  if (e.name === 'ReplyError') return 'reply';
  return 'other';
}

interface BufferScripts {
  evalshaBuffer(...args: string[]): Promise<unknown>;
  evalBuffer(...args: string[]): Promise<unknown>;
}

/** Bulk replies as Buffers: a cached body is bytes, not text. */
const BUFFER_REPLIES = { replyEncoding: null };
const NO_ARGS: readonly string[] = [];
/** The counts in a gate call's arguments as ioredis would send them (a call has a handful of keys). */
const COUNTS: readonly string[] = Array.from({ length: 64 }, (_, i) => String(i));
const count = (i: number): string => (i < COUNTS.length ? COUNTS[i] : String(i));

const RESOLVED_NULL: Promise<null> = Promise.resolve(null);

export interface RedisStoreOptions {
  config: RedisStoreConfig;
  log: FastifyBaseLogger;
  metrics: GatewayMetrics;
  /** Script source; lua/gate.lua unless given (a test loads a broken one). */
  script?: string;
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

/**
 * The shared store on Redis (standalone, Sentinel or Cluster through ioredis). The gate script is
 * loaded with SCRIPT LOAD at start-up and on every (re)connection, and called with EVALSHA; a
 * NOSCRIPT answer (restart, failover, SCRIPT FLUSH) is retried once as EVAL within the same call,
 * which also puts the script back.
 *
 * A call never outlives `timeoutMs`: commands are not queued while disconnected nor retried after
 * a disconnection, at most `maxPending` calls wait on Redis at once, and a call past its budget
 * resolves null (the route's failMode decides). ioredis reconnects by itself.
 */
export class RedisStore implements AsyncGateStore, Resource {
  readonly kind = 'redis';
  readonly name = 'redis';
  readonly client: Redis | Cluster;
  private readonly source: string;
  private readonly sha: string;
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly connectTimeoutMs: number;
  private readonly log: FastifyBaseLogger;
  private readonly errors: Record<ErrorKind, CounterCell>;
  private readonly latency: HistogramCell;
  private pending = 0;
  /** One connection (standalone, Sentinel): its writes are gathered per event-loop turn. */
  private readonly batchWrites: boolean;
  private readonly autoPipelining: boolean;
  private corked = false;
  private loading: Promise<void> | null = null;
  /** For logging state changes once instead of once per failed request. */
  private failing = false;
  /** init() has run: later (re)connections load the script themselves. */
  private started = false;
  /**
   * A gate call answered within the budget on the current connection. Until then the store is
   * warming up: the first calls after a (re)connection pay for script loading and code paths not
   * yet compiled, and miss the budget (the first burst on a fresh replica failed open).
   */
  private warm = false;
  /** performance.now() until which a connected store that is not warm yet counts as warming, not down. */
  private warmingUntil = 0;
  private warming: Promise<void> | null = null;
  private closed = false;

  constructor(opts: RedisStoreOptions) {
    const cfg = opts.config;
    this.log = opts.log.child({ store: 'redis' });
    this.source = opts.script ?? readLua('gate.lua');
    this.sha = createHash('sha1').update(this.source).digest('hex');
    this.timeoutMs = cfg.timeoutMs;
    this.maxPending = cfg.maxPending;
    this.connectTimeoutMs = cfg.connectTimeoutMs;

    const errors = opts.metrics.counter(
      'gateway_redis_errors_total',
      'Redis store failures by kind: timeout (past the budget), connection (down or reconnecting), overload (too many calls waiting), noscript (script reloaded), cluster, reply, other.',
      ['kind'],
    );
    this.errors = Object.fromEntries(ERROR_KINDS.map((k) => [k, errors.child(k)])) as Record<ErrorKind, CounterCell>;
    this.latency = opts.metrics
      .histogram(
        'gateway_redis_script_duration_seconds',
        'Latency of gate script calls (EVALSHA sent to reply received), including replies that came after the budget.',
        [],
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      )
      .child();

    const base: RedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: cfg.connectTimeoutMs,
      enableAutoPipelining: cfg.autoPipelining,
      retryStrategy: (times: number) => Math.min(times * 50, cfg.reconnectMaxDelayMs),
      // TCP keep-alive so a silently dead peer is noticed even when idle.
      keepAlive: 10000,
    };
    if (cfg.mode === 'cluster') {
      const copts: ClusterOptions = {
        lazyConnect: true,
        enableOfflineQueue: false,
        enableAutoPipelining: cfg.autoPipelining,
        clusterRetryStrategy: (times: number) => Math.min(times * 50, cfg.reconnectMaxDelayMs),
        slotsRefreshTimeout: cfg.connectTimeoutMs,
        maxRedirections: 4,
        retryDelayOnFailover: 20,
        retryDelayOnTryAgain: 20,
        retryDelayOnClusterDown: 20,
        // Node connections keep ioredis' own queue and retry settings: they open lazily on their
        // first command, which must wait for the connection rather than fail. The cluster-level
        // queue stays off; maxPending and the budget bound the wait.
        redisOptions: {
          maxRetriesPerRequest: 0,
          connectTimeout: cfg.connectTimeoutMs,
          keepAlive: base.keepAlive,
          username: cfg.username,
          password: cfg.password,
          ...(cfg.tls ? { tls: {} } : {}),
        },
      };
      this.client = new Cluster(cfg.nodes.map(hostPort), copts);
    } else if (cfg.mode === 'sentinel') {
      this.client = new Redis({
        ...base,
        sentinels: cfg.sentinels.map(hostPort),
        name: cfg.masterName,
        username: cfg.username,
        password: cfg.password,
        sentinelPassword: cfg.sentinelPassword,
        db: cfg.db,
        ...(cfg.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
        sentinelRetryStrategy: (times: number) => Math.min(times * 50, cfg.reconnectMaxDelayMs),
      });
    } else {
      this.client = new Redis(cfg.url!, { ...base, ...(/\/\d+$/.test(cfg.url!) ? {} : { db: cfg.db }) });
    }
    this.batchWrites = cfg.mode !== 'cluster';
    this.autoPipelining = cfg.autoPipelining;
    this.client.on('error', (err: Error) => {
      if (!this.failing) {
        this.failing = true;
        this.log.warn({ err: { message: err.message } }, 'redis unavailable; routes follow their failMode until it is back');
      }
    });
    this.client.on('ready', () => {
      if (this.failing) {
        this.failing = false;
        this.log.info('redis connection ready');
      }
      this.warm = false;
      this.warmingUntil = performance.now() + this.connectTimeoutMs;
      if (this.started) {
        this.reload();
        void this.warmUp();
      }
    });
  }

  /**
   * Connects and loads the script. Redis unreachable is not fatal (failMode covers it and
   * readiness reports it); a script Redis refuses is.
   */
  async init(): Promise<void> {
    try {
      await this.connectAndLoad();
    } finally {
      this.started = true;
    }
  }

  private async connectAndLoad(): Promise<void> {
    const connected = await Promise.race([
      this.client.connect().then(
        () => true,
        () => false,
      ),
      new Promise<false>((r) => setTimeout(() => r(false), this.connectTimeoutMs).unref()),
    ]);
    if (!connected) {
      this.log.warn('redis not reachable at start-up; starting without it (readiness reports it)');
      return;
    }
    try {
      await this.loadScript();
    } catch (err) {
      if (errorKind(err) === 'reply') {
        throw new Error(`lua/gate.lua was refused by Redis: ${(err as Error).message}`, { cause: err });
      }
      this.log.warn({ err: { message: (err as Error).message } }, 'could not load the gate script yet; it loads on reconnection');
      return;
    }
    await this.warmUp();
  }

  /**
   * Gate calls without buckets until one answers within the budget, for at most connectTimeoutMs
   * after the connection came up; readiness waits for it. One warm-up runs at a time.
   */
  private warmUp(): Promise<void> {
    this.warming ??= (async () => {
      while (!this.warm && !this.closed && this.client.status === 'ready') {
        if ((await this.gate(WARM_UP)) !== null) this.warm = true;
        else if (performance.now() >= this.warmingUntil) break;
        else await new Promise((r) => setTimeout(r, 10).unref());
      }
    })().finally(() => {
      this.warming = null;
    });
    return this.warming;
  }

  /** SCRIPT LOAD on every primary (one in standalone and Sentinel modes). */
  private async loadScript(): Promise<void> {
    const targets: (Redis | Cluster)[] = this.client instanceof Cluster ? this.client.nodes('master') : [this.client];
    const shas = await Promise.all(targets.map((c) => c.script('LOAD', this.source) as Promise<string>));
    if (shas.some((s) => s !== this.sha)) throw new Error('Redis returned an unexpected script digest');
  }

  private reload(): void {
    if (this.loading !== null || this.closed) return;
    this.loading = this.loadScript()
      .catch((err: unknown) => this.log.warn({ err: { message: (err as Error).message } }, 'gate script load failed'))
      .finally(() => {
        this.loading = null;
      });
  }

  readonly readiness: ReadinessCheck = {
    name: 'redis',
    ready: async () => {
      if (this.client.status !== 'ready') return false;
      if (!this.warm) {
        // Past its warm-up time a store that still misses the budget is as good as down.
        await this.warmUp();
        if (!this.warm) return performance.now() < this.warmingUntil ? 'warming' : false;
      }
      return Promise.race([
        this.client.ping().then((p) => p === 'PONG', () => false),
        new Promise<boolean>((r) => setTimeout(() => r(false), Math.max(250, this.timeoutMs)).unref()),
      ]);
    },
  };

  gate(req: GateRequest): Promise<GateResult | null> {
    if (this.client.status !== 'ready') {
      this.errors.connection.inc();
      return RESOLVED_NULL;
    }
    if (this.pending >= this.maxPending) {
      this.errors.overload.inc();
      return RESOLVED_NULL;
    }
    const { keys, specs, cache } = req;
    const n = keys.length;
    const variant = cache !== undefined && cache.variantKey !== null;
    const m = cache === undefined ? 0 : 2 + (variant ? 1 : 0) + cache.genKeys.length;
    const args: string[] = new Array<string>(5 + 3 * n + m);
    args[0] = this.sha;
    args[1] = count(n + m);
    for (let i = 0; i < n; i++) args[2 + i] = keys[i];
    let at = 2 + n;
    if (cache !== undefined) {
      args[at++] = cache.entryKey;
      args[at++] = cache.clockKey;
      if (variant) args[at++] = cache.variantKey!;
      for (const g of cache.genKeys) args[at++] = g;
    }
    args[at++] = count(n);
    for (let i = 0; i < n; i++) {
      args[at++] = specs[i].argInterval;
      args[at++] = specs[i].argBurst;
    }
    args[at++] = count(m);
    if (m > 0) args[at++] = variant ? '1' : '0';
    args.length = at;
    return new Promise<GateResult | null>((resolvePromise) => new GateCall(this, args, n, m > 0, resolvePromise).start());
  }

  /** @internal Sends one script call; GateCall calls settled() when it answers. */
  send(command: 'evalsha' | 'eval', args: string[]): Promise<unknown> {
    this.pending++;
    if (this.batchWrites && !this.corked) this.corkUntilNextTurn();
    if (this.autoPipelining) {
      // Auto-pipelining lives in the command methods. Their Buffer variants (bulk replies as bytes)
      // exist on every ioredis client but are not in its typings; callBuffer loses its command name
      // under auto-pipelining.
      const c = this.client as unknown as BufferScripts;
      return command === 'evalsha' ? c.evalshaBuffer(...args) : c.evalBuffer(...args);
    }
    // ioredis' command methods build their Command from a copy of the arguments made with
    // Array.prototype.flat, which V8 runs through its runtime element by element: about 1.5 µs
    // for a gate call's dozen arguments (measured), a twentieth of a Redis cache hit's CPU. Ours
    // are flat already, and strings as its constructor would have made them, so the command gets
    // them after it is made.
    const cmd = new Command(command, NO_ARGS as string[], BUFFER_REPLIES);
    cmd.args = args;
    void this.client.sendCommand(cmd);
    return cmd.promise;
  }

  /**
   * Holds the connection's writes until the event loop has run this turn's I/O callbacks, so the
   * gate calls of all the requests read in one turn leave in one write (ioredis' auto-pipelining
   * gathers only the commands of one tick, and every client connection's data is its own tick).
   */
  private corkUntilNextTurn(): void {
    const stream = (this.client as Redis).stream;
    if (stream === undefined || stream.destroyed) return;
    this.corked = true;
    stream.cork();
    setImmediate(() => {
      this.corked = false;
      stream.uncork();
    });
  }

  cachePut(key: string, value: Buffer, ttlMs: number): Promise<void> {
    if (this.client.status !== 'ready') return Promise.resolve();
    const done = this.client.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs))).then(
      () => undefined,
      (err: unknown) => {
        this.onFailure(null, err);
      },
    );
    return Promise.race([done, new Promise<void>((r) => setTimeout(r, this.timeoutMs).unref())]);
  }

  cacheBump(clockKey: string, genKeys: readonly string[]): Promise<boolean> {
    if (this.client.status !== 'ready') return Promise.resolve(false);
    const done = this.client.eval(BUMP_SCRIPT, 1 + genKeys.length, clockKey, ...genKeys, GENERATION_TTL_MS).then(
      () => true,
      (err: unknown) => {
        this.onFailure(null, err);
        return false;
      },
    );
    return Promise.race([done, new Promise<boolean>((r) => setTimeout(() => r(false), Math.max(this.timeoutMs, 250)).unref())]);
  }

  /** @internal */
  settled(startedAt: number): void {
    this.pending--;
    this.latency.observe((performance.now() - startedAt) / 1000);
  }

  /** @internal */
  onNoScript(args: string[]): Promise<unknown> {
    this.errors.noscript.inc();
    this.reload();
    const evalArgs = args.slice();
    evalArgs[0] = this.source;
    return this.send('eval', evalArgs);
  }

  /** @internal */
  onFailure(kind: ErrorKind | null, err?: unknown): null {
    const k = kind ?? errorKind(err);
    if (k === 'reply' || k === 'other') {
      this.log.error({ err: { message: (err as Error | undefined)?.message } }, 'gate script call failed');
    }
    this.errors[k].inc();
    return null;
  }

  /** @internal */
  get budgetMs(): number {
    return this.timeoutMs;
  }

  async close(): Promise<void> {
    this.closed = true;
    const quit = this.client.status === 'ready' ? this.client.quit().catch(() => undefined) : Promise.resolve();
    await Promise.race([quit, new Promise((r) => setTimeout(r, 500).unref())]);
    this.client.disconnect();
  }
}

const NO_KEYS: readonly string[] = [];
const NO_SPECS: readonly BucketSpec[] = [];
/** A gate call that touches no key: the round trip and the script, for the warm-up. */
const WARM_UP: GateRequest = { keys: NO_KEYS, specs: NO_SPECS };

/**
 * The store on Redis Cluster. A request's buckets share one hash tag (the route, or the route and
 * caller: see plugins/rate-limit/limits.ts) and its cache keys another (the route's cache space:
 * see plugins/cache/keys.ts), so a request with both sections is two calls of the one gate script,
 * sent together (both in flight at once, so about one round trip) and joined into one result: the
 * buckets with no cache section, and the cache section with n = 0 buckets. Each call has the whole
 * budget and fails on its own: a failed bucket call fails the gate (the route's failMode decides,
 * and the cache is bypassed, as when the single call fails on standalone); a failed cache call only
 * bypasses the cache. The bucket call is made whatever the cache finds, so with countHits a hit
 * still takes its token. A request with one section is one call, as on standalone, whose path this
 * class leaves untouched.
 */
export class ClusterRedisStore extends RedisStore {
  override gate(req: GateRequest): Promise<GateResult | null> {
    const cache = req.cache;
    if (cache === undefined || req.keys.length === 0) return super.gate(req);
    const buckets = super.gate({ keys: req.keys, specs: req.specs });
    const lookup = super.gate({ keys: NO_KEYS, specs: NO_SPECS, cache });
    return Promise.all([buckets, lookup]).then(([b, l]) => (b === null || l === null ? b : { admitted: b.admitted, buckets: b.buckets, cache: l.cache }));
  }
}

function onGateTimeout(call: GateCall): void {
  call.timedOut();
}

/** One script call racing its budget; whichever finishes first answers. */
class GateCall {
  private done = false;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;

  constructor(
    private readonly store: RedisStore,
    private readonly args: string[],
    private readonly n: number,
    private readonly withCache: boolean,
    private readonly resolve: (r: GateResult | null) => void,
  ) {}

  start(): void {
    this.timer = setTimeout(onGateTimeout, this.store.budgetMs, this);
    this.startedAt = performance.now();
    this.store.send('evalsha', this.args).then(
      (reply) => this.onReply(reply),
      (err: unknown) => this.onError(err),
    );
  }

  timedOut(): void {
    this.timer = null;
    if (this.done) return;
    this.done = true;
    this.resolve(this.store.onFailure('timeout'));
  }

  private onReply(reply: unknown): void {
    this.store.settled(this.startedAt);
    if (this.done) return;
    this.done = true;
    if (this.timer !== null) clearTimeout(this.timer);
    const r = reply as unknown[];
    const nb = BUCKET_FIELDS * this.n;
    if (!Array.isArray(r) || r.length !== 1 + nb + (this.withCache ? 4 : 0)) {
      this.resolve(this.store.onFailure('reply', new Error('malformed gate reply')));
      return;
    }
    const buckets = r.slice(1, 1 + nb) as number[];
    if (!this.withCache) {
      this.resolve({ admitted: r[0] === 1, buckets });
      return;
    }
    const entry = r[1 + nb];
    const variant = r[4 + nb];
    const cache: CacheFound = {
      entry: Buffer.isBuffer(entry) ? entry : null,
      variant: Buffer.isBuffer(variant) ? variant : null,
      clock: Number(r[2 + nb]),
      maxGen: Number(r[3 + nb]),
    };
    this.resolve({ admitted: r[0] === 1, buckets, cache });
  }

  private onError(err: unknown): void {
    this.store.settled(this.startedAt);
    if (this.done) return;
    if ((err as Error).message?.startsWith('NOSCRIPT')) {
      this.startedAt = performance.now();
      this.store.onNoScript(this.args).then(
        (reply) => this.onReply(reply),
        (final: unknown) => {
          this.store.settled(this.startedAt);
          this.fail(final);
        },
      );
      return;
    }
    this.fail(err);
  }

  private fail(err: unknown): void {
    if (this.done) return;
    this.done = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.resolve(this.store.onFailure(null, err));
  }
}
