import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import { Pool, buildConnector, errors } from 'undici';
import type { UpstreamConfig } from '../config/schema';
import { H2Channel } from '../grpc/channel';
import { Deadlines } from './deadlines';
import { HeaderStrings } from './header-strings';
import { responseHeaderKind } from './headers';
import { RetryPolicy, watchSocket } from './retry';
import { createBalancer, type Balancer, type PickRequest } from './balance';
import { NO_EVENTS, TargetState, type ResilienceEvents } from './target-state';

/** A target as configured or discovered: its URL and its share of the traffic. */
export interface TargetSpec {
  url: string;
  weight: number;
}

/** Told when discovery changes the targets of an upstream (the health checker probes the new ones). */
export type TargetsListener = (added: readonly Target[], removed: readonly Target[]) => void;

/** One backend address with its own connection pool. */
export class Target {
  readonly url: string;
  readonly origin: string;
  /** Path of the target URL without its trailing slash ('' for the root). */
  readonly basePath: string;
  readonly pool: Pool;
  /** TCP/TLS options of the pool, for the health checker's own connections. */
  readonly connectOptions: buildConnector.BuildOptions;
  /** Breaker, health and load of this target: what decides whether it takes traffic. */
  readonly state: TargetState;
  /** Strings of the response header bytes this target sent before (the relay's, on the hot path). */
  readonly headerStrings = new HeaderStrings(responseHeaderKind);

  /** Share of the traffic relative to the other targets (balancers read it; discovery may change it). */
  weight: number;
  /** Where the target comes from: the configuration, or DNS discovery. */
  readonly source: 'static' | 'dns';
  private channel: H2Channel | null = null;
  private readonly connectMs: number;
  private readonly idleMs: number;

  constructor(url: string, cfg: UpstreamConfig, upstream: string, events: ResilienceEvents, weight = 1, source: 'static' | 'dns' = 'static') {
    const u = new URL(url);
    this.url = url;
    this.weight = weight;
    this.source = source;
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.state = new TargetState(upstream, url, cfg, events);
    const { pool, timeouts, tls } = cfg;
    this.connectMs = timeouts.connectMs;
    this.idleMs = pool.keepAliveTimeoutMs;
    this.connectOptions = {
      timeout: timeouts.connectMs,
      rejectUnauthorized: tls.rejectUnauthorized,
      ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
      ...(tls.certFile && tls.keyFile ? { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } : {}),
      ...(tls.servername ? { servername: tls.servername } : {}),
    };
    // undici's timers are coarse (a 300 ms headers timeout fired after 0.6-1 s): the connect timeout
    // is a timer of ours per connection, the headers and body timeouts are the relay's (on the
    // upstream's deadline wheel). undici's own stay as a backstop, well past ours.
    const connect = buildConnector({ ...this.connectOptions, timeout: backstop(timeouts.connectMs) });
    const connectMs = timeouts.connectMs;
    const host = u.host;
    this.pool = new Pool(u.origin, {
      connections: pool.connections,
      pipelining: pool.pipelining,
      keepAliveTimeout: pool.keepAliveTimeoutMs,
      keepAliveMaxTimeout: pool.keepAliveMaxTimeoutMs,
      headersTimeout: backstop(timeouts.headersMs),
      bodyTimeout: backstop(timeouts.bodyMs),
      connect: (opts, callback) => {
        // undici's connector returns the socket it opens (its typings say void).
        const socket = connect(opts, (err, connected) => {
          clearTimeout(timer);
          if (err !== null) return callback(err, null);
          watchSocket(connected as Socket);
          callback(null, connected);
        }) as unknown as Socket;
        const timer = setTimeout(connectTimedOut, connectMs, socket, host, connectMs);
      },
    });
  }

  /** The HTTP/2 connection gRPC calls to this target share, opened on first use. */
  h2(): H2Channel {
    if (this.channel === null) {
      // The TLS options of the pool, but ALPN h2; undici's connect timeout is not a socket timeout here.
      const { timeout: _timeout, ...tls } = this.connectOptions;
      this.channel = new H2Channel(this.origin, { ...(tls as object), ALPNProtocols: ['h2'] }, this.connectMs, this.idleMs);
    }
    return this.channel;
  }

  /** Lets requests in flight finish, then closes the pool and the HTTP/2 connection. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), this.channel?.close()]);
  }
}


/** undici's value for a timeout the gateway enforces itself: only reached if ours failed to fire. */
function backstop(ms: number): number {
  return ms * 2 + 1000;
}

function connectTimedOut(socket: Socket, host: string, ms: number): void {
  socket.destroy(new errors.ConnectTimeoutError(`connecting to ${host} took longer than ${ms} ms`));
}

/** A target entry of the config as a spec (ajv does not fill defaults inside a union: the weight may be missing). */
export function targetSpec(entry: UpstreamConfig['targets'][number]): TargetSpec {
  return typeof entry === 'string' ? { url: entry, weight: 1 } : { url: entry.url, weight: entry.weight ?? 1 };
}

/**
 * A named backend: its targets (configured, or found by DNS discovery) and the balancer that picks
 * among those that take traffic.
 */
export class Upstream {
  readonly name: string;
  /** Replaced as a whole (never changed in place) when discovery changes the targets. */
  targets: readonly Target[];
  readonly config: UpstreamConfig;
  readonly retry: RetryPolicy;
  readonly events: ResilienceEvents;
  /** Overall deadlines (timeouts.requestMs) of the requests relayed to this upstream. */
  readonly deadlines = new Deadlines();
  /** timeouts.headersMs and bodyMs, enforced by the relay on `deadlines`. */
  readonly headersMs: number;
  readonly bodyMs: number;
  /** Panic mode is on: too few targets are routable, so every target takes traffic. */
  panicking = false;
  private readonly balancer: Balancer;
  private readonly minHealthyPercent: number;
  private readonly listeners: TargetsListener[] = [];
  /** Pools of targets discovery removed, closing once their requests are done. */
  private readonly draining = new Set<Promise<void>>();

  constructor(name: string, cfg: UpstreamConfig, events: ResilienceEvents = NO_EVENTS) {
    this.name = name;
    this.config = cfg;
    this.events = events;
    this.retry = new RetryPolicy(cfg.retries);
    this.headersMs = cfg.timeouts.headersMs;
    this.bodyMs = cfg.timeouts.bodyMs;
    const specs = cfg.targets.map(targetSpec);
    // With discovery, names are resolved by the discovery resource; literal addresses are targets already.
    const initial = cfg.discovery.type === 'static' ? specs : specs.filter((s) => isIP(new URL(s.url).hostname.replace(/^\[|\]$/g, '')) !== 0);
    this.targets = initial.map((s) => new Target(s.url, cfg, name, events, s.weight));
    this.minHealthyPercent = cfg.minHealthyPercent;
    const weighted = cfg.discovery.type === 'srv' || specs.some((s) => s.weight !== specs[0].weight);
    this.balancer = createBalancer(cfg, this.targets, weighted);
  }

  /**
   * The target the balancer picks among those that take traffic, preferring one other than `avoid`
   * (the target a retry comes from); null when none does. `req.probe` tells whether the request was
   * let through a half-open breaker.
   */
  pick(now: number, avoid: Target | null, req: PickRequest): Target | null {
    return this.balancer.pick(now, avoid, req, this.minHealthyPercent !== 0 && this.panic());
  }

  /** Whether fewer than minHealthyPercent of the targets are routable; logs and counts each change. */
  private panic(): boolean {
    const targets = this.targets;
    let routable = 0;
    for (let i = 0; i < targets.length; i++) if (targets[i].state.routable) routable++;
    const panic = targets.length > 0 && routable * 100 < this.minHealthyPercent * targets.length;
    if (panic !== this.panicking) {
      this.panicking = panic;
      this.events.panicChanged(this.name, panic, routable, targets.length);
    }
    return panic;
  }

  /** Calls `fn` whenever discovery changes the targets. */
  watchTargets(fn: TargetsListener): void {
    this.listeners.push(fn);
  }

  /**
   * Makes `specs` the targets (DNS discovery). Targets whose URL stays keep their pool and state; new
   * ones join (slow start, and the health checks first when they are on) unless this is the first
   * resolution, which is the upstream's start; removed ones leave the rotation at once and close
   * their pool once their requests in flight are done.
   */
  setTargets(specs: readonly TargetSpec[], first: boolean): void {
    const old = new Map(this.targets.map((t) => [t.url, t]));
    const next: Target[] = [];
    const added: Target[] = [];
    let changed = false;
    for (const s of specs) {
      let t = old.get(s.url);
      if (t === undefined) {
        t = new Target(s.url, this.config, this.name, this.events, s.weight, 'dns');
        if (!first) t.state.joining(this.config.healthCheck.enabled);
        added.push(t);
      } else {
        old.delete(s.url);
        if (t.weight !== s.weight) changed = true;
        t.weight = s.weight;
      }
      next.push(t);
    }
    const removed = [...old.values()];
    if (added.length === 0 && removed.length === 0 && !changed) return;
    this.targets = next;
    this.balancer.reset(next);
    for (const t of removed) {
      const closing = t.close().catch(() => undefined);
      this.draining.add(closing);
      void closing.then(() => this.draining.delete(closing));
    }
    for (const fn of this.listeners) fn(added, removed);
    this.events.targetsChanged(
      this.name,
      added.map((t) => t.url),
      removed.map((t) => t.url),
    );
  }

  /** Seconds a client should wait before trying again when no target takes traffic. */
  retryAfterSeconds(now: number): number {
    const interval = this.config.healthCheck.intervalMs;
    // No target at all (a name that resolved to nothing yet): the next resolution may bring some.
    let ms = this.targets.length === 0 ? this.config.discovery.minTtlMs : Number.POSITIVE_INFINITY;
    for (const t of this.targets) ms = Math.min(ms, t.state.msUntilAvailable(now, interval));
    return Math.max(1, Math.ceil(ms / 1000));
  }

  async close(): Promise<void> {
    await Promise.all([...this.targets.map((t) => t.close()), ...this.draining]);
    this.deadlines.close();
  }
}

/** JSON with object keys sorted, so two equal configs compare equal whatever their key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The TLS files of an upstream, so that a rotated certificate behind an unchanged path makes a new
 * upstream (new pools for new connections) while the old pools finish their requests and close.
 */
function tlsFileContents(cfg: UpstreamConfig): string {
  const { caFile, certFile, keyFile } = cfg.tls;
  let out = '';
  for (const f of [caFile, certFile, keyFile]) if (f) out += `|${readFileSync(f).toString('base64')}`;
  return out;
}

export interface UpstreamChanges {
  kept: string[];
  created: string[];
  /** Upstreams of the previous registry that the new one no longer uses; close them once requests drain. */
  retired: Upstream[];
}

export class UpstreamRegistry {
  private readonly byName = new Map<string, Upstream>();
  private readonly fingerprints = new Map<string, string>();
  readonly changes: UpstreamChanges = { kept: [], created: [], retired: [] };

  /** Builds the registry for `upstreams`, reusing the pools of `previous` whose config did not change. */
  constructor(upstreams: Readonly<Record<string, UpstreamConfig>>, events: ResilienceEvents = NO_EVENTS, previous?: UpstreamRegistry) {
    for (const [name, cfg] of Object.entries(upstreams)) {
      const fingerprint = canonical(cfg) + tlsFileContents(cfg);
      const old = previous?.byName.get(name);
      if (old && previous!.fingerprints.get(name) === fingerprint) {
        this.byName.set(name, old);
        this.changes.kept.push(name);
      } else {
        this.byName.set(name, new Upstream(name, cfg, events));
        this.changes.created.push(name);
      }
      this.fingerprints.set(name, fingerprint);
    }
    if (previous) {
      for (const [name, up] of previous.byName) if (this.byName.get(name) !== up) this.changes.retired.push(up);
    }
  }

  get(name: string): Upstream {
    const up = this.byName.get(name);
    if (!up) throw new Error(`unknown upstream ${name}`);
    return up;
  }

  all(): IterableIterator<Upstream> {
    return this.byName.values();
  }

  /** Lets in-flight requests finish, then closes every pool. */
  async close(): Promise<void> {
    await Promise.all([...this.byName.values()].map((u) => u.close()));
  }
}
