import { readFileSync } from 'node:fs';
import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/schema';

/** One backend address with its own connection pool. */
export class Target {
  readonly url: string;
  readonly origin: string;
  /** Path of the target URL without its trailing slash ('' for the root). */
  readonly basePath: string;
  /** Host header sent upstream unless the route preserves the client's. */
  readonly host: string;
  readonly pool: Pool;

  constructor(url: string, cfg: UpstreamConfig) {
    const u = new URL(url);
    this.url = url;
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.host = u.host;
    const { pool, timeouts, tls } = cfg;
    this.pool = new Pool(u.origin, {
      connections: pool.connections,
      pipelining: pool.pipelining,
      keepAliveTimeout: pool.keepAliveTimeoutMs,
      keepAliveMaxTimeout: pool.keepAliveMaxTimeoutMs,
      headersTimeout: timeouts.headersMs,
      bodyTimeout: timeouts.bodyMs,
      connect: {
        timeout: timeouts.connectMs,
        rejectUnauthorized: tls.rejectUnauthorized,
        ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
        ...(tls.servername ? { servername: tls.servername } : {}),
      },
    });
  }
}

/** A named backend: its targets, balanced round-robin. */
export class Upstream {
  readonly name: string;
  readonly targets: readonly Target[];
  readonly config: UpstreamConfig;
  private cursor = 0;

  constructor(name: string, cfg: UpstreamConfig) {
    this.name = name;
    this.config = cfg;
    this.targets = cfg.targets.map((t) => new Target(t, cfg));
  }

  next(): Target {
    const t = this.targets[this.cursor];
    this.cursor = this.cursor + 1 === this.targets.length ? 0 : this.cursor + 1;
    return t;
  }

  async close(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.pool.close()));
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
  constructor(upstreams: Readonly<Record<string, UpstreamConfig>>, previous?: UpstreamRegistry) {
    for (const [name, cfg] of Object.entries(upstreams)) {
      const fingerprint = canonical(cfg);
      const old = previous?.byName.get(name);
      if (old && previous!.fingerprints.get(name) === fingerprint) {
        this.byName.set(name, old);
        this.changes.kept.push(name);
      } else {
        this.byName.set(name, new Upstream(name, cfg));
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
