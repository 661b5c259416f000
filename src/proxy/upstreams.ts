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

export class UpstreamRegistry {
  private readonly byName = new Map<string, Upstream>();

  constructor(upstreams: Readonly<Record<string, UpstreamConfig>>) {
    for (const [name, cfg] of Object.entries(upstreams)) this.byName.set(name, new Upstream(name, cfg));
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
