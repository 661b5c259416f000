import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { RouteMirrorConfig } from '../config/schema';
import type { RequestContext } from '../context';
import type { CounterCell, CounterFamily } from '../observability/fast-metrics';
import type { Target, Upstream } from './upstreams';

/** Marks a mirrored copy, so that a gateway receiving it never mirrors it again. */
export const MIRROR_HEADER = 'x-gateway-mirror';

/**
 * What became of a sampled request: sent, by the class of the shadow's answer; failed (`error`:
 * no answer within the upstream's request timeout, refused, reset); or not sent, by reason
 * (`dropped`: maxConcurrent copies already in flight, `body-too-large`: over maxBodyBytes,
 * `body-incomplete`: the client's body failed or was cut, `no-target`: no shadow target routable).
 */
export const MIRROR_RESULTS = ['2xx', '3xx', '4xx', '5xx', 'error', 'dropped', 'body-too-large', 'body-incomplete', 'no-target'] as const;
export type MirrorResult = (typeof MIRROR_RESULTS)[number];

/** Counts of a mirror's results, for the admin API. */
export type MirrorCounts = Record<MirrorResult, number>;

/**
 * Copies a sampled share of a route's requests to a shadow upstream, fire and forget: nothing the
 * copy does reaches the client, its answer is read and discarded, and copies beyond maxConcurrent
 * are dropped rather than queued. A request body streams to the real upstream as it comes, through
 * a tee that keeps its bytes (up to maxBodyBytes); the copy leaves once the body is complete.
 */
export class Mirror {
  private inFlight = 0;
  private cursor = 0;
  private readonly counts: Record<MirrorResult, CounterCell>;
  readonly sampleRatio: number;
  readonly maxConcurrent: number;
  readonly maxBodyBytes: number;
  private readonly timeoutMs: number;

  constructor(
    cfg: RouteMirrorConfig,
    readonly upstream: Upstream,
    counter: CounterFamily,
    route: string,
  ) {
    this.sampleRatio = cfg.sampleRatio;
    this.maxConcurrent = cfg.maxConcurrent;
    this.maxBodyBytes = cfg.maxBodyBytes;
    this.timeoutMs = upstream.config.timeouts.requestMs;
    const counts = {} as Record<MirrorResult, CounterCell>;
    for (const r of MIRROR_RESULTS) counts[r] = counter.child(route, upstream.name, r);
    this.counts = counts;
  }

  /** Copies in flight now (of this configuration), and the results since the gateway started (the metric's). */
  status(): { inFlight: number; results: MirrorCounts } {
    const results = {} as MirrorCounts;
    for (const r of MIRROR_RESULTS) results[r] = this.counts[r].value;
    return { inFlight: this.inFlight, results };
  }

  /**
   * Sends a copy of the bodiless request of `ctx` (its forwarded `headers` and upstream `path`) when
   * sampled. Called once the real request is on its way.
   */
  send(ctx: RequestContext, headers: readonly string[], path: string): void {
    if (!this.sampled(ctx)) return;
    if (this.inFlight >= this.maxConcurrent) return this.count('dropped');
    this.inFlight++;
    this.dispatch(ctx.req.method!, [...headers, MIRROR_HEADER, '1'], path, null);
  }

  /**
   * For a request with a body: the body the relay sends instead of `body` (a tee keeping the bytes
   * for the copy when the request is sampled and its body may fit, else `body` itself). The copy
   * leaves when the body ended within maxBodyBytes; past them the kept bytes are let go at once.
   */
  tee(ctx: RequestContext, headers: readonly string[], path: string, body: Readable): Readable {
    if (!this.sampled(ctx)) return body;
    const length = ctx.req.headers['content-length'];
    if (length !== undefined && Number(length) > this.maxBodyBytes) {
      this.count('body-too-large');
      return body;
    }
    if (this.inFlight >= this.maxConcurrent) {
      this.count('dropped');
      return body;
    }
    // The slot is held while the body is kept, so kept bodies are bounded too: maxConcurrent × maxBodyBytes.
    this.inFlight++;
    const tee = new BodyTee(this.maxBodyBytes, (result, bytes) => {
      if (result === null) return this.dispatch(ctx.req.method!, [...headers, MIRROR_HEADER, '1'], path, bytes);
      this.inFlight--;
      this.count(result);
    });
    body.once('error', (err) => tee.destroy(err));
    body.pipe(tee);
    // A body the upstream never read to its end (an early answer) must not hold the slot.
    ctx.res.once('close', () => tee.abandon());
    return tee;
  }

  private sampled(ctx: RequestContext): boolean {
    if (this.sampleRatio < 1 && Math.random() >= this.sampleRatio) return false;
    return ctx.req.headers[MIRROR_HEADER] === undefined;
  }

  private count(result: MirrorResult): void {
    this.counts[result].inc();
  }

  /** Sends the copy to the next routable shadow target, holding one slot of maxConcurrent until it ends. */
  private dispatch(method: string, headers: string[], path: string, body: Buffer | null): void {
    const target = this.nextTarget();
    if (target === null) {
      this.inFlight--;
      return this.count('no-target');
    }
    target.pool
      .request({ path: target.basePath + path, method: method as 'GET', headers, body, signal: AbortSignal.timeout(this.timeoutMs) })
      .then(async (res) => {
        await res.body.dump();
        this.count(`${Math.min(5, Math.max(2, Math.floor(res.statusCode / 100)))}xx` as MirrorResult);
      })
      .catch(() => this.count('error'))
      .finally(() => this.inFlight--);
  }

  private nextTarget(): Target | null {
    const targets = this.upstream.targets;
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(this.cursor + i) % targets.length];
      if (t.state.routable) {
        this.cursor = (this.cursor + i + 1) % targets.length;
        return t;
      }
    }
    return null;
  }
}

/**
 * Passes a request body through unchanged (same chunks, same backpressure) while keeping a
 * reference to each chunk, up to `max` bytes. Calls `done` once: with null and the body when it
 * ended within `max`, or with the reason there will be no copy.
 */
class BodyTee extends Transform {
  private chunks: Buffer[] | null = [];
  private size = 0;
  private settled = false;

  constructor(
    private readonly max: number,
    private readonly done: (result: 'body-too-large' | 'body-incomplete' | null, body: Buffer | null) => void,
  ) {
    super();
    this.once('close', () => this.settle('body-incomplete', null));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, next: TransformCallback): void {
    if (this.chunks !== null) {
      this.size += chunk.length;
      if (this.size > this.max) {
        this.chunks = null;
        this.settle('body-too-large', null);
      } else {
        this.chunks.push(chunk);
      }
    }
    next(null, chunk);
  }

  override _flush(next: TransformCallback): void {
    if (this.chunks !== null) this.settle(null, Buffer.concat(this.chunks, this.size));
    this.chunks = null;
    next();
  }

  /** No copy after all: the kept bytes go, and the tee goes on passing the body through. */
  abandon(): void {
    this.chunks = null;
    this.settle('body-incomplete', null);
  }

  private settle(result: 'body-too-large' | 'body-incomplete' | null, body: Buffer | null): void {
    if (this.settled) return;
    this.settled = true;
    this.done(result, body);
  }
}
