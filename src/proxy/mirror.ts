import type { RouteMirrorConfig } from '../config/schema';
import type { RequestContext } from '../context';
import type { CounterCell, CounterFamily } from '../observability/fast-metrics';
import type { Upstream } from './upstreams';

/** Marks a mirrored copy, so that a gateway receiving it never mirrors it again. */
export const MIRROR_HEADER = 'x-gateway-mirror';

const RESULTS = ['2xx', '3xx', '4xx', '5xx', 'error', 'dropped', 'skipped'] as const;
type Result = (typeof RESULTS)[number];

/**
 * Copies a sampled share of a route's requests to a shadow upstream, fire and forget: the copy is
 * sent after the client's request is on its way, its answer is read and discarded, and nothing it
 * does reaches the client. Copies beyond maxConcurrent are dropped rather than queued. Requests
 * with a body are not copied (the body streams once, to the real upstream).
 */
export class Mirror {
  private inFlight = 0;
  private cursor = 0;
  private readonly counts: Record<Result, CounterCell>;
  private readonly sampleRatio: number;
  private readonly maxConcurrent: number;
  private readonly timeoutMs: number;

  constructor(
    cfg: RouteMirrorConfig,
    private readonly upstream: Upstream,
    counter: CounterFamily,
    route: string,
  ) {
    this.sampleRatio = cfg.sampleRatio;
    this.maxConcurrent = cfg.maxConcurrent;
    this.timeoutMs = upstream.config.timeouts.requestMs;
    const counts = {} as Record<Result, CounterCell>;
    for (const r of RESULTS) counts[r] = counter.child(route, upstream.name, r);
    this.counts = counts;
  }

  /** Sends a copy of the request of `ctx` (its forwarded `headers` and upstream `path`) when sampled. */
  send(ctx: RequestContext, headers: readonly string[], path: string, hasBody: boolean): void {
    if (this.sampleRatio < 1 && Math.random() >= this.sampleRatio) return;
    if (ctx.req.headers[MIRROR_HEADER] !== undefined) return;
    if (hasBody) return this.counts.skipped.inc();
    if (this.inFlight >= this.maxConcurrent) return this.counts.dropped.inc();
    const targets = this.upstream.targets;
    let target = null;
    for (let i = 0; i < targets.length && target === null; i++) {
      const t = targets[(this.cursor + i) % targets.length];
      if (t.state.routable) target = t;
    }
    if (target === null) return this.counts.error.inc();
    this.cursor = (this.cursor + 1) % targets.length;
    this.inFlight++;
    target.pool
      .request({
        path: target.basePath + path,
        method: ctx.req.method as 'GET',
        headers: [...headers, MIRROR_HEADER, '1'],
        signal: AbortSignal.timeout(this.timeoutMs),
      })
      .then(
        async (res) => {
          await res.body.dump();
          this.counts[`${Math.min(5, Math.max(2, Math.floor(res.statusCode / 100)))}xx` as Result].inc();
        },
        () => this.counts.error.inc(),
      )
      .catch(() => this.counts.error.inc())
      .finally(() => this.inFlight--);
  }
}
