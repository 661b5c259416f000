import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { availableParallelism } from 'node:os';
import { extname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { AggregatorRegistry, Counter, Gauge, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { registerCacheRoutes } from '../admin/cache';
import { registerKeyRoutes } from '../admin/keys';
import { buildAdminServer, type CheckReport, type CheckState } from '../admin/server';
import { ConfigError, formatProblem, loadConfigFile } from '../config/load';
import type { GatewayConfig } from '../config/schema';
import type { ReloadResult } from '../lifecycle/reload';
import { diffRoutes, restartOnlyChanges } from '../lifecycle/reload';
import { tlsFiles } from '../net/tls';
import { GatewayMetrics } from '../observability/metrics';
import { keyStoreFor } from '../plugins/auth';
import type { PluginContext, Resource } from '../plugins/types';
import { SharedBuckets } from '../store/shared-buckets';
import type { Call, Reply, WorkerData } from './protocol';

/** Node versions whose net.Server.listen takes `reusePort` (22.12 and 23.1 on). */
export function supportsReusePort(version = process.versions.node): boolean {
  const [major, minor] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/** The CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (cgroup v2, then v1). */
export function availableCpus(): number {
  const cpus = availableParallelism();
  const read = (f: string): string | null => {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch {
      return null;
    }
  };
  let quota = NaN;
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2 !== null) {
    const [max, period] = v2.split(/\s+/);
    if (max !== 'max') quota = Number(max) / Number(period);
  } else {
    const q = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'));
    const p = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'));
    if (q > 0 && p > 0) quota = q / p;
  }
  return Number.isFinite(quota) && quota > 0 ? Math.max(1, Math.min(cpus, Math.ceil(quota))) : cpus;
}

/** How many workers `workers` means here. */
export function workerCount(setting: GatewayConfig['workers']): number {
  return setting === 'auto' ? availableCpus() : setting;
}

/** One registry's metrics as getMetricsAsJSON gives them. */
type Metrics = MetricObjectWithValues<MetricValue<string>>[];

/** Delay before a crashed worker's replacement starts, so a worker that crashes at once does not spin a core. */
const RESTART_DELAY_MS = 100;

class WorkerHandle {
  readonly worker: Worker;
  listening = false;
  /** It listened once: a worker that dies after that is replaced. */
  served = false;
  exited = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  /** Resolves with the bound ports once the worker listens; rejects if it dies first. */
  readonly started: Promise<{ port: number; tlsPort: number | null }>;
  readonly exit: Promise<number>;

  constructor(
    readonly index: number,
    data: WorkerData,
  ) {
    // thread.js once built. From the TypeScript sources (tests, development) the thread loads them with
    // tsx (esbuild, cached on disk): an inherited ts-node loader compiles the whole gateway again in
    // every thread, seconds per worker.
    const ext = extname(__filename);
    this.worker = new Worker(join(__dirname, `thread${ext}`), { workerData: data, ...(ext === '.ts' ? { execArgv: ['--import', 'tsx'] } : {}) });
    let listening!: (v: { port: number; tlsPort: number | null }) => void;
    let failed!: (e: Error) => void;
    this.started = new Promise((resolve, reject) => {
      listening = resolve;
      failed = reject;
    });
    this.started.catch(() => undefined);
    this.worker.on('message', (reply: Reply) => {
      if (reply.id === 0) {
        this.listening = true;
        this.served = true;
        if (reply.ok) listening(reply.value as { port: number; tlsPort: number | null });
        return;
      }
      const p = this.pending.get(reply.id);
      if (p === undefined) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else p.reject(new Error(reply.error));
    });
    this.exit = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.exited = true;
        this.listening = false;
        failed(new Error(`worker ${index} exited with code ${code} before listening`));
        for (const p of this.pending.values()) p.reject(new Error(`worker ${index} exited`));
        this.pending.clear();
        resolve(code);
      });
    });
  }

  call(req: Call): Promise<unknown> {
    if (this.exited) return Promise.reject(new Error(`worker ${this.index} has exited`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }
}

export interface WorkerPoolOptions {
  logger: FastifyBaseLogger;
  configFile?: string;
  /** Workers to run (workerCount(config.workers) by default). */
  count?: number;
}

/**
 * A gateway process of N worker threads (config `workers`). Each worker runs a whole Gateway on the
 * same public ports (SO_REUSEPORT: the kernel spreads connections), with the memory store's buckets
 * in one SharedArrayBuffer (exact limits across workers, no message per request). The main thread
 * owns what is the process's: the admin listener, /metrics (every worker's registry merged on
 * scrape: counters and histograms summed, gauges by their own rule), /readyz (ready when every worker
 * listens and reports ready), configuration reloads (validated here once, then every worker swaps
 * on its message: a request sees one configuration), the drain (every worker drains; the process is
 * done when all have exited), and replacing a worker that died (counted).
 */
export class WorkerPool {
  readonly log: FastifyBaseLogger;
  private current: Readonly<GatewayConfig>;
  readonly count: number;
  private readonly buckets: SharedArrayBuffer;
  private readonly handles: WorkerHandle[] = [];
  private ports: { port?: number; tlsPort?: number } = {};
  private readonly metrics: GatewayMetrics;
  private readonly restarts: Counter<string>;
  private readonly admin: FastifyInstance | null;
  private readonly resources: Resource[] = [];
  private readonly configFile: string | null;
  private readonly watched = new Set<string>();
  private reloading: Promise<unknown> = Promise.resolve();
  private draining = false;
  private closed: Promise<void> | null = null;
  private readonly startLogLevel: string;

  constructor(config: Readonly<GatewayConfig>, opts: WorkerPoolOptions) {
    this.current = config;
    this.log = opts.logger;
    this.startLogLevel = this.log.level;
    this.configFile = opts.configFile ?? null;
    this.count = opts.count ?? workerCount(config.workers);
    this.buckets = SharedBuckets.allocate(config.store.memory.maxKeys);
    this.metrics = new GatewayMetrics({ processMetrics: true });
    const registers = [this.metrics.registry];
    this.restarts = new Counter({ name: 'gateway_worker_restarts_total', help: 'Worker threads that died and were replaced.', registers });
    const handles = this.handles;
    new Gauge({
      name: 'gateway_workers',
      help: 'Worker threads serving the public listeners, by state: listening, or starting (a replacement not yet serving).',
      labelNames: ['state'],
      registers,
      collect() {
        const up = handles.filter((h) => h.listening).length;
        this.set({ state: 'listening' }, up);
        this.set({ state: 'starting' }, handles.length - up);
      },
    });
    this.admin = config.admin.enabled ? this.buildAdmin() : null;
  }

  get config(): Readonly<GatewayConfig> {
    return this.current;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Workers not yet exited (what a drain still waits for). */
  get running(): number {
    return this.handles.filter((h) => !h.exited).length;
  }

  stillOpen(): Record<string, number> {
    return { workersRunning: this.running };
  }

  private buildAdmin(): FastifyInstance {
    const ctx: PluginContext = {
      config: this.current,
      metrics: this.metrics,
      log: this.log,
      shared: <T>(_key: string, create: () => T) => create(),
      local: <T>(_key: string, create: () => T) => create(),
      addResource: (r) => this.resources.push(r),
      addRuntimeResource: (r) => this.resources.push(r),
      addReadinessCheck: () => undefined,
      sharedBuckets: null,
    };
    const all = <T>(req: Call): Promise<T[]> => Promise.all(this.handles.map((h) => h.call(req) as Promise<T>));
    const admin = buildAdminServer({
      logger: this.log,
      registry: this.metrics.registry,
      checks: () => [],
      readinessStates: () => this.readiness(),
      scrape: () => this.scrape(),
      isDraining: () => this.draining,
      config: () => this.current,
      // Pools, breakers and in-flight counts are each worker's: the first worker's view (the metrics have every worker's).
      upstreams: () => this.handles[0].call({ op: 'upstreams' }),
      routeTraffic: () => this.handles[0].call({ op: 'route-traffic' }) as Promise<Map<string, { split: unknown; mirror: unknown }>>,
      reload: (actor) => this.reloadFromSource(actor),
      info: async () => ({ ...((await this.handles[0].call({ op: 'info' })) as Record<string, unknown>), workers: this.count }),
      logLevel: () => this.log.level,
      setLogLevel: (level) => {
        this.log.level = level;
        void all({ op: 'log-level', level }).catch(() => undefined);
      },
      targetAction: async (upstream, target, action) => {
        const results = await all({ op: 'target', upstream, target, action });
        return results.includes(null) ? null : results[0];
      },
    });
    // The API key store lives in the configuration or in Redis, never in a worker: the main thread reaches it itself.
    const keyStore = keyStoreFor(ctx);
    registerKeyRoutes(admin, { config: () => this.current, store: () => keyStore });
    // Every worker has its own response cache: a purge bumps the generations of each, and succeeds when all did.
    registerCacheRoutes(admin, {
      config: () => this.current,
      store: () =>
        this.current.routes.some((r) => r.cache !== undefined)
          ? { cacheBump: async (clock, keys) => (await all<boolean | null>({ op: 'purge', clock, keys })).every((ok) => ok !== false) }
          : null,
    });
    return admin;
  }

  private async scrape(): Promise<string> {
    const own = await this.metrics.registry.getMetricsAsJSON();
    const workers = await Promise.all(
      this.handles.filter((h) => h.listening).map((h) => (h.call({ op: 'metrics' }) as Promise<Metrics>).catch(() => null)),
    );
    const merged = AggregatorRegistry.aggregate([own, ...workers.filter((w): w is Metrics => w !== null)] as never);
    return merged.metrics();
  }

  /** Each check merged over the workers (up only where up in all), after one check that every worker listens. */
  private async readiness(): Promise<CheckReport[]> {
    const up = this.handles.filter((h) => h.listening);
    const reports: CheckReport[] = [{ name: 'workers', state: up.length === this.count, required: true }];
    const all = await Promise.all(up.map((h) => (h.call({ op: 'ready' }) as Promise<CheckReport[]>).catch(() => null)));
    const merged = new Map<string, CheckReport>();
    for (const worker of all) {
      if (worker === null) {
        reports[0].state = false;
        continue;
      }
      for (const r of worker) {
        const m = merged.get(r.name);
        if (m === undefined) merged.set(r.name, { ...r });
        else {
          m.state = worse(m.state, r.state);
          m.required ||= r.required;
        }
      }
    }
    return [...reports, ...merged.values()];
  }

  private spawn(index: number): WorkerHandle {
    const data: WorkerData = { index, config: this.current, buckets: this.buckets, ...this.ports };
    const handle = new WorkerHandle(index, data);
    this.handles[index] = handle;
    handle.worker.on('error', (err) => this.log.error({ err, worker: index }, 'worker thread failed'));
    void handle.exit.then((code) => {
      if (this.draining || this.handles[index] !== handle) return;
      // Only a worker that was serving is replaced: one that cannot start fails the start instead.
      if (!handle.served) return;
      this.restarts.inc();
      this.log.error({ worker: index, code }, 'worker thread exited; starting a replacement');
      setTimeout(() => {
        if (this.draining) return;
        const next = this.spawn(index);
        next.started.then(
          () => this.log.info({ worker: index }, 'replacement worker listening'),
          (err: unknown) => this.log.error({ err, worker: index }, 'replacement worker failed to start'),
        );
      }, RESTART_DELAY_MS).unref();
    });
    return handle;
  }

  /**
   * Starts the first worker (it binds listen.port, which may be 0), then the others on the ports it
   * got, then the admin listener.
   */
  async listen(): Promise<{ port: number; tlsPort: number | null; adminPort: number | null }> {
    for (const r of this.resources) await r.init?.();
    const first = await this.spawn(0).started;
    this.ports = { port: first.port, ...(first.tlsPort === null ? {} : { tlsPort: first.tlsPort }) };
    await Promise.all(Array.from({ length: this.count - 1 }, (_, i) => this.spawn(i + 1).started));
    let adminPort: number | null = null;
    if (this.admin) {
      await this.admin.listen({ host: this.current.admin.host, port: this.current.admin.port });
      adminPort = (this.admin.server.address() as AddressInfo).port;
    }
    this.watch();
    return { port: first.port, tlsPort: first.tlsPort, adminPort };
  }

  private watch(): void {
    if (!this.configFile || !this.current.reload.watch) return;
    const wanted = new Set([this.configFile, ...tlsFiles(this.current)]);
    for (const f of this.watched) {
      if (!wanted.has(f)) {
        unwatchFile(f);
        this.watched.delete(f);
      }
    }
    for (const f of wanted) {
      if (this.watched.has(f)) continue;
      this.watched.add(f);
      watchFile(f, { interval: this.current.reload.watchIntervalMs, persistent: false }, (cur, prev) => {
        if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
        this.reloadFromSource(f === this.configFile ? 'file-watch' : 'certificate-watch').catch(() => undefined);
      });
    }
  }

  /** Reads the configuration file, validates it once, and reloads every worker with it. */
  reloadFromSource(actor: string): Promise<ReloadResult> {
    if (!this.configFile) return Promise.reject(new Error('this gateway was not started from a configuration file'));
    let next: Readonly<GatewayConfig>;
    try {
      next = loadConfigFile(this.configFile);
    } catch (err) {
      const errors = err instanceof ConfigError ? err.problems.map(formatProblem) : [(err as Error).message];
      this.log.warn({ audit: true, actor, action: 'reload', result: 'rejected', errors }, 'reload rejected; the old configuration keeps serving');
      return Promise.reject(err);
    }
    return this.reload(next, actor);
  }

  /** Sends the configuration to every worker (one at a time per reload, reloads in order); resolves with the first worker's result. */
  reload(next: Readonly<GatewayConfig>, actor = 'unknown'): Promise<ReloadResult> {
    const run = this.reloading.then(async () => {
      if (this.closed || this.draining) throw new Error('the gateway is shutting down');
      const previous = this.current;
      const results = await Promise.allSettled(this.handles.map((h) => h.call({ op: 'reload', config: next, actor }) as Promise<ReloadResult>));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed && results.every((r) => r.status === 'rejected')) throw failed.reason;
      // Replacements start with what the workers now serve.
      this.current = next;
      if (this.log.level !== this.startLogLevel) this.log.level = this.startLogLevel;
      this.watch();
      if (failed) {
        this.log.error({ audit: true, actor, action: 'reload', result: 'partial', err: failed.reason }, 'reload failed on some workers');
        throw failed.reason;
      }
      const first = (results[0] as PromiseFulfilledResult<ReloadResult>).value;
      return { ...first, routes: diffRoutes(previous.routes, next.routes), restartRequired: restartOnlyChanges(previous, next) };
    });
    this.reloading = run.catch(() => undefined);
    return run;
  }

  /** Readiness fails at once; every worker drains (drainDelayMs, then its connections end); resolves once all have exited. */
  shutdown(): Promise<void> {
    this.draining = true;
    this.closed ??= (async () => {
      for (const f of this.watched) unwatchFile(f);
      this.log.info({ drainDelayMs: this.current.shutdown.drainDelayMs, workers: this.running }, 'draining');
      await Promise.all(
        this.handles.map(async (h) => {
          await h.call({ op: 'drain' }).catch(() => undefined);
          await h.exit;
        }),
      );
      await this.reloading;
      await Promise.all([this.admin?.close(), ...this.resources.map((r) => r.close())]);
    })();
    return this.closed;
  }

  /** Ends every worker at once, no drain (tests, and the shutdown timeout). */
  async close(): Promise<void> {
    this.draining = true;
    await Promise.all(this.handles.map((h) => h.worker.terminate()));
    await Promise.all([this.admin?.close(), ...this.resources.map((r) => r.close())]);
  }
}

function worse(a: CheckState, b: CheckState): CheckState {
  if (a === false || b === false) return false;
  return a === 'warming' || b === 'warming' ? 'warming' : true;
}
