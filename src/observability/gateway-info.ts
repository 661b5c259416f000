import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge } from 'prom-client';
import type { GatewayConfig } from '../config/schema';
import type { GatewayMetrics } from './metrics';

/** The version in package.json: two levels up from dist/src/observability, one from src/observability. */
export function packageVersion(): string {
  for (const dir of [join(__dirname, '..', '..'), join(__dirname, '..', '..', '..')]) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'api-gateway' && pkg.version) return pkg.version;
    } catch {
      // Not in this directory: try the next.
    }
  }
  return 'unknown';
}

/**
 * A short fingerprint of a configuration as loaded (defaults filled, ${ENV} substituted): equal
 * hashes on two replicas mean they serve the same configuration. Twelve hex digits of SHA-256
 * cannot be turned back into the secrets the configuration holds.
 */
export function configHash(config: Readonly<GatewayConfig>): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 12);
}

export type ReloadOutcome = 'applied' | 'rejected' | 'failed';

/**
 * What the gateway is and runs: build, start time, configuration hash and reload results, for
 * /metrics and GET /admin. Open client connections are counted by the listener when scraped
 * (server.getConnections), so they cost nothing per connection.
 */
export class GatewayInfo {
  readonly version = packageVersion();
  readonly startedAt = Date.now();
  private hash = '';
  private loadedAt = Date.now();
  private readonly configGauge: Gauge<string>;
  private readonly reloads: Counter<string>;

  constructor(metrics: GatewayMetrics, config: Readonly<GatewayConfig>, connections: () => Promise<number>) {
    const registers = [metrics.registry];
    new Gauge({
      name: 'gateway_build_info',
      help: 'Always 1; the labels say which gateway version runs on which Node.js.',
      labelNames: ['version', 'node'],
      registers,
      // Several workers of one process: one build, one series.
      aggregator: 'first',
    }).set({ version: this.version, node: process.version }, 1);
    this.configGauge = new Gauge({ name: 'gateway_config_info', help: 'Always 1; the label is the hash of the configuration serving requests.', labelNames: ['hash'], registers, aggregator: 'first' });
    this.reloads = new Counter({
      name: 'gateway_config_reloads_total',
      help: 'Configuration reloads, by result: applied, rejected (invalid file), failed (the new configuration could not start).',
      labelNames: ['result'],
      registers,
      // Every worker applies each reload of the process once.
      aggregator: 'max',
    });
    for (const result of ['applied', 'rejected', 'failed']) this.reloads.inc({ result }, 0);
    new Gauge({
      name: 'gateway_open_connections',
      help: 'Client connections open on the public listener.',
      registers,
      async collect() {
        this.set(await connections());
      },
    });
    this.loaded(config);
  }

  /** The configuration now serving requests. */
  loaded(config: Readonly<GatewayConfig>): void {
    this.hash = configHash(config);
    this.loadedAt = Date.now();
    this.configGauge.reset();
    this.configGauge.set({ hash: this.hash }, 1);
  }

  reloaded(result: ReloadOutcome): void {
    this.reloads.inc({ result });
  }

  /** GET /admin. */
  describe(): Record<string, unknown> {
    return {
      version: this.version,
      node: process.version,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      config: { hash: this.hash, loadedAt: new Date(this.loadedAt).toISOString() },
    };
  }
}
