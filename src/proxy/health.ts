import { performance } from 'node:perf_hooks';
import { Client } from 'undici';
import type { UpstreamConfig } from '../config/schema';
import type { ResilienceEvents } from './target-state';
import type { Target, Upstream } from './upstreams';

/** Compiles expectedStatuses (codes and classes like 2xx) into a lookup by status. */
function statusMatcher(expected: UpstreamConfig['healthCheck']['expectedStatuses']): Uint8Array {
  const ok = new Uint8Array(600);
  for (const e of expected) {
    if (typeof e === 'number') ok[e] = 1;
    else ok.fill(1, Number(e[0]) * 100, Number(e[0]) * 100 + 100);
  }
  return ok;
}

/**
 * Probes one target on a timer: GET healthCheck.path on a connection of its own (closed after
 * each probe, so a probe neither waits behind traffic in the pool nor trips over a stale
 * keep-alive socket). The next probe is scheduled when one ends, so probes never pile up.
 */
class TargetProbe {
  private timer: NodeJS.Timeout | null = null;
  private running: AbortController | null = null;
  private stopped = false;
  private readonly client: Client;
  private readonly cfg: UpstreamConfig['healthCheck'];
  private readonly path: string;

  constructor(
    private readonly upstream: Upstream,
    private readonly target: Target,
    private readonly ok: Uint8Array,
    private readonly events: ResilienceEvents,
  ) {
    this.cfg = upstream.config.healthCheck;
    this.path = target.basePath + this.cfg.path;
    this.client = new Client(target.origin, {
      connect: target.connectOptions,
      headersTimeout: this.cfg.timeoutMs,
      bodyTimeout: this.cfg.timeoutMs,
    });
  }

  start(): void {
    this.timer = setTimeout(() => void this.run(), 0);
  }

  private async run(): Promise<void> {
    this.timer = null;
    const { cfg } = this;
    const ac = new AbortController();
    this.running = ac;
    const deadline = setTimeout(() => ac.abort(new Error(`no answer within ${cfg.timeoutMs} ms`)), cfg.timeoutMs);
    let ok = false;
    let detail: string;
    try {
      const res = await this.client.request({
        path: this.path,
        method: 'GET',
        headers: { 'user-agent': 'api-gateway-health-check' },
        signal: ac.signal,
        reset: true,
      });
      await res.body.dump();
      ok = this.ok[res.statusCode] === 1;
      detail = `status ${res.statusCode}`;
    } catch (err) {
      const e = err as { code?: string; message?: string };
      detail = e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
    } finally {
      clearTimeout(deadline);
      this.running = null;
    }
    if (this.stopped) return;
    this.target.state.reportCheck(ok, detail, cfg, performance.now());
    this.events.healthChecked(this.upstream.name, this.target.url, ok);
    this.timer = setTimeout(() => void this.run(), cfg.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.running?.abort(new Error('gateway closing'));
    await this.client.destroy();
  }
}

/**
 * Active health checks of one upstream: a probe per target. The upstream owns them, so they live
 * exactly as long as its pools: started when the gateway listens (or when a reload brings the
 * upstream in), stopped when the upstream closes (gateway close, or a reload retiring it).
 */
export class UpstreamHealthChecks {
  private readonly probes: TargetProbe[];
  private started = false;

  constructor(upstream: Upstream, events: ResilienceEvents) {
    const ok = statusMatcher(upstream.config.healthCheck.expectedStatuses);
    this.probes = upstream.targets.map((t) => new TargetProbe(upstream, t, ok, events));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    for (const p of this.probes) p.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.probes.map((p) => p.stop()));
  }
}
