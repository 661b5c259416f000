import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { Pool, buildConnector, errors } from 'undici';
import type { UpstreamConfig } from '../config/schema';
import { Deadlines } from './deadlines';
import { HeaderStrings } from './header-strings';
import { responseHeaderKind } from './headers';
import { RetryPolicy, watchSocket } from './retry';
import { NO_EVENTS, TargetState, type ResilienceEvents, type Ticket } from './target-state';

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

  constructor(url: string, cfg: UpstreamConfig, upstream: string, events: ResilienceEvents) {
    const u = new URL(url);
    this.url = url;
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.state = new TargetState(upstream, url, cfg, events);
    const { pool, timeouts, tls } = cfg;
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
}

/** undici's value for a timeout the gateway enforces itself: only reached if ours failed to fire. */
function backstop(ms: number): number {
  return ms * 2 + 1000;
}

function connectTimedOut(socket: Socket, host: string, ms: number): void {
  socket.destroy(new errors.ConnectTimeoutError(`connecting to ${host} took longer than ${ms} ms`));
}

/** A named backend: its targets, balanced round-robin over those that take traffic. */
export class Upstream {
  readonly name: string;
  readonly targets: readonly Target[];
  readonly config: UpstreamConfig;
  readonly retry: RetryPolicy;
  readonly events: ResilienceEvents;
  /** Overall deadlines (timeouts.requestMs) of the requests relayed to this upstream. */
  readonly deadlines = new Deadlines();
  /** timeouts.headersMs and bodyMs, enforced by the relay on `deadlines`. */
  readonly headersMs: number;
  readonly bodyMs: number;
  private cursor = 0;

  constructor(name: string, cfg: UpstreamConfig, events: ResilienceEvents = NO_EVENTS) {
    this.name = name;
    this.config = cfg;
    this.events = events;
    this.retry = new RetryPolicy(cfg.retries);
    this.headersMs = cfg.timeouts.headersMs;
    this.bodyMs = cfg.timeouts.bodyMs;
    this.targets = cfg.targets.map((t) => new Target(t, cfg, name, events));
  }

  /**
   * The next target in the rotation that takes traffic, preferring one other than `avoid` (the
   * target a retry comes from); null when none does. `ticket.probe` tells whether the request was
   * let through a half-open breaker.
   */
  pick(now: number, avoid: Target | null, ticket: Ticket): Target | null {
    const targets = this.targets;
    const n = targets.length;
    for (let i = 0; i < n; i++) {
      const t = targets[this.cursor];
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1;
      if (t !== avoid && t.state.admit(now, ticket)) return t;
    }
    return avoid !== null && avoid.state.admit(now, ticket) ? avoid : null;
  }

  /** Seconds a client should wait before trying again when no target takes traffic. */
  retryAfterSeconds(now: number): number {
    const interval = this.config.healthCheck.intervalMs;
    let ms = Number.POSITIVE_INFINITY;
    for (const t of this.targets) ms = Math.min(ms, t.state.msUntilAvailable(now, interval));
    return Math.max(1, Math.ceil(ms / 1000));
  }

  async close(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.pool.close()));
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
