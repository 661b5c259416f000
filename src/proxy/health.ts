import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { connect, type IncomingHttpHeaders } from 'node:http2';
import { Client } from 'undici';
import type { UpstreamConfig } from '../config/schema';
import type { Resource } from '../plugins/types';
import type { ResilienceEvents } from './target-state';
import type { Target, Upstream, UpstreamRegistry } from './upstreams';

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
      if (cfg.grpcService !== undefined) {
        ({ ok, detail } = await grpcHealthCheck(this.target, cfg.grpcService, ac.signal));
      } else {
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
      }
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

/** grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING. */
const SERVING = 1;

/**
 * One grpc.health.v1.Health/Check call on a connection of its own (closed after it, like the HTTP
 * probes'). The request and response are tiny protobuf messages written by hand:
 * HealthCheckRequest { string service = 1 } and HealthCheckResponse { ServingStatus status = 1 }.
 */
function grpcHealthCheck(target: Target, service: string, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  const name = Buffer.from(service, 'utf8');
  const message = name.length > 0 ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const { timeout: _timeout, ...tls } = target.connectOptions;
  return new Promise((resolve, reject) => {
    const session = connect(target.origin, { ...(tls as object), ALPNProtocols: ['h2'] });
    const stop = (): void => {
      session.destroy();
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal.addEventListener('abort', stop, { once: true });
    session.on('error', (err) => {
      signal.removeEventListener('abort', stop);
      session.destroy();
      reject(err);
    });
    const stream = session.request({
      ':method': 'POST',
      ':path': `${target.basePath}/grpc.health.v1.Health/Check`,
      'content-type': 'application/grpc',
      te: 'trailers',
      'user-agent': 'api-gateway-health-check',
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    const note = (h: IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
    };
    stream.on('response', note);
    stream.on('trailers', note);
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.on('close', () => {
      signal.removeEventListener('abort', stop);
      session.close();
      const body = Buffer.concat(chunks);
      // Field 1 (varint) right after the 5-byte message prefix; a missing field is the default, UNKNOWN (0).
      const serving = body.length >= 7 && body[5] === 0x08 ? body[6] : 0;
      if (grpcStatus === undefined) return resolve({ ok: false, detail: 'no grpc-status in the answer' });
      resolve({ ok: grpcStatus === '0' && serving === SERVING, detail: `grpc-status ${grpcStatus}, serving status ${serving}` });
    });
    stream.end(frame);
  });
}

/**
 * Active health checks of every upstream that enables them: a Resource of the gateway, so the
 * probes start with it and stop when it closes.
 */
export class HealthChecker implements Resource {
  readonly name = 'upstream-health-checks';
  /** Probes by upstream and target: a reload keeps the probes of the upstreams it keeps. */
  private readonly probes = new Map<Upstream, Map<Target, TargetProbe>>();
  private started = false;

  constructor(
    registry: UpstreamRegistry,
    private readonly events: ResilienceEvents,
    private readonly log: FastifyBaseLogger,
  ) {
    this.add(registry);
  }

  private add(registry: UpstreamRegistry): void {
    for (const up of registry.all()) {
      const cfg = up.config.healthCheck;
      if (!cfg.enabled || this.probes.has(up)) continue;
      const ok = statusMatcher(cfg.expectedStatuses);
      const probes = new Map(up.targets.map((t) => [t, new TargetProbe(up, t, ok, this.events)]));
      this.probes.set(up, probes);
      if (this.started) for (const p of probes.values()) p.start();
      // Targets found by DNS are probed from the moment they join; removed ones are no longer probed.
      up.watchTargets((added, removed) => {
        if (this.probes.get(up) !== probes) return;
        for (const t of removed) {
          void probes.get(t)?.stop();
          probes.delete(t);
        }
        for (const t of added) {
          const p = new TargetProbe(up, t, ok, this.events);
          probes.set(t, p);
          if (this.started) p.start();
        }
      });
      this.log.debug({ upstream: up.name, path: cfg.path, intervalMs: cfg.intervalMs }, 'active health checks on');
    }
  }

  /** After a reload: probe the upstreams that are new, stop probing the ones that are gone. */
  async sync(registry: UpstreamRegistry): Promise<void> {
    const current = new Set(registry.all());
    const stopping: Promise<void>[] = [];
    for (const [up, probes] of this.probes) {
      if (current.has(up)) continue;
      this.probes.delete(up);
      for (const p of probes.values()) stopping.push(p.stop());
    }
    this.add(registry);
    await Promise.all(stopping);
  }

  async init(): Promise<void> {
    this.started = true;
    for (const probes of this.probes.values()) for (const p of probes.values()) p.start();
  }

  async close(): Promise<void> {
    await Promise.all([...this.probes.values()].flatMap((probes) => [...probes.values()]).map((p) => p.stop()));
  }
}
